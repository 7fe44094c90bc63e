"""OCPI's part of personal data (emsp/privacy.py): the message log holds bodies that name a driver's tokens
(our token pushes, sessions, CDRs); on erasure those bodies go, and the whole log goes with its retention,
as do pull runs and data-quality findings."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Q

from emsp import privacy
from emsp.models import Driver
from ocpi.models import DataQualityIssue, OcpiMessage, SyncRun


def _erase(driver: Driver) -> dict[str, int]:
    uids = [uid for uid in driver.tokens.values_list("uid", flat=True) if uid]
    mentions = Q()
    for uid in uids:
        mentions |= Q(request_body__contains=uid) | Q(response_body__contains=uid)
    if not uids:
        return {"log_bodies_erased": 0}
    erased = OcpiMessage.objects.filter(mentions).update(request_body="[erased]", response_body="[erased]")
    return {"log_bodies_erased": erased}


def _purge(now: datetime) -> dict[str, int]:
    counts = {}
    for name, rows in (
        ("ocpi_messages", OcpiMessage.objects.filter(created_at__lt=privacy.kept_since("ocpi_messages", now))),
        ("sync_runs", SyncRun.objects.filter(started_at__lt=privacy.kept_since("sync_runs", now))),
        ("data_quality", DataQualityIssue.objects.filter(last_seen__lt=privacy.kept_since("data_quality", now))),
    ):
        counts[name] = rows._raw_delete(rows.db)  # type: ignore[attr-defined] - no cascades: nothing points at them
    return counts


def register() -> None:
    privacy.register("ocpi", erase=_erase, purge=_purge)
