"""Forcing an interleaving of two transactions on PostgreSQL, for the race tests: each call in a thread of its
own (its own connection), and holds where one waits, in its transaction, until the other has got somewhere."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.db import connection, connections

# Another connection of this database waiting for a lock (one this test's transaction holds).
WAITING = (
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
    " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock')"
)


class Holds:
    """Where a thread stops, in its transaction, until the other one has got somewhere: to a signal it sets (its
    arrival here too, or its end), or to a lock this one holds, which it waits for. A hold that had to give up
    (nothing happened in 10 s) is counted: the interleaving was not the one the test forces."""

    def __init__(self) -> None:
        self.given_up = 0

    def until_the_other_moves(self, *signals: threading.Event, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        with connection.cursor() as cursor:
            while not any(signal.is_set() for signal in signals):
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(WAITING)
                if cursor.fetchone()[0]:
                    return
                if time.monotonic() > deadline:
                    self.given_up += 1
                    return
                time.sleep(0.01)


def at_once(*calls: Callable[[], None]) -> list[BaseException]:
    """Each call in its own thread (its own connection), released together; what they raised."""
    barrier = threading.Barrier(len(calls))
    failures: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            barrier.wait(5)
            call()
        except BaseException as exc:  # reported by the test
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return failures


def by_name(named: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Each call in its own thread, named after it (hooks can tell them apart), and its own connection; what each
    returned, by name (a call that raised is missing)."""
    answers: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            answers[name] = named[name]()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,), name=n) for n in named]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return answers


class Killed(BaseException):
    """kill -9 of the worker, for the crash tests: nothing after it runs, no `except Exception` sees it."""
