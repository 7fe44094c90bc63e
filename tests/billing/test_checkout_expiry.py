"""A withdrawn balance page (payments._withdraw: a credit lowered or covered its bill) is closed at its provider
(billing.tasks.expire_checkout), so the driver can no longer pay a page that asks for nothing: Stripe's session
expired, Razorpay's link cancelled, paysim's page refusing payment. A page already paid, expired or cancelled is
no error: the result says so. Before, the port had no way to close a page and it stayed open until it lapsed."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
import requests
import responses
from django.conf import settings as django_settings
from django.utils import timezone

from billing import tasks
from billing.models import Payment
from billing.payments import gateway as port
from billing.payments.razorpay_gateway import RazorpayGateway
from billing.payments.stripe_gateway import StripeGateway
from billing.services import payments
from emsp.models import Partner
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.billing.payments.recorded import recording
from tests.billing.provider_standin import Fake
from tests.billing.provider_standin import fake as fake
from tests.billing.test_credit_while_balance_pending import asked as asked
from tests.billing.test_credit_while_balance_pending import credited
from tests.factories import DriverFactory
from tests.paysim.conftest import RAZORPAY_SECRET, STRIPE_SECRET, Receiver
from tests.paysim.conftest import paysim as paysim
from tests.paysim.conftest import razorpay as razorpay
from tests.paysim.conftest import receiver as receiver
from tests.paysim.conftest import stripe as stripe
from tests.paysim.test_paysim import checkout, reference

STRIPE_API = "https://stripe.test/stripe"
RAZORPAY_API = "https://razorpay.test/razorpay/v1"
SESSION = recording("stripe/checkout_session_created")["id"]
LINK = recording("razorpay/payment_link_created")["id"]


def stripe_refusal(status: str) -> dict[str, Any]:
    """Stripe's answer to expiring a session that is not open (its error format, its words)."""
    error = recording("stripe/error_amount_too_large")["error"]
    message = (
        'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a status of '
        f"`{status}`."
    )
    return {"error": {**error, "code": None, "param": None, "message": message}}


def razorpay_refusal() -> dict[str, Any]:
    error = recording("razorpay/error_bad_request")["error"]
    return {"error": {**error, "description": "Payment Link cannot be cancelled", "field": None}}


# --- Stripe: POST /v1/checkout/sessions/{id}/expire ---------------------------------------------------------------


@pytest.fixture
def stripe_at_transport() -> StripeGateway:
    return StripeGateway(api_key="sk_test_key", webhook_secret="whsec_x", api_base=STRIPE_API)


@responses.activate
def test_stripe_expires_an_open_session_with_our_key(stripe_at_transport: StripeGateway) -> None:
    expired = recording("stripe/checkout_session_created", status="expired")
    responses.post(f"{STRIPE_API}/v1/checkout/sessions/{SESSION}/expire", json=expired)

    result = stripe_at_transport.expire_checkout(checkout_id=SESSION, idempotency_key="k:expire:0")

    assert result == port.CheckoutExpiry(checkout_id=SESSION, outcome=port.PAGE_CLOSED, status="expired")
    assert len(responses.calls) == 1
    assert responses.calls[0].request.headers["Idempotency-Key"] == "k:expire:0"


@pytest.mark.parametrize(
    ("answer", "found", "outcome"),
    [
        (400, "complete", port.PAGE_PAID),  # the driver paid first: Stripe refuses, the session says why
        (400, "expired", port.PAGE_ALREADY_CLOSED),
        (500, "expired", port.PAGE_ALREADY_CLOSED),  # Stripe replaying a 500 for the key: the session says done
    ],
)
@responses.activate
def test_stripe_a_session_no_longer_open_is_answered_as_it_is_not_an_error(
    stripe_at_transport: StripeGateway, answer: int, found: str, outcome: str
) -> None:
    body = stripe_refusal(found) if answer == 400 else recording("stripe/error_api")
    responses.post(f"{STRIPE_API}/v1/checkout/sessions/{SESSION}/expire", status=answer, json=body)
    responses.get(f"{STRIPE_API}/v1/checkout/sessions/{SESSION}", json=recording(
        "stripe/checkout_session_created", status=found))  # fmt: skip

    result = stripe_at_transport.expire_checkout(checkout_id=SESSION, idempotency_key="k:expire:0")

    assert result == port.CheckoutExpiry(checkout_id=SESSION, outcome=outcome, status=found)


