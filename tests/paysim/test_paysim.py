"""paysim as a real process, driven by the real adapters over HTTP: the hosted page authorises, webhooks arrive
signed as each provider signs them and pass the adapters' verification, capture/release/refund move money once per
key, and the payout files list what was captured and refunded."""

from __future__ import annotations

import csv
import io
import itertools
import re
import time

import pytest
import requests
from razorpay import errors as razorpay_errors

from billing.payments import gateway as port
from billing.payments.razorpay_gateway import RazorpayGateway, refund_idempotency_key
from billing.payments.stripe_gateway import StripeGateway
from tests.paysim.conftest import DECLINE_OVER, Delivery, Receiver, pay

numbers = itertools.count(1)


def reference() -> str:
    return f"PAY-{next(numbers):06d}"


def checkout(gateway: port.PaymentGateway, amount: int, currency: str, ref: str) -> port.Checkout:
    return gateway.checkout(
        amount_minor=amount,
        currency=currency,
        reference=ref,
        description=f"Charging session {ref}",
        return_url="http://127.0.0.1:9/return",
        idempotency_key=f"checkout:{ref}",
    )


def verified(gateway: port.PaymentGateway, receiver: Receiver, provider: str, kind: str, object_id: str):
    delivery = receiver.event(provider, kind, object_id)
    return gateway.verify_webhook(body=delivery.body, headers=delivery.headers)


