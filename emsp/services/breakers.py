"""Circuit breakers per partner and module (RFC §8.2.2 "automatically exclude failing CPOs, then gradually
reintroduce"; §8.3.2 "circuit breakers and partial results").

    CLOSED ──N failures within the window──▶ OPEN ──retry_at passed: one request is let through──▶ HALF_OPEN
       ▲                                      ▲                                                      │
       └────────────── the probe succeeds ────┼──────────────────────────────────────────────────────┘
                                              └── the probe fails: OPEN again, for twice as long (capped)

A `429 Too Many Requests` opens the breaker until the partner's `Retry-After`. Requests refused while it is
open cost one indexed read and no waiting; callers fall back (the catalogue, a clear error). Every change is
a `BreakerChange` row and a log line; `trips` counts the openings. Settings: OCPI_BREAKER_FAILURES,
OCPI_BREAKER_WINDOW_SECONDS, OCPI_BREAKER_OPEN_SECONDS, OCPI_BREAKER_MAX_OPEN_SECONDS."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from emsp import metrics
from emsp.datetimes import format_datetime
from emsp.models import Partner
from emsp.models.breakers import BreakerChange, CircuitBreaker
from emsp.rows import first_where

log = logging.getLogger(__name__)
State = CircuitBreaker.State

# How long a probe may take before another request may probe instead (its worker may have died).
PROBE_GRACE = timedelta(seconds=60)
# A Retry-After we believe: longer ones are capped (a partner can't switch us off for a week).
MAX_RETRY_AFTER_SECONDS = 3600


class CircuitOpen(Exception):
    """The partner's breaker for this module is open: the request was not sent."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        super().__init__(describe(breaker))


def describe(breaker: CircuitBreaker) -> str:
    """Why requests to the partner are refused, in words for staff and drivers' apps."""
    since = format_datetime(breaker.opened_at) if breaker.opened_at else "recently"
    retry = f"; next try after {format_datetime(breaker.retry_at)}" if breaker.retry_at else ""
    return f"{breaker.partner.name} is not answering {breaker.module} requests (since {since}: {breaker.reason}){retry}"


def refusing(partner: Partner, module: str, now: datetime | None = None) -> CircuitBreaker | None:
    """The breaker if requests to `module` would be refused now (open and not yet due for a probe, or a
    probe in flight); None when they would go through. Reads only."""
    now = now or timezone.now()
    breaker = first_where(
        CircuitBreaker, "t.partner_id = %s AND t.module = %s AND t.state <> %s", [partner.pk, module, str(State.CLOSED)]
    )
    if breaker is None:
        return None
    if breaker.state == State.OPEN and breaker.retry_at is not None and breaker.retry_at <= now:
        return None
    if breaker.state == State.HALF_OPEN and breaker.probe_until is not None and breaker.probe_until <= now:
        return None
    breaker.partner = partner
    return breaker


def admit(partner: Partner, module: str) -> bool:
    """May a request to `module` be sent now? True: send it (and report its outcome); when the breaker
    is due for a probe, this caller becomes the probe. Raises CircuitOpen when it must not be sent."""
    now = timezone.now()
    breaker = CircuitBreaker.objects.filter(partner=partner, module=module).exclude(state=State.CLOSED).first()
    if breaker is None:
        return True
    breaker.partner = partner
    probe_due = (breaker.state == State.OPEN and breaker.retry_at is not None and breaker.retry_at <= now) or (
        breaker.state == State.HALF_OPEN and breaker.probe_until is not None and breaker.probe_until <= now
    )
    if not probe_due:
        raise CircuitOpen(breaker)
    # Compare-and-set: of many callers at once, one probes.
    taken = CircuitBreaker.objects.filter(pk=breaker.pk, state=breaker.state, changed_at=breaker.changed_at).update(
        state=State.HALF_OPEN, probe_until=now + PROBE_GRACE, changed_at=now
    )
    if not taken:
        raise CircuitOpen(breaker)
    _record_change(breaker, breaker.state, State.HALF_OPEN, "probing", now)
    return True


def succeeded(partner: Partner, module: str) -> None:
    """A request went through. Closes a breaker that was probing (or open); in the common case — closed —
    it writes nothing."""
    if not CircuitBreaker.objects.filter(partner=partner, module=module).exclude(state=State.CLOSED).exists():
        return
    with transaction.atomic():
        breaker = CircuitBreaker.objects.select_for_update().filter(partner=partner, module=module).first()
        if breaker is None or breaker.state == State.CLOSED:
            return
        now = timezone.now()
        previous = breaker.state
        breaker.state, breaker.failures, breaker.window_started_at = State.CLOSED, 0, None
        breaker.retry_at = breaker.probe_until = None
        breaker.open_seconds, breaker.changed_at = 0, now
        breaker.save()
        _record_change(breaker, previous, State.CLOSED, "the partner answered again", now)


