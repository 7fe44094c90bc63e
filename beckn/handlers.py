"""What each Beckn action does, after the ACK: `handle()` records the request once and answers it with the
action's on_* builder — discovery from the catalogue, quotes from the tariff engine, bookings and commands
through the domain services — or with a BECKN-005 error.

Request → beckn/ack.py (verify, validate, ACK; through beckn/ack_lane.py or beckn/views.py) → beckn/tasks.py →
`handle()` here → emsp/services/* and billing/services/* → beckn/rendering.py (the blocks) → beckn/callbacks.py
(outbox → signed POST to the BAP)."""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from beckn import callbacks
from beckn.catalogue import (
    Hit,
    SearchFilters,
    alternatives,
    alternatives_tags,
    find_item,
    hit_for,
    provider_id,
    provider_known,
    provider_name,
    render_catalog,
    same_provider,
    search,
)
from beckn.errors import (
    BUSINESS_ERROR,
    CANCELLATION_NOT_POSSIBLE,
    FULFILLMENT_UNAVAILABLE,
    FULFILMENT_AGENT_UNAVAILABLE,
    INVALID_RATING,
    INVALID_REQUEST,
    ITEM_NOT_FOUND,
    ORDER_NOT_FOUND,
    PAYMENT_NOT_SUPPORTED,
    PROVIDER_NOT_FOUND,
    QUOTE_UNAVAILABLE,
    RATING_ENTITY_NOT_FOUND,
    UNSUPPORTED_RATING_CATEGORY,
    UPDATE_NOT_POSSIBLE,
    BecknRequestError,
)
from beckn.models import BecknMessage, BecknRating, BecknTransaction
from beckn.parsing import (
    ACK,
    Envelope,
    contact_details,
    context_city,
    fulfillment_window,
    order_id,
    order_id_path,
    parse_envelope,
    parse_payments,
    plain_id,
    search_filters,
    selected_item,
    update_request,
)
from beckn.privacy import redacted
from beckn.rendering import (
    cancellation_terms,
    charger_answer,
    fulfillment_block,
    item_block,
    offered_payments,
    order_block,
    payment_amount,
    payment_block,
    quote_block,
    stop_answer,
)
from billing.models import Payment, Quote
from billing.payments.gateway import GatewayError
from billing.services import payments
from billing.services.driver_pricing import (
    NoTariff,
    QuoteUnavailable,
    quote_accept,
    quote_charge,
    quote_hold,
    quote_usable,
)
from emsp.inserts import insert, insert_if_absent
from emsp.key_locks import keys_locked
from emsp.models import Booking, Command, Driver, Evse, Token
from emsp.rows import first_where
from emsp.services import bookings, breakers, catalogue, commands, drivers, freshness

log = logging.getLogger(__name__)

DEFAULT_QUOTE_KWH = Decimal("10")


def transaction_for(
    envelope: Envelope, via_gateway: str = "", callback_url: str = "", gateway_url: str = ""
) -> BecknTransaction:
    """The BAP's journey; its callbacks go to the BAP's registered URL (checked at the ACK: `callback_url`),
    but for a search a gateway forwarded, to the URL of the gateway key that signed it (`gateway_url`)."""
    context = envelope.context
    bap_uri = callback_url or context["bap_uri"]
    key = {"bap_id": envelope.bap_id, "transaction_id": envelope.transaction_id}
    defaults = {
        "bap_uri": bap_uri,
        "callback_uri": bap_uri,
        "domain": context["domain"],
        "context_location": context.get("location") or {},
    }
    where = "t.bap_id = %s AND t.transaction_id = %s"
    # A search usually opens the journey (so: insert first); later actions usually find it (one plain SELECT).
    found = None if envelope.action == "search" else first_where(BecknTransaction, where, list(key.values()))
    created = False
    if found is None:  # a journey opened here (a select from a charger's QR code opens one without a search)
        txn = BecknTransaction(**key, **defaults)
        created = insert_if_absent(txn, tuple(key))  # one statement, where get_or_create took four
        if not created:  # opened meanwhile by another request of the same journey
            txn = first_where(BecknTransaction, where, list(key.values()))
    else:
        txn = found
    if via_gateway and envelope.action == "search":
        # A search forwarded by a gateway is answered back through it (beckn-notes §4.2), at the URL registered
        # with the key that signed X-Gateway-Authorization, taken at the ACK: not any row of that subscriber_id,
        # which may be an old key's or an unsubscribed one's. A gateway with no URL registered: to the BAP.
        if gateway_url:
            txn.callback_uri = gateway_url  # for this answer only; later actions go to the BAP
            return txn
    elif not created and txn.bap_uri != bap_uri:
        BecknTransaction.objects.filter(pk=txn.pk).update(bap_uri=bap_uri, callback_uri=bap_uri)
        txn.refresh_from_db()
    return txn


# A handler runs in a savepoint, so that what it wrote is undone when it answers with an error. A search writes
# nothing an error must undo (its one write, the EVSE watch, comes after everything that can refuse it, and holds
# either way), and it raises only BecknRequestError from its own checks, never from a database error: it goes
# without the savepoint's two round trips (SAVEPOINT, RELEASE), a search's most frequent statements after its own.
ANSWERED_WITHOUT_SAVEPOINT = frozenset({"search"})


