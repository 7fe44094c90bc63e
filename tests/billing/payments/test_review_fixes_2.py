"""The payment area after a second review: (1) a hold the provider let lapse before the capture (Razorpay's
auto-refund at its manual-capture timeout, `refunded` with `captured: false`; Stripe's cancel after 7 days) is
no capture: the hold is booked released and the bill asked for again; (3) a cancel racing the authorisation's
webhook leaves no hold behind (PostgreSQL); (4) a refund that fails at the provider after we booked it (Stripe's
refund.failed, Razorpay's refund.failed) is reversed and credited to the driver's account, once; (5) a signed
webhook of the wrong shape, nested past Python's limit, or carrying a NUL character is a 400 or is stored, never
a 500 or a 422 on every delivery. The adapters run through their SDKs (HTTP answered by `responses`), webhooks
through our endpoint signed as the providers sign."""

from __future__ import annotations

import copy
import json
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import responses
from django.db import connection
from django.test import Client

from billing.models import LedgerAccount, LedgerEntry, Payment, PaymentOperation, ProviderWebhook
from billing.payments import gateway as port
from billing.payments.gateway import GatewayError, GatewayResult, WebhookEvent
from billing.payments.razorpay_gateway import RazorpayGateway
from billing.payments.stripe_gateway import StripeGateway
from billing.services import accounts, ledger, payments, postings
from emsp.models import Booking
from emsp.services import bookings
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm, init, item_of, select
from tests.billing.payments.recorded import as_body, razorpay_signature, recording, stripe_signature
from tests.billing.provider_standin import Fake, authorised, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.billing.test_cdr_booking_links import pages_at_the_provider
from tests.billing.test_settlement_review_fixes import _run, needs_postgres
from tests.factories import DriverFactory

STRIPE_API = "https://stripe.test/stripe"
RAZORPAY_API = "https://razorpay.test/razorpay/v1"
STRIPE_SECRET = "whsec_review_fixes_2"
RAZORPAY_SECRET = "razorpay_review_fixes_2"
PI = "pi_3PgafyB7WZ01zgkW0xsAJo3E"
PAY = "pay_G8VQzjPLoAvm6D"


def stripe_gateway() -> StripeGateway:
    return StripeGateway(api_key="sk_test_key", webhook_secret=STRIPE_SECRET, api_base=STRIPE_API)


def razorpay_gateway() -> RazorpayGateway:
    return RazorpayGateway(
        key_id="rzp_test_key", key_secret="key_secret", webhook_secret=RAZORPAY_SECRET, api_base=RAZORPAY_API
    )


# --- 1. a hold that lapsed at the provider before the capture ------------------------------------------------------


def razorpay_auto_refunded() -> dict[str, Any]:
    """A payment Razorpay refunded itself at the manual-capture timeout: `refunded`, never captured."""
    payment = recording("razorpay/payment_authorized")
    return {**payment, "status": "refunded", "captured": False, "amount_refunded": 50000, "refund_status": "full"}


@responses.activate
def test_razorpay_capture_of_a_payment_it_refunded_uncaptured_is_a_lapsed_hold_not_a_capture() -> None:
    responses.get(f"{RAZORPAY_API}/payments/{PAY}", json=razorpay_auto_refunded())

    for repeated in (False, True):
        with pytest.raises(GatewayError) as caught:
            razorpay_gateway().capture(
                payment_id=PAY, amount_minor=30000, currency="INR", idempotency_key="k:capture", repeated=repeated
            )
        assert (caught.value.code, caught.value.retryable) == (port.LAPSED, False)
    assert [c.request.method for c in responses.calls] == ["GET", "GET"]  # nothing captured, nothing refunded


@responses.activate
def test_razorpay_repeated_capture_of_a_captured_payment_refunded_since_still_answers() -> None:
    captured = recording("razorpay/payment_captured")
    responses.get(f"{RAZORPAY_API}/payments/{PAY}", json={**captured, "status": "refunded", "amount_refunded": 50000})

    result = razorpay_gateway().capture(
        payment_id=PAY, amount_minor=50000, currency="INR", idempotency_key="k:capture", repeated=True
    )

    assert result == GatewayResult(reference=PAY, amount_minor=50000, status="captured")


