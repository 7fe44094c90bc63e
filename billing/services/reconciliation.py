"""Reconciliation of a payment provider's payout file against our payments, the ledger and the bills (issue 12).

Three sides must agree for every payment we collected through a provider:
1. the provider's file — what it says it took and gave back (its balance transactions, paid out to our bank);
2. our `Payment` — captured_minor and refunded_minor, in its currency;
3. the ledger — the payment's lines on `clearing:<provider>` (a capture debits it, a refund credits it);
and, for the bill, the capture must be what the CDR billed, up to the hold (`min(billed, authorised)`: the rest of a
larger bill is its own payment). Every disagreement is one mismatch with a reason; the run is stored as a
`PayoutReconciliation` (the first 10,000 mismatches, the exact count). Nothing is posted: this only reports.

The files are read as the providers document them (docs/payments.md):
- Stripe, the payout reconciliation report (`payout_reconciliation.itemized.5`): `gross`, `fee`, `net` in major
  units (decimal strings), lower-case `currency`, `reporting_category` (`charge`, `refund`, and the
  `partial_capture_reversal` / `refund_failure` that correct them), the PaymentIntent in `payment_intent_id`
  (our `provider_payment_id`), the payout in `automatic_payout_id`;
- Razorpay, the settlement recon (`/v1/settlements/recon/combined`): `amount`, `fee` (GST included), `tax`,
  `credit`, `debit` in paise, `type` (`payment`, `refund`, …), the payment in `entity_id` (a refund's in
  `payment_id`), the settlement in `settlement_id`.
Per payment only the net is compared (taken minus given back): Razorpay captures a whole authorisation and refunds
the rest (billing/payments/razorpay_gateway.py), so its captures and refunds differ from ours while the net agrees.

Speed (1,000,000 rows in well under a minute, bench/bench_reconciliation.py): the file is streamed row by row with
`csv.reader`; our side is read with two streaming queries (the provider's payments, the clearing lines) into dicts
keyed by payment; no query per row. A file that is not what it claims (missing columns, not text) is refused with
`ReconciliationError`; a row that can't be read (NUL bytes, absurd or inexact amounts, bad dates, no payment id)
is a `bad_row` mismatch and the run goes on.
"""

from __future__ import annotations

import csv
import gc
import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from django.db.models import BooleanField, ExpressionWrapper, Q

from billing.models import LedgerLine, Payment, PayoutReconciliation
from billing.money import MINOR_UNITS
from billing.services.ledger import MAX_MINOR

PROVIDERS = ("stripe", "razorpay")
MAX_STORED_MISMATCHES = 10_000
MAX_LINE = 64 * 1024  # no real report row comes near; a longer "line" is not a row
CHUNK = 20_000

# Mismatch kinds, each with a reason in words in the mismatch itself.
BAD_ROW = "bad_row"  # a row that can't be read: it counts for nothing
UNHANDLED_ROW = "unhandled_row"  # a movement on a payment we don't reconcile here (dispute, adjustment…)
NOT_OURS = "not_ours"  # in the file, not a payment of ours at this provider
MISSING_FROM_FILE = "missing_from_file"  # we captured it, the file doesn't have it
AMOUNT_DIFFERS = "amount_differs"  # taken minus given back differs between the file and our payment
CURRENCY_DIFFERS = "currency_differs"
LEDGER_DIFFERS = "ledger_differs"  # the clearing account's lines of the payment differ from the payment
BILL_DIFFERS = "bill_differs"  # the capture isn't the CDR's bill (up to the hold)

