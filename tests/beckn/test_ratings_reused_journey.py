"""Ratings when an app goes on with a journey for another driver after the first one's order ended: each driver
rates their own orders and journeys, and one driver's rating of a charger, site or operator never replaces
another's."""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import pytest
from django.apps import apps

from beckn.models import BecknRating, BecknTransaction
from beckn.privacy import _export
from emsp.models import Booking, Driver
from tests.beckn.conformance import errors, onix_errors
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.beckn.test_ratings_and_reasons import journey_of_another_driver, ordered

pytestmark = pytest.mark.django_db

RAVI = {"name": "Ravi", "email": "ravi@example.com", "phone": "+919800000001"}


def rate(bap: Any, category: str, ref_id: str, value: str) -> dict[str, Any]:
    bap("rating", {"ratings": [{"rating_category": category, "id": ref_id, "value": value}]})
    return last(bap, "on_rating")


def refused(body: dict[str, Any]) -> bool:
    assert not errors("on_rating", body) and not onix_errors("on_rating", body)
    return body.get("error", {}).get("code") == "30014" and body["error"]["paths"] == "message.ratings[0].id"


def reused_journey(bap: Any, item: str) -> tuple[str, str]:
    """Asha's order in the journey, cancelled; then Ravi's in the same journey (the app re-inits with his billing)."""
    first = ordered(bap)
    bap("cancel", {"order_id": first})
    select(bap, item)
    bap("init", {"order": {"provider": {"id": "IN*CPA"}, "billing": RAVI}})
    second = confirm(bap)["message"]["order"]["id"]
    assert BecknTransaction.objects.get(transaction_id=bap.bap.transaction_id).driver.email == RAVI["email"]
    return first, second


def another_journey_of_ashas(bap: Any, item: str) -> None:
    bap.bap.transaction_id = str(uuid.uuid4())
    select(bap, item)
    assert "error" not in init(bap)


def scores(ref_id: str) -> list[str]:
    return sorted(BecknRating.objects.filter(ref_id=ref_id).values_list("value", flat=True))


def values(ref_id: str) -> set[tuple[str, str]]:
    return {(r.driver.email if r.driver else "", r.value) for r in BecknRating.objects.filter(ref_id=ref_id)}


@pytest.mark.parametrize("category", ["Order", "Support"])
def test_it_refuses_a_rating_of_one_drivers_order_in_another_drivers_journey(bap: Any, category: str) -> None:
    item = item_of(bap)
    order_a = ordered(bap)
    journey_a = bap.bap.transaction_id
    driver_a = Booking.objects.get(order_id=order_a).driver
    rate(bap, category, order_a, "5")
    bap("cancel", {"order_id": order_a})
    order_b = journey_of_another_driver(bap, item)
    driver_b = Booking.objects.get(order_id=order_b).driver

    assert refused(rate(bap, category, order_a, "1"))
    assert refused(rate(bap, "Support", journey_a, "0"))

    assert values(order_a) == {(driver_a.email, "5")}
    assert not BecknRating.objects.filter(ref_id=journey_a).exists()
    exported_b = {r["ref_id"] for r in _export(driver_b)["ratings"]}
    assert order_a not in exported_b and journey_a not in exported_b
    assert [(r["ref_id"], r["value"]) for r in _export(driver_a)["ratings"]] == [(order_a, "5")]
    # Driver B's own order is B's to rate, and the rating of an order stays one a driver replaces.
    assert "error" not in rate(bap, category, order_b, "4")
    assert "error" not in rate(bap, category, order_b, "3")
    assert values(order_b) == {(driver_b.email, "3")}


