"""Search intents as BAPs send them: the RFC's plain tags under `intent.item.tags`, UEI's `connector-types`
group, repeated connector types, a radius around the location's gps, categories (DEG v1 and the UEI guide
search `green-tariff`), a price ceiling on the item, and BECKN-005 codes for a provider, item or category we
don't have (not an empty catalogue the BAP can't tell from "nothing free nearby")."""

from __future__ import annotations

from typing import Any

import pytest

from emsp.models import Partner
from emsp.services.catalogue import locations_store
from tests.beckn.test_actions import BENGALURU, last, search_message
from tests.factories import ocpi_location

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed(network: Partner) -> Partner:
    """Next to the CCS2 60 kW chargers of `network` (NEAR ×2 and FAR within 5 km): MID, one Type2 22 kW charger
    on green energy."""
    location = ocpi_location("IN", "CPA", "MID", evses=1, latitude=12.975, longitude=77.597)
    location["energy_mix"] = {"is_green_energy": True}
    location["evses"][0]["connectors"][0].update(  # type: ignore[index]
        standard="IEC_62196_T2", format="SOCKET", power_type="AC_3_PHASE", max_voltage=400, max_amperage=32,
        max_electric_power=22000,
    )  # fmt: skip
    locations_store(network, [location])
    return network


def _items(bap: Any) -> list[str]:
    body = last(bap, "on_search")
    assert "error" not in body, body["error"]
    return sorted(i["id"].split("/")[0] for p in body["message"]["catalog"]["providers"] for i in p["items"])


def _error(bap: Any) -> tuple[str, str]:
    error = last(bap, "on_search")["error"]
    return error["code"], error["paths"]


def test_the_rfcs_plain_item_tags_filter(bap: Any, mixed: Partner) -> None:
    message = search_message()
    message["intent"]["item"] = {"tags": [{"descriptor": {"code": "connector-type"}, "value": "CCS2"},
                                          {"descriptor": {"code": "power-rating"}, "value": "50kW"}]}  # fmt: skip
    bap("search", message)
    assert _items(bap) == ["FAR", "NEAR", "NEAR"]


def test_ueis_connector_types_group_lists_the_types(bap: Any, mixed: Partner) -> None:
    message = search_message()
    message["intent"]["fulfillment"]["tags"] = [
        {"descriptor": {"code": "connector-types"}, "list": [{"descriptor": {"code": "Type2"}, "value": "Type2"}]}
    ]
    bap("search", message)
    assert _items(bap) == ["MID"]


def test_repeated_connector_types_add_up(bap: Any, mixed: Partner) -> None:
    tags = [{"descriptor": {"code": "connector-type"}, "value": "CCS2"},
            {"descriptor": {"code": "connector-type"}, "value": "Type2"}]  # fmt: skip
    bap("search", search_message(tags=tags))
    assert _items(bap) == ["FAR", "MID", "NEAR", "NEAR"]


def test_a_circles_radius_counts_around_the_locations_gps(bap: Any, mixed: Partner) -> None:
    stop = {"location": {"gps": BENGALURU, "circle": {"radius": {"value": "1", "unit": "km"}}}}
    bap("search", {"intent": {"fulfillment": {"stops": [stop]}}})
    assert _items(bap) == ["MID", "NEAR", "NEAR"]  # FAR is 2.2 km away


@pytest.mark.parametrize("category", [{"descriptor": {"code": "green-tariff"}}, {"id": "green-energy"}])
def test_a_category_filters_by_what_it_stands_for(bap: Any, mixed: Partner, category: dict[str, Any]) -> None:
    message = search_message()
    message["intent"]["category"] = category
    bap("search", message)
    assert _items(bap) == ["MID"]


