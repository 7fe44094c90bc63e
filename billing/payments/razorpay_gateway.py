"""The Razorpay adapter of the payment port, on Razorpay's own SDK: a Payment Link as the hosted page, payments
captured in full with the difference refunded, refunds found again by our key, and webhooks verified with the SDK's
HMAC check (docs/payments.md explains each Razorpay caveat)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import razorpay
import requests
from razorpay.errors import BadRequestError, SignatureVerificationError
from razorpay.errors import GatewayError as RazorpayGatewayError
from razorpay.errors import ServerError as RazorpayServerError

from .gateway import (
    AUTHORISED,
    CAPTURED,
    FAILED,
    IGNORED,
    LAPSED,
    PAGE_ALREADY_CLOSED,
    PAGE_CLOSED,
    PAGE_PAID,
    REFUND_FAILED,
    REFUND_NOT_MADE,
    REFUNDED,
    RELEASED,
    Checkout,
    CheckoutExpiry,
    GatewayError,
    GatewayResult,
    WebhookEvent,
    WebhookRejected,
    event_object,
    webhook_json,
)
from .stripe_gateway import header

# Razorpay retries a failed delivery for up to 24 hours and signs no timestamp: an event created longer ago than that
# is a replay of a captured delivery, not a retry. A little clock skew is allowed the other way.
MAX_EVENT_AGE_SECONDS = 24 * 3600
MAX_CLOCK_SKEW_SECONDS = 300
# Notes we put on refunds so a retry finds its refund again (Razorpay has no idempotency key on payment links or
# captures; a refund also carries X-Refund-Idempotency, refund_idempotency_key).
KEY_NOTE = "idempotency_key"
PURPOSE_NOTE = "purpose"
CAPTURE_REST = "capture_rest"  # the part of an authorisation above the final bill, refunded by capture()
RECEIPT_MAX = 40  # Razorpay's limit on receipt / reference_id


class _TimeoutSession(requests.Session):
    """The SDK sets no timeout on its requests; this session gives every one of them ours, and notes the HTTP
    status of the last answer in this thread (the SDK's errors don't carry it)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.last = threading.local()

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout)
        self.last.status = None
        response = super().request(method, url, **kwargs)
        self.last.status = response.status_code
        return response


