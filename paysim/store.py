"""paysim's memory: the Stripe and Razorpay objects it has made, shaped as those providers send them, and what each
state change emits as a webhook. One lock guards it all; nothing here speaks HTTP."""

from __future__ import annotations

import copy
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STRIPE_API_VERSION = "2026-10-28.endive"  # the version stripe-python 16 pins; events say which shape they carry
RAZORPAY_ACCOUNT_ID = "acc_PaysimSandbox01"
_ALPHABET = string.ascii_letters + string.digits


class ApiError(Exception):
    """A refusal in the provider's words: HTTP status and the provider-shaped error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body)
        self.status = status
        self.body = body


def stripe_error(status: int, message: str, *, code: str = "", param: str = "", kind: str = "") -> ApiError:
    error: dict[str, Any] = {"type": kind or "invalid_request_error", "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return ApiError(status, {"error": error})


def razorpay_error(description: str, *, field_name: str | None = None, status: int = 400) -> ApiError:
    return ApiError(
        status,
        {
            "error": {
                "code": "BAD_REQUEST_ERROR",
                "description": description,
                "source": "business" if status == 400 else "NA",
                "step": "payment_initiation" if status == 400 else "NA",
                "reason": "input_validation_failed" if status == 400 else "NA",
                "metadata": {},
                "field": field_name,
            }
        },
    )


def new_id(prefix: str, length: int = 14) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass
class Event:
    provider: str  # stripe | razorpay
    event_id: str
    type: str
    body: dict[str, Any]
    attempts: list[int] = field(default_factory=list)  # HTTP status of each delivery attempt (0: no answer)
    delivered: bool = False


@dataclass
class Checkout:
    """A hosted page: a Stripe Checkout Session or a Razorpay Payment Link."""

    provider: str
    id: str
    amount: int
    currency: str
    description: str
    return_url: str
    paid_payment_id: str = ""
    closed: bool = False  # paid, expired or cancelled
    created: float = field(default_factory=time.time)


class Store:
    """Everything paysim knows. `emit` is called (under the lock, so in order) with every event to deliver."""

    def __init__(self, *, public_url: str, emit: Callable[[Event], None], decline_over: int | None = None) -> None:
        self.lock = threading.RLock()
        self.public_url = public_url.rstrip("/")
        self.emit = emit
        self.decline_over = decline_over
        self.checkouts: dict[str, Checkout] = {}
        self.stripe: dict[str, dict[str, Any]] = {}  # id -> object (cs_, pi_, ch_, re_)
        self.intent_data: dict[str, dict[str, Any]] = {}  # session id -> its payment_intent_data
        self.razorpay: dict[str, dict[str, Any]] = {}  # id -> entity (plink_, order_, pay_, rfnd_)
        self.balance: list[dict[str, Any]] = []  # what the payout files list, in order
        self.events: list[Event] = []
        self.idempotency: dict[tuple[str, str], tuple[str, int, Any]] = {}
        self.in_flight: set[tuple[str, str]] = set()
        # Test hook (POST /paysim/fail-next): API paths whose next request answers a 500, after doing its work
        # ("after": the answer is lost, the money moved) or instead of it ("before").
        self.faults: dict[tuple[str, str], str] = {}
        self.auto_paid: set[str] = set()

    def page_url(self, checkout_id: str) -> str:
        return f"{self.public_url}/pay/{checkout_id}"

    # --- Stripe ----------------------------------------------------------------------------------------------

    def stripe_create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("mode") != "payment":
            raise stripe_error(400, "paysim supports mode=payment only", param="mode")
        items = params.get("line_items") or []
        if not isinstance(items, list) or len(items) != 1:
            raise stripe_error(400, "paysim supports exactly one line item", param="line_items")
        price = items[0].get("price_data") or {}
        try:
            amount = int(price["unit_amount"]) * int(items[0].get("quantity", 1))
            currency = str(price["currency"]).lower()
        except (KeyError, TypeError, ValueError) as exc:
            raise stripe_error(
                400, "line_items[0][price_data] needs unit_amount and currency", param="line_items"
            ) from exc
        if amount <= 0 or len(currency) != 3:
            raise stripe_error(400, "Invalid amount or currency", param="line_items[0][price_data]")
        if not params.get("success_url"):
            raise stripe_error(400, "Missing required param: success_url.", param="success_url")
        intent_data = params.get("payment_intent_data") or {}
        now = int(time.time())
        with self.lock:
            session_id = new_id("cs_test_", 58)
            session = {
                "id": session_id,
                "object": "checkout.session",
                "amount_subtotal": amount,
                "amount_total": amount,
                "cancel_url": params.get("cancel_url"),
                "client_reference_id": params.get("client_reference_id"),
                "created": now,
                "currency": currency,
                "customer": None,
                "expires_at": now + 24 * 3600,
                "livemode": False,
                "metadata": params.get("metadata") or {},
                "mode": "payment",
                "payment_intent": None,
                "payment_method_types": ["card"],
                "payment_status": "unpaid",
                "status": "open",
                "success_url": params["success_url"],
                "url": self.page_url(session_id),
            }
            self.stripe[session_id] = session
            self.intent_data[session_id] = {
                "capture_method": intent_data.get("capture_method", "automatic"),
                "description": intent_data.get("description"),
                "metadata": intent_data.get("metadata") or {},
            }
            description = str(((items[0].get("price_data") or {}).get("product_data") or {}).get("name", ""))
            self.checkouts[session_id] = Checkout(
                "stripe", session_id, amount, currency.upper(), description, params["success_url"]
            )
            return session

    def stripe_get(self, object_id: str, kind: str) -> dict[str, Any]:
        with self.lock:
            obj = self.stripe.get(object_id)
            if obj is None or obj.get("object") != kind:
                raise stripe_error(404, f"No such {kind}: '{object_id}'", code="resource_missing", param="id")
            return obj

    def stripe_refunds(self, payment_intent: str | None) -> dict[str, Any]:
        """GET /v1/refunds (?payment_intent=): newest first, as Stripe lists them."""
        with self.lock:
            found = [
                _copy(o)
                for o in self.stripe.values()
                if o.get("object") == "refund" and (not payment_intent or o.get("payment_intent") == payment_intent)
            ]
        found.reverse()
        return {"object": "list", "data": found, "has_more": False, "url": "/v1/refunds"}

    def stripe_expire_session(self, session_id: str) -> dict[str, Any]:
        """POST /v1/checkout/sessions/{id}/expire: the merchant closes an open session at once (Stripe refuses any
        other, in its words); the page then refuses payment and checkout.session.expired is sent, as on a timeout."""
        with self.lock:
            session = self.stripe_get(session_id, "checkout.session")
            if session["status"] != "open":
                raise stripe_error(
                    400,
                    'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session has a '
                    f"status of `{session['status']}`.",
                )
            self._stripe_expire(self.checkouts[session_id], session)
            return session

    def _stripe_expire(self, checkout: Checkout, session: dict[str, Any]) -> None:
        checkout.closed = True
        session["status"] = "expired"
        self._stripe_event("checkout.session.expired", session)

    def _stripe_pay(self, checkout: Checkout, approve: bool) -> dict[str, Any]:
        session = self.stripe[checkout.id]
        intent_data = self.intent_data[checkout.id]
        now = int(time.time())
        intent = self.stripe.get(session["payment_intent"] or "")
        if intent is None:
            intent = {
                "id": new_id("pi_", 24),
                "object": "payment_intent",
                "amount": checkout.amount,
                "amount_capturable": 0,
                "amount_received": 0,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": intent_data["capture_method"],
                "created": now,
                "currency": session["currency"],
                "description": intent_data["description"],
                "last_payment_error": None,
                "latest_charge": None,
                "livemode": False,
                "metadata": dict(intent_data["metadata"]),
                "payment_method_types": ["card"],
                "status": "requires_payment_method",
            }
            self.stripe[intent["id"]] = intent
            session["payment_intent"] = intent["id"]
        if not approve:
            intent["last_payment_error"] = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
            }
            self._stripe_event("payment_intent.payment_failed", intent)
            return intent
        charge = {
            "id": new_id("ch_", 24),
            "object": "charge",
            "amount": checkout.amount,
            "amount_captured": 0,
            "amount_refunded": 0,
            "balance_transaction": None,
            "captured": False,
            "created": now,
            "currency": session["currency"],
            "metadata": dict(intent["metadata"]),
            "paid": True,
            "payment_intent": intent["id"],
            "payment_method_details": {"card": {"brand": "visa", "last4": "4242"}, "type": "card"},
            "refunded": False,
            "status": "succeeded",
        }
        self.stripe[charge["id"]] = charge
        intent.update(latest_charge=charge["id"], last_payment_error=None)
        session.update(status="complete")
        checkout.closed, checkout.paid_payment_id = True, intent["id"]
        if intent["capture_method"] == "manual":
            intent.update(status="requires_capture", amount_capturable=checkout.amount)
            self._stripe_event("checkout.session.completed", session)
            self._stripe_event("payment_intent.amount_capturable_updated", intent)
        else:
            self._stripe_capture(intent, checkout.amount, now)
            session["payment_status"] = "paid"
            self._stripe_event("checkout.session.completed", session)
        return intent

    def _stripe_capture(self, intent: dict[str, Any], amount: int, now: int) -> None:
        charge = self.stripe[intent["latest_charge"]]
        fee = stripe_fee(amount)
        txn = self._balance_txn("stripe", "charge", charge["id"], intent, amount, fee, now)
        charge.update(captured=True, amount_captured=amount, balance_transaction=txn["id"])
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        self._stripe_event("charge.captured", charge)
        self._stripe_event("payment_intent.succeeded", intent)

    def stripe_capture(self, intent_id: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            intent = self.stripe_get(intent_id, "payment_intent")
            if intent["status"] != "requires_capture":
                raise stripe_error(
                    400,
                    "This PaymentIntent could not be captured because it has a status of "
                    f"{intent['status']}. Only a PaymentIntent with one of the following statuses may be captured: "
                    "requires_capture.",
                    code="payment_intent_unexpected_state",
                )
            try:
                amount = int(params.get("amount_to_capture", intent["amount_capturable"]))
            except (TypeError, ValueError) as exc:
                raise stripe_error(400, "Invalid integer", param="amount_to_capture") from exc
            if amount <= 0 or amount > intent["amount_capturable"]:
                raise stripe_error(
                    400,
                    "The amount to capture must be a positive integer no greater than the amount capturable "
                    f"({intent['amount_capturable']}).",
                    code="amount_too_large" if amount > 0 else "parameter_invalid_integer",
                    param="amount_to_capture",
                )
            self._stripe_capture(intent, amount, int(time.time()))
            return intent

    def stripe_cancel(self, intent_id: str, reason: str | None = None) -> dict[str, Any]:
        with self.lock:
            intent = self.stripe_get(intent_id, "payment_intent")
            if intent["status"] not in ("requires_capture", "requires_payment_method", "requires_confirmation"):
                raise stripe_error(
                    400,
                    f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}. Only a "
                    "PaymentIntent with one of the following statuses may be canceled: requires_payment_method, "
                    "requires_capture, requires_confirmation, requires_action, processing.",
                    code="payment_intent_unexpected_state",
                )
            intent.update(
                status="canceled", canceled_at=int(time.time()), cancellation_reason=reason, amount_capturable=0
            )
            self._stripe_event("payment_intent.canceled", intent)
            return intent

    def stripe_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            intent_id = params.get("payment_intent")
            if not intent_id:
                raise stripe_error(400, "One of the following params should be provided: charge, payment_intent.")
            intent = self.stripe_get(str(intent_id), "payment_intent")
            if intent["status"] != "succeeded":
                raise stripe_error(
                    400,
                    f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                    code="charge_not_refundable",
                )
            charge = self.stripe[intent["latest_charge"]]
            left = charge["amount_captured"] - charge["amount_refunded"]
            try:
                amount = int(params.get("amount", left))
            except (TypeError, ValueError) as exc:
                raise stripe_error(400, "Invalid integer", param="amount") from exc
            if amount <= 0 or amount > left:
                raise stripe_error(
                    400,
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge ({left})",
                    code="amount_too_large",
                    param="amount",
                )
            now = int(time.time())
            refund = {
                "id": new_id("re_", 24),
                "object": "refund",
                "amount": amount,
                "balance_transaction": None,
                "charge": charge["id"],
                "created": now,
                "currency": charge["currency"],
                "metadata": params.get("metadata") or {},
                "payment_intent": intent["id"],
                "reason": params.get("reason"),
                "receipt_number": None,
                "status": "succeeded",
            }
            txn = self._balance_txn("stripe", "refund", refund["id"], intent, -amount, 0, now)
            refund["balance_transaction"] = txn["id"]
            self.stripe[refund["id"]] = refund
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
            self._stripe_event("refund.created", refund)
            self._stripe_event("charge.refunded", charge)
            return refund

    def _stripe_event(self, event_type: str, obj: dict[str, Any]) -> None:
        event_id = new_id("evt_", 24)
        body = {
            "id": event_id,
            "object": "event",
            "api_version": STRIPE_API_VERSION,
            "created": int(time.time()),
            "data": {"object": _copy(obj)},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self._emit(Event("stripe", event_id, event_type, body))

    # --- Razorpay --------------------------------------------------------------------------------------------

    def razorpay_create_link(self, params: dict[str, Any]) -> dict[str, Any]:
        try:
            amount = int(params["amount"])
        except (KeyError, TypeError, ValueError) as exc:
            raise razorpay_error("The amount field is required.", field_name="amount") from exc
        if amount < 100:
            raise razorpay_error("The amount must be atleast INR 1.00", field_name="amount")
        currency = str(params.get("currency") or "INR").upper()
        reference_id = str(params.get("reference_id") or "")
        if len(reference_id) > 40:
            raise razorpay_error("The reference id may not be greater than 40 characters.", field_name="reference_id")
        notes = params.get("notes") or {}
        now = int(time.time())
        with self.lock:
            if reference_id and any(
                e.get("reference_id") == reference_id for e in self.razorpay.values() if e["id"].startswith("plink_")
            ):
                raise razorpay_error(
                    f"payment link with reference id {reference_id} already exists", field_name="reference_id"
                )
            order = {
                "id": new_id("order_"),
                "entity": "order",
                "amount": amount,
                "amount_paid": 0,
                "amount_due": amount,
                "currency": currency,
                "receipt": reference_id or None,
                "offer_id": None,
                "status": "created",
                "attempts": 0,
                "notes": notes or [],
                "created_at": now,
            }
            link_id = new_id("plink_")
            link = {
                "accept_partial": False,
                "amount": amount,
                "amount_paid": 0,
                "callback_method": params.get("callback_method") or "",
                "callback_url": params.get("callback_url") or "",
                "cancelled_at": 0,
                "created_at": now,
                "currency": currency,
                "customer": params.get("customer") or {},
                "description": params.get("description") or "",
                "expire_by": int(params.get("expire_by") or 0),
                "expired_at": 0,
                "first_min_partial_amount": 0,
                "id": link_id,
                "notes": notes or None,
                "notify": params.get("notify") or {"email": False, "sms": False},
                "order_id": order["id"],
                "payments": None,
                "reference_id": reference_id,
                "reminder_enable": bool(params.get("reminder_enable")),
                "reminders": [],
                "short_url": self.page_url(link_id),
                "status": "created",
                "updated_at": now,
                "upi_link": False,
                "user_id": "",
            }
            self.razorpay[order["id"]] = order
            self.razorpay[link_id] = link
            self.checkouts[link_id] = Checkout(
                "razorpay", link_id, amount, currency, link["description"], link["callback_url"]
            )
            return link

    def razorpay_links(self, reference_id: str | None) -> dict[str, Any]:
        with self.lock:
            links = [
                _copy(e)
                for e in self.razorpay.values()
                if e["id"].startswith("plink_") and (reference_id is None or e["reference_id"] == reference_id)
            ]
            return {"payment_links": links}

    def razorpay_get(self, entity_id: str, prefix: str) -> dict[str, Any]:
        with self.lock:
            entity = self.razorpay.get(entity_id)
            if entity is None or not entity_id.startswith(prefix):
                raise razorpay_error("The id provided does not exist", field_name="id")
            return entity

    def razorpay_cancel_link(self, link_id: str) -> dict[str, Any]:
        """POST /v1/payment_links/{id}/cancel: Razorpay cancels only a link in the created state; one paid (or with
        a payment authorised on it), cancelled or expired is refused. The page then refuses payment and
        payment_link.cancelled is sent."""
        with self.lock:
            link, checkout = self.razorpay_get(link_id, "plink_"), self.checkouts[link_id]
            if link["status"] != "created" or checkout.closed:
                state = "paid" if checkout.paid_payment_id else link["status"]
                raise razorpay_error(f"Payment Link cannot be cancelled as it is in {state} state", field_name="id")
            checkout.closed = True
            now = int(time.time())
            link.update(status="cancelled", cancelled_at=now, updated_at=now)
            self._razorpay_event("payment_link.cancelled", payment_link=link)
            return link

    def _razorpay_pay(self, checkout: Checkout, approve: bool) -> dict[str, Any]:
        link = self.razorpay[checkout.id]
        order = self.razorpay[link["order_id"]]
        order["attempts"] += 1
        order["status"] = "attempted"
        now = int(time.time())
        payment = {
            "id": new_id("pay_"),
            "entity": "payment",
            "amount": checkout.amount,
            "currency": checkout.currency,
            "status": "authorized" if approve else "failed",
            "order_id": order["id"],
            "invoice_id": None,
            "international": False,
            "method": "card",
            "amount_refunded": 0,
            "refund_status": None,
            "captured": False,
            "description": link["description"],
            "card_id": new_id("card_"),
            "bank": None,
            "wallet": None,
            "vpa": None,
            "email": "void@razorpay.com",
            "contact": "+919000090000",
            "notes": link["notes"] or [],
            "fee": None,
            "tax": None,
            "error_code": None if approve else "BAD_REQUEST_ERROR",
            "error_description": None if approve else "Payment failed due to incorrect card details",
            "error_source": None if approve else "customer",
            "error_step": None if approve else "payment_authorization",
            "error_reason": None if approve else "incorrect_card_details",
            "acquirer_data": {"auth_code": None if not approve else str(secrets.randbelow(900000) + 100000)},
            "created_at": now,
        }
        self.razorpay[payment["id"]] = payment
        if not approve:
            self._razorpay_event("payment.failed", payment=payment)
            return payment
        checkout.closed, checkout.paid_payment_id = True, payment["id"]
        link["payments"] = [
            {
                "amount": payment["amount"],
                "created_at": now,
                "method": "card",
                "payment_id": payment["id"],
                "status": "authorized",
            }
        ]
        self._razorpay_event("payment.authorized", payment=payment)
        return payment

    def razorpay_capture(self, payment_id: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            payment = self.razorpay_get(payment_id, "pay_")
            if payment["status"] != "authorized":
                raise razorpay_error(
                    "This payment has already been captured"
                    if payment["captured"]
                    else "Only payments which have been authorized and not yet captured can be captured"
                )
            try:
                amount = int(params["amount"])
            except (KeyError, TypeError, ValueError) as exc:
                raise razorpay_error("The amount field is required.", field_name="amount") from exc
            if amount != payment["amount"]:
                raise razorpay_error("Capture amount must be equal to the amount authorized", field_name="amount")
            if str(params.get("currency") or payment["currency"]).upper() != payment["currency"]:
                raise razorpay_error("Currency should be same as the payment currency", field_name="currency")
            tax = razorpay_tax(razorpay_fee(amount))
            fee = razorpay_fee(amount) + tax  # Razorpay's fee includes the GST on it; tax is that GST part
            payment.update(status="captured", captured=True, fee=fee, tax=tax)
            now = int(time.time())
            self._balance_txn("razorpay", "payment", payment["id"], payment, amount, fee, now, tax=tax)
            order = self.razorpay[payment["order_id"]]
            order.update(status="paid", amount_paid=amount, amount_due=0)
            self._razorpay_event("payment.captured", payment=payment)
            link = next(
                (
                    e
                    for e in self.razorpay.values()
                    if e.get("order_id") == order["id"] and e["id"].startswith("plink_")
                ),
                None,
            )
            if link is not None:
                link.update(status="paid", amount_paid=amount, updated_at=now)
                link["payments"][0]["status"] = "captured"
                self._razorpay_event("payment_link.paid", payment_link=link, order=order, payment=payment)
            return payment

    def razorpay_refund(self, payment_id: str, params: dict[str, Any], *, automatic: bool = False) -> dict[str, Any]:
        with self.lock:
            payment = self.razorpay_get(payment_id, "pay_")
            if not automatic and not payment["captured"]:
                raise razorpay_error("The payment has not been captured", field_name="payment_id")
            left = payment["amount"] - payment["amount_refunded"]
            try:
                amount = int(params.get("amount", left))
            except (TypeError, ValueError) as exc:
                raise razorpay_error("The amount must be an integer.", field_name="amount") from exc
            if amount <= 0 or amount > left:
                raise razorpay_error("The refund amount provided is greater than amount captured", field_name="amount")
            now = int(time.time())
            refund = {
                "id": new_id("rfnd_"),
                "entity": "refund",
                "amount": amount,
                "currency": payment["currency"],
                "payment_id": payment["id"],
                "notes": params.get("notes") or [],
                "receipt": params.get("receipt"),
                "acquirer_data": {"arn": None},
                "created_at": now,
                "batch_id": None,
                "status": "processed",
                "speed_processed": "normal",
                "speed_requested": params.get("speed") or "normal",
            }
            self.razorpay[refund["id"]] = refund
            payment["amount_refunded"] += amount
            full = payment["amount_refunded"] == payment["amount"]
            payment.update(refund_status="full" if full else "partial")
            if full:
                payment["status"] = "refunded"
            if payment["captured"]:
                self._balance_txn("razorpay", "refund", refund["id"], payment, -amount, 0, now)
            self._razorpay_event("refund.created", refund=refund, payment=payment)
            self._razorpay_event("refund.processed", refund=refund, payment=payment)
            return refund

    def razorpay_refunds(self, payment_id: str) -> dict[str, Any]:
        with self.lock:
            self.razorpay_get(payment_id, "pay_")
            items = [
                _copy(e)
                for e in self.razorpay.values()
                if e.get("entity") == "refund" and e["payment_id"] == payment_id
            ]
            return {"entity": "collection", "count": len(items), "items": items}

    def _razorpay_event(self, event_type: str, **entities: dict[str, Any]) -> None:
        body = {
            "entity": "event",
            "account_id": RAZORPAY_ACCOUNT_ID,
            "event": event_type,
            "contains": list(entities),
            "payload": {name: {"entity": _copy(entity)} for name, entity in entities.items()},
            "created_at": int(time.time()),
        }
        self._emit(Event("razorpay", new_id(""), event_type, body))

    # --- both ------------------------------------------------------------------------------------------------

    def pay(self, checkout_id: str, outcome: str) -> dict[str, Any]:
        """The driver pays (or is declined) on the hosted page. Returns what the page and the test hook show."""
        if outcome not in ("pay", "decline"):
            raise ValueError("outcome must be pay or decline")
        with self.lock:
            checkout = self.checkouts.get(checkout_id)
            if checkout is None:
                raise KeyError(checkout_id)
            if checkout.closed:
                raise ApiError(409, {"error": "this checkout is already paid, expired or cancelled"})
            approve = outcome == "pay" and (self.decline_over is None or checkout.amount <= self.decline_over)
            if checkout.provider == "stripe":
                payment = self._stripe_pay(checkout, approve)
                status = payment["status"]
            else:
                payment = self._razorpay_pay(checkout, approve)
                status = payment["status"]
            return {"checkout_id": checkout_id, "payment_id": payment["id"], "status": status, "approved": approve}

    def expire(self, object_id: str) -> dict[str, Any]:
        """What the provider does when time runs out: an unpaid page expires; an authorisation never captured is
        cancelled (Stripe, after 7 days) or refunded (Razorpay, after the manual-capture timeout)."""
        with self.lock:
            if object_id in self.checkouts and object_id.startswith("cs_"):
                session, checkout = self.stripe[object_id], self.checkouts[object_id]
                if checkout.closed:
                    raise ApiError(409, {"error": "this checkout is already closed"})
                self._stripe_expire(checkout, session)
                return session
            if object_id in self.checkouts and object_id.startswith("plink_"):
                link, checkout = self.razorpay[object_id], self.checkouts[object_id]
                if checkout.closed:
                    raise ApiError(409, {"error": "this checkout is already closed"})
                checkout.closed = True
                link.update(status="expired", expired_at=int(time.time()))
                self._razorpay_event("payment_link.expired", payment_link=link)
                return link
            if object_id.startswith("pi_"):
                return self.stripe_cancel(object_id, reason="automatic")
            if object_id.startswith("pay_"):
                payment = self.razorpay_get(object_id, "pay_")
                if payment["status"] != "authorized":
                    raise ApiError(409, {"error": f"payment is {payment['status']}, not authorized"})
                return self.razorpay_refund(object_id, {}, automatic=True)
            raise KeyError(object_id)

    def authorised_before(self, provider: str, cutoff: int) -> list[str]:
        """Authorisations older than `cutoff` (unix time) not yet captured, for the capture-window sweeper."""
        with self.lock:
            if provider == "razorpay":
                return [
                    e["id"]
                    for e in self.razorpay.values()
                    if e.get("entity") == "payment" and e["status"] == "authorized" and e["created_at"] < cutoff
                ]
            return [
                e["id"]
                for e in self.stripe.values()
                if e.get("object") == "payment_intent" and e["status"] == "requires_capture" and e["created"] < cutoff
            ]

    def _balance_txn(
        self,
        provider: str,
        kind: str,
        source: str,
        payment: dict[str, Any],
        amount: int,
        fee: int,
        now: int,
        *,
        tax: int = 0,
    ) -> dict[str, Any]:
        txn = {
            "id": new_id("txn_", 24),
            "provider": provider,
            "kind": kind,
            "source": source,
            "payment": payment["id"],
            "order_id": payment.get("order_id"),
            "charge": payment.get("latest_charge"),
            "currency": payment["currency"],
            "amount": amount,
            "fee": fee,
            "tax": tax,
            "created": now,
            "metadata": payment.get("metadata") or payment.get("notes") or {},
        }
        self.balance.append(txn)
        return txn

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        self.emit(event)


def stripe_fee(amount: int) -> int:
    """Stripe's standard European card price, 1.5 % + 25 cents (sandbox numbers only: a fee to reconcile)."""
    return (amount * 15 + 500) // 1000 + 25


def razorpay_fee(amount: int) -> int:
    """Razorpay's standard domestic rate, 2 %."""
    return (amount * 2 + 50) // 100


def razorpay_tax(fee: int) -> int:
    """18 % GST on the fee."""
    return (fee * 18 + 50) // 100


def _copy(obj: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(obj)