@responses.activate
def test_razorpay_release_of_a_payment_it_refunded_uncaptured_refunds_nothing() -> None:
    responses.get(f"{RAZORPAY_API}/payments/{PAY}", json=razorpay_auto_refunded())

    result = razorpay_gateway().release(payment_id=PAY, idempotency_key="k:release")

    assert (result.amount_minor, result.status) == (0, "refunded")
    assert [c.request.method for c in responses.calls] == ["GET"]


def stripe_unexpected_state(status: str) -> dict[str, Any]:
    return {
        "error": {
            "code": "payment_intent_unexpected_state",
            "message": f"This PaymentIntent could not be captured because it has a status of {status}. Only a "
            "PaymentIntent with one of the following statuses may be captured: requires_capture.",
            "type": "invalid_request_error",
        }
    }


@responses.activate
def test_stripe_capture_of_a_payment_intent_stripe_canceled_is_a_lapsed_hold() -> None:
    responses.post(
        f"{STRIPE_API}/v1/payment_intents/{PI}/capture", status=400, json=stripe_unexpected_state("canceled")
    )
    canceled = {**recording("stripe/payment_intent_canceled"), "cancellation_reason": "automatic"}
    responses.get(f"{STRIPE_API}/v1/payment_intents/{PI}", json=canceled)

    for repeated in (False, True):
        with pytest.raises(GatewayError) as caught:
            stripe_gateway().capture(
                payment_id=PI, amount_minor=4250, currency="EUR", idempotency_key="k:capture", repeated=repeated
            )
        assert (caught.value.code, caught.value.retryable) == (port.LAPSED, False)
        assert "automatic" in str(caught.value)


@responses.activate
def test_stripe_capture_refused_for_another_state_keeps_its_refusal() -> None:
    responses.post(
        f"{STRIPE_API}/v1/payment_intents/{PI}/capture", status=400, json=stripe_unexpected_state("processing")
    )
    responses.get(f"{STRIPE_API}/v1/payment_intents/{PI}", json={**recording("stripe/payment_intent_canceled"),
                                                                 "status": "processing"})  # fmt: skip

    with pytest.raises(GatewayError) as caught:
        stripe_gateway().capture(payment_id=PI, amount_minor=4250, currency="EUR", idempotency_key="k:capture")

    assert caught.value.code == "payment_intent_unexpected_state"


@pytest.mark.django_db
def test_a_capture_the_provider_answers_lapsed_books_the_hold_released_and_asks_for_the_bill_again(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=55593, billed=46327)
    charge_booked(driver, Decimal("463.27"), "cdr:1")

    def lapsed(**kw: Any) -> GatewayResult:
        fake.calls.append(("capture", kw))
        raise GatewayError("razorpay capture: pi_1 was refunded by Razorpay uncaptured", code=port.LAPSED)

    monkeypatch.setattr(fake, "capture", lapsed)
    payments.payment_capture(charge.pk)

    charge.refresh_from_db()
    assert (charge.status, charge.captured_minor, charge.billed_minor) == (Payment.Status.RELEASED, 0, None)
    capture = PaymentOperation.objects.get(payment=charge, kind="capture")
    assert capture.status == PaymentOperation.Status.FAILED and capture.error.startswith("the authorisation lapsed")
    (collected,) = Payment.objects.filter(purpose="balance")
    assert (collected.status, collected.billed_minor, collected.provider) == (Payment.Status.PENDING, 46327, "fake")
    assert balance("clearing:fake") == 0 and balance("holds:fake") == 0
    assert balance(f"driver:{driver.pk}:receivable") == Decimal("463.27")  # owed, and asked for
    assert sum(ledger.trial_balance("INR").values()) == 0

    # Its RELEASED webhook after it, and a staff retry of the failed capture, change nothing more.
    said = payments.webhook_receive(
        WebhookEvent(provider="fake", event_id="evt_rel", type=port.RELEASED, provider_type="refund.processed",
                     reference=payments.reference_of(charge), payment_id="pi_1", amount_minor=55593, currency="INR")
    )  # fmt: skip
    assert said == "noted (released)"
    payments.operation_retry(operation=capture)
    assert Payment.objects.filter(purpose="balance").count() == 1
    assert [name for name, _ in fake.calls] == ["capture"]