class RazorpayGateway:
    """PaymentGateway for Razorpay (INR). Stateless; idempotent by looking at Razorpay's own records first: the link
    with our reference, the payment's status, the refund that carries our key in its notes."""

    name = "razorpay"

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        webhook_secret: str,
        api_base: str,
        timeout: float = 20.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        base = api_base.rstrip("/")
        # The SDK puts /v1 in front of every path itself (base_url defaults to https://api.razorpay.com), so an
        # API base written the way Razorpay's docs write it (…/v1) loses its /v1 here.
        base = base.removesuffix("/v1")
        self.client = razorpay.Client(session=_TimeoutSession(timeout), auth=(key_id, key_secret), base_url=base)
        self.client.set_app_details({"title": "emsp-platform"})
        self.webhook_secret = webhook_secret
        self.clock = clock

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, headers: dict[str, str] | None = None) -> Any:
        try:
            return fn(*args, headers=headers) if headers else fn(*args)
        except BadRequestError as exc:
            # Razorpay answers every refusal (bad amount, wrong state, bad key) with code BAD_REQUEST_ERROR, and
            # with the same code a 409 for a refund whose idempotency key is still being processed ("You may retry
            # the request upon receiving this response"): that one is worth trying again.
            if getattr(self.client.session.last, "status", None) == 409:
                raise GatewayError(f"razorpay {what}: {exc}", retryable=True, code="CONFLICT") from exc
            raise GatewayError(f"razorpay {what}: {exc}", retryable=False, code="BAD_REQUEST_ERROR") from exc
        except (RazorpayGatewayError, RazorpayServerError) as exc:
            code = "GATEWAY_ERROR" if isinstance(exc, RazorpayGatewayError) else "SERVER_ERROR"
            raise GatewayError(f"razorpay {what}: {exc}", retryable=True, code=code) from exc
        except requests.RequestException as exc:  # connection refused, timeout, a non-JSON answer from a proxy
            raise GatewayError(f"razorpay {what}: {exc}", retryable=True, code=type(exc).__name__) from exc

    # --- the port ---------------------------------------------------------------------------------------------

    def checkout(
        self,
        *,
        amount_minor: int,
        currency: str,
        reference: str,
        description: str,
        return_url: str,
        idempotency_key: str,
    ) -> Checkout:
        """A Payment Link (Razorpay's hosted page, a plain GET URL). It authorises only when the account's payment
        capture setting is manual, which Razorpay applies to the link's order; if the account auto-captures, capture()
        still ends with the right amount taken (it refunds the difference). A retry finds the link it made by our
        reference (reference_id, unique per link at Razorpay) and our key in its notes."""
        _positive(amount_minor)
        if len(reference) > RECEIPT_MAX:
            raise GatewayError(f"razorpay checkout: reference longer than {RECEIPT_MAX} characters: {reference!r}")
        found = self._call("checkout", self.client.payment_link.all, {"reference_id": reference})
        for link in found.get("payment_links") or []:
            if (link.get("notes") or {}).get(KEY_NOTE) == idempotency_key:
                return Checkout(checkout_id=link["id"], url=link["short_url"])
        link = self._call(
            "checkout",
            self.client.payment_link.create,
            {
                "amount": amount_minor,
                "currency": currency.upper(),
                "accept_partial": False,
                "reference_id": reference,
                "description": (description or reference)[:2048],
                "callback_url": return_url,
                "callback_method": "get",
                "notify": {"sms": False, "email": False},
                "reminder_enable": False,
                "notes": {"reference": reference, KEY_NOTE: idempotency_key},
            },
        )
        return Checkout(checkout_id=link["id"], url=link["short_url"])

    def capture(
        self, *, payment_id: str, amount_minor: int, currency: str, idempotency_key: str, repeated: bool = False
    ) -> GatewayResult:
        """Razorpay captures only the whole authorised amount ("amount … should be equal to the authorized
        amount"), so this captures it all and, in the same call, refunds what is above `amount_minor`, with the key
        `<idempotency_key>:rest`. Each step looks first: a captured payment is not captured again, a refund with
        our key is not made twice. Once Razorpay has captured, this answers: if the refund of the rest fails, the
        result says what was taken (the whole authorisation), for the caller to book the capture and refund the
        rest on its own with that key (refund() then finds a refund that did go through)."""
        _positive(amount_minor)
        payment = self._fetch(payment_id)
        if payment["currency"] != currency.upper():
            raise GatewayError(f"razorpay capture: {payment_id} is in {payment['currency']}, not {currency}")
        if amount_minor > payment["amount"]:
            raise GatewayError(
                f"razorpay capture: {amount_minor} is more than the {payment['amount']} authorised on {payment_id}"
            )
        if payment["status"] == "authorized":
            payment = self._call(
                "capture", self.client.payment.capture, payment_id, payment["amount"], {"currency": payment["currency"]}
            )
        elif not _taken(payment):
            if payment["status"] == "refunded":
                # Razorpay refunded the authorisation itself when the account's manual-capture timeout passed:
                # nothing was ever taken (captured: false), and nothing can be now.
                raise GatewayError(
                    f"razorpay capture: {payment_id} was refunded by Razorpay uncaptured: its authorisation lapsed",
                    code=LAPSED,
                )
            raise GatewayError(f"razorpay capture: {payment_id} is {payment['status']}", code=payment["status"])
        rest = payment["amount"] - amount_minor
        if rest:
            try:
                refund = self._refund_once(payment_id, rest, f"{idempotency_key}:rest", purpose=CAPTURE_REST)
            except GatewayError:
                return GatewayResult(reference=payment_id, amount_minor=payment["amount"], status="captured")
            if refund.get("status") in REFUND_NOT_MADE:
                # A repeat finds the refund of the rest made and failed since: the rest was not given back. Taken
                # as made, it was booked nowhere (the capture books the bill) and the driver never got it; answered
                # as the whole authorisation taken, the caller owes the rest and refunds it under the same key,
                # which finds this failed refund and credits the driver's account.
                return GatewayResult(reference=payment_id, amount_minor=payment["amount"], status="captured")
        return GatewayResult(reference=payment_id, amount_minor=amount_minor, status="captured")

    def release(self, *, payment_id: str, idempotency_key: str, repeated: bool = False) -> GatewayResult:
        """Razorpay has no void: an authorised payment that is never captured is refunded to the driver by Razorpay
        itself when the account's manual-capture timeout passes (3 days by default), with a refund.processed
        webhook (which verify_webhook reports as RELEASED). So for an authorised payment this only reports
        `release_pending`; a payment already captured (an auto-capturing account) is refunded in full at once."""
        payment = self._fetch(payment_id)
        status = payment["status"]
        if status == "authorized":
            return GatewayResult(reference=payment_id, amount_minor=payment["amount"], status="release_pending")
        if _taken(payment):
            refund = self._find_refund(payment_id, idempotency_key)
            left = payment["amount"] - payment.get("amount_refunded", 0)
            if refund is None and left > 0:
                refund = self._refund_once(payment_id, left, idempotency_key, purpose="release")
            if refund is not None:
                return GatewayResult(reference=refund["id"], amount_minor=refund["amount"], status="refunded")
        return GatewayResult(reference=payment_id, amount_minor=0, status=status)

    def refund(
        self, *, payment_id: str, amount_minor: int, currency: str, idempotency_key: str, repeated: bool = False
    ) -> GatewayResult:
        # `repeated` changes nothing here: every call looks at Razorpay's records first.
        _positive(amount_minor)
        # The rest of a capture that capture() could not refund comes back here with capture()'s key for it.
        purpose = CAPTURE_REST if idempotency_key.endswith(":rest") else "refund"
        refund = self._refund_once(payment_id, amount_minor, idempotency_key, purpose=purpose)
        if refund.get("currency", currency.upper()) != currency.upper():
            raise GatewayError(f"razorpay refund: {payment_id} is in {refund['currency']}, not {currency}")
        return GatewayResult(reference=refund["id"], amount_minor=refund["amount"], status=refund["status"])

    def expire_checkout(self, *, checkout_id: str, idempotency_key: str) -> CheckoutExpiry:
        """Cancels the Payment Link (POST /v1/payment_links/{id}/cancel; Razorpay takes no idempotency key on it).
        Razorpay cancels only a link in the created state, so a refusal is followed by a look at the link: one the
        driver paid (or authorised, with manual capture), or already cancelled or expired (a repeat), is answered
        as such; a link still open raises the refusal."""
        try:
            link = self._call("cancel the link", self.client.payment_link.cancel, checkout_id)
        except GatewayError as refused:
            try:
                link = self._call("fetch the link", self.client.payment_link.fetch, checkout_id)
            except GatewayError:
                raise refused from refused.__cause__  # what the cancel met, not the look-up's trouble
            expiry = _link_expiry(checkout_id, link, closed_now=False)
            if expiry is None:
                raise
            return expiry
        closed = CheckoutExpiry(checkout_id=checkout_id, outcome=PAGE_CLOSED, status=str(link.get("status", "")))
        return _link_expiry(checkout_id, link, closed_now=True) or closed

    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """X-Razorpay-Signature must be the hex HMAC-SHA256 of the raw body with the webhook secret (checked by the
        SDK's Utility.verify_webhook_signature, in constant time). The signature covers no timestamp, so the event's
        own created_at must be within 24 h (Razorpay's retry horizon) and not in the future; replays inside that
        window carry the same X-Razorpay-Event-Id, which the caller records once (ProviderWebhook)."""
        signature = header(headers, "X-Razorpay-Signature")
        event_id = header(headers, "X-Razorpay-Event-Id")
        if not signature:
            raise WebhookRejected("razorpay webhook: no X-Razorpay-Signature")
        if not signature.isascii():  # the SDK's compare_digest raises TypeError on other text: a 500
            raise WebhookRejected("razorpay webhook: the signature is not hex")
        try:
            text = body.decode("utf-8")
            self.client.utility.verify_webhook_signature(text, signature, self.webhook_secret)
        except SignatureVerificationError as exc:
            raise WebhookRejected("razorpay webhook: signature does not match") from exc
        except ValueError as exc:
            raise WebhookRejected(f"razorpay webhook body: {exc}") from exc
        payload = webhook_json(text, "razorpay")
        if not event_id:
            raise WebhookRejected("razorpay webhook: no X-Razorpay-Event-Id")
        if not isinstance(payload, dict) or payload.get("entity") != "event":
            raise WebhookRejected("razorpay webhook: not an event")
        created_at = payload.get("created_at")
        if not isinstance(created_at, int) or isinstance(created_at, bool):
            raise WebhookRejected("razorpay webhook: no created_at")
        now = self.clock()
        if created_at < now - MAX_EVENT_AGE_SECONDS:
            raise WebhookRejected(f"razorpay webhook: created {int(now - created_at)} s ago, older than 24 h")
        if created_at > now + MAX_CLOCK_SKEW_SECONDS:
            raise WebhookRejected("razorpay webhook: created in the future")
        return normalise_event(payload, event_id=event_id)

    # --- helpers ----------------------------------------------------------------------------------------------

    def _fetch(self, payment_id: str) -> dict[str, Any]:
        return self._call("fetch payment", self.client.payment.fetch, payment_id, {})

    def _find_refund(self, payment_id: str, key: str) -> dict[str, Any] | None:
        refunds = self._call("list refunds", self.client.payment.fetch_multiple_refund, payment_id, {"count": 100})
        for refund in refunds.get("items") or []:
            if _notes(refund).get(KEY_NOTE) == key:
                return refund
        return None

    def _refund_once(self, payment_id: str, amount_minor: int, key: str, *, purpose: str) -> dict[str, Any]:
        """The refund of `payment_id` made with `key`, made now if there is none yet."""
        refund = self._find_refund(payment_id, key)
        if refund is not None:
            if refund["amount"] != amount_minor:
                raise GatewayError(
                    f"razorpay refund: key {key!r} was used for {refund['amount']}, not {amount_minor}",
                    code="idempotency_mismatch",
                )
            return refund
        return self._call(
            "refund",
            self.client.payment.refund,
            payment_id,
            {
                "amount": amount_minor,
                "speed": "normal",
                "receipt": key[:RECEIPT_MAX],
                "notes": {KEY_NOTE: key, PURPOSE_NOTE: purpose},
            },
            headers={"X-Refund-Idempotency": refund_idempotency_key(key)},
        )


