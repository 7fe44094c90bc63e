"""Benchmark: reconciling 1,000,000 charges against a Stripe payout file on PostgreSQL (target < 60 s).

Usage: .venv/bin/python bench/bench_reconciliation.py [--payments 1000000] [--every 5000] [--database NAME]
Seeds, untimed, in SQL: N captured Stripe payments (EUR, one in 20 partly refunded), each with its capture in the
ledger (clearing:stripe debited, the driver's receivable credited, reference payment:<id>) and each refund as
billing/services/payments.py books it (refunds:pending / clearing:stripe, keyed by the payment's key); the seeding
runs with the triggers off (session_replication_role = replica) and the books are checked to balance after.
Then writes the payout file in Stripe's payout reconciliation columns (gross, fee, net in major units; one row per
capture and per refund), with planted mismatches: one payment in `--every` of each kind (missing from the file,
another amount, another currency, the ledger one unit off, the capture not the bill) plus as many rows of payments
that are not ours and rows with a bad date. Times `reconcile_payout_file` (twice) and checks that it found exactly
the planted mismatches, no more, no fewer.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from django_env import machine, setup

TARGET_SECONDS = 60
COLUMNS = [
    "automatic_payout_id", "automatic_payout_effective_at", "balance_transaction_id", "created_utc",
    "available_on_utc", "currency", "gross", "fee", "net", "reporting_category", "source_id", "description",
    "customer_facing_amount", "customer_facing_currency", "charge_id", "payment_intent_id", "payment_method_type",
    "card_brand", "payment_metadata[reference]",
]  # fmt: skip
# Planted, by payment number modulo --every (disjoint from the refunded ones: number % 20 == 0).
MISSING, AMOUNT, CURRENCY, LEDGER, BILL = 1, 2, 3, 4, 5
REFUND_MINOR = 100


def amount_of(g: int) -> int:
    return 1000 + (g * 7919) % 90000


def seed(count: int, every: int) -> None:
    """Payments, their captures and refunds in the ledger, in a few SQL statements (generate_series)."""
    from django.db import connection

    from billing.models import Payment
    from billing.services import accounts

    clearing = accounts.clearing("stripe", "EUR")
    receivable = accounts.driver_receivable(1, "EUR")
    pending = accounts.refunds_pending("EUR")
    explicit = {
        "key": "md5(g::text)",
        "provider": "'stripe'",
        "currency": "'EUR'",
        "status": "CASE WHEN g %% 20 = 0 THEN 'PART-REFUND' ELSE 'CAPTURED' END",
        "requested_minor": "a + 500",
        "authorised_minor": "a + 500",
        "captured_minor": "a",
        "refunded_minor": f"CASE WHEN g %% 20 = 0 THEN {REFUND_MINOR} ELSE 0 END",
        "billed_minor": f"CASE WHEN g %% {every} = {BILL} THEN a + 100 ELSE a END",
        "provider_payment_id": "'pi_bench' || g",
        "checkout_id": "'cs_bench' || g",
        "created_at": "timestamptz '2026-11-01 00:00:00+00' + make_interval(secs => g %% 2592000)",
        "updated_at": "now()",
    }
    columns, values, params = [], [], []
    for f in Payment._meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(f.column)
        if f.name in explicit:
            values.append(explicit[f.name])
        elif f.has_default() and not callable(f.default):
            values.append("%s")
            params.append(f.get_db_prep_save(f.default, connection))
        elif f.null:
            values.append("NULL")
        else:
            values.append("''")
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # seeding only: the triggers and FK checks off
        cursor.execute(
            f"INSERT INTO billing_payment ({', '.join(columns)}) SELECT {', '.join(values)} "  # noqa: S608
            f"FROM generate_series(1::bigint, %s::bigint) g CROSS JOIN LATERAL (SELECT 1000 + (g * 7919) %% 90000 AS a) v",
            [*params, count],
        )
        cursor.execute(
            f"""
            WITH e AS (
                INSERT INTO billing_ledgerentry (posted_at, event, memo, reference, idempotency_key)
                SELECT now(), 'capture', '', 'payment:' || p.id, 'payment:' || p.id || ':capture'
                FROM billing_payment p WHERE p.provider = 'stripe' ORDER BY p.id
                RETURNING id, reference)
            INSERT INTO billing_ledgerline (entry_id, account_id, amount_minor)
            SELECT e.id, x.account, x.sign * (p.captured_minor
                - CASE WHEN substr(p.provider_payment_id, 9)::bigint %% {every} = {LEDGER} THEN 1 ELSE 0 END)
            FROM e JOIN billing_payment p ON 'payment:' || p.id = e.reference
            CROSS JOIN (VALUES (%s::bigint, 1), (%s::bigint, -1)) x(account, sign)
            """,  # noqa: S608 — numbers of ours, not input
            [clearing.pk, receivable.pk],
        )
        cursor.execute(
            """
            WITH e AS (
                INSERT INTO billing_ledgerentry (posted_at, event, memo, reference, idempotency_key)
                SELECT now(), 'refund', 'refund paid', 'cdr:' || p.id, p.key || '|cdr:' || p.id || ':refund:paid'
                FROM billing_payment p WHERE p.refunded_minor > 0 ORDER BY p.id
                RETURNING id, idempotency_key)
            INSERT INTO billing_ledgerline (entry_id, account_id, amount_minor)
            SELECT e.id, x.account, x.sign * %s FROM e
            CROSS JOIN (VALUES (%s::bigint, 1), (%s::bigint, -1)) x(account, sign)
            """,
            [REFUND_MINOR, pending.pk, clearing.pk],
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        for table in ("billing_payment", "billing_ledgerentry", "billing_ledgerline"):
            cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute("SELECT COALESCE(SUM(amount_minor), 0), COUNT(*) FROM billing_ledgerline")
        total, lines = cursor.fetchone()
    assert total == 0, f"seeded books don't balance: {total}"
    print(f"   ledger: {lines:,} lines, trial balance 0")


def write_file(path: Path, count: int, every: int) -> tuple[set[tuple[str, str]], int]:
    """The payout file, and the (kind, payment id) mismatches planted in it, and the bad rows' count."""
    planted: set[tuple[str, str]] = set()
    bad = 0
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        day = "2026-12-02 00:00:00"

        def row(pid: str, gross: int, fee: int, category: str, currency: str = "eur", created: str = day) -> None:
            writer.writerow(
                [
                    "po_bench1", day, f"txn_{pid}_{category}", created, day, currency,
                    f"{gross / 100:.2f}", f"{fee / 100:.2f}", f"{(gross - fee) / 100:.2f}", category,
                    f"ch_{pid}" if category == "charge" else f"re_{pid}", "", f"{gross / 100:.2f}", currency,
                    f"ch_{pid}", pid, "card", "visa", "",
                ]
            )  # fmt: skip

        for g in range(1, count + 1):
            pid, amount, kind = f"pi_bench{g}", amount_of(g), g % every
            if kind == MISSING:
                planted.add(("missing_from_file", pid))
                continue
            fee = (amount * 15 + 500) // 1000 + 25
            if kind == AMOUNT:
                planted.add(("amount_differs", pid))
                row(pid, amount + 1, fee, "charge")
            elif kind == CURRENCY:
                planted.add(("currency_differs", pid))
                row(pid, amount, fee, "charge", currency="usd")
            else:
                row(pid, amount, fee, "charge")
            if kind == LEDGER:
                planted.add(("ledger_differs", pid))
            if kind == BILL:
                planted.add(("bill_differs", pid))
            if g % 20 == 0:
                row(pid, -REFUND_MINOR, 0, "refund")
        for n in range(count // every):
            planted.add(("not_ours", f"pi_stranger{n}"))
            row(f"pi_stranger{n}", 1234, 44, "charge")
            row(f"pi_badrow{n}", 1234, 44, "charge", created="2026-13-45 99:00:00")
            bad += 1
    return planted, bad


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=5_000, help="one planted mismatch of each kind per this many")
    parser.add_argument("--database", default="emsp_bench_reconciliation")
    args = parser.parse_args()
    setup(fresh=True, name=args.database)

    from billing.models import Payment
    from billing.services.reconciliation import reconcile_payout_file

    started = time.perf_counter()
    seed(args.payments, args.every)
    print(
        f"seed: {Payment.objects.count():,} captured payments with their ledger lines in {time.perf_counter() - started:.1f} s"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stripe-payout.csv"
        started = time.perf_counter()
        planted, bad = write_file(path, args.payments, args.every)
        with path.open() as f:
            rows = sum(1 for _ in f) - 1
        print(
            f"file: {rows:,} rows, {path.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s; "
            f"planted {len(planted):,} mismatches of payments and {bad:,} bad rows"
        )
        for attempt in (1, 2):
            started, cpu = time.perf_counter(), time.process_time()
            run = reconcile_payout_file(provider="stripe", path_or_file=path)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            found = {(m["kind"], m["payment_id"]) for m in run.mismatches if m["kind"] != "bad_row"}
            bad_found = sum(1 for m in run.mismatches if m["kind"] == "bad_row")
            print(
                f"run {attempt}: reconcile_payout_file: {run.rows:,} rows, {run.matched:,} matched, "
                f"{run.mismatch_count:,} mismatches in {elapsed:.1f} s (Python CPU {cpu:.1f} s; load average "
                f"{os.getloadavg()[0]:.1f}) [{'OK' if elapsed < TARGET_SECONDS else 'ABOVE'} target {TARGET_SECONDS} s]"
            )
            assert found == planted, (sorted(found - planted)[:5], sorted(planted - found)[:5])
            assert bad_found == bad and run.mismatch_count == len(planted) + bad
            assert run.rows == rows
        by_kind: dict[str, int] = {}
        for m in run.mismatches:
            by_kind[m["kind"]] = by_kind.get(m["kind"], 0) + 1
        print(f"   found exactly the planted ones: {by_kind}")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
