"""The payment area after a third review: (1) a refund Razorpay made to release a payment its account captured
itself, failed later, is owed to the driver (it had been recorded nowhere: the money stayed in our balance); (2) a
refund failure reported while its refund's operation is still PENDING (its answer lost) is not thrown away, and a
retry that finds its refund failed books no refund paid: the amount goes to the driver's account (Stripe's
repeated look-up returns the failed refund, Razorpay's capture counts a failed refund of the rest as not made);
(3) a credit decided before a capture that finds the hold lapsed is taken off the bill asked again; (4) an init
handing the app an earlier hold keeps the sweep from releasing it, and one that waited for the sweep's release
opens a new payment (PostgreSQL); (5) a signed webhook with an unpaired surrogate is stored (U+FFFD) or refused
with a 400, never a 422 on every delivery."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from billing.models import LedgerEntry, Payment, PaymentOperation, ProviderWebhook, Quote
from billing.payments import gateway as port
from billing.payments.gateway import GatewayError, GatewayResult, WebhookEvent
from billing.payments.razorpay_gateway import RazorpayGateway
from billing.payments.stripe_gateway import StripeGateway
from billing.services import accounts, ledger, payments, postings
from emsp.models import Driver, Evse
from tests.beckn.conftest import _fresh_registry_cache, network  # noqa: F401 (the network's fixtures)
from tests.billing.payments.recorded import recording
from tests.billing.payments.test_review_fixes_2 import (
    PAY,
    PI,
    RAZORPAY_API,
    RAZORPAY_SECRET,
    REFUND_ID,
    STRIPE_API,
    STRIPE_SECRET,
    _until,
    balance,
    captured_at,
    post_signed,
    razorpay_gateway,
    refund_event,
    stripe_event,
    stripe_gateway,
)
from tests.billing.provider_standin import Fake, authorised, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.billing.test_cdr_booking_links import pages_at_the_provider
from tests.billing.test_settlement_review_fixes import _run, needs_postgres
from tests.factories import DriverFactory


def event(kind: str, payment: Payment, *, event_id: str, amount: int, refund_id: str = "", refund_key: str = "",
          provider_type: str = "refund.failed") -> WebhookEvent:  # fmt: skip
    """The stand-in provider's event `kind` about `payment` (a refund's: its id and our key)."""
    return WebhookEvent(
        provider="fake", event_id=event_id, type=kind, provider_type=provider_type,
        reference=payments.reference_of(payment), payment_id=payment.provider_payment_id, amount_minor=amount,
        currency=payment.currency, refund_id=refund_id, refund_key=refund_key,
    )  # fmt: skip


def receivable(driver_id: int | None) -> Decimal:
    return balance(f"driver:{driver_id}:receivable")


def assert_books_balance() -> None:
    assert balance("refunds:pending") == 0
    assert sum(ledger.trial_balance("INR").values()) == 0


def deliver(fake: Fake, said: WebhookEvent) -> Any:
    """`said` through our webhook endpoint, as the stand-in provider delivers it (a 500 answered, not raised)."""
    fake.event = said
    client = Client(raise_request_exception=False)
    return client.post("/payments/webhooks/fake", data=b"{}", content_type="application/json")


# --- 1. a refund made by a release, failed later -------------------------------------------------------------------


def released_by_a_refund(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> Payment:
    """A hold of 120.00 released at a provider whose account had captured it (Razorpay auto-capturing): its
    release() refunded it in full (key `<payment key>:release`)."""
    held = authorised(DriverFactory(currency="INR"), auth=12000)

    def release(**kw: Any) -> GatewayResult:
        fake.calls.append(("release", kw))
        return GatewayResult(reference="rfnd_rel", amount_minor=12000, status="refunded")

    monkeypatch.setattr(fake, "release", release)
    payments._operation(held, "release", 12000, f"{held.key}:release")
    payments.payment_release(held.pk)
    held.refresh_from_db()
    assert held.status == Payment.Status.RELEASED
    assert balance("clearing:fake") == 0 and balance("holds:fake") == 0  # booked: the hold released, nothing paid
    return held


@pytest.mark.django_db
@pytest.mark.parametrize("named_by", ["id", "key"])
def test_a_failed_refund_made_by_a_release_is_owed_to_the_driver_once(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, named_by: str
) -> None:
    held = released_by_a_refund(fake, monkeypatch)
    ids = {"refund_id": "rfnd_rel"} if named_by == "id" else {"refund_key": f"{held.key}:release"}

    said = payments.webhook_receive(event(port.REFUND_FAILED, held, event_id="evt_rf", amount=12000, **ids))

    assert said == "refund failed: 120.00 credited to the driver's account"
    assert receivable(held.driver_id) == Decimal("-120.00")  # owed to the driver, on their account
    assert balance("clearing:fake") == Decimal("120.00")  # the money came back to our balance there
    assert_books_balance()
    held.refresh_from_db()
    assert held.status == Payment.Status.RELEASED
    assert "failed at fake (the release of a payment fake had captured)" in held.failure
    entries = LedgerEntry.objects.count()
    again = payments.webhook_receive(event(port.REFUND_FAILED, held, event_id="evt_rf_2", amount=12000, **ids))
    assert again == "refund failed: booked before"
    assert LedgerEntry.objects.count() == entries


@pytest.mark.django_db
def test_a_release_refund_failing_before_its_release_is_booked_waits_for_the_redelivery(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release's answer was lost (it refunded the payment all the same), the refund failed meanwhile: the
    event is refused (its row not kept) until the release is booked, then applied."""
    held = authorised(DriverFactory(currency="INR"), auth=12000)
    fake.fail_release = True
    payments._operation(held, "release", 12000, f"{held.key}:release")
    with pytest.raises(GatewayError):
        payments.payment_release(held.pk)
    failed = event(port.REFUND_FAILED, held, event_id="evt_rf", amount=12000, refund_id="rfnd_rel",
                   refund_key=f"{held.key}:release")  # fmt: skip

    answer = deliver(fake, failed)

    assert answer.status_code == 409, answer.content
    assert not ProviderWebhook.objects.exists()  # redelivered, it is applied
    assert receivable(held.driver_id) == 0

    monkeypatch.setattr(fake, "release", lambda **kw: GatewayResult(reference="rfnd_rel", amount_minor=12000,
                                                                       status="refunded"))  # fmt: skip
    payments.payment_release(held.pk)
    answer = deliver(fake, failed)

    assert answer.status_code == 200, answer.content
    assert answer.json()["outcome"] == "refund failed: 120.00 credited to the driver's account"
    assert receivable(held.driver_id) == Decimal("-120.00")
    assert_books_balance()


