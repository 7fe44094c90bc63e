"""The figures of the finance console (billing/admin_ledger.py, billing/admin_payments.py): the trial balance,
account statements a page at a time, receivables and payables over time, and the payment exceptions queue.
Each is a constant number of aggregate queries, however many accounts, lines or payments there are."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import (
    Case,
    CharField,
    Exists,
    F,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from billing.dashboard import Window as Days
from billing.dashboard import window_of
from billing.models import LedgerAccount, LedgerLine, Payment, PaymentOperation, PayoutReconciliation
from billing.services.ledger import from_minor
from emsp.models import Booking

ZERO = Decimal("0")

# ---------------------------------------------------------------------------------------------
# Account groups (the chart of accounts is billing/services/accounts.py)
# ---------------------------------------------------------------------------------------------

# Per-party accounts: `<party kind>:<party id>:<purpose>`. The party id may itself hold a colon (a BAP id is a
# domain, a CPO's `CC*PID` does not), so a code is read by its first and last segments only.
PARTY_KINDS = ("driver", "bap", "cpo")


def account_family(code: str) -> str:
    """The account's line in a summary: `driver:42:receivable` → `driver:*:receivable`; others as they are."""
    head, _, rest = code.partition(":")
    if head in PARTY_KINDS and ":" in rest:
        return f"{head}:*:{rest.rsplit(':', 1)[1]}"
    return code


def _party_accounts(kind: str, purpose: str, prefix: str = "account__") -> Q:
    return Q(**{f"{prefix}code__startswith": f"{kind}:", f"{prefix}code__endswith": f":{purpose}"})


def receivables_q(prefix: str = "account__") -> Q:
    """What others owe us: drivers' receivables and collecting apps' receivables (assets, debit balances)."""
    return _party_accounts("driver", "receivable", prefix) | _party_accounts("bap", "receivable", prefix)


def payables_q(prefix: str = "account__") -> Q:
    """What we owe: CPOs, apps' finder fees and refunds decided for drivers (liabilities, credit balances)."""
    return (
        _party_accounts("cpo", "payable", prefix)
        | _party_accounts("bap", "payable", prefix)
        | Q(**{f"{prefix}code": "refunds:pending"})
    )


# ---------------------------------------------------------------------------------------------
# Trial balance
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRow:
    """One account (or, summarised, one family of per-party accounts) and its balance: debit +, credit −."""

    label: str
    kind: str
    balance: Decimal
    accounts: int = 1
    account: LedgerAccount | None = None

    @property
    def debit(self) -> Decimal | None:
        return self.balance if self.balance > 0 else None

    @property
    def credit(self) -> Decimal | None:
        return -self.balance if self.balance < 0 else None


@dataclass
class TrialBalance:
    currency: str
    rows: list[TrialRow] = field(default_factory=list)
    debits: Decimal = ZERO
    credits: Decimal = ZERO
    zero_accounts: int = 0

    @property
    def total(self) -> Decimal:
        """Debits minus credits: zero when the books are sound (each entry balances)."""
        return self.debits - self.credits

    @property
    def balanced(self) -> bool:
        return self.total == 0


def trial_balances(*, until: datetime | None = None, detail: bool = False) -> list[TrialBalance]:
    """Every currency's trial balance (up to `until`, exclusive), in one query. Per-party accounts are summed by
    family (all drivers' receivables in one row) unless `detail`; accounts at zero are counted, not listed."""
    lines = Q(lines__entry__posted_at__lt=until) if until is not None else Q()
    accounts = LedgerAccount.objects.annotate(
        balance_minor=Coalesce(Sum("lines__amount_minor", filter=lines), 0)
    ).order_by("currency", "code")
    books: dict[str, TrialBalance] = {}
    families: dict[tuple[str, str], list[Any]] = {}
    for account in accounts:
        book = books.setdefault(account.currency, TrialBalance(account.currency))
        balance = from_minor(account.balance_minor, account.currency)
        if balance > 0:
            book.debits += balance
        else:
            book.credits -= balance
        if balance == 0:
            book.zero_accounts += 1
            continue
        if detail:
            book.rows.append(TrialRow(account.code, account.kind, balance, account=account))
            continue
        family = families.setdefault((account.currency, account_family(account.code)), [account.kind, ZERO, 0, account])
        family[1] += balance
        family[2] += 1
    for (currency, label), (kind, balance, count, account) in sorted(families.items()):
        books[currency].rows.append(TrialRow(label, kind, balance, count, account if count == 1 else None))
    return [books[currency] for currency in sorted(books)]