def balance(code: str) -> Decimal:
    found = LedgerAccount.objects.filter(code=code, currency="INR").first()
    return Decimal("0") if found is None else ledger.balance(found)


# --- 3. a cancel racing the authorisation (PostgreSQL: two transactions at once) -----------------------------------


def _until(done: threading.Event, seconds: float = 10) -> None:
    """Until `done` is set or another transaction waits on a row lock (then it is blocked: go on). The caller is
    inside a transaction, where pg_stat_activity is read once and kept: the snapshot is cleared each time."""
    deadline = time.monotonic() + seconds
    while not done.is_set() and time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)


@needs_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.we_collect
@pytest.mark.parametrize("first", ["webhook", "cancel"])
def test_a_cancel_racing_the_authorisation_leaves_no_hold(
    bap: Any,  # noqa: F811
    fake: Fake,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    first: str,
) -> None:
    """webhook: the authorisation's webhook holds its payment, has read the booking active, and is not committed
    when the driver cancels; cancel: the cancel has ended the booking and looked at its payments, not committed,
    when the webhook comes. Either way the hold is released (before, the cancel read the payment PENDING and the
    webhook the booking active: CANCELLED with an AUTHORISED payment, nothing released)."""
    pages_at_the_provider(fake, settings)
    select(bap, item_of(bap))
    init(bap)
    booking = Booking.objects.get(order_id=confirm(bap)["message"]["order"]["id"])
    charge = Payment.objects.get(booking=booking, purpose="charge")
    assert charge.status == Payment.Status.PENDING
    reached, webhook_done, cancel_done = threading.Event(), threading.Event(), threading.Event()
    if first == "webhook":
        real = payments.ended_without_charge

        def read_then_hold(booking: Booking) -> bool:
            ended = real(booking)
            if not reached.is_set():  # the webhook's read (the app's order rendering reads it too, later)
                reached.set()
                _until(cancel_done)  # the cancel runs meanwhile, or waits for this webhook
            return ended

        monkeypatch.setattr(payments, "ended_without_charge", read_then_hold)
    else:
        from emsp import events

        real_publish = events.publish

        def publish_then_hold(event: object) -> None:
            real_publish(event)
            if isinstance(event, events.BookingCancelled) and not reached.is_set():
                reached.set()
                _until(webhook_done)  # the webhook runs meanwhile, or waits for this cancel

        monkeypatch.setattr(events, "publish", publish_then_hold)

    def webhook() -> str:
        try:
            return payments.webhook_receive(
                WebhookEvent(provider="fake", event_id="evt_auth", type=port.AUTHORISED,
                             provider_type="payment.authorized", reference=payments.reference_of(charge),
                             payment_id="pi_1", amount_minor=charge.requested_minor, currency="INR")
            )  # fmt: skip
        finally:
            webhook_done.set()

    def cancel() -> Any:
        try:
            return bookings.booking_cancel(booking, reason="changed-plans")
        finally:
            cancel_done.set()

    runs = [_run(webhook if first == "webhook" else cancel)]
    assert reached.wait(10)
    runs.append(_run(cancel if first == "webhook" else webhook))
    for thread, _ in runs:
        thread.join(30)
    assert all("error" not in out for _, out in runs), runs

    booking.refresh_from_db()
    charge.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    release = PaymentOperation.objects.get(payment=charge, kind="release")
    assert (charge.status, release.status) == (Payment.Status.RELEASED, PaymentOperation.Status.SUCCEEDED)
    assert [name for name, _ in fake.calls if name == "release"] == ["release"]
    assert balance("holds:fake") == 0


