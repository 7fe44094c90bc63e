"""The Stripe adapter driven through stripe-python, with HTTP answered at requests' transport from recorded Stripe
answers: what the SDK sends, what we make of the answers, and how webhooks are verified and read."""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import pytest
import requests
import responses

from billing.payments import gateway as port
from billing.payments.stripe_gateway import StripeGateway
from tests.billing.payments.recorded import as_body, recording, stripe_signature

API = "https://stripe.test/stripe"
SECRET = "whsec_test_secret"
PI = "pi_3PgafyB7WZ01zgkW0xsAJo3E"


@pytest.fixture
def gateway() -> StripeGateway:
    return StripeGateway(api_key="sk_test_key", webhook_secret=SECRET, api_base=API)


def form(call: responses.Call) -> dict[str, list[str]]:
    return parse_qs(call.request.body)


@responses.activate
def test_it_opens_a_checkout_session_with_manual_capture(gateway: StripeGateway) -> None:
    responses.post(f"{API}/v1/checkout/sessions", json=recording("stripe/checkout_session_created"))

    checkout = gateway.checkout(
        amount_minor=6000,
        currency="EUR",
        reference="PAY-000123",
        description="Charging session",
        return_url="https://emsp.example/pay/return",
        idempotency_key="checkout:PAY-000123",
    )

    session = recording("stripe/checkout_session_created")
    assert checkout == port.Checkout(checkout_id=session["id"], url=session["url"])
    call = responses.calls[0]
    assert call.request.headers["Idempotency-Key"] == "checkout:PAY-000123"
    assert call.request.headers["Authorization"] == "Bearer sk_test_key"
    sent = form(call)
    assert sent["mode"] == ["payment"]
    assert sent["payment_intent_data[capture_method]"] == ["manual"]
    assert sent["payment_intent_data[metadata][reference]"] == ["PAY-000123"]
    assert sent["metadata[reference]"] == ["PAY-000123"]
    assert sent["client_reference_id"] == ["PAY-000123"]
    assert sent["success_url"] == ["https://emsp.example/pay/return"]
    assert sent["line_items[0][price_data][unit_amount]"] == ["6000"]
    assert sent["line_items[0][price_data][currency]"] == ["eur"]
    assert sent["line_items[0][quantity]"] == ["1"]


@responses.activate
def test_it_captures_part_of_the_authorisation_with_our_key(gateway: StripeGateway) -> None:
    responses.post(f"{API}/v1/payment_intents/{PI}/capture", json=recording("stripe/payment_intent_captured"))

    result = gateway.capture(payment_id=PI, amount_minor=4250, currency="EUR", idempotency_key="capture:PAY-000123")

    assert result == port.GatewayResult(reference=PI, amount_minor=4250, status="succeeded")
    call = responses.calls[0]
    assert form(call) == {"amount_to_capture": ["4250"]}
    assert call.request.headers["Idempotency-Key"] == "capture:PAY-000123"


@responses.activate
def test_it_releases_by_cancelling_the_payment_intent(gateway: StripeGateway) -> None:
    responses.post(f"{API}/v1/payment_intents/{PI}/cancel", json=recording("stripe/payment_intent_canceled"))

    result = gateway.release(payment_id=PI, idempotency_key="release:PAY-000123")

    assert result == port.GatewayResult(reference=PI, amount_minor=6000, status="canceled")
    assert responses.calls[0].request.headers["Idempotency-Key"] == "release:PAY-000123"


@responses.activate
def test_it_refunds_the_payment_intent(gateway: StripeGateway) -> None:
    refund = recording("stripe/refund_succeeded")
    responses.post(f"{API}/v1/refunds", json=refund)

    result = gateway.refund(payment_id=PI, amount_minor=1000, currency="EUR", idempotency_key="refund:PAY-000123:1")

    assert result == port.GatewayResult(reference=refund["id"], amount_minor=1000, status="succeeded")
    call = responses.calls[0]
    assert form(call) == {
        "payment_intent": [PI],
        "amount": ["1000"],
        "metadata[idempotency_key]": ["refund:PAY-000123:1"],
    }
    assert call.request.headers["Idempotency-Key"] == "refund:PAY-000123:1"


@responses.activate
def test_a_refusal_is_not_retryable(gateway: StripeGateway) -> None:
    responses.post(
        f"{API}/v1/payment_intents/{PI}/capture", status=400, json=recording("stripe/error_amount_too_large")
    )

    with pytest.raises(port.GatewayError) as caught:
        gateway.capture(payment_id=PI, amount_minor=9000, currency="EUR", idempotency_key="k")

    assert caught.value.retryable is False
    assert caught.value.code == "amount_too_large"
    assert "no greater than the amount capturable" in str(caught.value)


@pytest.mark.parametrize("status", [500, 503, 429, 409])
@responses.activate
def test_server_errors_rate_limits_and_key_in_use_are_retryable(gateway: StripeGateway, status: int) -> None:
    responses.post(f"{API}/v1/refunds", status=status, json=recording("stripe/error_api"))

    with pytest.raises(port.GatewayError) as caught:
        gateway.refund(payment_id=PI, amount_minor=100, currency="EUR", idempotency_key="k")

    assert caught.value.retryable is True
    assert len(responses.calls) == 1  # the SDK does not retry on its own: the caller retries with the same key


