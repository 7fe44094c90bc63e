"""Settlement with a consumer app (BAP): per app and currency over a period, what its drivers were billed, who
collected it (the app, or we), the finder fees, and who owes whom how much — read from the ledger, never kept
beside it, so a report, a statement and the books always agree.

The ledger accounts (billing/services/accounts.py): `bap:<bap_id>:receivable` (ASSET: what a collecting app
owes us, its bills less its finder fee) and `bap:<bap_id>:payable` (LIABILITY: finder fees we owe it on what we
collected). A period holds the entries with `posted_at` in [period_start, period_end), midnight in the
default time zone, like the CPO settlement (billing/services/settlement.py). Entries are grouped by their
`reference` (booking:<id>, cdr:<id>, …); a reference is the app's when any entry with it, in any period, has
a line on one of the app's two accounts.

- `collected_by_bap`: lines of `charge` and `credit`/`refund` entries on the app's receivable (a credit to a
  driver of a collecting app is a `credit` to refunds:pending, then a `refund` off the app's receivable:
  billing/services/postings.py).
- `collected_by_us`: lines on `driver:*` accounts of the `charge` entries with one of the app's references
  (charges we collected from its drivers; a charge with no finder fee and not collected by the app never
  touches the app's accounts, moves nothing between us and it, and is not counted), netted with the `credit`
  entries' lines on `refunds:pending` (what a credit CDR gives back to such a driver: postings.credit) of a
  reference the app did not collect. How we then pay the credit back (the provider, the wallet) goes
  through neither the app nor these figures.
- `credits`: the credit (and refund) part of both, negative; `charge_count`: references with a charge.
- `finder_fees_retained`: finder fees the app keeps out of what it collected (`finder_fee` lines on the
  receivable); `finder_fees_owed`: finder fees we owe on what we collected (`finder_fee` lines on the payable).
- `net_due`: the period's change of the app's position without payments — the sum of every non-payment line
  on both accounts: > 0 the app pays us, < 0 we pay the app. It equals `collected_by_bap −
  finder_fees_retained − finder_fees_owed + other` (other: any other event on the two accounts).
- `paid_by_bap` / `paid_to_bap`: payment lines on the receivable / payable: `remittance` (the app paid us),
  `settlement_payout` (we paid it), `payout`.
- `opening_balance` + `net_due` − `paid_by_bap` + `paid_to_bap` = `closing_balance`, the app's net position
  after the period (> 0 it owes us).
- `due_date`: the period's end plus the agreed settlement window (BapAgreement.settlement_window, an ISO 8601
  duration, P7D by default).

A reversal (`reversal:<event>`) counts under its event with its own (mirrored) signs.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import tablib
from django.db.models import Case, CharField, Count, Min, Q, Sum, Value, When
from django.utils import timezone

from billing.models import BapAgreement, LedgerAccount, LedgerLine
from billing.services import payments
from billing.services.ledger import from_minor
from billing.services.settlement import period_bounds, period_label, spreadsheet_text
from emsp.datetimes import format_datetime

ZERO = Decimal("0")
CHARGE = "charge"
CREDIT_EVENTS = ("credit", "refund")
FINDER_FEE = "finder_fee"
PAYMENT_EVENTS = ("remittance", "settlement_payout", "payout")
DRIVER_EVENTS = (CHARGE, "credit")  # the events whose driver-account lines are bills (not captures or refunds)
# Where a credit decided for a driver is booked (postings.credit): owed to the driver until it is paid back.
REFUNDS_PENDING = "refunds:pending"
REVERSAL = "reversal:"
ACCOUNT_CODE = re.compile(r"^bap:(?P<bap_id>.+):(?P<side>receivable|payable)$")


class BapSettlementError(ValueError):
    """A BAP settlement that can't be computed as asked (a malformed window, a bad period)."""


@dataclass(frozen=True)
class BapLine:
    """One reference of the period (a booking or CDR, or a payment): its part of each figure."""

    reference: str
    posted_at: datetime  # the first of its entries in the period
    collected_by: str  # "BAP", "BPP" (us), or "" for a payment or an adjustment
    billed: Decimal  # incl. VAT, credits netted
    credits: Decimal
    finder_fee: Decimal  # the app's fee (positive), retained by it or owed by us
    net: Decimal  # its change of what the app owes us (> 0) or we owe it (< 0), payments excluded
    paid: Decimal  # payments: > 0 the app paid us, < 0 we paid it


