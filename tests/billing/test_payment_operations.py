"""Provider operations run once and finish, whatever happens around them: a webhook that failed to apply is
applied when redelivered; a free charge bills nothing and releases the hold at the provider; a release or a
refund that can no longer happen at the provider still ends (the credit goes to the driver's account); a credit
larger than one payment is spread over the booking's payments; two runs of one refund count it once; a period
is never carried into one already closed; a credit without a payment of ours is paid in its own currency.
The provider is a stand-in behind the gateway port (the port is the seam to the outside)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client

from billing.models import CdrAudit, LedgerAccount, LedgerEntry, Payment, PaymentOperation
from billing.payments.gateway import GatewayError, GatewayResult, WebhookEvent
from billing.services import accounts, ledger, payments, postings
from billing.services.settlement import settlement_close, settlement_compute
from tests.billing.factories import CdrAuditFactory, CdrFactory, DisputeFactory, DriverReceiptFactory, at
from tests.billing.provider_standin import Fake, authorised, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.billing.test_money_rules import finance
from tests.factories import DriverFactory, PartnerFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake")]


def bal(code: str) -> Decimal:
    return ledger.balance(LedgerAccount.objects.get(code=code, currency="INR"))


def test_webhook_that_failed_to_apply_is_applied_on_redelivery(fake: Fake, monkeypatch: Any) -> None:
    driver = DriverFactory(currency="INR")
    p = Payment.objects.create(driver=driver, provider="fake", currency="INR")
    fake.event = WebhookEvent(
        provider="fake",
        event_id="evt_1",
        type="authorised",
        provider_type="payment.authorized",
        reference=payments.reference_of(p),
        payment_id="pay_1",
        amount_minor=12000,
        currency="INR",
    )
    real = postings.authorisation
    state = {"n": 0}

    def flaky(*a: Any, **k: Any) -> Any:
        state["n"] += 1
        if state["n"] == 1:
            raise OperationalError("deadlock detected")
        return real(*a, **k)

    monkeypatch.setattr(postings, "authorisation", flaky)
    first = Client().post("/payments/webhooks/fake", data=b"{}", content_type="application/json")
    assert first.status_code == 422  # provider will redeliver
    second = Client().post("/payments/webhooks/fake", data=b"{}", content_type="application/json")
    p.refresh_from_db()
    assert p.status == Payment.Status.AUTHORISED, second.json()


def test_zero_cost_cdr_bills() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    driver = DriverFactory(currency="INR")
    cdr = CdrFactory(
        partner=partner, currency="INR", total_cost_excl_vat=Decimal("0"), total_cost_incl_vat=Decimal("0")
    )
    receipt = DriverReceiptFactory(
        cdr=cdr,
        driver=driver,
        currency="INR",
        cpo_cost_excl_vat=Decimal("0"),
        cpo_vat=Decimal("0"),
        fee_excl_vat=Decimal("0"),
        fee_vat=Decimal("0"),
        total_incl_vat=Decimal("0"),
    )
    payments.bill(receipt)  # a free charge: nothing to post, nothing refused
    assert not LedgerEntry.objects.filter(event="charge").exists()


def test_release_operation_is_not_stuck_after_the_webhook_released_it(fake: Fake) -> None:
    p = authorised(DriverFactory(currency="INR"))
    fake.fail_release = True
    with pytest.raises(GatewayError):
        payments.payment_release(p.pk)
    fake.event = None
    payments.webhook_receive(
        WebhookEvent(
            provider="fake",
            event_id="evt_rel",
            type="released",
            provider_type="payment_intent.canceled",
            reference=payments.reference_of(p),
            payment_id="pi_1",
            amount_minor=12000,
            currency="INR",
        )
    )
    fake.fail_release = False
    op = PaymentOperation.objects.get(payment=p, kind="release")
    payments.operation_retry(operation=op)
    op.refresh_from_db()
    assert op.status != PaymentOperation.Status.PENDING  # done: the provider released it itself


def test_zero_capture_releases_the_hold_at_the_provider(fake: Fake) -> None:
    p = authorised(DriverFactory(currency="INR"), billed=0)
    payments.payment_capture(p.pk)
    p.refresh_from_db()
    assert p.status == Payment.Status.RELEASED
    assert [c for c, _ in fake.calls] == ["release"], fake.calls  # the provider is told


def test_a_refund_on_a_payment_that_took_nothing_is_credited_to_the_account(fake: Fake) -> None:
    driver = DriverFactory(currency="INR")
    p = authorised(driver, billed=0)
    payments.payment_capture(p.pk)  # a bill of zero: the hold released
    postings.credit(currency="INR", amount=Decimal("10"), borne_by=accounts.dispute_expense("INR"),
                    reference="dispute:9", key="dispute:9:credit")  # fmt: skip
    payments.refund_due(payment=p, amount=Decimal("10"), reference="dispute:9", driver_id=driver.pk)
    assert not PaymentOperation.objects.filter(payment=p, kind="refund").exists()  # nothing to wait for
    assert bal("refunds:pending") == 0
    assert bal(f"driver:{driver.pk}:receivable") == Decimal("-10")


def test_credit_above_the_charge_payments_capture_is_refunded_in_full(
    fake: Fake, django_capture_on_commit_callbacks: Any
) -> None:
    driver = DriverFactory(currency="INR")
    p = authorised(driver, auth=10000, billed=15000)
    charge_booked(driver, Decimal("150"), "c1")
    with django_capture_on_commit_callbacks(execute=False):
        payments.payment_capture(p.pk)
    rest = Payment.objects.get(purpose="balance")
    payments.webhook_receive(
        WebhookEvent(
            provider="fake",
            event_id="evt_b",
            type="authorised",
            provider_type="x",
            reference=payments.reference_of(rest),
            payment_id="pi_2",
            amount_minor=5000,
            currency="INR",
        )
    )
    payments.payment_capture(rest.pk)
    assert bal(f"driver:{driver.pk}:receivable") == 0
    with django_capture_on_commit_callbacks(execute=True):
        postings.credit(
            currency="INR",
            amount=Decimal("120"),
            borne_by=accounts.cpo_payable("IN*CPA", "INR"),
            reference="dispute:7",
            key="dispute:7:credit",
        )
        payments.refund_due(payment=p, amount=Decimal("120"), reference="dispute:7", driver_id=driver.pk)
    ops = PaymentOperation.objects.filter(kind="refund")
    assert [(o.payment_id, o.amount_minor, o.status) for o in ops] == [(p.pk, 10000, "SUCCEEDED")]
    # No booking ties the two payments here: what the charge's capture can't carry back is credited to the account
    # (spreading over a booking's payments: tests/beckn/test_payments_provider.py).
    assert bal("refunds:pending") == 0
    assert bal(f"driver:{driver.pk}:receivable") == Decimal("-20")


def test_a_refund_run_twice_concurrently_counts_once(fake: Fake) -> None:
    driver = DriverFactory(currency="INR")
    p = authorised(driver, billed=10000)
    payments.payment_capture(p.pk)
    postings.credit(
        currency="INR",
        amount=Decimal("10"),
        borne_by=accounts.dispute_expense("INR"),
        reference="dispute:3",
        key="dispute:3:credit",
    )
    payments.refund_due(payment=p, amount=Decimal("10"), reference="dispute:3", driver_id=driver.pk)
    op = PaymentOperation.objects.get(payment=p, kind="refund")
    PaymentOperation.objects.filter(pk=op.pk).update(status="PENDING")
    inner = {"done": False}
    real_refund = fake.refund

    def slow_refund(**kw: Any) -> GatewayResult:
        if not inner["done"]:  # while this call is in flight, the sweep runs the same operation
            inner["done"] = True
            payments.payment_refund(op.idempotency_key)
        return real_refund(**kw)

    fake.refund = slow_refund  # type: ignore[method-assign]
    PaymentOperation.objects.filter(pk=op.pk).update(status="PENDING")
    p.refresh_from_db()
    Payment.objects.filter(pk=p.pk).update(refunded_minor=0, status="CAPTURED")
    assert not LedgerEntry.objects.filter(idempotency_key=f"{op.idempotency_key}:paid").exists()
    payments.payment_refund(op.idempotency_key)
    p.refresh_from_db()
    assert p.refunded_minor == 1000, p.refunded_minor


def test_carry_over_into_an_already_closed_period_is_refused_or_skips_it() -> None:
    OCT, NOV, DEC = date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    CdrAuditFactory(cdr=CdrFactory(partner=partner, cdr_id="OK-1", end_date_time=at(10)))
    disputed = CdrFactory(partner=partner, cdr_id="D-1", end_date_time=at(20), total_energy=Decimal("30"))
    CdrAuditFactory(cdr=disputed, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("8"))
    DisputeFactory(cdr=disputed)
    CdrAuditFactory(cdr=CdrFactory(partner=partner, cdr_id="OK-NOV", end_date_time=at(5, month=11)))
    (november,) = settlement_compute(partner=partner, period_start=NOV)
    settlement_close(settlement=november, user=finance())  # November closed first (it was clean)
    (october,) = settlement_compute(partner=partner, period_start=OCT)
    settlement_close(settlement=october, user=finance(), carry_over=True)
    disputed.refresh_from_db()
    (nov_again,) = settlement_compute(partner=partner, period_start=NOV)
    dec = settlement_compute(partner=partner, period_start=DEC)
    assert disputed.carried_to == DEC  # past the closed November
    assert (nov_again.state, nov_again.cdr_count) == ("CLOSED", 1)
    assert [s.cdr_count for s in dec] == [1]


def test_credit_without_payment_in_another_currency_nets_out() -> None:
    partner = PartnerFactory(country_code="DE", party_id="CPB")
    driver = DriverFactory(currency="INR")
    original = CdrFactory(partner=partner, cdr_id="E-1", currency="EUR")
    credit = CdrFactory(
        partner=partner,
        cdr_id="E-1-C",
        currency="EUR",
        credit=True,
        credited_cdr=original,
        total_cost_excl_vat=Decimal("-10"),
        total_cost_incl_vat=Decimal("-11.90"),
    )
    receipt = DriverReceiptFactory(
        cdr=credit,
        driver=driver,
        currency="EUR",
        cpo_cost_excl_vat=Decimal("-10"),
        cpo_vat=Decimal("-1.90"),
        fee_excl_vat=Decimal("0"),
        fee_vat=Decimal("0"),
        total_incl_vat=Decimal("-11.90"),
    )
    payments.bill(receipt)
    tb_eur, tb_inr = ledger.trial_balance("EUR"), ledger.trial_balance("INR")
    assert tb_eur.get("refunds:pending", 0) == 0 and tb_inr.get("refunds:pending", 0) == 0, (tb_eur, tb_inr)


def test_a_webhook_with_a_content_length_that_is_not_a_number_is_refused_not_a_500() -> None:
    response = Client().post(
        "/payments/webhooks/stripe", data=b"{}", content_type="application/json", headers={"Content-Length": "x"}
    )
    assert response.status_code in (400, 413)


def test_a_payment_authorised_after_its_booking_was_cancelled_is_released(
    fake: Fake, django_capture_on_commit_callbacks: Any
) -> None:
    from emsp.models import Booking
    from tests.factories import stored_location

    partner = PartnerFactory(country_code="IN", party_id="CPA")
    evse = stored_location(partner).evses.first()
    booking = Booking.objects.create(order_id="ORD-1", evse=evse, connector_id="1", state=Booking.State.CANCELLED)
    driver = DriverFactory(currency="INR")
    p = Payment.objects.create(driver=driver, booking=booking, provider="fake", currency="INR")
    with django_capture_on_commit_callbacks(execute=True):
        payments.webhook_receive(
            WebhookEvent(
                provider="fake", event_id="evt_late", type="authorised", provider_type="payment.authorized",
                reference=payments.reference_of(p), payment_id="pay_9", amount_minor=5000, currency="INR",
            )
        )  # fmt: skip
    p.refresh_from_db()
    assert p.status == Payment.Status.RELEASED
    assert [c for c, _ in fake.calls] == ["release"]
    assert bal("holds:fake") == 0


def test_a_balance_checkout_whose_task_was_lost_is_found_by_the_sweep() -> None:
    """The checkout for the rest of a bill is queued after the capture commits: a worker killed in between, or a
    task that gave up, leaves a `balance` payment nobody asks the driver to pay. The beat finds it."""
    from datetime import timedelta

    from django.utils import timezone

    driver = DriverFactory(currency="INR")
    old = timezone.now() - timedelta(minutes=11)

    def balance_payment(**kwargs: Any) -> Payment:
        fields = {"driver": driver, "provider": "razorpay", "currency": "INR", "purpose": "balance",
                  "billed_minor": 5000, "created_at": old, **kwargs}  # fmt: skip
        return Payment.objects.create(**fields)

    lost = balance_payment()
    balance_payment(created_at=timezone.now())  # its task may still be on its way
    balance_payment(checkout_id="order_1")  # opened
    balance_payment(provider="wallet")  # taken from the wallet, no checkout
    balance_payment(purpose="charge")
    assert lost.status == Payment.Status.PENDING
    assert payments.balance_checkouts_due() == [lost.pk]


def _held(**fields: Any) -> Payment:
    values = {"driver": DriverFactory(currency="INR"), "provider": "razorpay", "currency": "INR",
              "requested_minor": 55593, **fields}  # fmt: skip
    return Payment.objects.create(**values)


def _event(payment: Payment, kind: str, **fields: Any) -> WebhookEvent:
    values = {"provider": "razorpay", "event_id": f"e-{kind}-{fields.get('payment_id', '')}", "type": kind,
              "provider_type": kind.lower(), "reference": payments.reference_of(payment), "currency": "INR",
              **fields}  # fmt: skip
    return WebhookEvent(**values)


def test_a_release_about_another_attempt_at_the_checkout_leaves_the_held_payment_alone() -> None:
    """Razorpay refunds a late-authorised failed attempt on its own (refund.processed, not captured): that is
    not the payment we hold, authorised as pay_1."""
    from billing.payments import gateway as port

    payment = _held()
    assert payments.webhook_receive(_event(payment, port.AUTHORISED, payment_id="pay_1", amount_minor=55593)) == (
        "authorised"
    )
    outcome = payments.webhook_receive(_event(payment, port.RELEASED, payment_id="pay_2", amount_minor=55593))
    assert outcome.startswith("ignored: about pay_2")
    payment.refresh_from_db()
    assert (payment.status, payment.provider_payment_id) == (Payment.Status.AUTHORISED, "pay_1")


def test_an_authorisation_of_another_amount_than_asked_is_not_taken() -> None:
    from billing.payments import gateway as port

    payment = _held()
    outcome = payments.webhook_receive(_event(payment, port.AUTHORISED, payment_id="pay_1", amount_minor=1))
    assert outcome == "ignored: authorised 1, not the 55593 asked for"
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert not LedgerEntry.objects.filter(event="authorisation").exists()


def test_production_takes_no_webhook_signed_with_the_sandboxs_public_secret(settings: Any) -> None:
    settings.PRODUCTION = True
    assert settings.PAYMENT_PROVIDERS["razorpay"]["options"]["webhook_secret"] in settings.PAYSIM_WEBHOOK_SECRETS
    response = Client().post("/payments/webhooks/razorpay", data=b"{}", content_type="application/json")
    assert response.status_code == 503
    assert not payments.ProviderWebhook.objects.exists()


@pytest.mark.parametrize("header", ["X-Razorpay-Signature", "Stripe-Signature"])
def test_a_webhook_with_a_signature_that_is_not_ascii_is_a_400(header: str) -> None:
    provider = "razorpay" if header.startswith("X-Razorpay") else "stripe"
    response = Client().post(
        f"/payments/webhooks/{provider}", data=b"{}", content_type="application/json",
        headers={header: "t=1,v1=\xe9" if provider == "stripe" else "\xe9\xe9", "X-Razorpay-Event-Id": "e"},
    )  # fmt: skip
    assert response.status_code == 400