def failed(partner: Partner, module: str, reason: str) -> CircuitBreaker:
    """A request failed (no answer, a timeout, a 5xx, an answer that is not OCPI, an OCPI 3xxx)."""
    now = timezone.now()
    window = timedelta(seconds=settings.OCPI_BREAKER_WINDOW_SECONDS)
    with transaction.atomic():
        breaker = _locked(partner, module)
        if breaker.state == State.HALF_OPEN:
            seconds = min(max(breaker.open_seconds, 1) * 2, settings.OCPI_BREAKER_MAX_OPEN_SECONDS)
            _open(breaker, now, seconds, f"probe failed: {reason}")
            return breaker
        if breaker.state == State.OPEN:
            return breaker  # a request admitted before it opened, failing late
        if breaker.window_started_at is None or breaker.window_started_at < now - window:
            breaker.failures, breaker.window_started_at = 0, now
        breaker.failures += 1
        if breaker.failures >= settings.OCPI_BREAKER_FAILURES:
            _open(breaker, now, settings.OCPI_BREAKER_OPEN_SECONDS, f"{breaker.failures} failures, last: {reason}")
        else:
            breaker.save(update_fields=["failures", "window_started_at"])
    return breaker


def throttled(partner: Partner, module: str, retry_after_seconds: int | None) -> CircuitBreaker:
    """The partner answered 429: nothing more to it until its Retry-After (or the open period)."""
    now = timezone.now()
    seconds = retry_after_seconds if retry_after_seconds is not None else settings.OCPI_BREAKER_OPEN_SECONDS
    seconds = max(1, min(seconds, MAX_RETRY_AFTER_SECONDS))
    with transaction.atomic():
        breaker = _locked(partner, module)
        _open(breaker, now, seconds, f"429 Too Many Requests, Retry-After {seconds} s")
    return breaker


def _locked(partner: Partner, module: str) -> CircuitBreaker:
    breaker = CircuitBreaker.objects.select_for_update().filter(partner=partner, module=module).first()
    if breaker is None:
        try:
            with transaction.atomic():
                CircuitBreaker.objects.create(partner=partner, module=module)
        except IntegrityError:
            pass  # created by a concurrent failure
        breaker = CircuitBreaker.objects.select_for_update().get(partner=partner, module=module)
    breaker.partner = partner
    return breaker


def _open(breaker: CircuitBreaker, now: datetime, seconds: int, reason: str) -> None:
    previous = breaker.state
    if previous != State.OPEN:
        breaker.trips += 1
        breaker.opened_at = breaker.opened_at if previous == State.HALF_OPEN else now
    breaker.state = State.OPEN
    breaker.open_seconds = seconds
    breaker.retry_at = now + timedelta(seconds=seconds)
    breaker.probe_until = None
    breaker.reason = reason[:300]
    breaker.changed_at = now
    breaker.save()
    if previous != State.OPEN:
        _record_change(breaker, previous, State.OPEN, reason, now)


def _record_change(breaker: CircuitBreaker, previous: str, state: str, reason: str, now: datetime) -> None:
    BreakerChange.objects.create(breaker=breaker, from_state=previous, to_state=state, reason=reason[:300], at=now)
    metrics.BREAKER_TRANSITIONS.labels(breaker.partner.party_key, breaker.module, state).inc()
    level = logging.WARNING if state == State.OPEN else logging.INFO
    log.log(level, "circuit %s %s: %s -> %s (%s)", breaker.partner, breaker.module, previous, state, reason)


def due_for_probe(now: datetime | None = None) -> list[CircuitBreaker]:
    """Open breakers whose wait is over (the beat probes them, so recovery needs no traffic)."""
    now = now or timezone.now()
    return list(
        CircuitBreaker.objects.filter(state=State.OPEN, retry_at__lte=now).select_related("partner").order_by("pk")
    )


def not_closed() -> list[CircuitBreaker]:
    """Every breaker that is open or probing, for the console."""
    return list(
        CircuitBreaker.objects.exclude(state=State.CLOSED).select_related("partner").order_by("partner__name", "module")
    )