# --- 4. a refund that fails at the provider after we booked it -----------------------------------------------------

REFUND_ID = {"stripe": "re_3PgafyB7WZ01zgkW0qFailed1", "razorpay": "rfnd_FP8R8EGjFailed"}
PAYMENT_ID = {"stripe": PI, "razorpay": PAY}


class StripeAnswering(StripeGateway):
    """The real adapter's webhook check and reading; its capture and refund answered as Stripe answers them."""

    def capture(self, **kw: Any) -> GatewayResult:
        return GatewayResult(reference=kw["payment_id"], amount_minor=kw["amount_minor"], status="succeeded")

    def refund(self, **kw: Any) -> GatewayResult:
        return GatewayResult(reference=REFUND_ID["stripe"], amount_minor=kw["amount_minor"], status="succeeded")


class RazorpayAnswering(RazorpayGateway):
    """The real adapter's webhook check and reading; its capture (the rest above the bill refunded within it) and
    refund answered as Razorpay answers them."""

    def capture(self, **kw: Any) -> GatewayResult:
        return GatewayResult(reference=kw["payment_id"], amount_minor=kw["amount_minor"], status="captured")

    def refund(self, **kw: Any) -> GatewayResult:
        return GatewayResult(reference=REFUND_ID["razorpay"], amount_minor=kw["amount_minor"], status="processed")


@pytest.fixture
def signed_providers(settings: Any) -> None:
    """Stripe and Razorpay with our test secrets: the real webhook checks, answering adapters."""
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["stripe"] = {
        "adapter": f"{__name__}.StripeAnswering",
        "options": {"api_key": "sk_test_key", "webhook_secret": STRIPE_SECRET, "api_base": STRIPE_API},
    }
    providers["razorpay"] = {
        "adapter": f"{__name__}.RazorpayAnswering",
        "options": {"key_id": "rzp_test_key", "key_secret": "key_secret", "webhook_secret": RAZORPAY_SECRET,
                    "api_base": RAZORPAY_API},
    }  # fmt: skip
    settings.PAYMENT_PROVIDERS = providers


def post_signed(provider: str, payload: Any, *, event_id: str = "evt-1", raw: bytes | None = None) -> Any:
    """`payload` (or `raw` bytes) to our webhook endpoint, signed as the provider signs; a 500 is answered, not
    raised."""
    body = raw if raw is not None else as_body(payload)
    if provider == "stripe":
        headers = {"Stripe-Signature": stripe_signature(body, STRIPE_SECRET, int(time.time()))}
    else:
        headers = {"X-Razorpay-Signature": razorpay_signature(body, RAZORPAY_SECRET), "X-Razorpay-Event-Id": event_id}
    client = Client(raise_request_exception=False)
    return client.post(f"/payments/webhooks/{provider}", data=body, content_type="application/json", headers=headers)


def refund_event(provider: str, payment: Payment, *, name: str, amount: int, key: str, purpose: str = "refund",
                 status: str = "failed", event_id: str = "evt_refund_failed") -> dict[str, Any]:  # fmt: skip
    """The provider's event about our refund `key` of `payment` (its status now `status`)."""
    if provider == "stripe":
        event = recording("stripe/event_refund_created", id=event_id, type=name, created=int(time.time()))
        event["data"]["object"].update(
            id=REFUND_ID["stripe"], amount=amount, currency="inr", payment_intent=PI, status=status,
            failure_reason="expired_or_canceled_card", metadata={"idempotency_key": key},
        )  # fmt: skip
        return event
    event = recording("razorpay/event_refund_processed", event=name, created_at=int(time.time()))
    event["payload"]["refund"]["entity"].update(
        id=REFUND_ID["razorpay"], amount=amount, payment_id=PAY, status=status,
        notes={"idempotency_key": key, "purpose": purpose}, receipt=key[:40],
    )  # fmt: skip
    event["payload"]["payment"]["entity"].update(
        amount=55593, amount_refunded=0, notes={"reference": payments.reference_of(payment)}
    )
    return event


