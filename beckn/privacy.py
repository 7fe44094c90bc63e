"""Beckn's part of personal data (emsp/privacy.py): a driver's journeys (billing and contact details are kept
encrypted on the journey only) and ratings. Stored request bodies have those details redacted; on erasure the
journeys' details and stored messages go, and so do the requests and callbacks about the driver's orders sent
in the app's other transactions; request records go with their retention. Of a journey an app went on with for
another driver, only the driver's part is theirs (_Share)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import or_
from typing import Any

import orjson
from django.db.models import Exists, OuterRef, Q, QuerySet

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


@dataclass(frozen=True)
class _Share:
    """A driver's part of one journey. An app may go on with a journey after its order ended (cancelled, say)
    and init it again with another driver's billing (handlers.on_init makes that driver the journey's): each
    order is its driver's (Booking.driver), and so is what the journey received and sent up to it; what came
    after the last order is the journey's driver's (theirs is the billing it holds now)."""

    journey: BecknTransaction
    orders: list[str]  # the driver's orders confirmed in the journey, the first first
    spans: list[tuple[datetime | None, datetime | None]]  # (after, until]: the stretches of it that are theirs

    @property
    def whole(self) -> bool:
        return self.spans == [(None, None)]


def _share_of(journey: BecknTransaction, driver: Driver) -> _Share:
    rows = list(
        Booking.objects.filter(app_id=journey.bap_id, app_transaction_id=journey.transaction_id)
        .order_by("created_at", "pk")
        .values_list("order_id", "driver_id", "created_at")
    )
    booking = journey.booking if journey.booking_id else None
    if booking is not None and booking.order_id not in [order_id for order_id, _, _ in rows]:
        rows.append((booking.order_id, booking.driver_id, booking.created_at))  # from before Booking.app_id
        rows.sort(key=lambda row: row[2])
    orders: list[str] = []
    spans: list[tuple[datetime | None, datetime | None]] = []
    # (after, until, whose): up to each order, its driver's; after the last, the journey's driver's.
    stretches: list[tuple[datetime | None, datetime | None, int | None]] = []
    after: datetime | None = None
    for order_id, driver_id, at in rows:
        # A booking always records its driver (the token's, which cannot be deleted); one that did not would be
        # the journey's.
        whose = driver_id if driver_id is not None else journey.driver_id
        if whose == driver.pk:
            orders.append(order_id)
        stretches.append((after, at, whose))
        after = at
    stretches.append((after, None, journey.driver_id))
    for start, until, whose in stretches:
        if whose != driver.pk:
            continue
        if spans and spans[-1][1] == start:  # one stretch of theirs after another: one span
            spans[-1] = (spans[-1][0], until)
        else:
            spans.append((start, until))
    return _Share(journey, orders, spans)


def _shares(driver: Driver) -> list[_Share]:
    """The journeys the driver went on, each with the part of it that is theirs: those they are the driver of,
    and those another driver went on with after an order of theirs."""
    bookings = Booking.objects.filter(driver=driver).exclude(app_transaction_id="")
    confirmed_in = set(bookings.values_list("app_id", "app_transaction_id"))
    journeys = (
        BecknTransaction.objects.filter(
            Q(driver=driver) | Q(booking__driver=driver) | Q(transaction_id__in=bookings.values("app_transaction_id"))
        )
        .select_related("booking")
        .order_by("created_at", "pk")
    )
    return [
        _share_of(journey, driver)
        for journey in journeys
        if journey.driver_id == driver.pk
        or (journey.booking_id and journey.booking.driver_id == driver.pk)
        or (journey.bap_id, journey.transaction_id) in confirmed_in
    ]


def _order_ids(driver: Driver, shares: list[_Share]) -> list[str]:
    """The driver's orders: those of their journeys, and any other booking of theirs."""
    orders = [order_id for share in shares for order_id in share.orders]
    orders += Booking.objects.filter(driver=driver).exclude(order_id__in=orders).values_list("order_id", flat=True)
    return list(dict.fromkeys(orders))


def _during(spans: list[tuple[datetime | None, datetime | None]], at: str) -> Q:
    found = Q(pk__in=[])
    for after, until in spans:
        span = Q(pk__isnull=False)
        if after is not None:
            span &= Q(**{f"{at}__gt": after})
        if until is not None:
            span &= Q(**{f"{at}__lte": until})
        found |= span
    return found


