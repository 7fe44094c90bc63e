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

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, connection, transaction
from django.db.models import Sum

from billing.models import LedgerAccount, LedgerEntry, LedgerLine
from billing.money import minor_units
from emsp.inserts import insert_if_absent

# 10^15 minor units (10 trillion in a 2-decimal currency): far above any real settlement, far below the
# 64-bit column's limit, so a sum of many lines never overflows it either.
MAX_MINOR = 10**15


class UnbalancedEntry(ValueError):
    """An entry that can't be posted as given (doesn't balance, mixes currencies, inexact amounts…)."""


class LedgerKeyReused(UnbalancedEntry):
    """An idempotency key posted before, asked again for another entry: other lines (accounts, amounts) or another
    event. Answered with the entry posted then, the second posting had silently booked nothing (a settlement
    payment given a bank reference used before, with another amount). `entry` is the one posted under `key`;
    `posted` and `requested` are the two sets of lines, (account, amount in minor units)."""

    def __init__(
        self,
        key: str,
        entry: LedgerEntry,
        posted: list[tuple[LedgerAccount, int]],
        event: str,
        requested: list[tuple[LedgerAccount, int]],
    ) -> None:
        self.key, self.entry, self.posted, self.requested = key, entry, posted, requested
        # An entry not written yet: the first of two under one key in the same post_many.
        before = f"posted before as #{entry.pk}" if entry.pk is not None else "asked for earlier in the same batch as"
        super().__init__(
            f"idempotency key {key!r} was {before} {_described(entry.event, posted)}, "
            f"not {_described(event, requested)}"
        )


def _described(event: str, lines: Sequence[tuple[LedgerAccount, int]]) -> str:
    parts = ", ".join(
        f"{account_.code} {from_minor(amount, account_.currency):+} {account_.currency}"
        for account_, amount in sorted(lines, key=lambda line: (line[0].code, line[1]))
    )
    return f"{event} ({parts})"


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


@dataclass(frozen=True)
class EntrySpec:
    """One entry to post with `post_many`: the arguments `post` takes."""

    event: str
    legs: Sequence[Leg]
    memo: str = ""
    reference: str = ""
    idempotency_key: str | None = None
    reverses: LedgerEntry | None = None


# Accounts already read, while a `cached_accounts()` block runs: a batch poster names the same few accounts
# thousands of times (postings' legs_* open them by code), one query each otherwise.
_account_cache: ContextVar[dict[tuple[str, str], LedgerAccount] | None] = ContextVar("ledger_accounts", default=None)

# Rows per INSERT in post_many: PostgreSQL takes at most 65,535 parameters a statement (entries have 6 columns,
# lines 3); every line of one entry goes in the same statement as its siblings.
ENTRIES_PER_INSERT = 5_000
LINES_PER_INSERT = 15_000
ENTRY_COLUMNS = ("posted_at", "event", "memo", "reference", "idempotency_key", "reverses")


@contextmanager
def cached_accounts() -> Iterator[None]:
    """Within the block `account()` answers an account it has seen from memory. An account joins the cache
    once the transaction that read or opened it has committed, so a rolled-back opening is never remembered;
    the cache ends with the block (a process-wide cache could outlive a truncated table)."""
    token = _account_cache.set({})
    try:
        yield
    finally:
        _account_cache.reset(token)


def remember_accounts_for_this_process() -> None:
    """A worker process's tasks share one account cache for the life of the process (billing/tasks.py sets it at
    worker start): accounts are opened once and never deleted, and CDR processing names five of them per CDR.
    The same commit rule applies, so a rolled-back opening is never remembered."""
    if _account_cache.get() is None:
        _account_cache.set({})