@pytest.mark.parametrize(("answer", "retryable"), [(400, False), (503, True)])
@responses.activate
def test_stripe_an_error_on_a_session_still_open_is_raised(
    stripe_at_transport: StripeGateway, answer: int, retryable: bool
) -> None:
    body = stripe_refusal("open") if answer == 400 else recording("stripe/error_api")
    responses.post(f"{STRIPE_API}/v1/checkout/sessions/{SESSION}/expire", status=answer, json=body)
    responses.get(f"{STRIPE_API}/v1/checkout/sessions/{SESSION}", json=recording("stripe/checkout_session_created"))

    with pytest.raises(port.GatewayError) as caught:
        stripe_at_transport.expire_checkout(checkout_id=SESSION, idempotency_key="k:expire:0")

    assert caught.value.retryable is retryable
    assert "expire checkout" in str(caught.value)


@responses.activate
def test_stripe_a_look_up_that_fails_raises_the_expiry_s_error(stripe_at_transport: StripeGateway) -> None:
    responses.post(
        f"{STRIPE_API}/v1/checkout/sessions/{SESSION}/expire", status=500, json=recording("stripe/error_api")
    )
    responses.get(f"{STRIPE_API}/v1/checkout/sessions/{SESSION}", body=requests.ConnectionError("refused"))

    with pytest.raises(port.GatewayError) as caught:
        stripe_at_transport.expire_checkout(checkout_id=SESSION, idempotency_key="k:expire:0")

    assert caught.value.retryable is True and "expire checkout" in str(caught.value)


# --- Razorpay: POST /v1/payment_links/{id}/cancel -----------------------------------------------------------------


@pytest.fixture
def razorpay_at_transport() -> RazorpayGateway:
    return RazorpayGateway(key_id="rzp_test_key", key_secret="s", webhook_secret="w", api_base=RAZORPAY_API)


@responses.activate
def test_razorpay_cancels_a_link_still_created(razorpay_at_transport: RazorpayGateway) -> None:
    cancelled = recording("razorpay/payment_link_created", status="cancelled", cancelled_at=1606985600)
    responses.post(f"{RAZORPAY_API}/payment_links/{LINK}/cancel", json=cancelled)

    result = razorpay_at_transport.expire_checkout(checkout_id=LINK, idempotency_key="k:expire:0")

    assert result == port.CheckoutExpiry(checkout_id=LINK, outcome=port.PAGE_CLOSED, status="cancelled")
    assert len(responses.calls) == 1


AUTHORISED_ON_IT = [{"payment_id": "pay_G8VQzjPLoAvm6D", "status": "authorized", "amount": 50000}]


@pytest.mark.parametrize(
    ("changes", "outcome"),
    [
        ({"status": "paid"}, port.PAGE_PAID),
        ({"status": "created", "payments": AUTHORISED_ON_IT}, port.PAGE_PAID),  # manual capture: still `created`
        ({"status": "cancelled"}, port.PAGE_ALREADY_CLOSED),  # a repeat: Razorpay takes no key on a cancel
        ({"status": "expired"}, port.PAGE_ALREADY_CLOSED),
    ],
    ids=["paid", "authorised", "cancelled", "expired"],
)
@responses.activate
def test_razorpay_a_link_no_longer_created_is_answered_as_it_is_not_an_error(
    razorpay_at_transport: RazorpayGateway, changes: dict[str, Any], outcome: str
) -> None:
    responses.post(f"{RAZORPAY_API}/payment_links/{LINK}/cancel", status=400, json=razorpay_refusal())
    responses.get(f"{RAZORPAY_API}/payment_links/{LINK}", json=recording("razorpay/payment_link_created", **changes))

    result = razorpay_at_transport.expire_checkout(checkout_id=LINK, idempotency_key="k:expire:0")

    assert result == port.CheckoutExpiry(checkout_id=LINK, outcome=outcome, status=changes["status"])