def _in_journeys(shares: list[_Share], at: str) -> Q:
    """Rows (requests, callbacks, ratings) of the driver's journeys, of a shared one only those of the
    driver's stretches of it, by their time field `at`."""
    found = Q(transaction__in=[share.journey.pk for share in shares if share.whole])
    for share in shares:
        if not share.whole:
            found |= Q(transaction=share.journey.pk) & _during(share.spans, at)
    return found


# An order id as a request or callback names it: a whole JSON string (ours: emsp/services/bookings.py).
ORDER_ID_NAMED = re.compile(r'"(ORD-[^"\\]{1,36})"')


def _about_others(rows: QuerySet[Any], order_ids: list[str]) -> Q:
    """Those of `rows` that name another driver's order and none of this driver's: that driver's (their
    order's callbacks echo their billing), though asked about from one of this driver's journeys."""
    mine = set(order_ids)
    named = {
        pk: set(ORDER_ID_NAMED.findall(body))
        for pk, body in rows.filter(body__contains='"ORD-').values_list("pk", "body").iterator()
    }
    foreign = sorted(set().union(*named.values()) - mine)
    others: set[str] = set()
    for chunk in _chunks(foreign):
        others.update(Booking.objects.filter(order_id__in=chunk).values_list("order_id", flat=True))
    return Q(pk__in=[pk for pk, ids in named.items() if ids & others and not ids & mine])


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
    shares = _shares(driver)
    out = []
    for share in shares:
        t = share.journey
        # A journey holds the billing of its last init: another driver's, once another went on with it.
        own = t.driver_id == driver.pk
        out.append(
            {
                "app": t.bap_id,
                "transaction_id": t.transaction_id,
                "billing": t.billing if own else {},
                "customer": t.customer if own else {},
                "order_id": share.orders[-1] if share.orders else None,  # the driver's latest order in the journey
                "order_ids": share.orders,
                "created_at": privacy.when(t.created_at),
            }
        )
    order_ids = _order_ids(driver, shares)
    # A rating of the driver's order (or of the support asked about it) may come from another transaction of
    # the app: found by the order it names.
    # Only by the apps that hold the driver's orders: another app's rating naming one (which support ratings had
    # been let do) is not the driver's.
    apps = set(Booking.objects.filter(order_id__in=order_ids).values_list("app_id", flat=True))
    whole = [share.journey for share in shares if share.whole]
    # The support of one of the driver's journeys, rated by its app from another transaction; of a shared journey,
    # when it was the driver's.
    support_of_journeys = Q(
        category__iexact="support",
        ref_id__in=[t.transaction_id for t in whole],
        bap_id__in={t.bap_id for t in whole},
    )
    for share in shares:
        if not share.whole:
            support_of_journeys |= Q(
                category__iexact="support", ref_id=share.journey.transaction_id, bap_id=share.journey.bap_id
            ) & _during(share.spans, "created_at")
    ratings = BecknRating.objects.filter(
        _in_journeys(shares, "created_at")
        | Q(ref_id__in=order_ids, bap_id__in=apps) & (Q(category__iexact="order") | Q(category__iexact="support"))
        | support_of_journeys
    ).exclude(
        # A rating of another driver's order (or of its support) is theirs, whichever journey the app sent it in.
        Q(category__iexact="order") | Q(category__iexact="support"),
        Exists(Booking.objects.filter(order_id=OuterRef("ref_id"))),
        ~Q(ref_id__in=order_ids),
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
    shares = _shares(driver)
    order_ids = _order_ids(driver, shares)
    # The driver's journeys' requests (of a journey another driver went on with, those of the driver's stretches of
    # it), less those about another driver's order; and those about the driver's orders from any transaction.
    requests = BecknMessage.objects.filter(_in_journeys(shares, "received_at"))
    messages = BecknMessage.objects.filter(
        (_in_journeys(shares, "received_at") & ~_about_others(requests, order_ids)) | _messages_about(order_ids)
    ).update(body=ERASED)
    # Locked first, so that none settles between the two updates below, and the outbox claims one still to be
    # sent (a conditional UPDATE) only once its body here is written.
    answers = BecknCallback.objects.filter(_in_journeys(shares, "created_at"))
    callbacks = BecknCallback.objects.filter(
        (_in_journeys(shares, "created_at") & ~_about_others(answers, order_ids)) | _callbacks_about(order_ids)
    )
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
    # The journey's billing and contact details are those of its last init: of the journeys the driver is the
    # driver of, not of those another driver went on with.
    details = 0
    for share in shares:
        journey = share.journey
        if journey.driver_id == driver.pk:
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