@pytest.mark.parametrize("category", ["Order", "Support"])
def test_it_refuses_a_rating_of_the_first_drivers_order_in_the_journey_reused_for_another(
    bap: Any, category: str
) -> None:
    item = item_of(bap)
    order_a = ordered(bap)
    rate(bap, category, order_a, "5")
    _, order_b = reused_journey(bap, item)

    assert refused(rate(bap, category, order_a, "1"))

    asha, ravi = Driver.objects.get(email="asha@example.com"), Driver.objects.get(email=RAVI["email"])
    assert values(order_a) == {(asha.email, "5")}
    assert order_a not in {r["ref_id"] for r in _export(ravi)["ratings"]}
    assert "error" not in rate(bap, category, order_b, "2")
    assert values(order_b) == {(ravi.email, "2")}


def test_the_first_driver_rates_their_order_again_from_another_journey_of_theirs(bap: Any) -> None:
    item = item_of(bap)
    order_a = ordered(bap)
    rate(bap, "Order", order_a, "5")
    _, order_b = reused_journey(bap, item)
    bap("cancel", {"order_id": order_b})  # the charger is free again
    another_journey_of_ashas(bap, item)

    assert "error" not in rate(bap, "Order", order_a, "4")

    assert values(order_a) == {("asha@example.com", "4")}


def test_each_driver_of_a_reused_journey_rates_its_support_for_themselves(bap: Any) -> None:
    item = item_of(bap)
    ordered(bap)
    journey = bap.bap.transaction_id
    rate(bap, "Support", journey, "5")  # Asha's
    _, order_b = reused_journey(bap, item)

    assert "error" not in rate(bap, "Support", journey, "2")  # Ravi's: the journey is his now
    assert "error" not in rate(bap, "Support", journey, "1")
    assert scores(journey) == ["1", "5"]
    assert values(journey) == {("asha@example.com", "5"), (RAVI["email"], "1")}
    # From another journey of Asha's, the support of the journey that holds her order is hers to rate again.
    bap("cancel", {"order_id": order_b})
    another_journey_of_ashas(bap, item)
    assert "error" not in rate(bap, "Support", journey, "4")
    assert values(journey) == {("asha@example.com", "4"), (RAVI["email"], "1")}


@pytest.mark.parametrize("category", ["Item", "Provider"])
def test_a_driver_rating_a_charger_in_a_reused_journey_leaves_the_first_drivers_rating(bap: Any, category: str) -> None:
    item = item_of(bap)
    ref = item if category == "Item" else "IN*CPA"
    ordered(bap)
    rate(bap, category, ref, "5")  # Asha's
    reused_journey(bap, item)

    rate(bap, category, ref, "2")  # Ravi's
    assert scores(ref) == ["2", "5"]
    assert values(ref) == {("asha@example.com", "5"), (RAVI["email"], "2")}
    rate(bap, category, ref, "3")  # Ravi's again: replaces his own

    assert scores(ref) == ["3", "5"]
    assert values(ref) == {("asha@example.com", "5"), (RAVI["email"], "3")}


def test_earlier_ratings_get_their_journeys_driver_where_it_is_certain(bap: Any) -> None:
    migration = importlib.import_module("beckn.migrations.0010_becknrating_driver")
    item = item_of(bap)
    plain = ordered(bap)
    rate(bap, "Item", item, "5")
    rate(bap, "Order", plain, "4")
    bap("cancel", {"order_id": plain})
    bap.bap.transaction_id = str(uuid.uuid4())
    reused_journey(bap, item)
    rate(bap, "Item", item, "2")
    rate(bap, "Support", bap.bap.transaction_id, "1")
    BecknRating.objects.update(driver=None)  # as they were before BecknRating.driver

    migration.drivers_of_earlier_ratings(apps, None)

    asha = Driver.objects.get(email="asha@example.com")
    assert set(BecknRating.objects.values_list("ref_id", "value", "driver")) == {
        (item, "5", asha.pk),
        (plain, "4", asha.pk),
        # Of the journey Ravi's order reused, whose these were is not certain: no one's.
        (item, "2", None),
        (bap.bap.transaction_id, "1", None),
    }