# ---------------------------------------------------------------------------------------------
# Statement of one account, a page at a time
# ---------------------------------------------------------------------------------------------

STATEMENT_PAGE_SIZE = 100


@dataclass(frozen=True)
class StatementRow:
    line: LedgerLine
    amount: Decimal
    balance: Decimal

    @property
    def entry(self) -> Any:
        return self.line.entry


@dataclass
class StatementPage:
    account: LedgerAccount
    opening: Decimal  # the balance before `since` (zero without it)
    closing: Decimal  # the balance at the end of the range
    page: Page
    rows: list[StatementRow]

    @property
    def carried_forward(self) -> Decimal:
        """The balance before the page's first line: the opening balance on the first page."""
        return self.rows[0].balance - self.rows[0].amount if self.rows else self.opening


def statement_page(
    *,
    account: LedgerAccount,
    since: datetime | None = None,
    until: datetime | None = None,
    page: Any = 1,
    per_page: int = STATEMENT_PAGE_SIZE,
) -> StatementPage:
    """The lines of `account` posted in [since, until), oldest first, one page of them, each with the running
    balance. The running sum is a window over the whole range computed by the database before it cuts the
    page, so page 40 costs what page 1 does (billing.services.ledger.statement reads the whole range)."""
    lines = LedgerLine.objects.filter(account=account)
    in_range = lines
    opening_minor = 0
    if since is not None:
        opening_minor = lines.filter(entry__posted_at__lt=since).aggregate(total=Sum("amount_minor"))["total"] or 0
        in_range = in_range.filter(entry__posted_at__gte=since)
    if until is not None:
        in_range = in_range.filter(entry__posted_at__lt=until)
    order = (F("entry__posted_at").asc(), F("entry_id").asc(), F("pk").asc())
    ordered = (
        in_range.select_related("entry")
        .annotate(running_minor=Window(Sum("amount_minor"), order_by=order))
        .order_by(*order)
    )
    paginator = Paginator(ordered, per_page)
    page_obj = paginator.get_page(page)
    currency = account.currency
    rows = [
        StatementRow(
            line=line,
            amount=from_minor(line.amount_minor, currency),
            balance=from_minor(opening_minor + line.running_minor, currency),
        )
        for line in page_obj.object_list
    ]
    range_total = in_range.aggregate(total=Sum("amount_minor"))["total"] or 0
    return StatementPage(
        account=account,
        opening=from_minor(opening_minor, currency),
        closing=from_minor(opening_minor + range_total, currency),
        page=page_obj,
        rows=rows,
    )


# ---------------------------------------------------------------------------------------------
# Receivables and payables over time
# ---------------------------------------------------------------------------------------------

HISTORY_DAYS = 90
RECEIVABLES, PAYABLES = "receivables", "payables"


@dataclass(frozen=True)
class BalanceHistory:
    """Closing balances at the end of each day in one currency: what others owe us (receivables, a debit
    balance) and what we owe (payables, shown as a positive amount)."""

    currency: str
    days: tuple[date, ...]
    receivables: list[Decimal]
    payables: list[Decimal]

    @property
    def rows(self) -> list[tuple[date, Decimal, Decimal]]:
        return list(zip(self.days, self.receivables, self.payables, strict=True))


def _groups(lines: QuerySet[LedgerLine]) -> QuerySet[LedgerLine]:
    group = Case(
        When(receivables_q(), then=Value(RECEIVABLES)),
        When(payables_q(), then=Value(PAYABLES)),
        output_field=CharField(),
    )
    return lines.filter(receivables_q() | payables_q()).annotate(group=group)


def balance_history(*, days: int = HISTORY_DAYS, now: datetime | None = None) -> list[BalanceHistory]:
    """Two GROUP BYs: the balances of both groups when the window opens, then the sums per day in it; the
    closing balances are their running sums. Days are whole days in the current time zone (as the home page's)."""
    win: Days = window_of(days=days, now=now)
    opening = (
        _groups(LedgerLine.objects.filter(entry__posted_at__lt=win.start))
        .values("account__currency", "group")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    )
    per_day = (
        _groups(LedgerLine.objects.filter(entry__posted_at__gte=win.start, entry__posted_at__lt=win.end))
        .annotate(day=TruncDate("entry__posted_at"))
        .values("account__currency", "group", "day")
        .annotate(total=Sum("amount_minor"))
        .order_by()
    )
    start: dict[tuple[str, str], int] = defaultdict(int)
    moves: dict[tuple[str, str, date], int] = defaultdict(int)
    for row in opening:
        start[row["account__currency"], row["group"]] += row["total"]
    for row in per_day:
        moves[row["account__currency"], row["group"], row["day"]] += row["total"]
    currencies = sorted({c for c, _ in start} | {c for c, _, _ in moves})
    history = []
    for currency in currencies:
        series: dict[str, list[Decimal]] = {}
        for group, sign in ((RECEIVABLES, 1), (PAYABLES, -1)):
            running = start[currency, group]
            closing = []
            for day in win.days:
                running += moves[currency, group, day]
                closing.append(from_minor(sign * running, currency))
            series[group] = closing
        history.append(BalanceHistory(currency, win.days, series[RECEIVABLES], series[PAYABLES]))
    return history


