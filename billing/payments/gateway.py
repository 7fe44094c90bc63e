"""The payment-gateway port: what the domain asks of a payment provider, and nothing provider-specific.

We never see card data: `checkout` opens a hosted payment page at the provider that *authorises* the amount
(captured later, when the CDR tells us the final bill); the provider tells us the outcome by webhook, which
`verify_webhook` checks exactly as that provider specifies and normalises into a `WebhookEvent`. Every call that
moves money takes our idempotency key, passed on to the provider where it has one, so a retried call never
moves money twice.

Which adapter serves a currency is a setting (`PAYMENT_GATEWAYS`, e.g. INR → razorpay, anything else → stripe);
each adapter's credentials and API base (the sandbox `paysim` by default) are in `PAYMENT_PROVIDERS`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

# Normalised webhook event types (WebhookEvent.type).
AUTHORISED = "authorised"  # the driver paid on the hosted page: the amount is held for us
CAPTURED = "captured"
RELEASED = "released"  # an authorisation cancelled or expired: nothing taken
REFUNDED = "refunded"
REFUND_FAILED = "refund_failed"  # a refund we made failed (or was cancelled) at the provider later: the money is back
FAILED = "failed"  # the payment attempt failed or the checkout expired unpaid
IGNORED = "ignored"  # an event we don't act on (still verified and recorded once)


# A refund's status (GatewayResult.status of refund(); Stripe's and Razorpay's own words) that says it was not made:
# it failed at the provider, or was cancelled there. The money is still ours, and the driver got nothing: the
# caller credits the driver's account, as for a refund the provider can't make. A retry of a refund whose answer
# was lost gets such a refund back (the adapters find the refund made with our key, whatever its status).
REFUND_NOT_MADE = frozenset({"failed", "canceled", "cancelled"})


# GatewayError.code of a capture the provider can no longer make because the authorisation lapsed there first
# (Stripe cancelled the PaymentIntent after its 7 days, Razorpay refunded it after the manual-capture timeout):
# nothing was taken, and the hold is gone.
LAPSED = "lapsed"


class GatewayError(Exception):
    """The provider refused or could not be reached. `retryable` when the same call may succeed later (network,
    5xx, rate limit); a refusal (4xx: card declined, amount too high…) is not."""

    def __init__(self, message: str, *, retryable: bool = False, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


# The largest amount an event may name (minor units): well within the BigInteger columns that hold it.
MAX_AMOUNT_MINOR = 10**15
# How deep a webhook's JSON may nest. The providers' events nest a few levels; a signed body nested near Python's
# recursion limit had parsed, then broken the code that walks it (a RecursionError, a 500).
MAX_WEBHOOK_NESTING = 64


class WebhookRejected(Exception):
    """A webhook that is not the provider's (bad or missing signature, too old, not JSON)."""


def webhook_json(text: str | bytes, provider: str) -> Any:
    """A webhook body's JSON, or WebhookRejected: not JSON, or nested deeper than any event of the provider's
    (MAX_WEBHOOK_NESTING; json.loads itself raises RecursionError, no ValueError, near Python's limit)."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WebhookRejected(f"{provider} webhook body: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if nesting_beyond(payload, MAX_WEBHOOK_NESTING):
        raise WebhookRejected(f"{provider} webhook body: nested deeper than {MAX_WEBHOOK_NESTING} levels")
    return payload


def nesting_beyond(value: Any, limit: int) -> bool:
    """Does `value` (parsed JSON) nest lists and objects more than `limit` deep? Walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def event_object(value: Any, what: str, provider: str) -> Mapping[str, Any]:
    """A JSON object of a verified event, where one must be: absent (None) or empty ([], Razorpay's way of
    sending an empty object) is an empty one; anything else (a string, a number, a list) is not the provider's
    event shape and is refused (a 400), where reading it had raised AttributeError (a 500)."""
    if isinstance(value, Mapping):
        return value
    if value is None or value == []:
        return {}
    raise WebhookRejected(f"{provider} webhook: {what} is not an object")


@dataclass(frozen=True)
class Checkout:
    """A hosted payment page: `checkout_id` is the provider's id of it, `url` where the driver pays."""

    checkout_id: str
    url: str


@dataclass(frozen=True)
class GatewayResult:
    """The provider's answer to a capture, release or refund: its id of the operation (refund id, payment id)
    and the amount it moved, in minor units."""

    reference: str
    amount_minor: int
    status: str


# What expire_checkout found (CheckoutExpiry.outcome); in each case the page takes no payment any more.
PAGE_CLOSED = "closed"  # it was open: closed now by this call (or by an earlier one with the same key)
PAGE_ALREADY_CLOSED = "already_closed"  # expired or cancelled before: nothing to do
PAGE_PAID = "paid"  # the driver paid it first: its webhook tells the rest


