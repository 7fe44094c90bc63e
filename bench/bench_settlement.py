"""Benchmark: settlement report over 1,000,000 CDRs on PostgreSQL (target < 60 s).

Usage: .venv/bin/python bench/bench_settlement.py [--cdrs 1000000] [--keep]
Fills a fresh database `emsp_bench_settlement` with CDRs of 4 CPOs over 3 months (one CPO half of them, in
two currencies), each with its audit (2 % mismatches with a dispute, some needing review, 0.5 % voiding credit
CDRs), a driver receipt for 90 % and the ledger billing posts for them (charges, captures, credits: about 5.4 M
lines), generated in SQL. Then times the ledger's side of the settlement (`_ledger_payable`) and
`settlement_compute` for one month of the big CPO, the whole report (`manage.py settlement_report
--all-partners` over the 3 months, computed and written as CSV), and the big CPO's per-CDR CSV for its month.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

from django_env import machine, setup

T = TypeVar("T")
TARGET_SECONDS = 60
DATABASE = "emsp_bench_settlement"
MONTHS = [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1)]
PERIOD = "2026-08..2026-10"
PERIOD_SECONDS = 92 * 86_400  # 1 August to 1 November
# (party, share of the CDRs in twentieths): CPA is the big one.
PARTNERS = [("CPA", 10), ("CPB", 5), ("CPC", 3), ("CPD", 2)]


def fill(total: int) -> None:
    """Generate the CDRs and everything settlement joins, in SQL (generate_series), then ANALYZE."""
    from django.db import connection

    from emsp.models import Partner

    slots: list[int] = []
    for party, share in PARTNERS:
        partner = Partner.objects.create(name=f"Bench {party}", country_code="IN", party_id=party)
        slots += [partner.pk] * share
    credits = total // 200
    originals = total - credits
    with connection.cursor() as cursor:
        # Originals: spread evenly over the 3 months; every 10th of them in INR.
        cursor.execute(
            """
            INSERT INTO billing_cdr (partner_id, country_code, party_id, cdr_id, ocpi_key, session_id,
                start_date_time, end_date_time, currency, total_cost_excl_vat, total_cost_incl_vat, total_energy,
                total_time, location_id, evse_uid, token_uid, credit, credit_reference_id, last_updated, data,
                received_at, total_cost_taxes)
            SELECT p.id, 'IN', p.party_id, 'B' || g, 'in*' || lower(p.party_id) || '*b' || g, 'S' || g,
                ts - interval '1 hour', ts, CASE WHEN g %% 10 = 0 THEN 'INR' ELSE 'EUR' END,
                amount, round(amount * 1.19, 4), round((g %% 600) / 10.0 + 1, 4), 1,
                'LOC' || g %% 1000, 'LOC' || g %% 1000 || '-E1', 'TOK' || g %% 50000, false, '', ts, '{}', ts, '[]'
            FROM generate_series(1, %(n)s) g
            JOIN emsp_partner p ON p.id = (%(slots)s::bigint[])[1 + g %% 20]
            CROSS JOIN LATERAL (
                SELECT timestamptz '2026-08-01 00:00:00+00' + make_interval(secs => (g - 1)::bigint * %(secs)s / %(n)s)
                    AS ts,
                    round((g %% 5000) / 100.0 + 2, 4) AS amount
            ) v
            """,
            {"n": originals, "slots": slots, "secs": PERIOD_SECONDS},
        )
        # Credit CDRs voiding some originals (mod_cdrs: negative amounts, the original's energy repeated).
        cursor.execute(
            """
            INSERT INTO billing_cdr (partner_id, country_code, party_id, cdr_id, ocpi_key, session_id,
                start_date_time, end_date_time, currency, total_cost_excl_vat, total_cost_incl_vat, total_energy,
                total_time, location_id, evse_uid, token_uid, credit, credit_reference_id, credited_cdr_id,
                last_updated, data, received_at, total_cost_taxes)
            SELECT partner_id, country_code, party_id, cdr_id || '-C', ocpi_key || '-c', session_id,
                start_date_time, end_date_time, currency, -total_cost_excl_vat, -total_cost_incl_vat,
                total_energy, total_time, location_id, evse_uid, token_uid, true, cdr_id, id, last_updated, data,
                received_at, total_cost_taxes
            FROM billing_cdr WHERE id %% 199 = 7 ORDER BY id LIMIT %(n)s
            """,
            {"n": credits},
        )
        # Audits: credits CREDIT; otherwise 2 % MISMATCH (we compute 0.50 less), 0.2 % REVIEW, rest MATCHED.
        cursor.execute(
            """
            INSERT INTO billing_cdraudit (cdr_id, status, currency, computed_excl_vat, computed_incl_vat,
                difference_excl_vat, cpo_breakdown, our_breakdown, flags, time_zone, error, audited_at)
            SELECT id, st, currency,
                CASE st WHEN 'MATCHED' THEN total_cost_excl_vat WHEN 'MISMATCH' THEN total_cost_excl_vat - 0.5 END,
                CASE st WHEN 'MATCHED' THEN total_cost_incl_vat WHEN 'MISMATCH' THEN total_cost_incl_vat - 0.595 END,
                CASE st WHEN 'MATCHED' THEN 0 WHEN 'MISMATCH' THEN 0.5 END,
                '{}', '{}', '[]', 'Asia/Kolkata', '', end_date_time
            FROM billing_cdr
            CROSS JOIN LATERAL (SELECT CASE WHEN credit THEN 'CREDIT' WHEN id %% 50 = 1 THEN 'MISMATCH'
                WHEN id %% 500 = 3 THEN 'REVIEW' ELSE 'MATCHED' END AS st) s
            """,
            {},
        )
        # Disputes on the mismatches: August and September's resolved, October's two thirds still open.
        cursor.execute(
            """
            INSERT INTO billing_dispute (cdr_id, partner_id, state, currency, cpo_amount, our_amount, difference,
                opened_at, resolved_at)
            SELECT c.id, c.partner_id, st, c.currency, c.total_cost_excl_vat, a.computed_excl_vat,
                a.difference_excl_vat, c.end_date_time,
                CASE WHEN st IN ('ACCEPTED', 'CREDITED') THEN c.end_date_time + interval '5 days' END
            FROM billing_cdr c JOIN billing_cdraudit a ON a.cdr_id = c.id
            CROSS JOIN LATERAL (SELECT CASE WHEN c.end_date_time < '2026-10-01' OR c.id %% 3 = 0 THEN
                (CASE WHEN c.id %% 2 = 0 THEN 'ACCEPTED' ELSE 'CREDITED' END)
                ELSE (CASE WHEN c.id %% 2 = 0 THEN 'OPEN' ELSE 'CONTESTED' END) END AS st) s
            WHERE a.status = 'MISMATCH'
            """,
            {},
        )
        # Receipts for 90 % of the CDRs (our tokens): 18 % VAT on the CPO cost and on a 0.30 + 5 % fee.
        cursor.execute(
            """
            INSERT INTO billing_driverreceipt (cdr_id, currency, energy_kwh, cpo_cost_excl_vat, cpo_vat,
                fee_excl_vat, fee_vat, total_incl_vat, breakdown, created_at)
            SELECT id, currency, total_energy, total_cost_excl_vat, total_cost_incl_vat - total_cost_excl_vat,
                fee, round(fee * 0.18, 4), round(total_cost_incl_vat + fee * 1.18, 2), '{}', end_date_time
            FROM billing_cdr
            CROSS JOIN LATERAL (SELECT CASE WHEN credit THEN 0 ELSE 0.30 + round(total_cost_excl_vat * 0.05, 4)
                END AS fee) f
            WHERE id %% 10 <> 9
            """,
            {},
        )
    ledger(connection)
    with connection.cursor() as cursor:
        for table in (
            "billing_cdr",
            "billing_cdraudit",
            "billing_dispute",
            "billing_driverreceipt",
            "billing_ledgerentry",
            "billing_ledgerline",
        ):
            cursor.execute(f"VACUUM ANALYZE {table}")


def ledger(connection: Any) -> None:
    """What billing posts for these CDRs, in the ledger's shape (billing/services/postings.py): a `charge` entry
    per receipted CDR (the driver's receivable debited, the CPO party's payable credited with its cost, the fee and
    its VAT to revenue and tax) and a `capture` (clearing debited, the receivable credited), a `credit` entry per
    credit CDR (its payable debited back), and a `credit` per credited dispute (`dispute:<pk>`). Seeded with the
    triggers off, as bench_reconciliation does; the trial balance is checked after. settlement's
    `ledger_payable` reads this."""
    from billing.models import LedgerAccount

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT p.party_id, c.currency FROM billing_cdr c JOIN emsp_partner p ON p.id = c.partner_id"
        )
        pairs = cursor.fetchall()
        for party, currency in pairs:
            for code, kind in (
                (f"cpo:IN*{party}:payable", "LIABILITY"),
                ("driver:bench:receivable", "ASSET"),
                ("clearing:razorpay", "ASSET"),
                ("revenue:fees", "REVENUE"),
                ("tax:VAT-18", "LIABILITY"),
            ):
                LedgerAccount.objects.get_or_create(code=code, currency=currency, defaults={"kind": kind})
        cursor.execute("SET session_replication_role = replica")  # seeding only: the triggers and FK checks off
        cursor.execute(
            """
            CREATE TEMP TABLE bench_acct (party text, currency text, payable bigint, receivable bigint,
                clearing bigint, fees bigint, tax bigint)
            """
        )
        for party, currency in pairs:
            cursor.execute(
                "INSERT INTO bench_acct SELECT %s, %s, "
                "(SELECT id FROM billing_ledgeraccount WHERE code = %s AND currency = %s), "
                "(SELECT id FROM billing_ledgeraccount WHERE code = 'driver:bench:receivable' AND currency = %s), "
                "(SELECT id FROM billing_ledgeraccount WHERE code = 'clearing:razorpay' AND currency = %s), "
                "(SELECT id FROM billing_ledgeraccount WHERE code = 'revenue:fees' AND currency = %s), "
                "(SELECT id FROM billing_ledgeraccount WHERE code = 'tax:VAT-18' AND currency = %s)",
                [party, currency, f"cpo:IN*{party}:payable", currency, currency, currency, currency, currency],
            )
        # Minor units: both currencies have 2 decimals.
        cursor.execute(
            """
            WITH e AS (
                INSERT INTO billing_ledgerentry (posted_at, event, memo, reference, idempotency_key)
                SELECT r.created_at, 'charge', '', 'cdr:' || r.cdr_id, 'cdr:' || r.cdr_id || ':charge'
                FROM billing_driverreceipt r JOIN billing_cdr c ON c.id = r.cdr_id WHERE NOT c.credit ORDER BY r.cdr_id
                RETURNING id, reference)
            INSERT INTO billing_ledgerline (entry_id, account_id, amount_minor)
            SELECT e.id, x.account, x.amount FROM e
            JOIN billing_driverreceipt r ON 'cdr:' || r.cdr_id = e.reference
            JOIN billing_cdr c ON c.id = r.cdr_id
            JOIN emsp_partner p ON p.id = c.partner_id
            JOIN bench_acct a ON a.party = p.party_id AND a.currency = c.currency
            CROSS JOIN LATERAL (SELECT round(c.total_cost_incl_vat * 100)::bigint AS cost,
                round(r.fee_excl_vat * 100)::bigint AS fee, round(r.fee_vat * 100)::bigint AS vat) m
            CROSS JOIN LATERAL (VALUES (a.receivable, m.cost + m.fee + m.vat), (a.payable, -m.cost),
                (a.fees, -m.fee), (a.tax, -m.vat)) x(account, amount)
            WHERE x.amount <> 0
            """
        )
        cursor.execute(
            """
            WITH e AS (
                INSERT INTO billing_ledgerentry (posted_at, event, memo, reference, idempotency_key)
                SELECT r.created_at, 'capture', '', 'payment:' || r.cdr_id, 'payment:' || r.cdr_id || ':capture'
                FROM billing_driverreceipt r JOIN billing_cdr c ON c.id = r.cdr_id WHERE NOT c.credit ORDER BY r.cdr_id
                RETURNING id, reference)
            INSERT INTO billing_ledgerline (entry_id, account_id, amount_minor)
            SELECT e.id, x.account, x.amount FROM e
            JOIN billing_driverreceipt r ON 'payment:' || r.cdr_id = e.reference
            JOIN billing_cdr c ON c.id = r.cdr_id
            JOIN emsp_partner p ON p.id = c.partner_id
            JOIN bench_acct a ON a.party = p.party_id AND a.currency = c.currency
            CROSS JOIN LATERAL (SELECT round(c.total_cost_incl_vat * 100)::bigint + round(r.fee_excl_vat * 100)::bigint
                + round(r.fee_vat * 100)::bigint AS total) m
            CROSS JOIN LATERAL (VALUES (a.clearing, m.total), (a.receivable, -m.total)) x(account, amount)
            WHERE m.total <> 0
            """
        )
        # Credit CDRs give the CPO's payable back; credited disputes likewise (dispute:<pk>).
        cursor.execute(
            """
            WITH e AS (
                INSERT INTO billing_ledgerentry (posted_at, event, memo, reference, idempotency_key)
                SELECT c.received_at, 'credit', '', 'cdr:' || c.id, 'cdr:' || c.id || ':credit'
                FROM billing_cdr c WHERE c.credit ORDER BY c.id
                RETURNING id, reference)
            INSERT INTO billing_ledgerline (entry_id, account_id, amount_minor)
            SELECT e.id, x.account, x.amount FROM e
            JOIN billing_cdr c ON 'cdr:' || c.id = e.reference
            JOIN emsp_partner p ON p.id = c.partner_id
            JOIN bench_acct a ON a.party = p.party_id AND a.currency = c.currency
            CROSS JOIN LATERAL (SELECT round(-c.total_cost_incl_vat * 100)::bigint AS back) m
            CROSS JOIN LATERAL (VALUES (a.payable, m.back), (a.receivable, -m.back)) x(account, amount)
            WHERE m.back <> 0
            """
        )
        cursor.execute(
            """
            WITH e AS (
                INSERT INTO billing_ledgerentry (posted_at, event, memo, reference, idempotency_key)
                SELECT d.resolved_at, 'credit', '', 'dispute:' || d.id, 'dispute:' || d.id || ':credit'
                FROM billing_dispute d WHERE d.state = 'CREDITED' ORDER BY d.id
                RETURNING id, reference)
            INSERT INTO billing_ledgerline (entry_id, account_id, amount_minor)
            SELECT e.id, x.account, x.amount FROM e
            JOIN billing_dispute d ON 'dispute:' || d.id = e.reference
            JOIN emsp_partner p ON p.id = d.partner_id
            JOIN bench_acct a ON a.party = p.party_id AND a.currency = d.currency
            CROSS JOIN LATERAL (SELECT round(d.difference * 100)::bigint AS back) m
            CROSS JOIN LATERAL (VALUES (a.payable, m.back), (a.receivable, -m.back)) x(account, amount)
            WHERE m.back <> 0
            """
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("SELECT COALESCE(SUM(amount_minor), 0), COUNT(*) FROM billing_ledgerline")
        balance, lines = cursor.fetchone()
        assert balance == 0, f"the seeded ledger does not balance: {balance}"
        print(f"   ledger: {lines:,} lines, trial balance 0")


def timed(label: str, func: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = func()
    elapsed = time.perf_counter() - started
    print(f"{label}: {elapsed:.2f} s")
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cdrs", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="reuse the database of a previous run")
    args = parser.parse_args()
    setup(fresh=not args.keep, name=DATABASE)

    from django.core.management import call_command
    from django.db.models import Sum

    from billing.models import Cdr, Settlement
    from billing.services.settlement import (
        _ledger_payable,
        next_month,
        period_cdrs,
        settlement_cdrs_csv,
        settlement_compute,
    )
    from emsp.models import Partner

    if not args.keep:
        timed(f"fill: {args.cdrs:,} CDRs with audits, disputes and receipts", lambda: fill(args.cdrs))
    total = Cdr.objects.count()
    big = Partner.objects.get(party_id="CPA")
    october = MONTHS[-1]
    big_october = period_cdrs(big.pk, october, next_month(october))
    print(f"database: {total:,} CDRs; {big} has {big_october.count():,} in October 2026")

    for attempt in (1, 2):
        print(f"-- run {attempt}")
        timed(
            "ledger_payable alone, one month of the big CPO (the ledger's side of the settlement)",
            lambda: _ledger_payable(big.pk, october, next_month(october)),
        )
        _, rows = timed(
            "settlement_compute, one month of the big CPO",
            lambda: settlement_compute(partner=big, period_start=october),
        )
        for s in rows:
            print(
                f"   {s.currency}: {s.cdr_count:,} CDRs, {s.energy_kwh} kWh, billed {s.cpo_billed_excl_vat}, "
                f"computed {s.computed_excl_vat}, disputed {s.disputed_excl_vat} ({s.open_disputes} open), "
                f"drivers {s.charged_to_drivers}, margin {s.margin_excl_vat}, VAT {s.vat_collected}, {s.state}"
            )

        def report() -> str:
            # The finance path end to end: compute every CPO's months and write the CSV summary.
            with tempfile.TemporaryDirectory() as folder:
                target = Path(folder) / "settlement.csv"
                call_command(
                    "settlement_report",
                    "--all-partners",
                    "--period",
                    PERIOD,
                    "--output",
                    str(target),
                    stderr=io.StringIO(),
                )
                return target.read_text()

        whole, csv_text = timed(f"whole report: manage.py settlement_report --all-partners --period {PERIOD}", report)
        totals = Settlement.objects.aggregate(cdrs=Sum("cdr_count"), billed=Sum("cpo_billed_excl_vat"))
        print(
            f"   {Settlement.objects.count()} settlement rows covering {totals['cdrs']:,} CDRs, "
            f"CSV {len(csv_text):,} bytes [{'OK' if whole < TARGET_SECONDS else 'ABOVE'} target "
            f"{TARGET_SECONDS} s]"
        )
        # Every CDR is in exactly one row, and the rows add up to what the CPOs billed.
        assert totals["cdrs"] == total
        assert totals["billed"] == Cdr.objects.aggregate(billed=Sum("total_cost_excl_vat"))["billed"]

        big_rows = list(Settlement.objects.filter(partner=big, period_start=october).select_related("partner"))
        detail, size = timed(
            "per-CDR CSV of the big CPO's month (streamed)",
            lambda rows=big_rows: sum(len(piece) for piece in settlement_cdrs_csv(rows)),
        )
        print(f"   {size:,} bytes, {big_october.count() / detail:,.0f} CDR rows/s")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
