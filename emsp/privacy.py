"""Personal data, in one registry: what each part of the platform holds about a driver, exported (GDPR Art.
15 and 20; India's DPDP Act 2023 §11) and erased (GDPR Art. 17; DPDP §12) — money records kept as tax law
requires, pseudonymised — and how long each class of data is kept (RETENTION_DAYS). Each app contributes its
part in its AppConfig.ready(), so the domain needs to import none of them. docs/privacy.md is the register."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db import connections, transaction
from django.db.models import OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from emsp.datetimes import format_datetime
from emsp.models import (
    Booking,
    BookingCheck,
    ChargingSession,
    Command,
    Delivery,
    DeliveryAttempt,
    Driver,
    Reservation,
)
from emsp.services.tokens import token_update

log = logging.getLogger(__name__)

Exporter = Callable[[Driver], dict[str, Any]]
Eraser = Callable[[Driver], dict[str, int]]

# Charging records (sessions, CDRs with their audits, disputes and receipts) are tax records: India's GST rules
# keep accounts 72 months after the annual return, most EU states 6-10 years (docs/privacy.md). A shorter
# RETENTION_DAYS["charging_records"] is refused: by the system check at start-up, and by pruning itself.
CHARGING_RECORDS_MIN_DAYS = 8 * 366
MIN_RETENTION_DAYS = {"charging_records": CHARGING_RECORDS_MIN_DAYS}
# What pruning goes by when PRUNE_BATCH_SIZE or PRUNE_MAX_ROWS_PER_RUN is unusable (emsp/settings.py's defaults):
# how it deletes, not what, so it goes on, and says so.
PRUNE_DEFAULTS = {"PRUNE_BATCH_SIZE": 5000, "PRUNE_MAX_ROWS_PER_RUN": 5_000_000}


@dataclass(frozen=True)
class Expiry:
    """Rows of one table that go with their retention: `kind` is the RETENTION_DAYS class (what
    `manage.py prune --kind` names), `label` what the count is reported as, `expired(since)` the rows older
    than the moment `since` (a queryset on the table whose rows are deleted; cascades follow)."""

    kind: str
    label: str
    expired: Callable[[datetime], QuerySet[Any]]


@dataclass(frozen=True)
class Part:
    name: str
    export: Exporter | None
    erase: Eraser | None
    expiring: tuple[Expiry, ...]


_parts: dict[str, Part] = {}


def register(
    name: str, *, export: Exporter | None = None, erase: Eraser | None = None, expiring: Sequence[Expiry] = ()
) -> None:
    _parts[name] = Part(name, export, erase, tuple(expiring))


def retention_kinds() -> list[str]:
    """The classes something is pruned under (the keys `manage.py prune --kind` accepts)."""
    return sorted({e.kind for part in _parts.values() for e in part.expiring})


def kept_since(data_class: str, now: datetime) -> datetime:
    """The oldest moment data of `data_class` may be from (settings.RETENTION_DAYS; `retention_problem` says
    whether the figure may be used)."""
    try:
        return now - timedelta(days=settings.RETENTION_DAYS[data_class])
    except OverflowError:  # longer than the calendar counts back (99999999 meaning "for ever"): nothing is older
        return datetime.min.replace(tzinfo=UTC)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def retention_problem(kind: str) -> str | None:
    """Why settings.RETENTION_DAYS[kind] can't be pruned by, or None. 0 or less would delete rows the moment
    they are stored (every CDR, session, dispute and receipt within the hour); charging records are kept at
    least their tax-law period (CHARGING_RECORDS_MIN_DAYS)."""
    setting = f'RETENTION_DAYS["{kind}"] (env RETENTION_{kind.upper()}_DAYS)'
    table = settings.RETENTION_DAYS if isinstance(settings.RETENTION_DAYS, Mapping) else {}
    if kind not in table:
        return f"{setting} is not set"
    days = table[kind]
    if not _whole(days) or days < 1:
        return f"{setting} is {days!r}: it must be a whole number of days, at least 1"
    floor = MIN_RETENTION_DAYS.get(kind)
    if floor is not None and days < floor:
        return (
            f"{setting} is {days}: charging records are tax records, kept at least {floor} days (8 × 366: India's "
            "GST rules keep accounts 72 months after the annual return, most EU states 6-10 years)"
        )
    return None


def prune_setting_problem(name: str) -> str | None:
    """Why settings.<name> (PRUNE_BATCH_SIZE, PRUNE_MAX_ROWS_PER_RUN) can't be used, or None."""
    value = getattr(settings, name, None)
    if _whole(value) and value >= 1:
        return None
    return f"{name} is {value!r}: it must be a whole number, at least 1"


