"""Settlement: one CPO's period (a month by default), one row per currency, computed with database aggregates,
reconciled against our audits and disputes, closed by finance and exported as CSV or XLSX (tablib).

A period holds the CDRs whose `end_date_time` falls in [period_start, period_end), midnight in the default time
zone (settings.TIME_ZONE). The figures, all excl. VAT unless named otherwise, summed in the database:

- `cdr_count`: CDRs received, credit CDRs included.
- `energy_kwh`: energy of the non-credit CDRs. A credit CDR repeats its original's energy (mod_cdrs "Credit
  CDRs"), so the credit that voids its original (voiding_credits: with the original's credits before it, it
  brings the original's total to 0 or below, as the ledger takes a charge for voided) takes the original's
  energy off, once, in its own period; one that only corrects the price takes none off. A credit CDR held for review
  (a HELD flag of billing/services/audit.py, unless it withdrew a held original: counted_credit) gave nothing back
  and voids nothing: its original's energy and repricing stay.
- `cpo_billed_excl_vat` / `cpo_billed_incl_vat`: the CDRs' `total_cost`, credit CDRs with their negative amounts,
  so they net against their originals; a CDR without `incl_vat` counts with its `excl_vat` (no VAT stated). A held
  credit CDR is not netted (the ledger took nothing off the CPO's payable for it); its CDR line adds 0.
- `computed_excl_vat`: our repricing (CdrAudit.computed_excl_vat) of every non-credit CDR; unpriced CDRs add 0.
  A voiding credit takes its original's repricing off (the corrected CDR that follows is repriced itself); a
  price-correcting credit adds 0, because our price for the session has not changed.
- `disputed_excl_vat` / `open_disputes`: the sum of |difference| and the number of disputes still OPEN or
  CONTESTED on the period's CDRs. Credits agreed in a dispute outside a credit CDR are not in these figures.
- `charged_to_drivers`: the drivers' receipts (total incl. VAT) for the period's CDRs, refunds negative, less
  what the ledger gave back of our fee and its VAT with a credit CDR (fee_given_back_booked: a credit's receipt
  carries no fee; the credit note states what was given back, payments.fee_given_back).
- `margin_excl_vat`: our fee on those receipts (fee_excl_vat) less the fee given back with credit CDRs, which
  is what we keep of what drivers pay: the ledger's fee revenue for the period's CDRs.
- `vat_collected`: the VAT on those receipts, the CPO's part (cpo_vat) plus ours (fee_vat), less the fee's VAT
  given back with credit CDRs.
- `ledger_payable`: what the ledger booked to the CPO's payable for the period's CDRs (their charges and credit
  CDRs, `cdr:<pk>`, and the dispute credits it bore on them, `dispute:<pk>`), whenever it was posted, payouts
  left out: the net payable the CPO statement states, checked against the books.
- `state`: RECONCILED when no dispute is open and every CDR has an audit MATCHED or CREDIT, or one in review
  (or unpriceable) that staff accepted as billed (audit.accept_as_billed), or a resolved (ACCEPTED/CREDITED)
  dispute; else OPEN. A CDR held for review (a HELD flag of billing/services/audit.py: no
  driver was billed for it) is never excused by a dispute: it stays in review until staff release it or the
  period is closed with it carried over. Finance closes a RECONCILED period (CLOSED), which freezes its row.

Stored figures are exact (4 decimals); exports round them per currency with the partner's rounding policy, each
CDR's figure on its own (rounding_adjustments), as the ledger books them: a total is the sum of its CDR lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import tablib
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Abs, Cast, Coalesce, Concat, Floor, Round
from django.db.models.lookups import Exact
from django.utils import timezone

from billing.models import Cdr, CdrAudit, Dispute, LedgerLine, PartnerTerms, Settlement
from billing.money import DEFAULT_POLICY, minor_units, round_money
from billing.services.ledger import from_minor
from emsp.datetimes import format_datetime
from emsp.models import Partner, PartnerParty
from emsp.text import CONTROL_CHARACTERS

log = logging.getLogger(__name__)

ZERO = Decimal("0")
AMOUNT = DecimalField(max_digits=16, decimal_places=4)
OK_AUDITS = (CdrAudit.Status.MATCHED, CdrAudit.Status.CREDIT)
RESOLVED_DISPUTES = (Dispute.State.ACCEPTED, Dispute.State.CREDITED)
XLSX_MAX_ROWS = 1_048_575  # Excel's sheet limit, less the header row
# The most rows a sheet of CDRs (or of an app's lines) may have in an XLSX built inside a console request.
# tablib/openpyxl build the whole workbook in memory before the first byte is sent. On a 2-core host, idle / under
# load: 20,000 CDRs 5.6 s / 13-16 s (210 MB), 50,000 14 s / 32 s (460 MB), 100,000 27 s / 98 s (880 MB); gunicorn
# kills a request after 60 s (deploy/gunicorn.conf.py; finance got a 502). Larger periods: the streamed CDR CSV
# (a console action) or `manage.py settlement_report --details`, which run outside a request.
XLSX_CONSOLE_MAX_ROWS = 20_000
CSV_CHUNK_ROWS = 5_000

CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class SettlementError(Exception):
    """A settlement cannot do what was asked (not reconciled, already closed, too large for the format).
    `carried`: CDRs in review a refused close carried to the next period all the same (settlement_close)."""

    def __init__(self, message: str, *, carried: int = 0) -> None:
        super().__init__(message)
        self.carried = carried


# --- periods ---------------------------------------------------------------------------------------------


# The last month a period may start in: a month's period ends (exclusive) on the first of the next one, and the
# next one must still be a date (Python's dates end with 9999-12-31). Forms and commands refuse later months.
LAST_MONTH = date(9998, 12, 1)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def parse_period(text: str) -> list[tuple[date, date]]:
    """`2026-10` → that month; `2026-08..2026-10` → each month of the range. Raises ValueError."""
    first, sep, last = text.strip().partition("..")
    try:
        start = datetime.strptime(first.strip(), "%Y-%m").date()  # noqa: DTZ007 - a calendar month, no time
        end = datetime.strptime(last.strip(), "%Y-%m").date() if sep else start  # noqa: DTZ007
    except ValueError:
        raise ValueError(f"period {text!r} is not YYYY-MM or YYYY-MM..YYYY-MM") from None
    if end < start:
        raise ValueError(f"period {text!r} ends before it starts")
    if end > LAST_MONTH:
        raise ValueError(f"period {text!r} ends after {LAST_MONTH:%Y-%m}")
    months = []
    while start <= end:
        months.append((start, next_month(start)))
        start = next_month(start)
    if len(months) > 120:
        raise ValueError(f"period {text!r} spans more than 10 years")
    return months


def period_bounds(period_start: date, period_end: date) -> tuple[datetime, datetime]:
    """The period's [start, end) as aware datetimes: midnight in the default time zone."""
    zone = timezone.get_default_timezone()
    return (
        timezone.make_aware(datetime.combine(period_start, time.min), zone),
        timezone.make_aware(datetime.combine(period_end, time.min), zone),
    )