CAPTURE, REFUND = "capture", "refund"
# Stripe reporting categories (docs.stripe.com/reports/reporting-categories) → (kind, sign of gross for us).
STRIPE_CATEGORIES = {
    "charge": (CAPTURE, 1),
    "partial_capture_reversal": (CAPTURE, 1),  # negative gross: the part of an authorisation not captured
    "refund": (REFUND, -1),  # negative gross
    "refund_failure": (REFUND, -1),  # positive gross: a refund that bounced comes back
}
# Balance movements that are not a payment's: the payout itself, account fees, top-ups. Skipped, counted.
STRIPE_NOT_PAYMENTS = {"payout", "payout_reversal", "fee", "other_adjustment", "topup", "topup_reversal", "transfer"}
RAZORPAY_TYPES = {"payment": CAPTURE, "refund": REFUND}
RAZORPAY_NOT_PAYMENTS = {"transfer", "settlement", "adjustment"}

STRIPE_COLUMNS = ("automatic_payout_id", "currency", "gross", "fee", "net", "reporting_category", "payment_intent_id")
RAZORPAY_COLUMNS = ("entity_id", "type", "debit", "credit", "amount", "currency", "fee", "settlement_id", "payment_id")

_MAJOR = re.compile(r"(-?)(\d{1,16})(?:\.(\d{1,8}))?\Z")
_MINOR = re.compile(r"-?\d{1,16}\Z")
_POW10 = [10**n for n in range(9)]


class ReconciliationError(ValueError):
    """The file can't be reconciled at all (not the provider's format, not text, unknown provider)."""


@dataclass
class FileTotals:
    """What one payout (or settlement) of the file adds up to, per currency, in minor units."""

    rows: int = 0
    gross: int = 0
    fee: int = 0
    net: int = 0


@dataclass
class Outcome:
    """Counts besides the stored mismatches, for the command's summary."""

    payments_in_file: int = 0
    payments_expected: int = 0
    skipped_rows: int = 0
    payouts: dict[tuple[str, str], FileTotals] = field(default_factory=dict)  # (payout id, currency) → totals


class _Row(Exception):
    """A row that can't be read: becomes a bad_row mismatch."""


def reconcile_payout_file(
    *,
    provider: str,
    path_or_file: str | Path | IO[bytes] | IO[str],
    since: datetime | None = None,
    until: datetime | None = None,
) -> PayoutReconciliation:
    """Reconcile a `provider` payout file against our payments, the ledger and the bills, and store the run.

    Payments we captured must be in the file (missing_from_file) only when created in [since, until) if a window
    is given — a payout file covers a period; without one every captured payment of the provider is expected.
    The returned run has `outcome` (an `Outcome`) set besides its stored fields."""
    if provider not in PROVIDERS:
        raise ReconciliationError(f"no payout file format for provider {provider!r} (known: {', '.join(PROVIDERS)})")
    started = time.perf_counter()
    mismatches: list[dict[str, Any]] = []
    count = 0

    def mismatch(kind: str, reason: str, **details: Any) -> None:
        nonlocal count
        count += 1
        if len(mismatches) < MAX_STORED_MISMATCHES:
            mismatches.append({"kind": kind, "reason": reason, **details})

    outcome = Outcome()
    name, stream, done = _open(path_or_file)
    # Millions of small lists and tuples, none in a cycle: the cyclic collector would walk them all again and
    # again (a third of the run's time at 1M rows), so it waits until the dicts are dropped.
    collecting = gc.isenabled()
    gc.disable()
    try:
        rows, in_file = _read_file(provider, stream, mismatch, outcome)
        ours, expected_ids = _our_payments(provider, since, until)
        clearing = _clearing_by_payment(provider)
        matched = _compare(provider, in_file, ours, expected_ids, clearing, mismatch, outcome)
    finally:
        done()
        if collecting:
            gc.enable()
    run = PayoutReconciliation.objects.create(
        provider=provider,
        file_name=name[:255],
        rows=rows,
        matched=matched,
        mismatches=mismatches,
        mismatch_count=count,
        seconds=round(time.perf_counter() - started, 3),
    )
    run.outcome = outcome  # type: ignore[attr-defined]
    return run