@responses.activate
def test_razorpay_a_refusal_of_a_link_still_open_is_raised(razorpay_at_transport: RazorpayGateway) -> None:
    responses.post(f"{RAZORPAY_API}/payment_links/{LINK}/cancel", status=400, json=razorpay_refusal())
    responses.get(f"{RAZORPAY_API}/payment_links/{LINK}", json=recording("razorpay/payment_link_created"))

    with pytest.raises(port.GatewayError) as caught:
        razorpay_at_transport.expire_checkout(checkout_id=LINK, idempotency_key="k:expire:0")

    assert (caught.value.retryable, caught.value.code) == (False, "BAD_REQUEST_ERROR")


@responses.activate
def test_razorpay_a_server_error_stays_retryable(razorpay_at_transport: RazorpayGateway) -> None:
    responses.post(f"{RAZORPAY_API}/payment_links/{LINK}/cancel", status=500, json=recording("razorpay/error_server"))
    responses.get(f"{RAZORPAY_API}/payment_links/{LINK}", status=500, json=recording("razorpay/error_server"))

    with pytest.raises(port.GatewayError) as caught:
        razorpay_at_transport.expire_checkout(checkout_id=LINK, idempotency_key="k:expire:0")

    assert caught.value.retryable is True and "cancel the link" in str(caught.value)


# --- paysim, a real process: the page refuses payment once closed --------------------------------------------------


def pay_page(paysim: str, checkout_id: str) -> int:
    """The driver presses Pay on the hosted page: its HTTP status."""
    return requests.post(f"{paysim}/pay/{checkout_id}", data={"outcome": "pay"}, allow_redirects=False,
                         timeout=10).status_code  # fmt: skip


@pytest.mark.parametrize(
    ("provider", "currency", "event"),
    [("stripe", "EUR", "checkout.session.expired"), ("razorpay", "INR", "payment_link.cancelled")],
)
def test_paysim_closes_a_page_which_then_refuses_payment(
    request: pytest.FixtureRequest,
    paysim: str,
    receiver: tuple[Receiver, str],
    provider: str,
    currency: str,
    event: str,
) -> None:
    gateway = request.getfixturevalue(provider)
    page = checkout(gateway, 20000, currency, reference())

    first = gateway.expire_checkout(checkout_id=page.checkout_id, idempotency_key="k:expire:0")

    assert (first.checkout_id, first.outcome) == (page.checkout_id, port.PAGE_CLOSED)
    assert pay_page(paysim, page.checkout_id) == 409  # "This checkout is closed"
    assert "This checkout is closed" in requests.get(page.url, timeout=10).text
    delivery = receiver[0].event(provider, event, page.checkout_id)
    told = gateway.verify_webhook(body=delivery.body, headers=delivery.headers)
    assert (told.type, told.checkout_id) == (port.FAILED, page.checkout_id)  # handled as "already RELEASED"
    # Again (a task redelivered, a retry with its own key): no error, the page is said closed.
    again = gateway.expire_checkout(checkout_id=page.checkout_id, idempotency_key="k:expire:0")
    other_key = gateway.expire_checkout(checkout_id=page.checkout_id, idempotency_key="k:expire:1")
    closed_before = port.PAGE_CLOSED if provider == "stripe" else port.PAGE_ALREADY_CLOSED  # Stripe: its first answer
    assert again.outcome == closed_before
    assert other_key.outcome == port.PAGE_ALREADY_CLOSED