@responses.activate
def test_stripes_should_retry_header_wins(gateway: StripeGateway) -> None:
    responses.post(
        f"{API}/v1/refunds", status=500, json=recording("stripe/error_api"), headers={"Stripe-Should-Retry": "false"}
    )

    with pytest.raises(port.GatewayError) as caught:
        gateway.refund(payment_id=PI, amount_minor=100, currency="EUR", idempotency_key="k")

    assert caught.value.retryable is False


@responses.activate
def test_a_connection_error_is_retryable(gateway: StripeGateway) -> None:
    responses.post(f"{API}/v1/refunds", body=requests.ConnectionError("connection refused"))

    with pytest.raises(port.GatewayError) as caught:
        gateway.refund(payment_id=PI, amount_minor=100, currency="EUR", idempotency_key="k")

    assert caught.value.retryable is True


def test_a_non_positive_amount_is_refused_before_any_request(gateway: StripeGateway) -> None:
    with pytest.raises(port.GatewayError):
        gateway.capture(payment_id=PI, amount_minor=0, currency="EUR", idempotency_key="k")


# --- webhooks ----------------------------------------------------------------------------------------------------


def signed(name: str, *, secret: str = SECRET, at: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = as_body(recording(name))
    return body, {"Stripe-Signature": stripe_signature(body, secret, int(time.time()) if at is None else at)}


@pytest.mark.parametrize(
    ("name", "kind", "amount"),
    [
        ("stripe/event_payment_intent_amount_capturable_updated", port.AUTHORISED, 6000),
        ("stripe/event_payment_intent_succeeded", port.CAPTURED, 4250),
        ("stripe/event_payment_intent_canceled", port.RELEASED, 6000),
        ("stripe/event_payment_intent_payment_failed", port.FAILED, 6000),
    ],
)
def test_payment_intent_events_are_normalised(gateway: StripeGateway, name: str, kind: str, amount: int) -> None:
    body, headers = signed(name)

    event = gateway.verify_webhook(body=body, headers=headers)

    assert (event.type, event.amount_minor, event.payment_id) == (kind, amount, PI)
    assert (event.provider, event.reference, event.currency) == ("stripe", "PAY-000123", "EUR")
    assert event.event_id == recording(name)["id"]
    assert event.provider_type == recording(name)["type"]


def test_an_expired_checkout_is_a_failure_of_that_checkout(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_checkout_session_expired")

    event = gateway.verify_webhook(body=body, headers=headers)

    session = recording("stripe/checkout_session_created")
    assert (event.type, event.checkout_id, event.reference) == (port.FAILED, session["id"], "PAY-000123")


def test_a_succeeded_refund_is_a_refund_of_its_payment_intent(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_refund_created")

    event = gateway.verify_webhook(body=body, headers=headers)

    assert (event.type, event.payment_id, event.amount_minor) == (port.REFUNDED, PI, 1000)
    assert event.raw["data"]["object"]["id"] == recording("stripe/refund_succeeded")["id"]


def test_other_events_are_verified_and_ignored(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_customer_created")

    assert gateway.verify_webhook(body=body, headers=headers).type == port.IGNORED


def test_the_signature_header_is_found_in_any_spelling(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_payment_intent_succeeded")

    meta = {"HTTP_STRIPE_SIGNATURE": headers["Stripe-Signature"]}
    assert gateway.verify_webhook(body=body, headers=meta).type == port.CAPTURED


def test_a_tampered_body_is_rejected(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_payment_intent_succeeded")

    with pytest.raises(port.WebhookRejected):
        gateway.verify_webhook(body=body.replace(b"4250", b"9250"), headers=headers)


def test_a_body_signed_with_another_secret_is_rejected(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_payment_intent_succeeded", secret="whsec_someone_else")

    with pytest.raises(port.WebhookRejected):
        gateway.verify_webhook(body=body, headers=headers)


def test_a_signature_older_than_five_minutes_is_a_replay(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_payment_intent_succeeded", at=int(time.time()) - 301)

    with pytest.raises(port.WebhookRejected, match="tolerance"):
        gateway.verify_webhook(body=body, headers=headers)


def test_a_signature_four_minutes_old_is_still_accepted(gateway: StripeGateway) -> None:
    body, headers = signed("stripe/event_payment_intent_succeeded", at=int(time.time()) - 240)

    assert gateway.verify_webhook(body=body, headers=headers).type == port.CAPTURED


@pytest.mark.parametrize(
    "headers", [{}, {"Stripe-Signature": "garbage"}, {"Stripe-Signature": "t=1,v0=abc"}], ids=["none", "bad", "v0"]
)
def test_a_missing_or_malformed_signature_is_rejected(gateway: StripeGateway, headers: dict[str, str]) -> None:
    body, _ = signed("stripe/event_payment_intent_succeeded")

    with pytest.raises(port.WebhookRejected):
        gateway.verify_webhook(body=body, headers=headers)


def test_a_signed_body_that_is_not_json_is_rejected(gateway: StripeGateway) -> None:
    body = b"not json"
    headers = {"Stripe-Signature": stripe_signature(body, SECRET, int(time.time()))}

    with pytest.raises(port.WebhookRejected):
        gateway.verify_webhook(body=body, headers=headers)


def test_a_signature_that_is_not_ascii_is_rejected_not_a_server_error(gateway: StripeGateway) -> None:
    body = as_body(recording("stripe/event_payment_intent_amount_capturable_updated"))
    with pytest.raises(port.WebhookRejected, match="not ASCII"):
        gateway.verify_webhook(body=body, headers={"Stripe-Signature": f"t={int(time.time())},v1=\xe9"})