def _prune_setting(name: str) -> int:
    problem = prune_setting_problem(name)
    if problem is None:
        return int(getattr(settings, name))
    log.error("retention: %s; pruning goes by %s instead", problem, PRUNE_DEFAULTS[name])
    return PRUNE_DEFAULTS[name]


def when(moment: datetime | None) -> str | None:
    return format_datetime(moment) if moment else None


def driver_export(driver: Driver) -> dict[str, Any]:
    """Everything we hold about one driver, as JSON-ready data."""
    out: dict[str, Any] = {"exported_at": format_datetime(timezone.now())}
    for part in _parts.values():
        if part.export is not None:
            out[part.name] = part.export(driver)
    return out


def driver_erase(driver: Driver, *, now: datetime | None = None) -> dict[str, int]:
    """Erase a driver's personal data everywhere, in one transaction: contact details, billing details,
    stored messages that carry them. What tax law needs (CDRs, receipts, settlements: amounts, dates, the
    pseudonymous token ids) is kept, tied to an account that no longer says whose it is."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    with transaction.atomic():
        # The domain's part last: the others find what is theirs by the account's details and tokens.
        for part in sorted(_parts.values(), key=lambda p: p.name == "domain"):
            if part.erase is not None:
                counts.update({f"{part.name}.{k}": v for k, v in part.erase(driver).items()})
    return counts


def purge_expired(
    now: datetime | None = None,
    *,
    kinds: Collection[str] | None = None,
    dry_run: bool = False,
    batch_size: int | None = None,
    max_rows: int | None = None,
) -> dict[str, int]:
    """Delete what is past its retention, kind by kind (all kinds, or those named), and say how many rows of
    each went ("<app>.<label>": count). Each kind goes in batches of `batch_size` rows, at most `max_rows` per
    run (settings.PRUNE_BATCH_SIZE, PRUNE_MAX_ROWS_PER_RUN): what is left goes on the next run. `dry_run`
    deletes nothing and counts what would go (all of it, whatever the cap). A kind whose RETENTION_DAYS can't be
    used (`retention_problem`: unset, below 1, charging records below their tax-law period) is not pruned, and
    logged as an error; the others are. An unusable PRUNE_BATCH_SIZE or PRUNE_MAX_ROWS_PER_RUN is logged and
    its default used (the system check refuses all of these at start-up: emsp/checks.py)."""
    for name, value in (("batch_size", batch_size), ("max_rows", max_rows)):
        if value is not None and (not _whole(value) or value < 1):
            raise ValueError(f"{name} must be a whole number, at least 1 (got {value!r})")
    now = now or timezone.now()
    batch = batch_size if batch_size is not None else _prune_setting("PRUNE_BATCH_SIZE")
    cap = max_rows if max_rows is not None else _prune_setting("PRUNE_MAX_ROWS_PER_RUN")
    problems: dict[str, str | None] = {}
    counts: dict[str, int] = {}
    for part in _parts.values():
        for expiry in part.expiring:
            if kinds is not None and expiry.kind not in kinds:
                continue
            if expiry.kind not in problems:
                problems[expiry.kind] = retention_problem(expiry.kind)
                if problems[expiry.kind] is not None:
                    log.error("retention: not pruning %s: %s", expiry.kind, problems[expiry.kind])
            if problems[expiry.kind] is not None:
                continue
            rows = expiry.expired(kept_since(expiry.kind, now))
            key = f"{part.name}.{expiry.label}"
            counts[key] = rows.count() if dry_run else delete_in_batches(rows, batch_size=batch, max_rows=cap)
    return counts


def delete_in_batches(rows: QuerySet[Any], *, batch_size: int, max_rows: int) -> int:
    """Delete `rows` a batch at a time, oldest primary keys first, each batch its own short transaction (no
    single DELETE that holds locks on millions of rows, and autovacuum can follow), stopping after `max_rows`.
    Returns how many rows of the queryset's own table went (cascaded rows go along uncounted).

    A batch is deleted by `rows` itself narrowed to the batch's keys, so the condition is checked again at delete
    time: a row that stopped qualifying after its key was read stays (a dispute opened on an old CDR, a failed
    delivery staff sent again). On PostgreSQL the batch's rows are first locked (FOR UPDATE SKIP LOCKED) and only
    then checked: what would make a locked row stay waits for this transaction (a dispute's foreign-key check
    takes KEY SHARE on its CDR, a retry UPDATEs the delivery) and then finds it gone, and a row another
    transaction holds is skipped, left for the next run."""
    model = rows.model
    db = rows.db
    lock = connections[db].features.has_select_for_update_skip_locked
    deleted = 0
    after: Any = None
    while deleted < max_rows:
        size = min(batch_size, max_rows - deleted)
        unread = rows if after is None else rows.filter(pk__gt=after)
        read = list(unread.order_by("pk").values_list("pk", flat=True)[:size])
        if not read:
            break
        after = read[-1]  # onwards from here: a row skipped (locked, or no longer due) isn't read again this run
        with transaction.atomic(using=db):
            pks = read
            if lock:
                locking = rows.filter(pk__in=read).select_for_update(skip_locked=True, of=("self",))
                pks = list(locking.values_list("pk", flat=True))
            _, per_model = rows.filter(pk__in=pks).delete()
        deleted += per_model.get(model._meta.label, 0)
        if len(read) < size:
            break
    return deleted


# --- the domain's own part -----------------------------------------------------------------------------------


def _export(driver: Driver) -> dict[str, Any]:
    tokens = list(driver.tokens.all())
    sessions = ChargingSession.objects.filter(token__in=tokens).order_by("start_date_time")
    return {
        "driver": {
            "id": driver.pk,
            "app_id": driver.app_id,
            "name": driver.name,
            "email": driver.email,
            "phone": driver.phone,
            "currency": driver.currency,
            "wallet_balance": str(driver.wallet_balance) if driver.wallet_balance is not None else None,
            "blocked": driver.is_blocked,
            "created_at": when(driver.created_at),
            "erased_at": when(driver.erased_at),
        },
        "tokens": [
            {
                "uid": t.uid,
                "type": t.type,
                "contract_id": t.contract_id,
                "visual_number": t.visual_number,
                "valid": t.valid,
                "blocked": t.is_blocked,
                "last_updated": when(t.last_updated),
            }
            for t in tokens
        ],
        "bookings": [
            {
                "order_id": b.order_id,
                "state": b.state,
                "connector_id": b.connector_id,
                "evse": str(b.evse),
                "created_at": when(b.created_at),
                "updated_at": when(b.updated_at),
            }
            for b in Booking.objects.filter(driver=driver).select_related("evse").order_by("created_at")
        ],
        "reservations": [
            {
                "reservation_id": r.reservation_id,
                "status": r.status,
                "start_at": when(r.start_at),
                "expiry_at": when(r.expiry_at),
            }
            for r in Reservation.objects.filter(token__in=tokens).order_by("start_at")
        ],
        "charging_sessions": [
            {
                "session_id": s.session_id,
                "operator": f"{s.country_code}*{s.party_id}",
                "status": s.status,
                "start": when(s.start_date_time),
                "end": when(s.end_date_time),
                "kwh": str(s.kwh),
                "location_id": s.ocpi_location_id,
                "evse_uid": s.evse_uid,
            }
            for s in sessions
        ],
    }


def _erase(driver: Driver) -> dict[str, int]:
    tokens = list(driver.tokens.all())
    for token in tokens:
        # No longer usable and no visual number, already invalid ones too (a CPO keeps what we pushed before):
        # every CPO is told, by a push that carries no personal data (uid and contract id).
        token_update(token=token, valid=False, visual_number="")
    # The commands we sent carried the token as it was, visual number included.
    scrubbed = 0
    for command in Command.objects.filter(token__driver=driver).only("pk", "request"):
        token = command.request.get("token") if isinstance(command.request, dict) else None
        if isinstance(token, dict) and token.pop("visual_number", None) is not None:
            Command.objects.filter(pk=command.pk).update(request=command.request)
            scrubbed += 1
    erased_name = f"Erased driver {driver.pk}"
    Driver.objects.filter(pk=driver.pk).update(
        name=erased_name, email="", phone="", is_blocked=True, erased_at=timezone.now()
    )
    # The console's history of the account (django_admin_log) names it as it was at each save (str(driver), the
    # name), and its change messages name the tokens added or changed with it: as the account now. A token's own
    # entries name its uid and type (Token.__str__), the pseudonymous id its CDRs keep: they stay.
    history = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Driver, for_concrete_model=False), object_id=str(driver.pk)
    ).update(object_repr=erased_name, change_message="")
    return {"tokens_invalidated": len(tokens), "commands_scrubbed": scrubbed, "drivers": 1, "admin_history": history}


_SETTLED = (Delivery.Status.DELIVERED, Delivery.Status.FAILED)


def expired_deliveries(since: datetime) -> QuerySet[Delivery]:
    """Deliveries settled before `since`: aged by when they settled (delivered, or the last try of a failed
    one), not by when they were made: a push that waited weeks and was then delivered is kept its full term. A
    row settles after it is made, so `created_at` bounds the candidates too (the status/time index's range)."""
    last_try = DeliveryAttempt.objects.filter(delivery=OuterRef("pk")).order_by("-at").values("at")[:1]
    return (
        Delivery.objects.filter(status__in=_SETTLED, created_at__lt=since)
        .alias(settled_at=Coalesce("delivered_at", Subquery(last_try), "created_at"))
        .filter(settled_at__lt=since)
    )


EXPIRING = (
    # Messages we owe partners carry their bodies (Beckn orders echo billing details): once settled, kept for
    # the console a while, then gone — OCPI pushes and Beckn callbacks alike (their rows and attempts cascade).
    Expiry("deliveries", "deliveries", expired_deliveries),
    # Attempts of a delivery still kept (one retrying for long): the old tries go, the delivery stays.
    Expiry("delivery_attempts", "delivery_attempts", lambda since: DeliveryAttempt.objects.filter(at__lt=since)),
    # Reconciliation's findings once resolved (repaired, gone or closed by staff); open ones wait for staff.
    Expiry("booking_checks", "booking_checks", lambda since: BookingCheck.objects.filter(resolved_at__lt=since)),
    # Charging records past the tax-law period (their CDRs go with billing's part), aged by the last change we
    # stored (`received_at`, our clock), not by the CPO's `last_updated`: a session can arrive, or be pulled,
    # with dates years old (the spec's examples are from 2015) and would go within the hour it was stored.
    Expiry(
        "charging_records",
        "charging_sessions",
        lambda since: ChargingSession.objects.filter(received_at__lt=since),
    ),
    # The commands of those charges (their requests name the token).
    Expiry("charging_records", "commands", lambda since: Command.objects.filter(created_at__lt=since)),
)

register("domain", export=_export, erase=_erase, expiring=EXPIRING)