@dataclass(frozen=True)
class CheckoutExpiry:
    """The provider's answer to expire_checkout: what became of the page (`outcome`, PAGE_*) and the provider's
    own word for its state (a session's expired / complete, a link's cancelled / expired / paid). It moves no
    money, so it is not a GatewayResult."""

    checkout_id: str
    outcome: str
    status: str


TEXT_FIELDS = (
    "event_id", "type", "provider_type", "reference", "checkout_id", "payment_id", "currency", "refund_id", "refund_key"
)  # fmt: skip


@dataclass(frozen=True)
class WebhookEvent:
    provider: str
    event_id: str  # the provider's event id: a replay carries the same one
    type: str  # AUTHORISED, CAPTURED, RELEASED, REFUNDED, REFUND_FAILED, FAILED or IGNORED
    provider_type: str  # the provider's own event name, e.g. payment_intent.amount_capturable_updated
    reference: str = ""  # our payment reference, as we gave it at checkout (metadata / notes / receipt)
    checkout_id: str = ""
    payment_id: str = ""  # the provider's payment (PaymentIntent / Razorpay payment) id
    amount_minor: int = 0
    currency: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)
    refund_id: str = ""  # a refund event's refund (re_… / rfnd_…): the PaymentOperation's provider_reference
    refund_key: str = ""  # the idempotency key we gave that refund (its metadata / notes), if it carries one

    def __post_init__(self) -> None:
        """A signed event is still the provider's JSON: each field of the type we read it as, text without NUL
        (PostgreSQL's text holds none) and without a lone surrogate (JSON's `\\ud800` unpaired: no UTF-8 text, so
        neither PostgreSQL nor SQLite takes it as a query's parameter), an amount a whole number of minor units our
        columns hold (else the webhook is refused with a 400, not a 422 or a 500)."""
        for name in TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise WebhookRejected(f"{self.provider} webhook: {name} is not text")
            if "\x00" in value:
                raise WebhookRejected(f"{self.provider} webhook: {name} holds a NUL character")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise WebhookRejected(f"{self.provider} webhook: {name} holds a lone surrogate, no text") from None
        amount = self.amount_minor
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_AMOUNT_MINOR:
            raise WebhookRejected(f"{self.provider} webhook: the amount is not a whole number of minor units")


class PaymentGateway(Protocol):
    name: str

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
        """A hosted page where the driver authorises `amount_minor` (manual capture); `reference` is ours and
        comes back in every webhook of this payment."""
        ...

    # `repeated`: this operation was tried before and its answer was lost or an error. The adapter then looks at
    # the provider's own records first (a refund with our key, a payment already captured or cancelled) and
    # answers what it finds as done: a provider that replays a stored error for the key (Stripe keeps a 500 for
    # 24 h) never tells otherwise, and once it forgets the key a repeat would move the money again.

    def capture(
        self, *, payment_id: str, amount_minor: int, currency: str, idempotency_key: str, repeated: bool = False
    ) -> GatewayResult:
        """Take `amount_minor` (≤ the authorised amount) of an authorised payment; the rest is released. The
        result's amount is what the provider took: more than asked if it could only take the whole hold."""
        ...

    def release(self, *, payment_id: str, idempotency_key: str, repeated: bool = False) -> GatewayResult:
        """Cancel an authorisation: nothing is taken."""
        ...

    def refund(
        self, *, payment_id: str, amount_minor: int, currency: str, idempotency_key: str, repeated: bool = False
    ) -> GatewayResult:
        """Give back `amount_minor` of a captured payment."""
        ...

    def expire_checkout(self, *, checkout_id: str, idempotency_key: str) -> CheckoutExpiry:
        """Close a hosted page (from `checkout`) so the driver can no longer pay it: one we withdrew, whose bill a
        credit lowered or cancelled. A page already paid, expired or cancelled is no error: the result says so
        (PAGE_PAID, PAGE_ALREADY_CLOSED), so a repeat of the call is none either."""
        ...

    def verify_webhook(self, *, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """The event, if the body is the provider's, signed as the provider signs; else WebhookRejected."""
        ...


def provider_for(currency: str) -> str:
    """The provider that collects `currency` (settings.PAYMENT_GATEWAYS; "*" for the rest)."""
    table = settings.PAYMENT_GATEWAYS
    return table.get(currency.upper()) or table["*"]


def gateway(provider: str) -> PaymentGateway:
    """The configured adapter of `provider` (settings.PAYMENT_PROVIDERS[provider]["adapter"])."""
    config = settings.PAYMENT_PROVIDERS[provider]
    return import_string(config["adapter"])(**config.get("options", {}))


def gateway_for(currency: str) -> PaymentGateway:
    return gateway(provider_for(currency))