@pytest.mark.parametrize(("provider", "currency"), [("stripe", "EUR"), ("razorpay", "INR")])
def test_paysim_a_page_the_driver_paid_first_is_said_paid(
    request: pytest.FixtureRequest, paysim: str, provider: str, currency: str
) -> None:
    gateway = request.getfixturevalue(provider)
    page = checkout(gateway, 20000, currency, reference())
    assert pay_page(paysim, page.checkout_id) == 303  # authorised, back to the return url

    result = gateway.expire_checkout(checkout_id=page.checkout_id, idempotency_key="k:expire:0")

    assert result.outcome == port.PAGE_PAID


# --- the task ------------------------------------------------------------------------------------------------------

WHY = "cancelled: the credit cdr:7 covers its bill"


def withdrawn_page(provider: str = "fake", checkout_id: str = "cs_1", **changes: Any) -> Payment:
    """A balance payment as payments._withdraw leaves it: released with nothing held, its page opened."""
    fields = {
        "driver": DriverFactory(),
        "provider": provider,
        "currency": "INR",
        "purpose": "balance",
        "type": Payment.Type.POST_FULFILLMENT,
        "status": Payment.Status.RELEASED,
        "billed_minor": 0,
        "requested_minor": 46327,
        "checkout_id": checkout_id,
        "failure": WHY,
    }
    return Payment.objects.create(**(fields | changes))


def expiries(fake: Fake) -> list[dict[str, Any]]:
    return [kw for name, kw in fake.calls if name == "expire_checkout"]


@pytest.mark.django_db
def test_the_task_closes_a_withdrawn_page_and_notes_it_once(fake: Fake) -> None:
    payment = withdrawn_page()

    assert tasks.expire_checkout.delay(payment.pk).get() == port.PAGE_CLOSED
    assert tasks.expire_checkout.delay(payment.pk).get() == "noted before"  # a repeat calls no provider

    assert expiries(fake) == [{"checkout_id": "cs_1", "idempotency_key": f"{payment.key}:expire:0"}]
    payment.refresh_from_db()
    assert payment.failure == f"provider page closed at fake (expired); {WHY}"
    assert (payment.status, payment.url, payment.billed_minor) == (Payment.Status.RELEASED, "", 0)  # else untouched


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes",
    [
        {"purpose": "charge"},
        {"status": Payment.Status.PENDING},  # still asking: its page is the one shown
        {"status": Payment.Status.FAILED},
        {"status": Payment.Status.AUTHORISED, "authorised_minor": 46327},  # the withdrawn page was paid after all
        {"authorised_minor": 46327},  # released after a hold: not a page withdrawn unpaid
        {"checkout_id": ""},  # withdrawn before its page was opened
    ],
    ids=["charge", "pending", "failed", "authorised", "held", "no-page"],
)
def test_the_task_leaves_anything_but_a_withdrawn_page_alone(fake: Fake, changes: dict[str, Any]) -> None:
    payment = withdrawn_page(**changes)

    assert tasks.expire_checkout.delay(payment.pk).get() == "not a withdrawn page"
    assert tasks.expire_checkout.delay(payment.pk + 1000).get() == "not a withdrawn page"  # no such payment

    assert expiries(fake) == []
    payment.refresh_from_db()
    assert payment.failure == WHY


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("outcome", "note"),
    [
        (port.PAGE_PAID, "paid before it could be closed at fake (complete)"),
        (port.PAGE_ALREADY_CLOSED, "already closed at fake (expired)"),
    ],
)
def test_a_page_paid_or_closed_before_is_noted_as_such(fake: Fake, outcome: str, note: str) -> None:
    payment = withdrawn_page()
    fake.expired_as = outcome

    assert tasks.expire_checkout.delay(payment.pk).get() == outcome

    payment.refresh_from_db()
    assert payment.failure == f"provider page {note}; {WHY}"