def period_label(period_start: date, period_end: date) -> str:
    if period_start.day == 1 and period_end == next_month(period_start):
        return f"{period_start:%Y-%m}"
    return f"{period_start:%Y-%m-%d}..{period_end - timedelta(days=1):%Y-%m-%d}"


def in_period(period_start: date, period_end: date, prefix: str = "") -> Q:
    """CDRs settled in the period: those that ended in it and were not carried on, and those carried into it
    from an earlier period closed while they were still in review (`carried_to`)."""
    start, end = period_bounds(period_start, period_end)
    return Q(
        **{f"{prefix}end_date_time__gte": start, f"{prefix}end_date_time__lt": end, f"{prefix}carried_to": None}
    ) | Q(**{f"{prefix}carried_to__gte": period_start, f"{prefix}carried_to__lt": period_end})


# The periods a CDR's settlement depends on: the one it ended in and every later one (of its partner and currency).
_PERIODS_SQL = (
    "SELECT period_start, period_end, state FROM {table} WHERE partner_id = %s AND currency = %s AND period_end > %s "
    "ORDER BY period_start, id"
)


def carried_past_closed(partner_id: int, currency: str, end: datetime, *, lock: bool = False) -> date | None:
    """Where a CDR arriving now is settled when the period it ended in is already closed: the first period
    after it that is not (a late CDR, or a credit CDR, which repeats its original's end, for a month finance
    closed). None when its own period is open. Without this it would be in no settlement at all.

    With `lock` (records.cdr_store, in the transaction that stores the CDR) the periods read are locked FOR KEY
    SHARE on PostgreSQL until it commits: settlement_close locks its period FOR UPDATE before recomputing it, so
    either the close waits and counts the CDR, or the CDR waits and reads the period CLOSED (read before the
    close committed, the CDR would be stored inside the frozen period, settled nowhere). Key-share locks don't
    wait for each other, nor for a recomputation's UPDATE: storing CDRs stays concurrent. SQLite serialises
    writers and has no row locks."""
    day = timezone.localtime(end, timezone.get_default_timezone()).date()
    sql = _PERIODS_SQL.format(table=Settlement._meta.db_table)
    if lock and connection.vendor == "postgresql":
        sql += " FOR KEY SHARE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [partner_id, currency, day])
        closed = [(start, stop) for start, stop, state in cursor.fetchall() if state == Settlement.State.CLOSED]

    def closed_period_end(day: date) -> date | None:  # the latest end of a closed period holding `day`
        return max((stop for start, stop in closed if start <= day < stop), default=None)

    target = closed_period_end(day)
    if target is None:
        return None
    while (later := closed_period_end(target)) is not None:
        target = later
    return target


def period_cdrs(partner_id: int | None, period_start: date, period_end: date) -> QuerySet[Cdr]:
    """The period's CDRs, of one partner or (None) of all."""
    cdrs = Cdr.objects.filter(in_period(period_start, period_end))
    return cdrs if partner_id is None else cdrs.filter(partner_id=partner_id)


# --- computing -------------------------------------------------------------------------------------------

Key = tuple[int, str]  # (partner_id, currency): one Settlement row of a period


def _keyed(rows: Iterable[dict[str, Any]], partner: str, currency: str) -> dict[Key, dict[str, Any]]:
    return {(row.pop(partner), row.pop(currency)): row for row in rows}


def _figures(cdrs: QuerySet[Cdr]) -> dict[Key, dict[str, Any]]:
    """The CDR, audit and receipt figures in one aggregate over one-to-one joins. Nothing in it is correlated,
    so PostgreSQL aggregates in parallel workers (bench/bench_settlement.py)."""
    rows = (
        cdrs.order_by()
        .values("partner_id", "currency")
        .annotate(
            cdr_count=Count("pk"),
            energy_kwh=Sum("total_energy", filter=Q(credit=False), output_field=AMOUNT),
            # A held credit CDR gave nothing back: its negative amount is not netted (counted_credit).
            cpo_billed_excl_vat=Sum("total_cost_excl_vat", filter=_counted(), output_field=AMOUNT),
            cpo_billed_incl_vat=Sum(
                Coalesce("total_cost_incl_vat", "total_cost_excl_vat"), filter=_counted(), output_field=AMOUNT
            ),
            computed_excl_vat=Sum("audit__computed_excl_vat", filter=Q(credit=False), output_field=AMOUNT),
            charged_to_drivers=Sum("receipt__total_incl_vat", output_field=AMOUNT),
            margin_excl_vat=Sum("receipt__fee_excl_vat", output_field=AMOUNT),
            vat_collected=Sum(F("receipt__cpo_vat") + F("receipt__fee_vat"), output_field=AMOUNT),
            # CDRs without a MATCHED/CREDIT audit (unaudited ones included) that staff did not accept as billed;
            # a resolved dispute may excuse them.
            not_ok=Sum(
                Case(
                    When(audit__status__in=OK_AUDITS, then=Value(0)),
                    When(accepted_audit(), then=Value(0)),
                    When(withdrawn_audit(), then=Value(0)),
                    default=Value(1),
                )
            ),
        )
    )
    return _keyed(rows, "partner_id", "currency")


def counted_credit(prefix: str = "") -> Q:
    """Credit CDRs that take their amounts off their originals in the settlement: those not held for review (an
    audit CREDIT, or one not audited yet), and those withdrawing a held original that billed nobody
    (withdrawn_audit: the pair nets to nothing, nothing owed either way). A held credit (audit.HELD:
    `token_differs`, `over_credit`, `unknown_original`, `original_held`, `currency_differs`...) gave nothing back
    (audit 3c0bd4e, 85486e0): counted, it voided its original in the statement (0 kWh, CPO billed 0) while the
    ledger still owed the CPO the charge and the driver still owed it to us."""
    return ~held_audit(prefix) | withdrawn_audit(prefix)