def captured_at(provider: str) -> Payment:
    """A charge payment at `provider` with a hold of 555.93, billed 463.27 and captured."""
    driver = DriverFactory(currency="INR")
    charge = Payment.objects.create(
        driver=driver, provider=provider, currency="INR", status=Payment.Status.AUTHORISED, authorised_minor=55593,
        billed_minor=46327, provider_payment_id=PAYMENT_ID[provider],
    )  # fmt: skip
    postings.authorisation(charge, 55593)
    charge_booked(driver, Decimal("463.27"), f"cdr:{charge.pk}")
    payments.payment_capture(charge.pk)
    charge.refresh_from_db()
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 46327)
    return charge


def credit_refunded(charge: Payment, amount: Decimal, reference: str) -> PaymentOperation:
    postings.credit(currency="INR", amount=amount, borne_by=accounts.cpo_payable("IN*CPA", "INR"),
                    reference=reference, key=f"{reference}:credit")  # fmt: skip
    payments.refund_due(payment=charge, amount=amount, reference=reference, driver_id=charge.driver_id)
    key = f"{charge.key}|{reference}:refund"
    payments.payment_refund(key)
    return PaymentOperation.objects.get(idempotency_key=key)


@pytest.mark.django_db
@pytest.mark.usefixtures("signed_providers")
@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
def test_a_refund_that_fails_at_the_provider_is_credited_to_the_drivers_account_once(provider: str) -> None:
    charge = captured_at(provider)
    refund = credit_refunded(charge, Decimal("463.27"), "dispute:9")  # all of it: the payment REFUNDED
    charge.refresh_from_db()
    assert (charge.status, charge.refunded_minor, refund.provider_reference) == (
        Payment.Status.REFUNDED, 46327, REFUND_ID[provider]
    )  # fmt: skip
    driver = f"driver:{charge.driver_id}:receivable"
    assert balance("refunds:pending") == 0 and balance(driver) == 0

    failed = refund_event(provider, charge, name="refund.failed", amount=46327, key=refund.idempotency_key)
    answer = post_signed(provider, failed)

    assert answer.status_code == 200, answer.content
    assert answer.json()["outcome"] == "refund failed: 463.27 credited to the driver's account"
    charge.refresh_from_db()
    assert (charge.status, charge.refunded_minor) == (Payment.Status.CAPTURED, 0)
    assert REFUND_ID[provider] in charge.failure and "credited to the driver's account" in charge.failure
    refund.refresh_from_db()
    assert refund.status == PaymentOperation.Status.SUCCEEDED and "failed at" in refund.error
    assert balance(f"clearing:{provider}") == Decimal("463.27")  # the money came back to our balance there
    assert balance(driver) == Decimal("-463.27")  # owed to the driver, on their account
    assert balance("refunds:pending") == 0
    assert sum(ledger.trial_balance("INR").values()) == 0

    # The same event again, and the provider's other event about the same failure: nothing more.
    entries = LedgerEntry.objects.count()
    assert post_signed(provider, failed).json()["status"] == "duplicate"
    if provider == "stripe":
        updated = refund_event(provider, charge, name="refund.updated", amount=46327, key=refund.idempotency_key,
                               event_id="evt_refund_updated")  # fmt: skip
        again = post_signed(provider, updated)
    else:
        again = post_signed(provider, failed, event_id="evt-2")
    assert again.json()["outcome"] == "refund failed: booked before"
    charge.refresh_from_db()
    assert (LedgerEntry.objects.count(), charge.refunded_minor) == (entries, 0)


@pytest.mark.django_db
@pytest.mark.usefixtures("signed_providers")
def test_a_failed_refund_of_part_of_a_payment_leaves_it_partly_refunded_by_the_others() -> None:
    charge = captured_at("stripe")
    credit_refunded(charge, Decimal("10.00"), "dispute:1")
    second = credit_refunded(charge, Decimal("11.80"), "dispute:2")
    PaymentOperation.objects.filter(pk=second.pk).update(provider_reference="re_other")  # each its own refund id

    answer = post_signed("stripe", refund_event("stripe", charge, name="refund.updated", amount=1000,
                                                key=f"{charge.key}|dispute:1:refund"))  # fmt: skip

    assert answer.json()["outcome"] == "refund failed: 10.00 credited to the driver's account"
    charge.refresh_from_db()
    assert (charge.status, charge.refunded_minor) == (Payment.Status.PARTIALLY_REFUNDED, 1180)
    assert balance("refunds:pending") == 0
    assert sum(ledger.trial_balance("INR").values()) == 0