def normalise_event(payload: Mapping[str, Any], *, event_id: str) -> WebhookEvent:
    """A verified Razorpay event in the port's words. Our reference is in the notes we gave the link (Razorpay
    carries them to the link's order and payments) or the link's reference_id."""
    provider_type = str(payload.get("event", ""))
    body = event_object(payload.get("payload"), "payload", "razorpay")

    def entity(name: str) -> Mapping[str, Any]:
        wrapper = event_object(body.get(name), f"payload.{name}", "razorpay")
        return event_object(wrapper.get("entity"), f"payload.{name}.entity", "razorpay")

    payment, refund, link = entity("payment"), entity("refund"), entity("payment_link")
    notes = _notes(payment) or _notes(link)
    fields: dict[str, Any] = {
        "reference": notes.get("reference") or link.get("reference_id") or "",
        "checkout_id": link.get("id", ""),
        "payment_id": payment.get("id", ""),
        "currency": str(payment.get("currency") or link.get("currency") or "").upper(),
        "amount_minor": payment.get("amount") or link.get("amount") or 0,
    }
    kind = IGNORED
    if provider_type == "payment.authorized":
        kind = AUTHORISED
    elif provider_type == "payment.captured":
        kind = CAPTURED  # the whole authorised amount: Razorpay captures no less (see capture())
    elif provider_type == "payment.failed":
        kind = FAILED
    elif provider_type in ("refund.processed", "refund.failed") and refund:
        fields.update(
            payment_id=refund.get("payment_id", fields["payment_id"]),
            amount_minor=refund.get("amount", 0),
            refund_id=refund.get("id") or "",
            refund_key=_notes(refund).get(KEY_NOTE) or "",
        )
        purpose = _notes(refund).get(PURPOSE_NOTE)
        if provider_type == "refund.failed":
            # The refund did not reach the driver: Razorpay puts the amount back in our balance. Whichever refund
            # it was (a credit's, the rest of a capture, a release), the caller finds it by its id and key.
            kind = REFUND_FAILED
        elif (payment and payment.get("captured") is False) or purpose == "release":
            kind = RELEASED  # Razorpay's auto-refund of an authorisation never captured, or release() of a capture
        elif purpose != CAPTURE_REST:
            kind = REFUNDED  # the rest of a capture is part of capture(), not a refund to report
    elif provider_type in ("payment_link.expired", "payment_link.cancelled"):
        kind = FAILED  # the driver never paid: nothing was authorised
    return WebhookEvent(
        provider="razorpay", event_id=event_id, type=kind, provider_type=provider_type, raw=payload, **fields
    )