def _counted() -> Q:
    """The CDRs whose amounts the settlement's cpo_billed sums count: every non-credit CDR, the credits
    counted_credit."""
    return Q(credit=False) | counted_credit()


def _earlier_credits() -> QuerySet[Cdr]:
    """The original's counted credit CDRs (counted_credit) that came before this one, by arrival."""
    return Cdr.objects.filter(credited_cdr=OuterRef("credited_cdr"), credit=True, pk__lt=OuterRef("pk")).filter(
        counted_credit()
    )


def _credited_before() -> Coalesce:
    """What the original's counted credit CDRs that came before this one (by arrival) took off its total, excl.
    VAT. A held one took nothing off."""
    earlier = (
        _earlier_credits().order_by().values("credited_cdr").annotate(total=Sum("total_cost_excl_vat")).values("total")
    )
    return Coalesce(Subquery(earlier, output_field=AMOUNT), Value(ZERO), output_field=AMOUNT)


def voiding_credits(cdrs: QuerySet[Cdr]) -> QuerySet[Cdr]:
    """The credit CDRs among `cdrs` that void their original: with the original's credits before them they bring
    its total (excl. VAT) to 0 or below, as payments._fee_given_back_in_all takes a charge for voided. One credit
    of minus the original's total, or the last of partial ones (-300, then -80 of 380); never a credit after the
    void, so the original's energy and our repricing come off once, in the period of the credit that completes
    the void. A free charge (0.00) is voided by its first credit. Rounded to the 4 decimals stored (SQLite sums
    floats). Only counted credits (counted_credit), before it and itself: a held credit voids nothing, and the
    CPO's corrected credit after it still voids the original."""
    left = F("credited_cdr__total_cost_excl_vat") + _credited_before()
    earlier = _earlier_credits()
    return (
        cdrs.filter(credit=True)
        .filter(counted_credit())
        .alias(
            left_before=Round(ExpressionWrapper(left, output_field=AMOUNT), 4),
            left_after=Round(ExpressionWrapper(left + F("total_cost_excl_vat"), output_field=AMOUNT), 4),
        )
        .filter(Q(left_before__gt=0) | ~Exists(earlier), left_after__lte=0)
    )


def _voided(cdrs: QuerySet[Cdr]) -> dict[Key, dict[str, Any]]:
    """The energy and our price of the originals that credit CDRs void (few rows)."""
    rows = (
        voiding_credits(cdrs)
        .order_by()
        .values("partner_id", "currency")
        .annotate(
            energy_kwh=Sum("credited_cdr__total_energy", output_field=AMOUNT),
            computed_excl_vat=Sum("credited_cdr__audit__computed_excl_vat", output_field=AMOUNT),
        )
    )
    return _keyed(rows, "partner_id", "currency")


def _booked_back(part: str) -> Coalesce:
    """What the ledger gave back with this credit CDR of our fee (`fee`) or of its VAT (`fee-vat`), in minor
    units: its entry's debit line, as payments.fee_given_back reads it for the credit note."""
    key = Concat(Value("cdr:"), Cast(OuterRef("pk"), CharField()), Value(f":credit:{part}"))
    lines = (
        LedgerLine.objects.filter(entry__idempotency_key=key, amount_minor__gt=0)
        .order_by()
        .values("entry_id")
        .annotate(total=Sum("amount_minor"))
        .values("total")
    )
    return Coalesce(Subquery(lines[:1]), Value(0))


def fee_given_back_booked(cdrs: QuerySet[Cdr]) -> QuerySet[Cdr]:
    """The credit CDRs among `cdrs` with which the ledger gave back some of our fee or its VAT, annotated
    `fee_back` and `fee_vat_back` (minor units; payments._our_part_given_back). A credit's receipt carries no fee
    (driver_pricing.receipt_for_cdr), and its credit note adds these to its total: the settlement and the
    console's margin take them off as the ledger does."""
    return (
        cdrs.filter(credit=True)
        .annotate(fee_back=_booked_back("fee"), fee_vat_back=_booked_back("fee-vat"))
        .filter(Q(fee_back__gt=0) | Q(fee_vat_back__gt=0))
    )


def _given_back(cdrs: QuerySet[Cdr]) -> dict[int, tuple[Key, Decimal, Decimal]]:
    """Per credit CDR (pk): its key and what the ledger gave back with it of our fee and its VAT (few rows)."""
    rows = (
        fee_given_back_booked(cdrs).order_by().values_list("pk", "partner_id", "currency", "fee_back", "fee_vat_back")
    )
    return {
        pk: ((partner_id, currency), from_minor(fee, currency), from_minor(fee_vat, currency))
        for pk, partner_id, currency, fee, fee_vat in rows
    }


def held_audit(prefix: str = "") -> Q:
    """CDRs whose audit holds them for review (audit.HELD: no driver billed, nothing owed to the CPO yet). The
    JSON list's text holds the quoted flag: portable across SQLite and PostgreSQL, as the console's flag filter."""
    from billing.services.audit import HELD  # audit imports the services this module is imported by

    held = Q()
    for flag in sorted(HELD):
        held |= Q(**{f"{prefix}audit__flags__icontains": f'"{flag}"'})
    return held


def accepted_audit(prefix: str = "") -> Q:
    """CDRs in review (or unpriceable), not held, whose bill staff accepted as billed (audit.ACCEPTED,
    `accept_as_billed`): counted as matching."""
    from billing.services.audit import ACCEPTED

    return Q(
        **{
            f"{prefix}audit__status__in": (CdrAudit.Status.REVIEW, CdrAudit.Status.UNPRICEABLE),
            f"{prefix}audit__flags__icontains": f'"{ACCEPTED}"',
        }
    ) & ~held_audit(prefix)


def withdrawn_audit(prefix: str = "") -> Q:
    """A held CDR that billed nobody and the CPO's credit CDRs that withdrew it (audit.WITHDRAWN): nothing owed
    either way, counted as matching."""
    from billing.services.audit import WITHDRAWN

    return Q(**{f"{prefix}audit__flags__icontains": f'"{WITHDRAWN}"'})


