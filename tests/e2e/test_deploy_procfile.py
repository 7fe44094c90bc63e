"""deploy/Procfile as an operator runs it: the release step on a fresh PostgreSQL database, then
`honcho -f deploy/Procfile start` with production settings (DJANGO_ENV=production, real secrets, Redis) on
127.0.0.1. Every process comes up (`/readyz` answers 200, so the beat writes its heartbeat; each worker runs a task
the beat sent to its queue), the access log carries the request id, and on SIGTERM every process of every
Procfile line exits, none of them killed. The Dockerfile, compose.yaml and the systemd units run the same
commands (tests/test_deploy_files.py)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from django.conf import settings

from tests.e2e.conftest import full_stack_available
from tests.e2e.platform import free_port, redis_url, until
from tests.test_deploy_files import PROCESSES, RELEASE

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A database of its own, empty (dropped before and after), on the test PostgreSQL server."""
    reason = full_stack_available()
    if reason:
        pytest.skip(reason)
    db = settings.DATABASES["default"]
    name = f"{db['NAME'].removeprefix('test_')}_procfile"
    host, port, user = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432, db.get("USER") or "postgres"
    admin = {"host": host, "port": port, "user": user, "password": db.get("PASSWORD") or None, "dbname": "postgres"}

    def drop() -> None:
        with psycopg.connect(**admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    drop()
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    yield f"postgres://{user}{password}@{host}:{port}/{name}"
    drop()


def production_env(database_url: str, web_port: int, tmp: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    (tmp / "metrics").mkdir()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GUNICORN_", "WEB_"))}
    return {
        **inherited,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the Procfile's gunicorn, celery, python
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(64),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        # Production needs an https base URL (the one partners are handed); this test speaks plain HTTP to
        # 127.0.0.1 and says X-Forwarded-Proto: https, as the TLS-terminating proxy does.
        "PUBLIC_BASE_URL": "https://emsp.test",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url(),
        "GUNICORN_BIND": f"127.0.0.1:{web_port}",
        "WEB_CONCURRENCY": "2",
        "CELERY_WORKER_CONCURRENCY": "1",  # celery's CLI reads its options from CELERY_<COMMAND>_<OPTION>
        "CELERY_BEAT_SCHEDULE": str(tmp / "celerybeat-schedule"),  # beat -s: not the checkout's var/
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "EVSE_REFRESH_TICK_SECONDS": "2",  # a beat task for the bulk queue every 2 s rather than 10
        "LOG_LEVEL": "INFO",
    }


def process_groups_alive(pgids: set[int]) -> list[str]:
    """Processes still in any of these process groups (honcho starts each Procfile line in a session of its
    own, so a group holds the line's shell, its program and every child: gunicorn and Celery pool workers)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) in pgids:
            alive.append(f"{stat.parent.name} {text.split(')')[0]})")
    return alive


def test_it_runs_every_procfile_process_in_production_settings(fresh_database: str, tmp_path: Path) -> None:
    honcho = BIN / "honcho"
    assert honcho.exists(), "honcho is a test dependency: pip install -e '.[test]'"
    web_port = free_port()
    env = production_env(fresh_database, web_port, tmp_path)
    subprocess.run(["redis-cli", "-u", env["REDIS_URL"], "flushdb"], capture_output=True, check=False)

    # Through a shell, as honcho runs every line.
    release = subprocess.run(["/bin/sh", "-c", RELEASE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert release.returncode == 0, release.stdout[-2000:] + release.stderr[-2000:]

    log = tmp_path / "honcho.log"
    with log.open("wb") as out:
        # -e: no .env of the checkout; honcho runs the lines from the current directory (the repository root).
        honcho_proc = subprocess.Popen(
            [str(honcho), "-e", str(tmp_path / "none.env"), "--no-colour", "-f", "deploy/Procfile", "start"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(process: str | None = None) -> str:
        text = log.read_text(errors="replace")
        if process is None:
            return text
        return "\n".join(line for line in text.splitlines() if re.match(rf"^\S+ {process}\.1\s+\|", line))

    base = f"http://127.0.0.1:{web_port}"
    try:

        def ready() -> dict[str, object] | None:
            assert honcho_proc.poll() is None, f"honcho stopped:\n{output()[-4000:]}"
            try:
                answer = requests.get(f"{base}/readyz", timeout=5)
            except requests.RequestException:
                return None
            return answer.json() if answer.status_code == 200 else None

        body = until(ready, timeout=40, what=f"/readyz 200 under honcho\n{output()[-4000:]}", interval=0.3)
        checks = body["checks"]
        assert checks["database"]["vendor"] == "postgresql"  # type: ignore[index]
        assert checks["beat"]["beats_alive"] == 1  # type: ignore[index]

        # Each worker consumes its queue: a task the beat sent there ran (commands' timeouts every 5 s on
        # `latency`; the EVSE refresh tick every 2 s here on `bulk`).
        for worker, queue in (("worker_latency", "latency"), ("worker_bulk", "bulk")):
            until(
                lambda worker=worker: re.search(r"Task \S+ succeeded", output(worker)),
                timeout=30,
                what=f"{worker} running a task from the {queue} queue\n{output(worker)[-3000:]}",
            )
            assert re.search(rf"\.> {queue}\s+exchange=", output(worker)), output(worker)[-3000:]
            assert f"{queue}@" in output(worker)

        # Behind the proxy: X-Forwarded-Proto from 127.0.0.1 is trusted (no redirect to https), and the access
        # log line ends with the request's id.
        request_id = f"deploy-{uuid.uuid4()}"
        answer = requests.get(
            f"{base}/ocpi/versions",
            headers={"X-Forwarded-Proto": "https", "X-Request-ID": request_id},
            timeout=10,
            allow_redirects=False,
        )
        assert answer.status_code == 401 and answer.headers["X-Request-ID"] == request_id
        until(lambda: f"request_id={request_id}" in output("web"), timeout=10, what="the access log line")
        assert requests.get(f"{base}/readyz", timeout=5, allow_redirects=False).status_code == 200  # never redirected
    finally:
        if honcho_proc.poll() is None:
            honcho_proc.send_signal(signal.SIGTERM)
        try:
            honcho_proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho_proc.pid, signal.SIGKILL)
            raise
        started = {name: int(pid) for name, pid in re.findall(r"system\s+\| (\S+)\.1 started \(pid=(\d+)\)", output())}
        time.sleep(0.2)
        leftovers = process_groups_alive(set(started.values()))
        for line in leftovers:  # don't leave them to the next test
            os.kill(int(line.split()[0]), signal.SIGKILL)
        subprocess.run(["redis-cli", "-u", env["REDIS_URL"], "flushdb"], capture_output=True, check=False)

    text = output()
    assert sorted(started) == sorted(PROCESSES), text[-3000:]
    for name in PROCESSES:
        assert re.search(rf"system\s+\| {name}\.1 stopped", text), f"{name} did not stop\n{text[-3000:]}"
    assert "SIGKILL" not in text, f"honcho had to kill a process that ignored SIGTERM\n{text[-3000:]}"
    assert not leftovers, f"processes outlived honcho: {leftovers}"
    assert "Shutting down: Master" in output("web")
    assert "Warm shutdown" in output("worker_latency") and "Warm shutdown" in output("worker_bulk")
