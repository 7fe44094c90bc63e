"""Ratings, support and cancellation reasons as a hostile app sends them (a review of the post-order actions): one
rating of an entity by an app, a bounded number a request, support ratings only of the app's own orders or
journeys, categories stored as core 1.1.0 spells them, and string fields that are strings."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from beckn.models import BecknRating
from beckn.privacy import _export
from emsp.models import Booking
from tests.beckn.bap import FakeBap
from tests.beckn.conformance import errors, onix_errors
from tests.beckn.test_actions import confirm, init, item_of, last, select

pytestmark = pytest.mark.django_db


def ordered(bap: Any) -> str:
    select(bap, item_of(bap))
    init(bap)
    return confirm(bap)["message"]["order"]["id"]


def other_app(bap: Any) -> Any:
    other = FakeBap(bap.bap.peer, bap_id="bap.other.example", bap_uri="https://bap.other.example/beckn")

    def post(endpoint: str, message: dict[str, Any], **kw: Any) -> Any:
        with bap.capture(execute=True):
            return other.post(endpoint, message, **kw)

    post.bap = other  # type: ignore[attr-defined]
    return post


def test_an_order_rated_again_replaces_its_rating(bap: Any) -> None:
    order_id = ordered(bap)
    for value in ("1", "2", "5"):
        bap("rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": value}]})
    bap("rating", {"ratings": [{"rating_category": "order", "id": order_id, "value": "4"}] * 3})

    assert list(BecknRating.objects.filter(ref_id=order_id).values_list("category", "value")) == [("Order", "4")]


def test_a_request_of_more_ratings_than_an_order_has_is_refused(bap: Any) -> None:
    item = item_of(bap)
    bap("rating", {"ratings": [{"rating_category": "Item", "id": item, "value": "5"}] * 21})

    body = last(bap, "on_rating")
    assert body["error"]["code"] == "30000" and body["error"]["paths"] == "message.ratings"
    assert not errors("on_rating", body) and not onix_errors("on_rating", body)
    assert not BecknRating.objects.exists()


def test_a_support_rating_names_the_apps_own_order_or_journey(bap: Any) -> None:
    order_id = ordered(bap)
    other_app(bap)("rating", {"ratings": [{"rating_category": "Support", "id": order_id, "value": "0"}]})
    bap("rating", {"ratings": [{"rating_category": "Support", "id": "anything-at-all", "value": "5"}]})

    assert not BecknRating.objects.filter(value="0").exists()
    assert last(bap, "on_rating")["error"]["code"] == "30014"
    bap("rating", {"ratings": [{"rating_category": "Support", "id": order_id, "value": "4"}]})
    bap("rating", {"ratings": [{"rating_category": "Support", "id": bap.bap.transaction_id, "value": "3"}]})
    assert sorted(BecknRating.objects.values_list("value", flat=True)) == ["3", "4"]


def test_another_apps_rating_of_an_order_is_not_in_its_drivers_export(bap: Any) -> None:
    order_id = ordered(bap)
    BecknRating.objects.create(bap_id="bap.other.example", category="Support", ref_id=order_id, value="0")

    driver = Booking.objects.get(order_id=order_id).driver
    assert _export(driver)["ratings"] == []


@pytest.mark.parametrize("reason", [{"x": 1}, ["a"], 42])
def test_a_cancellation_reason_that_is_no_string_is_refused(bap: Any, reason: Any) -> None:
    order_id = ordered(bap)
    bap("cancel", {"order_id": order_id, "cancellation_reason_id": reason})

    body = last(bap, "on_cancel")
    assert body["error"]["code"] == "30000" and body["error"]["paths"] == "message.cancellation_reason_id"
    assert Booking.objects.get(order_id=order_id).state != Booking.State.CANCELLED


@pytest.mark.parametrize("ref_id", [{"nested": "dict"}, ["l"], 12345])
def test_a_support_ref_id_that_is_no_string_is_refused(bap: Any, ref_id: Any) -> None:
    bap("support", {"support": {"ref_id": ref_id}})

    body = last(bap, "on_support")
    assert body["error"]["code"] == "30000"
    assert not errors("on_support", body) and not onix_errors("on_support", body)


def journey_of_another_driver(bap: Any, item: str) -> str:
    bap.bap.transaction_id = str(uuid.uuid4())
    select(bap, item)
    billing = {"name": "Ravi", "email": "ravi@example.com", "phone": "+919845000001"}
    bap("init", {"order": {"provider": {"id": "IN*CPA"}, "billing": billing}})
    return confirm(bap)["message"]["order"]["id"]


@pytest.mark.parametrize("category", ["Item", "Provider"])
def test_one_drivers_rating_of_a_charger_leaves_another_drivers(bap: Any, category: str) -> None:
    item = item_of(bap)
    ref = item if category == "Item" else "IN*CPA"
    order_a = ordered(bap)
    driver_a = Booking.objects.get(order_id=order_a).driver
    bap("rating", {"ratings": [{"rating_category": category, "id": ref, "value": "5"}]})
    bap("cancel", {"order_id": order_a})
    order_b = journey_of_another_driver(bap, item)
    assert Booking.objects.get(order_id=order_b).driver_id != driver_a.pk

    bap("rating", {"ratings": [{"rating_category": category, "id": ref, "value": "1"}]})
    bap("rating", {"ratings": [{"rating_category": category, "id": ref, "value": "2"}]})  # the same driver again

    assert sorted(BecknRating.objects.filter(ref_id=ref).values_list("value", flat=True)) == ["2", "5"]
    assert [r["value"] for r in _export(driver_a)["ratings"]] == ["5"]


def test_a_support_rating_of_a_drivers_journey_from_another_transaction_is_in_their_export(bap: Any) -> None:
    order_id = ordered(bap)
    driver = Booking.objects.get(order_id=order_id).driver
    journey = bap.bap.transaction_id
    bap.bap.transaction_id = str(uuid.uuid4())

    bap("rating", {"ratings": [{"rating_category": "Support", "id": journey, "value": "2"}]})

    assert [r["value"] for r in _export(driver)["ratings"]] == ["2"]


@pytest.mark.parametrize("reason", ["   ", "\u00a0"])
def test_a_blank_cancellation_reason_is_no_reason(bap: Any, reason: str) -> None:
    order_id = ordered(bap)
    bap("cancel", {"order_id": order_id, "cancellation_reason_id": reason})

    body = last(bap, "on_cancel")
    assert "reason" not in body["message"]["order"]["cancellation"]
    assert Booking.objects.get(order_id=order_id).cancellation_reason == "cancelled by the driver"
