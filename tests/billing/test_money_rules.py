"""The stated rules of money that aren't a Beckn journey: a period closed with CDRs still in review carries
them to the next one; a CPO's settlement reads what the ledger booked to it, credits folded in; a CPO's credit
CDR is owed back to the driver; a provider call lost with its worker is retried under the same key and takes
the money once."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from billing.models import CdrAudit, Dispute, LedgerAccount, Payment, PaymentOperation
from billing.payments.gateway import GatewayError
from billing.services import accounts, ledger, payments, postings
from billing.services.settlement import SettlementError, settlement_close, settlement_compute
from tests.billing.factories import (
    CdrAuditFactory,
    CdrFactory,
    DisputeFactory,
    DriverReceiptFactory,
    PartnerTermsFactory,
    at,
)
from tests.billing.provider_standin import Fake, authorised, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.factories import DriverFactory, PartnerFactory

pytestmark = pytest.mark.django_db

OCTOBER, NOVEMBER, DECEMBER = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)


def finance() -> Any:
    user, _ = get_user_model().objects.get_or_create(username="finance", defaults={"is_staff": True})
    return user


# --- carry-over -------------------------------------------------------------------------------------------


def october_with_one_cdr_in_review() -> tuple[Any, Any, Any]:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    matched = CdrFactory(partner=partner, cdr_id="OK-1", end_date_time=at(10))
    CdrAuditFactory(cdr=matched)
    disputed = CdrFactory(partner=partner, cdr_id="DISPUTED-1", end_date_time=at(20), total_energy=Decimal("30"))
    CdrAuditFactory(cdr=disputed, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("8"))
    DisputeFactory(cdr=disputed)
    return partner, matched, disputed


def test_a_period_in_review_closes_with_its_open_cdrs_carried_to_the_next_one() -> None:
    partner, _, disputed = october_with_one_cdr_in_review()
    (october,) = settlement_compute(partner=partner, period_start=OCTOBER)
    assert october.state == "OPEN"
    with pytest.raises(SettlementError, match="open dispute"):
        settlement_close(settlement=october, user=finance())

    closed = settlement_close(settlement=october, user=finance(), carry_over=True)

    assert (closed.state, closed.cdr_count, closed.carried_over) == ("CLOSED", 1, 1)
    disputed.refresh_from_db()
    assert disputed.carried_to == NOVEMBER
    (november,) = settlement_compute(partner=partner, period_start=NOVEMBER)
    assert (november.cdr_count, november.open_disputes, november.state) == (1, 1, "OPEN")
    assert november.energy_kwh == Decimal("30")
    # Once its dispute is resolved, November reconciles; October's closed figures don't move.
    Dispute.objects.filter(cdr=disputed).update(state=Dispute.State.ACCEPTED)
    (november,) = settlement_compute(partner=partner, period_start=NOVEMBER)
    assert november.state == "RECONCILED"
    (october_again,) = settlement_compute(partner=partner, period_start=OCTOBER)
    assert (october_again.state, october_again.cdr_count) == ("CLOSED", 1)


def test_a_cdr_carried_twice_moves_on_again_and_a_closed_period_is_not_carried() -> None:
    partner, _, disputed = october_with_one_cdr_in_review()
    (october,) = settlement_compute(partner=partner, period_start=OCTOBER)
    settlement_close(settlement=october, user=finance(), carry_over=True)
    CdrAuditFactory(cdr=CdrFactory(partner=partner, cdr_id="OK-NOV", end_date_time=at(5, month=11)))
    (november,) = settlement_compute(partner=partner, period_start=NOVEMBER)
    assert november.cdr_count == 2  # its own, and October's still disputed one
    november = settlement_close(settlement=november, user=finance(), carry_over=True)  # still disputed
    assert (november.state, november.cdr_count) == ("CLOSED", 1)
    disputed.refresh_from_db()
    assert disputed.carried_to == DECEMBER
    with pytest.raises(SettlementError, match="already closed"):
        settlement_close(settlement=october, user=finance(), carry_over=True)


# --- the CPO's payable from the ledger ----------------------------------------------------------------------


def test_the_cpo_settlement_reads_what_the_ledger_booked_to_it_credits_folded_in() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    this_month = timezone.now().date().replace(day=1)
    cdr = CdrFactory(partner=partner, currency="INR", end_date_time=timezone.now())
    CdrAuditFactory(cdr=cdr)
    payable = accounts.cpo_payable("IN*CPA", "INR")
    driver = accounts.driver_receivable(1, "INR")
    # Booked for the period's CDR (its reference), whenever posted: settlement._ledger_payable.
    for amount, event in ((Decimal("118.00"), "charge"), (Decimal("-11.80"), "credit")):
        legs = [ledger.Leg(driver, amount), ledger.Leg(payable, -amount)]
        ledger.post(event=event, legs=legs, reference=f"cdr:{cdr.pk}", idempotency_key=event)
    ledger.post(
        event="settlement_payout",
        legs=[ledger.Leg(payable, Decimal("50")), ledger.Leg(accounts.bank("INR"), Decimal("-50"))],
        idempotency_key="payout-1",
    )
    (row,) = settlement_compute(partner=partner, period_start=this_month)
    assert row.ledger_payable == Decimal("106.20")  # charges less credits; the payout is not what was booked


# --- credit CDRs ------------------------------------------------------------------------------------------


def test_a_cpo_credit_cdr_outside_a_booking_credits_the_drivers_account_borne_by_the_cpo() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    driver = DriverFactory(currency="INR")
    original = CdrFactory(partner=partner, cdr_id="C-1", currency="INR")
    credit = CdrFactory(
        partner=partner,
        cdr_id="C-1-CREDIT",
        currency="INR",
        credit=True,
        credited_cdr=original,
        total_cost_excl_vat=Decimal("-10"),
        total_cost_incl_vat=Decimal("-11.80"),
    )
    receipt = DriverReceiptFactory(
        cdr=credit,
        driver=driver,
        currency="INR",
        cpo_cost_excl_vat=Decimal("-10"),
        cpo_vat=Decimal("-1.80"),
        fee_excl_vat=Decimal("0"),
        fee_vat=Decimal("0"),
        total_incl_vat=Decimal("-11.80"),
    )
    payments.bill(receipt)
    payments.bill(receipt)  # processed again: booked once

    def balance(code: str) -> Decimal:
        return ledger.balance(LedgerAccount.objects.get(code=code, currency="INR"))

    assert balance("cpo:IN*CPA:payable") == Decimal("11.80")  # the CPO owes it back: its payable shrinks
    assert balance(f"driver:{driver.pk}:receivable") == Decimal("-11.80")  # credited to the driver's account
    assert balance("refunds:pending") == 0


@pytest.mark.parametrize(
    ("credited", "fee_back", "fee_kept"),
    [
        ("-380", Decimal("14.87"), Decimal("0")),  # voided: 12.60 + 2.27 back
        ("-190", Decimal("4.49"), Decimal("8.80")),  # lowered to 190: our fee there 8.80 + 1.58; 3.80 + 0.69 back
    ],
)
def test_a_credit_cdr_gives_back_what_it_takes_off_our_fee_and_its_vat(
    credited: str, fee_back: Decimal, fee_kept: Decimal
) -> None:
    """mod_cdrs: a credit CDR voids (or lowers) its original; a corrected one follows with its own bill. Our fee
    on what was voided goes back with the CPO's part: all of it, or the difference to our fee on the lower
    price (the flat part stays with a charge that happened)."""
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    PartnerTermsFactory(partner=partner, fee_flat=Decimal("5"), fee_percent=Decimal("2"), fee_vat_percent=Decimal("18"))
    driver = DriverFactory(currency="INR")
    original = CdrFactory(partner=partner, cdr_id="V-1", currency="INR", total_cost_excl_vat=Decimal("380"),
                          total_cost_incl_vat=Decimal("448.40"))  # fmt: skip
    charged = DriverReceiptFactory(cdr=original, driver=driver, currency="INR", cpo_vat=Decimal("68.40"),
                                   fee_excl_vat=Decimal("12.60"), fee_vat=Decimal("2.27"))  # fmt: skip
    payments.bill(charged)
    excl = Decimal(credited)
    credit = CdrFactory(partner=partner, cdr_id="V-1-C", currency="INR", credit=True, credited_cdr=original,
                        total_cost_excl_vat=excl, total_cost_incl_vat=excl * Decimal("1.18"))  # fmt: skip
    receipt = DriverReceiptFactory(cdr=credit, driver=driver, currency="INR", cpo_vat=excl * Decimal("0.18"))
    payments.bill(receipt)
    payments.bill(receipt)  # processed again: booked once

    def balance(code: str) -> Decimal:
        return ledger.balance(LedgerAccount.objects.get(code=code, currency="INR"))

    assert balance("revenue:fees") == -fee_kept  # revenue accounts have credit balances
    cpo_back = -excl * Decimal("1.18")
    owed = Decimal("463.27") - cpo_back - fee_back  # the bill less what came back
    assert balance(f"driver:{driver.pk}:receivable") == owed
    assert balance("refunds:pending") == 0
    assert sum(ledger.trial_balance("INR").values()) == 0


# --- a provider call lost with its worker ---------------------------------------------------------------


def test_a_capture_lost_mid_call_is_retried_under_the_same_key_and_taken_once(fake: Fake) -> None:
    """The provider is unreachable: the operation stays PENDING with the error; the retry (beat, or staff from
    the exceptions queue) sends the same idempotency key, and the ledger books the capture once."""
    fake.fail_capture = True
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, billed=10000)
    charge_booked(driver, Decimal("100"), "charge-1")
    with pytest.raises(GatewayError):
        payments.payment_capture(payment.pk)
    operation = PaymentOperation.objects.get(payment=payment)
    assert (operation.status, operation.error) == ("PENDING", "connection reset")
    fake.fail_capture = False
    payments.operation_retry(operation=operation)
    payments.operation_retry(operation=operation)  # a second retry finds it done
    payment.refresh_from_db()
    calls = [kw for kind, kw in fake.calls if kind == "capture"]
    assert (payment.status, payment.captured_minor) == (Payment.Status.CAPTURED, 10000)
    assert {c["idempotency_key"] for c in calls} == {operation.idempotency_key} and len(calls) == 2
    assert ledger.balance(accounts.clearing("fake", "INR")) == Decimal("100")
    assert sum(ledger.trial_balance("INR").values()) == 0


# --- wallet top-ups ---------------------------------------------------------------------------------------


def test_a_wallet_top_up_is_posted_once_per_reference_and_absurd_amounts_are_refused() -> None:
    from django.core.management import CommandError, call_command

    driver = DriverFactory(currency="INR", wallet_balance=Decimal("0"))
    for _ in range(2):
        call_command("wallet_top_up", driver=driver.pk, amount="500.00", reference="NEFT-1")
    driver.refresh_from_db()
    assert driver.wallet_balance == Decimal("500") == payments.wallet_balance(driver.pk, "INR")
    for amount in ("NaN", "-5", "1e30", "0.001", "abc"):
        with pytest.raises(CommandError):
            call_command("wallet_top_up", driver=driver.pk, amount=amount, reference=f"X-{amount}")
    with pytest.raises(CommandError, match="printable"):
        call_command("wallet_top_up", driver=driver.pk, amount="1", reference="NEFT\x00-2")
    with pytest.raises(CommandError, match="post-paid"):
        call_command("wallet_top_up", driver=DriverFactory().pk, amount="1", reference="NEFT-3")
    assert payments.wallet_balance(driver.pk, "INR") == Decimal("500")
    assert sum(ledger.trial_balance("INR").values()) == 0


# --- settlement payments ------------------------------------------------------------------------------------


def test_settlement_payments_to_cpos_and_from_apps_are_posted_once_per_reference() -> None:
    from django.core.management import CommandError, call_command

    payable, receivable = accounts.cpo_payable("IN*CPA", "INR"), accounts.bap_receivable("app.example", "INR")
    ledger.post(
        event="charge",
        legs=[ledger.Leg(receivable, Decimal("118")), ledger.Leg(payable, Decimal("-118"))],
        idempotency_key="charge-1",
    )
    for _ in range(2):
        call_command("settlement_payment", party="cpo:IN*CPA", paid="100", currency="INR", reference="UTR-1")
    call_command("settlement_payment", party="bap:app.example", received="118", currency="INR", reference="UTR-2")
    assert ledger.balance(payable) == Decimal("-18")  # 118 owed, 100 paid once
    assert ledger.balance(receivable) == 0
    assert ledger.balance(accounts.bank("INR")) == Decimal("18")
    for bad in ({"paid": "1e40"}, {"paid": "-1"}, {"paid": "0.001"}, {"received": "5"}):
        with pytest.raises(CommandError):
            call_command("settlement_payment", party="cpo:IN*CPA", currency="INR", reference="UTR-X", **bad)
    with pytest.raises(CommandError):
        call_command("settlement_payment", party="bank:x", paid="1", currency="INR", reference="UTR-3")
    assert sum(ledger.trial_balance("INR").values()) == 0


def test_a_refund_decided_before_the_capture_runs_right_after_it(
    fake: Fake, django_capture_on_commit_callbacks: Any
) -> None:
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, billed=10000)
    charge_booked(driver, Decimal("100"), "charge-2")
    with django_capture_on_commit_callbacks(execute=True):
        postings.credit(
            currency="INR", amount=Decimal("10"), borne_by=accounts.cpo_payable("IN*CPA", "INR"),
            reference="dispute:1", key="dispute:1:credit",
        )  # fmt: skip
        payments.refund_due(payment=payment, amount=Decimal("10"), reference="dispute:1", driver_id=driver.pk)
    assert fake.calls == []  # nothing captured yet: the refund waits
    with django_capture_on_commit_callbacks(execute=True):
        payments.payment_capture(payment.pk)
    payment.refresh_from_db()
    assert [kind for kind, _ in fake.calls] == ["capture", "refund"]
    assert (payment.captured_minor, payment.refunded_minor) == (10000, 1000)
    assert ledger.balance(accounts.refunds_pending("INR")) == 0
    assert ledger.balance(accounts.clearing("fake", "INR")) == Decimal("90")
    assert sum(ledger.trial_balance("INR").values()) == 0


def test_a_settlements_margin_is_the_fees_the_ledger_booked() -> None:
    """Two charges of 380.25 at 5 + 2 %: 12.605 each. Rounded once as invoice lines (12.61), the settlement's
    margin and the ledger's fee revenue agree to the cent (summed unrounded, the margin was 25.21)."""
    from billing.services.driver_pricing import emsp_fee

    partner = PartnerFactory(country_code="IN", party_id="CPA")
    terms = PartnerTermsFactory(partner=partner, fee_flat=Decimal("5"), fee_percent=Decimal("2"),
                                fee_vat_percent=Decimal("18"))  # fmt: skip
    driver = DriverFactory(currency="INR")
    for n in (1, 2):
        cdr = CdrFactory(partner=partner, cdr_id=f"M-{n}", currency="INR", end_date_time=at(10 + n),
                         total_cost_excl_vat=Decimal("380.25"), total_cost_incl_vat=Decimal("448.70"))  # fmt: skip
        CdrAuditFactory(cdr=cdr)
        fee = emsp_fee(terms, cdr.total_cost_excl_vat, "INR")
        receipt = DriverReceiptFactory(cdr=cdr, driver=driver, currency="INR", cpo_vat=Decimal("68.45"),
                                       fee_excl_vat=fee.excl_vat, fee_vat=fee.vat)  # fmt: skip
        payments.bill(receipt)
    (october,) = settlement_compute(partner=partner, period_start=OCTOBER)
    booked = -ledger.balance(LedgerAccount.objects.get(code="revenue:fees", currency="INR"))
    assert october.margin_excl_vat == booked == Decimal("25.22")