@pytest.mark.django_db
@pytest.mark.usefixtures("signed_providers")
def test_a_failed_refund_of_the_rest_razorpay_captured_above_the_bill_is_owed_to_the_driver() -> None:
    """Razorpay captures whole holds; capture() refunds what is above the bill in the same call (notes purpose
    capture_rest, key `<capture key>:rest`), booked nowhere since the capture books the bill only. Failed, that
    money stays with us: owed to the driver, on their account."""
    charge = captured_at("razorpay")
    rest = refund_event("razorpay", charge, name="refund.failed", amount=55593 - 46327,
                        key=f"{charge.key}:capture:rest", purpose="capture_rest")  # fmt: skip

    answer = post_signed("razorpay", rest)

    assert answer.json()["outcome"] == "refund failed: 92.66 credited to the driver's account"
    assert balance("clearing:razorpay") == Decimal("463.27") + Decimal("92.66")
    assert balance(f"driver:{charge.driver_id}:receivable") == Decimal("-92.66")
    assert balance("refunds:pending") == 0
    assert sum(ledger.trial_balance("INR").values()) == 0
    charge.refresh_from_db()
    assert (charge.status, charge.captured_minor, charge.refunded_minor) == (Payment.Status.CAPTURED, 46327, 0)
    assert post_signed("razorpay", rest, event_id="evt-2").json()["outcome"] == "refund failed: booked before"


@pytest.mark.parametrize(
    ("status", "name", "kind"),
    [
        ("failed", "refund.failed", port.REFUND_FAILED),
        ("failed", "refund.updated", port.REFUND_FAILED),
        ("canceled", "refund.updated", port.REFUND_FAILED),
        ("succeeded", "refund.updated", port.REFUNDED),
        ("pending", "refund.created", port.IGNORED),
    ],
)
def test_stripe_refund_events_say_whether_the_refund_failed(status: str, name: str, kind: str) -> None:
    event = recording("stripe/event_refund_created", type=name)
    event["data"]["object"]["status"] = status
    body = as_body(event)

    read = stripe_gateway().verify_webhook(
        body=body, headers={"Stripe-Signature": stripe_signature(body, STRIPE_SECRET, int(time.time()))}
    )

    assert (read.type, read.payment_id, read.amount_minor) == (kind, PI, 1000)
    assert (read.refund_id, read.refund_key) == ("re_3PgafyB7WZ01zgkW0qPvrRrP", "refund:PAY-000123:1")


def test_razorpay_refund_failed_is_a_failed_refund() -> None:
    event = recording("razorpay/event_refund_processed", event="refund.failed")
    event["payload"]["refund"]["entity"]["status"] = "failed"
    body = as_body(event)
    gateway = RazorpayGateway(key_id="k", key_secret="s", webhook_secret=RAZORPAY_SECRET, api_base=RAZORPAY_API,
                              clock=lambda: event["created_at"] + 60)  # fmt: skip

    read = gateway.verify_webhook(
        body=body,
        headers={"X-Razorpay-Signature": razorpay_signature(body, RAZORPAY_SECRET), "X-Razorpay-Event-Id": "e"},
    )

    assert (read.type, read.payment_id, read.amount_minor) == (port.REFUND_FAILED, PAY, 1000)
    assert (read.refund_id, read.refund_key, read.reference) == ("rfnd_FP8R8EGjGbPkVb", "refund:PAY-000124:1",
                                                                 "PAY-000124")  # fmt: skip


# --- 5. signed webhooks of the wrong shape ------------------------------------------------------------------------


