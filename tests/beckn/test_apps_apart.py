"""One consumer app cannot see or act on another's drivers and orders: accounts are per app (the same email
or phone through another app is another account), and status, update, cancel, rating and support of another
app's order are 30010/30014."""

from __future__ import annotations

from typing import Any

import pytest

from emsp.models import Booking, Driver
from tests.beckn.bap import FakeBap
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db


@pytest.fixture
def other_app(peer: FakePeer, bap: Any) -> Any:
    other = FakeBap(peer, bap_id="other.bap.example", bap_uri="https://other.bap.example/beckn")

    def post(endpoint: str, message: dict[str, Any], **kwargs: Any) -> Any:
        with bap.capture(execute=True):
            return other.post(endpoint, message, **kwargs)

    post.bap = other  # type: ignore[attr-defined]
    return post


def booked(bap: Any) -> str:
    select(bap, item_of(bap))
    init(bap)
    return confirm(bap)["message"]["order"]["id"]


def test_the_same_contact_through_another_app_is_another_account(bap: Any, other_app: Any) -> None:
    booked(bap)
    item_of(other_app)
    free = last(other_app, "on_search")["message"]["catalog"]["providers"][0]["items"][1]["id"]
    select(other_app, free)
    init(other_app)  # the same billing email and phone as the first app's driver
    drivers = Driver.objects.filter(email="asha@example.com")
    assert sorted(drivers.values_list("app_id", flat=True)) == ["bap.test.example", "other.bap.example"]


@pytest.mark.parametrize(
    ("action", "message", "code"),
    [
        ("status", lambda order: {"order_id": order}, "30010"),
        ("track", lambda order: {"order_id": order}, "30010"),
        ("cancel", lambda order: {"order_id": order, "cancellation_reason_id": "1"}, "30010"),
        (
            "update",
            lambda order: {
                "update_target": "order.fulfillments[0].state",
                "order": {"id": order, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]},
            },
            "30010",
        ),
        ("rating", lambda order: {"ratings": [{"rating_category": "Order", "id": order, "value": "5"}]}, "30014"),
    ],
)
def test_another_apps_order_is_not_found(bap: Any, other_app: Any, action: str, message: Any, code: str) -> None:
    order_id = booked(bap)
    other_app(action, message(order_id))
    answer = last(other_app, f"on_{action}")
    assert answer["error"]["code"] == code
    assert Booking.objects.get(order_id=order_id).state == Booking.State.CONFIRMED