# --- 2. a refund failure reported while its operation is PENDING ---------------------------------------------------


def captured_charge(fake: Fake, *, took: int | None = None) -> Payment:
    """A charge at the stand-in: a hold of 555.93, a bill of 463.27 captured (the provider took `took`, if it
    could only take the whole hold and not refund the rest)."""
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=55593, billed=46327)
    charge_booked(driver, Decimal("463.27"), f"cdr:{charge.pk}")
    if took is not None:

        def whole(**kw: Any) -> GatewayResult:
            fake.calls.append(("capture", kw))
            return GatewayResult(reference="cap", amount_minor=took, status="captured")

        fake.capture = whole  # type: ignore[method-assign]
    payments.payment_capture(charge.pk)
    charge.refresh_from_db()
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 46327)
    return charge


def credit_decided(charge: Payment, amount: Decimal, reference: str) -> str:
    """A credit of `amount` owed to the charge's driver, refunded at the provider: its refund operation's key."""
    postings.credit(currency="INR", amount=amount, borne_by=accounts.cpo_payable("IN*CPA", "INR"),
                    reference=reference, key=f"{reference}:credit")  # fmt: skip
    payments.refund_due(payment=charge, amount=amount, reference=reference, driver_id=charge.driver_id)
    return f"{charge.key}|{reference}:refund"


def refunds_answering(fake: Fake, monkeypatch: pytest.MonkeyPatch, *answers: GatewayResult | GatewayError) -> None:
    """The stand-in's refund answers these, one a call (an error raised)."""
    left = list(answers)

    def refund(**kw: Any) -> GatewayResult:
        fake.calls.append(("refund", kw))
        answer = left.pop(0)
        if isinstance(answer, GatewayError):
            raise answer
        return answer

    monkeypatch.setattr(fake, "refund", refund)