def _disputes(partner_id: int | None, period_start: date, period_end: date) -> dict[Key, dict[str, Any]]:
    """Open disputes on the period's CDRs, and the CDRs whose bad audit a resolved dispute excuses (never one
    held for review: accepting its dispute had closed the period, the CPO paid what no driver was billed).
    Driven from the (small) dispute table; a CDR can have several disputes, hence a query of its own."""
    disputes = Dispute.objects.filter(in_period(period_start, period_end, prefix="cdr__"))
    if partner_id is not None:
        disputes = disputes.filter(cdr__partner_id=partner_id)
    is_open = Q(state__in=Dispute.OPEN_STATES)
    rows = (
        disputes.order_by()
        .values("cdr__partner_id", "cdr__currency")
        .annotate(
            disputed=Sum(Abs("difference"), filter=is_open, output_field=AMOUNT),
            open=Count("pk", filter=is_open),
            excused=Count(
                "cdr",
                distinct=True,
                filter=Q(state__in=RESOLVED_DISPUTES)
                & ~Q(cdr__audit__status__in=OK_AUDITS)
                & ~held_audit("cdr__")
                & ~accepted_audit("cdr__"),
            ),
        )
    )
    return _keyed(rows, "cdr__partner_id", "cdr__currency")


def _ledger_payable(partner_id: int | None, period_start: date, period_end: date) -> dict[Key, Decimal]:
    """What the ledger booked to each CPO's payable accounts (one per party it settles for) for the period's
    CDRs: their totals less credits (entries referenced `cdr:<pk>`: the charge, a credit CDR's credit) and the
    dispute credits it bears on them (`dispute:<pk>`); payouts are not counted. By the CDRs the period settles
    (in_period), as the statement counts them, not by posting date: a CDR that ended at 23:50 on 31 October
    and was booked at 00:05 on 1 November is October's on both."""
    parties = PartnerParty.objects.all() if partner_id is None else PartnerParty.objects.filter(partner_id=partner_id)
    partner_of = {
        f"cpo:{cc.upper()}*{pid.upper()}:payable": p
        for p, cc, pid in parties.values_list("partner_id", "country_code", "party_id")
    }
    own = Partner.objects.all() if partner_id is None else Partner.objects.filter(pk=partner_id)
    for p, cc, pid in own.values_list("pk", "country_code", "party_id"):
        partner_of.setdefault(f"cpo:{cc.upper()}*{pid.upper()}:payable", p)
    cdrs = period_cdrs(partner_id, period_start, period_end)
    references = cdrs.annotate(ref=Concat(Value("cdr:"), Cast("pk", CharField()))).values("ref")
    disputes = Dispute.objects.filter(cdr__in=cdrs.values("pk")).annotate(
        ref=Concat(Value("dispute:"), Cast("pk", CharField()))
    )
    # One IN over both lists, not an OR of two: PostgreSQL can't make `IN (a) OR IN (b)` a join and tests each
    # line against the lists instead, and a list past work_mem is searched line by line (a big CPO's month at
    # 1 M CDRs: 170,000 references against 460,000 payable lines, minutes); one IN is a hashed semi-join.
    rows = (
        LedgerLine.objects.filter(account__code__in=list(partner_of))
        .filter(entry__reference__in=references.union(disputes.values("ref"), all=True))
        .exclude(entry__event__in=("settlement_payout", "reversal:settlement_payout"))
        .order_by()
        .values("account__code", "account__currency")
        .annotate(total=Sum("amount_minor"))
    )
    out: dict[Key, Decimal] = {}
    for row in rows:
        key = (partner_of[row["account__code"]], row["account__currency"])
        out[key] = out.get(key, ZERO) - from_minor(row["total"], row["account__currency"])
    return out


def _carried_out(partner_id: int | None, period_start: date, period_end: date) -> dict[Key, int]:
    """CDRs that ended in the period but were carried on to a later one."""
    start, end = period_bounds(period_start, period_end)
    cdrs = Cdr.objects.filter(end_date_time__gte=start, end_date_time__lt=end, carried_to__gte=period_end)
    if partner_id is not None:
        cdrs = cdrs.filter(partner_id=partner_id)
    rows = cdrs.order_by().values("partner_id", "currency").annotate(n=Count("pk"))
    return {(row["partner_id"], row["currency"]): row["n"] for row in rows}


def _compute(partner_id: int | None, period_start: date, period_end: date) -> dict[Key, dict[str, Any]]:
    """The Settlement values of the period, per (partner, currency): aggregate queries, no loop over the CDRs
    (only over the few credit CDRs)."""
    cdrs = period_cdrs(partner_id, period_start, period_end)
    voided = _voided(cdrs)
    given_back: dict[Key, tuple[Decimal, Decimal]] = {}
    for key, fee, fee_vat in _given_back(cdrs).values():
        before = given_back.get(key, (ZERO, ZERO))
        given_back[key] = (before[0] + fee, before[1] + fee_vat)
    disputes = _disputes(partner_id, period_start, period_end)
    booked = _ledger_payable(partner_id, period_start, period_end)
    carried = _carried_out(partner_id, period_start, period_end)
    now = timezone.now()
    out = {}
    for key, row in _figures(cdrs).items():
        void = voided.get(key, {})
        fee_back, fee_vat_back = given_back.get(key, (ZERO, ZERO))
        dispute = disputes.get(key, {})
        open_disputes = dispute.get("open", 0)
        reconciled = open_disputes == 0 and row["not_ok"] - dispute.get("excused", 0) == 0
        out[key] = {
            "period_end": period_end,
            "cdr_count": row["cdr_count"],
            "energy_kwh": (row["energy_kwh"] or ZERO) - (void.get("energy_kwh") or ZERO),
            "cpo_billed_excl_vat": row["cpo_billed_excl_vat"] or ZERO,
            "cpo_billed_incl_vat": row["cpo_billed_incl_vat"] or ZERO,
            "computed_excl_vat": (row["computed_excl_vat"] or ZERO) - (void.get("computed_excl_vat") or ZERO),
            "disputed_excl_vat": dispute.get("disputed") or ZERO,
            "open_disputes": open_disputes,
            "charged_to_drivers": (row["charged_to_drivers"] or ZERO) - fee_back - fee_vat_back,
            "margin_excl_vat": (row["margin_excl_vat"] or ZERO) - fee_back,
            "vat_collected": (row["vat_collected"] or ZERO) - fee_vat_back,
            "state": Settlement.State.RECONCILED if reconciled else Settlement.State.OPEN,
            "ledger_payable": booked.get(key, ZERO),
            "carried_over": carried.get(key, 0),
            "computed_at": now,
        }
    return out


