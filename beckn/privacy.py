"""Beckn's part of personal data (emsp/privacy.py): a driver's journeys (billing and contact details are kept
encrypted on the journey only) and ratings. Stored request bodies have those details redacted; on erasure the
journeys' details and stored messages go; request records go with their retention."""

from __future__ import annotations

from typing import Any

import orjson

from beckn.models import BecknCallback, BecknMessage, BecknRating, BecknTransaction, DriverFeedback
from emsp import privacy
from emsp.models import Booking, Delivery, Driver

# Beckn objects that carry who the driver is (core 1.1.0 Billing, Customer, Person, Contact).
PERSONAL = frozenset({"billing", "customer", "person", "contact"})
REDACTED = "[redacted]"


def redacted(body: str) -> str:
    """A request body as we keep it: the personal blocks replaced (the journey keeps them, encrypted)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    return orjson.dumps(_redact(data)).decode()


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if k in PERSONAL and v else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
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
    order_ids = [order_id for journey in out for order_id in journey["order_ids"]]
    return {
        "journeys": out,
        "feedback": [
            {"order_id": f.order_id, "rating": f.rating, "comment": f.comment, "created_at": privacy.when(f.created_at)}
            for f in DriverFeedback.objects.filter(order_id__in=order_ids).order_by("created_at")
        ],
        "ratings": [
            {"category": r.category, "ref_id": r.ref_id, "value": r.value, "created_at": privacy.when(r.created_at)}
            for r in BecknRating.objects.filter(transaction__driver=driver).order_by("created_at")
        ],
    }


def _erase(driver: Driver) -> dict[str, int]:
    journeys = BecknTransaction.objects.filter(driver=driver)
    messages = BecknMessage.objects.filter(transaction__in=journeys).update(body="[erased]")
    # Callbacks already settled no longer need their bodies; one still to be sent keeps it until it goes.
    callbacks = BecknCallback.objects.filter(
        transaction__in=journeys, status__in=(Delivery.Status.DELIVERED, Delivery.Status.FAILED)
    ).update(body="{}")
    details, order_ids = 0, []
    for journey in journeys.select_related("booking"):
        order_ids += _orders_of(journey)
        journey.billing, journey.customer = {}, {}
        journey.save(update_fields=["billing", "customer"])
        details += 1
    # What the driver wrote on the feedback form may name them: the comment goes, the score stays.
    feedback = DriverFeedback.objects.filter(order_id__in=order_ids).exclude(comment="").update(comment="")
    return {"journeys": details, "messages": messages, "callbacks": callbacks, "feedback_comments": feedback}


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
