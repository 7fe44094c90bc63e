"""The one outbox: every message we owe a partner (OCPI pushes, Beckn callbacks) is a Delivery row written in
the transaction that caused it, then sent here under one retry policy (the Saleor webhook pattern).

A row is claimed by compare-and-set (PENDING → SENDING), sent outside any transaction or row lock, then
settled: 2xx is delivered; a 4xx other than 408/429 is final (the partner refused it, retrying can't help);
anything else is retried with exponential backoff and jitter until OUTBOX_MAX_ATTEMPTS. Every try is a
DeliveryAttempt row. A worker stopped mid-send leaves its row SENDING: after OUTBOX_SENDING_LEASE_SECONDS the
due sweep hands it back (at-least-once; receivers deduplicate by message id, as Beckn and OCPI PUTs allow).

How to send is the adapter's: each registers a sender for its channel at start-up (`register_sender`).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from emsp.async_commit import async_commit_suffix, update_committing_async
from emsp.celery import run_after_commit
from emsp.models import Delivery, DeliveryAttempt
from emsp.text import storable

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 900.0
SWEEP_BATCH = 200


@dataclass(frozen=True)
class SendResult:
    """What one try gave: the HTTP status (None: no answer), an error text, whether it arrived (unset: any
    2xx), and whether the sender already knows that trying again is pointless (the partner is gone)."""

    http_status: int | None
    error: str = ""
    delivered: bool | None = None
    give_up: bool = False
    # Not sent at all (the partner's circuit breaker is open): the try doesn't count, and the next one
    # waits for the breaker.
    not_sent_until: datetime | None = None

    @property
    def ok(self) -> bool:
        if self.delivered is not None:
            return self.delivered
        return self.http_status is not None and 200 <= self.http_status < 300


Sender = Callable[[Delivery], SendResult]
_senders: dict[str, Sender] = {}


def register_sender(channel: str, sender: Sender) -> None:
    _senders[channel] = sender


_send_here: ContextVar[bool] = ContextVar("outbox_send_here", default=False)


@contextmanager
def sent_here() -> Iterator[None]:
    """Rows written inside this block are sent by this process right after their transaction commits, not by a
    queued task. For latency-queue tasks that answer someone (a Beckn request's on_* callback): one task instead
    of two, and no second trip through the broker. Durability is unchanged: the row is committed before the
    send, so a worker that dies in between leaves it for the due sweep (written claimed, `claim_if_sent_here`:
    handed back after its lease, then sent), as a lost task would."""
    token = _send_here.set(True)
    try:
        yield
    finally:
        _send_here.reset(token)


def claim_if_sent_here(delivery: Delivery) -> None:
    """Before a new row is inserted: under `sent_here` it is written already claimed (SENDING, its first try
    counted), so the send right after the commit needs no claim of its own (an UPDATE and a commit on every
    Beckn callback; a profile of on_search). Nobody else can send it meanwhile: the due sweep takes only PENDING
    rows. A worker that dies between the commit and the send leaves the row SENDING, and the sweep hands it back
    after its lease, as it does for a worker that dies mid-send: a Beckn callback's is OUTBOX_CALLBACK_LEASE_SECONDS
    (15 s), so that it is still sent within its 30 s ttl."""
    if _send_here.get():
        delivery.status, delivery.claimed_at, delivery.attempts = Delivery.Status.SENDING, timezone.now(), 1


def deliver_after_commit(delivery: Delivery) -> None:
    """Send a new row as soon as the transaction that wrote it commits (the due sweep is the safety net)."""
    if not _send_here.get():
        run_after_commit("emsp.tasks.outbox_deliver", delivery.pk)
        return
    pk = delivery.pk
    claimed = delivery.status == Delivery.Status.SENDING and delivery.claimed_at is not None

    def send() -> None:
        if claimed and not _lease_still_ours(delivery):
            return  # handed back meanwhile: the sweep sends it
        try:
            # The row as written, not read back: three SELECTs a Beckn callback (claim's read, the sender's,
            # the settled row's) were 9 % of a search's time in its profile.
            deliver(pk, row=delivery, read_back=False, claimed=claimed)
        except Exception:  # the row stays PENDING (or SENDING, then handed back): the sweep sends it
            log.exception("sending delivery %s right after commit failed; the due sweep will", pk)

    transaction.on_commit(send)


# A row written claimed is sent after its commit, behind the others of that commit: one of several (an error
# callback and the alternatives after it) may wait up to a send's timeout for each before it. Past this, its
# claim is renewed before the send, so the due sweep does not hand it back and send it a second time meanwhile.
RENEW_CLAIM_AFTER = timedelta(seconds=5)


def _lease_still_ours(delivery: Delivery) -> bool:
    """True when the row's claim is fresh, or was renewed now; False when the sweep has handed it back."""
    now = timezone.now()
    if delivery.claimed_at is None or now - delivery.claimed_at < RENEW_CLAIM_AFTER:
        return True
    held = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING, claimed_at=delivery.claimed_at)
    if not held.update(claimed_at=now):
        return False
    delivery.claimed_at = now
    return True


