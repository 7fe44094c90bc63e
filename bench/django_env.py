"""Shared set-up for benchmarks that need Django and a database of their own (PostgreSQL by default)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH_DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/emsp_bench")


def setup(fresh: bool = True, name: str | None = None) -> None:
    """Point Django at the benchmark database (recreated when `fresh`), migrate, and set Django up. `name`
    gives a benchmark its own database on the same server (default: the one BENCH_DATABASE_URL names)."""
    sys.path.insert(0, str(REPO))
    url = BENCH_DATABASE_URL
    if name is not None and url.startswith("postgres"):
        url = url.rsplit("/", 1)[0] + "/" + name
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emsp.settings")
    os.environ.setdefault("DJANGO_ENV", "development")  # unset means production (emsp/settings.py)
    os.environ.setdefault("OCPI_LOG_BODIES", "true")
    os.environ.setdefault("DJANGO_DEBUG", "false")  # DEBUG records (and mogrifies) every query
    if fresh and url.startswith("postgres"):
        name = url.rsplit("/", 1)[1]
        admin_url = url.rsplit("/", 1)[0] + "/postgres"
        import psycopg

        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for the servers a benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    workers: int, database_url: str = BENCH_DATABASE_URL, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """gunicorn on 127.0.0.1 against the benchmark database, its first answer awaited (the app is loaded).
    Rate limiters off: a benchmark measures the platform, not the limiter (emsp/ratelimit.py)."""
    import requests

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "false",
        "DB_CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
        "PUBLIC_BASE_URL": base,
        "OCPI_RATE_LIMIT_PER_MINUTE": "0",
        "BECKN_RATE_LIMIT_PER_MINUTE": "0",
        **(env or {}),
    }
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "gunicorn"), "emsp.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers),
         "--log-level", "warning"],
        cwd=REPO, env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            requests.get(f"{base}/ocpi/versions", timeout=5)
            return proc, base
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("gunicorn did not start")


def machine() -> str:
    """One line describing where the numbers came from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, {pg or 'no psql'}"


def timed_full_pull(partner: object) -> str:
    """A full pull of the partner's locations, timed as the scheduled pull runs it (HTTP, mapping,
    normalising, storing, withdrawing), and what it did: pages, announced, received, stored, locations/s."""
    from emsp.models import Connector, Evse, Location
    from ocpi.sync import sync_module

    started = time.perf_counter()
    run = sync_module(partner, "locations", full=True)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    assert run is not None
    stored = Location.objects.filter(partner=partner).count()
    return (
        f"{run.outcome}, {run.pages} pages, announced {run.announced}, received {run.received}, stored {stored} "
        f"locations ({Evse.objects.count()} EVSEs, {Connector.objects.count()} connectors) in {elapsed:.1f} s = "
        f"{run.received / elapsed:,.0f} locations/s" + (f"; error: {run.error}" if run.error else "")
    )