def test_an_item_price_ceiling_filters(bap: Any, mixed: Partner) -> None:
    message = search_message()
    message["intent"]["item"] = {"price": {"currency": "INR", "maximum_value": "10"}}  # the tariff is 18/kWh
    bap("search", message)
    assert _items(bap) == []
    message["intent"]["item"] = {"price": {"currency": "INR", "maximum_value": "NaN"}}
    bap("search", message)
    assert _error(bap) == ("30000", "message.intent.item.price.maximum_value")


@pytest.mark.parametrize(
    ("intent", "expected"),
    [
        ({"provider": {"id": "NOPE*XX"}}, ("30001", "message.intent.provider.id")),
        ({"item": {"id": "NEAR/NOPE/1"}}, ("30004", "message.intent.item.id")),
        ({"category": {"id": "fast-food"}}, ("30005", "message.intent.category.id")),
        ({"category": {"descriptor": {"code": "x\x00"}}}, ("30000", "message.intent.category.descriptor.code")),
    ],
)
def test_what_we_dont_have_is_a_beckn_error_not_an_empty_catalogue(
    bap: Any, mixed: Partner, intent: dict[str, Any], expected: tuple[str, str]
) -> None:
    message = search_message()
    message["intent"].update(intent)
    bap("search", message)
    assert _error(bap) == expected


def test_a_fulfillment_type_other_than_charging_finds_nothing(bap: Any, mixed: Partner) -> None:
    message = search_message()
    message["intent"]["fulfillment"]["type"] = "BATTERY-SWAP"  # a DEG v1 type
    bap("search", message)
    assert _items(bap) == []
    message["intent"]["fulfillment"]["type"] = "CHARGING"
    bap("search", message)
    assert _items(bap) == ["FAR", "MID", "NEAR", "NEAR"]


def test_a_search_without_a_position_keeps_to_the_city_the_context_names(bap: Any, mixed: Partner) -> None:
    location = ocpi_location("IN", "CPA", "MYS", evses=1, latitude=12.2958, longitude=76.6394)
    location["city"] = "Mysuru"
    locations_store(mixed, [location])
    intent = {"intent": {"item": {"descriptor": {"name": "EV Charging"}}}}  # no position, as the missions search
    bap("search", intent, location={"country": {"code": "IND"}, "city": {"name": "mysuru"}})
    assert _items(bap) == ["MYS"]
    bap("search", intent)  # a city by code alone (std:080) names none we can match: every city
    assert "MYS" in _items(bap) and "NEAR" in _items(bap)


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([("power-type", "DC")], ["FAR", "NEAR", "NEAR"]),
        ([("power-type", "ac")], ["MID"]),
        ([("Power_Type", "AC-3-phase")], ["MID"]),
        ([("current-type", "AC1")], []),  # MID is three-phase
        ([("power-type", "AC_1_PHASE, DC")], ["FAR", "NEAR", "NEAR"]),
        ([("power-type", "AC"), ("power-type", "DC")], ["FAR", "MID", "NEAR", "NEAR"]),  # repeated tags add up
        ([("power-type", "DC"), ("connector-type", "Type2")], []),  # one connector must have both
    ],
)
def test_a_power_type_keeps_the_connectors_of_that_current(
    bap: Any, mixed: Partner, tags: list[tuple[str, str]], expected: list[str]
) -> None:
    """`power-type` (AC, DC or an OCPI PowerType, as our items' own tag shows it) had been ignored: a driver
    whose car takes only AC was shown DC chargers."""
    bap("search", search_message(tags=[{"descriptor": {"code": code}, "value": value} for code, value in tags]))
    assert _items(bap) == expected


@pytest.mark.parametrize("value", ["AC_4_PHASE", "three phase", "AC\x00", "D" * 40])
def test_a_power_type_we_cant_read_is_an_error_naming_the_tag(bap: Any, mixed: Partner, value: str) -> None:
    bap("search", search_message(tags=[{"descriptor": {"code": "power-type"}, "value": value}]))
    assert _error(bap) == ("30000", "message.intent.tags(power-type)")