def _store(computed: dict[Key, dict[str, Any]], partner_ids: set[int], period_start: date) -> list[Settlement]:
    """Upsert the computed rows of these partners' period. Closed rows keep the figures finance closed them
    with; open rows of a currency no longer present (e.g. a custom period replaced by the month) go."""
    with transaction.atomic():
        existing = {
            (s.partner_id, s.currency): s
            for s in Settlement.objects.filter(partner_id__in=partner_ids, period_start=period_start)
        }
        for (partner_id, currency), values in computed.items():
            settlement = existing.get((partner_id, currency))
            if settlement is None:
                settlement, created = Settlement.objects.get_or_create(
                    partner_id=partner_id, period_start=period_start, currency=currency, defaults=values
                )
                if created:
                    continue
            # Compare-and-set: a period finance closed meanwhile keeps its closed figures.
            changed = (
                Settlement.objects.filter(pk=settlement.pk).exclude(state=Settlement.State.CLOSED).update(**values)
            )
            if not changed and values["cdr_count"] != settlement.cdr_count:
                log.warning("settlement %s is closed but now has %s CDRs", settlement, values["cdr_count"])
        stale = [s.pk for key, s in existing.items() if key not in computed and s.state != Settlement.State.CLOSED]
        Settlement.objects.filter(pk__in=stale).exclude(state=Settlement.State.CLOSED).delete()
    return list(
        Settlement.objects.filter(partner_id__in=partner_ids, period_start=period_start)
        .select_related("partner", "closed_by")
        .order_by("partner__name", "partner_id", "currency")
    )


def _period_end(period_start: date, period_end: date | None) -> date:
    period_end = period_end or next_month(period_start)
    if period_end <= period_start:
        raise ValueError("period_end must be after period_start")
    return period_end


def settlement_compute(*, partner: Partner, period_start: date, period_end: date | None = None) -> list[Settlement]:
    """Compute and store the partner's settlement for the period (one row per currency, month by default)."""
    period_end = _period_end(period_start, period_end)
    return _store(_compute(partner.pk, period_start, period_end), {partner.pk}, period_start)


def settlements_compute(
    *, period_start: date, period_end: date | None = None, partners: Iterable[Partner] | None = None
) -> list[Settlement]:
    """The period's settlements of the given partners, or of every partner with CDRs or rows in the period.
    Every partner at once is one pass over the period's CDRs, not one per partner."""
    period_end = _period_end(period_start, period_end)
    if partners is not None:
        return [
            s
            for partner in partners
            for s in settlement_compute(partner=partner, period_start=period_start, period_end=period_end)
        ]
    computed = _compute(None, period_start, period_end)
    with_rows = Settlement.objects.filter(period_start=period_start).values_list("partner_id", flat=True)
    return _store(computed, {partner_id for partner_id, _ in computed} | set(with_rows), period_start)


def in_review(settlement: Settlement) -> QuerySet[Cdr]:
    """The period's CDRs that keep it from reconciling: an open dispute, or an audit that isn't MATCHED/CREDIT
    nor accepted as billed by staff, without a resolved dispute to excuse it (a CDR held for review is never
    excused)."""
    cdrs = period_cdrs(settlement.partner_id, settlement.period_start, settlement.period_end).filter(
        currency=settlement.currency
    )
    open_dispute = Q(disputes__state__in=Dispute.OPEN_STATES)
    bad_audit = (
        ~Q(audit__status__in=OK_AUDITS)
        & ~accepted_audit()
        & ~withdrawn_audit()
        & (~Q(disputes__state__in=RESOLVED_DISPUTES) | held_audit())
    )
    return cdrs.filter(open_dispute | bad_audit).distinct()


def _closed_after(settlement: Settlement) -> set[date]:
    """The starts of the closed periods after `settlement`'s (its partner and currency). On PostgreSQL the later
    periods read are locked FOR KEY SHARE until the carry-over commits, as carried_past_closed does for a CDR
    being stored: a close of the period the CDRs are about to be carried into (it locks that period FOR UPDATE)
    either committed first, and the carry-over skips the period, or waits for the carry-over and counts the
    CDRs. Read unlocked, a period closing meanwhile was taken for open and the CDRs carried into it after it
    froze: settled nowhere."""
    sql = _PERIODS_SQL.format(table=Settlement._meta.db_table)
    if connection.vendor == "postgresql":
        sql += " FOR KEY SHARE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [settlement.partner_id, settlement.currency, settlement.period_end])
        return {start for start, _end, state in cursor.fetchall() if state == Settlement.State.CLOSED}


def settlement_carry_over(*, settlement: Settlement, user: Any) -> int:
    """The stated rule for a period that can't wait: its CDRs still in review move to the next period (their
    `carried_to`), the rest reconciles and can be closed. Returns how many CDRs moved. Never for a closed
    period; the next period is recomputed too."""
    if settlement.state == Settlement.State.CLOSED:
        raise SettlementError(f"{settlement} is already closed")
    with transaction.atomic():
        monthly = settlement.period_start.day == 1 and settlement.period_end == next_month(settlement.period_start)
        length = settlement.period_end - settlement.period_start
        target, target_end = (
            settlement.period_end,
            (next_month(settlement.period_end) if monthly else settlement.period_end + length),
        )
        closed = _closed_after(settlement)
        while target in closed:  # never into a period finance already closed: the first one still open
            target, target_end = target_end, (next_month(target_end) if monthly else target_end + length)
        pending = list(in_review(settlement).values_list("pk", flat=True))
        moved = Cdr.objects.filter(pk__in=pending).update(carried_to=target)
        settlement_compute(
            partner=settlement.partner, period_start=settlement.period_start, period_end=settlement.period_end
        )
        if moved:
            settlement_compute(partner=settlement.partner, period_start=target, period_end=target_end)
        log.info("%s: %d CDR(s) in review carried to %s by %s", settlement, moved, target, user)
    return moved