def deliver_due_after_commit() -> None:
    """Run the due sweep soon (many rows written at once: one task sends them all)."""
    run_after_commit("emsp.tasks.outbox_deliver_due")


def backoff(attempts: int) -> timedelta:
    """Exponential, capped, with full jitter in its upper half (retries of many rows don't arrive together)."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1))
    return timedelta(seconds=ceiling * random.uniform(0.5, 1.0))


def is_permanent(http_status: int | None) -> bool:
    return http_status is not None and 400 <= http_status < 500 and http_status not in (408, 429)


def deliver(
    delivery_id: int,
    now: datetime | None = None,
    *,
    row: Delivery | None = None,
    read_back: bool = True,
    claimed: bool = False,
) -> Delivery | None:
    """One try at one row, if it is due and nobody else holds it. Returns the row settled and read back (with
    `read_back` false: as claimed, not read again), or None when there was nothing to try. `row`: the row as its
    writer holds it, sent as it is once claimed (the sender gets that instance, a channel's own subclass);
    `claimed`: that row was written already claimed (`claim_if_sent_here`), so it is sent without a claim."""
    now = now or timezone.now()
    if claimed:
        assert row is not None and row.status == Delivery.Status.SENDING and row.claimed_at is not None
        delivery = row
    elif not _claim(delivery_id, now):
        return None
    elif row is None:
        delivery = Delivery.objects.get(pk=delivery_id)
    else:  # what the claim just wrote (a row is claimed PENDING with its tries so far, as written)
        delivery = row
        delivery.status, delivery.claimed_at, delivery.attempts = Delivery.Status.SENDING, now, row.attempts + 1
    started = time.monotonic()
    sender = _senders.get(delivery.channel)
    try:
        if sender is None:
            raise LookupError(f"no sender registered for {delivery.channel}")
        result = sender(delivery)
    except Exception as exc:  # a fault of ours must not leave the row SENDING for good
        log.exception("sending %s failed", delivery)
        result = SendResult(None, f"{type(exc).__name__}: {exc}")
    return _settle(delivery, result, int((time.monotonic() - started) * 1000), read_back)


# The statements of a try in plain SQL on PostgreSQL (tests/emsp/test_outbox.py runs the outbox on both paths).
_TABLE = f'"{Delivery._meta.db_table}"'
_ATTEMPT_TABLE = f'"{DeliveryAttempt._meta.db_table}"'
_ATTEMPT_COLUMNS = ", ".join(
    f'"{DeliveryAttempt._meta.get_field(name).column}"'
    for name in ("delivery", "at", "http_status", "error", "duration_ms")
)
_CLAIM = (
    f'UPDATE {_TABLE} SET "status" = \'SENDING\', "claimed_at" = %s, "attempts" = "attempts" + 1 '  # noqa: S608
    f'WHERE "id" = %s AND "status" = \'PENDING\' AND "next_attempt_at" <= %s'
)
ONE_TRY_BACK = object()  # a settlement's `attempts`: the try that was not made does not count


def _claim(delivery_id: int, now: datetime) -> bool:
    """PENDING → SENDING if due, counting the try; committed asynchronously (a claim lost in a PostgreSQL crash
    leaves the row PENDING, sent again)."""
    if connection.vendor != "postgresql":
        pending = Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        values = {"status": Delivery.Status.SENDING, "claimed_at": now, "attempts": F("attempts") + 1}
        return bool(update_committing_async(pending, values))
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM + async_commit_suffix(), [now, delivery_id, now])
        return cursor.rowcount > 0


@functools.lru_cache(maxsize=32)
def _set_clause(names: tuple[str, ...]) -> str:
    fields = {f.name: f for f in Delivery._meta.concrete_fields}
    return ", ".join(
        f'"{fields[name].column}" = "{fields[name].column}" - 1'
        if name == "attempts"
        else f'"{fields[name].column}" = %s'
        for name in names
    )


def _settle_sql(delivery: Delivery, fields: dict[str, object]) -> tuple[str, list[object]]:
    """The UPDATE settling the claim `delivery` holds with these values (`attempts` can only go one back)."""
    names = tuple(fields)
    assert all(fields[n] is ONE_TRY_BACK for n in names if n == "attempts")
    params = [
        Delivery._meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in fields.items()
        if value is not ONE_TRY_BACK
    ]
    held = '"claimed_at" = %s' if delivery.claimed_at is not None else '"claimed_at" IS NULL'
    params += [delivery.pk] + ([delivery.claimed_at] if delivery.claimed_at is not None else [])
    return f'UPDATE {_TABLE} SET {_set_clause(names)} WHERE "id" = %s AND "status" = \'SENDING\' AND {held}', params  # noqa: S608


def _storable_error(error: str) -> str:
    """A try's error as its columns hold it: clipped, and a NUL made U+FFFD (PostgreSQL refuses it in text). A
    partner's refusal quoting one had failed the settlement itself, every time: the row stayed SENDING, was handed
    back after its lease and sent again for ever, OUTBOX_MAX_ATTEMPTS never reached."""
    return storable(error[:2000])


def _settle(delivery: Delivery, result: SendResult, duration_ms: int, read_back: bool = True) -> Delivery:
    now = timezone.now()
    status = result.http_status
    error = _storable_error(result.error)
    fields: dict[str, object] = {"last_http_status": status, "last_error": error, "claimed_at": None}
    if result.ok:
        fields.update(status=Delivery.Status.DELIVERED, delivered_at=now, last_error="")
    elif result.not_sent_until is not None:
        fields.update(
            status=Delivery.Status.PENDING, next_attempt_at=max(result.not_sent_until, now), attempts=ONE_TRY_BACK
        )
    elif result.give_up or is_permanent(status) or delivery.attempts >= settings.OUTBOX_MAX_ATTEMPTS:
        fields["status"] = Delivery.Status.FAILED
    else:
        fields.update(status=Delivery.Status.PENDING, next_attempt_at=now + backoff(delivery.attempts))
    # Only the claim we hold is settled: a row the sweep handed back meanwhile belongs to its new try.
    attempt = {"delivery_id": delivery.pk, "at": now, "http_status": status, "error": error}
    attempt["duration_ms"] = duration_ms
    if connection.vendor == "postgresql":
        # One statement, committed asynchronously when alone (a settlement lost in a PostgreSQL crash leaves the
        # row SENDING: handed back after its lease and sent again). It was BEGIN, UPDATE, INSERT, COMMIT: four
        # round trips and a wait for the disk on every callback. Its text is made once per set of columns: the
        # ORM compiled it on every callback (a profile of on_search: 6 % of the worker's CPU, with the claim).
        update, params = _settle_sql(delivery, fields)
        with connection.cursor() as cursor:
            cursor.execute(
                f"WITH settled AS ({update}) INSERT INTO {_ATTEMPT_TABLE} ({_ATTEMPT_COLUMNS}) "  # noqa: S608
                f"VALUES (%s, %s, %s, %s, %s){async_commit_suffix()}",
                [*params, *attempt.values()],
            )
    else:
        held = Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENDING, claimed_at=delivery.claimed_at)
        with transaction.atomic():
            held.update(**{k: F("attempts") - 1 if v is ONE_TRY_BACK else v for k, v in fields.items()})
            DeliveryAttempt.objects.create(**attempt)
    if read_back:
        delivery.refresh_from_db()
    return delivery


def release_stale(now: datetime | None = None) -> int:
    """Rows left SENDING by a worker that stopped mid-send go back to PENDING (sent again: at-least-once). A
    Beckn callback's lease is shorter (OUTBOX_CALLBACK_LEASE_SECONDS: its send times out after 10 s, its body
    after 30 s); every other row's is OUTBOX_SENDING_LEASE_SECONDS."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.OUTBOX_SENDING_LEASE_SECONDS)
    callback_lease = timedelta(seconds=settings.OUTBOX_CALLBACK_LEASE_SECONDS)
    callback = Q(channel=Delivery.Channel.BECKN_CALLBACK, claimed_at__lt=now - callback_lease)
    left = Q(claimed_at__lt=now - lease) | callback
    return Delivery.objects.filter(left, status=Delivery.Status.SENDING).update(
        status=Delivery.Status.PENDING,
        next_attempt_at=now,
        claimed_at=None,
        last_error="the worker sending it stopped before it finished; sending again",
    )


def deliver_due(now: datetime | None = None, limit: int = SWEEP_BATCH) -> int:
    """Beat: everything due (retries, rows whose first send was lost, rows handed back). Returns how many
    were tried here."""
    now = now or timezone.now()
    release_stale(now)
    ids = list(
        Delivery.objects.filter(status=Delivery.Status.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(1 for pk in ids if deliver(pk, now) is not None)


def retry_now(queryset: object) -> int:
    """Staff: send these again now (failed ones get one more try each). Rows being sent are left alone."""
    rows = Delivery.objects.filter(pk__in=queryset.values("pk")).exclude(  # type: ignore[attr-defined]
        status__in=(Delivery.Status.SENDING, Delivery.Status.DELIVERED)
    )
    ids = list(rows.values_list("pk", flat=True))
    Delivery.objects.filter(pk__in=ids).update(status=Delivery.Status.PENDING, next_attempt_at=timezone.now())
    for pk in ids:
        run_after_commit("emsp.tasks.outbox_deliver", pk)
    return len(ids)