@dataclass(frozen=True)
class BapSettlement:
    bap_id: str
    legal_name: str
    currency: str
    period_start: date
    period_end: date  # exclusive
    collects: bool
    finder_fee_percent: Decimal
    settlement_window: str
    settlement_basis: str
    due_date: date
    charge_count: int = 0
    collected_by_bap: Decimal = ZERO
    collected_by_us: Decimal = ZERO
    credits: Decimal = ZERO
    finder_fees_retained: Decimal = ZERO
    finder_fees_owed: Decimal = ZERO
    other: Decimal = ZERO
    net_due: Decimal = ZERO
    paid_by_bap: Decimal = ZERO
    paid_to_bap: Decimal = ZERO
    opening_balance: Decimal = ZERO
    closing_balance: Decimal = ZERO
    lines: list[BapLine] = field(default_factory=list)

    @property
    def party(self) -> str:
        return f"bap:{self.bap_id}"

    @property
    def name(self) -> str:
        return self.legal_name or self.bap_id

    @property
    def billed_incl_vat(self) -> Decimal:
        return self.collected_by_bap + self.collected_by_us

    @property
    def finder_fees(self) -> Decimal:
        return self.finder_fees_retained + self.finder_fees_owed

    @property
    def payer(self) -> str:
        """Who pays the period's net due: "BAP" (the app pays us), "BPP" (we pay the app), or "" (nothing)."""
        return "BAP" if self.net_due > 0 else "BPP" if self.net_due < 0 else ""

    @property
    def is_empty(self) -> bool:
        return not self.lines and self.opening_balance == 0


# --- the agreed window ------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?!$)(?:(?P<Y>\d+)Y)?(?:(?P<M>\d+)M)?(?:(?P<W>\d+)W)?(?:(?P<D>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)


def add_duration(moment: datetime, duration: str) -> datetime:
    """`moment` plus an ISO 8601 duration (`P7D`, `P2W`, `P1M`, `PT48H`, `P1M15D`), at most a year. Years and
    months are calendar ones (31 Jan + P1M = 28/29 Feb), as a contract means them. Raises BapSettlementError."""
    match = _DURATION.match((duration or "").strip().upper())
    if match is None:
        raise BapSettlementError(f"settlement window {duration!r} is not an ISO 8601 duration such as P7D")
    n = {k: int(v or 0) for k, v in match.groupdict().items()}
    if max(n.values()) > 36500:
        raise BapSettlementError(f"settlement window {duration!r} is longer than anyone settles")
    try:
        later = _shifted(moment, n)
        # At most a year (and the day a calendar year may fall short of 366): longer is no settlement term, and
        # thousands of years ahead is past what a date can hold.
        longest = _shifted(moment, {"Y": 1, "D": 1})
    except (ValueError, OverflowError) as exc:  # beyond year 9999
        raise BapSettlementError(f"settlement window {duration!r} is longer than anyone settles") from exc
    if later > longest:
        raise BapSettlementError(f"settlement window {duration!r} is longer than a year")
    return later


def _shifted(moment: datetime, n: dict[str, int]) -> datetime:
    months = moment.month - 1 + n.get("M", 0) + 12 * n.get("Y", 0)
    year, month = moment.year + months // 12, months % 12 + 1
    last_day = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    shifted = moment.replace(year=year, month=month, day=min(moment.day, last_day))
    return shifted + timedelta(
        weeks=n.get("W", 0), days=n.get("D", 0), hours=n.get("h", 0), minutes=n.get("m", 0), seconds=n.get("s", 0)
    )


def due_date(agreement: BapAgreement, period_end: date) -> date:
    """The period's end (midnight local, the exclusive bound) plus the agreed window."""
    end, _ = period_bounds(period_end, period_end + timedelta(days=1))
    return timezone.localtime(add_duration(end, agreement.settlement_window)).date()


# --- computing --------------------------------------------------------------------------------------------


