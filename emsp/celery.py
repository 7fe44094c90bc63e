"""The Celery application. Tasks live in each app's tasks.py; the beat schedule is in emsp/settings.py."""

from __future__ import annotations

import gc
import logging
import os
import reprlib
from typing import Any

from celery import Celery
from celery.signals import celeryd_init, task_postrun, task_prerun, worker_process_init, worker_ready
from django.db import close_old_connections, transaction
from django.utils.module_loading import import_string

from emsp import logs  # noqa: F401 - its Celery signals carry the request ids into tasks and keep Django's logging

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "emsp.settings")

log = logging.getLogger(__name__)

app = Celery("emsp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Where a Redis worker that consumes only the bulk queue records the tasks it holds (kombu's defaults are
# "unacked", "unacked_index" and "unacked_mutex", which every other worker restores after its visibility timeout).
BULK_UNACKED_KEYS = {
    "unacked_key": "unacked_bulk",
    "unacked_index_key": "unacked_index_bulk",
    "unacked_mutex_key": "unacked_mutex_bulk",
}


def _only_bulk(queues: Any) -> bool:
    """Does a worker consuming `queues` (its -Q, as a list or "a,b") consume the bulk queue alone?"""
    from django.conf import settings

    names = {q.strip() for q in (queues.split(",") if isinstance(queues, str) else queues or []) if q.strip()}
    return names == {settings.BULK_QUEUE}


def bulk_transport_options(queues: Any, options: dict[str, Any], visibility_timeout: int) -> dict[str, Any]:
    """The broker transport options of a worker consuming `queues` (its -Q): unchanged unless it consumes only
    the bulk queue on Redis; then its own unacked keys and the bulk visibility timeout, longer than any bulk
    task, so no worker hands out a long pull while it still runs (docs/operations.md, "Queues and workers")."""
    if not _only_bulk(queues) or "visibility_timeout" not in options:
        return options
    return {**options, **BULK_UNACKED_KEYS, "visibility_timeout": visibility_timeout}


@celeryd_init.connect
def _bulk_worker_transport(conf: Any = None, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
    from django.conf import settings

    conf.broker_transport_options = bulk_transport_options(
        (options or {}).get("queues"),
        dict(conf.broker_transport_options or {}),
        settings.CELERY_BULK_VISIBILITY_TIMEOUT,
    )


def bulk_niceness(queues: Any, niceness: int) -> int:
    """How much a worker consuming `queues` lowers its CPU priority: `niceness` for a worker of the bulk queue
    alone, else 0."""
    return max(0, niceness) if _only_bulk(queues) else 0


@celeryd_init.connect  # in the worker's main process, before its pool forks: the children inherit it
def _bulk_worker_yields_the_cpu(options: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Where bulk and latency work share cores (one host running both workers), the latency worker's tasks come
    first: the soak at 150 req/s had 15 CDRs a second (receipts, audits, postings) taking as much CPU as the Beckn
    callbacks, and the callbacks fell behind. CELERY_BULK_NICENESS (default 10; 0 = equal) is the bulk worker's
    nice value; docs/operations.md gives the container and systemd equivalents."""
    from django.conf import settings

    increment = bulk_niceness((options or {}).get("queues"), settings.CELERY_BULK_NICENESS)
    if increment and hasattr(os, "nice"):
        os.nice(increment)


@worker_process_init.connect  # each prefork child, after the fork
@worker_ready.connect  # the worker itself (a solo or threads pool runs tasks there)
def _freeze_what_loading_made(**_: Any) -> None:
    """As emsp/wsgi.py does for the web: what loading made lives as long as the process, and the collector stops
    walking it. A pull's ingest makes many objects and so many collections: 1,549 → 2,216 locations/s."""
    gc.freeze()


@task_prerun.connect
@task_postrun.connect
def _connections_as_for_a_request(task: Any = None, **_: Any) -> None:
    """Before and after a task, what Django does before and after a request: a connection older than
    CONN_MAX_AGE, or left unusable by an error, is closed; a sound one is kept (settings.CELERY_DB_REUSE_MAX).
    Not for a task run eagerly, inside its caller's transaction."""
    if task is not None and not getattr(task.request, "is_eager", False):
        close_old_connections()


def run_after_commit(task_path: str, *args: Any, countdown: float | None = None, best_effort: bool = False) -> None:
    """Queue the task at `task_path` (e.g. "emsp.tasks.command_send") once the current transaction commits.
    Services name their tasks rather than import the tasks modules, which import the services. `best_effort`: for
    a task a beat sweep also does, a broker that fails (Redis down) is logged as a warning and the task is not
    queued, rather than the error reaching the caller after its commit (a request answered 500 for what it stored)."""

    def queue() -> None:
        from emsp import queue_push

        task = import_string(task_path)
        if countdown is not None:
            task.apply_async(args, countdown=countdown)
        elif queue_push.pushable(task):
            # The same message in one round trip (emsp/queue_push.py): delay() was a quarter of a CDR POST's CPU
            # (cProfile, bench/bench_ocpi_calls.py --kind cdr).
            queue_push.push_once(task, args, argsrepr=reprlib.repr(args))
        else:
            task.delay(*args)

    def queue_or_warn() -> None:
        try:
            queue()
        except Exception:  # the broker's errors are many (redis, kombu, socket): none may fail the caller
            log.warning("%s not queued (its broker failed?): its beat sweep does it", task_path, exc_info=True)

    transaction.on_commit(queue_or_warn if best_effort else queue)
