"""Payout reconciliation: a provider's file (Stripe's payout reconciliation report, Razorpay's settlement recon)
against our payments, the clearing account's lines and the bills; every mismatch with its reason; hostile rows
reported, never a crash; the command's exit status."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing.models import Payment, PayoutReconciliation
from billing.services import accounts, postings
from billing.services.ledger import from_minor
from billing.services.reconciliation import ReconciliationError, reconcile_payout_file

pytestmark = pytest.mark.django_db

STRIPE = [
    "automatic_payout_id", "automatic_payout_effective_at", "balance_transaction_id", "created_utc",
    "available_on_utc", "currency", "gross", "fee", "net", "reporting_category", "source_id", "description",
    "customer_facing_amount", "customer_facing_currency", "charge_id", "payment_intent_id", "payment_method_type",
    "card_brand", "payment_metadata[reference]",
]  # fmt: skip
RAZORPAY = [
    "entity_id", "type", "debit", "credit", "amount", "currency", "fee", "tax", "on_hold", "settled", "created_at",
    "settled_at", "settlement_id", "posted_at", "credit_type", "description", "notes", "payment_id",
    "settlement_utr", "order_id", "order_receipt", "method", "card_network", "card_issuer", "card_type", "dispute_id",
]  # fmt: skip


def payment(
    pid: str,
    captured: int,
    *,
    provider: str = "stripe",
    currency: str = "EUR",
    refunded: int = 0,
    authorised: int | None = None,
    billed: int | None = None,
    booked: int | None = None,
) -> Payment:
    """A captured payment and its capture in the ledger (`booked`, when the ledger should disagree)."""
    found = Payment.objects.create(
        provider=provider,
        currency=currency,
        status=Payment.Status.CAPTURED if not refunded else Payment.Status.PARTIALLY_REFUNDED,
        authorised_minor=authorised if authorised is not None else captured,
        captured_minor=captured,
        refunded_minor=refunded,
        billed_minor=billed if billed is not None else captured,
        provider_payment_id=pid,
    )
    payer = accounts.driver_receivable(1, currency)
    postings.capture(found, payer=payer, amount_minor=booked if booked is not None else captured, held_minor=captured)
    if refunded:  # as billing/services/payments.py books a provider refund: refunds:pending → clearing
        postings.refund(
            currency=currency,
            amount=from_minor(refunded, currency),
            paid_from=accounts.clearing(provider, currency),
            reference=f"cdr:{found.pk}",
            key=f"{found.key}|cdr:{found.pk}:refund:paid",
        )
    return found


def stripe_row(pid: str, gross: str, fee: str = "0.00", category: str = "charge", **over: str) -> dict[str, str]:
    currency = over.pop("currency", "eur")
    row = dict.fromkeys(STRIPE, "")
    row |= {
        "automatic_payout_id": "po_1",
        "automatic_payout_effective_at": "2026-12-02 00:00:00",
        "created_utc": "2026-12-01 10:00:00",
        "currency": currency,
        "gross": gross,
        "fee": fee,
        "net": str(Decimal(gross) - Decimal(fee)),
        "reporting_category": category,
        "payment_intent_id": pid,
    }
    return row | over


def razorpay_row(
    kind: str, entity: str, amount: int, fee: int = 0, payment_id: str = "", **over: Any
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RAZORPAY, "")
    row |= {
        "entity_id": entity,
        "type": kind,
        "debit": 0 if kind == "payment" else amount,
        "credit": amount - fee if kind == "payment" else 0,
        "amount": amount,
        "currency": "INR",
        "fee": fee,
        "tax": fee * 18 // 118,
        "created_at": 1764583200,
        "settlement_id": "setl_1",
        "payment_id": payment_id,
    }
    return row | over


def write(tmp_path: Path, columns: list[str], rows: list[dict[str, Any]], name: str = "payout.csv") -> Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = tmp_path / name
    path.write_text(out.getvalue())
    return path


def kinds(run: PayoutReconciliation) -> set[tuple[str, str]]:
    return {(m["kind"], m.get("payment_id", "")) for m in run.mismatches}


def test_it_stores_a_clean_run_when_the_stripe_file_agrees(tmp_path: Path) -> None:
    payment("pi_A", 2500, refunded=500)
    path = write(
        tmp_path, STRIPE, [stripe_row("pi_A", "25.00", "0.63"), stripe_row("pi_A", "-5.00", category="refund")]
    )
    run = reconcile_payout_file(provider="stripe", path_or_file=path)
    assert (run.rows, run.matched, run.mismatch_count, run.mismatches) == (2, 1, 0, [])
    assert PayoutReconciliation.objects.get().file_name == str(path)
    totals = run.outcome.payouts[("po_1", "EUR")]  # type: ignore[attr-defined]
    assert (totals.rows, totals.gross, totals.fee, totals.net) == (2, 2000, 63, 1937)


def test_every_kind_of_mismatch_is_listed_with_its_reason(tmp_path: Path) -> None:
    payment("pi_ok", 1000)
    payment("pi_amount", 1000)
    payment("pi_currency", 1000)
    payment("pi_missing", 1000)
    payment("pi_ledger", 1000, booked=900)
    payment("pi_bill", 1000, billed=1200, authorised=1500)
    payment("pi_held", 1000, billed=1200, authorised=1000)  # a bill above its hold: the rest is its own payment
    path = write(
        tmp_path,
        STRIPE,
        [
            stripe_row("pi_ok", "10.00", "0.40"),
            stripe_row("pi_amount", "10.50"),
            stripe_row("pi_currency", "10.00", currency="usd"),
            stripe_row("pi_ledger", "10.00"),
            stripe_row("pi_bill", "10.00"),
            stripe_row("pi_held", "10.00"),
            stripe_row("pi_stranger", "3.00"),
            stripe_row("pi_ok", "-1.00", category="dispute"),
            stripe_row("", "-250.00", category="payout"),  # the payout itself: not a payment's
        ],
    )
    run = reconcile_payout_file(provider="stripe", path_or_file=path)
    assert kinds(run) == {
        ("amount_differs", "pi_amount"),
        ("currency_differs", "pi_currency"),
        ("missing_from_file", "pi_missing"),
        ("ledger_differs", "pi_ledger"),
        ("bill_differs", "pi_bill"),
        ("not_ours", "pi_stranger"),
        ("unhandled_row", "pi_ok"),
    }
    assert run.mismatch_count == 7 and run.matched == 4 and run.rows == 9
    reasons = {m["kind"]: m["reason"] for m in run.mismatches}
    assert reasons["amount_differs"].startswith("the file nets 1050 (taken 1050, given back 0), we captured 1000")
    assert reasons["ledger_differs"] == "clearing:stripe holds 900 for it (EUR), the payment nets 1000 EUR"
    assert reasons["bill_differs"] == "captured 1000, the CDR billed 1200 (held 1500) EUR"
    assert reasons["currency_differs"] == "the file says USD, the payment is in EUR"
    assert run.outcome.skipped_rows == 1  # type: ignore[attr-defined]


def test_a_window_limits_which_of_ours_the_file_must_have(tmp_path: Path) -> None:
    old = payment("pi_old", 1000)
    Payment.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=30))
    payment("pi_new", 700)
    path = write(tmp_path, STRIPE, [stripe_row("pi_elsewhere", "1.00")])
    run = reconcile_payout_file(provider="stripe", path_or_file=path, since=timezone.now() - timedelta(days=1))
    assert kinds(run) == {("missing_from_file", "pi_new"), ("not_ours", "pi_elsewhere")}


def test_a_razorpay_settlement_in_paise_nets_the_capture_and_its_refunded_rest(tmp_path: Path) -> None:
    # Razorpay captures the whole hold and refunds the rest (billing/payments/razorpay_gateway.py): 500.00 held,
    # 420.00 billed; then a 20.00 credit refunded to the driver.
    payment("pay_A", 42000, provider="razorpay", currency="INR", authorised=50000, billed=42000, refunded=2000)
    payment("pay_B", 10000, provider="razorpay", currency="INR")
    path = write(
        tmp_path,
        RAZORPAY,
        [
            razorpay_row("payment", "pay_A", 50000, fee=1180),
            razorpay_row("refund", "rfnd_rest", 8000, payment_id="pay_A"),
            razorpay_row("refund", "rfnd_credit", 2000, payment_id="pay_A"),
            razorpay_row("payment", "pay_B", 10100, fee=236),
        ],
    )
    run = reconcile_payout_file(provider="razorpay", path_or_file=path)
    assert kinds(run) == {("amount_differs", "pay_B")}
    assert run.matched == 1
    totals = run.outcome.payouts[("setl_1", "INR")]  # type: ignore[attr-defined]
    assert (totals.gross, totals.fee, totals.net) == (50000 - 10000 + 10100, 1416, 50000 - 1180 - 10000 + 10100 - 236)


def test_hostile_rows_are_reported_and_the_rest_is_reconciled(tmp_path: Path) -> None:
    payment("pi_good", 1000)
    header = ",".join(STRIPE)

    def line(**over: str) -> str:
        row = stripe_row("pi_bad", "1.00") | over
        return ",".join(row[c] for c in STRIPE)

    text = "\n".join(
        [
            header,
            line(payment_intent_id="pi_good", gross="10.00", net="10.00"),
            line(payment_intent_id="pi_n\x00ul"),
            line(gross="9" * 16, net="9" * 16),
            line(gross="1.234", net="1.234"),
            line(gross="1e3", net="1e3"),
            line(created_utc="2026-02-30 25:00:00"),
            line(payment_intent_id=""),
            line(net="0.99"),
            line(currency="zzz"),
            "po_1,short",
            "x" * 70_000,
            line(payment_intent_id="pi_" + "9" * 200),
        ]
    )
    path = tmp_path / "hostile.csv"
    path.write_bytes(text.encode() + b"\n\xff\xfe,\x80\n")
    run = reconcile_payout_file(provider="stripe", path_or_file=path)
    bad = [m for m in run.mismatches if m["kind"] == "bad_row"]
    assert [m["line"] for m in bad] == list(range(3, 15))
    assert any("NUL" in m["reason"] for m in bad) and any("beyond" in m["reason"] for m in bad)
    assert any("more decimals" in m["reason"] for m in bad) and any("not a date" in m["reason"] for m in bad)
    assert any("without a payment_intent_id" in m["reason"] for m in bad)
    assert any(m["reason"] == "net 0.99 is not gross 1.00 less fee 0.00" for m in bad)
    assert run.matched == 1 and kinds(run) - {("bad_row", "")} == set()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", "empty"),
        (b"id,amount\n1,2\n", r"lacks the column\(s\) automatic_payout_id"),
        (bytes(range(256)) * 4, "lacks the column"),
    ],
)
def test_a_file_that_is_not_a_payout_file_is_refused(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "not.csv"
    path.write_bytes(content)
    with pytest.raises(ReconciliationError, match=why):
        reconcile_payout_file(provider="stripe", path_or_file=path)
    with pytest.raises(ReconciliationError, match="no payout file format"):
        reconcile_payout_file(provider="paypal", path_or_file=path)
    assert not PayoutReconciliation.objects.exists()


def test_an_open_file_is_read_and_left_open(tmp_path: Path) -> None:
    payment("pi_A", 1000)
    raw = write(tmp_path, STRIPE, [stripe_row("pi_A", "10.00")]).read_bytes()
    upload = io.BytesIO(raw)
    run = reconcile_payout_file(provider="stripe", path_or_file=upload)
    assert run.mismatch_count == 0 and not upload.closed and run.file_name == "upload"


def test_the_command_exits_1_on_mismatches_and_2_on_a_bad_file(tmp_path: Path) -> None:
    payment("pi_A", 1000)
    clean = write(tmp_path, STRIPE, [stripe_row("pi_A", "10.00")], "clean.csv")
    out = io.StringIO()
    call_command("reconcile_payouts", "--provider", "stripe", str(clean), stdout=out)
    assert "1 matched, 0 mismatches" in out.getvalue()
    dirty = write(tmp_path, STRIPE, [stripe_row("pi_A", "11.00"), stripe_row("pi_X", "1.00")], "dirty.csv")
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("reconcile_payouts", "--provider", "stripe", str(dirty), stdout=out)
    assert failed.value.returncode == 1 and "2 mismatches" in str(failed.value)
    assert "amount_differs: payment_id=pi_A" in out.getvalue() and "not_ours: payment_id=pi_X" in out.getvalue()
    with pytest.raises(CommandError) as refused:
        call_command("reconcile_payouts", "--provider", "stripe", str(tmp_path / "nowhere.csv"), stdout=io.StringIO())
    assert refused.value.returncode == 2 and "can't read" in str(refused.value)
    with pytest.raises(CommandError) as bad_day:
        call_command("reconcile_payouts", "--provider", "stripe", str(clean), "--since", "yesterday")
    assert bad_day.value.returncode == 2
