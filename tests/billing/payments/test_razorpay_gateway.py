"""The Razorpay adapter driven through razorpay-python, with HTTP answered at requests' transport from recorded
Razorpay answers: the requests it makes, capture-in-full-then-refund-the-rest, idempotency found again in
Razorpay's own records, and webhook verification."""

from __future__ import annotations

import base64
import json
import re

import pytest
import requests
import responses
from responses import matchers

from billing.payments import gateway as port
from billing.payments.razorpay_gateway import RazorpayGateway, refund_idempotency_key
from tests.billing.payments.recorded import as_body, razorpay_signature, recording

API = "https://razorpay.test/razorpay/v1"  # written as Razorpay writes its base (…/v1); the SDK adds /v1 itself
SECRET = "webhook_secret_test"
PAY = "pay_G8VQzjPLoAvm6D"
BASIC = "Basic " + base64.b64encode(b"rzp_test_key:key_secret").decode()


def make_gateway(now: float = 1606985500) -> RazorpayGateway:
    return RazorpayGateway(
        key_id="rzp_test_key", key_secret="key_secret", webhook_secret=SECRET, api_base=API, clock=lambda: now
    )


@pytest.fixture
def gateway() -> RazorpayGateway:
    return make_gateway()


def sent(call: responses.Call) -> dict:
    return json.loads(call.request.body)


@responses.activate
def test_it_opens_a_payment_link_carrying_our_reference_and_key(gateway: RazorpayGateway) -> None:
    responses.get(
        f"{API}/payment_links",
        json=recording("razorpay/payment_links_none"),
        match=[matchers.query_param_matcher({"reference_id": "PAY-000124"})],
    )
    responses.post(f"{API}/payment_links", json=recording("razorpay/payment_link_created"))

    checkout = gateway.checkout(
        amount_minor=50000,
        currency="INR",
        reference="PAY-000124",
        description="Charging session",
        return_url="https://emsp.example/pay/return",
        idempotency_key="checkout:PAY-000124",
    )

    link = recording("razorpay/payment_link_created")
    assert checkout == port.Checkout(checkout_id=link["id"], url=link["short_url"])
    create = responses.calls[1]
    assert create.request.headers["Authorization"] == BASIC
    body = sent(create)
    assert body["amount"] == 50000 and body["currency"] == "INR"
    assert body["reference_id"] == "PAY-000124"
    assert body["notes"] == {"reference": "PAY-000124", "idempotency_key": "checkout:PAY-000124"}
    assert body["callback_url"] == "https://emsp.example/pay/return"
    assert body["accept_partial"] is False