# ---------------------------------------------------------------------------------------------
# The exceptions queue: money that did not move as it should have
# ---------------------------------------------------------------------------------------------

# A provider call still PENDING after this has lost its answer (a crash, a timeout): retry it with its key.
OPERATION_STUCK_AFTER = timedelta(minutes=10)
# A charge finished (or billed) this long ago with its authorisation still uncaptured: the capture is missing.
CAPTURE_DUE_AFTER = timedelta(hours=1)
# Rows shown per section of the page; the counts are always complete.
EXCEPTIONS_SHOWN = 200
MISMATCHES_SHOWN = 200


@dataclass(frozen=True)
class PendingRefund:
    """What refunds:pending still holds for one reference (the dispute, CDR or payment the credit comes from)."""

    currency: str
    reference: str
    amount: Decimal  # owed to the driver: positive


@dataclass(frozen=True)
class DriverCredit:
    """A driver's receivable in credit: money we owe the driver and hold on their account, mostly refunds the
    provider could not make (failed later, or the payment could no longer take one) credited there instead."""

    driver_id: int
    currency: str
    amount: Decimal  # owed to the driver: positive
    since: datetime  # the account's last posting


@dataclass(frozen=True)
class UnmatchedPayouts:
    reconciliation: PayoutReconciliation
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Exceptions:
    failed_payments: list[Payment]
    failed_payment_count: int
    operations: list[PaymentOperation]
    operation_count: int
    pending_refunds: list[PendingRefund]
    refunds_pending_by_currency: dict[str, Decimal]
    capture_missing: list[Payment]
    capture_missing_count: int
    payouts: list[UnmatchedPayouts]
    driver_credits: list[DriverCredit] = field(default_factory=list)
    driver_credit_count: int = 0
    driver_credits_by_currency: dict[str, Decimal] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return (
            self.failed_payment_count
            + self.operation_count
            + len(self.pending_refunds)
            + self.capture_missing_count
            + self.driver_credit_count
            + sum(p.reconciliation.mismatch_count for p in self.payouts)
        )


def needs_retry(operation: PaymentOperation, *, now: datetime | None = None) -> bool:
    """FAILED, or PENDING for longer than OPERATION_STUCK_AFTER: a younger PENDING call may still be answered."""
    if operation.status == PaymentOperation.Status.FAILED:
        return True
    now = now or timezone.now()
    return operation.status == PaymentOperation.Status.PENDING and operation.created_at < now - OPERATION_STUCK_AFTER


def stuck_operations(*, now: datetime | None = None) -> QuerySet[PaymentOperation]:
    """Operations FAILED, or PENDING for longer than OPERATION_STUCK_AFTER, that no later operation of the same
    kind on the same payment has since done (a retry that succeeded clears the failure from the queue)."""
    now = now or timezone.now()
    done_later = PaymentOperation.objects.filter(
        payment=OuterRef("payment"),
        kind=OuterRef("kind"),
        status=PaymentOperation.Status.SUCCEEDED,
        pk__gt=OuterRef("pk"),
    )
    return (
        PaymentOperation.objects.filter(
            Q(status=PaymentOperation.Status.FAILED)
            | Q(status=PaymentOperation.Status.PENDING, created_at__lt=now - OPERATION_STUCK_AFTER)
        )
        .exclude(Exists(done_later))
        .select_related("payment")
        .order_by("created_at", "pk")
    )