def settlement_close(*, settlement: Settlement, user: Any, carry_over: bool = False) -> Settlement:
    """Close a reconciled period (compare-and-set RECONCILED → CLOSED), after recomputing it so that CDRs or
    disputes that arrived since the last computation are taken into account. With `carry_over`, CDRs still
    in review are first carried to the next period (settlement_carry_over), in the close's transaction. A period
    whose every CDR was in review has nothing left to close: its row is gone, the carry-over stands, and the
    SettlementError says how many CDRs moved (`carried`)."""
    moved = 0
    gone = False
    with transaction.atomic():
        # Locked before the recomputation, until the close commits: a CDR being stored for the period either
        # committed first (the recomputation counts it) or waits and is carried past the closed period
        # (carried_past_closed). Every currency's row of the period, in one order, as the recomputation rewrites
        # them all: two closes of the same month queue instead of deadlocking. The carry-over comes after the
        # lock, so that it never moves CDRs out of a period a concurrent close has just closed.
        locked = dict(
            Settlement.objects.select_for_update()
            .filter(partner_id=settlement.partner_id, period_start=settlement.period_start)
            .order_by("currency", "pk")
            .values_list("pk", "state")
        )
        if locked.get(settlement.pk, settlement.state) != Settlement.State.CLOSED:
            if carry_over:
                moved = settlement_carry_over(settlement=settlement, user=user)  # recomputes the period
            else:
                settlement_compute(
                    partner=settlement.partner, period_start=settlement.period_start, period_end=settlement.period_end
                )
        changed = Settlement.objects.filter(pk=settlement.pk, state=Settlement.State.RECONCILED).update(
            state=Settlement.State.CLOSED,
            closed_at=timezone.now(),
            closed_by=user if getattr(user, "is_authenticated", False) else None,
        )
        try:
            settlement.refresh_from_db()
        except Settlement.DoesNotExist:  # the recomputation found no CDRs left and removed the row
            gone = True
    if gone:
        if moved:
            raise SettlementError(
                f"{settlement} no longer has CDRs: its {moved} CDR(s) in review were carried to the next period, "
                "nothing is left to close",
                carried=moved,
            )
        raise SettlementError(f"{settlement} no longer has CDRs; recompute the period")
    if changed:
        return settlement
    if settlement.state == Settlement.State.CLOSED:
        raise SettlementError(f"{settlement} is already closed")
    reason = (
        f"{settlement.open_disputes} open dispute(s)"
        if settlement.open_disputes
        else "CDRs that are not audited as matching and have no resolved dispute"
    )
    raise SettlementError(f"{settlement} is {settlement.state}, not reconciled: {reason}")


# --- exports ---------------------------------------------------------------------------------------------

SUMMARY_HEADERS = [
    "partner",
    "party",
    "period",
    "period_start",
    "period_end_exclusive",
    "currency",
    "state",
    "cdr_count",
    "energy_kwh",
    "cpo_billed_excl_vat",
    "cpo_billed_incl_vat",
    "computed_excl_vat",
    "difference_excl_vat",
    "disputed_excl_vat",
    "open_disputes",
    "charged_to_drivers",
    "margin_excl_vat",
    "vat_collected",
    "computed_at",
    "closed_at",
    "closed_by",
]

CDR_HEADERS = [
    "party",
    "period",
    "cdr_id",
    "credit",
    "credit_reference_id",
    "session_id",
    "start_date_time",
    "end_date_time",
    "location_id",
    "evse_uid",
    "currency",
    "energy_kwh",
    "cpo_billed_excl_vat",
    "cpo_billed_incl_vat",
    "audit_status",
    "computed_excl_vat",
    "difference_excl_vat",
    "dispute_state",
    "dispute_difference",
    "charged_to_driver",
    "margin_excl_vat",
    "vat_collected",
]