@responses.activate
def test_a_retried_checkout_finds_its_link_instead_of_making_another(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payment_links", json={"payment_links": [recording("razorpay/payment_link_created")]})

    checkout = gateway.checkout(
        amount_minor=50000,
        currency="INR",
        reference="PAY-000124",
        description="Charging session",
        return_url="https://emsp.example/pay/return",
        idempotency_key="checkout:PAY-000124",
    )

    assert checkout.checkout_id == recording("razorpay/payment_link_created")["id"]
    assert [c.request.method for c in responses.calls] == ["GET"]


@responses.activate
def test_it_captures_in_full_and_refunds_what_is_above_the_bill(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_authorized"))
    responses.post(f"{API}/payments/{PAY}/capture", json=recording("razorpay/payment_captured"))
    responses.get(f"{API}/payments/{PAY}/refunds", json=recording("razorpay/refunds_none"))
    responses.post(f"{API}/payments/{PAY}/refund", json=recording("razorpay/refund_capture_rest"))

    result = gateway.capture(payment_id=PAY, amount_minor=30000, currency="INR", idempotency_key="capture:PAY-000124")

    assert result == port.GatewayResult(reference=PAY, amount_minor=30000, status="captured")
    capture, refund = responses.calls[1], responses.calls[3]
    assert sent(capture) == {"amount": 50000, "currency": "INR"}  # Razorpay captures the whole authorisation only
    assert sent(refund) == {
        "amount": 20000,
        "speed": "normal",
        "receipt": "capture:PAY-000124:rest",
        "notes": {"idempotency_key": "capture:PAY-000124:rest", "purpose": "capture_rest"},
    }
    assert refund.request.headers["X-Refund-Idempotency"] == refund_idempotency_key("capture:PAY-000124:rest")


@responses.activate
def test_a_retried_capture_neither_captures_nor_refunds_again(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_captured"))
    responses.get(f"{API}/payments/{PAY}/refunds", json=recording("razorpay/refunds_capture_rest"))

    result = gateway.capture(payment_id=PAY, amount_minor=30000, currency="INR", idempotency_key="capture:PAY-000124")

    assert result.amount_minor == 30000
    assert [c.request.method for c in responses.calls] == ["GET", "GET"]


@responses.activate
def test_a_full_capture_refunds_nothing(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_authorized"))
    responses.post(f"{API}/payments/{PAY}/capture", json=recording("razorpay/payment_captured"))

    gateway.capture(payment_id=PAY, amount_minor=50000, currency="INR", idempotency_key="k")

    assert len(responses.calls) == 2


@responses.activate
def test_capturing_more_than_authorised_is_refused_before_any_capture(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_authorized"))

    with pytest.raises(port.GatewayError) as caught:
        gateway.capture(payment_id=PAY, amount_minor=50001, currency="INR", idempotency_key="k")

    assert caught.value.retryable is False
    assert len(responses.calls) == 1


@responses.activate
def test_a_refund_goes_out_once_per_key(gateway: RazorpayGateway) -> None:
    refund = recording("razorpay/refund_processed")
    responses.get(f"{API}/payments/{PAY}/refunds", json=recording("razorpay/refunds_none"))
    responses.post(f"{API}/payments/{PAY}/refund", json=refund)

    result = gateway.refund(payment_id=PAY, amount_minor=1000, currency="INR", idempotency_key="refund:PAY-000124:1")

    assert result == port.GatewayResult(reference=refund["id"], amount_minor=1000, status="processed")
    assert sent(responses.calls[1])["notes"] == {"idempotency_key": "refund:PAY-000124:1", "purpose": "refund"}
    assert sent(responses.calls[1])["receipt"] == "refund:PAY-000124:1"
    # Razorpay's own idempotency for refunds: a key of 10+ letters, digits, - and _, the same on every retry.
    header = responses.calls[1].request.headers["X-Refund-Idempotency"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{10,}", header)
    assert header == refund_idempotency_key("refund:PAY-000124:1") != refund_idempotency_key("refund:PAY-000124:2")


@responses.activate
def test_a_retried_refund_returns_the_first_one(gateway: RazorpayGateway) -> None:
    refund = recording("razorpay/refund_processed")
    responses.get(f"{API}/payments/{PAY}/refunds", json={"entity": "collection", "count": 1, "items": [refund]})

    result = gateway.refund(payment_id=PAY, amount_minor=1000, currency="INR", idempotency_key="refund:PAY-000124:1")

    assert result.reference == refund["id"]
    assert [c.request.method for c in responses.calls] == ["GET"]


@responses.activate
def test_a_key_reused_for_another_amount_is_refused(gateway: RazorpayGateway) -> None:
    refund = recording("razorpay/refund_processed")
    responses.get(f"{API}/payments/{PAY}/refunds", json={"entity": "collection", "count": 1, "items": [refund]})

    with pytest.raises(port.GatewayError, match="was used for 1000"):
        gateway.refund(payment_id=PAY, amount_minor=2000, currency="INR", idempotency_key="refund:PAY-000124:1")


@responses.activate
def test_release_of_an_authorisation_leaves_it_to_razorpays_auto_refund(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_authorized"))

    result = gateway.release(payment_id=PAY, idempotency_key="release:PAY-000124")

    assert result == port.GatewayResult(reference=PAY, amount_minor=50000, status="release_pending")
    assert len(responses.calls) == 1  # Razorpay has no void call to make


@responses.activate
def test_release_of_an_auto_captured_payment_refunds_it_all(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_captured"))
    responses.get(f"{API}/payments/{PAY}/refunds", json=recording("razorpay/refunds_none"))
    full = recording("razorpay/refund_processed", amount=50000)
    responses.post(f"{API}/payments/{PAY}/refund", json=full)

    result = gateway.release(payment_id=PAY, idempotency_key="release:PAY-000124")

    assert result == port.GatewayResult(reference=full["id"], amount_minor=50000, status="refunded")
    assert sent(responses.calls[-1])["amount"] == 50000


@responses.activate
def test_a_bad_request_is_not_retryable(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", json=recording("razorpay/payment_authorized"))
    responses.post(f"{API}/payments/{PAY}/capture", status=400, json=recording("razorpay/error_bad_request"))

    with pytest.raises(port.GatewayError) as caught:
        gateway.capture(payment_id=PAY, amount_minor=50000, currency="INR", idempotency_key="k")

    assert (caught.value.retryable, caught.value.code) == (False, "BAD_REQUEST_ERROR")
    assert "equal to the amount authorized" in str(caught.value)


@responses.activate
def test_a_server_error_is_retryable(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", status=500, json=recording("razorpay/error_server"))

    with pytest.raises(port.GatewayError) as caught:
        gateway.release(payment_id=PAY, idempotency_key="k")

    assert caught.value.retryable is True


@responses.activate
def test_a_non_json_gateway_page_is_retryable(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", status=502, body="<html>Bad Gateway</html>")

    with pytest.raises(port.GatewayError) as caught:
        gateway.release(payment_id=PAY, idempotency_key="k")

    assert caught.value.retryable is True


@responses.activate
def test_a_connection_error_is_retryable(gateway: RazorpayGateway) -> None:
    responses.get(f"{API}/payments/{PAY}", body=requests.ConnectionError("connection refused"))

    with pytest.raises(port.GatewayError) as caught:
        gateway.release(payment_id=PAY, idempotency_key="k")

    assert caught.value.retryable is True


# --- webhooks ----------------------------------------------------------------------------------------------------


def signed(name: str, *, secret: str = SECRET, event_id: str = "HK890egfiItP3H") -> tuple[bytes, dict[str, str]]:
    body = as_body(recording(name))
    return body, {"X-Razorpay-Signature": razorpay_signature(body, secret), "X-Razorpay-Event-Id": event_id}


def at(name: str, seconds_after: int = 60) -> RazorpayGateway:
    return make_gateway(now=recording(name)["created_at"] + seconds_after)


@pytest.mark.parametrize(
    ("name", "kind", "amount"),
    [
        ("razorpay/event_payment_authorized", port.AUTHORISED, 50000),
        ("razorpay/event_payment_captured", port.CAPTURED, 50000),
        ("razorpay/event_payment_failed", port.FAILED, 50000),
        ("razorpay/event_refund_processed", port.REFUNDED, 1000),
        ("razorpay/event_refund_processed_auto", port.RELEASED, 50000),
        ("razorpay/event_refund_processed_capture_rest", port.IGNORED, 20000),
        ("razorpay/event_order_paid", port.IGNORED, 50000),
    ],
)
def test_events_are_normalised(name: str, kind: str, amount: int) -> None:
    body, headers = signed(name)

    event = at(name).verify_webhook(body=body, headers=headers)

    assert (event.type, event.amount_minor, event.payment_id) == (kind, amount, PAY)
    assert (event.provider, event.event_id, event.currency) == ("razorpay", "HK890egfiItP3H", "INR")
    assert event.provider_type == recording(name)["event"]


def test_the_reference_comes_from_the_notes_we_gave_the_link() -> None:
    body, headers = signed("razorpay/event_payment_authorized")

    assert at("razorpay/event_payment_authorized").verify_webhook(body=body, headers=headers).reference == "PAY-000124"


def test_an_expired_link_is_a_failed_checkout() -> None:
    name = "razorpay/event_payment_link_expired"
    body, headers = signed(name)

    event = at(name).verify_webhook(body=body, headers=headers)

    link = recording("razorpay/payment_link_created")
    assert (event.type, event.checkout_id, event.reference) == (port.FAILED, link["id"], "PAY-000124")


def test_a_tampered_body_is_rejected() -> None:
    name = "razorpay/event_payment_captured"
    body, headers = signed(name)

    with pytest.raises(port.WebhookRejected):
        at(name).verify_webhook(body=body.replace(b"50000", b"90000"), headers=headers)


def test_a_body_signed_with_another_secret_is_rejected() -> None:
    name = "razorpay/event_payment_captured"
    body, headers = signed(name, secret="someone_else")

    with pytest.raises(port.WebhookRejected):
        at(name).verify_webhook(body=body, headers=headers)


def test_an_event_older_than_a_day_is_a_replay() -> None:
    name = "razorpay/event_payment_captured"
    body, headers = signed(name)

    with pytest.raises(port.WebhookRejected, match="older than 24 h"):
        at(name, seconds_after=24 * 3600 + 1).verify_webhook(body=body, headers=headers)


def test_an_event_from_the_future_is_rejected() -> None:
    name = "razorpay/event_payment_captured"
    body, headers = signed(name)

    with pytest.raises(port.WebhookRejected, match="future"):
        at(name, seconds_after=-301).verify_webhook(body=body, headers=headers)


@pytest.mark.parametrize("missing", ["X-Razorpay-Signature", "X-Razorpay-Event-Id"])
def test_an_event_without_signature_or_event_id_is_rejected(missing: str) -> None:
    name = "razorpay/event_payment_captured"
    body, headers = signed(name)
    del headers[missing]

    with pytest.raises(port.WebhookRejected):
        at(name).verify_webhook(body=body, headers=headers)


def test_headers_are_found_in_django_meta_spelling() -> None:
    name = "razorpay/event_payment_captured"
    body, headers = signed(name)
    meta = {"HTTP_X_RAZORPAY_SIGNATURE": headers["X-Razorpay-Signature"], "HTTP_X_RAZORPAY_EVENT_ID": "evt-1"}

    assert at(name).verify_webhook(body=body, headers=meta).event_id == "evt-1"


def test_a_signature_that_is_not_ascii_is_rejected_not_a_server_error() -> None:
    """The SDK compares with hmac.compare_digest, which raises TypeError on non-ASCII text (a 500 at the view)."""
    name = "razorpay/event_payment_captured"
    body, headers = signed(name)
    headers["X-Razorpay-Signature"] = "\xe9\xe9"
    with pytest.raises(port.WebhookRejected, match="not hex"):
        at(name).verify_webhook(body=body, headers=headers)


@pytest.mark.parametrize(("field", "value"), [("reference", 7), ("amount_minor", "100"), ("amount_minor", 10**20),
                                              ("amount_minor", True), ("payment_id", None)])  # fmt: skip
def test_an_event_whose_fields_are_not_what_we_read_is_rejected(field: str, value: object) -> None:
    fields = {"provider": "razorpay", "event_id": "e1", "type": port.AUTHORISED, "provider_type": "payment.authorized",
              field: value}  # fmt: skip
    with pytest.raises(port.WebhookRejected):
        port.WebhookEvent(**fields)  # type: ignore[arg-type]


@responses.activate
def test_a_refund_still_being_processed_under_its_key_is_worth_retrying(gateway: RazorpayGateway) -> None:
    """Razorpay's 409 for an idempotency key still in progress comes with code BAD_REQUEST_ERROR, like a refusal;
    its documentation says to retry it. A 400 stays a refusal."""
    responses.get(f"{API}/payments/{PAY}/refunds", json={"entity": "collection", "count": 0, "items": []})
    busy = {"error": {"code": "BAD_REQUEST_ERROR", "description": "A request with this key is being processed"}}
    responses.post(f"{API}/payments/{PAY}/refund", json=busy, status=409)
    with pytest.raises(port.GatewayError) as caught:
        gateway.refund(payment_id=PAY, amount_minor=1000, currency="INR", idempotency_key="refund:PAY-000124:1")
    assert (caught.value.retryable, caught.value.code) == (True, "CONFLICT")
    responses.replace(responses.POST, f"{API}/payments/{PAY}/refund", json=busy, status=400)
    with pytest.raises(port.GatewayError) as caught:
        gateway.refund(payment_id=PAY, amount_minor=1000, currency="INR", idempotency_key="refund:PAY-000124:1")
    assert (caught.value.retryable, caught.value.code) == (False, "BAD_REQUEST_ERROR")