def _codes(bap_id: str) -> tuple[str, str]:
    return f"bap:{bap_id}:receivable", f"bap:{bap_id}:payable"


def _base(event: str) -> str:
    return event.removeprefix(REVERSAL)


def bap_ids(*, period_end: date | None = None) -> list[str]:
    """Every app with a ledger account (with lines posted before `period_end`, when given)."""
    accounts = LedgerAccount.objects.filter(code__startswith="bap:")
    if period_end is not None:
        end, _ = period_bounds(period_end, period_end + timedelta(days=1))
        accounts = accounts.filter(lines__entry__posted_at__lt=end)
    found = set()
    for code in accounts.values_list("code", flat=True).distinct():
        match = ACCOUNT_CODE.match(code)
        if match:
            found.add(match["bap_id"])
    return sorted(found)


def _currencies(bap_id: str, end: datetime) -> list[str]:
    return sorted(
        set(
            LedgerLine.objects.filter(account__code__in=_codes(bap_id), entry__posted_at__lt=end)
            .values_list("account__currency", flat=True)
            .distinct()
        )
    )


def _period_rows(bap_id: str, currency: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """The period's lines summed per (reference, event, role): role is receivable, payable or driver."""
    receivable, payable = _codes(bap_id)
    refs = (
        LedgerLine.objects.filter(account__code__in=(receivable, payable), account__currency=currency)
        .exclude(entry__reference="")
        .values("entry__reference")
    )
    driver_events = [*DRIVER_EVENTS, *(REVERSAL + e for e in DRIVER_EVENTS)]
    credit_events = ["credit", REVERSAL + "credit"]
    role = Case(
        When(account__code=receivable, then=Value("receivable")),
        When(account__code=payable, then=Value("payable")),
        When(account__code=REFUNDS_PENDING, then=Value("credited")),
        default=Value("driver"),
        output_field=CharField(),
    )
    return list(
        LedgerLine.objects.filter(account__currency=currency, entry__posted_at__gte=start, entry__posted_at__lt=end)
        .filter(
            Q(account__code__in=(receivable, payable))
            | Q(account__code__startswith="driver:", entry__event__in=driver_events, entry__reference__in=refs)
            | Q(account__code=REFUNDS_PENDING, entry__event__in=credit_events, entry__reference__in=refs)
        )
        .annotate(role=role)
        .order_by()
        .values("entry__reference", "entry__event", "role")
        .annotate(amount=Sum("amount_minor"), first=Min("entry__posted_at"), entries=Count("entry", distinct=True))
    )


def _opening(bap_id: str, currency: str, start: datetime) -> Decimal:
    total = LedgerLine.objects.filter(
        account__code__in=_codes(bap_id), account__currency=currency, entry__posted_at__lt=start
    ).aggregate(total=Sum("amount_minor"))["total"]
    return from_minor(total or 0, currency)


@dataclass
class _Fold:
    """A reference's running sums while the period's rows are folded (minor units)."""

    first: datetime
    bap_charge: int = 0
    driver_charge: int = 0
    credits: int = 0
    fee: int = 0
    net: int = 0
    paid: int = 0
    credited: int = 0  # credits decided for the driver (refunds:pending), the app's part only if it collected
    charged: bool = False


def bap_settlement_compute(
    *, bap_id: str, currency: str, period_start: date, period_end: date, agreement: BapAgreement | None = None
) -> BapSettlement:
    """The app's settlement in one currency over [period_start, period_end): three queries, no entry loop."""
    if period_end <= period_start:
        raise BapSettlementError("period_end must be after period_start")
    currency = currency.strip().upper()
    agreement = agreement or payments.agreement_for(bap_id)
    start, end = period_bounds(period_start, period_end)
    folds: dict[str, _Fold] = {}
    totals: dict[str, int] = defaultdict(int)
    for row in _period_rows(bap_id, currency, start, end):
        reference, event, role, amount = row["entry__reference"], _base(row["entry__event"]), row["role"], row["amount"]
        fold = folds.setdefault(reference, _Fold(first=row["first"]))
        fold.first = min(fold.first, row["first"])
        if event == CHARGE and not row["entry__event"].startswith(REVERSAL):
            fold.charged = True
        if role == "driver":  # a bill we collected; moves nothing between the app and us
            fold.driver_charge += amount
            if event != CHARGE:
                fold.credits += amount
            continue
        if role == "credited":  # a credit to the driver; netted below when we collected the bill it gives back
            fold.credited += amount
            continue
        if event in PAYMENT_EVENTS:
            # The app paying us credits its receivable; our paying it debits its payable.
            fold.paid -= amount
            if role == "receivable":
                totals["paid_by_bap"] -= amount
            else:
                totals["paid_to_bap"] += amount
            continue
        fold.net += amount
        if role == "receivable" and (event == CHARGE or event in CREDIT_EVENTS):
            fold.bap_charge += amount
            if event != CHARGE:
                fold.credits += amount
        elif event == FINDER_FEE:
            fold.fee -= amount
            totals["finder_fees_retained" if role == "receivable" else "finder_fees_owed"] -= amount
        else:
            totals["other"] += amount

    for fold in folds.values():
        # A credit (a credit CDR voiding a charge, a dispute) is the driver's money back: on what the app
        # collected, its refund comes off the app's receivable (counted above, bap_charge); on what we
        # collected, it nets the bill we collected from the credit booked for the driver (postings.credit).
        if fold.credited and not fold.bap_charge:
            fold.driver_charge += fold.credited
            fold.credits += fold.credited
    lines = []
    for reference, fold in sorted(folds.items(), key=lambda item: (item[1].first, item[0])):
        collected_by = "BAP" if fold.bap_charge else "BPP" if fold.driver_charge else ""
        lines.append(
            BapLine(
                reference=reference,
                posted_at=fold.first,
                collected_by=collected_by,
                billed=from_minor(fold.bap_charge + fold.driver_charge, currency),
                credits=from_minor(fold.credits, currency),
                finder_fee=from_minor(fold.fee, currency),
                net=from_minor(fold.net, currency),
                paid=from_minor(fold.paid, currency),
            )
        )
    opening = _opening(bap_id, currency, start)
    net_due = sum((fold.net for fold in folds.values()), 0)
    paid = sum((fold.paid for fold in folds.values()), 0)
    return BapSettlement(
        bap_id=bap_id,
        legal_name=agreement.legal_name,
        currency=currency,
        period_start=period_start,
        period_end=period_end,
        collects=agreement.collects,
        finder_fee_percent=agreement.finder_fee_percent,
        settlement_window=agreement.settlement_window,
        settlement_basis=agreement.settlement_basis,
        due_date=due_date(agreement, period_end),
        charge_count=sum(1 for fold in folds.values() if fold.charged),
        collected_by_bap=from_minor(sum(f.bap_charge for f in folds.values()), currency),
        collected_by_us=from_minor(sum(f.driver_charge for f in folds.values()), currency),
        credits=from_minor(sum(f.credits for f in folds.values()), currency),
        finder_fees_retained=from_minor(totals["finder_fees_retained"], currency),
        finder_fees_owed=from_minor(totals["finder_fees_owed"], currency),
        other=from_minor(totals["other"], currency),
        net_due=from_minor(net_due, currency),
        paid_by_bap=from_minor(totals["paid_by_bap"], currency),
        paid_to_bap=from_minor(totals["paid_to_bap"], currency),
        opening_balance=opening,
        closing_balance=opening + from_minor(net_due - paid, currency),
        lines=lines,
    )


def bap_settlements_compute(
    *, period_start: date, period_end: date, bap_id: str | None = None, currency: str | None = None
) -> list[BapSettlement]:
    """The period's settlements of one app (or of every app with ledger accounts), one per currency; apps
    with nothing in the period and nothing outstanding are left out."""
    if period_end <= period_start:
        raise BapSettlementError("period_end must be after period_start")
    _, end = period_bounds(period_start, period_end)
    out = []
    for app in [bap_id] if bap_id is not None else bap_ids(period_end=period_end):
        agreement = payments.agreement_for(app)
        for code in [currency.upper()] if currency else _currencies(app, end):
            settlement = bap_settlement_compute(
                bap_id=app, currency=code, period_start=period_start, period_end=period_end, agreement=agreement
            )
            if not settlement.is_empty:
                out.append(settlement)
    return out


# --- exports ----------------------------------------------------------------------------------------------

SUMMARY_HEADERS = [
    "bap_id",
    "legal_name",
    "period",
    "period_start",
    "period_end_exclusive",
    "currency",
    "collects",
    "finder_fee_percent",
    "settlement_window",
    "due_date",
    "charge_count",
    "billed_incl_vat",
    "collected_by_bap",
    "collected_by_us",
    "credits",
    "finder_fees_retained_by_bap",
    "finder_fees_owed_to_bap",
    "other_adjustments",
    "net_due",
    "payer",
    "paid_by_bap",
    "paid_to_bap",
    "opening_balance",
    "closing_balance",
]

LINE_HEADERS = [
    "bap_id",
    "period",
    "currency",
    "reference",
    "posted_at",
    "collected_by",
    "billed_incl_vat",
    "credits",
    "finder_fee",
    "net",
    "paid",
]


def _moment(value: datetime) -> str:
    return format_datetime(value, "seconds")


def bap_settlement_rows(settlements: Sequence[BapSettlement]) -> list[list[Any]]:
    """The summary rows, SUMMARY_HEADERS order. Ledger amounts are exact in minor units: nothing to round."""
    return [
        [
            spreadsheet_text(s.bap_id),
            spreadsheet_text(s.legal_name),
            period_label(s.period_start, s.period_end),
            s.period_start,
            s.period_end,
            s.currency,
            s.collects,
            s.finder_fee_percent,
            s.settlement_window,
            s.due_date,
            s.charge_count,
            s.billed_incl_vat,
            s.collected_by_bap,
            s.collected_by_us,
            s.credits,
            s.finder_fees_retained,
            s.finder_fees_owed,
            s.other,
            s.net_due,
            s.payer,
            s.paid_by_bap,
            s.paid_to_bap,
            s.opening_balance,
            s.closing_balance,
        ]
        for s in settlements
    ]


def bap_line_rows(settlements: Sequence[BapSettlement]) -> Iterator[list[Any]]:
    for s in settlements:
        label = period_label(s.period_start, s.period_end)
        for line in s.lines:
            yield [
                spreadsheet_text(s.bap_id),
                label,
                s.currency,
                spreadsheet_text(line.reference),
                _moment(line.posted_at),
                line.collected_by,
                line.billed,
                line.credits,
                line.finder_fee,
                line.net,
                line.paid,
            ]


def bap_settlement_dataset(
    settlements: Sequence[BapSettlement], include_lines: bool = False
) -> tablib.Dataset | tablib.Databook:
    summary = tablib.Dataset(*bap_settlement_rows(settlements), headers=SUMMARY_HEADERS, title="BAP settlement")
    if not include_lines:
        return summary
    lines = tablib.Dataset(*bap_line_rows(settlements), headers=LINE_HEADERS, title="Lines")
    return tablib.Databook([summary, lines])


def bap_settlement_csv(settlements: Sequence[BapSettlement]) -> str:
    return bap_settlement_dataset(settlements).export("csv")


def bap_lines_csv(settlements: Sequence[BapSettlement]) -> str:
    return tablib.Dataset(*bap_line_rows(settlements), headers=LINE_HEADERS).export("csv")


def bap_settlement_xlsx(settlements: Sequence[BapSettlement], include_lines: bool = False) -> bytes:
    return bap_settlement_dataset(settlements, include_lines=include_lines).export("xlsx")


def bap_export_filename(settlements: Sequence[BapSettlement], extension: str, suffix: str = "") -> str:
    """`bap-settlement-<bap_id>-2026-10.csv` for one app and period, `bap-settlement-2026-08_2026-10.csv` else."""
    apps = {s.bap_id for s in settlements}
    periods = sorted({period_label(s.period_start, s.period_end) for s in settlements})
    name = "bap-settlement"
    if len(apps) == 1:
        name += "-" + next(iter(apps))
    if periods:
        name += "-" + (periods[0] if len(periods) == 1 else f"{periods[0]}_{periods[-1]}")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{name}{suffix}.{extension}")