def spreadsheet_text(value: str) -> str:
    """Partner- or app-supplied text must not turn into a spreadsheet formula (CSV/formula injection), nor
    carry control characters (a CPO's name adopted from its credentials, "Evil\\x0bCPO", failed the XLSX) or
    any other character XML 1.0 has no place for (a CPO named "Evil\\uffffCPO" made the workbook unopenable:
    openpyxl lets U+FFFE, U+FFFF and surrogates through into its XML)."""
    value = CONTROL_CHARACTERS.sub("", value)
    if not value.isascii():  # XML 1.0's Char: tab, LF, CR, U+0020-U+D7FF, U+E000-U+FFFD, U+10000-U+10FFFF
        value = "".join(c for c in value if c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000")
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _policies(partner_ids: Iterable[int]) -> dict[int, str]:
    return dict(PartnerTerms.objects.filter(partner_id__in=set(partner_ids)).values_list("partner_id", "rounding"))


def _money(amount: Decimal | None, currency: str, policy: str) -> Decimal | None:
    if amount is None:
        return None
    try:
        return round_money(amount, currency, policy)
    except ValueError:  # a currency outside ISO 4217: shown exact rather than guessed
        return amount


def _moment(value: datetime | None) -> str:
    # ISO 8601 text in UTC: spreadsheets cannot hold time zones (openpyxl refuses aware datetimes).
    return "" if value is None else format_datetime(value, "micros")


# --- rounding: per CDR, as the ledger books it -----------------------------------------------------------

# What each CDR adds to the figures that are rounded per CDR (rounding_adjustments).
ROUNDED_FIGURES = ("excl", "incl", "credit_excl", "credit_incl", "computed", "paid", "fee", "vat")
_ROUNDING_COLUMNS = (
    "pk",
    "partner_id",
    "currency",
    "credit",
    "total_cost_excl_vat",
    "total_cost_incl_vat",
    "audit__computed_excl_vat",
    "credited_cdr__audit__computed_excl_vat",
    "receipt__total_incl_vat",
    "receipt__fee_excl_vat",
    "receipt__cpo_vat",
    "receipt__fee_vat",
    "held_credit",
)


def _held_credit() -> Case:
    """True for a credit CDR not counted (counted_credit): held, it adds nothing to the CPO's billed figures."""
    return Case(
        When(Q(credit=True) & ~counted_credit(), then=Value(True)), default=Value(False), output_field=BooleanField()
    )


def _off_grid(scale: int) -> Q:
    """A CDR with a figure that is not a whole number of minor units (x·10^e ≠ ⌊x·10^e⌋, `scale` = 10^e). On
    SQLite (floats) exact figures may look off it too: they are read, and round to themselves."""
    figures = [
        F("total_cost_excl_vat"),
        F("total_cost_incl_vat"),
        F("audit__computed_excl_vat"),
        F("credited_cdr__audit__computed_excl_vat"),
        F("receipt__total_incl_vat"),
        F("receipt__fee_excl_vat"),
        F("receipt__cpo_vat") + F("receipt__fee_vat"),
    ]
    off = Q()
    for figure in figures:
        scaled = ExpressionWrapper(figure * Value(scale), output_field=AMOUNT)
        off |= ~Q(Exact(scaled, Floor(scaled)))
    return off


def rounding_adjustments(settlements: Sequence[Settlement], policies: dict[int, str]) -> dict[int, dict[str, Decimal]]:
    """Per settlement (by pk), what rounding each CDR's figures on their own adds to their exact sums (the sum
    of round(x) − x), so that a total rounded with it is the sum of its rounded per-CDR lines
    (settlement_cdr_rows) and of what the ledger books, one rounded amount per CDR (postings.bill_of): three
    CDRs of 10.125 are 30.39, not 30.38. Keys (ROUNDED_FIGURES): `excl`, `incl` (every CDR, `incl` falling back
    to `excl`), `credit_excl`, `credit_incl` (the credit CDRs among them), `computed` (our repricing of the
    non-credit CDRs, less the originals credits void), `paid`, `fee`, `vat` (the receipts). Only the CDRs with a
    figure off the currency's minor unit are read, one query per period; a currency outside ISO 4217 is not
    rounded (no adjustment)."""
    out: dict[int, dict[str, Decimal]] = {}
    periods: dict[tuple[date, date], dict[Key, Settlement]] = {}
    for s in settlements:
        try:
            minor_units(s.currency)
        except ValueError:
            continue
        periods.setdefault((s.period_start, s.period_end), {})[(s.partner_id, s.currency)] = s
    for (period_start, period_end), keyed in periods.items():
        by_scale: dict[int, set[str]] = {}
        for _, currency in keyed:
            by_scale.setdefault(10 ** minor_units(currency), set()).add(currency)
        off = Q()
        for scale, currencies in by_scale.items():
            off |= Q(currency__in=currencies) & _off_grid(scale)
        cdrs = period_cdrs(None, period_start, period_end).filter(partner_id__in={p for p, _ in keyed}).filter(off)
        voiding = set(voiding_credits(cdrs).values_list("pk", flat=True))
        rows = cdrs.order_by().annotate(held_credit=_held_credit()).values_list(*_ROUNDING_COLUMNS)
        for row in rows.iterator(chunk_size=CSV_CHUNK_ROWS):
            (pk, partner_id, currency, credit, excl, incl, computed, original_computed) = row[:8]
            (paid, fee, cpo_vat, fee_vat, held_credit) = row[8:]
            settlement = keyed.get((partner_id, currency))
            if settlement is None:
                continue
            policy = policies.get(partner_id, DEFAULT_POLICY)

            def adds(amount: Decimal | None, currency: str = currency, policy: str = policy) -> Decimal:
                return ZERO if amount is None else round_money(amount, currency, policy) - amount

            add = out.setdefault(settlement.pk, dict.fromkeys(ROUNDED_FIGURES, ZERO))
            billed = incl if incl is not None else excl
            if not held_credit:  # a held credit is not in the cpo_billed sums (_figures)
                add["excl"] += adds(excl)
                add["incl"] += adds(billed)
            if credit and not held_credit:
                add["credit_excl"] += adds(excl)
                add["credit_incl"] += adds(billed)
                if pk in voiding:  # its line takes its original's repricing off (_voided)
                    add["computed"] -= adds(original_computed)
            else:
                add["computed"] += adds(computed)
            add["paid"] += adds(paid)
            add["fee"] += adds(fee)
            if cpo_vat is not None:
                add["vat"] += adds(cpo_vat + fee_vat)
    return out


def settlement_report_rows(settlements: Sequence[Settlement]) -> list[list[Any]]:
    """The summary rows (SUMMARY_HEADERS order), money rounded per currency and the partner's policy, per CDR
    (rounding_adjustments): each total is the sum of its rounded CDR lines, as the ledger books them."""
    policies = _policies(s.partner_id for s in settlements)
    adjustments = rounding_adjustments(settlements, policies)
    rows = []
    for s in settlements:
        policy = policies.get(s.partner_id, DEFAULT_POLICY)
        add = adjustments.get(s.pk, {})

        def money(
            amount: Decimal, figure: str = "", currency: str = s.currency, policy: str = policy, add: Any = add
        ) -> Decimal | None:
            return _money(amount + add.get(figure, ZERO), currency, policy)

        billed_excl, computed = money(s.cpo_billed_excl_vat, "excl"), money(s.computed_excl_vat, "computed")
        rows.append(
            [
                spreadsheet_text(s.partner.name),
                s.partner.party_key,
                period_label(s.period_start, s.period_end),
                s.period_start,
                s.period_end,
                s.currency,
                s.state,
                s.cdr_count,
                s.energy_kwh,
                billed_excl,
                money(s.cpo_billed_incl_vat, "incl"),
                computed,
                billed_excl - computed,  # type: ignore[operator]  # the rounded figures' difference
                money(s.disputed_excl_vat),
                s.open_disputes,
                money(s.charged_to_drivers, "paid"),
                money(s.margin_excl_vat, "fee"),
                money(s.vat_collected, "vat"),
                _moment(s.computed_at),
                _moment(s.closed_at),
                s.closed_by.get_username() if s.closed_by_id else "",
            ]
        )
    return rows


def settlement_cdr_rows(settlement: Settlement, *, chunk_size: int = CSV_CHUNK_ROWS) -> Iterator[list[Any]]:
    """The settlement's CDRs one row each (CDR_HEADERS order), streamed from the database in chunks. Each line
    holds what its CDR adds to the summary, so the summary's totals are the sums of the lines: a credit CDR's
    energy and repricing are minus its original's when it voids it (voiding_credits), else none (it repeats its
    original's energy, which the summary counts once); its driver figures take off the fee and VAT the ledger
    gave back with it (fee_given_back_booked). A held credit CDR's billed amounts are 0 on its line, as the
    summary leaves them out (counted_credit); its audit status says it is in review."""
    policy = _policies([settlement.partner_id]).get(settlement.partner_id, DEFAULT_POLICY)
    party = settlement.partner.party_key
    label = period_label(settlement.period_start, settlement.period_end)
    latest = Dispute.objects.filter(cdr=OuterRef("pk")).order_by("-opened_at", "-pk")
    period = period_cdrs(settlement.partner_id, settlement.period_start, settlement.period_end).filter(
        currency=settlement.currency
    )
    voided = {
        pk: (energy, computed)
        for pk, energy, computed in voiding_credits(period).values_list(
            "pk", "credited_cdr__total_energy", "credited_cdr__audit__computed_excl_vat"
        )
    }
    given_back = {pk: (fee, fee_vat) for pk, (_, fee, fee_vat) in _given_back(period).items()}
    cdrs = (
        period.annotate(
            dispute_state=Subquery(latest.values("state")[:1]),
            dispute_difference=Subquery(latest.values("difference")[:1]),
            held_credit=_held_credit(),
        )
        .order_by("end_date_time", "pk")
        .values_list(
            "cdr_id",
            "credit",
            "credit_reference_id",
            "session_id",
            "start_date_time",
            "end_date_time",
            "location_id",
            "evse_uid",
            "total_energy",
            "total_cost_excl_vat",
            "total_cost_incl_vat",
            "audit__status",
            "audit__computed_excl_vat",
            "audit__difference_excl_vat",
            "dispute_state",
            "dispute_difference",
            "receipt__total_incl_vat",
            "receipt__fee_excl_vat",
            "receipt__cpo_vat",
            "receipt__fee_vat",
            "pk",
            "held_credit",
        )
    )
    currency = settlement.currency
    for row in cdrs.iterator(chunk_size=chunk_size):
        (cdr_id, credit, credit_ref, session_id, start, end, location_id, evse_uid, energy, excl, incl) = row[:11]
        (status, computed, difference, dispute_state, dispute_difference, paid, fee, cpo_vat, fee_vat) = row[11:20]
        (pk, held_credit) = row[20:]
        if held_credit:
            # Held, it gave nothing back: the summary does not net its amounts (counted_credit), nor does its line.
            excl, incl = ZERO, ZERO
        if credit:
            energy, computed = _voided_line(voided.get(pk), currency, policy)
        else:
            computed = _money(computed, currency, policy)
        if pk in given_back:
            fee_back, fee_vat_back = given_back[pk]
            paid, fee, fee_vat = paid - fee_back - fee_vat_back, fee - fee_back, fee_vat - fee_vat_back
        yield [
            party,
            label,
            spreadsheet_text(cdr_id),
            credit,
            spreadsheet_text(credit_ref),
            spreadsheet_text(session_id),
            _moment(start),
            _moment(end),
            spreadsheet_text(location_id),
            spreadsheet_text(evse_uid),
            currency,
            energy,
            _money(excl, currency, policy),
            _money(incl, currency, policy),
            status or "",
            computed,
            _money(difference, currency, policy),
            dispute_state or "",
            _money(dispute_difference, currency, policy),
            _money(paid, currency, policy),
            _money(fee, currency, policy),
            _money(None if cpo_vat is None else cpo_vat + fee_vat, currency, policy),
        ]


def _voided_line(original: tuple[Decimal, Decimal | None] | None, currency: str, policy: str) -> tuple[Any, Any]:
    """A credit CDR's energy and repricing on the CDR sheet: minus its original's when it voids it (the repricing
    rounded as the original's line, rounding_adjustments), else 0 and blank."""
    if original is None:
        return ZERO, None
    energy, computed = original
    rounded = _money(computed, currency, policy)
    return -energy, None if rounded is None else -rounded


def settlement_cdr_total(settlements: Sequence[Settlement]) -> int:
    """How many rows the settlements' sheet of CDRs has now (a closed row's `cdr_count` is frozen; CDRs may
    have arrived since): what an export is about to build, counted before building it."""
    return sum(
        period_cdrs(s.partner_id, s.period_start, s.period_end).filter(currency=s.currency).count() for s in settlements
    )


def _summary_dataset(settlements: Sequence[Settlement]) -> tablib.Dataset:
    dataset = tablib.Dataset(headers=SUMMARY_HEADERS, title="Settlement")
    for row in settlement_report_rows(settlements):
        dataset.append(row)
    return dataset


def settlement_dataset(
    settlements: Sequence[Settlement], include_cdrs: bool = False
) -> tablib.Dataset | tablib.Databook:
    """The summary as a Dataset; with `include_cdrs` a Databook with a second, per-CDR sheet (for XLSX)."""
    summary = _summary_dataset(settlements)
    if not include_cdrs:
        return summary
    total = sum(s.cdr_count for s in settlements)
    if total > XLSX_MAX_ROWS:
        raise SettlementError(f"{total} CDRs do not fit in one spreadsheet sheet; export the CDRs as CSV")
    detail = tablib.Dataset(headers=CDR_HEADERS, title="CDRs")
    for settlement in settlements:
        for row in settlement_cdr_rows(settlement):
            detail.append(row)
    return tablib.Databook([summary, detail])


def settlement_csv(settlements: Sequence[Settlement]) -> str:
    return _summary_dataset(settlements).export("csv")


def settlement_xlsx(settlements: Sequence[Settlement], include_cdrs: bool = False) -> bytes:
    return settlement_dataset(settlements, include_cdrs=include_cdrs).export("xlsx")


def settlement_cdrs_csv(settlements: Sequence[Settlement], *, chunk_size: int = CSV_CHUNK_ROWS) -> Iterator[str]:
    """The per-CDR CSV in pieces of `chunk_size` rows (header first), for streaming responses and files."""
    yield tablib.Dataset(headers=CDR_HEADERS).export("csv")
    chunk = tablib.Dataset()
    for settlement in settlements:
        for row in settlement_cdr_rows(settlement, chunk_size=chunk_size):
            chunk.append(row)
            if chunk.height >= chunk_size:
                yield chunk.export("csv")
                chunk = tablib.Dataset()
    if chunk.height:
        yield chunk.export("csv")


def export_filename(settlements: Sequence[Settlement], extension: str, suffix: str = "") -> str:
    """`settlement-IN-CPA-2026-10.csv` for one partner and period, `settlement-2026-08_2026-10.csv` otherwise."""
    parties = {(s.partner.country_code, s.partner.party_id) for s in settlements}
    periods = sorted({period_label(s.period_start, s.period_end) for s in settlements})
    name = "settlement"
    if len(parties) == 1:
        name += "-" + "-".join(next(iter(parties)))
    if periods:
        name += "-" + (periods[0] if len(periods) == 1 else f"{periods[0]}_{periods[-1]}")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{name}{suffix}.{extension}")