def stripe_event(obj: Any, *, name: str = "payment_intent.succeeded", **top: Any) -> dict[str, Any]:
    return {"id": "evt_shape_1", "object": "event", "type": name, "created": int(time.time()), "data": {"object": obj},
            **top}  # fmt: skip


def razorpay_event(payload: Any) -> dict[str, Any]:
    return {"entity": "event", "event": "payment.captured", "payload": payload, "created_at": int(time.time())}


NESTED = b"[" * 100_000 + b"]" * 100_000
DEEP = json.loads("[" * 900 + "]" * 900)  # parses; the code walking it had not


@pytest.mark.django_db
@pytest.mark.usefixtures("signed_providers")
@pytest.mark.parametrize(
    ("provider", "body"),
    [
        ("stripe", as_body(stripe_event("pi_123"))),
        ("stripe", as_body({**stripe_event({}), "data": "pi_123"})),
        ("stripe", as_body(stripe_event({"object": "payment_intent", "id": PI, "metadata": ["reference"]}))),
        ("stripe", b'{"id":"evt_1","object":"event","type":"x","data":{"object":{"object":"customer","x":'
         + NESTED + b"}}}"),
        ("stripe", as_body(stripe_event({"object": "customer", "x": DEEP}))),
        ("stripe", b"[1, 2]"),
        ("razorpay", as_body(razorpay_event({"payment": "pay_123"}))),
        ("razorpay", as_body(razorpay_event({"payment": {"entity": "pay_123"}}))),
        ("razorpay", as_body(razorpay_event("pay_123"))),
        ("razorpay", b'{"entity":"event","event":"x","created_at":1,"payload":' + NESTED + b"}"),
        ("razorpay", as_body(razorpay_event({"payment": {"entity": {"id": PAY, "x": DEEP}}}))),
    ],
    ids=["stripe-object-a-string", "stripe-data-a-string", "stripe-metadata-a-list", "stripe-nested-100000",
         "stripe-nested-900", "stripe-a-list", "razorpay-payment-a-string", "razorpay-entity-a-string",
         "razorpay-payload-a-string", "razorpay-nested-100000", "razorpay-nested-900"],
)  # fmt: skip
def test_a_signed_webhook_of_the_wrong_shape_is_refused_not_a_server_error(provider: str, body: bytes) -> None:
    answer = post_signed(provider, None, raw=body)

    assert answer.status_code == 400, answer.content
    assert any(
        why in answer.json()["error"] for why in ("is not an object", "not an event", "RecursionError", "nested deeper")
    )
    assert not ProviderWebhook.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("signed_providers")
@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
def test_a_signed_webhook_with_a_nul_in_a_field_we_do_not_read_is_stored_and_answered(provider: str) -> None:
    """PostgreSQL's jsonb holds no \\u0000: the event had been refused (422, a DataError) on every delivery."""
    if provider == "stripe":
        event = stripe_event({"object": "customer", "id": "cus_1", "description": "a\x00b"}, name="customer.created")
    else:
        event = razorpay_event({"payment": {"entity": {"id": PAY, "entity": "payment", "description": "a\x00b"}}})
        event["event"] = "payment.downtime.started"

    answer = post_signed(provider, event)

    assert answer.status_code == 200, answer.content
    (stored,) = ProviderWebhook.objects.all()
    entity = (
        stored.payload["data"]["object"] if provider == "stripe" else stored.payload["payload"]["payment"]["entity"]
    )
    assert entity["description"] == "a\\u0000b"  # written out, as JSON writes it
    assert post_signed(provider, event).json()["status"] == "duplicate"


@pytest.mark.django_db
@pytest.mark.usefixtures("signed_providers")
def test_a_signed_webhook_with_a_nul_in_a_field_we_read_is_refused() -> None:
    event = stripe_event({"object": "payment_intent", "id": "pi_\x001", "amount_received": 100, "currency": "inr",
                          "metadata": {}})  # fmt: skip

    answer = post_signed("stripe", event)

    assert answer.status_code == 400, answer.content
    assert "NUL" in answer.json()["error"]
