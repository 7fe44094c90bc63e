"""The Stripe adapter of the payment port, on Stripe's own SDK: Checkout Sessions with manual capture, PaymentIntent
capture/cancel, Refunds, and webhooks verified by the SDK (docs/payments.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import stripe

from billing.money import MINOR_UNITS, minor_units

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

# Stripe's own default (stripe.Webhook.DEFAULT_TOLERANCE): a signature older than this is a replay.
SIGNATURE_TOLERANCE_SECONDS = 300
# The events that carry a refund whose status changed (charge.refund.updated: the older name, some methods).
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")


# Stripe's API amounts are not always ISO 4217 minor units (ours; billing/money.py), stripe.com/docs/currencies:
# zero-decimal currencies are whole units (MGA too, which ISO gives two decimals); three-decimal ones keep three
# decimals but "require the least-significant (last) digit to be 0"; ISK stays two-decimal in the API
# ("an ISK amount of 100 … represents 1 króna") though only whole krónur are charged ("evenly divisible by 100").
STRIPE_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)
STRIPE_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})
STRIPE_TWO_DECIMAL_WHOLE_UNITS = frozenset({"ISK"})


def _stripe_decimals(currency: str) -> int:
    code = currency.upper()
    return 0 if code in STRIPE_ZERO_DECIMAL else 3 if code in STRIPE_THREE_DECIMAL else 2


def _stripe_step(currency: str) -> int:
    """The smallest amount Stripe charges, in its API amounts (every amount a multiple of it)."""
    code = currency.upper()
    return 100 if code in STRIPE_TWO_DECIMAL_WHOLE_UNITS else 10 if code in STRIPE_THREE_DECIMAL else 1


def to_stripe_amount(amount_minor: int, currency: str) -> int:
    """Our ISO 4217 minor units as Stripe's API amount, exactly (ISK 5000 → 500000), or a non-retryable
    GatewayError where Stripe can't carry this amount (MGA 1234.56; KWD 1.481): never rounded, which would take
    or give back another amount than the bill's."""
    try:
        shift = _stripe_decimals(currency) - minor_units(currency)
    except ValueError:
        raise GatewayError(f"stripe: unknown currency {currency!r}", code="currency_unknown") from None
    amount, left = (amount_minor * 10**shift, 0) if shift >= 0 else divmod(amount_minor, 10**-shift)
    if left or amount % _stripe_step(currency):
        raise GatewayError(
            f"stripe: {amount_minor} minor units of {currency.upper()} is not an amount Stripe can charge exactly",
            code="amount_not_exact",
        )
    return amount


def from_stripe_amount(amount: int, currency: str) -> int:
    """Stripe's API amount in our ISO 4217 minor units (ISK 500000 → 5000). ValueError if it isn't a whole number
    of them, or the currency isn't one we know."""
    shift = _stripe_decimals(currency) - minor_units(currency)
    if shift <= 0:
        return amount * 10**-shift
    ours, left = divmod(amount, 10**shift)
    if left:
        raise ValueError(f"{amount} in Stripe's {currency.upper()} amounts is not a whole number of minor units")
    return ours


def exact_at_stripe(currency: str) -> bool:
    """Every amount of `currency` in our minor units is one Stripe can charge, capture and refund exactly. Not
    so for MGA (whole ariary at Stripe) and the three-decimal dinars (tens of fils): a bill or a credit of a
    fraction of those can't be collected there as booked."""
    try:
        to_stripe_amount(1, currency)
    except GatewayError:
        return False
    return True


def header(headers: Mapping[str, str], name: str) -> str:
    """`name` from a header mapping in any spelling: Django's request.headers, a plain dict, or request.META."""
    wanted = name.lower()
    meta = "http_" + wanted.replace("-", "_")
    for key, value in headers.items():
        if key.lower() in (wanted, meta):
            return value
    return ""


def _retryable(exc: stripe.StripeError) -> bool:
    """Network trouble, 5xx, 429 and 409 (another request with this idempotency key is still running) may succeed
    on a retry with the same key; card declines and invalid requests never will. Stripe's own hint
    (Stripe-Should-Retry) wins when it is given."""
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    hint = (exc.headers or {}).get("stripe-should-retry")
    if hint in ("true", "false"):
        return hint == "true"
    status = exc.http_status or 0
    return status == 409 or status >= 500