# --- the file ---------------------------------------------------------------------------------------------------


def _open(path_or_file: str | Path | IO[bytes] | IO[str]) -> tuple[str, IO[str], Callable[[], None]]:
    """(name, text stream, what to call when done). UTF-8 (a BOM is dropped); undecodable bytes become U+FFFD, so
    such an id simply matches nothing of ours. A caller's file is left open."""
    if isinstance(path_or_file, str | Path):
        try:
            raw: IO[bytes] = open(path_or_file, "rb")  # noqa: SIM115 — closed by done()
        except OSError as exc:
            raise ReconciliationError(f"can't read {path_or_file}: {exc.strerror or exc}") from exc
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        return str(path_or_file), text, text.close
    name = str(getattr(path_or_file, "name", "") or "upload")
    if isinstance(path_or_file, io.TextIOBase):
        return name, path_or_file, lambda: None  # type: ignore[return-value]
    text = io.TextIOWrapper(path_or_file, encoding="utf-8-sig", errors="replace", newline="")  # type: ignore[arg-type]
    return name, text, text.detach


def _lines(stream: IO[str], damaged: set[int]) -> Iterator[str]:
    """The file's lines, none longer than MAX_LINE: a longer one is cut (and its row reported), NUL bytes are
    dropped (and the row reported) — csv would stop the whole file at either."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE)
        if not line:
            return
        number += 1
        if len(line) >= MAX_LINE and not line.endswith("\n"):
            damaged.add(number)
            while (rest := stream.readline(MAX_LINE)) and not rest.endswith("\n"):
                pass
            line = "\n"
        if "\x00" in line:
            damaged.add(number)
            line = line.replace("\x00", "")
        yield line


def _read_file(provider: str, stream: IO[str], mismatch: Any, outcome: Outcome) -> tuple[int, dict[str, list[Any]]]:
    """Stream the rows into per-payment totals: payment id → [taken, given back, fee, currency, first line]."""
    damaged: set[int] = set()
    csv.field_size_limit(MAX_LINE)
    reader = csv.reader(_lines(stream, damaged))
    try:
        header = next(reader)
    except StopIteration:
        raise ReconciliationError("the file is empty: no header row") from None
    except csv.Error as exc:
        raise ReconciliationError(f"the header can't be read: {exc}") from None
    columns: dict[str, int] = {}
    for index, title in enumerate(header):
        columns.setdefault(title.strip(), index)
    needed = STRIPE_COLUMNS if provider == "stripe" else RAZORPAY_COLUMNS
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ReconciliationError(
            f"not a {provider} payout file: it lacks the column(s) {', '.join(missing)} "
            f"(see docs/payments.md for the columns we read)"
        )
    parse = _stripe_row(columns) if provider == "stripe" else _razorpay_row(columns)
    width = max(columns[c] for c in needed) + 1
    in_file: dict[str, list[Any]] = {}
    rows = 0
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rows += 1
            mismatch(BAD_ROW, f"unreadable CSV: {exc}", line=reader.line_num)
            line = reader.line_num
            continue
        first, line = line + 1, reader.line_num
        if damaged and any(n in damaged for n in range(first, line + 1)):
            rows += 1
            mismatch(BAD_ROW, "NUL bytes or a line longer than any report's row", line=first)
            continue
        if not row:
            continue
        rows += 1
        try:
            if len(row) < width:
                raise _Row(f"{len(row)} fields, the header has {len(header)}")
            parsed = parse(row)
        except _Row as exc:
            mismatch(BAD_ROW, str(exc), line=first)
            continue
        if parsed is None:
            outcome.skipped_rows += 1
            continue
        payment_id, kind, amount, fee, currency, payout, net = parsed
        if kind not in (CAPTURE, REFUND):
            mismatch(UNHANDLED_ROW, f"a {kind} movement: not reconciled here", line=first, payment_id=payment_id)
            continue
        totals = outcome.payouts.get((payout, currency))
        if totals is None:
            totals = outcome.payouts[(payout, currency)] = FileTotals()
        totals.rows += 1
        totals.gross += amount if kind == CAPTURE else -amount
        totals.fee += fee
        totals.net += net
        seen = in_file.get(payment_id)
        if seen is None:
            taken, given_back = (amount, 0) if kind == CAPTURE else (0, amount)
            in_file[payment_id] = [taken, given_back, fee, currency, first]
            continue
        if seen[3] != currency:
            mismatch(
                CURRENCY_DIFFERS,
                f"the file moves this payment in {seen[3]} and in {currency}",
                line=first,
                payment_id=payment_id,
            )
            continue
        seen[0 if kind == CAPTURE else 1] += amount
        seen[2] += fee
    outcome.payments_in_file = len(in_file)
    return rows, in_file


def _stripe_row(columns: dict[str, int]) -> Any:
    i_payout, i_currency, i_gross, i_fee, i_net, i_category, i_payment = (columns[c] for c in STRIPE_COLUMNS)
    i_date = columns.get("created_utc", columns.get("automatic_payout_effective_at"))

    def parse(row: list[str]) -> tuple[str, str, int, int, str, str, int] | None:
        category = row[i_category].strip()
        payment_id = row[i_payment].strip()
        if category in STRIPE_NOT_PAYMENTS and not payment_id:
            return None
        currency = _currency(row[i_currency])
        exponent = MINOR_UNITS[currency]
        gross = _major(row[i_gross], exponent, "gross")
        fee = _major(row[i_fee], exponent, "fee")
        net = _major(row[i_net], exponent, "net")
        if net != gross - fee:
            raise _Row(f"net {row[i_net]} is not gross {row[i_gross]} less fee {row[i_fee]}")
        if i_date is not None:
            _date(row[i_date])
        if not payment_id:
            raise _Row(f"a {category or 'blank'} row without a payment_intent_id")
        _payment_id(payment_id)
        known = STRIPE_CATEGORIES.get(category)
        if known is None:
            return payment_id, category or "blank", 0, 0, currency, row[i_payout].strip(), 0
        kind, sign = known
        return payment_id, kind, sign * gross, fee, currency, row[i_payout].strip(), net

    return parse


def _razorpay_row(columns: dict[str, int]) -> Any:
    i_entity, i_type, i_debit, i_credit, i_amount, i_currency, i_fee, i_settlement, i_payment = (
        columns[c] for c in RAZORPAY_COLUMNS
    )
    i_date = columns.get("created_at")

    def parse(row: list[str]) -> tuple[str, str, int, int, str, str, int] | None:
        kind_text = row[i_type].strip()
        kind = RAZORPAY_TYPES.get(kind_text)
        payment_id = (row[i_entity] if kind == CAPTURE else row[i_payment]).strip()
        if kind_text in RAZORPAY_NOT_PAYMENTS and not row[i_payment].strip():
            return None
        currency = _currency(row[i_currency])
        amount = _minor(row[i_amount], "amount")
        fee = _minor(row[i_fee], "fee")
        credit = _minor(row[i_credit], "credit")
        debit = _minor(row[i_debit], "debit")
        if kind == CAPTURE and credit - debit != amount - fee:
            raise _Row(f"credit {credit} − debit {debit} is not amount {amount} less fee {fee}")
        if kind == REFUND and debit - credit != amount + fee:
            raise _Row(f"debit {debit} − credit {credit} is not amount {amount} plus fee {fee}")
        if i_date is not None:
            _date(row[i_date])
        if not payment_id:
            raise _Row(f"a {kind_text or 'blank'} row without its payment id")
        _payment_id(payment_id)
        if kind is None:
            return payment_id, kind_text or "blank", 0, 0, currency, row[i_settlement].strip(), 0
        return payment_id, kind, amount, fee, currency, row[i_settlement].strip(), credit - debit

    return parse


def _currency(text: str) -> str:
    code = text.strip().upper()
    if code not in MINOR_UNITS:
        raise _Row(f"unknown currency {text[:10]!r}")
    return code


def _major(text: str, exponent: int, what: str) -> int:
    """A decimal amount in major units as minor units, exactly (more decimals than the currency has, unless
    zeros, is refused)."""
    found = _MAJOR.match(text.strip())
    if found is None:
        raise _Row(f"{what} {text[:30]!r} is not an amount in major units")
    sign, whole, fraction = found.groups()
    fraction = fraction or ""
    if len(fraction) > exponent:
        if fraction[exponent:].strip("0"):
            raise _Row(f"{what} {text} has more decimals than the currency")
        fraction = fraction[:exponent]
    value = int(whole) * _POW10[exponent] + (int(fraction) * _POW10[exponent - len(fraction)] if fraction else 0)
    if value >= MAX_MINOR:
        raise _Row(f"{what} {text[:30]} is beyond any amount we book")
    return -value if sign else value


def _minor(text: str, what: str) -> int:
    text = text.strip()
    if not _MINOR.match(text):
        raise _Row(f"{what} {text[:30]!r} is not an amount in minor units")
    value = int(text)
    if abs(value) >= MAX_MINOR:
        raise _Row(f"{what} {text[:30]} is beyond any amount we book")
    return value


def _date(text: str) -> None:
    """A date as the reports write it: `YYYY-MM-DD HH:MM:SS` (Stripe, UTC) or a Unix timestamp (Razorpay)."""
    text = text.strip()
    if not text:
        return
    if text.isdigit() and len(text) <= 11:
        return
    try:
        datetime.fromisoformat(text)
    except ValueError:
        raise _Row(f"date {text[:40]!r} is not a date") from None


def _payment_id(text: str) -> None:
    if len(text) > 100 or not text.isprintable():
        raise _Row(f"payment id {text[:40]!r}… is not a provider's id")


# --- our side ---------------------------------------------------------------------------------------------------


def _our_payments(
    provider: str, since: datetime | None, until: datetime | None
) -> tuple[dict[str, tuple[int, str, int, int, int, int | None, str]], set[str]]:
    """provider payment id → (pk, currency, captured, refunded, authorised, billed, key), and the ids of the
    captured payments the file must have. One streaming query."""
    window = Q()
    if since is not None:
        window &= Q(created_at__gte=since)
    if until is not None:
        window &= Q(created_at__lt=until)
    rows = (
        Payment.objects.filter(provider=provider)
        .exclude(provider_payment_id="")
        .annotate(expected=ExpressionWrapper(window & Q(captured_minor__gt=0), output_field=BooleanField()))
        .values_list(
            "provider_payment_id",
            "pk",
            "currency",
            "captured_minor",
            "refunded_minor",
            "authorised_minor",
            "billed_minor",
            "key",
            "expected",
        )
        .order_by()
    )
    ours: dict[str, tuple[int, str, int, int, int, int | None, str]] = {}
    expected: set[str] = set()
    for payment_id, pk, currency, captured, refunded, authorised, billed, key, is_expected in rows.iterator(
        chunk_size=CHUNK
    ):
        ours[payment_id] = (pk, currency, captured, refunded, authorised, billed, key)
        if is_expected:
            expected.add(payment_id)
    return ours, expected


def _clearing_by_payment(provider: str) -> tuple[dict[int, list[Any]], dict[str, list[Any]]]:
    """The clearing:<provider> lines per payment: by pk for entries referenced `payment:<pk>` (captures, their
    reversals), by payment key for refunds (their idempotency key starts `<payment key>|`; their reference is the
    credit's). Value: [sum in minor units, currencies]. One streaming query."""
    by_pk: dict[int, list[Any]] = {}
    by_key: dict[str, list[Any]] = {}
    lines = (
        LedgerLine.objects.filter(account__code=f"clearing:{provider}")
        .values_list("entry__reference", "entry__idempotency_key", "account__currency", "amount_minor")
        .order_by()
    )
    for reference, key, currency, amount in lines.iterator(chunk_size=CHUNK):
        if reference.startswith("payment:") and reference[8:].isdigit():
            target = by_pk.setdefault(int(reference[8:]), [0, set()])
        elif key and "|" in key:
            target = by_key.setdefault(key.partition("|")[0], [0, set()])
        else:
            continue  # a payout to our bank, an adjustment: not one payment's
        target[0] += amount
        target[1].add(currency)
    return by_pk, by_key


# --- the comparison ---------------------------------------------------------------------------------------------


def _compare(
    provider: str,
    in_file: dict[str, list[Any]],
    ours: dict[str, tuple[int, str, int, int, int, int | None, str]],
    expected: set[str],
    clearing: tuple[dict[int, list[Any]], dict[str, list[Any]]],
    mismatch: Any,
    outcome: Outcome,
) -> int:
    """Every payment in the file against ours, every expected payment of ours against the file, and each checked
    payment against its ledger lines and its bill. Returns how many payments of the file agree with ours."""
    by_pk, by_key = clearing
    matched = 0
    for payment_id, (taken, given_back, _fee, currency, line) in in_file.items():
        payment = ours.get(payment_id)
        if payment is None:
            mismatch(
                NOT_OURS,
                f"in the file, not a {provider} payment of ours",
                payment_id=payment_id,
                line=line,
                file_net=taken - given_back,
                currency=currency,
            )
            continue
        pk, our_currency, captured, refunded = payment[:4]
        if currency != our_currency:
            mismatch(
                CURRENCY_DIFFERS,
                f"the file says {currency}, the payment is in {our_currency}",
                payment_id=payment_id,
                payment=pk,
                line=line,
            )
        elif taken - given_back != captured - refunded:
            mismatch(
                AMOUNT_DIFFERS,
                f"the file nets {taken - given_back} (taken {taken}, given back {given_back}), we captured "
                f"{captured} and refunded {refunded} (net {captured - refunded}) in minor units of {currency}",
                payment_id=payment_id,
                payment=pk,
                line=line,
                file_net=taken - given_back,
                our_net=captured - refunded,
            )
        else:
            matched += 1
    checked = expected | in_file.keys()
    outcome.payments_expected = len(expected)
    for payment_id in expected - in_file.keys():
        pk, currency, captured, refunded = ours[payment_id][:4]
        mismatch(
            MISSING_FROM_FILE,
            f"we captured {captured} (refunded {refunded}) {currency}, the file has no row for it",
            payment_id=payment_id,
            payment=pk,
        )
    for payment_id in checked:
        payment = ours.get(payment_id)
        if payment is None:
            continue
        pk, currency, captured, refunded, authorised, billed, key = payment
        books = by_pk.get(pk)
        refunds = by_key.get(key)
        booked = (books[0] if books else 0) + (refunds[0] if refunds else 0)
        currencies = (books[1] if books else set()) | (refunds[1] if refunds else set())
        if booked != captured - refunded or currencies - {currency}:
            mismatch(
                LEDGER_DIFFERS,
                f"clearing:{provider} holds {booked} for it ({', '.join(sorted(currencies)) or 'no lines'}), the "
                f"payment nets {captured - refunded} {currency}",
                payment_id=payment_id,
                payment=pk,
                ledger_net=booked,
                our_net=captured - refunded,
            )
        if billed is not None and captured and captured != min(billed, authorised):
            mismatch(
                BILL_DIFFERS,
                f"captured {captured}, the CDR billed {billed} (held {authorised}) {currency}",
                payment_id=payment_id,
                payment=pk,
                billed=billed,
                captured=captured,
            )
    return matched