def payout_rows(paysim: str, provider: str) -> list[dict[str, str]]:
    answer = requests.get(f"{paysim}/paysim/payouts/{provider}.csv", timeout=10)
    assert answer.headers["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(answer.text)))


# --- Stripe ------------------------------------------------------------------------------------------------------


def test_a_stripe_payment_is_authorised_captured_in_part_and_refunded(
    paysim: str, stripe: StripeGateway, receiver: tuple[Receiver, str]
) -> None:
    hooks, ref = receiver[0], reference()
    page = checkout(stripe, 5000, "EUR", ref)
    assert page.url == f"{paysim}/pay/{page.checkout_id}"

    payment_id = pay(paysim, page.checkout_id)["payment_id"]
    authorised = verified(stripe, hooks, "stripe", "payment_intent.amount_capturable_updated", payment_id)
    assert (authorised.type, authorised.reference, authorised.amount_minor) == (port.AUTHORISED, ref, 5000)

    captured = stripe.capture(payment_id=payment_id, amount_minor=3120, currency="EUR", idempotency_key=f"cap:{ref}")
    assert captured == port.GatewayResult(reference=payment_id, amount_minor=3120, status="succeeded")
    event = verified(stripe, hooks, "stripe", "payment_intent.succeeded", payment_id)
    assert (event.type, event.amount_minor, event.reference) == (port.CAPTURED, 3120, ref)

    refund = stripe.refund(payment_id=payment_id, amount_minor=1000, currency="EUR", idempotency_key=f"ref:{ref}")
    assert (refund.amount_minor, refund.status) == (1000, "succeeded")
    event = verified(stripe, hooks, "stripe", "refund.created", payment_id)
    assert (event.type, event.amount_minor, event.payment_id) == (port.REFUNDED, 1000, payment_id)

    rows = [r for r in payout_rows(paysim, "stripe") if r["payment_intent_id"] == payment_id]
    assert [(r["reporting_category"], r["gross"]) for r in rows] == [("charge", "31.20"), ("refund", "-10.00")]
    assert rows[0]["payment_metadata[reference]"] == ref
    assert all(r["currency"] == "eur" and r["balance_transaction_id"].startswith("txn_") for r in rows)


def test_stripe_calls_retried_with_the_same_key_get_the_same_answer(paysim: str, stripe: StripeGateway) -> None:
    ref = reference()
    first = checkout(stripe, 4000, "EUR", ref)
    assert checkout(stripe, 4000, "EUR", ref) == first
    payment_id = pay(paysim, first.checkout_id)["payment_id"]

    once = stripe.capture(payment_id=payment_id, amount_minor=2500, currency="EUR", idempotency_key=f"cap:{ref}")
    again = stripe.capture(payment_id=payment_id, amount_minor=2500, currency="EUR", idempotency_key=f"cap:{ref}")
    assert once == again

    with pytest.raises(port.GatewayError) as caught:  # the key with other parameters: Stripe's idempotency_error
        stripe.capture(payment_id=payment_id, amount_minor=2000, currency="EUR", idempotency_key=f"cap:{ref}")
    assert caught.value.retryable is False

    refund = stripe.refund(payment_id=payment_id, amount_minor=500, currency="EUR", idempotency_key=f"ref:{ref}")
    again = stripe.refund(payment_id=payment_id, amount_minor=500, currency="EUR", idempotency_key=f"ref:{ref}")
    assert again == refund
    rows = [r for r in payout_rows(paysim, "stripe") if r["payment_intent_id"] == payment_id]
    assert [r["gross"] for r in rows] == ["25.00", "-5.00"]  # captured once, refunded once


def test_a_released_stripe_authorisation_takes_nothing(
    paysim: str, stripe: StripeGateway, receiver: tuple[Receiver, str]
) -> None:
    ref = reference()
    payment_id = pay(paysim, checkout(stripe, 6000, "EUR", ref).checkout_id)["payment_id"]

    result = stripe.release(payment_id=payment_id, idempotency_key=f"rel:{ref}")

    assert (result.status, result.amount_minor) == ("canceled", 6000)
    event = verified(stripe, receiver[0], "stripe", "payment_intent.canceled", payment_id)
    assert (event.type, event.reference) == (port.RELEASED, ref)
    assert not [r for r in payout_rows(paysim, "stripe") if r["payment_intent_id"] == payment_id]


@pytest.mark.parametrize("amount, outcome", [(2000, "decline"), (DECLINE_OVER + 1, "pay")], ids=["declined", "over"])
def test_a_declined_stripe_payment_is_a_failure(
    paysim: str, stripe: StripeGateway, receiver: tuple[Receiver, str], amount: int, outcome: str
) -> None:
    ref = reference()
    answer = pay(paysim, checkout(stripe, amount, "EUR", ref).checkout_id, outcome)

    assert answer["approved"] is False
    event = verified(stripe, receiver[0], "stripe", "payment_intent.payment_failed", answer["payment_id"])
    assert (event.type, event.reference) == (port.FAILED, ref)


def test_an_unpaid_stripe_checkout_expires_as_a_failure(
    paysim: str, stripe: StripeGateway, receiver: tuple[Receiver, str]
) -> None:
    ref = reference()
    page = checkout(stripe, 2000, "EUR", ref)

    assert requests.post(f"{paysim}/paysim/expire/{page.checkout_id}", timeout=10).status_code == 200

    event = verified(stripe, receiver[0], "stripe", "checkout.session.expired", page.checkout_id)
    assert (event.type, event.checkout_id, event.reference) == (port.FAILED, page.checkout_id, ref)


# --- Razorpay ----------------------------------------------------------------------------------------------------


def test_a_razorpay_payment_is_captured_in_full_and_the_rest_refunded(
    paysim: str, razorpay: RazorpayGateway, receiver: tuple[Receiver, str]
) -> None:
    hooks, ref = receiver[0], reference()
    page = checkout(razorpay, 50000, "INR", ref)
    assert page.url == f"{paysim}/pay/{page.checkout_id}" and page.checkout_id.startswith("plink_")

    payment_id = pay(paysim, page.checkout_id)["payment_id"]
    authorised = verified(razorpay, hooks, "razorpay", "payment.authorized", payment_id)
    assert (authorised.type, authorised.reference, authorised.amount_minor) == (port.AUTHORISED, ref, 50000)

    result = razorpay.capture(payment_id=payment_id, amount_minor=31250, currency="INR", idempotency_key=f"cap:{ref}")
    assert result == port.GatewayResult(reference=payment_id, amount_minor=31250, status="captured")
    assert razorpay.capture(payment_id=payment_id, amount_minor=31250, currency="INR", idempotency_key=f"cap:{ref}")
    captured = verified(razorpay, hooks, "razorpay", "payment.captured", payment_id)
    assert (captured.type, captured.amount_minor) == (port.CAPTURED, 50000)
    rest = verified(razorpay, hooks, "razorpay", "refund.processed", payment_id)
    assert (rest.type, rest.amount_minor) == (port.IGNORED, 18750)  # part of the capture, not a refund

    refund = razorpay.refund(payment_id=payment_id, amount_minor=1250, currency="INR", idempotency_key=f"ref:{ref}")
    assert razorpay.refund(payment_id=payment_id, amount_minor=1250, currency="INR", idempotency_key=f"ref:{ref}") == (
        refund
    )
    hooks.wait_for(
        lambda d: (
            d.provider == "razorpay"
            and d.payload["event"] == "refund.processed"
            and d.payload["payload"]["refund"]["entity"]["id"] == refund.reference
        )
    )
    refunds = [
        razorpay.verify_webhook(body=d.body, headers=d.headers)
        for d in hooks.deliveries
        if d.provider == "razorpay" and d.payload["event"] == "refund.processed"
    ]
    assert [(e.type, e.amount_minor) for e in refunds if e.payment_id == payment_id] == [
        (port.IGNORED, 18750),
        (port.REFUNDED, 1250),
    ]

    rows = [r for r in payout_rows(paysim, "razorpay") if payment_id in (r["entity_id"], r["payment_id"])]
    assert [(r["type"], int(r["amount"])) for r in rows] == [("payment", 50000), ("refund", 18750), ("refund", 1250)]
    assert int(rows[0]["credit"]) == 50000 - int(rows[0]["fee"])
    assert sum(int(r["credit"]) + int(r["fee"]) - int(r["debit"]) for r in rows) == 31250 - 1250


def test_a_released_razorpay_authorisation_is_refunded_by_razorpay_later(
    paysim: str, razorpay: RazorpayGateway, receiver: tuple[Receiver, str]
) -> None:
    ref = reference()
    payment_id = pay(paysim, checkout(razorpay, 20000, "INR", ref).checkout_id)["payment_id"]

    result = razorpay.release(payment_id=payment_id, idempotency_key=f"rel:{ref}")
    assert result == port.GatewayResult(reference=payment_id, amount_minor=20000, status="release_pending")

    # The manual-capture timeout passes (paysim's test hook stands for the days Razorpay waits).
    assert requests.post(f"{paysim}/paysim/expire/{payment_id}", timeout=10).status_code == 200
    event = verified(razorpay, receiver[0], "razorpay", "refund.processed", payment_id)
    assert (event.type, event.amount_minor, event.reference) == (port.RELEASED, 20000, ref)
    assert not [r for r in payout_rows(paysim, "razorpay") if payment_id in (r["entity_id"], r["payment_id"])]


def test_a_declined_razorpay_payment_is_a_failure(
    paysim: str, razorpay: RazorpayGateway, receiver: tuple[Receiver, str]
) -> None:
    ref = reference()
    answer = pay(paysim, checkout(razorpay, 30000, "INR", ref).checkout_id, "decline")

    event = verified(razorpay, receiver[0], "razorpay", "payment.failed", answer["payment_id"])
    assert (event.type, event.reference) == (port.FAILED, ref)


def test_capturing_a_failed_razorpay_payment_is_refused(paysim: str, razorpay: RazorpayGateway) -> None:
    ref = reference()
    answer = pay(paysim, checkout(razorpay, 30000, "INR", ref).checkout_id, "decline")

    with pytest.raises(port.GatewayError) as caught:
        razorpay.capture(payment_id=answer["payment_id"], amount_minor=100, currency="INR", idempotency_key="k")
    assert caught.value.retryable is False


# --- the hosted page and delivery ---------------------------------------------------------------------------------


def test_the_hosted_page_shows_the_amount_and_pays_on_the_form(paysim: str, stripe: StripeGateway) -> None:
    ref = reference()
    page = checkout(stripe, 4599, "EUR", ref)

    shown = requests.get(page.url, timeout=10)
    assert shown.status_code == 200 and "EUR 45.99" in shown.text and 'value="pay"' in shown.text
    assert "card number" not in shown.text.lower()

    paid = requests.post(page.url, data={"outcome": "pay"}, allow_redirects=False, timeout=10)
    assert (paid.status_code, paid.headers["Location"]) == (303, "http://127.0.0.1:9/return")
    twice = requests.post(f"{paysim}/paysim/pay/{page.checkout_id}", json={"outcome": "pay"}, timeout=10)
    assert twice.status_code == 409


def test_the_razorpay_page_returns_with_razorpays_query_parameters(paysim: str, razorpay: RazorpayGateway) -> None:
    ref = reference()
    page = checkout(razorpay, 10000, "INR", ref)

    paid = requests.post(page.url, data={"outcome": "pay"}, allow_redirects=False, timeout=10)

    assert paid.status_code == 303
    location = paid.headers["Location"]
    assert re.search(r"razorpay_payment_id=pay_\w+", location)
    assert f"razorpay_payment_link_id={page.checkout_id}" in location
    assert f"razorpay_payment_link_reference_id={ref}" in location


def test_a_webhook_answered_with_an_error_is_delivered_again(
    paysim: str, stripe: StripeGateway, receiver: tuple[Receiver, str]
) -> None:
    hooks, ref = receiver[0], reference()
    page = checkout(stripe, 3000, "EUR", ref)
    with hooks.lock:
        hooks.fail_once.add(page.checkout_id.encode())  # checkout.session.completed names the session
    pay(paysim, page.checkout_id)

    def completed(delivery: Delivery) -> bool:
        return (
            delivery.provider == "stripe"
            and delivery.payload["type"] == "checkout.session.completed"
            and (delivery.payload["data"]["object"]["id"] == page.checkout_id)
        )

    hooks.wait_for(lambda d: completed(d) and sum(completed(x) for x in hooks.deliveries) == 2)
    first, again = [d for d in hooks.deliveries if completed(d)]
    assert first.payload["id"] == again.payload["id"]  # the same event, delivered twice
    assert first.body == again.body
    assert stripe.verify_webhook(body=again.body, headers=again.headers).checkout_id == page.checkout_id
    # The simulator records an attempt's answer once the receiver has given it, a moment after the receiver holds
    # the delivery: read until the second attempt is recorded (it had been read before, now and then).
    deadline = time.monotonic() + 10
    while True:
        events = requests.get(f"{paysim}/paysim/events", timeout=10).json()["events"]
        attempts = next(e for e in events if e["id"] == first.payload["id"])["attempts"]
        if len(attempts) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert attempts == [500, 200]


def test_the_apis_refuse_requests_without_credentials(paysim: str) -> None:
    stripe_answer = requests.post(f"{paysim}/stripe/v1/refunds", data={"payment_intent": "pi_x"}, timeout=10)
    razorpay_answer = requests.get(f"{paysim}/razorpay/v1/payments/pay_x", timeout=10)

    assert stripe_answer.status_code == 401 and stripe_answer.json()["error"]["type"] == "invalid_request_error"
    assert razorpay_answer.status_code == 401 and razorpay_answer.json()["error"]["code"] == "BAD_REQUEST_ERROR"


def test_a_razorpay_refund_sent_twice_with_its_idempotency_key_is_made_once(
    paysim: str, razorpay: RazorpayGateway
) -> None:
    """Razorpay's X-Refund-Idempotency, as paysim keeps it: a refund whose answer was lost, sent again by a retry
    that found no refund by our notes key yet, is the first refund again; another body under the key is
    refused, as is a key Razorpay would not take."""
    ref = reference()
    payment_id = pay(paysim, checkout(razorpay, 50000, "INR", ref).checkout_id)["payment_id"]
    razorpay.capture(payment_id=payment_id, amount_minor=50000, currency="INR", idempotency_key=f"cap:{ref}")
    body = {"amount": 1000, "speed": "normal", "receipt": f"ref:{ref}", "notes": {"idempotency_key": f"ref:{ref}"}}
    key = {"X-Refund-Idempotency": refund_idempotency_key(f"ref:{ref}")}
    first = razorpay.client.payment.refund(payment_id, body, headers=key)
    again = razorpay.client.payment.refund(payment_id, body, headers=key)
    assert again["id"] == first["id"]
    listed = razorpay.client.payment.fetch_multiple_refund(payment_id, {"count": 100})["items"]
    assert [r["id"] for r in listed] == [first["id"]]
    with pytest.raises(razorpay_errors.BadRequestError, match="Different request"):
        razorpay.client.payment.refund(payment_id, {**body, "amount": 2000}, headers=key)
    with pytest.raises(razorpay_errors.BadRequestError, match="idempotency key"):
        razorpay.client.payment.refund(payment_id, body, headers={"X-Refund-Idempotency": "ref:1"})
