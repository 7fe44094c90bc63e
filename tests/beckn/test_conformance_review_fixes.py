"""Conformance review fixes: a quote's breakup adds up to its price (a `rounding` line, as the final bill's); a
request without what core 1.1.0's OpenAPI requires of its message is NACKed at once (the same on the ACK lane),
not ACKed and then answered with an error; the item's `status` tag speaks the RFC's words, the OCPI enum beside
it in `ocpi-status`; a location without a city is served without one, not named ""."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.utils import timezone

from beckn.catalogue import connectorless_item_tags
from beckn.models import BecknMessage
from billing.services import tariff_put
from emsp.models import Evse, Location
from tests.beckn.bap import TARIFF
from tests.beckn.conformance import assert_valid, errors
from tests.beckn.test_ack_lane import assert_same, both
from tests.beckn.test_actions import confirm, init, item_of, last, search_message, select

pytestmark = pytest.mark.django_db


def adds_up(quote: dict[str, Any]) -> bool:
    return sum(Decimal(line["price"]["value"]) for line in quote["breakup"]) == Decimal(quote["price"]["value"])


def lines(quote: dict[str, Any]) -> dict[str, str]:
    return {line["title"]: line["price"]["value"] for line in quote["breakup"]}


# --- a quote's lines add up to its price -------------------------------------------------------------------

# ENERGY and TIME at prices that leave fractions of a cent on two lines (the reviewers' tariff).
ODD = {
    **TARIFF,
    "last_updated": "2026-01-02T00:00:00Z",
    "elements": [
        {
            "price_components": [
                {"type": "ENERGY", "price": 17.77, "vat": 18, "step_size": 1},
                {"type": "TIME", "price": 3.33, "vat": 18, "step_size": 60},
            ]
        },
        {"price_components": [{"type": "FLAT", "price": 20, "vat": 18, "step_size": 1}]},
    ],
}


def test_a_quote_whose_lines_lose_a_cent_to_rounding_shows_it_and_adds_up(bap: Any, network: Any) -> None:
    tariff_put(network, ODD)
    body = select(bap, item_of(bap), "7.777")
    order = body["message"]["order"]
    quote = order["quote"]
    # The price is the exact sum rounded once (196.84); its lines, each rounded, come to 196.83.
    assert quote["price"]["value"] == "196.84"
    assert lines(quote)["rounding"] == "0.01"
    assert adds_up(quote)
    assert order["payments"][0]["params"]["amount"] == "196.84"  # what is asked for stays the price
    assert adds_up(init(bap)["message"]["order"]["quote"])
    confirmed = confirm(bap)["message"]["order"]
    assert adds_up(confirmed["quote"]) and lines(confirmed["quote"])["rounding"] == "0.01"


def test_a_quote_that_adds_up_has_no_rounding_line(bap: Any) -> None:
    quote = select(bap, item_of(bap))["message"]["order"]["quote"]
    assert "rounding" not in lines(quote)
    assert adds_up(quote)


def test_a_min_price_is_one_charging_line_not_a_rounding_line(bap: Any, network: Any) -> None:
    raised = {**TARIFF, "last_updated": "2026-01-02T00:00:00Z", "min_price": {"excl_vat": 1000, "incl_vat": 1180}}
    tariff_put(network, raised)
    quote = select(bap, item_of(bap), "1")["message"]["order"]["quote"]
    shown = lines(quote)
    assert shown["charging-cost"] == "1180.00"  # the tariff's minimum, not 38 kWh-and-flat plus 1,142 of "rounding"
    assert "energy-cost" not in shown and "session-fee" not in shown
    assert Decimal(shown.get("rounding", "0")).copy_abs() < Decimal("0.02")
    assert adds_up(quote)


# --- what the OpenAPI requires of a message is checked at the ACK ------------------------------------------


@pytest.mark.parametrize(
    ("action", "message", "path"),
    [
        ("select", {}, "message.order"),
        ("init", {}, "message.order"),
        ("confirm", {}, "message.order"),
        ("status", {}, "message.order_id"),
        ("track", {}, "message.order_id"),
        ("cancel", {"descriptor": {"name": "changed my mind"}}, "message.order_id"),
        ("update", {"order": {"id": "ORD-X"}}, "message.update_target"),
        ("update", {"update_target": "fulfillment"}, "message.order"),
        ("confirm", {"order": None}, "message.order"),
        ("cancel", {"order": {}}, "message.order_id"),  # an order object naming no id names no order
    ],
)
def test_a_message_without_what_its_action_requires_is_nacked(
    bap: Any, action: str, message: dict[str, Any], path: str
) -> None:
    fake = bap.bap
    assert errors(action, {"context": fake.context(action), "message": message})  # core 1.1.0 refuses it
    response = bap(action, message)
    assert response.status_code == 400
    assert response.json()["message"]["ack"]["status"] == "NACK"
    assert response.json()["error"]["code"] == "30000"
    assert response.json()["error"]["paths"] == path
    assert not fake.callbacks(f"on_{action}")  # no error callback after it
    assert not BecknMessage.objects.exists()


def test_the_ack_lane_nacks_it_the_same(bap: Any) -> None:
    def status_without_order(fake: Any) -> bytes:
        return orjson.dumps({"context": fake.context("status"), "message": {}})

    django, lane = both(bap, "status", status_without_order)
    assert_same(django, lane)
    assert lane.status_code == 400
    assert orjson.loads(lane.content)["error"] == {
        "code": "30000",
        "paths": "message.order_id",
        "message": "message.order_id is required",
    }


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("search", {}),  # nothing is required of a search, a rating or a support request
        ("rating", {}),
        ("support", {}),
        ("status", {"order": {"id": "ORD-X"}}),  # the order object naming its id, read as order_id (lenient)
    ],
)
def test_what_the_openapi_does_not_require_is_still_acked(bap: Any, action: str, message: dict[str, Any]) -> None:
    assert bap(action, message).json() == {"message": {"ack": {"status": "ACK"}}}


def test_a_confirm_whose_order_is_no_object_is_30000_not_select_first(bap: Any) -> None:
    assert bap("confirm", {"order": "ORD-X"}).json()["message"]["ack"]["status"] == "ACK"  # deeper: the callback
    told = bap.bap.callbacks("on_confirm")[-1]["error"]
    assert (told["code"], told["paths"]) == ("30000", "message.order")


# --- the item's status in the RFC's words, the OCPI enum beside it ------------------------------------------


def specs_of(items: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [{t["descriptor"]["code"]: t["value"] for t in item["tags"][0]["list"]} for item in items]


def test_the_status_tag_speaks_the_rfcs_words_and_ocpi_status_keeps_the_enum(bap: Any) -> None:
    bap("search", search_message())
    specs = specs_of(last(bap, "on_search")["message"]["catalog"]["providers"][0]["items"])
    assert {(s["status"], s["ocpi-status"]) for s in specs} == {("Available", "AVAILABLE")}


@pytest.mark.parametrize(
    ("ocpi", "words"),
    [
        ("AVAILABLE", "Available"),
        ("CHARGING", "In Use"),
        ("BLOCKED", "Blocked"),
        ("OUTOFORDER", "Out of Order"),
        ("RESERVED", "Reserved"),
        ("INOPERATIVE", "Unknown"),
        ("PLANNED", "Unknown"),
        ("REMOVED", "Unknown"),
        ("UNKNOWN", "Unknown"),
    ],
)
def test_each_ocpi_status_maps_as_the_rfcs_map_status(bap: Any, ocpi: str, words: str) -> None:
    evse = Evse.objects.select_related("location").first()
    evse.status = ocpi
    tags = {t["descriptor"]["code"]: t["value"] for t in connectorless_item_tags(evse, "1", timezone.now())[0]["list"]}
    assert (tags["status"], tags["ocpi-status"]) == (words, ocpi)


# --- a location without a city --------------------------------------------------------------------------


def test_a_location_without_a_city_is_served_without_one(bap: Any) -> None:
    Location.objects.filter(location_id="NEAR").update(city="")
    bap("search", search_message(radius_km="5"))
    body = last(bap, "on_search")  # OpenAPI-validated
    places = {p["id"]: p for p in body["message"]["catalog"]["providers"][0]["locations"]}
    assert "city" not in places["LOC-NEAR"]
    assert places["LOC-FAR"]["city"]["name"]  # one with a city keeps it
    assert_valid("on_search", body)