def handle(action_name: str, body: str, via_gateway: str = "", callback_url: str = "", gateway_url: str = "") -> None:
    """Record an ACKed request and answer it, in one transaction: a worker killed half-way leaves nothing
    behind and the redelivered task starts afresh; a duplicate delivery (or a repeat the ACK path let through)
    meets the unique (bap_id, action, message_id) row and changes nothing.

    But an update that starts or stops the charge is answered with what the CPO said to the command, and a POST
    to the CPO can't be rolled back: that transaction records the request RECEIVED with its command (and the
    booking's move) and commits, the command goes out after it, and a second transaction answers
    (`_answer_sent`). A redelivery after a kill anywhere past that commit finds its row RECEIVED and resumes:
    the command is sent once whatever happens (commands.command_send moves it QUEUED → SENT, committed, before
    its POST), and the app is answered once (RECEIVED → PROCESSED)."""
    # Checked at the ACK; its timestamp may have aged in the queue since (a worker restarting, a backlog).
    envelope = parse_envelope(body.encode(), action_name, check_timestamp=False)
    action = f"on_{action_name}"
    context = callbacks.callback_context(envelope.context, action)
    to_send: Command | None = None
    try:
        with transaction.atomic():
            # The journey first, so the message row is written once with it (a duplicate message still fails
            # on its unique key below, and the whole transaction, journey included, rolls back).
            txn = transaction_for(envelope, via_gateway, callback_url, gateway_url)
            target = txn if txn.pk else None
            request = BecknMessage(
                bap_id=envelope.bap_id,
                action=action_name,
                message_id=envelope.message_id,
                transaction=target,
                body=redacted(body),  # who the driver is lives on the journey, encrypted; not in the log
                via_gateway=via_gateway,
                ack=ACK,
                status=BecknMessage.Status.PROCESSED,
                processed_at=timezone.now(),
            )
            insert(request)  # a repeated message fails on its unique key: IntegrityError, as create() raised
            try:
                with transaction.atomic() if action_name not in ANSWERED_WITHOUT_SAVEPOINT else nullcontext():
                    message = HANDLERS[action_name](envelope, txn)
                    if isinstance(message, SendFirst):
                        to_send = message.command
                        BecknMessage.objects.filter(pk=request.pk).update(
                            status=BecknMessage.Status.RECEIVED, processed_at=None, command=to_send
                        )
                    else:
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
                    error=exc.as_error(),
                    txn=target,
                    request=request,
                    url=txn.callback_uri,
                )
                if exc.alternatives:
                    send_alternatives(exc.alternatives, txn=target, request_context=envelope.context, window=exc.window)
    except IntegrityError:
        # This message was handled already, or recorded by a run killed before it answered: that one resumes.
        resumed = _recorded_unanswered(envelope)
        if resumed is None:
            return
        request, to_send = resumed
        try:
            txn = transaction_for(envelope, via_gateway, callback_url, gateway_url)
        except Exception as exc:
            _failed(envelope, body, via_gateway, callback_url, gateway_url, context, exc)
            return
    except Exception as exc:  # never leave a BAP without an answer
        _failed(envelope, body, via_gateway, callback_url, gateway_url, context, exc)
        return
    if to_send is None:
        return
    try:
        _answer_sent(to_send, request, envelope, txn, context)
    except Exception as exc:
        _failed(envelope, body, via_gateway, callback_url, gateway_url, context, exc)


def _failed(
    envelope: Envelope,
    body: str,
    via_gateway: str,
    callback_url: str,
    gateway_url: str,
    context: dict[str, Any],
    exc: Exception,
) -> None:
    """The request failed unexpectedly: recorded FAILED, and the BAP told to retry (never left without an answer).
    A start or stop already sent is not undone: a command that fails later is told (beckn/events.py), and a
    retried start or stop meets the booking as it now stands."""
    action_name = envelope.action
    log.exception("beckn %s %s failed", action_name, envelope.message_id, exc_info=exc)
    with transaction.atomic():
        request, _ = BecknMessage.objects.get_or_create(
            bap_id=envelope.bap_id,
            action=action_name,
            message_id=envelope.message_id,
            defaults={"body": redacted(body), "via_gateway": via_gateway, "ack": ACK},
        )
        BecknMessage.objects.filter(pk=request.pk).update(status=BecknMessage.Status.FAILED, error=str(exc)[:2000])
        callbacks.enqueue(
            action=f"on_{action_name}",
            context=context,
            error={"code": "40000", "message": "The request could not be processed; please retry."},
            request=request,
            url=gateway_url or callback_url or None,  # where the answer would have gone (a gateway's search)
        )


@dataclass(frozen=True)
class SendFirst:
    """What a handler returns for a command it made that must reach the CPO before the request is answered (a
    start or stop of the charge): sent once the request is recorded, and answered by `_answer_sent`."""

    command: Command


def _recorded_unanswered(envelope: Envelope) -> tuple[BecknMessage, Command] | None:
    """The row of this request and its command, when a run recorded it and was killed before answering it."""
    request = (
        BecknMessage.objects.filter(
            bap_id=envelope.bap_id,
            action=envelope.action,
            message_id=envelope.message_id,
            status=BecknMessage.Status.RECEIVED,
            command__isnull=False,
        )
        .select_related("command")
        .first()
    )
    if request is None or request.command is None:
        return None
    return request, request.command


def _answer_sent(
    command: Command, request: BecknMessage, envelope: Envelope, txn: BecknTransaction, context: dict[str, Any]
) -> None:
    """Send the command the request made (nothing if a run before this one sent it, or its queued task did), then
    answer the request once, with the order as it now stands or the CPO's refusal."""
    commands.command_send(command)
    with transaction.atomic():
        # The command's row first: a send that finishes it elsewhere (its queued task, commands.command_send)
        # then commits before this reads it, or finds this request answered, and a failure is told either here
        # or by beckn/events.py command_finished (which stays silent while the request is RECEIVED), not both.
        command = Command.objects.select_for_update().get(pk=command.pk)
        answered = BecknMessage.objects.filter(pk=request.pk, status=BecknMessage.Status.RECEIVED).update(
            status=BecknMessage.Status.PROCESSED, processed_at=timezone.now()
        )
        if not answered:
            return  # by another run of this request
        target = txn if txn.pk else None
        action = f"on_{envelope.action}"
        booking = Booking.objects.select_related("evse__location__partner", "quote").get(pk=command.booking_id)
        try:
            _command_outcome(command, booking)
        except BecknRequestError as exc:
            callbacks.enqueue(
                action=action, context=context, error=exc.as_error(), txn=target, request=request, url=txn.callback_uri
            )
            if exc.alternatives:
                send_alternatives(exc.alternatives, txn=target, request_context=envelope.context, window=exc.window)
            return
        error = None
        start = command.type == Command.Type.START_SESSION
        if start and start_timed_out(command) and not commands.charging_began(command):  # else the order says Charging
            error = {"code": FULFILMENT_AGENT_UNAVAILABLE, "message": START_TIMEOUT}
        callbacks.enqueue(
            action=action,
            context=context,
            message={"order": order_block(booking, txn)},
            error=error,
            txn=target,
            request=request,
            url=txn.callback_uri,
        )