def _link_expiry(checkout_id: str, link: Mapping[str, Any], *, closed_now: bool) -> CheckoutExpiry | None:
    """What a Payment Link's state says of it once it can't be paid: paid (in full, or a payment authorised on it,
    which with manual capture leaves the link `created`), cancelled or expired; None while it is still open."""
    status = str(link.get("status", ""))
    payments = link.get("payments") or []
    taken = any(isinstance(p, Mapping) and p.get("status") in ("authorized", "captured") for p in payments)
    if status in ("paid", "partially_paid") or taken:
        outcome = PAGE_PAID
    elif status in ("cancelled", "expired"):
        outcome = PAGE_CLOSED if closed_now else PAGE_ALREADY_CLOSED
    else:
        return None
    return CheckoutExpiry(checkout_id=checkout_id, outcome=outcome, status=status)


def _taken(payment: Mapping[str, Any]) -> bool:
    """Was the payment captured (then maybe refunded since)? A `refunded` payment with `captured: false` is an
    authorisation Razorpay refunded itself at its manual-capture timeout: nothing was taken."""
    return payment["status"] == "captured" or (payment["status"] == "refunded" and payment.get("captured") is True)


def _notes(entity: Mapping[str, Any]) -> Mapping[str, Any]:
    # Razorpay sends empty notes as [] (a PHP habit), filled ones as an object.
    notes = entity.get("notes")
    return notes if isinstance(notes, Mapping) else {}


def _positive(amount_minor: int) -> None:
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise GatewayError(f"amount must be a positive whole number of minor units, not {amount_minor!r}")


def refund_idempotency_key(key: str) -> str:
    """Our key as Razorpay's `X-Refund-Idempotency` takes one (at least 10 characters of letters, digits, `-` and
    `_`; ours hold `:`): a digest of it, the same for every retry of one refund. Razorpay then makes a refund
    whose answer was lost at most once, even between two retries that both found no refund by our notes key."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]
