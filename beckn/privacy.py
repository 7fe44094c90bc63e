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
from typing import Any, NamedTuple

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


class _Cut(NamedTuple):
    """Where a journey changes hands: just before `at` (an init: the request and what answers it are the new
    driver's) or just after it (`after`: a booking, which is its own driver's)."""

    at: datetime
    after: bool


_Span = tuple[_Cut | None, _Cut | None]  # from, until: a stretch of a journey (None: its start, its end)


@dataclass(frozen=True)
class _Share:
    """A driver's part of one journey. An app may go on with a journey after its order ended (cancelled, say)
    and init it again with another driver's billing: handlers.on_init makes that driver the journey's, and what
    the journey receives and sends from that init on is theirs, until an init for another driver. Each order is
    its driver's (Booking.driver): the init before it was theirs (on_confirm books for the journey's driver)."""

    journey: BecknTransaction
    orders: list[str]  # the driver's orders confirmed in the journey, the first first
    spans: list[_Span]  # the stretches of it that are theirs

    @property
    def whole(self) -> bool:
        return self.spans == [(None, None)]


class _Accounts:
    """Whose billing an init carried: the app's account handlers.on_init finds for it
    (emsp/services/drivers.py::driver_for_contact: by email ignoring case, else by phone, among the app's
    accounts not erased), looked up once per billing."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str, str], int | None] = {}

    def of(self, app_id: str, billing: dict[str, Any]) -> int | None:
        email, phone = billing.get("email"), billing.get("phone")
        email = email.strip().lower() if isinstance(email, str) else ""
        phone = phone.strip() if isinstance(phone, str) else ""
        key = (app_id, email, phone)
        if key not in self._found:
            accounts = Driver.objects.filter(app_id=app_id, erased_at__isnull=True).order_by("pk")
            found = accounts.filter(email__iexact=email).values_list("pk", flat=True).first() if email else None
            if found is None and phone:
                found = accounts.filter(phone=phone).values_list("pk", flat=True).first()
            self._found[key] = found
        return self._found[key]


def _billing_answered(body: str) -> dict[str, Any] | None:
    """The billing an on_init echoes (handlers.on_init: the init's, as kept), or None for an error answer (the
    init's savepoint was rolled back: the journey did not change hands) or one whose body is erased."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or document.get("error"):
        return None
    message = document.get("message")
    order = message.get("order") if isinstance(message, dict) else None
    if not isinstance(order, dict):
        return None
    billing = order.get("billing")
    return billing if isinstance(billing, dict) else {}


def _inits_of(journey: BecknTransaction, accounts: _Accounts) -> list[tuple[datetime, int | None]]:
    """The journey's inits that were answered with an order (each set the journey's driver), from when their
    request came, and whose billing each carried (None: no account of the app has it now, or none was echoed).
    The init requests are stored redacted (`redacted`): their on_init answers carry the billing."""
    rows = (
        BecknCallback.objects.filter(transaction=journey, action="on_init")
        .order_by("created_at", "pk")
        .values_list("created_at", "request__received_at", "body")
    )
    inits = []
    for created_at, received_at, body in rows.iterator():
        billing = _billing_answered(body)
        if billing is not None:
            inits.append((received_at or created_at, accounts.of(journey.bap_id, billing)))
    inits.sort(key=lambda row: row[0])
    return inits


def _share_of(journey: BecknTransaction, driver: Driver, accounts: _Accounts) -> _Share:
    rows = list(
        Booking.objects.filter(app_id=journey.bap_id, app_transaction_id=journey.transaction_id)
        .order_by("created_at", "pk")
        .values_list("order_id", "driver_id", "created_at")
    )
    booking = journey.booking if journey.booking_id else None
    if booking is not None and booking.order_id not in [order_id for order_id, _, _ in rows]:
        rows.append((booking.order_id, booking.driver_id, booking.created_at))  # from before Booking.app_id
        rows.sort(key=lambda row: row[2])
    # A booking always records its driver (the token's, which cannot be deleted); one that did not would be the
    # journey's.
    orders = [order_id for order_id, driver_id, _ in rows if (driver_id or journey.driver_id) == driver.pk]
    # Each booking ends a part of the journey, and so does the journey's end; each part is handed on at its inits.
    # The last init of a part was its booking's driver's (after the last booking: the journey's driver's),
    # whatever account its billing names now; an earlier one, that account's. Before a part's first init, the
    # journey is still the driver's of the part before (the first part's, the first init's driver's). A part with
    # no init kept (callbacks go with their retention before requests do) is its booking's driver's.
    inits = _inits_of(journey, accounts)
    ends: list[tuple[datetime | None, int | None]] = [(at, driver_id or journey.driver_id) for _, driver_id, at in rows]
    ends.append((None, journey.driver_id))
    changes: list[tuple[_Cut | None, int | None]] = []  # from this cut on (None: from the start), whose
    since: _Cut | None = None
    i = 0
    for until, owner in ends:
        part = []
        while i < len(inits) and (until is None or inits[i][0] < until):
            part.append(inits[i])
            i += 1
        if part:
            whose = [init_whose for _, init_whose in part]
            if owner is not None:
                whose[-1] = owner
            if not changes:
                changes.append((None, whose[0]))
            changes += [(_Cut(at, after=False), init_whose) for (at, _), init_whose in zip(part, whose, strict=True)]
        else:
            changes.append((since, owner))
        since = _Cut(until, after=True) if until is not None else None
    spans: list[_Span] = []
    for j, (start, whose) in enumerate(changes):
        if whose != driver.pk:
            continue
        end = changes[j + 1][0] if j + 1 < len(changes) else None
        if spans and spans[-1][1] == start:  # one stretch of theirs after another: one span
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return _Share(journey, orders, spans)


def _initialised_by(driver: Driver, accounts: _Accounts) -> set[int]:
    """The journeys of the driver's app with an init answered for them: found by their email or phone in the
    on_init answers (the billing those echo; the init requests are stored without it), then by the account the
    billing leads to. The app's on_init callbacks are read in full (one scan of them, as kept for their retention):
    an erasure or export is rare."""
    named = [orjson.dumps(value).decode() for value in (driver.email, driver.phone) if value]  # a whole JSON string
    if not driver.app_id or not named:
        return set()
    rows = (
        BecknCallback.objects.filter(action="on_init", transaction__bap_id=driver.app_id)
        .filter(reduce(or_, (Q(body__icontains=text) for text in named)))
        .values_list("transaction_id", "body")
    )
    journeys = set()
    for journey, body in rows.iterator():
        billing = _billing_answered(body)
        if billing is not None and accounts.of(driver.app_id, billing) == driver.pk:
            journeys.add(journey)
    return journeys


def _shares(driver: Driver) -> list[_Share]:
    """The journeys the driver went on, each with the part of it that is theirs: those they are the driver of,
    those another driver went on with after an order or an init of theirs."""
    accounts = _Accounts()
    bookings = Booking.objects.filter(driver=driver).exclude(app_transaction_id="")
    confirmed_in = set(bookings.values_list("app_id", "app_transaction_id"))
    initialised = _initialised_by(driver, accounts)
    journeys = (
        BecknTransaction.objects.filter(
            Q(driver=driver)
            | Q(booking__driver=driver)
            | Q(transaction_id__in=bookings.values("app_transaction_id"))
            | Q(pk__in=initialised)
        )
        .select_related("booking")
        .order_by("created_at", "pk")
    )
    shares = [
        _share_of(journey, driver, accounts)
        for journey in journeys
        if journey.driver_id == driver.pk
        or (journey.booking_id and journey.booking.driver_id == driver.pk)
        or (journey.bap_id, journey.transaction_id) in confirmed_in
        or journey.pk in initialised
    ]
    return [share for share in shares if share.spans or share.orders]


def _order_ids(driver: Driver, shares: list[_Share]) -> list[str]:
    """The driver's orders: those of their journeys, and any other booking of theirs."""
    orders = [order_id for share in shares for order_id in share.orders]
    orders += Booking.objects.filter(driver=driver).exclude(order_id__in=orders).values_list("order_id", flat=True)
    return list(dict.fromkeys(orders))


def _during(spans: list[_Span], at: str) -> Q:
    found = Q(pk__in=[])
    for start, until in spans:
        span = Q(pk__isnull=False)
        if start is not None:
            span &= Q(**{f"{at}__{'gt' if start.after else 'gte'}": start.at})
        if until is not None:
            span &= Q(**{f"{at}__{'lte' if until.after else 'lt'}": until.at})
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