class StripeGateway:
    """PaymentGateway for Stripe. Stateless: every call is one request (or one verification) with our idempotency key
    passed as Stripe's Idempotency-Key, so a retry of the same call gets Stripe's first answer back."""

    name = "stripe"

    def __init__(self, *, api_key: str, webhook_secret: str, api_base: str, timeout: float = 20.0) -> None:
        self.webhook_secret = webhook_secret
        # RequestsClient: the SDK would pick requests anyway when it is installed; naming it keeps one HTTP stack
        # (and lets the tests answer at requests' transport). No SDK retries: the caller retries with the same key.
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")},
            http_client=stripe.RequestsClient(timeout=timeout),
            max_network_retries=0,
        )

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except stripe.StripeError as exc:
            code = getattr(exc, "code", None) or (exc.error.type if exc.error else "") or type(exc).__name__
            raise GatewayError(
                f"stripe {what}: {exc.user_message or exc}", retryable=_retryable(exc), code=str(code)
            ) from exc

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
        _positive(amount_minor)
        if not exact_at_stripe(currency):
            # Refused before the driver authorises anything: the capture of a bill, or a refund, in this currency
            # could name an amount Stripe can't carry (docs/payments.md, currencies). Our minor units are ISO's.
            raise GatewayError(
                f"stripe checkout: {currency.upper()} is not collected through Stripe, which can't charge every "
                f"{currency.upper()} amount exactly (stripe.com/docs/currencies)",
                code="currency_not_exact",
            )
        params = {
            "mode": "payment",
            "success_url": return_url,
            "client_reference_id": reference,
            "metadata": {"reference": reference},
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": to_stripe_amount(amount_minor, currency),
                        "product_data": {"name": description or reference},
                    },
                }
            ],
            # Manual capture: the page only authorises; we capture the final bill once the CDR is in.
            "payment_intent_data": {
                "capture_method": "manual",
                "description": description or reference,
                "metadata": {"reference": reference},
            },
        }
        session = self._call(
            "checkout", self.client.v1.checkout.sessions.create, params, {"idempotency_key": idempotency_key}
        )
        return Checkout(checkout_id=session.id, url=session.url)

    def capture(
        self, *, payment_id: str, amount_minor: int, currency: str, idempotency_key: str, repeated: bool = False
    ) -> GatewayResult:
        # Stripe captures `amount_to_capture` and releases the rest of the authorisation itself. A repeat looks at
        # the PaymentIntent first: captured is done (Stripe captures a PaymentIntent once), whatever Stripe
        # replays for our key. One Stripe cancelled meanwhile (an authorisation not captured within its 7 days is
        # cancelled by Stripe, status canceled) can never be captured: the hold lapsed (GatewayError LAPSED).
        _positive(amount_minor)
        amount = to_stripe_amount(amount_minor, currency)
        intent = self._intent_if(repeated, payment_id, "succeeded")
        if intent is None:
            try:
                intent = self._call(
                    "capture",
                    self.client.v1.payment_intents.capture,
                    payment_id,
                    {"amount_to_capture": amount},
                    {"idempotency_key": idempotency_key},
                )
            except GatewayError as refused:
                if refused.retryable or refused.code != "payment_intent_unexpected_state":
                    raise
                self._raise_if_lapsed(payment_id, refused)
                raise
        if intent.currency.upper() != currency.upper():
            raise GatewayError(f"stripe capture: {payment_id} is in {intent.currency.upper()}, not {currency}")
        return GatewayResult(
            reference=intent.id, amount_minor=from_stripe_amount(intent.amount_received, currency), status=intent.status
        )

    def release(self, *, payment_id: str, idempotency_key: str, repeated: bool = False) -> GatewayResult:
        intent = self._intent_if(repeated, payment_id, "canceled")
        if intent is None:
            intent = self._call(
                "release", self.client.v1.payment_intents.cancel, payment_id, {}, {"idempotency_key": idempotency_key}
            )
        # What the authorisation was (nothing is taken): in our minor units where we know the currency.
        amount = from_stripe_amount(intent.amount, intent.currency) if intent.currency.upper() in MINOR_UNITS else 0
        return GatewayResult(reference=intent.id, amount_minor=amount, status=intent.status)

    def refund(
        self, *, payment_id: str, amount_minor: int, currency: str, idempotency_key: str, repeated: bool = False
    ) -> GatewayResult:
        # A repeat looks for the refund with our key in its metadata first: made is done, whatever Stripe replays for
        # the key (a 500 for 24 h), and a repeat after Stripe forgot the key doesn't refund again.
        _positive(amount_minor)
        amount = to_stripe_amount(amount_minor, currency)
        refund = self._refund_made(payment_id, idempotency_key) if repeated else None
        if refund is None:
            refund = self._call(
                "refund",
                self.client.v1.refunds.create,
                {"payment_intent": payment_id, "amount": amount, "metadata": {"idempotency_key": idempotency_key}},
                {"idempotency_key": idempotency_key},
            )
        if refund.currency.upper() != currency.upper():
            raise GatewayError(f"stripe refund: {payment_id} is in {refund.currency.upper()}, not {currency}")
        return GatewayResult(
            reference=refund.id, amount_minor=from_stripe_amount(refund.amount, currency), status=refund.status
        )

    def expire_checkout(self, *, checkout_id: str, idempotency_key: str) -> CheckoutExpiry:
        """POST /v1/checkout/sessions/{id}/expire with our key. Stripe expires only an `open` session ("Only
        Checkout Sessions with a status in ["open"] can be expired"), so a refusal is followed by a look at the
        session: one the driver completed, or already expired, is answered as such. So is an error Stripe replays
        for our key (a 500 kept 24 h) once the session is no longer open; an open one raises the error."""
        try:
            session = self._call(
                "expire checkout",
                self.client.v1.checkout.sessions.expire,
                checkout_id,
                {},
                {"idempotency_key": idempotency_key},
            )
        except GatewayError as refused:
            try:
                session = self._call("look up the checkout", self.client.v1.checkout.sessions.retrieve, checkout_id)
            except GatewayError:
                raise refused from refused.__cause__  # what the expiry met, not the look-up's trouble
            if session.status == "open":
                raise
            outcome = PAGE_PAID if session.status == "complete" else PAGE_ALREADY_CLOSED
            return CheckoutExpiry(checkout_id=session.id, outcome=outcome, status=session.status)
        return CheckoutExpiry(checkout_id=session.id, outcome=PAGE_CLOSED, status=session.status)

    def _raise_if_lapsed(self, payment_id: str, refused: GatewayError) -> None:
        """After a capture refused for the PaymentIntent's state: LAPSED if Stripe cancelled it (its authorisation
        expired, or it was cancelled elsewhere), so the caller knows nothing was taken and nothing will be."""
        try:
            intent = self._call("look up the payment", self.client.v1.payment_intents.retrieve, payment_id)
        except GatewayError:
            return  # the capture's refusal stands
        if intent.status == "canceled":
            raise GatewayError(
                f"stripe capture: {payment_id} was canceled ({intent.cancellation_reason or 'no reason given'}) "
                "before the capture: its authorisation lapsed",
                code=LAPSED,
            ) from refused

    def _intent_if(self, repeated: bool, payment_id: str, status: str) -> Any:
        """On a repeat, the PaymentIntent if it is already `status` (what the earlier attempt asked for), else None."""
        if not repeated:
            return None
        intent = self._call("look up the payment", self.client.v1.payment_intents.retrieve, payment_id)
        return intent if intent.status == status else None

    def _refund_made(self, payment_id: str, idempotency_key: str) -> Any:
        """The refund of `payment_id` we made with this key (in its metadata), whatever became of it: one that
        failed or was canceled is answered with its status (REFUND_NOT_MADE: the caller credits the driver's
        account), unless another with the key went through. Passed over, the refund was asked again under the same
        key, and Stripe replayed its first answer (the refund as made, `succeeded` or `pending`): booked as paid
        while the driver got nothing; after Stripe forgot the key, a second refund was made."""
        refunds = self._call(
            "look up refunds", self.client.v1.refunds.list, {"payment_intent": payment_id, "limit": 100}
        )
        failed = None
        for refund in refunds.data:
            metadata = refund.metadata.to_dict() if refund.metadata else {}
            if metadata.get("idempotency_key") != idempotency_key:
                continue
            if refund.status not in REFUND_NOT_MADE:
                return refund
            failed = failed or refund
        return failed

    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Stripe's own check (stripe.WebhookSignature.verify_header, as construct_event makes it): HMAC-SHA256 of
        "<t>.<body>" with the endpoint secret in the Stripe-Signature header's v1, and t no older than 300 s, so a
        captured delivery cannot be replayed later. A replay inside the window carries the same event id, which the
        caller records once."""
        signature = header(headers, "Stripe-Signature")
        if signature and not signature.isascii():  # the SDK's compare_digest raises TypeError on other text
            raise WebhookRejected("stripe signature: not ASCII")
        try:
            # The SDK's check, the first step of its construct_event; the event it would then build from the body
            # (a StripeObject, recursively) we don't use, and it broke on a signed body that is no JSON object (an
            # AttributeError) or nests deep (a RecursionError): the body is read by webhook_json instead.
            stripe.WebhookSignature.verify_header(body, signature, self.webhook_secret, SIGNATURE_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected(f"stripe signature: {exc.user_message or exc}") from exc
        except ValueError as exc:  # not UTF-8
            raise WebhookRejected(f"stripe webhook body: {exc}") from exc
        return normalise_event(webhook_json(body, "stripe"))


def normalise_event(payload: Mapping[str, Any]) -> WebhookEvent:
    """A verified Stripe event in the port's words. The reference is ours, from the metadata we set at checkout (the
    session's and its PaymentIntent's); refunds carry none (match them on payment_id)."""
    if not isinstance(payload, Mapping) or payload.get("object") != "event" or not payload.get("id"):
        raise WebhookRejected("stripe webhook: not an event")
    provider_type = str(payload.get("type", ""))
    obj = event_object(event_object(payload.get("data"), "data", "stripe").get("object"), "data.object", "stripe")
    metadata = event_object(obj.get("metadata"), "data.object.metadata", "stripe")
    reference = metadata.get("reference") or obj.get("client_reference_id") or ""
    fields: dict[str, Any] = {"reference": reference, "currency": str(obj.get("currency") or "").upper()}
    kind = IGNORED
    if obj.get("object") == "payment_intent":
        fields["payment_id"] = obj.get("id", "")
        if provider_type == "payment_intent.amount_capturable_updated" and obj.get("amount_capturable"):
            kind, fields["amount_minor"] = AUTHORISED, obj["amount_capturable"]
        elif provider_type == "payment_intent.succeeded":
            kind, fields["amount_minor"] = CAPTURED, obj.get("amount_received", 0)
        elif provider_type == "payment_intent.canceled":
            kind, fields["amount_minor"] = RELEASED, obj.get("amount", 0)
        elif provider_type == "payment_intent.payment_failed":
            kind, fields["amount_minor"] = FAILED, obj.get("amount", 0)
    elif obj.get("object") == "checkout.session":
        fields.update(checkout_id=obj.get("id", ""), payment_id=obj.get("payment_intent") or "")
        fields["amount_minor"] = obj.get("amount_total") or 0
        if provider_type == "checkout.session.expired":
            kind = FAILED
    elif obj.get("object") == "refund":
        # refund.created / refund.updated: the refund is money back once its status is succeeded (card refunds
        # usually are at once; others go pending first and succeed later, in a refund.updated). One that fails
        # (refund.failed, or refund.updated to failed; canceled: one awaiting action cancelled) gives the money
        # back to our Stripe balance, even after it showed succeeded: the driver got nothing.
        fields.update(
            payment_id=obj.get("payment_intent") or "",
            amount_minor=obj.get("amount", 0),
            refund_id=obj.get("id") or "",
            refund_key=metadata.get("idempotency_key") or "",
        )
        status = obj.get("status")
        if provider_type == "refund.failed" or (provider_type in REFUND_EVENTS and status in ("failed", "canceled")):
            kind = REFUND_FAILED
        elif provider_type in ("refund.created", "refund.updated") and status == "succeeded":
            kind = REFUNDED
    elif obj.get("object") == "charge":
        fields["payment_id"] = obj.get("payment_intent") or ""
    amount = fields.get("amount_minor")
    if isinstance(amount, int) and not isinstance(amount, bool) and fields["currency"] in MINOR_UNITS:
        try:  # Stripe's API amount in our minor units (ISK: hundredths of a króna at Stripe, whole krónur here)
            fields["amount_minor"] = from_stripe_amount(amount, fields["currency"])
        except ValueError as exc:
            raise WebhookRejected(f"stripe webhook: {exc}") from exc
    return WebhookEvent(
        provider="stripe", event_id=str(payload["id"]), type=kind, provider_type=provider_type, raw=payload, **fields
    )


def _positive(amount_minor: int) -> None:
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or amount_minor <= 0:
        raise GatewayError(f"amount must be a positive whole number of minor units, not {amount_minor!r}")
