"""Exactly one beat: the beat's scheduler (emsp/beat.py) takes this lock before it schedules anything and holds
it for its whole life; a second beat finds it taken and exits with a message naming the first (exit status
BEAT_LOCK_EXIT_CODE). Two beats would queue every periodic task twice: pulls, sweeps and no-show checks are
safe to run twice, but twice the load for nothing.

On PostgreSQL the lock is a session advisory lock on a connection of its own, so it binds every beat on every
host that shares the database; on SQLite (one machine by nature) an exclusive lock on a file next to the
database. Both are released by the server or the kernel the moment the process dies, kill -9 included, so a
restarted beat never waits for a lease to run out. Each heartbeat tick the beat confirms the lock; a beat that
lost it (its connection dropped and another beat took the lock, or the database can't be reached to tell) stops
with an error rather than risk running beside another, and its supervisor starts it again.

PostgreSQL advisory locks belong to a server session: the beat must reach PostgreSQL directly or through
PgBouncer in session mode, never in transaction mode (docs/operations.md, "Queues and workers")."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

ADVISORY_LOCK_KEY = int.from_bytes(b"emspbeat", "big")  # one bigint key, per database
BEAT_LOCK_EXIT_CODE = 3


class BeatLockRefused(Exception):
    """Another beat holds the lock (or it could not be taken): this beat must not run."""


class BeatLockLost(RuntimeError):
    """A running beat can no longer show that it holds the lock: it stops."""


class BeatLock:
    """The lock for the database `alias`: acquire() once, confirm() each tick, release() at exit."""

    def acquire(self) -> None:
        raise NotImplementedError

    def confirm(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    @property
    def description(self) -> str:
        raise NotImplementedError


class PostgresBeatLock(BeatLock):
    def __init__(self, alias: str = DEFAULT_DB_ALIAS) -> None:
        self.alias = alias
        self.connection: Any = None

    @property
    def description(self) -> str:
        return f"PostgreSQL advisory lock {ADVISORY_LOCK_KEY} in database {settings.DATABASES[self.alias]['NAME']}"

    def _try_lock(self) -> bool:
        """pg_try_advisory_lock on a new connection of our own, kept while the lock is held."""
        connection = connections.create_connection(self.alias)  # not shared with queries, never closed by Django
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
                taken = bool(cursor.fetchone()[0])
        except BaseException:
            connection.close()
            raise
        if taken:
            self.connection = connection
        else:
            connection.close()
        return taken

    def acquire(self) -> None:
        try:
            taken = self._try_lock()
        except DatabaseError as exc:
            raise BeatLockRefused(f"could not reach the database to take the beat lock: {exc}") from exc
        if not taken:
            raise BeatLockRefused(f"another beat holds the beat lock ({self.description})")

    def confirm(self) -> None:
        # The lock lives as long as its session: a connection that still answers still holds it.
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return
        except DatabaseError:
            self._close()
        try:
            taken = self._try_lock()  # the session was lost (a database restart): take the lock again if free
        except DatabaseError as exc:
            raise BeatLockLost(f"lost the beat lock's connection and cannot reach the database: {exc}") from exc
        if not taken:
            raise BeatLockLost("lost the beat lock's connection, and another beat has taken the lock since")

    def _close(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(DatabaseError):
                self.connection.close()
            self.connection = None

    def release(self) -> None:
        self._close()  # closing the session releases its advisory locks


class FileBeatLock(BeatLock):
    """flock(2) on a file beside the SQLite database: every process that uses that file runs on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = None

    @property
    def description(self) -> str:
        return f"lock file {self.path}"

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise BeatLockRefused(f"another beat holds the beat lock ({self.description})") from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle

    def confirm(self) -> None:
        if self.handle is None:
            raise BeatLockLost("the beat lock file was closed")

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()  # closing the descriptor releases the flock
            self.handle = None


def beat_lock_for(alias: str = DEFAULT_DB_ALIAS) -> BeatLock:
    database = settings.DATABASES[alias]
    if database["ENGINE"] == "django.db.backends.postgresql":
        return PostgresBeatLock(alias)
    name = str(database.get("NAME") or "")
    in_memory = not name or name == ":memory:" or "mode=memory" in name
    return FileBeatLock(settings.VAR_DIR / "beat.lock" if in_memory else Path(f"{name}.beat-lock"))


def other_beat_seen() -> str:
    """The newest heartbeat row (emsp.models.BeatHeartbeat): which beat probably holds the lock."""
    from django.utils import timezone

    from emsp.models import BeatHeartbeat

    try:
        row = BeatHeartbeat.objects.order_by("-seen_at").first()
    except DatabaseError:
        return ""
    if row is None:
        return ""
    age = (timezone.now() - row.seen_at).total_seconds()
    return f"; the newest heartbeat is beat {row.beat_id}'s, {age:.0f} s ago"
