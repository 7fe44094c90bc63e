"""The ledger: double-entry bookkeeping of every money event, the one record of who owes whom (issue 12).

An entry (`LedgerEntry`) is balanced lines (`LedgerLine`): debits positive, credits negative, in the minor
units of one currency, adding up to zero. Balances, the trial balance and statements are read from the lines,
never kept beside them. Nothing is changed or deleted: `reverse` posts the mirror entry. On PostgreSQL a
deferred constraint trigger refuses an unbalanced entry and triggers refuse updates and deletes
(billing/migrations/0005_ledger.py); here `post` refuses them first, with a reason.

Why our own small core and not a library: django-ledger models a whole bookkeeping product (entities, chart of
accounts, its own views and units of measure) around one business's books; we need a few accounts per party,
posted from our own transactions, with the database itself refusing an unbalanced posting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Sum

from billing.models import LedgerAccount, LedgerEntry, LedgerLine
from billing.money import minor_units

# 10^15 minor units (10 trillion in a 2-decimal currency): far above any real settlement, far below the
# 64-bit column's limit, so a sum of many lines never overflows it either.
MAX_MINOR = 10**15


class UnbalancedEntry(ValueError):
    """An entry that can't be posted as given (doesn't balance, mixes currencies, inexact amounts…)."""


@dataclass(frozen=True)
class Leg:
    """One side of an entry: `amount` > 0 debits the account, < 0 credits it (Decimal, in major units)."""

    account: LedgerAccount
    amount: Decimal


@dataclass(frozen=True)
class StatementLine:
    posted_at: datetime
    entry: LedgerEntry
    amount: Decimal
    balance: Decimal


def account(code: str, currency: str, kind: str, name: str = "") -> LedgerAccount:
    """The account `code` in `currency`, opened on first use."""
    currency = currency.strip().upper()
    minor_units(currency)  # an unknown currency is refused here, not in a later sum
    found, _ = LedgerAccount.objects.get_or_create(
        code=code, currency=currency, defaults={"kind": kind, "name": name or code}
    )
    return found


def to_minor(amount: Decimal, currency: str) -> int:
    """An exact amount in the currency's minor units; more precision than the currency has is refused (the
    caller rounds, with its stated policy: billing/money.py::round_money)."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise UnbalancedEntry(f"amounts are finite Decimals, not {amount!r}")
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise UnbalancedEntry(f"{amount} has more decimals than {currency} has minor units")
    if abs(scaled) >= MAX_MINOR:
        raise UnbalancedEntry(f"{amount} {currency} is beyond any charge or settlement we book")
    return int(scaled)


def from_minor(amount_minor: int, currency: str) -> Decimal:
    return Decimal(amount_minor).scaleb(-minor_units(currency))


def post(
    *,
    event: str,
    legs: Iterable[Leg],
    memo: str = "",
    reference: str = "",
    idempotency_key: str | None = None,
    reverses: LedgerEntry | None = None,
) -> LedgerEntry:
    """Post one balanced entry, in the caller's transaction (so it commits with the state change that caused
    it, or not at all). With an `idempotency_key` already used, the entry posted then is returned and
    nothing is posted again."""
    legs = list(legs)
    lines = _lines(legs)
    with transaction.atomic():
        if idempotency_key is not None:
            earlier = LedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
            if earlier is not None:
                return earlier
        try:
            with transaction.atomic():  # a concurrent twin with the same key loses here, not the caller's work
                entry = LedgerEntry.objects.create(
                    event=event,
                    memo=memo[:200],
                    reference=reference[:120],
                    idempotency_key=idempotency_key,
                    reverses=reverses,
                )
        except IntegrityError:
            if idempotency_key is None:
                raise
            return LedgerEntry.objects.get(idempotency_key=idempotency_key)
        LedgerLine.objects.bulk_create(
            [LedgerLine(entry=entry, account=account, amount_minor=amount) for account, amount in lines]
        )
    return entry


def _lines(legs: list[Leg]) -> list[tuple[LedgerAccount, int]]:
    if len(legs) < 2:
        raise UnbalancedEntry("an entry has at least two lines")
    currencies = {leg.account.currency for leg in legs}
    if len(currencies) != 1:
        raise UnbalancedEntry(f"an entry is in one currency, not {sorted(currencies)}")
    currency = currencies.pop()
    lines = [(leg.account, to_minor(leg.amount, currency)) for leg in legs]
    if any(amount == 0 for _, amount in lines):
        raise UnbalancedEntry("a line of zero says nothing")
    total = sum(amount for _, amount in lines)
    if total != 0:
        raise UnbalancedEntry(f"the lines add up to {from_minor(total, currency)} {currency}, not zero")
    return lines


def reverse(entry: LedgerEntry, memo: str = "") -> LedgerEntry:
    """The correction of `entry`: the same lines with opposite signs, posted once."""
    legs = [
        Leg(line.account, -from_minor(line.amount_minor, line.account.currency))
        for line in entry.lines.select_related("account")
    ]
    return post(
        event=f"reversal:{entry.event}"[:40],
        legs=legs,
        memo=memo or f"reverses #{entry.pk}",
        reference=entry.reference,
        idempotency_key=f"reverse:{entry.pk}",
        reverses=entry,
    )


def balance(account: LedgerAccount, until: datetime | None = None) -> Decimal:
    """Debits minus credits on the account (up to `until`, inclusive)."""
    lines = LedgerLine.objects.filter(account=account)
    if until is not None:
        lines = lines.filter(entry__posted_at__lte=until)
    total = lines.aggregate(total=Sum("amount_minor"))["total"] or 0
    return from_minor(total, account.currency)


def trial_balance(currency: str) -> dict[str, Decimal]:
    """Every account's balance in `currency`, by code; the balances add up to zero when the books are sound."""
    rows = (
        LedgerLine.objects.filter(account__currency=currency.upper())
        .values("account__code")
        .annotate(total=Sum("amount_minor"))
        .order_by("account__code")
    )
    return {row["account__code"]: from_minor(row["total"], currency.upper()) for row in rows}


def statement(
    account: LedgerAccount, since: datetime | None = None, until: datetime | None = None
) -> list[StatementLine]:
    """The account's lines in order, each with the running balance (the opening balance counted in)."""
    lines = LedgerLine.objects.filter(account=account).select_related("entry")
    running = Decimal(0)
    if since is not None:
        opening = lines.filter(entry__posted_at__lt=since).aggregate(total=Sum("amount_minor"))["total"] or 0
        running = from_minor(opening, account.currency)
        lines = lines.filter(entry__posted_at__gte=since)
    if until is not None:
        lines = lines.filter(entry__posted_at__lte=until)
    out = []
    for line in lines.order_by("entry__posted_at", "entry_id", "pk"):
        amount = from_minor(line.amount_minor, account.currency)
        running += amount
        out.append(StatementLine(line.entry.posted_at, line.entry, amount, running))
    return out
