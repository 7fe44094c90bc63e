"""Beckn's part of personal data (emsp/privacy.py): a driver's journeys (billing and contact details are kept
encrypted on the journey only) and ratings. Stored request bodies have those details redacted; on erasure the
journeys' details and stored messages go, and so do the requests and callbacks about the driver's orders sent
in the app's other transactions; request records go with their retention."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from functools import reduce
from operator import or_
from typing import Any

import orjson
from django.db.models import Q, QuerySet

from beckn.models import BecknCallback, BecknMessage, BecknRating, BecknTransaction, DriverFeedback
from emsp import privacy
from emsp.models import Booking, Delivery, Driver

# Beckn objects that carry who the driver is (core 1.1.0 Billing, Customer, Person, Contact).
PERSONAL = frozenset({"billing", "customer", "person", "contact"})
# Single fields of a request that do (core 1.1.0 Support.callback_phone, .phone, .email; Payment.params'
# virtual_payment_address, bank_account_number and their source_ forms: the payer's UPI id and account),
# matched in key names as billing/services/payments.py::payer_details_removed does in webhook events. A bank
# code (IFSC) names a bank, not the payer: kept.
PERSONAL_FIELDS = re.compile(r"phone|e[_-]?mail|virtual_payment_address|bank_account", re.I)
REDACTED = "[redacted]"
ERASED = "[erased]"


def redacted(body: str) -> str:
    """A request body as we keep it: the personal blocks and fields replaced (the journey keeps the billing
    and contact details, encrypted)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    return orjson.dumps(_redact(data)).decode()


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if v and _personal(k) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _personal(key: Any) -> bool:
    return isinstance(key, str) and (key in PERSONAL or PERSONAL_FIELDS.search(key) is not None)


def _without_personal_blocks(value: Any) -> Any:
    """A callback's body less the blocks that name the driver. Our callbacks echo the driver in `billing` only
    (on_init; an order's, rendering.order_block); their `phone` and `email` are our support desk's (on_support),
    which still go. The blocks are left out, not replaced by text: each is an object in core 1.1.0's schemas,
    and every one of them optional."""
    if isinstance(value, dict):
        return {k: _without_personal_blocks(v) for k, v in value.items() if k not in PERSONAL}
    if isinstance(value, list):
        return [_without_personal_blocks(v) for v in value]
    return value


def _orders_of(journey: BecknTransaction) -> list[str]:
    """Every order confirmed in a journey, the first first (an order that ended unused may be followed by
    another: Booking.app_transaction_id), and the journey's current one."""
    orders = list(
        Booking.objects.filter(app_id=journey.bap_id, app_transaction_id=journey.transaction_id)
        .order_by("created_at", "pk")
        .values_list("order_id", flat=True)
    )
    if journey.booking_id and journey.booking.order_id not in orders:
        orders.append(journey.booking.order_id)
    return orders


def _order_ids(driver: Driver, journeys: QuerySet[BecknTransaction]) -> list[str]:
    """The driver's orders: those of their journeys, and any other booking of theirs."""
    orders = [order_id for journey in journeys.select_related("booking") for order_id in _orders_of(journey)]
    orders += Booking.objects.filter(driver=driver).exclude(order_id__in=orders).values_list("order_id", flat=True)
    return list(dict.fromkeys(orders))


# An app may ask about an order (status, track, cancel, update, rating, support) from any of its transactions
# (handlers._booking_of finds the order by the app and its id), and the on_status, on_cancel or on_update that
# answers echoes the billing the order was confirmed with (rendering._billing_of). Those requests and callbacks
# are found by the order id they carry: ours are "ORD-<date>-<10 hex digits>" (emsp/services/bookings.py), all
# of one length, so one never lies inside another, and the quotes make it a whole JSON string.
CHUNK = 100  # order ids per query


def _chunks(order_ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(order_ids), CHUNK):
        yield order_ids[start : start + CHUNK]


def _naming(order_ids: list[str]) -> Q:
    return reduce(or_, (Q(body__contains=f'"{order_id}"') for order_id in order_ids))


def _orders_since(order_ids: list[str]) -> tuple[list[str], datetime | None]:
    """The apps the orders were made by, and when the first was: nothing about them is older."""
    rows = Booking.objects.filter(order_id__in=order_ids).values_list("app_id", "created_at")
    apps = sorted({app for app, _ in rows if app})
    return apps, min((at for _, at in rows), default=None)


def _messages_about(order_ids: list[str]) -> Q:
    """Requests about these orders, from any transaction of the apps that made them (a search never names
    an order)."""
    found = Q(pk__in=[])
    for chunk in _chunks(order_ids):
        apps, since = _orders_since(chunk)
        if since is not None:
            found |= Q(bap_id__in=apps, received_at__gte=since) & ~Q(action="search") & _naming(chunk)
    return found