TIMEOUT = GatewayError("read timed out (the provider made the refund)", retryable=True)


@pytest.mark.django_db
def test_a_refund_failure_reported_while_its_refund_is_pending_is_credited_to_the_account_once(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    charge = captured_charge(fake)
    key = credit_decided(charge, Decimal("100.00"), "dispute:7")
    refunds_answering(fake, monkeypatch, TIMEOUT, GatewayResult(reference="rf_1", amount_minor=10000, status="failed"))
    with pytest.raises(GatewayError):
        payments.payment_refund(key)
    assert PaymentOperation.objects.get(idempotency_key=key).status == PaymentOperation.Status.PENDING

    said = payments.webhook_receive(
        event(port.REFUND_FAILED, charge, event_id="evt_rf", amount=10000, refund_id="rf_1", refund_key=key)
    )

    assert said == "refund failed: 100.00 credited to the driver's account"
    refund = PaymentOperation.objects.get(idempotency_key=key)
    assert (refund.status, refund.provider_reference) == (PaymentOperation.Status.SUCCEEDED, "rf_1")
    assert "failed at fake" in refund.error and "credited to the driver's account" in refund.error
    assert receivable(charge.driver_id) == Decimal("-100.00")
    assert balance("clearing:fake") == Decimal("463.27")  # nothing went back to the driver's card
    assert_books_balance()

    # The task's retry, the sweep's, and the provider's other event about it: nothing more.
    payments.payment_refund(key)
    payments.operation_retry(operation=refund)
    again = payments.webhook_receive(
        event(port.REFUND_FAILED, charge, event_id="evt_rf_2", amount=10000, refund_id="rf_1", refund_key=key)
    )
    assert again == "refund failed: booked before"
    assert [name for name, _ in fake.calls].count("refund") == 1
    assert not LedgerEntry.objects.filter(idempotency_key=f"{key}:paid").exists()
    assert receivable(charge.driver_id) == Decimal("-100.00")
    charge.refresh_from_db()
    assert (charge.status, charge.refunded_minor) == (Payment.Status.CAPTURED, 0)


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_a_refund_that_comes_back_failed_is_no_refund_made(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """The retry of a refund whose answer was lost finds the refund made with its key, failed since: booked as
    paid, the driver had got nothing and been owed nothing."""
    charge = captured_charge(fake)
    key = credit_decided(charge, Decimal("100.00"), "dispute:7")
    refunds_answering(fake, monkeypatch, TIMEOUT, GatewayResult(reference="rf_1", amount_minor=10000, status=status))
    with pytest.raises(GatewayError):
        payments.payment_refund(key)

    payments.payment_refund(key)

    refund = PaymentOperation.objects.get(idempotency_key=key)
    assert (refund.status, refund.provider_reference) == (PaymentOperation.Status.SUCCEEDED, "rf_1")
    assert f"rf_1 of {payments.reference_of(charge)} {status} at fake" in refund.error
    assert not LedgerEntry.objects.filter(idempotency_key=f"{key}:paid").exists()
    assert receivable(charge.driver_id) == Decimal("-100.00")
    assert balance("clearing:fake") == Decimal("463.27")
    assert_books_balance()
    charge.refresh_from_db()
    assert (charge.status, charge.refunded_minor) == (Payment.Status.CAPTURED, 0)
    assert "credited to the driver's account" in charge.failure
    # Its failure event after it: booked before.
    said = payments.webhook_receive(
        event(port.REFUND_FAILED, charge, event_id="evt_rf", amount=10000, refund_id="rf_1", refund_key=key)
    )
    assert said == "refund failed: booked before"
    assert receivable(charge.driver_id) == Decimal("-100.00")


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_refund_failure_while_its_refund_is_being_run_is_refused_for_the_redelivery(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of the refund holds its operation (its provider call under way): the event is answered 409, its row
    not kept, and its redelivery, after the run, applies it."""
    monkeypatch.setattr(payments, "run_after_commit", lambda task, *args: None)
    charge = captured_charge(fake)
    key = credit_decided(charge, Decimal("100.00"), "dispute:7")
    refunds_answering(fake, monkeypatch, TIMEOUT)
    with pytest.raises(GatewayError):
        payments.payment_refund(key)
    held, done = threading.Event(), threading.Event()

    def run_holding_the_operation() -> None:
        with transaction.atomic():
            list(PaymentOperation.objects.select_for_update().filter(idempotency_key=key))
            held.set()
            done.wait(10)

    thread, out = _run(run_holding_the_operation)
    assert held.wait(10)
    failed = event(port.REFUND_FAILED, charge, event_id="evt_rf", amount=10000, refund_id="rf_1", refund_key=key)
    try:
        answer = deliver(fake, failed)
    finally:
        done.set()
        thread.join(10)
    assert "error" not in out, out

    assert answer.status_code == 409, answer.content
    assert not ProviderWebhook.objects.exists()
    assert PaymentOperation.objects.get(idempotency_key=key).status == PaymentOperation.Status.PENDING
    answer = deliver(fake, failed)
    assert answer.json()["outcome"] == "refund failed: 100.00 credited to the driver's account"
    assert receivable(charge.driver_id) == Decimal("-100.00")
    assert_books_balance()
    connection.close()


@pytest.mark.django_db
@pytest.mark.parametrize("reported", ["before the retry", "after the retry"])
def test_a_failed_refund_of_the_rest_a_capture_took_is_credited_to_the_account(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, reported: str
) -> None:
    """The provider took the whole hold (555.93) for a bill of 463.27 and could not refund the rest in the same
    call: its own refund operation (`<capture key>:rest`) refunds the 92.66, its answer lost, the refund failed."""
    charge = captured_charge(fake, took=55593)
    key = f"{charge.key}{payments.CAPTURE_REST_SUFFIX}"
    refunds_answering(
        fake, monkeypatch, TIMEOUT, GatewayResult(reference="rf_rest", amount_minor=9266, status="failed")
    )
    with pytest.raises(GatewayError):
        payments.payment_refund(key)
    failed = event(port.REFUND_FAILED, charge, event_id="evt_rf", amount=9266, refund_id="rf_rest", refund_key=key)

    if reported == "before the retry":
        said = payments.webhook_receive(failed)
        assert said == "refund failed: 92.66 credited to the driver's account"
        payments.payment_refund(key)
    else:
        payments.payment_refund(key)  # the retry finds the refund failed: nothing booked paid
        assert receivable(charge.driver_id) == Decimal("-92.66")
        assert not LedgerEntry.objects.filter(idempotency_key=f"{key}:paid").exists()
        assert payments.webhook_receive(failed) == "refund failed: booked before"

    rest = PaymentOperation.objects.get(idempotency_key=key)
    assert rest.status == PaymentOperation.Status.SUCCEEDED and "credited to the driver's account" in rest.error
    assert not LedgerEntry.objects.filter(idempotency_key=f"{key}:paid").exists()
    assert receivable(charge.driver_id) == Decimal("-92.66")
    assert balance("clearing:fake") == Decimal("555.93")  # the whole hold is with us
    assert_books_balance()
    charge.refresh_from_db()
    assert (charge.captured_minor, charge.refunded_minor) == (46327, 0)


@pytest.mark.django_db
def test_a_failed_refund_of_the_rest_reported_before_its_capture_is_booked_waits_for_the_redelivery(
    fake: Fake,
) -> None:
    """The capture's answer was lost after the provider captured and refunded the rest within it; the refund of
    the rest failed before the capture's retry: refused (no row kept) until the capture is booked, then owed to
    the driver."""
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=55593, billed=46327)
    charge_booked(driver, Decimal("463.27"), f"cdr:{charge.pk}")
    fake.fail_capture = True
    with pytest.raises(GatewayError):
        payments.payment_capture(charge.pk)
    failed = event(port.REFUND_FAILED, charge, event_id="evt_rf", amount=9266, refund_id="rf_rest",
                   refund_key=f"{charge.key}:capture:rest")  # fmt: skip

    answer = deliver(fake, failed)

    assert answer.status_code == 409, answer.content
    assert not ProviderWebhook.objects.exists()
    fake.fail_capture = False
    payments.payment_capture(charge.pk)
    answer = deliver(fake, failed)
    assert answer.json()["outcome"] == "refund failed: 92.66 credited to the driver's account"
    assert receivable(driver.pk) == Decimal("-92.66")
    assert balance("clearing:fake") == Decimal("555.93")
    assert_books_balance()


# The adapters' look-ups on a retry


@responses.activate
def test_a_repeated_razorpay_capture_whose_refund_of_the_rest_failed_says_it_took_the_whole_hold() -> None:
    responses.get(f"{RAZORPAY_API}/payments/{PAY}", json=recording("razorpay/payment_captured"))
    refunds = recording("razorpay/refunds_capture_rest")
    refunds["items"][0]["status"] = "failed"
    responses.get(f"{RAZORPAY_API}/payments/{PAY}/refunds", json=refunds)

    result = razorpay_gateway().capture(
        payment_id=PAY, amount_minor=30000, currency="INR", idempotency_key="capture:PAY-000124", repeated=True
    )

    assert result == GatewayResult(reference=PAY, amount_minor=50000, status="captured")  # the rest is still owed
    assert [c.request.method for c in responses.calls] == ["GET", "GET"]  # nothing captured or refunded again


def stripe_refund(key: str, status: str, refund_id: str = "re_3PgafyB7WZ01zgkW0qFailed1") -> dict[str, Any]:
    return {
        **recording("stripe/refund_succeeded"),
        "id": refund_id,
        "status": status,
        "metadata": {"idempotency_key": key},
    }


@responses.activate
@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_a_repeated_stripe_refund_finds_its_refund_failed_and_makes_no_other(status: str) -> None:
    """Passed over, the refund was asked again under its key: Stripe replays its first answer (the refund as
    made) for 24 h, and makes a second refund after."""
    listed = {"object": "list", "url": "/v1/refunds", "has_more": False,
              "data": [stripe_refund("other", "succeeded", "re_other"), stripe_refund("k:refund", status)]}  # fmt: skip
    responses.get(f"{STRIPE_API}/v1/refunds", json=listed)

    result = stripe_gateway().refund(
        payment_id=PI, amount_minor=1000, currency="EUR", idempotency_key="k:refund", repeated=True
    )

    assert result == GatewayResult(reference="re_3PgafyB7WZ01zgkW0qFailed1", amount_minor=1000, status=status)
    assert [c.request.method for c in responses.calls] == ["GET"]


@responses.activate
def test_a_repeated_stripe_refund_prefers_the_refund_of_its_key_that_went_through() -> None:
    made = [stripe_refund("k:refund", "failed"), stripe_refund("k:refund", "succeeded", "re_made")]
    listed = {"object": "list", "url": "/v1/refunds", "has_more": False, "data": made}
    responses.get(f"{STRIPE_API}/v1/refunds", json=listed)

    result = stripe_gateway().refund(
        payment_id=PI, amount_minor=1000, currency="EUR", idempotency_key="k:refund", repeated=True
    )

    assert (result.reference, result.status) == ("re_made", "succeeded")


# The reviewer's journey through the real adapters: the refund call times out (the provider made it), the refund
# fails, refund.failed comes, the retry looks the refund up.


class StripeRefunding(StripeGateway):
    """Stripe's adapter, its capture answered; its refunds and look-ups over HTTP (answered by `responses`)."""

    def capture(self, **kw: Any) -> GatewayResult:
        return GatewayResult(reference=kw["payment_id"], amount_minor=kw["amount_minor"], status="succeeded")


class RazorpayRefunding(RazorpayGateway):
    """Razorpay's adapter, its capture answered; its refunds and look-ups over HTTP (answered by `responses`)."""

    def capture(self, **kw: Any) -> GatewayResult:
        return GatewayResult(reference=kw["payment_id"], amount_minor=kw["amount_minor"], status="captured")


@pytest.fixture
def refunding_providers(settings: Any) -> None:
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["stripe"] = {
        "adapter": f"{__name__}.StripeRefunding",
        "options": {"api_key": "sk_test_key", "webhook_secret": STRIPE_SECRET, "api_base": STRIPE_API},
    }
    providers["razorpay"] = {
        "adapter": f"{__name__}.RazorpayRefunding",
        "options": {"key_id": "rzp_test_key", "key_secret": "key_secret", "webhook_secret": RAZORPAY_SECRET,
                    "api_base": RAZORPAY_API},
    }  # fmt: skip
    settings.PAYMENT_PROVIDERS = providers


def refund_times_out(provider: str) -> None:
    """The provider's refund endpoint, the request timing out (the refund made all the same); no refund listed."""
    if provider == "stripe":
        responses.get(f"{STRIPE_API}/v1/refunds", json={"object": "list", "url": "/v1/refunds", "has_more": False,
                                                         "data": []})  # fmt: skip
        responses.post(f"{STRIPE_API}/v1/refunds", body=requests.ConnectionError("read timed out"))
    else:
        responses.get(f"{RAZORPAY_API}/payments/{PAY}/refunds", json={"entity": "collection", "count": 0, "items": []})
        responses.post(f"{RAZORPAY_API}/payments/{PAY}/refund", body=requests.Timeout("read timed out"))


def refund_listed_failed(provider: str, key: str) -> None:
    """The provider's records now: the refund made with our key, failed."""
    if provider == "stripe":
        made = {**stripe_refund(key, "failed", REFUND_ID["stripe"]), "amount": 10000, "currency": "inr",
                "payment_intent": PI}  # fmt: skip
        responses.replace(responses.GET, f"{STRIPE_API}/v1/refunds",
                          json={"object": "list", "url": "/v1/refunds", "has_more": False, "data": [made]})  # fmt: skip
    else:
        made = {**recording("razorpay/refund_processed"), "id": REFUND_ID["razorpay"], "amount": 10000,
                "payment_id": PAY, "status": "failed",
                "notes": {"idempotency_key": key, "purpose": "refund"}}  # fmt: skip
        responses.replace(responses.GET, f"{RAZORPAY_API}/payments/{PAY}/refunds",
                          json={"entity": "collection", "count": 1, "items": [made]})  # fmt: skip


@pytest.mark.django_db
@pytest.mark.usefixtures("refunding_providers")
@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
@pytest.mark.parametrize("first", ["webhook", "retry"])
@responses.activate
def test_a_refund_whose_answer_was_lost_and_that_failed_is_credited_to_the_drivers_account(
    provider: str, first: str
) -> None:
    charge = captured_at(provider)
    key = credit_decided(charge, Decimal("100.00"), "dispute:7")
    refund_times_out(provider)
    with pytest.raises(GatewayError) as lost:
        payments.payment_refund(key)
    assert lost.value.retryable
    refund_listed_failed(provider, key)
    failed = refund_event(provider, charge, name="refund.failed", amount=10000, key=key)

    if first == "webhook":
        answer = post_signed(provider, failed)
        assert answer.json()["outcome"] == "refund failed: 100.00 credited to the driver's account", answer.content
        payments.payment_refund(key)
    else:
        payments.payment_refund(key)  # the retry finds the refund failed
        assert receivable(charge.driver_id) == Decimal("-100.00")
        answer = post_signed(provider, failed)
        assert answer.json()["outcome"] == "refund failed: booked before", answer.content

    refund = PaymentOperation.objects.get(idempotency_key=key)
    assert (refund.status, refund.provider_reference) == (PaymentOperation.Status.SUCCEEDED, REFUND_ID[provider])
    assert not LedgerEntry.objects.filter(idempotency_key=f"{key}:paid").exists()
    assert receivable(charge.driver_id) == Decimal("-100.00")
    assert balance(f"clearing:{provider}") == Decimal("463.27")
    assert_books_balance()
    assert [c.request.method for c in responses.calls].count("POST") == 1  # one refund asked for, ever


# --- 3. a credit decided before a capture that finds the hold lapsed -----------------------------------------------


def lapsing(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    def lapsed(**kw: Any) -> GatewayResult:
        fake.calls.append(("capture", kw))
        raise GatewayError("razorpay capture: pi_1 was refunded by Razorpay uncaptured", code=port.LAPSED)

    monkeypatch.setattr(fake, "capture", lapsed)


@pytest.mark.django_db
@pytest.mark.parametrize(("credit", "asked"), [(Decimal("100.00"), 36327), (Decimal("463.27"), None)])
def test_a_credit_decided_before_a_capture_that_finds_the_hold_lapsed_is_not_asked_again(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, credit: Decimal, asked: int | None
) -> None:
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=55593, billed=46327)
    charge_booked(driver, Decimal("463.27"), "cdr:1")
    key = credit_decided(charge, credit, "cdr:2")  # the credit CDR came before the capture ran: its refund waits
    payments.payment_refund(key)
    assert PaymentOperation.objects.get(idempotency_key=key).status == PaymentOperation.Status.PENDING
    lapsing(fake, monkeypatch)

    payments.payment_capture(charge.pk)

    pages = Payment.objects.filter(purpose="balance")
    assert [p.billed_minor for p in pages] == ([asked] if asked else [])  # the bill less the credit
    owed = Decimal("463.27") - credit
    assert receivable(driver.pk) == owed  # what the page asks, and no more
    assert_books_balance()

    payments.payment_refund(key)  # its run (queued after the capture's commit): nothing more
    refund = PaymentOperation.objects.get(idempotency_key=key)
    assert refund.status == PaymentOperation.Status.SUCCEEDED
    assert receivable(driver.pk) == owed
    assert_books_balance()
    assert [name for name, _ in fake.calls] == ["capture"]  # nothing refunded at the provider


@pytest.mark.django_db
@pytest.mark.parametrize(("credit", "asked"), [(Decimal("100.00"), 36327), (Decimal("463.27"), None)])
def test_a_credit_whose_refund_ran_after_the_hold_was_reported_gone_is_not_asked_again(
    fake: Fake, credit: Decimal, asked: int | None
) -> None:
    """The other order (a re-review's): the provider reports the hold gone, the beat's sweep runs the waiting
    refund first (the payment RELEASED: it credits the driver's account), then the capture task finds the payment
    released and asks the bill again: less the credit, as in the order above (it had asked the whole bill)."""
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=55593, billed=46327)
    charge_booked(driver, Decimal("463.27"), "cdr:1")
    key = credit_decided(charge, credit, "cdr:2")
    payments.payment_refund(key)  # waits for the capture
    payments.webhook_receive(event(port.RELEASED, charge, event_id="evt_rel", amount=55593))
    payments.payment_refund(key)  # the sweep: the payment released, the credit goes to the driver's account
    assert PaymentOperation.objects.get(idempotency_key=key).status == PaymentOperation.Status.SUCCEEDED

    payments.payment_capture(charge.pk)

    pages = Payment.objects.filter(purpose="balance")
    assert [p.billed_minor for p in pages] == ([asked] if asked else [])
    assert receivable(driver.pk) == Decimal("463.27") - credit
    assert_books_balance()


# --- 4. an init handing the app an earlier hold, and the sweep (PostgreSQL: two transactions at once) --------------


def unbooked_hold(fake: Fake, settings: Any) -> tuple[Payment, Quote, Driver]:
    """A hold the driver paid at init's page, no order confirmed, its quote expired: the sweep's to release."""
    pages_at_the_provider(fake, settings)
    driver = Driver.objects.create(app_id="app.example", name="Asha", email="asha@example.com")
    quote = Quote.objects.create(
        driver=driver, evse=Evse.objects.first(), connector_id="1", currency="INR", arrival_at=timezone.now(),
        cpo_cost_excl_vat=Decimal("380"), fee_excl_vat=Decimal("12.60"), fee_vat=Decimal("2.27"),
        valid_until=timezone.now() - timedelta(minutes=2),
    )  # fmt: skip
    amount = payments.authorisation_minor(quote.price, "INR")
    held = Payment.objects.create(
        driver=driver, bap_id="app.example", journey="app.example|T-1", provider="fake", currency="INR",
        status=Payment.Status.AUTHORISED, requested_minor=amount, authorised_minor=amount, provider_payment_id="pi_1",
        checkout_id="cs_0", url="https://pay.example/cs_0",
    )  # fmt: skip
    return held, quote, driver


def init_again(quote: Quote, driver: Driver) -> Payment:
    """What the init of the journey does with its payment (its quote held for the driver first)."""
    from billing.services.driver_pricing import quote_hold

    quote = quote_hold(quote, driver=driver)
    return payments.payment_open(quote=quote, driver=driver, bap_id="app.example", journey="app.example|T-1")


@needs_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.we_collect
def test_an_init_handing_over_a_hold_keeps_the_sweep_from_releasing_it(
    network: Any,  # noqa: F811
    fake: Fake,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(payments, "run_after_commit", lambda task, *args: None)
    held, quote, driver = unbooked_hold(fake, settings)
    handed, swept = threading.Event(), threading.Event()

    def init() -> int:
        with transaction.atomic():  # the init's transaction: the app is answered after its commit
            payment = init_again(quote, driver)
            handed.set()
            swept.wait(10)
        return payment.pk

    thread, out = _run(init)
    assert handed.wait(10)
    try:
        released = payments.unbooked_holds_release()
    finally:
        swept.set()
        thread.join(30)

    assert released == []  # passed over, not decided under the init
    assert out == {"result": held.pk}, out
    assert not PaymentOperation.objects.filter(payment=held).exists()
    assert payments.unbooked_holds_release() == []  # its quote, held by the init, is valid: a confirm may come
    connection.close()


@needs_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.we_collect
def test_an_init_waiting_for_a_sweep_that_releases_its_hold_opens_a_new_payment(
    network: Any,  # noqa: F811
    fake: Fake,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(payments, "run_after_commit", lambda task, *args: None)
    held, quote, driver = unbooked_hold(fake, settings)
    decided, init_done = threading.Event(), threading.Event()
    real: Callable[..., None] = payments._unbooked_hold_release

    def decide_then_hold(payment: Payment, why: str) -> None:
        real(payment, why)
        decided.set()
        _until(init_done)  # the init runs meanwhile, or waits for this sweep's commit

    monkeypatch.setattr(payments, "_unbooked_hold_release", decide_then_hold)
    thread, out = _run(payments.unbooked_holds_release)
    assert decided.wait(10)
    try:
        with transaction.atomic():
            payment = init_again(quote, driver)
    finally:
        init_done.set()
        thread.join(30)

    assert out == {"result": [held.pk]}, out
    assert payment.pk != held.pk  # a payment and page of its own, not the hold being released
    assert (payment.status, payment.url) == (Payment.Status.PENDING, "https://pay.example/cs_1")
    connection.close()


# --- 5. a lone surrogate in a signed webhook -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("refunding_providers")
@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
def test_a_signed_webhook_with_a_lone_surrogate_in_a_field_we_do_not_read_is_stored_and_answered(
    provider: str,
) -> None:
    """PostgreSQL's jsonb refuses an unpaired \\ud800: the event had been refused (422, a DataError) on every
    delivery."""
    if provider == "stripe":
        said = stripe_event({"object": "customer", "id": "cus_1", "description": "a\ud800b"}, name="customer.created")
        said["data"]["object"]["x\udc00"] = "key"
    else:
        said = {"entity": "event", "event": "payment.downtime.started", "created_at": int(timezone.now().timestamp()),
                "payload": {"payment": {"entity": {"id": PAY, "entity": "payment", "description": "a\ud800b",
                                                   "x\udc00": "key"}}}}  # fmt: skip

    answer = post_signed(provider, said)

    assert answer.status_code == 200, answer.content
    (stored,) = ProviderWebhook.objects.all()
    entity = (
        stored.payload["data"]["object"] if provider == "stripe" else stored.payload["payload"]["payment"]["entity"]
    )
    assert entity["description"] == "a\ufffdb" and entity["x\ufffd"] == "key"
    assert post_signed(provider, said).json()["status"] == "duplicate"


@pytest.mark.django_db
@pytest.mark.usefixtures("refunding_providers")
@pytest.mark.parametrize("field", ["id", "metadata"])
def test_a_signed_webhook_with_a_lone_surrogate_in_a_field_we_read_is_refused(field: str) -> None:
    obj = {"object": "payment_intent", "id": "pi_1", "amount_received": 100, "currency": "inr", "metadata": {}}
    if field == "id":
        obj["id"] = "pi_\ud8001"
    else:
        obj["metadata"] = {"reference": "pay-\udfff"}

    answer = post_signed("stripe", stripe_event(obj))

    assert answer.status_code == 400, answer.content
    assert "lone surrogate" in answer.json()["error"]
    assert not ProviderWebhook.objects.exists()


def test_storable_makes_lone_surrogates_replacement_characters_and_keeps_pairs() -> None:
    assert payments.storable({"k\udc00": ["x\ud800", "\ud83d\ude00", "nul\x00"], "n": 1}) == {
        "k\ufffd": ["x\ufffd", "\U0001f600", "nul\\u0000"],
        "n": 1,
    }
