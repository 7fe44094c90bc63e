"""Benchmark: ledger postings of completed charges into PostgreSQL (target ≥ 2,000 charges/s).

Usage: .venv/bin/python bench/bench_ledger.py [--charges 200000] [--per-transaction 500] [--drivers 10000]
       [--cpos 60] [--single 2000] [--database emsp_bench_ledger]
A charge is what billing posts for one charge a driver pays by card (billing/services/postings.py): the
authorisation (holds pair), the bill (the driver's receivable debited the total; the CPO's payable, our fees and
the VAT on them credited) and the capture (the provider's clearing debited, the receivable credited, the hold
released): 3 entries, 10 lines (11 when the total needed rounding), each with its idempotency key. The legs are
built by postings.legs_* (the same code the payment flow posts through) and posted with ledger.post_many, N
charges per transaction, into a fresh database with the ledger's triggers. Accounts of the drivers and CPOs are
opened before the clock starts; the CDR amounts are generated before it too. At the end the trial balance must
be zero and every count exact; `--single` also times the same charges posted entry by entry with ledger.post.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
from decimal import Decimal

from django_env import machine, setup

TARGET = 2_000


def backend_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the PostgreSQL backend serving us has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROVIDER = "razorpay"
CURRENCY = "INR"
VAT_RATE = Decimal("18")
CENT = Decimal("0.01")


def charges(
    count: int, drivers: int, cpos: int, seed: int = 12
) -> list[tuple[int, int, str, Decimal, Decimal, Decimal]]:
    """(charge number, driver, CPO party, CDR cost incl. its VAT, our fee, VAT on the fee) per charge; the fee's
    VAT is rounded on its own (half-up), so some totals get a rounding line."""
    rng = random.Random(seed)
    out = []
    for n in range(1, count + 1):
        cost = Decimal(rng.randint(5_000, 150_000)).scaleb(-2)
        fee = (Decimal("3.00") + cost * Decimal("0.05")).quantize(CENT)
        vat = (fee * Decimal("0.18")).quantize(Decimal("0.001"))  # a third decimal: rounded in the bill
        out.append((n, rng.randrange(1, drivers + 1), f"IN*C{rng.randrange(cpos):02d}", cost, fee, vat))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=200_000)
    parser.add_argument("--per-transaction", type=int, default=500)
    parser.add_argument("--drivers", type=int, default=10_000)
    parser.add_argument("--cpos", type=int, default=60)
    parser.add_argument("--single", type=int, default=2_000, help="charges also posted entry by entry (0: skip)")
    parser.add_argument("--workers", type=int, default=1, help="processes posting at once, each a connection")
    parser.add_argument("--database", default="emsp_bench_ledger")
    args = parser.parse_args()
    setup(fresh=True, name=args.database)

    from django.db import connection, connections, transaction
    from django.db.models import Count

    from billing.models import LedgerEntry, LedgerLine
    from billing.services import accounts, ledger, postings
    from billing.services.ledger import EntrySpec

    def specs(charge: tuple[int, int, str, Decimal, Decimal, Decimal]) -> list[EntrySpec]:
        n, driver, cpo, cost, fee, vat = charge
        exact_total = cost + fee + vat
        bill = postings.Bill(
            currency=CURRENCY,
            cpo=cost,
            fee=fee,
            fee_vat=vat.quantize(CENT),
            fee_vat_rate=VAT_RATE,
            total=exact_total.quantize(CENT),
        )
        held = (exact_total + 100).quantize(Decimal("1"))  # the hold: the quote rounded up, plus a margin
        payer = accounts.driver_receivable(driver, CURRENCY)
        return [
            EntrySpec(
                event="authorisation",
                legs=postings.legs_authorisation(provider=PROVIDER, currency=CURRENCY, amount=held),
                reference=f"payment:{n}",
                idempotency_key=f"payment:{n}:authorised",
            ),
            EntrySpec(
                event="charge",
                legs=postings.legs_charge(bill=bill, payer=payer, cpo_party=cpo),
                reference=f"cdr:{n}",
                idempotency_key=f"cdr:{n}:charge",
            ),
            EntrySpec(
                event="capture",
                legs=postings.legs_capture(provider=PROVIDER, payer=payer, amount=bill.total, held=held),
                reference=f"payment:{n}",
                idempotency_key=f"payment:{n}:capture",
            ),
        ]

    work = charges(args.charges + args.single, args.drivers, args.cpos)
    batch_work, single_work = work[: args.charges], work[args.charges :]

    with ledger.cached_accounts():
        started = time.perf_counter()
        for driver in range(1, args.drivers + 1):
            accounts.driver_receivable(driver, CURRENCY)
        for cpo in range(args.cpos):
            accounts.cpo_payable(f"IN*C{cpo:02d}", CURRENCY)
        for open_one in (accounts.revenue_fees, accounts.revenue_rounding, lambda c: accounts.tax_payable(VAT_RATE, c)):
            open_one(CURRENCY)
        accounts.clearing(PROVIDER, CURRENCY)
        accounts.holds(PROVIDER, CURRENCY)
        print(f"accounts opened (not timed): {args.drivers + args.cpos + 6:,} in {time.perf_counter() - started:.1f} s")

        def post_share(share: list[tuple[int, int, str, Decimal, Decimal, Decimal]]) -> tuple[float, float]:
            """Post `share`, N charges per transaction; the CPU seconds this process and its backend spent."""
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                backend = cursor.fetchone()[0]
            cpu, pg_cpu = time.process_time(), backend_cpu_seconds(backend)
            for first in range(0, len(share), args.per_transaction):
                with transaction.atomic():
                    ledger.post_many(
                        [s for charge in share[first : first + args.per_transaction] for s in specs(charge)]
                    )
            return time.process_time() - cpu, backend_cpu_seconds(backend) - pg_cpu

        if args.workers == 1:
            started = time.perf_counter()
            cpu, pg_cpu = post_share(batch_work)
            elapsed = time.perf_counter() - started
        else:
            # Forked workers (each its own connection; the account cache comes along), started together.
            connections.close_all()
            context = multiprocessing.get_context("fork")
            barrier, results = context.Barrier(args.workers + 1), context.Queue()

            def worker(share: list[tuple[int, int, str, Decimal, Decimal, Decimal]]) -> None:
                connection.ensure_connection()
                barrier.wait()
                results.put(post_share(share))
                connections.close_all()

            procs = [context.Process(target=worker, args=(batch_work[i :: args.workers],)) for i in range(args.workers)]
            for proc in procs:
                proc.start()
            barrier.wait()
            started = time.perf_counter()
            spent = [results.get() for _ in procs]
            elapsed = time.perf_counter() - started
            for proc in procs:
                proc.join()
                assert proc.exitcode == 0, proc.exitcode
            cpu, pg_cpu = sum(c for c, _ in spent), sum(p for _, p in spent)
        rate = len(batch_work) / elapsed
        print(
            f"post_many, {args.per_transaction} charges per transaction, {args.workers} worker(s): "
            f"{len(batch_work):,} charges in {elapsed:.1f} s = {rate:,.0f} charges/s "
            f"[{'OK' if rate >= TARGET else 'BELOW'} target {TARGET:,}]; CPU: Python {cpu:.1f} s "
            f"({1e6 * cpu / len(batch_work):.0f} µs a charge), PostgreSQL backends {pg_cpu:.1f} s "
            f"({1e6 * pg_cpu / len(batch_work):.0f} µs a charge); load average {os.getloadavg()[0]:.1f}"
        )

        if single_work:
            started = time.perf_counter()
            for charge in single_work:
                with transaction.atomic():
                    for spec in specs(charge):
                        ledger.post(
                            event=spec.event,
                            legs=spec.legs,
                            reference=spec.reference,
                            idempotency_key=spec.idempotency_key,
                        )
            single = time.perf_counter() - started
            print(
                f"post, entry by entry, one transaction per charge: {len(single_work):,} charges in {single:.1f} s = "
                f"{len(single_work) / single:,.0f} charges/s"
            )

        # Posting a batch again posts nothing (every key was used).
        before = LedgerEntry.objects.count()
        with transaction.atomic():
            again = ledger.post_many([s for charge in batch_work[:100] for s in specs(charge)])
        assert LedgerEntry.objects.count() == before and len(again) == 300

    # The books: three entries per charge, the lines each charge needs, and a zero trial balance.
    total = len(work)
    expected_lines = sum(
        2 + 4 + 4 + ((cost + fee + vat).quantize(CENT) != cost + fee + vat.quantize(CENT))
        for _, _, _, cost, fee, vat in work
    )
    entries = LedgerEntry.objects.count()
    lines = LedgerLine.objects.count()
    per_event = dict(LedgerEntry.objects.values_list("event").annotate(n=Count("id")).values_list("event", "n"))
    books = ledger.trial_balance(CURRENCY)
    billed = sum((cost + fee + vat).quantize(CENT) for _, _, _, cost, fee, vat in work)
    print(f"entries {entries:,} ({per_event}), lines {lines:,}; trial balance total {sum(books.values())}")
    assert entries == 3 * total and per_event == {"authorisation": total, "charge": total, "capture": total}
    assert lines == expected_lines, (lines, expected_lines)
    assert sum(books.values()) == 0
    assert books[f"clearing:{PROVIDER}"] == billed
    assert books[f"holds:{PROVIDER}"] == 0 and f"holds:{PROVIDER}:authorised" in books
    assert books[f"holds:{PROVIDER}:authorised"] == 0
    assert all(v == 0 for code, v in books.items() if code.startswith("driver:"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('billing_ledgerline'))")
        print(f"billing_ledgerline size: {cursor.fetchone()[0]}; all checks passed")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