def test_a_settlement_payment_reference_booked_before_is_refused_for_another_amount() -> None:
    """A bank reference names one payment: the same again books nothing and says so; another amount under it is
    refused (it had been answered with the first payment's entry, silently, and the second never booked)."""
    from django.core.management import CommandError, call_command

    out = StringIO()
    call_command("settlement_payment", party="cpo:IN*CPA", paid="100", currency="INR", reference="UTR-1")
    call_command("settlement_payment", party="cpo:IN*CPA", paid="100.00", currency="INR", reference="UTR-1", stdout=out)
    assert "UTR-1: booked before, nothing posted now" in out.getvalue()
    with pytest.raises(CommandError, match=r"booked before for 100\.00, not 250 "):
        call_command("settlement_payment", party="cpo:IN*CPA", paid="250", currency="INR", reference="UTR-1")
    with pytest.raises(CommandError, match=r"booked before for 118\.00, not 11\.8 "):
        call_command("settlement_payment", party="bap:app.example", received="118", currency="INR", reference="U2")
        call_command("settlement_payment", party="bap:app.example", received="11.8", currency="INR", reference="U2")
    assert ledger.balance(accounts.cpo_payable("IN*CPA", "INR")) == Decimal("100")
    assert ledger.balance(accounts.bank("INR")) == Decimal("18")
