"""What each Beckn action does, after the ACK: discovery from the catalogue, quotes from the tariff engine,
bookings and commands through the domain services, and the on_* answer for the BAP (or a BECKN-005 error).

Request → beckn/views.py (verify, validate, ACK) → beckn/tasks.py → `handle()` here (records it once) →
emsp/services/* and billing/services/* → beckn/callbacks.py (outbox → signed POST to the BAP)."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from beckn import callbacks
from beckn.catalogue import (
    Hit,
    SearchFilters,
    find_item,
    hit_for,
    item_id,
    item_tags,
    provider_id,
    render_catalog,
    search,
)
from beckn.models import BecknMessage, BecknRating, BecknSubscriber, BecknTransaction
from beckn.requests import (
    ACK,
    CANCELLATION_NOT_POSSIBLE,
    FULFILLMENT_UNAVAILABLE,
    INVALID_RATING,
    INVALID_REQUEST,
    ITEM_NOT_FOUND,
    ORDER_NOT_FOUND,
    PAYMENT_NOT_SUPPORTED,
    QUOTE_UNAVAILABLE,
    RATING_ENTITY_NOT_FOUND,
    UPDATE_NOT_POSSIBLE,
    BecknRequestError,
    Envelope,
    order_id,
    parse_envelope,
    search_filters,
    selected_item,
    update_request,
)
from billing.models import DriverReceipt, Quote
from billing.money import round_money
from billing.services.driver_pricing import NoTariff, quote_charge, session_estimate
from emsp.models import Booking, ChargingSession, Command, Driver, Evse, Token
from emsp.services import bookings, catalogue
from emsp.services.commands import command_send
from emsp.services.tokens import token_issue

log = logging.getLogger(__name__)

DEFAULT_QUOTE_KWH = Decimal("10")
QUOTE_TTL = timedelta(minutes=15)

# Fulfillment state codes = OCPI SessionStatus words (DEG00x; journey.md), plus CANCELLED.
STATE_CODES = {
    Booking.State.CONFIRMED: ("RESERVATION", "Booked: the charger is held for you"),
    Booking.State.STARTING: ("PENDING", "Starting: plug in if you have not"),
    Booking.State.CHARGING: ("ACTIVE", "Charging"),
    Booking.State.STOPPING: ("ACTIVE", "Stopping"),
    Booking.State.COMPLETED: ("COMPLETED", "Charging finished"),
    Booking.State.SETTLED: ("COMPLETED", "Charging finished and billed"),
    Booking.State.CANCELLED: ("CANCELLED", "Cancelled"),
    Booking.State.FAILED: ("INVALID", "Could not charge"),
}


# --- entry point ------------------------------------------------------------------------------------


def transaction_for(envelope: Envelope, via_gateway: str = "") -> BecknTransaction:
    context = envelope.context
    txn, created = BecknTransaction.objects.get_or_create(
        bap_id=envelope.bap_id,
        transaction_id=envelope.transaction_id,
        defaults={
            "bap_uri": context["bap_uri"],
            "callback_uri": context["bap_uri"],
            "domain": context["domain"],
            "context_location": context.get("location") or {},
        },
    )
    if via_gateway and envelope.action == "search":
        # A search forwarded by a gateway is answered back through it (beckn-notes §4.2).
        gateway = BecknSubscriber.objects.filter(subscriber_id=via_gateway).exclude(subscriber_url="").first()
        if gateway is not None:
            txn.callback_uri = gateway.subscriber_url  # for this answer only; later actions go to the BAP
            return txn
    elif not created and txn.bap_uri != context["bap_uri"]:
        BecknTransaction.objects.filter(pk=txn.pk).update(bap_uri=context["bap_uri"], callback_uri=context["bap_uri"])
        txn.refresh_from_db()
    return txn


def handle(action_name: str, body: str, via_gateway: str = "") -> None:
    """Record an ACKed request and answer it, all in one transaction: a worker killed half-way leaves
    nothing behind and the redelivered task starts afresh; a duplicate delivery (or a repeat the ACK path
    let through) meets the unique (bap_id, action, message_id) row and changes nothing."""
    envelope = parse_envelope(body.encode(), action_name)
    action = f"on_{action_name}"
    context = callbacks.callback_context(envelope.context, action)
    try:
        with transaction.atomic():
            request = BecknMessage.objects.create(
                bap_id=envelope.bap_id,
                action=action_name,
                message_id=envelope.message_id,
                body=body,
                via_gateway=via_gateway,
                ack=ACK,
                status=BecknMessage.Status.PROCESSED,
                processed_at=timezone.now(),
            )
            txn = transaction_for(envelope, via_gateway)
            if txn.pk:
                BecknMessage.objects.filter(pk=request.pk).update(transaction=txn)
            target = txn if txn.pk else None
            try:
                with transaction.atomic():
                    message = HANDLERS[action_name](envelope, txn)
                    callbacks.enqueue(
                        action=action,
                        context=context,
                        message=message,
                        txn=target,
                        request=request,
                        url=txn.callback_uri,
                    )
            except BecknRequestError as exc:
                callbacks.enqueue(
                    action=action,
                    context=context,
                    # on_rating is the one callback whose schema requires `message` (core 1.1.0).
                    message={} if action == "on_rating" else None,
                    error=exc.as_error(),
                    txn=target,
                    request=request,
                    url=txn.callback_uri,
                )
    except IntegrityError:
        return  # this message was handled already
    except Exception as exc:  # never leave a BAP without an answer
        log.exception("beckn %s %s failed", action_name, envelope.message_id)
        with transaction.atomic():
            request, _ = BecknMessage.objects.get_or_create(
                bap_id=envelope.bap_id,
                action=action_name,
                message_id=envelope.message_id,
                defaults={"body": body, "via_gateway": via_gateway, "ack": ACK},
            )
            BecknMessage.objects.filter(pk=request.pk).update(status=BecknMessage.Status.FAILED, error=str(exc)[:2000])
            callbacks.enqueue(
                action=action,
                context=context,
                error={"code": "40000", "message": "The request could not be processed; please retry."},
                request=request,
            )


# --- discovery ----------------------------------------------------------------------------------------


def on_search(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    filters: SearchFilters = search_filters(envelope.message)
    return {"catalog": render_catalog(search(filters))}


# --- ordering -----------------------------------------------------------------------------------------


def _hit_for(provider: str | None, item: str) -> Hit:
    hit = find_item(provider, item)
    if hit is None:
        raise BecknRequestError(ITEM_NOT_FOUND, "message.order.items[0].id", f"item {item!r} not found")
    return hit


def _unavailable(hit: Hit, fresh: bool) -> BecknRequestError | None:
    evse = hit.evse
    if evse.status in (Evse.Status.AVAILABLE, Evse.Status.UNKNOWN):
        return None
    expected = ""
    hold = bookings.active_hold(evse, timezone.now(), timezone.now() + timedelta(minutes=1))
    if hold is not None:
        expected = f"; expected to be available from {hold.expiry_at:%Y-%m-%dT%H:%M:%SZ}"
    age = (
        "live status from the CPO"
        if fresh
        else f"status {int((timezone.now() - evse.status_updated_at).total_seconds())} s old"
    )
    return BecknRequestError(
        FULFILLMENT_UNAVAILABLE, "message.order.items[0].id", f"charger is {evse.status} ({age}){expected}"
    )


def _price(value: Decimal | None, currency: str) -> dict[str, str]:
    return {"currency": currency, "value": format(round_money(value or Decimal("0"), currency), "f")}


def _quote_block(quote: Quote) -> dict[str, Any]:
    currency = quote.currency
    breakup = []
    for line in quote.breakdown.get("lines", []):
        title = {
            "ENERGY": "energy-cost",
            "TIME": "time-cost",
            "PARKING_TIME": "parking-fee",
            "FLAT": "session-fee",
            "EMSP_FEE": "service-charge",
        }.get(line["type"], line["type"].lower())
        value = line.get("price_incl_vat") or line.get("price_excl_vat") or "0"
        breakup.append({"title": title, "price": {"currency": currency, "value": value}})
    total = _quote_total(quote)
    return {
        "id": f"Q-{quote.pk}",
        "price": _price(total, currency),
        "breakup": breakup,
        "ttl": f"PT{max(1, int((quote.valid_until - timezone.now()).total_seconds()))}S",
    }


def _item_block(hit: Hit, quote: Quote | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id(hit.evse, hit.connector),
        "descriptor": {
            "code": "energy",
            "name": f"Charging at {hit.evse.location.name or hit.evse.location.location_id}",
        },
        "tags": item_tags(hit, timezone.now()),
        "fulfillment_ids": [f"FUL-{hit.evse.location.location_id}"],
        "location_ids": [f"LOC-{hit.evse.location.location_id}"],
    }
    if hit.tariff is not None and hit.energy_price is not None:
        item["price"] = {"currency": hit.tariff.currency, "value": format(hit.energy_price.normalize(), "f")}
    if quote is not None and quote.energy_kwh is not None:
        item["quantity"] = {
            "selected": {
                "measure": {"type": "CONSTANT", "value": format(quote.energy_kwh.normalize(), "f"), "unit": "kWh"}
            }
        }
    return item


def _fulfillment_block(
    hit: Hit, state: tuple[str, str] | None = None, extra_tags: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    location = hit.evse.location
    gps = f"{location.latitude:.6f},{location.longitude:.6f}"
    fulfillment: dict[str, Any] = {
        "id": f"FUL-{location.location_id}",
        "type": "CHARGING",
        "stops": [
            {
                "type": "start",
                "location": {"gps": gps, "address": ", ".join(p for p in (location.address, location.city) if p)},
                "instructions": {
                    "name": "Plug in, then start charging from the app",
                    "short_desc": hit.evse.evse_id or hit.evse.uid,
                },
            }
        ],
    }
    if state is not None:
        fulfillment["state"] = {
            "descriptor": {"code": state[0], "name": state[1]},
            "updated_at": callbacks.now_rfc3339(),
        }
    if extra_tags:
        fulfillment["tags"] = extra_tags
    return fulfillment


def on_select(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    selected = selected_item(envelope.message)
    hit = _hit_for(selected.provider_id, selected.item_id)
    # A fresh status check with the CPO, short timeout; otherwise the catalogue and its age.
    fresh = catalogue.evse_refresh_from_cpo(hit.evse, timeout=2.0)
    unavailable = _unavailable(hit, fresh)
    if unavailable is not None:
        raise unavailable
    energy = selected.energy_kwh if selected.energy_kwh or selected.duration else DEFAULT_QUOTE_KWH
    try:
        quote = quote_charge(
            evse=hit.evse,
            connector=hit.connector,
            arrival=timezone.now(),
            energy_kwh=energy,
            duration=selected.duration,
        )
    except NoTariff as exc:
        raise BecknRequestError(
            QUOTE_UNAVAILABLE, "message.order.items[0].id", "no price is known for this charger"
        ) from exc
    BecknTransaction.objects.filter(pk=txn.pk).update(
        provider_id=provider_id(hit.evse.location.partner), item_id=selected.item_id, quote=quote
    )
    return {
        "order": {
            "provider": {
                "id": provider_id(hit.evse.location.partner),
                "descriptor": {"name": hit.evse.location.partner.name},
            },
            "items": [_item_block(hit, quote)],
            "fulfillments": [_fulfillment_block(hit)],
            "quote": _quote_block(quote),
        }
    }


def _driver_and_token(
    order: dict[str, Any], txn: BecknTransaction, partner: Any
) -> tuple[Driver, Token, dict[str, Any]]:
    """The driver from billing/customer details (found by email or phone, else a new account) and an
    APP_USER token for the charge, checked as real-time authorization would check it."""
    billing = order.get("billing") if isinstance(order.get("billing"), dict) else {}
    fulfillments = order.get("fulfillments") if isinstance(order.get("fulfillments"), list) else []
    customer = fulfillments[0].get("customer") if fulfillments and isinstance(fulfillments[0], dict) else None
    contact = (customer or {}).get("contact") or {}
    person = (customer or {}).get("person") or {}
    email = str(billing.get("email") or contact.get("email") or "").strip().lower()
    phone = str(billing.get("phone") or contact.get("phone") or "").strip()
    name = str(billing.get("name") or person.get("name") or "").strip()
    if not (email or phone):
        raise BecknRequestError(INVALID_REQUEST, "message.order.billing", "billing needs an email or a phone number")
    driver = None
    if email:
        driver = Driver.objects.filter(email__iexact=email).first()
    if driver is None and phone:
        driver = Driver.objects.filter(phone=phone).first()
    if driver is None:
        driver = Driver.objects.create(name=name or email or phone, email=email, phone=phone)
    token = driver.tokens.filter(type=Token.Type.APP_USER, valid=True, is_blocked=False).order_by("pk").first()
    if token is None:
        token = token_issue(driver=driver, token_type=Token.Type.APP_USER)
    allowed = token.allowed_status(timezone.now(), partner)
    if allowed != Token.Allowed.ALLOWED:
        raise BecknRequestError(PAYMENT_NOT_SUPPORTED if allowed == Token.Allowed.NO_CREDIT else INVALID_REQUEST,
                                "message.order.billing", f"this driver cannot charge here: {allowed}")  # fmt: skip
    return driver, token, billing


def _quote_total(quote: Quote) -> Decimal:
    """The quote's price; without VAT figures (a CPO tariff with no VAT given), its parts excl. VAT."""
    return quote.total_incl_vat if quote.total_incl_vat is not None else quote.cpo_cost_excl_vat + quote.fee_excl_vat


