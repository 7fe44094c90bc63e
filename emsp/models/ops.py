"""Operational rows: the beat's heartbeat, which `/readyz` reads (emsp/probes.py) to tell that scheduled work
(pulls, retries, command timeouts, no-shows) still runs."""

from __future__ import annotations

from django.db import models


class BeatHeartbeat(models.Model):
    """One row per beat process, written by that process every BEAT_HEARTBEAT_INTERVAL_SECONDS (emsp/beat.py).
    A row per beat rather than one shared row, so two beats running at once are visible as two fresh rows."""

    beat_id = models.CharField(max_length=120, unique=True, help_text="host:pid:random, new at each start.")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    seen_at = models.DateTimeField(db_index=True, help_text="The last heartbeat.")

    class Meta:
        ordering = ["-seen_at"]

    def __str__(self) -> str:
        return f"beat {self.beat_id} (last seen {self.seen_at:%Y-%m-%d %H:%M:%S})"
