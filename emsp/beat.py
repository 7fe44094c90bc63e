"""The beat's scheduler (CELERY_BEAT_SCHEDULER): Celery's own, plus a heartbeat row the beat process itself
writes every BEAT_HEARTBEAT_INTERVAL_SECONDS, so `/readyz` can tell when scheduled work has stopped.

The beat writes it, not a task a worker runs: a dead beat must show as a dead beat, whatever the workers do.
Each beat has its own row (emsp.models.BeatHeartbeat) under an id made at start. Exactly one beat runs: the
scheduler takes the beat lock (emsp/beat_lock.py) before it schedules anything, a second beat exits naming the
newest heartbeat's beat, and each heartbeat confirms the lock."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from celery.beat import PersistentScheduler
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.db.models.functions import Now
from django.utils import timezone

from emsp.beat_lock import BEAT_LOCK_EXIT_CODE, BeatLock, BeatLockRefused, beat_lock_for, other_beat_seen

logger = logging.getLogger(__name__)

HEARTBEAT_ROWS_KEPT = timedelta(days=1)  # rows of beats that stopped longer ago are deleted at a beat's start


def new_beat_id() -> str:
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def beat_heartbeat_write(*, beat_id: str, started_at: datetime, now: datetime | None = None) -> None:
    """Record that the beat `beat_id` is alive now (its row is created at the first call). The moment is the
    database's clock (Now()), which /readyz compares it with (emsp/probes.py), not this host's: a beat host whose
    clock runs ahead would otherwise keep a heartbeat "fresh" for as long as it runs ahead after the beat died.
    `now` sets the moment instead (tests)."""
    from emsp.models import BeatHeartbeat

    now = now or Now()
    if not BeatHeartbeat.objects.filter(beat_id=beat_id).update(seen_at=now):
        BeatHeartbeat.objects.update_or_create(
            beat_id=beat_id,
            defaults={"seen_at": now},
            create_defaults={
                "hostname": beat_id.partition(":")[0],
                "pid": os.getpid(),
                "started_at": started_at,
                "seen_at": now,
            },
        )


def beat_heartbeats_prune(*, now: datetime | None = None) -> int:
    from emsp.models import BeatHeartbeat

    cutoff = now - HEARTBEAT_ROWS_KEPT if now is not None else Now() - HEARTBEAT_ROWS_KEPT  # the database's clock
    deleted, _ = BeatHeartbeat.objects.filter(seen_at__lt=cutoff).delete()
    return deleted


class Scheduler(PersistentScheduler):
    """celery.beat.PersistentScheduler that also writes this beat's heartbeat, at start and then at least every
    BEAT_HEARTBEAT_INTERVAL_SECONDS (it never sleeps longer than that between ticks)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.beat_id = new_beat_id()
        self.beat_started_at = timezone.now()
        self._last_heartbeat = float("-inf")
        self.beat_lock: BeatLock | None = None
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        # Not in __init__: Celery also makes a scheduler that schedules nothing (lazy) for its start-up banner.
        self.take_beat_lock()
        super().setup_schedule()
        try:
            close_old_connections()
            beat_heartbeats_prune()
        except DatabaseError:
            logger.warning("could not prune old beat heartbeats", exc_info=True)
        self.heartbeat()
        logger.info("beat %s writes its heartbeat every %s s", self.beat_id, settings.BEAT_HEARTBEAT_INTERVAL_SECONDS)

    def take_beat_lock(self) -> None:
        lock = beat_lock_for()
        try:
            lock.acquire()
        except BeatLockRefused as exc:
            message = f"beat {self.beat_id} refuses to start: {exc}{other_beat_seen()}. Exactly one beat may run."
            logger.critical(message)
            raise SystemExit(BEAT_LOCK_EXIT_CODE) from exc
        self.beat_lock = lock
        logger.info("beat %s holds the beat lock (%s)", self.beat_id, lock.description)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.beat_lock is not None:
                self.beat_lock.release()
                self.beat_lock = None

    def heartbeat(self) -> None:
        if self.beat_lock is not None:
            self.beat_lock.confirm()  # BeatLockLost stops the beat (exit status 1) rather than run beside another
        # A long-lived process: drop a connection the database closed (restart, failover) before using it.
        close_old_connections()
        try:
            beat_heartbeat_write(beat_id=self.beat_id, started_at=self.beat_started_at)
        except DatabaseError:
            # The database is away: /readyz says so (database and beat). Keep scheduling and try next tick.
            logger.warning("beat heartbeat not written", exc_info=True)
            close_old_connections()
            return
        self._last_heartbeat = time.monotonic()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        interval = float(settings.BEAT_HEARTBEAT_INTERVAL_SECONDS)
        if time.monotonic() - self._last_heartbeat >= interval:
            self.heartbeat()
        return min(super().tick(*args, **kwargs), interval)