def _payments(quote: Quote, status: str = "NOT-PAID") -> list[dict[str, Any]]:
    amount = _quote_total(quote)
    return [
        {
            "id": f"PAY-{quote.pk}",
            "collected_by": "BPP",
            # The exact amount is known only from the CPO's CDR: pay after charging (RFC 4.2, DEG00x).
            "type": "POST-FULFILLMENT",
            "status": status,
            "params": {"amount": format(round_money(amount, quote.currency), "f"), "currency": quote.currency},
        }
    ]


def _cancellation_terms(currency: str) -> list[dict[str, Any]]:
    return [
        {
            "fulfillment_state": {"descriptor": {"code": "RESERVATION"}},
            "reason_required": False,
            "cancellation_fee": {"amount": {"currency": currency, "value": "0"}},
        },
        {
            "fulfillment_state": {"descriptor": {"code": "ACTIVE"}},
            "reason_required": False,
            "cancellation_fee": {"percentage": "0"},
            "external_ref": {"mimetype": "text/plain", "url": f"{settings.PUBLIC_BASE_URL}/beckn/terms"},
        },
    ]


def _valid_quote(txn: BecknTransaction) -> Quote:
    if txn.quote_id is None:
        raise BecknRequestError(QUOTE_UNAVAILABLE, "message.order", "select this item first: there is no quote")
    quote = Quote.objects.get(pk=txn.quote_id)
    if quote.valid_until < timezone.now():
        raise BecknRequestError(QUOTE_UNAVAILABLE, "message.order.quote", "the quote expired: select again")
    return quote


