"""Freshness where it matters (RFC §8.3.1: "real-time synchronisation with 30-second maximum latency").

A CPO that pushes status changes keeps our catalogue current by itself. For one that doesn't, the EVSEs
drivers are looking at — in a recent search result or quote (`WatchedEvse`), or booked — are re-read one by
one (the EVSE-level GET of mod_locations) so that no status shown is older than EVSE_REFRESH_SECONDS. The beat
runs `refresh_due` every EVSE_REFRESH_TICK_SECONDS, and re-reads what is older than the refresh period less
one tick; a partner whose circuit breaker is open is left alone (its breaker probes it)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from emsp.models import Booking, Evse, Partner, WatchedEvse
from emsp.services import breakers
from emsp.services.catalogue import evse_refresh_from_cpo

log = logging.getLogger(__name__)

# A partner that pushed a location object this recently is a pushing CPO: its EVSEs are not re-read.
PUSH_SILENCE = timedelta(minutes=15)
# How long an EVSE stays watched after it was shown to a driver.
WATCH_FOR = timedelta(minutes=10)
# A watch is extended only when it has run for longer than this: one write a minute per EVSE, not per search.
REWATCH_SLACK = timedelta(minutes=1)
# At most this many EVSEs of one partner re-read per tick (the rest wait a tick; the stalest go first).
PER_PARTNER_PER_TICK = 100
_FORGET_AFTER = timedelta(minutes=2)
# When this process last wrote Partner.last_push_at, per partner: one UPDATE a minute, not one per PATCH.
_push_noted: dict[int, datetime] = {}


def evses_watch(evse_ids: Iterable[int], now: datetime | None = None) -> int:
    """Drivers were shown these EVSEs: keep them fresh for WATCH_FOR. One statement, whatever their number; a
    watch that still runs for longer than WATCH_FOR less REWATCH_SLACK is left as it is."""
    now = now or timezone.now()
    ids = sorted(set(evse_ids))
    if not ids:
        return 0
    until = now + WATCH_FOR
    # One INSERT … ON CONFLICT: a search's few dozen rows don't need bulk.upsert's temporary table and COPY,
    # which cost four more statements in each Beckn search (a query count of handle_request, issue 15). The
    # EVSEs of a busy area are in most searches: rewriting their rows each time (a new row version and its WAL
    # for every EVSE of every search) bought a watch at most a minute longer.
    ops, quote = connection.ops, connection.ops.quote_name
    meta = WatchedEvse._meta
    table = quote(meta.db_table)
    evse, ends = quote(meta.get_field("evse").column), quote(meta.get_field("until").column)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({evse}, {ends}) VALUES {', '.join(['(%s, %s)'] * len(ids))} "  # noqa: S608
            f"ON CONFLICT ({evse}) DO UPDATE SET {ends} = EXCLUDED.{ends} WHERE {table}.{ends} < %s",
            [value for pk in ids for value in (pk, ops.adapt_datetimefield_value(until))]
            + [ops.adapt_datetimefield_value(until - REWATCH_SLACK)],
        )
    return len(ids)


def partner_pushed(partner: Partner, now: datetime | None = None) -> None:
    """The partner pushed us a location object (PUT or PATCH): note it, at most once a minute per process."""
    now = now or timezone.now()
    last = _push_noted.get(partner.pk)
    if last is not None and now - last < timedelta(minutes=1):
        return
    _push_noted[partner.pk] = now
    Partner.objects.filter(pk=partner.pk).update(last_push_at=now)


def pushes(partner: Partner, now: datetime) -> bool:
    return partner.last_push_at is not None and partner.last_push_at >= now - PUSH_SILENCE


def refresh_period() -> timedelta:
    return timedelta(seconds=settings.EVSE_REFRESH_SECONDS)


def due(partner: Partner, now: datetime | None = None) -> list[Evse]:
    """The partner's EVSEs to re-read now: watched or booked, heard longer ago than the period less a tick."""
    now = now or timezone.now()
    older_than = now - refresh_period() + timedelta(seconds=settings.EVSE_REFRESH_TICK_SECONDS)
    booked = Booking.objects.filter(state__in=Booking.ACTIVE_STATES).values("evse_id")
    return list(
        Evse.objects.filter(location__partner=partner, status_updated_at__lt=older_than)
        .exclude(status=Evse.Status.REMOVED)
        .filter(Q(watch__until__gt=now) | Q(pk__in=booked))
        .select_related("location__partner")
        .order_by("status_updated_at")[:PER_PARTNER_PER_TICK]
    )


def partners_to_refresh(now: datetime | None = None) -> list[Partner]:
    """Connected partners that don't push, whose breaker lets requests through, with something due."""
    now = now or timezone.now()
    out = []
    for partner in Partner.objects.connected():
        if pushes(partner, now) or breakers.refusing(partner, "locations", now) is not None:
            continue
        if due(partner, now):
            out.append(partner)
    return out


def refresh_partner(partner: Partner, *, timeout: float = 5.0) -> tuple[int, int]:
    """Re-read the partner's due EVSEs one by one. (re-read, failed). Stops at the first failure that opens
    the partner's breaker."""
    done = failed = 0
    for evse in due(partner):
        if evse_refresh_from_cpo(evse, timeout=timeout):
            done += 1
            continue
        failed += 1
        if breakers.refusing(partner, "locations") is not None:
            break
    if failed:
        log.info("re-read %d EVSEs of %s, %d failed", done, partner, failed)
    return done, failed


def forget_expired(now: datetime | None = None) -> int:
    now = now or timezone.now()
    deleted, _ = WatchedEvse.objects.filter(until__lt=now - _FORGET_AFTER).delete()
    return deleted