def capture_missing(*, now: datetime | None = None) -> QuerySet[Payment]:
    """Authorised payments whose booking finished (or was billed) more than CAPTURE_DUE_AFTER ago. The booking's
    last change is when it reached that state: a finished booking changes no more."""
    now = now or timezone.now()
    return (
        Payment.objects.filter(
            status=Payment.Status.AUTHORISED,
            booking__state__in=(Booking.State.COMPLETED, Booking.State.SETTLED),
            booking__updated_at__lt=now - CAPTURE_DUE_AFTER,
        )
        .select_related("booking", "driver")
        .order_by("booking__updated_at", "pk")
    )


def pending_refunds() -> list[PendingRefund]:
    """refunds:pending per currency and reference, where the credits decided and the refunds paid do not net
    out yet: the credit and its refund are posted under the same reference (billing/services/postings.py)."""
    rows = (
        LedgerLine.objects.filter(account__code="refunds:pending")
        .values("account__currency", "entry__reference")
        .annotate(total=Sum("amount_minor"))
        .exclude(total=0)
        .order_by("account__currency", "entry__reference")
    )
    return [
        PendingRefund(
            row["account__currency"], row["entry__reference"], -from_minor(row["total"], row["account__currency"])
        )
        for row in rows
    ]


def driver_credits() -> list[DriverCredit]:
    """Drivers' receivables in credit, largest first: nothing pays them back by itself (a card refund failed, a
    payment that could take no refund), so finance pays the driver another way. One grouped statement over the
    drivers' receivable lines."""
    rows = (
        LedgerLine.objects.filter(account__code__startswith="driver:", account__code__endswith=":receivable")
        .values("account__code", "account__currency")
        .annotate(total=Sum("amount_minor"), since=Max("entry__posted_at"))
        .filter(total__lt=0)
        .order_by("total", "account__code", "account__currency")
    )
    credits = []
    for row in rows:
        driver = row["account__code"].removeprefix("driver:").removesuffix(":receivable")
        currency = row["account__currency"]
        credits.append(
            DriverCredit(
                int(driver) if driver.isdigit() else 0, currency, -from_minor(row["total"], currency), row["since"]
            )
        )
    return credits


def latest_reconciliations() -> list[PayoutReconciliation]:
    """The latest payout reconciliation of each provider (an older run's mismatches are superseded)."""
    latest = PayoutReconciliation.objects.filter(provider=OuterRef("provider")).order_by("-ran_at", "-pk")
    return list(PayoutReconciliation.objects.filter(pk=Subquery(latest.values("pk")[:1])).order_by("provider"))


def mismatch_table(mismatches: Any, limit: int = MISMATCHES_SHOWN) -> tuple[list[str], list[list[str]]]:
    """Any list of mismatches as a table: `reason` first, then every other key seen, in order of appearance.
    The reconciliation decides what identifies a row (payout id, payment id, amount…); this page shows it all.
    An item that is not a dict is shown as its reason."""
    items = [
        {str(k): v for k, v in m.items()} if isinstance(m, dict) else {"reason": m}
        for m in (mismatches if isinstance(mismatches, list) else [])[:limit]
    ]
    columns = ["reason"]
    for item in items:
        columns += [k for k in item if k not in columns]
    return columns, [[_cell(item.get(c)) for c in columns] for item in items]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def exceptions(*, now: datetime | None = None, shown: int = EXCEPTIONS_SHOWN) -> Exceptions:
    now = now or timezone.now()
    failed = Payment.objects.filter(status=Payment.Status.FAILED).select_related("booking", "driver")
    operations = stuck_operations(now=now)
    missing = capture_missing(now=now)
    refunds = pending_refunds()
    by_currency: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for refund in refunds:
        by_currency[refund.currency] += refund.amount
    owed = driver_credits()
    owed_by_currency: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for credit in owed:
        owed_by_currency[credit.currency] += credit.amount
    payouts = []
    for reconciliation in latest_reconciliations():
        if not reconciliation.mismatch_count and not reconciliation.mismatches:
            continue
        columns, rows = mismatch_table(reconciliation.mismatches)
        payouts.append(UnmatchedPayouts(reconciliation, columns, rows))
    return Exceptions(
        failed_payments=list(failed.order_by("-created_at", "-pk")[:shown]),
        failed_payment_count=failed.count(),
        operations=list(operations[:shown]),
        operation_count=operations.count(),
        pending_refunds=refunds,
        refunds_pending_by_currency=dict(sorted(by_currency.items())),
        capture_missing=list(missing[:shown]),
        capture_missing_count=missing.count(),
        payouts=payouts,
        driver_credits=owed[:shown],
        driver_credit_count=len(owed),
        driver_credits_by_currency=dict(sorted(owed_by_currency.items())),
    )