def on_init(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    order = envelope.message.get("order")
    if not isinstance(order, dict):
        raise BecknRequestError(INVALID_REQUEST, "message.order", "order must be an object")
    quote = _valid_quote(txn)
    hit = _hit_for(txn.provider_id, txn.item_id)
    driver, token, billing = _driver_and_token(order, txn, hit.evse.location.partner)
    # Lock the quote for its ttl from now (the driver is committing to it).
    Quote.objects.filter(pk=quote.pk).update(driver=driver, valid_until=timezone.now() + QUOTE_TTL)
    quote.refresh_from_db()
    BecknTransaction.objects.filter(pk=txn.pk).update(driver=driver, token=token, billing=billing)
    return {
        "order": {
            "provider": {"id": txn.provider_id},
            "items": [_item_block(hit, quote)],
            "fulfillments": [_fulfillment_block(hit)],
            "billing": billing,
            "quote": _quote_block(quote),
            "payments": _payments(quote),
            "cancellation_terms": _cancellation_terms(quote.currency),
        }
    }


def order_block(
    booking: Booking, txn: BecknTransaction | None, *, extra_tags: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    connector = catalogue.connector_get(booking.evse, booking.connector_id) or booking.evse.connectors.first()
    hit = hit_for(booking.evse, connector, timezone.now())
    state = STATE_CODES[booking.state]
    status = (
        "ACTIVE"
        if booking.is_active
        else "CANCELLED"
        if booking.state in (Booking.State.CANCELLED, Booking.State.FAILED)
        else "COMPLETE"
    )
    order: dict[str, Any] = {
        "id": booking.order_id,
        "status": status,
        "provider": {
            "id": provider_id(booking.evse.location.partner),
            "descriptor": {"name": booking.evse.location.partner.name},
        },
        "items": [_item_block(hit, booking.quote)],
        "fulfillments": [_fulfillment_block(hit, state, extra_tags=charging_details(booking))],
        "created_at": booking.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": booking.updated_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    payment_status = booking.payment_status if booking.payment_status in ("PAID", "NOT-PAID") else "NOT-PAID"
    receipt = DriverReceipt.objects.filter(cdr__charging_session__booking=booking).first()
    if receipt is not None:
        order["quote"] = _final_quote(receipt)
        order["payments"] = [
            {
                "id": f"PAY-{booking.order_id}",
                "collected_by": "BPP",
                "type": "POST-FULFILLMENT",
                "status": payment_status,
                "params": {
                    "amount": _price(receipt.total_incl_vat, receipt.currency)["value"],
                    "currency": receipt.currency,
                },
            }
        ]
    elif booking.quote is not None:
        order["quote"] = _quote_block(booking.quote)
        order["payments"] = _payments(booking.quote, payment_status)
    if txn is not None and txn.billing:
        order["billing"] = txn.billing
    if extra_tags:
        order["tags"] = extra_tags
    return order


FINAL_COMPONENTS = (
    ("fixed_cost", "session-fee"),
    ("energy_cost", "energy-cost"),
    ("time_cost", "time-cost"),
    ("parking_cost", "parking-fee"),
)


def _final_quote(receipt: DriverReceipt) -> dict[str, Any]:
    """The final bill, with the same line titles as the quote (amounts incl. VAT) so a BAP can compare
    them; the lines add up to the price. The CPO's parts come from the CDR's component totals when it
    sent them and they add up to its total, else as one `charging-cost` line."""
    currency = receipt.currency
    cpo_incl = receipt.cpo_cost_excl_vat + receipt.cpo_vat
    lines = [(title, amount) for title, amount in _cdr_components(receipt) if amount]
    if not lines or sum(amount for _, amount in lines) != cpo_incl:
        lines = [("charging-cost", cpo_incl)]
    lines.append(("service-charge", receipt.fee_excl_vat + receipt.fee_vat))
    breakup = [{"title": title, "price": _price(amount, currency)} for title, amount in lines]
    shown = sum(Decimal(line["price"]["value"]) for line in breakup)
    total = round_money(receipt.total_incl_vat, currency)
    if shown != total:  # each line rounded to the minor unit: say where the cents went
        breakup.append({"title": "rounding", "price": {"currency": currency, "value": format(total - shown, "f")}})
    return {
        "id": f"FINAL-{receipt.pk}",
        "price": _price(total, currency),
        "breakup": breakup,
    }


def _cdr_components(receipt: DriverReceipt) -> list[tuple[str, Decimal]]:
    cpo = (receipt.breakdown or {}).get("cpo") or {}
    components = []
    for key, title in FINAL_COMPONENTS:
        price = cpo.get(key)
        if not isinstance(price, dict):
            continue
        value = price.get("incl_vat", price.get("excl_vat"))
        try:
            components.append((title, Decimal(str(value))))
        except (ArithmeticError, ValueError):
            return []  # unreadable: fall back to the CPO's total
    return components


def charging_details(booking: Booking) -> list[dict[str, Any]] | None:
    """Live session figures as the `charging-details` tag group (DEG v1 / UEI convention)."""
    session = bookings.current_session(booking)
    if session is None:
        return None

    def tag(code: str, value: Any) -> dict[str, Any]:
        return {"descriptor": {"code": code}, "value": str(value)}

    tags = [
        tag("session-status", session.status),
        tag("energy-delivered", f"{session.kwh.normalize()}kWh"),
        tag("start-time", session.start_date_time.strftime("%Y-%m-%dT%H:%M:%SZ")),
        tag("last-updated", session.last_updated.strftime("%Y-%m-%dT%H:%M:%SZ")),
    ]
    if session.end_date_time:
        tags.append(tag("stop-time", session.end_date_time.strftime("%Y-%m-%dT%H:%M:%SZ")))
    power = _last_power(session)
    if power is not None:
        tags.append(tag("power", f"{power}kW"))
    if session.total_cost_excl_vat is not None:
        cost = session.total_cost_incl_vat if session.total_cost_incl_vat is not None else session.total_cost_excl_vat
        tags.append(tag("cost-so-far", f"{round_money(cost, session.currency)} {session.currency}"))
    else:
        estimate = session_estimate(session)
        if estimate is not None and estimate.total_cost.incl_vat is not None:
            tags.append(
                tag("cost-so-far", f"{round_money(estimate.total_cost.incl_vat, session.currency)} {session.currency}")
            )
    return [{"descriptor": {"code": "charging-details", "name": "Charging details"}, "list": tags}]


def _last_power(session: ChargingSession) -> Decimal | None:
    periods = session.data.get("charging_periods") or []
    for period in reversed(periods):
        for dimension in period.get("dimensions") or []:
            if dimension.get("type") in ("POWER", "MAX_POWER"):
                return Decimal(str(dimension.get("volume")))
    return None


def on_confirm(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    if txn.booking_id is not None:
        booking = Booking.objects.get(pk=txn.booking_id)
        return {"order": order_block(booking, txn)}  # a confirm repeated under a new message_id
    quote = _valid_quote(txn)
    if txn.token_id is None:
        raise BecknRequestError(INVALID_REQUEST, "message.order", "init the order first (billing and driver)")
    hit = _hit_for(txn.provider_id, txn.item_id)
    order = envelope.message.get("order") if isinstance(envelope.message.get("order"), dict) else {}
    payment_reference = ""
    for payment in order.get("payments") or []:
        if isinstance(payment, dict) and payment.get("status") == "PAID":
            payment_reference = str((payment.get("params") or {}).get("transaction_id") or "PAID")
    try:
        booking = bookings.booking_confirm(
            evse=hit.evse,
            connector_id=hit.connector.connector_id,
            token=Token.objects.get(pk=txn.token_id),
            driver=txn.driver,
            quote_id=quote.pk,
            payment_reference=payment_reference,
        )
    except bookings.EvseUnavailable as exc:
        when = f"; expected to be available from {exc.available_from:%Y-%m-%dT%H:%M:%SZ}" if exc.available_from else ""
        raise BecknRequestError(FULFILLMENT_UNAVAILABLE, "message.order.items[0].id", f"{exc.reason}{when}") from exc
    Quote.objects.filter(pk=quote.pk).update(accepted_at=timezone.now())
    BecknTransaction.objects.filter(pk=txn.pk).update(booking=booking)
    txn.booking = booking
    return {"order": order_block(booking, txn)}


def _booking_of(txn: BecknTransaction, identifier: str) -> Booking:
    booking = (
        Booking.objects.filter(order_id=identifier, beckn_transaction__bap_id=txn.bap_id)
        .select_related("evse__location__partner", "quote")
        .first()
    )
    if booking is None:
        raise BecknRequestError(ORDER_NOT_FOUND, "message.order_id", f"order {identifier!r} not found")
    return booking


def on_update(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    identifier, what = update_request(envelope.message)
    booking = _booking_of(txn, identifier)
    try:
        command = bookings.booking_start(booking) if what == "start" else bookings.booking_stop(booking)
    except bookings.BookingStateError as exc:
        raise BecknRequestError(UPDATE_NOT_POSSIBLE, "message.order.fulfillments[0].state", str(exc)) from exc
    # Send now rather than after commit: the BAP's answer carries the CPO's CommandResponse (the task
    # queued by the booking service then finds the command already sent and does nothing).
    command = command_send(command)
    booking.refresh_from_db()
    if command.status == Command.Status.FAILED:
        raise BecknRequestError(
            "40006",
            "message.order.fulfillments[0].state",
            f"the charger refused: {command.error or command.response_result}",
        )
    return {"order": order_block(booking, txn)}


def on_status(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    booking = _booking_of(txn, order_id(envelope.message, "status"))
    return {"order": order_block(booking, txn)}


def on_track(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    booking = _booking_of(txn, order_id(envelope.message, "track"))
    return {
        "tracking": {
            "id": f"TRACK-{booking.order_id}",
            "url": f"{settings.PUBLIC_BASE_URL}/beckn/track/{booking.order_id}",
            "status": "active"
            if booking.state in (Booking.State.STARTING, Booking.State.CHARGING, Booking.State.STOPPING)
            else "inactive",
        }
    }


def on_cancel(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    booking = _booking_of(txn, order_id(envelope.message, "cancel"))
    reason = str(envelope.message.get("cancellation_reason_id") or "")
    try:
        bookings.booking_cancel(booking, reason=reason or "cancelled by the driver")
    except bookings.BookingStateError as exc:
        raise BecknRequestError(CANCELLATION_NOT_POSSIBLE, "message.order_id", str(exc)) from exc
    booking.refresh_from_db()
    order = order_block(booking, txn)
    order["cancellation"] = {"cancelled_by": "CONSUMER", "time": callbacks.now_rfc3339()}
    if reason:
        order["cancellation"]["reason"] = {"id": reason}
    return {"order": order}


def on_rating(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    ratings = envelope.message.get("ratings")
    if not isinstance(ratings, list) or not ratings:
        raise BecknRequestError(INVALID_REQUEST, "message.ratings", "ratings must list at least one rating")
    stored = []
    for i, rating in enumerate(ratings):
        if not isinstance(rating, dict):
            raise BecknRequestError(INVALID_REQUEST, f"message.ratings[{i}]", "a rating must be an object")
        category = str(rating.get("rating_category") or "Order")
        ref_id = str(rating.get("id") or "")
        value = str(rating.get("value") or "")
        try:
            number = Decimal(value)
        except ArithmeticError:
            number = None
        if number is None or not Decimal("0") <= number <= Decimal("5"):
            raise BecknRequestError(
                INVALID_RATING, f"message.ratings[{i}].value", "rating value must be a number from 0 to 5"
            )
        if (
            category.lower() == "order"
            and not Booking.objects.filter(order_id=ref_id, beckn_transaction__bap_id=txn.bap_id).exists()
        ):
            raise BecknRequestError(RATING_ENTITY_NOT_FOUND, f"message.ratings[{i}].id", f"order {ref_id!r} not found")
        stored.append(
            BecknRating(
                transaction=txn if txn.pk else None, bap_id=txn.bap_id, category=category, ref_id=ref_id, value=value
            )
        )
    BecknRating.objects.bulk_create(stored)
    return {
        "feedback_form": {
            "form": {"url": f"{settings.PUBLIC_BASE_URL}/beckn/feedback", "mime_type": "text/html"},
            "required": False,
        }
    }


def on_support(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    support = envelope.message.get("support") if isinstance(envelope.message.get("support"), dict) else {}
    ref_id = str(support.get("ref_id") or support.get("order_id") or "")
    booking = (
        Booking.objects.filter(order_id=ref_id, beckn_transaction__bap_id=txn.bap_id)
        .select_related("evse__location__partner")
        .first()
    )
    answer: dict[str, Any] = {
        "ref_id": ref_id or txn.transaction_id,
        "phone": settings.EMSP_SUPPORT_PHONE,
        "email": settings.EMSP_SUPPORT_EMAIL,
        # Both our and the CPO's contacts are on this page (Support has room for one of each field only).
        "url": f"{settings.PUBLIC_BASE_URL}/beckn/support/{booking.order_id if booking else 'general'}",
    }
    return {"support": answer}


HANDLERS = {
    "search": on_search,
    "select": on_select,
    "init": on_init,
    "confirm": on_confirm,
    "update": on_update,
    "status": on_status,
    "track": on_track,
    "cancel": on_cancel,
    "rating": on_rating,
    "support": on_support,
}