@pytest.mark.django_db
def test_a_provider_error_worth_retrying_is_retried_with_a_key_of_its_own(fake: Fake) -> None:
    payment = withdrawn_page()
    fake.expire_errors = [port.GatewayError("503 Service Unavailable", retryable=True)]

    # apply() runs the retry at once (delay() in tests propagates the Retry instead).
    assert tasks.expire_checkout.apply((payment.pk,), throw=False).get() == port.PAGE_CLOSED

    keys = [kw["idempotency_key"] for kw in expiries(fake)]
    assert keys == [f"{payment.key}:expire:0", f"{payment.key}:expire:1"]


@pytest.mark.django_db
def test_a_refusal_is_noted_not_retried(fake: Fake) -> None:
    payment = withdrawn_page()
    fake.expire_errors = [port.GatewayError("No such checkout.session: 'cs_1'", code="resource_missing")]

    assert tasks.expire_checkout.delay(payment.pk).get() == "refused"
    assert tasks.expire_checkout.delay(payment.pk).get() == "noted before"

    assert len(expiries(fake)) == 1
    payment.refresh_from_db()
    assert payment.failure == f"provider page not closed at fake: No such checkout.session: 'cs_1'; {WHY}"


@pytest.mark.django_db
def test_a_page_paid_while_it_was_being_closed_keeps_what_its_webhook_wrote(fake: Fake) -> None:
    payment = withdrawn_page()
    answer = fake.expire_checkout

    def paid_meanwhile(**kw: Any) -> port.CheckoutExpiry:
        # The AUTHORISED webhook of the page, committed while the provider was being asked.
        Payment.objects.filter(pk=payment.pk).update(
            status=Payment.Status.AUTHORISED, authorised_minor=46327, failure=""
        )
        return answer(**kw)

    fake.expire_checkout = paid_meanwhile  # type: ignore[method-assign]

    tasks.expire_checkout.delay(payment.pk).get()

    payment.refresh_from_db()
    assert (payment.status, payment.failure) == (Payment.Status.AUTHORISED, "")


# --- the beat's sweep: a withdrawn page whose task was lost -----------------------------------------------------


def withdrawn_ago(payment: Payment, ago: timedelta) -> Payment:
    Payment.objects.filter(pk=payment.pk).update(updated_at=timezone.now() - ago)
    return payment


@pytest.mark.django_db
def test_a_page_whose_closing_task_was_lost_is_closed_by_the_beats_sweep(fake: Fake) -> None:
    payment = withdrawn_ago(withdrawn_page(), timedelta(minutes=11))  # _withdraw committed, its task never ran
    fresh = withdrawn_page(checkout_id="cs_2")  # withdrawn a moment ago: its own task is on its way

    tasks.retry_stuck_payment_operations.delay().get()
    tasks.retry_stuck_payment_operations.delay().get()  # the next minute's run: noted, nothing asked again

    assert [kw["checkout_id"] for kw in expiries(fake)] == ["cs_1"]
    assert expiries(fake)[0]["idempotency_key"].startswith(f"{payment.key}:expire:sweep")  # not the lost task's
    payment.refresh_from_db()
    assert payment.failure == f"provider page closed at fake (expired); {WHY}"
    fresh.refresh_from_db()
    assert fresh.failure == WHY


@pytest.mark.django_db
def test_a_page_the_provider_keeps_failing_to_close_is_tried_every_ten_minutes_for_a_week(fake: Fake) -> None:
    payment = withdrawn_ago(withdrawn_page(), timedelta(minutes=11))
    lapsed = withdrawn_ago(withdrawn_page(checkout_id="cs_2"), timedelta(days=8))
    now = timezone.now()

    assert payments.withdrawn_pages_unclosed(now) == [payment.pk]
    assert payments.withdrawn_pages_unclosed(now + timedelta(minutes=9)) == []  # handed out: its turn waits
    assert payments.withdrawn_pages_unclosed(now + timedelta(minutes=11)) == [payment.pk]
    assert lapsed.pk not in payments.withdrawn_pages_unclosed(now + timedelta(minutes=30))