def _callbacks_about(order_ids: list[str]) -> Q:
    found = Q(pk__in=[])
    for chunk in _chunks(order_ids):
        _, since = _orders_since(chunk)
        if since is not None:
            found |= Q(created_at__gte=since) & ~Q(action="on_search") & _naming(chunk)
    return found


def _export(driver: Driver) -> dict[str, Any]:
    journeys = BecknTransaction.objects.filter(driver=driver).order_by("created_at")
    out = []
    for t in journeys.select_related("booking"):
        orders = _orders_of(t)
        out.append(
            {
                "app": t.bap_id,
                "transaction_id": t.transaction_id,
                "billing": t.billing,
                "customer": t.customer,
                "order_id": orders[-1] if orders else None,  # the journey's latest order
                "order_ids": orders,
                "created_at": privacy.when(t.created_at),
            }
        )
    order_ids = _order_ids(driver, journeys)
    # A rating of the driver's order (or of the support asked about it) may come from another transaction of
    # the app: found by the order it names.
    # Only by the apps that hold the driver's orders: another app's rating naming one (which support ratings had
    # been let do) is not the driver's.
    apps = set(Booking.objects.filter(order_id__in=order_ids).values_list("app_id", flat=True))
    journey_apps = {t.bap_id for t in journeys}
    ratings = BecknRating.objects.filter(
        Q(transaction__driver=driver)
        | Q(ref_id__in=order_ids, bap_id__in=apps) & (Q(category__iexact="order") | Q(category__iexact="support"))
        # the support of one of the driver's journeys, rated by its app from another transaction
        | Q(category__iexact="support", ref_id__in=[t.transaction_id for t in journeys], bap_id__in=journey_apps)
    )
    return {
        "journeys": out,
        "feedback": [
            {"order_id": f.order_id, "rating": f.rating, "comment": f.comment, "created_at": privacy.when(f.created_at)}
            for f in DriverFeedback.objects.filter(order_id__in=order_ids).order_by("created_at")
        ],
        "ratings": [
            {"category": r.category, "ref_id": r.ref_id, "value": r.value, "created_at": privacy.when(r.created_at)}
            for r in ratings.order_by("created_at", "pk")
        ],
    }


def _erase(driver: Driver) -> dict[str, int]:
    journeys = BecknTransaction.objects.filter(driver=driver)
    order_ids = _order_ids(driver, journeys)
    messages = BecknMessage.objects.filter(Q(transaction__in=journeys) | _messages_about(order_ids)).update(body=ERASED)
    # Locked first, so that none settles between the two updates below, and the outbox claims one still to be
    # sent (a conditional UPDATE) only once its body here is written.
    callbacks = BecknCallback.objects.filter(Q(transaction__in=journeys) | _callbacks_about(order_ids))
    done = (Delivery.Status.DELIVERED, Delivery.Status.FAILED)
    locked = list(callbacks.select_for_update().values_list("pk", "status"))
    # Callbacks already settled no longer need their bodies.
    settled = callbacks.filter(status__in=done).update(body="{}")
    # One still to be sent goes, without the blocks that name the driver: its signature is made when it is sent,
    # over the body stored then (callbacks._post), so the changed body goes correctly signed.
    to_send = BecknCallback.objects.filter(pk__in=[pk for pk, status in locked if status not in done]).only("body")
    unsettled = 0
    for callback in to_send:
        try:
            document = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            continue
        body = orjson.dumps(_without_personal_blocks(document)).decode()
        if body != callback.body:
            BecknCallback.objects.filter(pk=callback.pk).update(body=body)
            unsettled += 1
    details = 0
    for journey in journeys:
        journey.billing, journey.customer = {}, {}
        journey.save(update_fields=["billing", "customer"])
        details += 1
    # What the driver wrote on the feedback form may name them: the comment goes, the score stays. Ratings
    # (BecknRating) hold a category, the order's id and a score, nothing that names the driver: they stay.
    feedback = DriverFeedback.objects.filter(order_id__in=order_ids).exclude(comment="").update(comment="")
    return {
        "journeys": details,
        "messages": messages,
        "callbacks": settled,
        "callbacks_to_send": unsettled,
        "feedback_comments": feedback,
    }


# Callbacks are deliveries: they go with the domain's settled deliveries (emsp/privacy.py).
EXPIRING = (
    privacy.Expiry(
        "beckn_messages", "beckn_messages", lambda since: BecknMessage.objects.filter(received_at__lt=since)
    ),
    # Free text a driver wrote: kept as long as the requests it answers.
    privacy.Expiry("beckn_messages", "feedback", lambda since: DriverFeedback.objects.filter(created_at__lt=since)),
)


def register() -> None:
    privacy.register("beckn", export=_export, erase=_erase, expiring=EXPIRING)