def account(code: str, currency: str, kind: str, name: str = "") -> LedgerAccount:
    """The account `code` in `currency`, opened on first use."""
    currency = currency.strip().upper()
    cache = _account_cache.get()
    if cache is not None and (code, currency) in cache:
        return cache[(code, currency)]
    minor_units(currency)  # an unknown currency is refused here, not in a later sum
    found, _ = LedgerAccount.objects.get_or_create(
        code=code, currency=currency, defaults={"kind": kind, "name": name or code}
    )
    if cache is not None:
        transaction.on_commit(lambda: cache.setdefault((code, currency), found))
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
    nothing is posted again, if it is the same entry (the same event, the same lines: a retry); another entry
    under a key used before is refused (LedgerKeyReused), not answered as if it had been booked."""
    legs = list(legs)
    lines = _lines(legs)
    # No savepoint inside the caller's transaction: a failure here rolls all of it back, never half an entry.
    with transaction.atomic(savepoint=False):
        entry = LedgerEntry(
            event=event, memo=memo[:200], reference=reference[:120], idempotency_key=idempotency_key, reverses=reverses
        )
        # One statement whether the key is new or not; a concurrent twin with the same key is waited for, and its
        # entry returned if it is this one (a NULL key never conflicts).
        new = insert_if_absent(entry, ["idempotency_key"])
        if new:
            LedgerLine.objects.bulk_create(
                [LedgerLine(entry=entry, account=account, amount_minor=amount) for account, amount in lines]
            )
    if new:
        return entry
    # Refused outside the block: nothing was written, and a caller that catches it may go on in its transaction.
    posted = LedgerEntry.objects.get(idempotency_key=idempotency_key)
    _same_entry(posted, _lines_of([posted])[posted.pk], event, lines)
    return posted


def post_many(entries: Sequence[EntrySpec]) -> list[LedgerEntry]:
    """Post many balanced entries at once, in the caller's transaction: the entries in one INSERT, then their
    lines in another (per few thousand), instead of two statements per entry. Every entry is checked as
    `post` checks it before anything is written, so one bad entry posts none. Returns the entries in the
    order given; an entry whose idempotency key was used before (or earlier in `entries`) is the entry posted
    then, and nothing is posted again for it; if it is another entry (another event or other lines) all are
    refused (LedgerKeyReused), as `post` refuses it."""
    checked = [(spec, _lines(list(spec.legs))) for spec in entries]
    out: list[LedgerEntry | None] = [None] * len(checked)
    with transaction.atomic():
        keys = [spec.idempotency_key for spec in entries if spec.idempotency_key is not None]
        posted = _posted(keys)
        new: list[LedgerEntry] = []
        new_lines: list[list[tuple[LedgerAccount, int]]] = []
        twins: list[tuple[int, str]] = []  # (position, key) of a key repeated within `entries`
        posted_lines = _lines_of(list(posted.values()))
        seen: dict[str, tuple[str, list[tuple[LedgerAccount, int]]]] = {}  # the first entry asked for under a key
        for position, (spec, lines) in enumerate(checked):
            key = spec.idempotency_key
            if key is not None:
                if key in posted:
                    _same_entry(posted[key], posted_lines[posted[key].pk], spec.event, lines)
                    out[position] = posted[key]
                    continue
                if key in seen:
                    first_event, first_lines = seen[key]
                    if first_event != spec.event or _multiset(first_lines) != _multiset(lines):
                        raise LedgerKeyReused(key, LedgerEntry(event=first_event), first_lines, spec.event, lines)
                    twins.append((position, key))
                    continue
                seen[key] = (spec.event, lines)
            entry = LedgerEntry(
                event=spec.event,
                memo=spec.memo[:200],
                reference=spec.reference[:120],
                idempotency_key=key,
                reverses=spec.reverses,
            )
            out[position] = entry
            new.append(entry)
            new_lines.append(lines)
        try:
            with transaction.atomic():  # a concurrent poster of one of the keys: redo it entry by entry below
                _insert_entries(new)
        except IntegrityError:
            if not keys:
                raise
            return [_post_spec(spec) for spec in entries]
        by_key = {entry.idempotency_key: entry for entry in new if entry.idempotency_key is not None}
        for position, key in twins:
            out[position] = by_key[key]
        _insert_lines(new, new_lines)
    return out  # type: ignore[return-value]


def _posted(keys: list[str]) -> dict[str, LedgerEntry]:
    """The entries already posted under any of `keys`, by key. On PostgreSQL the keys travel as one array
    (`= ANY(%s)`): a list of thousands of placeholders costs more to build and parse than the lookup itself."""
    found: list[LedgerEntry] = []
    for start in range(0, len(keys), ENTRIES_PER_INSERT):
        chunk = keys[start : start + ENTRIES_PER_INSERT]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    # Names from the model, values as parameters.
                    f"SELECT {LedgerEntry._meta.pk.column} FROM {LedgerEntry._meta.db_table} "  # type: ignore[union-attr]  # noqa: S608
                    "WHERE idempotency_key = ANY(%s::varchar[])",
                    [chunk],
                )
                ids = [pk for (pk,) in cursor.fetchall()]
            found += LedgerEntry.objects.filter(pk__in=ids) if ids else []
        else:
            found += LedgerEntry.objects.filter(idempotency_key__in=chunk)
    return {entry.idempotency_key: entry for entry in found}  # type: ignore[misc]


def _lines_of(entries: list[LedgerEntry]) -> dict[int, list[tuple[LedgerAccount, int]]]:
    """The lines of posted entries, by entry id, their accounts read once each."""
    rows: list[tuple[int, int, int]] = []
    ids = [entry.pk for entry in entries]
    for start in range(0, len(ids), ENTRIES_PER_INSERT):
        chunk = ids[start : start + ENTRIES_PER_INSERT]
        if connection.vendor == "postgresql":  # one array, as _posted sends the keys
            with connection.cursor() as cursor:
                cursor.execute(
                    # Names from the model, values as parameters.
                    f"SELECT entry_id, account_id, amount_minor FROM {LedgerLine._meta.db_table} "  # noqa: S608
                    "WHERE entry_id = ANY(%s::bigint[])",
                    [chunk],
                )
                rows += cursor.fetchall()
        else:
            rows += LedgerLine.objects.filter(entry_id__in=chunk).values_list("entry_id", "account_id", "amount_minor")
    accounts = LedgerAccount.objects.in_bulk({account_id for _, account_id, _ in rows})
    out: dict[int, list[tuple[LedgerAccount, int]]] = {pk: [] for pk in ids}
    for entry_id, account_id, amount in rows:
        out[entry_id].append((accounts[account_id], amount))
    return out


def _multiset(lines: Sequence[tuple[LedgerAccount, int]]) -> Counter[tuple[int, int]]:
    return Counter((account_.pk, amount) for account_, amount in lines)


def _same_entry(
    entry: LedgerEntry, posted: list[tuple[LedgerAccount, int]], event: str, requested: list[tuple[LedgerAccount, int]]
) -> None:
    """A key posted before may be asked again only for the same entry (a retry): the same event, the same lines
    (account and amount, in any order). Memo and reference are words about it, not what it books."""
    if entry.event != event or _multiset(posted) != _multiset(requested):
        raise LedgerKeyReused(entry.idempotency_key or "", entry, posted, event, requested)


def _insert_entries(new: list[LedgerEntry]) -> None:
    """INSERT the entries, setting their ids. On PostgreSQL one `INSERT … SELECT FROM unnest(arrays)` per few
    thousand, built here: the ORM's bulk_create spends ~0.1 ms of Python a row preparing what these arrays say
    (its own PostgreSQL path is the same unnest, and relies likewise on RETURNING keeping the input's order)."""
    if connection.vendor != "postgresql":
        LedgerEntry.objects.bulk_create(new, batch_size=ENTRIES_PER_INSERT)
        return
    columns = [LedgerEntry._meta.get_field(name).column for name in ENTRY_COLUMNS]
    sql = (  # names from the model, values as parameters
        f"INSERT INTO {LedgerEntry._meta.db_table} ({', '.join(columns)}) "  # noqa: S608
        "SELECT * FROM unnest(%s::timestamptz[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], "
        f"%s::bigint[]) RETURNING {LedgerEntry._meta.pk.column}"  # type: ignore[union-attr]
    )
    with connection.cursor() as cursor:
        for start in range(0, len(new), ENTRIES_PER_INSERT):
            chunk = new[start : start + ENTRIES_PER_INSERT]
            cursor.execute(
                sql, [[getattr(e, LedgerEntry._meta.get_field(name).attname) for e in chunk] for name in ENTRY_COLUMNS]
            )
            for entry, (pk,) in zip(chunk, cursor.fetchall(), strict=True):
                entry.pk = pk
                entry._state.adding = False
                entry._state.db = connection.alias


def _insert_lines(new: list[LedgerEntry], new_lines: list[list[tuple[LedgerAccount, int]]]) -> None:
    """INSERT the entries' lines, all lines of one entry in the same statement (the PostgreSQL check runs per
    statement: billing/migrations/0007_ledger_faster_check.py)."""
    postgres = connection.vendor == "postgresql"
    sql = (  # names from the model, values as parameters
        f"INSERT INTO {LedgerLine._meta.db_table} (entry_id, account_id, amount_minor) "  # noqa: S608
        "SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[])"
    )
    entry_ids: list[int] = []
    account_ids: list[int] = []
    amounts: list[int] = []
    batch: list[LedgerLine] = []

    def flush() -> None:
        if postgres and entry_ids:
            with connection.cursor() as cursor:
                cursor.execute(sql, [entry_ids, account_ids, amounts])
        elif batch:
            LedgerLine.objects.bulk_create(batch)
        entry_ids.clear(), account_ids.clear(), amounts.clear(), batch.clear()

    for entry, lines in zip(new, new_lines, strict=True):
        if len(entry_ids) + len(batch) + len(lines) > LINES_PER_INSERT:
            flush()
        for account_, amount in lines:
            if postgres:
                entry_ids.append(entry.pk)
                account_ids.append(account_.pk)
                amounts.append(amount)
            else:
                batch.append(LedgerLine(entry=entry, account=account_, amount_minor=amount))
    flush()


def _post_spec(spec: EntrySpec) -> LedgerEntry:
    return post(
        event=spec.event,
        legs=spec.legs,
        memo=spec.memo,
        reference=spec.reference,
        idempotency_key=spec.idempotency_key,
        reverses=spec.reverses,
    )


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