@pytest.mark.django_db
@pytest.mark.we_collect
def test_a_credit_stamps_the_page_it_withdraws_so_the_sweep_waits_for_its_task(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    asked: Payment,
) -> None:
    withdrawn_ago(asked, timedelta(hours=1))  # the page was opened an hour ago

    credited(bap, network)

    asked.refresh_from_db()
    assert asked.status == Payment.Status.RELEASED
    assert asked.updated_at > timezone.now() - timedelta(minutes=1)


def test_the_task_runs_on_the_latency_queue_with_the_provider_tasks_retries() -> None:
    route = django_settings.CELERY_TASK_ROUTES["billing.tasks.expire_checkout"]
    assert route == django_settings.CELERY_TASK_ROUTES["billing.tasks.open_balance_checkout"] == {"queue": "latency"}
    task = tasks.expire_checkout
    assert task.acks_late and task.autoretry_for == (port.GatewayError,)
    assert task.retry_backoff_max == tasks.open_balance_checkout.retry_backoff_max
    assert task.retry_backoff_max + task.time_limit < django_settings.CELERY_VISIBILITY_TIMEOUT


@pytest.mark.django_db
@pytest.mark.we_collect
def test_a_page_a_credit_withdrew_is_closed_by_the_task(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    asked: Payment,
) -> None:
    """The page of a bill a credit covered, withdrawn by payments._withdraw itself: what the task takes for one."""
    page = asked.checkout_id
    credited(bap, network)  # the whole bill: the page is withdrawn, no other asked
    asked.refresh_from_db()
    assert (asked.status, asked.url) == (Payment.Status.RELEASED, "")

    tasks.expire_checkout.delay(asked.pk).get()

    assert [kw["checkout_id"] for kw in expiries(fake)] == [page]
    asked.refresh_from_db()
    assert asked.failure.startswith("provider page closed at fake (expired); cancelled: the credit")


@pytest.mark.django_db
@pytest.mark.we_collect
@pytest.mark.parametrize(("provider", "currency"), [("stripe", "EUR"), ("razorpay", "INR")])
def test_the_task_closes_the_page_at_paysim(
    request: pytest.FixtureRequest, paysim: str, settings: Any, provider: str, currency: str
) -> None:
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["stripe"]["options"] |= {"api_base": f"{paysim}/stripe", "webhook_secret": STRIPE_SECRET}
    providers["razorpay"]["options"] |= {"api_base": f"{paysim}/razorpay/v1", "webhook_secret": RAZORPAY_SECRET}
    settings.PAYMENT_PROVIDERS = providers
    page = checkout(request.getfixturevalue(provider), 20000, currency, reference())
    payment = withdrawn_page(provider, page.checkout_id, currency=currency)

    assert tasks.expire_checkout.delay(payment.pk).get() == port.PAGE_CLOSED

    assert pay_page(paysim, page.checkout_id) == 409
    payment.refresh_from_db()
    status = "expired" if provider == "stripe" else "cancelled"
    assert payment.failure == f"provider page closed at {provider} ({status}); {WHY}"


@pytest.mark.django_db
def test_a_page_withdrawn_while_it_was_being_opened_is_closed(
    fake: Fake, django_capture_on_commit_callbacks: Any
) -> None:
    """A credit covered the bill while the provider was opening its page: the page opened then asks for nothing;
    it had stayed open, its url written on the withdrawn payment."""
    payment = withdrawn_page(checkout_id="", status=Payment.Status.PENDING, billed_minor=46327, failure="")

    def opening(**kw: Any) -> port.Checkout:
        Payment.objects.filter(pk=payment.pk).update(status=Payment.Status.RELEASED, billed_minor=0, failure=WHY)
        return port.Checkout(checkout_id="cs_9", url="https://pay.example/cs_9")

    fake.checkout = opening  # type: ignore[method-assign]
    with django_capture_on_commit_callbacks(execute=True):
        payments.balance_checkout(payment.pk)

    payment.refresh_from_db()
    assert (payment.status, payment.url, payment.checkout_id) == (Payment.Status.RELEASED, "", "cs_9")
    assert [kw["checkout_id"] for kw in expiries(fake)] == ["cs_9"]