def send_alternatives(
    hits: list[Hit],
    *,
    txn: BecknTransaction | None,
    request_context: dict[str, Any] | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> None:
    """Chargers the driver can book instead, as an unsolicited on_search catalogue in the same transaction:
    real items (provider, location, fulfillment, price) the app can `select` as they are."""
    if txn is None:
        return
    context = callbacks.callback_context(request_context, "on_search", txn=txn, message_id=str(uuid.uuid4()))
    catalog = render_catalog(hits, window=window)
    catalog["descriptor"] = {"name": "Chargers you can book instead", "code": "alternatives"}
    callbacks.enqueue(action="on_search", context=context, message={"catalog": catalog}, txn=txn)


def on_search(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    filters: SearchFilters = search_filters(envelope.message)
    if filters.provider and not provider_known(filters.provider):  # BECKN-005: not an empty catalogue
        raise BecknRequestError(
            PROVIDER_NOT_FOUND, "message.intent.provider.id", f"provider {filters.provider!r} not found"
        )
    if filters.item_id and find_item(filters.provider, filters.item_id) is None:
        raise BecknRequestError(ITEM_NOT_FOUND, "message.intent.item.id", f"item {filters.item_id!r} not found")
    if filters.other_fulfillment:  # a battery swap, say: we offer charging only, so nothing matches
        return {"catalog": render_catalog([])}
    if filters.latitude is None and filters.route is None:
        filters.city = context_city(envelope.context)
    hits = search(filters)
    freshness.evses_watch(hit.evse.pk for hit in hits)  # shown to a driver: kept fresh for a while
    return {"catalog": render_catalog(hits, window=filters.window)}


def _hit_for(provider: str | None, item: str, at: datetime | None = None) -> Hit:
    """The item selected, with its tariff and price at `at` (a window's start: what search showed for that
    window and what its quote prices), default now."""
    hit = find_item(provider, item, at)
    if hit is None:
        if provider and not provider_known(provider):
            raise BecknRequestError(PROVIDER_NOT_FOUND, "message.order.provider.id", f"provider {provider!r} not found")
        raise BecknRequestError(ITEM_NOT_FOUND, "message.order.items[0].id", f"item {item!r} not found")
    return hit


# A transaction's order that ended without a charge: the app may select, init and confirm another in the same
# transaction (the alternatives we offer come as an on_search in it).
ENDED_UNUSED = (Booking.State.CANCELLED, Booking.State.EXPIRED, Booking.State.FAILED)


def _not_after_confirm(txn: BecknTransaction) -> None:
    """A transaction holds one order at a time: while its confirmed order stands, a select or init would quote
    an order that could never be confirmed (a confirm repeats the confirmed one)."""
    if txn.booking_id is None:
        return
    order, state = Booking.objects.filter(pk=txn.booking_id).values_list("order_id", "state").get()
    if state not in ENDED_UNUSED:
        raise BecknRequestError(
            BUSINESS_ERROR,
            "context.transaction_id",
            f"order {order} is confirmed in this transaction: another order needs a new transaction_id",
        )


def _names_the_selection(order: dict[str, Any], txn: BecknTransaction) -> None:
    """The provider and items an init or confirm names, where it names them, are the ones selected in this
    transaction: the quote, the hold and the booking are for those (30001 / 30004 otherwise, select first)."""
    provider = order.get("provider")
    named = provider.get("id") if isinstance(provider, dict) else None
    if named is not None and txn.provider_id:
        named = plain_id(named if isinstance(named, str) else "", "message.order.provider.id")
        if not same_provider(named, txn.provider_id):
            raise BecknRequestError(
                PROVIDER_NOT_FOUND,
                "message.order.provider.id",
                f"provider {named!r} is not the one selected in this transaction ({txn.provider_id}): select first",
            )
    items = order.get("items")
    if isinstance(items, list) and txn.item_id:
        for i, item in enumerate(items):
            named = item.get("id") if isinstance(item, dict) else None
            if named is None:
                continue
            path = f"message.order.items[{i}].id"
            named = plain_id(named if isinstance(named, str) else "", path)
            if named.casefold() != txn.item_id.casefold():
                raise BecknRequestError(
                    ITEM_NOT_FOUND,
                    path,
                    f"item {named!r} is not the one selected in this transaction ({txn.item_id}): select it first",
                )


def _unavailable(hit: Hit, fresh: bool, window: tuple[datetime, datetime] | None = None) -> BecknRequestError | None:
    """Why this connector can't be booked (now, or in `window`), with alternatives; None when it can."""
    evse = hit.evse
    now = timezone.now()
    start, end = window or (now, now + timedelta(minutes=1))
    hold = bookings.active_hold(evse, start, end)
    ahead = window is not None and window[0] > now + timedelta(minutes=15)
    if ahead and evse.status not in Evse.FAULT_STATUSES and hold is None:
        return None  # what the charger does now says nothing about a window ahead
    if not ahead and evse.status in (Evse.Status.AVAILABLE, Evse.Status.UNKNOWN) and hold is None:
        return None
    if hold is not None and (ahead or evse.status in (Evse.Status.AVAILABLE, Evse.Status.UNKNOWN)):
        reason = f"charger is booked from {hold.start_at:%Y-%m-%dT%H:%M:%SZ} to {hold.expiry_at:%Y-%m-%dT%H:%M:%SZ}"
    else:
        expected = f"; expected to be available from {hold.expiry_at:%Y-%m-%dT%H:%M:%SZ}" if hold is not None else ""
        age = (
            "live status from the CPO"
            if fresh
            else f"status {int((timezone.now() - evse.status_updated_at).total_seconds())} s old"
        )
        reason = f"charger is {evse.status} ({age}){expected}"
    return BecknRequestError(
        FULFILLMENT_UNAVAILABLE,
        "message.order.items[0].id",
        reason,
        alternatives=alternatives(evse, hit.connector.connector_id, window=window),
        window=window,
    )


def _not_answering(hit: Hit, module: str) -> str | None:
    """Why we won't wait for the charger's CPO (its circuit breaker for `module` is open), or None."""
    breaker = breakers.refusing(hit.evse.location.partner, module)
    if breaker is None:
        return None
    age = int((timezone.now() - hit.evse.status_updated_at).total_seconds())
    return f"{breakers.describe(breaker)}. Status from our catalogue, {age} s old."


def _cpo_down_error(evse: Evse, connector_id: str, path: str, reason: str) -> BecknRequestError:
    """A command the CPO can't take now: the reason and chargers of other operators nearby (named in the
    message, and sent as a catalogue the app can select from)."""
    nearby = alternatives(evse, connector_id, other_operators=True)
    if nearby:
        reason += " Nearby chargers you can book instead: " + "; ".join(
            f"{a['descriptor']['name']} = {a['value']}" for a in alternatives_tags(nearby)
        )
    return BecknRequestError(FULFILMENT_AGENT_UNAVAILABLE, path, reason, alternatives=nearby)


def _hit_refreshed(hit: Hit, item: str, at: datetime | None = None) -> Hit:
    """The item as its CPO has just described it: storing the EVSE (evse_put) replaced its connectors, so the
    connector is read again and the quote is for its tariffs as they are now, not as they were. 30004 when the
    CPO no longer lists it."""
    connector = catalogue.connector_get(hit.evse, hit.connector.connector_id)
    if connector is None:
        raise BecknRequestError(
            ITEM_NOT_FOUND, "message.order.items[0].id", f"item {item!r} not found: its operator no longer lists it"
        )
    return hit_for(hit.evse, connector, at or timezone.now())


def on_select(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    """The quote for the item selected, after a live status check with the CPO. The journey's row is taken before
    anything touches the EVSE, as init and confirm take it first: the EVSE's watch (a key share on it) and the live
    check (evse_put locks the location and the EVSE) came before the journey's update, while a confirm locks the
    journey then the EVSE FOR UPDATE, so a re-select deadlocked with the confirm of the same journey. Under the
    lock the select waits for that confirm and then meets the order it booked (`_not_after_confirm` again, on the
    row as locked). A select refused before (its item unknown) costs no lock."""
    _not_after_confirm(txn)
    selected = selected_item(envelope.message)
    at = selected.window[0] if selected.window else None
    hit = _hit_for(selected.provider_id, selected.item_id, at)
    txn = _journey_locked(txn)
    _not_after_confirm(txn)
    freshness.evses_watch([hit.evse.pk])
    # A fresh status check with the CPO, short timeout; otherwise the catalogue and its age. While the CPO's
    # breaker is open the check is refused at once: the quote comes from the catalogue, saying why.
    fresh = catalogue.evse_refresh_from_cpo(hit.evse, timeout=2.0)
    if fresh:
        hit = _hit_refreshed(hit, selected.item_id, at)
    status_note = None if fresh else _not_answering(hit, "locations")
    unavailable = _unavailable(hit, fresh, selected.window)
    if unavailable is not None:
        raise unavailable
    energy = selected.energy_kwh if selected.energy_kwh or selected.duration else DEFAULT_QUOTE_KWH
    try:
        quote = quote_charge(
            evse=hit.evse,
            connector=hit.connector,
            arrival=selected.window[0] if selected.window else timezone.now(),
            energy_kwh=energy,
            duration=selected.duration,
        )
    except NoTariff as exc:
        raise BecknRequestError(
            QUOTE_UNAVAILABLE, "message.order.items[0].id", "no price is known for this charger"
        ) from exc
    window_start, window_end = selected.window or (None, None)
    BecknTransaction.objects.filter(pk=txn.pk).update(
        provider_id=provider_id(hit.evse.location),
        item_id=selected.item_id,
        quote=quote,
        window_start=window_start,
        window_end=window_end,
    )
    return {
        "order": {
            "provider": {
                "id": provider_id(hit.evse.location),
                "descriptor": {"name": provider_name(hit.evse.location)},
            },
            "items": [item_block(hit, quote, status_note)],
            "fulfillments": [fulfillment_block(hit.evse, window=selected.window)],
            "quote": quote_block(quote),
            "payments": offered_payments(quote, payments.agreement_for(txn.bap_id)),
        }
    }


def _driver_and_token(
    order: dict[str, Any], txn: BecknTransaction, partner: Any
) -> tuple[Driver, Token, dict[str, Any]]:
    """The driver from billing/customer details (found by email or phone, else a new account) and an
    APP_USER token for the charge, checked as real-time authorization would check it."""
    details = contact_details(order)
    email, phone, name, billing = details.email, details.phone, details.name, details.billing
    if not (email.strip() or phone.strip()):
        raise BecknRequestError(INVALID_REQUEST, "message.order.billing", "billing needs an email or a phone number")
    driver = drivers.driver_for_contact(app_id=txn.bap_id, email=email, phone=phone, name=name)
    try:
        token = drivers.driver_app_token(driver, partner=partner)
    except drivers.DriverCannotCharge as exc:
        code = PAYMENT_NOT_SUPPORTED if exc.allowed == Token.Allowed.NO_CREDIT else INVALID_REQUEST
        raise BecknRequestError(code, "message.order.billing", str(exc)) from exc
    return driver, token, billing


def _valid_quote(txn: BecknTransaction) -> Quote:
    try:
        return quote_usable(txn.quote_id)
    except QuoteUnavailable as exc:
        path = "message.order" if txn.quote_id is None else "message.order.quote"
        raise BecknRequestError(QUOTE_UNAVAILABLE, path, str(exc)) from exc


def _journey_locked(txn: BecknTransaction) -> BecknTransaction:
    """The journey's row, locked until the request's transaction ends, and read again under the lock: one init or
    confirm of a journey at a time. A second one at the same moment (the app's retry under a new message_id) waits
    for the first, then sees what it did: the driver, token and payment an init made (not a second driver, payment
    and page for the same order), the order a confirm booked (an init overtaken by it is refused, where it had
    opened a new payment with no order and answered a new page after on_confirm). NO KEY UPDATE: the message rows
    that refer to the journey hold KEY SHARE locks on it, which FOR UPDATE would wait for (two would deadlock)."""
    if txn.pk is None:
        return txn
    return BecknTransaction.objects.select_for_update(no_key=True).get(pk=txn.pk)


def on_init(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    order = envelope.message.get("order")
    if not isinstance(order, dict):
        raise BecknRequestError(INVALID_REQUEST, "message.order", "order must be an object")
    txn = _journey_locked(txn)
    _not_after_confirm(txn)
    quote = _valid_quote(txn)
    _names_the_selection(order, txn)
    hit = _hit_for(txn.provider_id, txn.item_id, txn.window_start)
    driver, token, billing = _driver_and_token(order, txn, hit.evse.location.partner)
    quote = quote_hold(quote, driver=driver)
    BecknTransaction.objects.filter(pk=txn.pk).update(driver=driver, token=token, billing=billing)
    proposed = _reported(order)
    try:
        payment = payments.payment_open(
            quote=quote,
            driver=driver,
            bap_id=txn.bap_id,
            journey=_journey(txn),
            proposed_by_app=proposed.collected_by if proposed else "",
        )
    except GatewayError as exc:
        # The provider's own words stay in our log: the app hears whether trying again may help.
        why = (
            "the payment provider is not answering; please retry shortly"
            if exc.retryable
            else f"this payment can't be taken by our payment provider ({exc.code or 'refused'}); "
            "another payment method may be offered"
        )
        raise BecknRequestError(BUSINESS_ERROR, "message.order.payments", why) from exc
    agreement = payments.agreement_for(txn.bap_id)
    return {
        "order": {
            "provider": {"id": txn.provider_id},
            "items": [item_block(hit, quote, _not_answering(hit, "locations"))],
            "fulfillments": [fulfillment_block(hit.evse, window=_txn_window(txn))],
            "billing": billing,
            "quote": quote_block(quote),
            "payments": [payment_block(payment, amount=payment_amount(payment, quote=quote), agreement=agreement)],
            "cancellation_terms": cancellation_terms(quote.currency),
        }
    }


def _txn_window(txn: BecknTransaction) -> tuple[datetime, datetime] | None:
    if txn.window_start is None or txn.window_end is None:
        return None
    return txn.window_start, txn.window_end


def _journey(txn: BecknTransaction) -> str:
    """The journey's key on its payment: the app and its transaction id, hashed when too long to store whole."""
    journey = f"{txn.bap_id}|{txn.transaction_id}"
    return journey if len(journey) <= 300 else "sha256:" + hashlib.sha256(journey.encode()).hexdigest()


def _reported(order: dict[str, Any]) -> payments.Reported | None:
    """The app's first payment of the order (the one we offered), checked; None when it sends none."""
    proposed = parse_payments(order)
    return proposed[0] if proposed else None


def on_confirm(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    order = envelope.message.get("order")
    if not isinstance(order, dict):  # as init: not "select this item first" for a request that isn't one
        raise BecknRequestError(INVALID_REQUEST, "message.order", "order must be an object")
    # One confirm (or init) of a journey at a time: a second confirm at the same moment waits here for the first,
    # then finds its order and repeats it — not a second booking, nor "EVSE already booked" for the app's own hold.
    txn = _journey_locked(txn)
    if txn.booking_id is not None:
        booking = Booking.objects.get(pk=txn.booking_id)
        if booking.quote_id == txn.quote_id or booking.state not in ENDED_UNUSED:
            return {"order": order_block(booking, txn)}  # a confirm repeated under a new message_id
        # Else the order ended unused and another was selected since (an alternative): confirm that one.
    quote = _valid_quote(txn)
    if txn.token_id is None:
        raise BecknRequestError(INVALID_REQUEST, "message.order", "init the order first (billing and driver)")
    _names_the_selection(order, txn)
    hit = _hit_for(txn.provider_id, txn.item_id, txn.window_start)
    breaker = breakers.refusing(hit.evse.location.partner, "commands")
    if breaker is not None:  # the reservation would wait on a CPO that is not answering: say so now
        reason = breakers.describe(breaker) + "."
        raise _cpo_down_error(hit.evse, hit.connector.connector_id, "message.order.items[0].id", reason)
    reported = _reported(order)
    payment = (
        Payment.objects.filter(journey=_journey(txn), driver_id=txn.driver_id, booking__isnull=True)
        .exclude(status=Payment.Status.FAILED)
        .order_by("-pk")
        .first()
    )
    if payment is None:
        raise BecknRequestError(INVALID_REQUEST, "message.order.payments", "init the order first (its payment terms)")
    payment_reference = reported.transaction_id if reported is not None and reported.status == "PAID" else ""
    window = _confirmed_window(order, txn)
    try:
        booking = bookings.booking_confirm(
            evse=hit.evse,
            connector_id=hit.connector.connector_id,
            token=Token.objects.get(pk=txn.token_id),
            driver=txn.driver,
            quote_id=quote.pk,
            payment_reference=payment_reference,
            window=window,
            app_id=txn.bap_id,
            app_transaction_id=txn.transaction_id,
        )
    except bookings.WindowRefused as exc:
        raise BecknRequestError(INVALID_REQUEST, "message.order.fulfillments[0].stops[0].time", str(exc)) from exc
    except bookings.EvseUnavailable as exc:
        when = f"; expected to be available from {exc.available_from:%Y-%m-%dT%H:%M:%SZ}" if exc.available_from else ""
        raise BecknRequestError(
            FULFILLMENT_UNAVAILABLE,
            "message.order.items[0].id",
            f"{exc.reason}{when}",
            alternatives=alternatives(hit.evse, hit.connector.connector_id, window=window),
            window=window,
        ) from exc
    try:
        payments.payment_confirm(payment=payment, booking=booking, quote=quote, reported=reported)
    except payments.PaymentRefused as exc:
        raise BecknRequestError(PAYMENT_NOT_SUPPORTED, "message.order.payments", str(exc)) from exc
    quote_accept(quote)
    BecknTransaction.objects.filter(pk=txn.pk).update(booking=booking)
    txn.booking = booking
    return {"order": order_block(booking, txn)}


def _second(instant: datetime) -> datetime:
    return instant.replace(microsecond=0)


def _confirmed_window(order: dict[str, Any], txn: BecknTransaction) -> tuple[datetime, datetime] | None:
    """The window the order books: the one selected in the transaction, whose availability `select` checked and
    whose price the quote is. A confirm may repeat it (or leave it out); another window is refused (40000,
    select it first): booked, it would hold the charger at a time never checked, at the price of another.
    A window already open is held from now (window_check), at select as at confirm: those starts are the same."""
    selected = _txn_window(txn)
    asked = fulfillment_window(order.get("fulfillments"), "message.order.fulfillments")
    if asked is None:
        return selected
    now = timezone.now()
    # Compared to the second: on_select and on_init echo the window in whole seconds (window_time), and an app
    # repeating their fulfillments confirms what it was shown, though it selected with milliseconds.
    if (
        selected is None
        or _second(asked[1]) != _second(selected[1])
        or (_second(max(asked[0], now)) != _second(max(selected[0], now)))
    ):
        was = (
            f"{selected[0]:%Y-%m-%dT%H:%M:%SZ} to {selected[1]:%Y-%m-%dT%H:%M:%SZ}"
            if selected is not None
            else "none: charging now"
        )
        raise BecknRequestError(
            BUSINESS_ERROR,
            "message.order.fulfillments[0].stops[0].time",
            f"the time range {asked[0]:%Y-%m-%dT%H:%M:%SZ} to {asked[1]:%Y-%m-%dT%H:%M:%SZ} is not the one selected "
            f"in this transaction ({was}): select it first, for its availability and price",
        )
    return selected


def _booking_of(txn: BecknTransaction, identifier: str, path: str = "message.order_id") -> Booking:
    """The app's order (30010 for another app's or an unknown one, at `path`: where the request named it, an
    update in message.order.id); every order it confirmed, also one a later order of the same transaction
    followed (Booking.app_id, not the transaction's current booking)."""
    booking = (
        Booking.objects.filter(order_id=identifier, app_id=txn.bap_id)
        .select_related("evse__location__partner", "quote")
        .first()
    )
    if booking is None:
        raise BecknRequestError(ORDER_NOT_FOUND, path, f"order {identifier!r} not found")
    return booking


# An app reports a payment for an order that will be (or was) charged; once it ended without a charge there is
# nothing to pay for (its hold is released), and a start is refused before any payment check. A start is also
# taken again while the order is STARTING on starts the CPO refused only (bookings.start_refused).
PAYABLE = (*Booking.ACTIVE_STATES, Booking.State.COMPLETED, Booking.State.SETTLED)
STARTABLE = (Booking.State.CONFIRMED,)


def _updatable(booking: Booking, what: str) -> None:
    """50002 for an update the order's state rules out, before anything of it is applied."""
    if what == "payment" and booking.state not in PAYABLE:
        raise BecknRequestError(
            UPDATE_NOT_POSSIBLE,
            "message.order.payments",
            f"order {booking.order_id} is {booking.get_state_display().lower()}: there is nothing to pay",
        )
    if what == "start" and booking.state not in STARTABLE and not bookings.start_refused(booking):
        raise BecknRequestError(
            UPDATE_NOT_POSSIBLE, "message.order.fulfillments[0].state", f"booking {booking.order_id} is {booking.state}"
        )


def on_update(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any] | SendFirst:
    identifier, targets = update_request(envelope.message)
    booking = _booking_of(txn, identifier, "message.order.id")
    for what in targets:
        _updatable(booking, what)
    for what in targets:
        command = _update(booking, what, envelope, txn)
        if command is not None:  # the last target (update_request): answered once the CPO has it
            return SendFirst(command)
    booking.refresh_from_db()
    return {"order": order_block(booking, txn)}


def _update(booking: Booking, what: str, envelope: Envelope, txn: BecknTransaction) -> Command | None:
    """Apply one update target: a payment the app reports, or a start or stop of the charge. Returns the start or
    stop command made now, to be sent after the request is recorded (handle)."""
    if what == "payment":
        reported = _reported(envelope.message["order"])
        if reported is None:
            raise BecknRequestError(INVALID_REQUEST, "message.order.payments", "payments[0] is required")
        try:
            payments.payment_reported(booking=booking, reported=reported)
        except payments.PaymentRefused as exc:
            raise BecknRequestError(UPDATE_NOT_POSSIBLE, "message.order.payments", str(exc)) from exc
        booking.refresh_from_db()
        return None
    if what == "start":
        try:
            payments.ready_to_charge(booking)
        except payments.PaymentRefused as exc:
            raise BecknRequestError(PAYMENT_NOT_SUPPORTED, "message.order.payments", str(exc)) from exc
    try:
        command = bookings.booking_start(booking) if what == "start" else bookings.booking_stop(booking)
    except bookings.BookingStateError as exc:
        raise BecknRequestError(UPDATE_NOT_POSSIBLE, "message.order.fulfillments[0].state", str(exc)) from exc
    if command is None:  # sequenced: behind the reservation being made, or the session not yet reported
        booking.refresh_from_db()
        return None
    # Sent once this request is recorded, before it is answered (handle): the BAP's answer carries the CPO's
    # CommandResponse. The task the booking service queued sends it too if this worker dies first; whichever
    # comes second finds it sent and does nothing.
    return command


# Told for a start that the charge point did not confirm in time: it may still start (bookings._start_standing).
START_TIMEOUT = "TIMEOUT: the charger did not confirm the start in time; if charging begins we will tell you"


def start_timed_out(command: Command) -> bool:
    """A start with no answer in time (TIMEOUT, or a CommandResult TIMEOUT recorded FAILED): no refusal."""
    return command.status == Command.Status.TIMEOUT or command.result_type == "TIMEOUT"


def _command_outcome(command: Command, booking: Booking) -> None:
    """The BECKN-005 error for a start or stop the CPO refused or did not take (its circuit breaker open, for a
    start with other operators' chargers nearby); nothing for one on its way or carried out. The booking stays
    as the command left it: STARTING on a refused start (the app may start again, a cancel ends it at once:
    bookings.start_refused), STOPPING on a stop the booking checks send again."""
    if command.type == Command.Type.START_SESSION and start_timed_out(command):
        return  # no refusal: the answer carries the order, and START_TIMEOUT
    if command.type == Command.Type.START_SESSION and commands.charging_began(command):
        return  # a late FAILED result of a start whose session the CPO reported charging: the order says it
    # A stop is told whether refused or not answered (our sweep's TIMEOUT, the CPO's CommandResult TIMEOUT): the
    # charge goes on either way (start_timed_out had read a stop's timeout as a start's, and the answer said nothing).
    if command.status not in (Command.Status.FAILED, Command.Status.TIMEOUT):
        return
    path = "message.order.fulfillments[0].state"
    breaker = breakers.refusing(booking.evse.location.partner, "commands")
    if breaker is not None and command.type == Command.Type.START_SESSION:
        raise _cpo_down_error(booking.evse, booking.connector_id, path, breakers.describe(breaker) + ".")
    if breaker is not None:
        answer = breakers.describe(breaker)
    else:
        answer = charger_answer(command) if command.type == Command.Type.START_SESSION else stop_answer(command)
    raise BecknRequestError(FULFILMENT_AGENT_UNAVAILABLE, path, answer)


def on_status(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    booking = _booking_of(txn, order_id(envelope.message, "status"), order_id_path(envelope.message))
    return {"order": order_block(booking, txn)}


def on_track(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    booking = _booking_of(txn, order_id(envelope.message, "track"), order_id_path(envelope.message))
    return {
        "tracking": {
            "id": f"TRACK-{booking.order_id}",
            "url": f"{settings.PUBLIC_BASE_URL}/beckn/track/{booking.order_id}",
            "status": "active"
            if booking.state in (Booking.State.STARTING, Booking.State.CHARGING, Booking.State.STOPPING)
            else "inactive",
        }
    }


CANCELLATION_REASON_LENGTH = 200  # Booking.cancellation_reason keeps this much


def _text(value: Any, path: str) -> str:
    """An optional string field of the message (core 1.1.0 `type: string`): absent or empty is "", any other JSON
    type a 30000 at its path."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ""  # absent, as blank (a reason of spaces had taken the default's place)
    if not isinstance(value, str):
        raise BecknRequestError(INVALID_REQUEST, path, "must be a string")
    return value


def on_cancel(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    booking = _booking_of(txn, order_id(envelope.message, "cancel"), order_id_path(envelope.message))
    # Option.id, a string (core 1.1.0), of the column's length: an object or a number had been stored and echoed as
    # Python's text of it ("{'x': 1}"), and a longer one echoed whole but stored cut.
    reason = plain_id(
        _text(envelope.message.get("cancellation_reason_id"), "message.cancellation_reason_id"),
        "message.cancellation_reason_id",
        CANCELLATION_REASON_LENGTH,
    )
    try:
        bookings.booking_cancel(booking, reason=reason or "cancelled by the driver")
    except bookings.BookingStateError as exc:
        raise BecknRequestError(CANCELLATION_NOT_POSSIBLE, order_id_path(envelope.message), str(exc)) from exc
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
    if len(ratings) > MAX_RATINGS:
        # One request of thousands had held a worker for seconds (three lookups a rating) and stuffed a score.
        raise BecknRequestError(INVALID_REQUEST, "message.ratings", f"at most {MAX_RATINGS} ratings a request")
    stored: dict[tuple[str, str], BecknRating] = {}
    of_orders: dict[tuple[str, str], bool] = {}
    for i, rating in enumerate(ratings):
        if not isinstance(rating, dict):
            raise BecknRequestError(INVALID_REQUEST, f"message.ratings[{i}]", "a rating must be an object")
        category = plain_id(rating.get("rating_category") or "Order", f"message.ratings[{i}].rating_category", 20)
        ref_id = plain_id(rating.get("id") or "", f"message.ratings[{i}].id")
        value = _rating_value(rating.get("value"))
        if value is None:
            raise BecknRequestError(
                INVALID_RATING, f"message.ratings[{i}].value", "rating value must be a number from 0 to 5"
            )
        category, of_an_order = _rated_exists(category, ref_id, txn, i)
        # One rating of an entity by an app (core 1.1.0 Rating: the rating of it): a later one replaces it, also
        # within a request (one order rated five times had counted five times). An order is one driver's: its
        # rating is the app's one rating of it.
        stored[(category, ref_id)] = BecknRating(
            transaction=txn if txn.pk else None,
            driver_id=txn.driver_id,
            bap_id=txn.bap_id,
            category=category,
            ref_id=ref_id,
            value=value,
        )
        of_orders[(category, ref_id)] = of_an_order
    _ratings_locked(txn.bap_id, stored)
    for category, ref_id in stored:
        earlier = BecknRating.objects.filter(bap_id=txn.bap_id, category__iexact=category, ref_id=ref_id)
        if not of_orders[(category, ref_id)]:
            # A charger, site or operator every driver of the app may rate, and the support of a journey the app
            # may have gone on with for another driver: only this driver's earlier rating is replaced, by the
            # driver it was sent for (keyed by the app alone, one driver's rating had deleted another's; keyed by
            # the journey's driver, by the driver the app went on with the journey for).
            earlier = (
                earlier.filter(driver_id=txn.driver_id)
                if txn.driver_id
                else earlier.filter(transaction=txn)
                if txn.pk
                else earlier.none()
            )
        earlier.delete()
    BecknRating.objects.bulk_create(stored.values())
    return {
        "feedback_form": {
            "form": {"url": f"{settings.PUBLIC_BASE_URL}/beckn/feedback", "mime_type": "text/html"},
            "required": False,
        }
    }


def _ratings_locked(bap_id: str, rated: Iterable[tuple[str, str]]) -> None:
    """Hold the app's ratings of these entities until the request's transaction ends (emsp/key_locks.py). Two
    ratings of one entity at the same moment (the app's retry under a new message_id) had each deleted the earlier
    ones, found none, and both been kept: the second now waits for the first, then replaces it."""
    keys_locked(*(f"rating:{bap_id}|{category}|{ref_id}" for category, ref_id in rated))


# A rating's value as core 1.1.0 sends it (Rating.value, a string such as "4" or "4.5"), or a JSON number: plain
# ASCII digits, no sign, exponent, spaces or underscores (which Decimal() would read, and other scripts' digits).
RATING_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
RATING_RANGE = (Decimal("0"), Decimal("5"))
RATING_LENGTH = 20  # BecknRating.value


def _rating_value(raw: Any) -> str | None:
    """The rating as we store it, normalised ("4.50" → "4.5", 0 → "0"), or None when it is no rating from 0 to 5."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        if not (math.isfinite(raw) and RATING_RANGE[0] <= raw <= RATING_RANGE[1]):
            return None
        raw = format(abs(Decimal(repr(raw))), "f")  # 1e-07 → 0.0000001; -0.0 (in range) → 0.0
    if not isinstance(raw, str) or len(raw) > RATING_LENGTH or RATING_TEXT.fullmatch(raw) is None:
        return None
    number = Decimal(raw)
    if not RATING_RANGE[0] <= number <= RATING_RANGE[1]:
        return None
    return format(number.normalize(), "f")


# Rating.rating_category of core 1.1.0 (schema/Rating.yaml), as the enum spells it; Agent is not rated here: no
# agent serves an order.
RATED = {"order": "Order", "item": "Item", "fulfillment": "Fulfillment", "provider": "Provider", "support": "Support"}
MAX_RATINGS = 20  # a request's: an app rates an order, its charger, site and operator, its support


def _rated_exists(category: str, ref_id: str, txn: BecknTransaction, i: int) -> tuple[str, bool]:
    """The category is one we rate (50003 otherwise) and the entity it names is ours (30014 otherwise): the category
    as the enum spells it (stored so, whatever case the app sent), and whether the rating names an order (an Order
    rating, or a Support rating of an order)."""
    kind = category.lower()
    if kind not in RATED:
        raise BecknRequestError(
            UNSUPPORTED_RATING_CATEGORY,
            f"message.ratings[{i}].rating_category",
            f"rating category {category!r} is not supported: one of Order, Item, Fulfillment, Provider, Support",
        )
    of_an_order = False
    if kind == "order":
        found = of_an_order = _orders_rated_in(txn).filter(order_id=ref_id).exists()
    elif kind == "item":
        # A charger the driver used may be hidden since (its operator suspended): still ours to rate.
        found = bool(ref_id) and find_item(None, ref_id, listed=False) is not None
    elif kind == "provider":
        found = bool(ref_id) and provider_known(ref_id)
    elif kind == "fulfillment":
        location_id = ref_id.removeprefix("FUL-")  # our fulfillments' ids (rendering.fulfillment_block)
        found = ref_id.startswith("FUL-") and catalogue.location_exists(location_id)
    else:  # support: the order or transaction the app asked support about, the app's own (any id had been taken,
        # another app's order too, and shown in that order's driver's data export), of the journey's driver
        of_an_order = bool(ref_id) and _orders_rated_in(txn).filter(order_id=ref_id).exists()
        found = of_an_order or (bool(ref_id) and _journeys_rated_in(txn).filter(transaction_id=ref_id).exists())
    if not found:
        whose = " of this journey's driver" if kind in ("order", "support") and txn.driver_id else ""
        raise BecknRequestError(
            RATING_ENTITY_NOT_FOUND, f"message.ratings[{i}].id", f"{kind} {ref_id!r} not found{whose}"
        )
    return RATED[kind], of_an_order


# An order is one driver's (Booking.driver), though an app may go on with a journey after its order ended and
# init it with another driver's billing (on_init then makes that driver the journey's). A rating of an order, or
# of the support of an order or journey, sent in a journey of a driver names something of that driver: in the
# second driver's journey, the app had rated the first driver's order, and replaced that driver's own rating of it.
# From a journey without a driver, any of the app's.


def _orders_rated_in(txn: BecknTransaction) -> QuerySet[Booking]:
    orders = Booking.objects.filter(app_id=txn.bap_id)
    if txn.driver_id is None:
        return orders
    # A booking without a driver (its driver deleted) is its journey's driver's, as beckn/privacy.py counts it.
    journey_of_the_driver = BecknTransaction.objects.filter(
        bap_id=OuterRef("app_id"), transaction_id=OuterRef("app_transaction_id"), driver_id=txn.driver_id
    )
    return orders.filter(Q(driver_id=txn.driver_id) | Q(driver__isnull=True) & Exists(journey_of_the_driver))


def _journeys_rated_in(txn: BecknTransaction) -> QuerySet[BecknTransaction]:
    journeys = BecknTransaction.objects.filter(bap_id=txn.bap_id)
    if txn.driver_id is None:
        return journeys
    # The driver's journey, or one the app went on with for another driver after an order of this one's.
    an_order_of_the_driver = Booking.objects.filter(
        app_id=OuterRef("bap_id"), app_transaction_id=OuterRef("transaction_id"), driver_id=txn.driver_id
    )
    return journeys.filter(
        Q(driver_id=txn.driver_id) | Q(booking__driver_id=txn.driver_id) | Exists(an_order_of_the_driver)
    )


def on_support(envelope: Envelope, txn: BecknTransaction) -> dict[str, Any]:
    support = envelope.message.get("support") if isinstance(envelope.message.get("support"), dict) else {}
    key = "ref_id" if support.get("ref_id") else "order_id"
    ref_id = plain_id(_text(support.get(key), f"message.support.{key}"), f"message.support.{key}")
    booking = (
        Booking.objects.filter(order_id=ref_id, app_id=txn.bap_id).select_related("evse__location__partner").first()
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
