"""A provider operation that has finished stays finished, and one the provider refuses ends: the beat's sweep,
which loads its batch and retries it one by one, never reopens an operation its own task finished meanwhile
(a refund paid twice, a capture put back on a captured payment); a capture that took the whole hold books what
was taken and refunds the rest on its own; a balance checkout the provider refuses ends FAILED instead of being
asked again every beat. The provider is the stand-in behind the gateway port (tests/billing/provider_standin.py);
the Razorpay adapter's own part runs through its SDK with HTTP answered at requests' transport."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses
from django.utils import timezone

from billing.models import LedgerAccount, Payment, PaymentOperation
from billing.payments import gateway as port
from billing.payments.gateway import GatewayError, GatewayResult
from billing.payments.stripe_gateway import StripeGateway
from billing.services import accounts, ledger, payments, postings
from tests.billing.payments.recorded import recording
from tests.billing.payments.test_razorpay_gateway import API, PAY, make_gateway
from tests.billing.provider_standin import Fake, authorised, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.factories import DriverFactory
from tests.paysim.conftest import STRIPE_SECRET, pay
from tests.paysim.conftest import paysim as paysim
from tests.paysim.conftest import receiver as receiver
from tests.paysim.conftest import stripe as stripe
from tests.paysim.test_paysim import checkout, payout_rows, reference

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fake")]


def bal(code: str) -> Decimal:
    return ledger.balance(LedgerAccount.objects.get(code=code, currency="INR"))


def calls(fake: Fake, kind: str) -> list[dict[str, Any]]:
    return [kw for name, kw in fake.calls if name == kind]


def aged(operation: PaymentOperation) -> None:
    """Old enough for the sweep (its task looks lost)."""
    PaymentOperation.objects.filter(pk=operation.pk).update(created_at=timezone.now() - timedelta(minutes=11))


def captured_with_credit(fake: Fake, credit: Decimal) -> tuple[Payment, PaymentOperation]:
    """A payment that took a bill of 100.00 INR, and a credit of `credit` to refund on it, queued."""
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, billed=10000)
    charge_booked(driver, Decimal("100"), f"charge-{driver.pk}")
    payments.payment_capture(payment.pk)
    postings.credit(currency="INR", amount=credit, borne_by=accounts.cpo_payable("IN*CPA", "INR"),
                    reference="dispute:1", key="dispute:1:credit")  # fmt: skip
    payments.refund_due(payment=payment, amount=credit, reference="dispute:1", driver_id=driver.pk)
    return payment, PaymentOperation.objects.get(payment=payment, kind=PaymentOperation.Kind.REFUND)


# --- the sweep's stale batch ------------------------------------------------------------------------


def test_the_sweep_does_not_pay_again_a_full_refund_its_task_finished_meanwhile(fake: Fake) -> None:
    payment, refund = captured_with_credit(fake, Decimal("100"))
    aged(refund)
    batch = payments.operations_stuck()  # the sweep's batch, read while the refund was PENDING
    assert [o.pk for o in batch] == [refund.pk]
    payments.payment_refund(refund.idempotency_key)  # the refund's own task retry finishes it meanwhile

    for operation in batch:
        payments.operation_retry(operation=operation)

    payment.refresh_from_db()
    refund.refresh_from_db()
    assert refund.status == PaymentOperation.Status.SUCCEEDED
    assert (payment.status, payment.refunded_minor) == (Payment.Status.REFUNDED, 10000)
    assert len(calls(fake, "refund")) == 1
    assert bal("refunds:pending") == 0  # refunded once, not credited to the account again
    assert bal(f"driver:{payment.driver_id}:receivable") == 0


def test_the_sweep_does_not_refund_a_partial_refund_twice(fake: Fake) -> None:
    payment, refund = captured_with_credit(fake, Decimal("30"))
    aged(refund)
    batch = payments.operations_stuck()
    payments.payment_refund(refund.idempotency_key)

    for operation in batch:
        payments.operation_retry(operation=operation)

    payment.refresh_from_db()
    assert (payment.status, payment.refunded_minor) == (Payment.Status.PARTIALLY_REFUNDED, 3000)
    assert [c["amount_minor"] for c in calls(fake, "refund")] == [3000]
    assert bal("refunds:pending") == 0


def test_the_sweep_does_not_put_back_a_capture_its_task_finished_meanwhile(fake: Fake) -> None:
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, billed=10000)
    charge_booked(driver, Decimal("100"), "charge-1")
    fake.fail_capture = True
    with pytest.raises(GatewayError):
        payments.payment_capture(payment.pk)
    capture = PaymentOperation.objects.get(payment=payment, kind=PaymentOperation.Kind.CAPTURE)
    aged(capture)
    batch = payments.operations_stuck()
    fake.fail_capture = False
    payments.payment_capture(payment.pk)  # the capture task's own retry

    for operation in batch:
        payments.operation_retry(operation=operation)

    capture.refresh_from_db()
    payment.refresh_from_db()
    assert capture.status == PaymentOperation.Status.SUCCEEDED
    assert (payment.status, payment.captured_minor) == (Payment.Status.CAPTURED, 10000)
    assert payments.operations_stuck() == []  # nothing for the next beat
    assert len(calls(fake, "capture")) == 2  # the refused first try, and its retry


def test_a_capture_left_pending_on_a_captured_payment_is_closed_without_a_call(fake: Fake) -> None:
    payment = authorised(DriverFactory(currency="INR"), billed=10000)
    payments.payment_capture(payment.pk)
    capture = PaymentOperation.objects.get(payment=payment, kind=PaymentOperation.Kind.CAPTURE)
    PaymentOperation.objects.filter(pk=capture.pk).update(status=PaymentOperation.Status.PENDING)  # reopened

    payments.payment_capture(payment.pk)

    capture.refresh_from_db()
    assert capture.status == PaymentOperation.Status.SUCCEEDED
    assert len(calls(fake, "capture")) == 1


def test_staff_retry_of_a_failed_refund_runs_it_again(fake: Fake) -> None:
    payment, refund = captured_with_credit(fake, Decimal("30"))
    real = fake.refund

    def refused(**kw: Any) -> GatewayResult:
        fake.calls.append(("refund", kw))
        raise GatewayError("charge_disputed", retryable=False)

    fake.refund = refused  # type: ignore[method-assign]
    payments.payment_refund(refund.idempotency_key)
    refund.refresh_from_db()
    assert refund.status == PaymentOperation.Status.FAILED
    fake.refund = real  # type: ignore[method-assign]

    payments.operation_retry(operation=refund)

    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.status == PaymentOperation.Status.SUCCEEDED
    assert payment.refunded_minor == 3000


def test_the_sweep_does_not_reopen_an_operation_that_failed_since_it_looked(fake: Fake) -> None:
    _, refund = captured_with_credit(fake, Decimal("30"))
    aged(refund)
    batch = payments.operations_stuck()

    def refused(**kw: Any) -> GatewayResult:
        fake.calls.append(("refund", kw))
        raise GatewayError("charge_disputed", retryable=False)

    fake.refund = refused  # type: ignore[method-assign]
    payments.payment_refund(refund.idempotency_key)  # its task meanwhile: refused

    for operation in batch:
        payments.operation_retry(operation=operation)

    refund.refresh_from_db()
    assert refund.status == PaymentOperation.Status.FAILED  # left for staff on the exceptions queue
    assert len(calls(fake, "refund")) == 1


# --- a capture that took the whole hold ---------------------------------------------------------------


def whole_hold_taken(fake: Fake) -> None:
    """The stand-in captures the whole authorisation (as Razorpay does) and says so."""

    def capture(**kw: Any) -> GatewayResult:
        fake.calls.append(("capture", kw))
        return GatewayResult(reference="pay_1", amount_minor=12000, status="captured")

    fake.capture = capture  # type: ignore[method-assign]


def test_a_capture_that_took_the_whole_hold_is_booked_and_the_rest_refunded_on_its_own(fake: Fake) -> None:
    whole_hold_taken(fake)
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, auth=12000, billed=10000)
    charge_booked(driver, Decimal("100"), "charge-1")

    payments.payment_capture(payment.pk)

    payment.refresh_from_db()
    assert (payment.status, payment.captured_minor) == (Payment.Status.CAPTURED, 10000)
    rest = PaymentOperation.objects.get(payment=payment, kind=PaymentOperation.Kind.REFUND)
    assert (rest.amount_minor, rest.status) == (2000, PaymentOperation.Status.PENDING)
    assert rest.idempotency_key == f"{payment.key}:capture:rest"  # the key the adapter used for it
    assert bal("clearing:fake") == Decimal("120")  # what the provider holds of ours
    assert bal("refunds:pending") == Decimal("-20")  # owed back to the driver
    assert bal(f"driver:{driver.pk}:receivable") == 0

    payments.payment_refund(rest.idempotency_key)

    rest.refresh_from_db()
    payment.refresh_from_db()
    assert rest.status == PaymentOperation.Status.SUCCEEDED
    assert [(c["amount_minor"], c["idempotency_key"]) for c in calls(fake, "refund")] == [(2000, rest.idempotency_key)]
    assert (payment.status, payment.refunded_minor) == (Payment.Status.CAPTURED, 0)  # the bill is untouched
    assert bal("clearing:fake") == Decimal("100")
    assert bal("refunds:pending") == 0


def test_a_refused_refund_of_the_rest_leaves_the_capture_booked(fake: Fake) -> None:
    whole_hold_taken(fake)

    def refused(**kw: Any) -> GatewayResult:
        raise GatewayError("The refund amount is invalid", retryable=False)

    fake.refund = refused  # type: ignore[method-assign]
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, auth=12000, billed=10000)
    charge_booked(driver, Decimal("100"), "charge-1")

    payments.payment_capture(payment.pk)
    rest = PaymentOperation.objects.get(payment=payment, kind=PaymentOperation.Kind.REFUND)
    payments.payment_refund(rest.idempotency_key)

    payment.refresh_from_db()
    rest.refresh_from_db()
    assert (payment.status, payment.captured_minor) == (Payment.Status.CAPTURED, 10000)
    assert rest.status == PaymentOperation.Status.FAILED  # on the exceptions queue
    assert bal("refunds:pending") == Decimal("-20")  # still owed to the driver
    assert bal(f"driver:{driver.pk}:receivable") == 0  # the bill is paid


def test_a_credit_while_the_rest_is_being_refunded_is_refunded_in_full(fake: Fake) -> None:
    whole_hold_taken(fake)
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, auth=12000, billed=10000)
    payments.payment_capture(payment.pk)  # the rest's refund still PENDING
    postings.credit(currency="INR", amount=Decimal("100"), borne_by=accounts.dispute_expense("INR"),
                    reference="dispute:2", key="dispute:2:credit")  # fmt: skip

    payments.refund_due(payment=payment, amount=Decimal("100"), reference="dispute:2", driver_id=driver.pk)

    credit = PaymentOperation.objects.get(idempotency_key__endswith="|dispute:2:refund")
    assert credit.amount_minor == 10000  # the bill, not the bill less the rest of the hold


@responses.activate
def test_razorpay_answers_a_capture_whose_rest_it_could_not_refund_with_what_it_took() -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_authorized"))
    responses.post(f"{API}/payments/{PAY}/capture", json=recording("razorpay/payment_captured"))
    responses.get(f"{API}/payments/{PAY}/refunds", json=recording("razorpay/refunds_none"))
    responses.post(f"{API}/payments/{PAY}/refund", status=400, json=recording("razorpay/error_bad_request"))

    result = make_gateway().capture(
        payment_id=PAY, amount_minor=30000, currency="INR", idempotency_key="PAY-000124:capture"
    )

    assert result == port.GatewayResult(reference=PAY, amount_minor=50000, status="captured")


@responses.activate
def test_razorpay_refunds_the_rest_of_a_capture_as_capture_would_have() -> None:
    responses.get(f"{API}/payments/{PAY}/refunds", json=recording("razorpay/refunds_none"))
    responses.post(f"{API}/payments/{PAY}/refund", json=recording("razorpay/refund_capture_rest"))

    make_gateway().refund(payment_id=PAY, amount_minor=20000, currency="INR", idempotency_key="PAY-000124:capture:rest")

    assert json.loads(responses.calls[1].request.body)["notes"]["purpose"] == "capture_rest"


# --- a balance checkout the provider refuses --------------------------------------------------------


def balance_payment() -> Payment:
    return Payment.objects.create(
        driver=DriverFactory(currency="INR"),
        provider="fake",
        currency="INR",
        purpose="balance",
        billed_minor=5000,
        created_at=timezone.now() - timedelta(minutes=11),
    )


def test_a_balance_checkout_the_provider_refuses_ends_failed(fake: Fake) -> None:
    def refused(**kw: Any) -> port.Checkout:
        fake.calls.append(("checkout", kw))
        raise GatewayError("Amount exceeds maximum amount allowed", retryable=False, code="amount_too_large")

    fake.checkout = refused  # type: ignore[attr-defined]
    payment = balance_payment()

    payments.balance_checkout(payment.pk)  # no error for the task to retry

    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED
    assert "Amount exceeds maximum amount allowed" in payment.failure
    assert payments.balance_checkouts_due() == []  # not asked again every beat
    payments.balance_checkout(payment.pk)
    assert len(calls(fake, "checkout")) == 1


def test_a_balance_checkout_the_provider_did_not_answer_is_retried(fake: Fake) -> None:
    def unreachable(**kw: Any) -> port.Checkout:
        raise GatewayError("connection reset", retryable=True)

    fake.checkout = unreachable  # type: ignore[attr-defined]
    payment = balance_payment()

    with pytest.raises(GatewayError):
        payments.balance_checkout(payment.pk)

    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert payments.balance_checkouts_due() == [payment.pk]


# --- Stripe replays a 5xx for the key ---------------------------------------------------------------


def fail_next(paysim: str, path: str, when: str = "after") -> None:
    """paysim answers the next POST to `path` with a 500: "after" doing its work (the answer is lost)."""
    answer = requests.post(f"{paysim}/paysim/fail-next", json={"path": path, "when": when}, timeout=10)
    assert answer.status_code == 200, answer.text


def captured_at_stripe(paysim: str, stripe: StripeGateway, amount: int = 5000) -> str:
    ref = reference()
    page = checkout(stripe, amount, "EUR", ref)
    payment_id = pay(paysim, page.checkout_id)["payment_id"]
    stripe.capture(payment_id=payment_id, amount_minor=amount, currency="EUR", idempotency_key=f"cap:{ref}")
    return payment_id


def refunds_at_stripe(paysim: str, payment_id: str) -> list[str]:
    return [r["gross"] for r in payout_rows(paysim, "stripe") if r["payment_intent_id"] == payment_id][1:]


def test_paysim_replays_a_stripe_500_for_its_key_as_stripe_does(paysim: str, stripe: StripeGateway) -> None:
    payment_id = captured_at_stripe(paysim, stripe)
    fail_next(paysim, "/stripe/v1/refunds")
    with pytest.raises(GatewayError) as first:
        stripe.refund(payment_id=payment_id, amount_minor=1000, currency="EUR", idempotency_key="re-500")
    assert first.value.retryable

    with pytest.raises(GatewayError):  # the same key: the same 500, though the refund was made
        stripe.refund(payment_id=payment_id, amount_minor=1000, currency="EUR", idempotency_key="re-500")
    assert refunds_at_stripe(paysim, payment_id) == ["-10.00"]


def test_a_repeated_stripe_refund_finds_the_refund_its_500_hid(paysim: str, stripe: StripeGateway) -> None:
    payment_id = captured_at_stripe(paysim, stripe)
    fail_next(paysim, "/stripe/v1/refunds")
    with pytest.raises(GatewayError):
        stripe.refund(payment_id=payment_id, amount_minor=1000, currency="EUR", idempotency_key="re-found")

    again = stripe.refund(
        payment_id=payment_id, amount_minor=1000, currency="EUR", idempotency_key="re-found", repeated=True
    )

    assert (again.amount_minor, again.status) == (1000, "succeeded")
    assert refunds_at_stripe(paysim, payment_id) == ["-10.00"]  # refunded once


def test_a_repeated_stripe_refund_that_was_not_made_is_not_taken_as_made(paysim: str, stripe: StripeGateway) -> None:
    payment_id = captured_at_stripe(paysim, stripe)
    fail_next(paysim, "/stripe/v1/refunds", when="before")
    with pytest.raises(GatewayError):
        stripe.refund(payment_id=payment_id, amount_minor=1000, currency="EUR", idempotency_key="re-none")

    with pytest.raises(GatewayError) as again:  # nothing found; the key still answers its 500: try again later
        stripe.refund(
            payment_id=payment_id, amount_minor=1000, currency="EUR", idempotency_key="re-none", repeated=True
        )

    assert again.value.retryable
    assert refunds_at_stripe(paysim, payment_id) == []


def test_a_repeated_stripe_capture_finds_the_capture_its_500_hid(paysim: str, stripe: StripeGateway) -> None:
    ref = reference()
    payment_id = pay(paysim, checkout(stripe, 5000, "EUR", ref).checkout_id)["payment_id"]
    fail_next(paysim, f"/stripe/v1/payment_intents/{payment_id}/capture")
    with pytest.raises(GatewayError):
        stripe.capture(payment_id=payment_id, amount_minor=3000, currency="EUR", idempotency_key=f"cap:{ref}")

    again = stripe.capture(
        payment_id=payment_id, amount_minor=3000, currency="EUR", idempotency_key=f"cap:{ref}", repeated=True
    )

    assert (again.amount_minor, again.status) == (3000, "succeeded")


def test_a_repeated_stripe_release_finds_the_cancel_its_500_hid(paysim: str, stripe: StripeGateway) -> None:
    ref = reference()
    payment_id = pay(paysim, checkout(stripe, 5000, "EUR", ref).checkout_id)["payment_id"]
    fail_next(paysim, f"/stripe/v1/payment_intents/{payment_id}/cancel")
    with pytest.raises(GatewayError):
        stripe.release(payment_id=payment_id, idempotency_key=f"rel:{ref}")

    again = stripe.release(payment_id=payment_id, idempotency_key=f"rel:{ref}", repeated=True)

    assert again.status == "canceled"


def test_a_refund_whose_answer_was_a_stripe_500_is_booked_once_on_its_retry(
    paysim: str, stripe: StripeGateway, settings: Any
) -> None:
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["stripe"]["options"] |= {"api_base": f"{paysim}/stripe", "webhook_secret": STRIPE_SECRET}
    settings.PAYMENT_PROVIDERS = providers
    payment_id = captured_at_stripe(paysim, stripe)
    payment = Payment.objects.create(
        driver=DriverFactory(currency="EUR"), provider="stripe", currency="EUR", status=Payment.Status.CAPTURED,
        authorised_minor=5000, billed_minor=5000, captured_minor=5000, provider_payment_id=payment_id,
    )  # fmt: skip
    payments.refund_due(payment=payment, amount=Decimal("10"), reference="dispute:5", driver_id=payment.driver_id)
    refund = PaymentOperation.objects.get(payment=payment, kind=PaymentOperation.Kind.REFUND)
    fail_next(paysim, "/stripe/v1/refunds")
    with pytest.raises(GatewayError):
        payments.payment_refund(refund.idempotency_key)  # the task's first try: a 500 (the refund was made)

    payments.payment_refund(refund.idempotency_key)  # its retry

    refund.refresh_from_db()
    payment.refresh_from_db()
    assert refund.status == PaymentOperation.Status.SUCCEEDED
    assert (payment.status, payment.refunded_minor) == (Payment.Status.PARTIALLY_REFUNDED, 1000)
    assert refunds_at_stripe(paysim, payment_id) == ["-10.00"]


def test_a_try_killed_during_the_provider_call_still_counts_so_the_next_looks_first(fake: Fake) -> None:
    """A worker killed while the provider answers rolls its transaction back; the try was counted before the call,
    so the next one is sent as a repeat (the adapter then looks at the provider's records before asking again)."""
    driver = DriverFactory(currency="INR")
    payment = authorised(driver, billed=10000)
    charge_booked(driver, Decimal("100"), "charge-killed")

    def killed(**kw: Any) -> Any:
        fake.calls.append(("capture", kw))
        raise SystemExit("kill -9 while the provider answered")  # nothing of the transaction commits

    fake.capture = killed  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        payments.payment_capture(payment.pk)
    del fake.capture  # the provider answers again
    payments.payment_capture(payment.pk)
    assert [kw["repeated"] for _, kw in fake.calls] == [False, True]
    operation = PaymentOperation.objects.get(payment=payment, kind=PaymentOperation.Kind.CAPTURE)
    assert operation.status == PaymentOperation.Status.SUCCEEDED
