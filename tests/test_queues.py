"""Queues and workers (docs/operations.md, "Queues and workers"): every task of ours is routed to the latency or
the bulk queue by name; each queue's visibility timeout is longer than its longest task; a bulk-only worker
keeps its own unacknowledged-task keys on Redis; CELERY_BROKER_URL (RabbitMQ) takes precedence over REDIS_URL
for the broker only; and exactly one beat runs (emsp/beat_lock.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from emsp.beat_lock import BEAT_LOCK_EXIT_CODE, BeatLockRefused, FileBeatLock, beat_lock_for
from emsp.celery import BULK_UNACKED_KEYS, app, bulk_niceness, bulk_transport_options

OUR_APPS = ("emsp.", "ocpi.", "beckn.", "billing.")
REPO = Path(__file__).resolve().parents[1]


def our_tasks() -> dict[str, Any]:
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if name.startswith(OUR_APPS)}


def test_it_routes_every_task_of_ours_to_a_queue_by_name() -> None:
    tasks = our_tasks()
    assert len(tasks) >= 20
    routes = settings.CELERY_TASK_ROUTES
    missing = sorted(set(tasks) - set(routes))
    assert not missing, f"add these tasks to _TASK_QUEUES in emsp/settings.py: {missing}"
    assert not set(routes) - set(tasks), "routes for tasks that no longer exist"
    assert {route["queue"] for route in routes.values()} == {"latency", "bulk"}
    for name in tasks:
        assert app.amqp.router.route({}, name)["queue"].name == routes[name]["queue"]
    assert routes["beckn.tasks.handle_request"]["queue"] == "latency"
    assert routes["emsp.tasks.outbox_deliver"]["queue"] == "latency"
    assert routes["emsp.tasks.command_send"]["queue"] == "latency"
    assert routes["ocpi.tasks.sync_partner"]["queue"] == "bulk"
    assert routes["billing.tasks.process_cdr"]["queue"] == "bulk"


def test_a_task_outside_the_table_lands_on_the_latency_queue() -> None:
    assert app.amqp.router.route({}, "somewhere.else.task")["queue"].name == settings.CELERY_TASK_DEFAULT_QUEUE
    assert settings.CELERY_TASK_DEFAULT_QUEUE == "latency"
    assert {queue.name for queue in app.conf.task_queues} == {"latency", "bulk"}  # a worker without -Q: both


def test_each_queue_s_visibility_timeout_is_longer_than_its_longest_task() -> None:
    visibility = {"latency": settings.CELERY_VISIBILITY_TIMEOUT, "bulk": settings.CELERY_BULK_VISIBILITY_TIMEOUT}
    for name, task in our_tasks().items():
        queue = settings.CELERY_TASK_ROUTES[name]["queue"]
        hard = task.time_limit or app.conf.task_time_limit
        soft = task.soft_time_limit or app.conf.task_soft_time_limit
        assert hard and soft and soft < hard, name
        assert hard < visibility[queue], f"{name} may run {hard} s, longer than the {queue} visibility timeout"
        assert task.acks_late, f"{name}: every task of ours is acknowledged after it ran"
    routes = settings.CELERY_TASK_ROUTES
    longest_bulk = max(t.time_limit or 0 for n, t in our_tasks().items() if routes[n]["queue"] == "bulk")
    assert longest_bulk == 3600  # ocpi.tasks.sync_partner


def test_no_task_retries_later_than_its_queue_s_visibility_timeout() -> None:
    """A retry waits unacked in its worker: on Redis, one due after the visibility timeout is handed out again
    and each copy retries on its own (billing's provider retries had a 600 s backoff over the 60 s timeout)."""
    visibility = {"latency": settings.CELERY_VISIBILITY_TIMEOUT, "bulk": settings.CELERY_BULK_VISIBILITY_TIMEOUT}
    retrying = {name: task for name, task in our_tasks().items() if getattr(task, "autoretry_for", ())}
    assert "billing.tasks.capture_payment" in retrying
    for name, task in retrying.items():
        queue = settings.CELERY_TASK_ROUTES[name]["queue"]
        longest = task.retry_backoff_max if task.retry_backoff else task.default_retry_delay
        assert longest + (task.time_limit or app.conf.task_time_limit) < visibility[queue], name


def test_a_redis_worker_of_the_bulk_queue_only_keeps_its_own_unacked_keys_and_timeout() -> None:
    redis = {"visibility_timeout": 60, "unacked_restore_interval": 5}
    bulk = bulk_transport_options(["bulk"], redis, 3900)
    assert bulk == {**redis, **BULK_UNACKED_KEYS, "visibility_timeout": 3900}
    assert bulk_transport_options("bulk", redis, 3900) == bulk  # -Q as a string
    assert bulk_transport_options(["latency"], redis, 3900) == redis
    assert bulk_transport_options(["latency", "bulk"], redis, 3900) == redis  # restores the latency queue's
    assert bulk_transport_options(None, redis, 3900) == redis  # no -Q: both queues
    assert bulk_transport_options(["bulk"], {}, 3900) == {}  # RabbitMQ: nothing to set


def settings_in_subprocess(env: dict[str, str], *expressions: str) -> list[str]:
    code = "import django; django.setup(); from django.conf import settings as s; " + "; ".join(
        f"print({expression})" for expression in expressions
    )
    base = {k: v for k, v in os.environ.items() if k not in {"CELERY_BROKER_URL", "REDIS_URL"}}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "DJANGO_ENV": "development", "DJANGO_SETTINGS_MODULE": "emsp.settings", **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_celery_broker_url_takes_the_broker_to_rabbitmq_and_leaves_the_cache_on_redis() -> None:
    amqp = "amqp://guest:guest@127.0.0.1:5672/emsp"
    redis = "redis://127.0.0.1:6379/3"
    broker, cache, options = settings_in_subprocess(
        {"CELERY_BROKER_URL": amqp, "REDIS_URL": redis},
        "s.CELERY_BROKER_URL",
        "s.CACHES['default']['LOCATION']",
        "s.CELERY_BROKER_TRANSPORT_OPTIONS",
    )
    assert (broker, cache, options) == (amqp, redis, "{}")
    broker, options = settings_in_subprocess(
        {"REDIS_URL": redis}, "s.CELERY_BROKER_URL", "s.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout']"
    )
    assert (broker, options) == (redis, "60")


# --- exactly one beat --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_second_beat_lock_is_refused_until_the_first_is_released() -> None:
    first, second = beat_lock_for(), beat_lock_for()
    first.acquire()
    try:
        with pytest.raises(BeatLockRefused, match="another beat holds the beat lock"):
            second.acquire()
        first.confirm()
    finally:
        first.release()
    second.acquire()
    second.confirm()
    second.release()


def test_the_sqlite_lock_is_a_file_lock_released_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3.beat-lock"
    first = FileBeatLock(path)
    first.acquire()
    take = "import fcntl, sys; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)"
    holder = subprocess.run([sys.executable, "-c", take, str(path)], capture_output=True, text=True, timeout=30)
    assert holder.returncode != 0 and "BlockingIOError" in holder.stderr  # another process can't take it
    first.release()
    FileBeatLock(path).acquire()


def wait_for_log(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")[-3000:]
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path}:\n{path.read_text(errors='replace')[-3000:]}")


@pytest.mark.django_db(transaction=True)
def test_a_second_beat_refuses_to_start_while_the_first_runs_and_starts_once_it_died(tmp_path: Path) -> None:
    """Real `celery beat` processes on the test database (PostgreSQL: the advisory lock binds every host)."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql" or not settings.REDIS_URL:
        pytest.skip("beat processes run on PostgreSQL and Redis, as in production (the SQLite lock is tested above)")
    from tests.e2e.platform import database_url, redis_url

    env = {**os.environ, "DJANGO_ENV": "development", "DATABASE_URL": database_url(), "CELERY_BROKER_URL": ""}
    env |= {"REDIS_URL": redis_url(), "BEAT_HEARTBEAT_INTERVAL_SECONDS": "0.5"}
    procs: list[subprocess.Popen[bytes]] = []

    def beat(name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = tmp_path / f"{name}.log"
        command = [str(Path(sys.executable).parent / "celery"), "-A", "emsp", "beat", "-l", "info"]
        proc = subprocess.Popen(
            [*command, "-s", str(tmp_path / f"{name}-schedule")],
            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        return proc, log

    try:
        first, first_log = beat("first")
        wait_for_log(first_log, "holds the beat lock", first)
        second, second_log = beat("second")
        assert second.wait(timeout=60) == BEAT_LOCK_EXIT_CODE
        refusal = second_log.read_text(errors="replace")
        assert "refuses to start: another beat holds the beat lock" in refusal
        assert "Exactly one beat may run" in refusal and "the newest heartbeat is beat" in refusal
        assert first.poll() is None  # the first one runs on

        os.killpg(first.pid, signal.SIGKILL)  # no clean exit: the server drops its session and the lock
        first.wait(timeout=10)
        third, third_log = beat("third")
        wait_for_log(third_log, "holds the beat lock", third)
        wait_for_log(third_log, "writes its heartbeat", third)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_worker_processes_freeze_what_loading_made() -> None:
    import gc

    from celery.signals import worker_process_init

    import emsp.celery  # noqa: F401 - connects the receiver

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    worker_process_init.send(sender=None)
    assert gc.get_freeze_count() > 1_000


@pytest.mark.django_db(transaction=True)
def test_a_task_keeps_a_sound_database_connection_and_drops_an_old_one() -> None:
    """Celery's Django fixup closed every connection around every task (a PostgreSQL backend started for each):
    tasks now keep theirs as requests do, and close one past CONN_MAX_AGE or left unusable."""
    import time as clock
    from types import SimpleNamespace

    from celery.fixups.django import DjangoWorkerFixup
    from celery.signals import task_postrun, task_prerun
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("SQLite's in-memory test database is never closed (and CONN_MAX_AGE is 0 there)")
    assert DjangoWorkerFixup(app).db_reuse_max == settings.CELERY_DB_REUSE_MAX  # the fixup's own closing is off

    class Task:  # what the receivers read of a task (a signal's sender must be hashable)
        def __init__(self, eager: bool) -> None:
            self.request = SimpleNamespace(is_eager=eager)

    task = Task(eager=False)
    connection.ensure_connection()
    connection.close_at = None  # persistent
    backend = connection.connection.info.backend_pid
    task_prerun.send(sender=task, task=task, task_id="t1", args=(), kwargs={})
    connection.cursor().execute("SELECT 1")
    task_postrun.send(sender=task, task=task, task_id="t1", args=(), kwargs={}, retval=None, state="SUCCESS")
    assert connection.connection is not None and connection.connection.info.backend_pid == backend
    connection.close_at = clock.monotonic() - 1  # past CONN_MAX_AGE
    eager = Task(eager=True)
    task_postrun.send(sender=eager, task=eager, task_id="t2", args=(), kwargs={}, retval=None, state="SUCCESS")
    assert connection.connection is not None  # a task run eagerly runs inside its caller: left alone
    task_postrun.send(sender=task, task=task, task_id="t3", args=(), kwargs={}, retval=None, state="SUCCESS")
    assert connection.connection is None


def test_a_worker_of_the_bulk_queue_alone_lowers_its_cpu_priority() -> None:
    assert bulk_niceness(["bulk"], 10) == 10
    assert bulk_niceness("bulk", 10) == 10  # -Q as a string
    assert bulk_niceness(["latency"], 10) == 0
    assert bulk_niceness("bulk,latency", 10) == 0  # a worker of both queues keeps the latency work's priority
    assert bulk_niceness(None, 10) == 0  # no -Q: every queue
    assert bulk_niceness(["bulk"], 0) == 0


def test_the_bulk_worker_is_niced_before_its_pool_forks(monkeypatch: pytest.MonkeyPatch) -> None:
    from emsp import celery as emsp_celery

    increments: list[int] = []
    monkeypatch.setattr(emsp_celery.os, "nice", increments.append)
    emsp_celery._bulk_worker_yields_the_cpu(options={"queues": "bulk"})
    emsp_celery._bulk_worker_yields_the_cpu(options={"queues": ["latency"]})
    assert increments == [10]
