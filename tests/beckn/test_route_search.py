"""Vehicle- and route-aware search (issue 13, point 6): the geometry (emsp/geo.py) with hostile polylines,
the charge curve (emsp/vehicles.py), ranking by detour, connector compatibility, estimates priced by the
tariff engine exactly as quotes are, and a signed search along a route end to end."""

from __future__ import annotations

import itertools
import math
import random
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from beckn.catalogue import search
from beckn.parsing import search_filters
from billing import pricing
from billing.models import PartnerTerms
from billing.services import tariff_put
from billing.services.driver_pricing import driver_total, emsp_fee, quote_charge
from emsp.datetimes import parse_utc
from emsp.geo import (
    MAX_POLYLINE_CHARS,
    Route,
    RouteError,
    decode_polyline,
    densify,
    encode_polyline,
    haversine_m,
    simplify,
)
from emsp.models import Connector, Evse, Partner
from emsp.services.catalogue import locations_store
from emsp.vehicles import Vehicle, charge_plan, charging_power_kw
from tests.beckn.test_actions import last
from tests.factories import ocpi_location

# --- geometry -----------------------------------------------------------------------------------------------


def test_it_decodes_googles_reference_polyline_and_encodes_it_back() -> None:
    points = [(38.5, -120.2), (40.7, -120.95), (43.252, -126.453)]
    assert decode_polyline("_p~iF~ps|U_ulLnnqC_mqNvxq`@") == points
    assert encode_polyline(points) == "_p~iF~ps|U_ulLnnqC_mqNvxq`@"
    assert decode_polyline(encode_polyline(points, precision=6), precision=6) == points


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("_p~iF~ps|U_ulLnnqC_mqNvxq`", "ends in the middle of a value"),  # last chunk has its continuation bit
        ("_p~iF", "latitude without its longitude"),
        ("_p~iF~ps|U\x00", "character that is not"),
        ("_p~iF ~ps|U", "character that is not"),
        ("_p~iF~ps|Uä", "character that is not"),
        ("~~~~~~~~~~~~~~~~~~~~?", "too long to be a coordinate"),
        (encode_polyline([(89.0, 0.0), (91.0, 0.0)]), "out of range"),
        ("?" * (MAX_POLYLINE_CHARS + 1), "longer than"),
    ],
)
def test_it_refuses_garbage_polylines_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(RouteError, match=why):
        decode_polyline(text)


def test_it_refuses_routes_it_cannot_use() -> None:
    with pytest.raises(RouteError, match="two distinct points"):
        Route.from_points([(12.0, 77.0), (12.0, 77.0)])
    with pytest.raises(RouteError, match="longer than"):
        Route.from_points([(0.0, 0.0), (0.0, 60.0)])  # 6,700 km
    with pytest.raises(RouteError, match="out of range"):
        Route.from_points([(0.0, 0.0), (float("nan"), 1.0)])
    with pytest.raises(RouteError, match="more than"):
        decode_polyline("??" * 20_001)


def test_a_crafted_polyline_costs_a_bounded_time() -> None:
    # The worst case of Douglas-Peucker: each split leaves all but one point on one side (amplitudes shrinking
    # along the route), 20,000 points of it: simplification stops at its budget and keeps the rest.
    points = [(10.0 + i * 0.0005, 75.0 + (0.001 * 0.99995**i if i % 2 else 0.0)) for i in range(19_999)]
    text = encode_polyline(points)
    assert len(text) <= MAX_POLYLINE_CHARS
    started = time.perf_counter()
    route = Route.from_points(decode_polyline(text))
    route.boxes(5_000)
    route.place(12.0, 75.0, 5_000)
    assert time.perf_counter() - started < 5
    assert len(route.points) > 2


def test_it_places_a_point_off_the_route_with_its_detour_and_position_along_it() -> None:
    route = Route.from_points([(15.0, 75.0), (15.5, 75.0)])  # due north, 55.6 km
    placement = route.place(15.1, 75.02, 5_000)
    assert placement is not None
    east = haversine_m(15.1, 75.0, 15.1, 75.02)
    assert placement.off_route_m == pytest.approx(east, rel=1e-3)
    assert placement.detour_m == pytest.approx(2 * east, rel=1e-3)
    assert placement.along_m == pytest.approx(haversine_m(15.0, 75.0, 15.1, 75.0), rel=1e-3)
    assert route.place(15.1, 75.1, 5_000) is None  # 10.7 km off
    # beyond the end: the nearest point is the end of the route
    end = route.place(15.52, 75.0, 5_000)
    assert end is not None and end.along_m == pytest.approx(route.length_m)


def test_the_corridor_boxes_cover_every_point_within_the_width() -> None:
    rng = random.Random(5)
    points = [(12.0, 77.0)]
    for _ in range(400):  # a winding 400-step route, ~1 km a step
        lat, lon = points[-1]
        points.append((lat + rng.uniform(-0.004, 0.009), lon + rng.uniform(-0.009, 0.009)))
    route = Route.from_points(points)
    width = 3_000.0
    boxes = route.boxes(width)
    assert len(boxes) < len(route.points)
    samples = densify(route.points, 25)  # brute force: the distance to a densely sampled route
    near = 0
    for _ in range(250):
        base = rng.choice(route.points)
        lat, lon = base[0] + rng.uniform(-0.04, 0.04), base[1] + rng.uniform(-0.04, 0.04)
        placement = route.place(lat, lon, width)
        brute = min(haversine_m(lat, lon, s[0], s[1]) for s in samples)
        if abs(brute - width) > 20:
            assert (placement is not None) == (brute < width), (lat, lon, brute)
        if placement is not None:
            near += 1
            assert placement.off_route_m == pytest.approx(brute, abs=15)
            assert any(b[0] <= lat <= b[1] and b[2] <= lon <= b[3] for b in boxes), (lat, lon)
    assert near > 50


def test_simplify_keeps_the_route_within_tolerance_and_densify_bounds_the_steps() -> None:
    points = densify([(15.0, 75.0), (15.5, 75.0), (15.5, 75.5)], 200)
    assert max(haversine_m(*a, *b) for a, b in itertools.pairwise(points)) <= 200.5
    simplified = simplify(points, 50)
    assert simplified == [(15.0, 75.0), (15.5, 75.0), (15.5, 75.5)]


# --- the charge curve ------------------------------------------------------------------------------------------


def test_the_charge_curve_is_constant_on_ac_and_tapers_above_80_percent_on_dc() -> None:
    ac = charge_plan(
        energy_kwh=Decimal("22"), power_kw=Decimal("11"), power_type="AC_3_PHASE", battery_kwh=Decimal("60"),
        soc_start=Decimal("0.1"),
    )  # fmt: skip
    assert ac.duration == timedelta(hours=2) and ac.constant
    dc = charge_plan(
        energy_kwh=Decimal("24"), power_kw=Decimal("50"), power_type="DC", battery_kwh=Decimal("60"),
        soc_start=Decimal("0.5"),
    )  # fmt: skip
    bulk, taper = dc.phases
    assert (bulk.energy_kwh, bulk.duration) == (Decimal("18"), timedelta(minutes=21, seconds=36))
    # 0.8 → 0.9: power 50 → 30 kW; t = 60 / (50 × 4) × ln(50 / 30) h
    assert taper.energy_kwh == Decimal("6")
    assert taper.duration.total_seconds() == pytest.approx(0.3 * math.log(50 / 30) * 3600, abs=0.01)
    assert (taper.max_power_kw, taper.min_power_kw) == (Decimal("50"), Decimal("30"))


def test_the_vehicle_limits_power_and_states_the_energy_it_needs() -> None:
    car = Vehicle(max_ac_kw=Decimal("7"), max_dc_kw=Decimal("100"), battery_kwh=Decimal("75"), soc_now=Decimal("0.2"))
    assert charging_power_kw(Decimal("22"), "AC_3_PHASE", car) == Decimal("7")
    assert charging_power_kw(Decimal("60"), "DC", car) == Decimal("60")
    assert charging_power_kw(None, "AC_1_PHASE", None) == Decimal("7.4")
    assert car.energy_needed_kwh() == Decimal("45.000")  # to 80 % by default


# --- searches along a route --------------------------------------------------------------------------------------

START, END = (15.0, 75.0), (15.5, 75.0)  # due north, far from the Bengaluru network of the shared fixtures
FULL_TARIFF = {
    "country_code": "IN",
    "party_id": "CPA",
    "id": "T1",
    "currency": "INR",
    "elements": [
        {
            "price_components": [
                {"type": "ENERGY", "price": 18, "vat": 18, "step_size": 1},
                {"type": "TIME", "price": 60, "vat": 18, "step_size": 60},
                {"type": "FLAT", "price": 20, "vat": 18, "step_size": 1},
            ]
        },
        {"price_components": [{"type": "PARKING_TIME", "price": 100, "vat": 18, "step_size": 60}]},
    ],
    "last_updated": "2026-02-01T00:00:00Z",
}


def _ac_location(partner: Partner, location_id: str, lat: float, lon: float) -> dict[str, Any]:
    location = ocpi_location(partner.country_code, partner.party_id, location_id, evses=1, latitude=lat, longitude=lon)
    connector = location["evses"][0]["connectors"][0]  # type: ignore[index]
    connector.update(standard="IEC_62196_T2", format="SOCKET", power_type="AC_3_PHASE", max_electric_power=22000)
    return location


@pytest.fixture
def corridor(network: Partner) -> Partner:
    """Along 15.0,75.0 → 15.5,75.0: ON (on the route), AC (Type 2, 22 kW, 0.5 km off), SIDE (2.1 km off),
    OFF (8.6 km off) — each its own location, one DC CCS2 60 kW EVSE unless AC."""
    tariff_put(network, FULL_TARIFF)
    locations_store(
        network,
        [
            ocpi_location("IN", "CPA", "ON", evses=1, latitude=15.3, longitude=75.0),
            _ac_location(network, "AC", 15.2, 75.0047),
            ocpi_location("IN", "CPA", "SIDE", evses=1, latitude=15.1, longitude=75.02),
            ocpi_location("IN", "CPA", "OFF", evses=1, latitude=15.4, longitude=75.08),
        ],
    )
    return network


def _tag(code: str, value: str) -> dict[str, Any]:
    return {"descriptor": {"code": code}, "value": value}


def route_message(*tags: dict[str, Any], stops: bool = False, vehicle: dict[str, Any] | None = None) -> dict[str, Any]:
    fulfillment: dict[str, Any] = {}
    if stops:
        fulfillment["stops"] = [
            {"type": "end", "location": {"gps": f"{END[0]},{END[1]}"}},
            {"type": "start", "location": {"gps": f"{START[0]},{START[1]}"}},
        ]
    else:
        fulfillment["tags"] = [
            {
                "descriptor": {"code": "route"},
                "list": [_tag("route-polyline", encode_polyline(densify([START, END], 500)))],
            }
        ]
    if tags:
        fulfillment.setdefault("tags", []).append({"descriptor": {"code": "vehicle"}, "list": list(tags)})
    if vehicle is not None:
        fulfillment["vehicle"] = vehicle
    return {"intent": {"fulfillment": fulfillment}}


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for provider in body["message"]["catalog"]["providers"] for item in provider["items"]]


def _group(item: dict[str, Any], code: str) -> dict[str, str]:
    for group in item["tags"]:
        if group["descriptor"]["code"] == code:
            return {t["descriptor"]["code"]: t["value"] for t in group["list"]}
    raise AssertionError(f"no {code} tag group in {item['id']}")


pytestmark = pytest.mark.django_db


def test_it_ranks_chargers_along_a_route_by_detour(corridor: Partner) -> None:
    hits = search(search_filters(route_message()))
    assert [h.evse.location.location_id for h in hits] == ["ON", "AC", "SIDE"]  # OFF: 17 km detour > 10 km
    detours = [h.placement.detour_m for h in hits if h.placement]
    assert detours == sorted(detours) and detours[0] < 1
    assert detours[2] == pytest.approx(2 * haversine_m(15.1, 75.0, 15.1, 75.02), rel=1e-3)
    wider = search(search_filters(route_message(_tag("max-detour", "20km"))))
    assert [h.evse.location.location_id for h in wider] == ["ON", "AC", "SIDE", "OFF"]
    narrow = search(search_filters(route_message(_tag("max-detour-m", "1500"))))
    assert [h.evse.location.location_id for h in narrow] == ["ON", "AC"]


def test_ordered_stops_make_the_same_route_as_the_polyline(corridor: Partner) -> None:
    by_stops = search(search_filters(route_message(stops=True)))
    assert [h.evse.location.location_id for h in by_stops] == ["ON", "AC", "SIDE"]
    on = by_stops[0].placement
    assert on is not None and on.along_m == pytest.approx(haversine_m(*START, 15.3, 75.0), rel=1e-3)


@pytest.mark.parametrize(
    ("sockets", "expected"),
    [("CCS2", ["ON", "SIDE"]), ("Type2", ["AC"]), ("CCS2,Type 2", ["ON", "AC", "SIDE"]), ("CHAdeMO", [])],
)
def test_it_leaves_out_connectors_the_car_cannot_take(corridor: Partner, sockets: str, expected: list[str]) -> None:
    hits = search(search_filters(route_message(_tag("connector-types", sockets))))
    assert [h.evse.location.location_id for h in hits] == expected


def test_a_connector_type_filter_and_the_cars_sockets_both_hold(corridor: Partner) -> None:
    message = route_message(_tag("connector-types", "Type2"), _tag("connector-type", "CCS2"))
    assert search(search_filters(message)) == []


def test_the_estimate_for_a_stated_energy_is_what_a_quote_for_it_costs(corridor: Partner) -> None:
    hits = search(search_filters(route_message(_tag("energy-kwh", "30"))))
    assert hits
    for hit in hits:
        assert hit.estimate is not None
        quote = quote_charge(
            evse=hit.evse, connector=hit.connector, arrival=hit.estimate.arrival, energy_kwh=Decimal("30")
        )
        assert hit.estimate.total_incl_vat == quote.total_incl_vat
        assert hit.estimate.currency == quote.currency == "INR"
        power = Decimal(hit.connector.max_electric_power) / 1000
        assert abs(hit.estimate.duration - timedelta(hours=float(Decimal(30) / power))) <= timedelta(microseconds=1)
    # the arrival: now plus the drive along the route at 70 km/h
    side = hits[2]
    assert side.placement is not None and side.estimate is not None
    drive = timedelta(hours=(side.placement.along_m + side.placement.off_route_m) / 70_000)
    assert abs(side.estimate.arrival - (timezone.now() + drive)) < timedelta(seconds=30)


def test_the_estimate_follows_the_cars_charge_curve_and_power(corridor: Partner) -> None:
    message = route_message(
        _tag("battery-kwh", "60 kWh"), _tag("soc-now", "50%"), _tag("soc-target", "0.9"), _tag("max-dc-kw", "50"),
        _tag("max-ac-kw", "7"),
    )  # fmt: skip
    hits = {h.evse.location.location_id: h for h in search(search_filters(message))}
    terms = PartnerTerms.objects.get(partner=corridor)
    # DC: 50 kW (the car's limit under the connector's 60), 18 kWh to 80 %, then 6 kWh tapering to 30 kW.
    on = hits["ON"]
    assert on.estimate is not None
    assert on.estimate.energy_kwh == Decimal("24.000") and on.estimate.power_kw == Decimal("50")
    bulk = timedelta(minutes=21, seconds=36)
    taper = timedelta(microseconds=math.ceil(0.3 * math.log(50 / 30) * 3600 * 1_000_000))
    assert on.estimate.duration == bulk + taper
    at = on.estimate.arrival
    expected = pricing.price_periods(
        pricing.parse_tariff(FULL_TARIFF),
        [
            pricing.ChargingPeriod(
                at, at + bulk, energy=Decimal(18), time=bulk, max_power=Decimal(50), min_power=Decimal(50)
            ),
            pricing.ChargingPeriod(
                at + bulk,
                at + bulk + taper,
                energy=Decimal(6),
                time=taper,
                max_power=Decimal(50),
                min_power=Decimal(30),
            ),
        ],
        time_zone="Asia/Kolkata",
        session_start=at,
        session_end=at + bulk + taper,
    )
    assert expected.total_cost.incl_vat is not None and expected.total_cost.excl_vat is not None
    fee = emsp_fee(terms, expected.total_cost.excl_vat, "INR")
    assert on.estimate.total_incl_vat == driver_total(expected.total_cost.incl_vat, fee, "INR", terms.rounding)
    # AC: the car's 7 kW on-board charger, constant: the engine's quote at 7 kW
    ac = hits["AC"]
    assert ac.estimate is not None and ac.estimate.power_kw == Decimal("7")
    quoted = pricing.quote(
        FULL_TARIFF, start=ac.estimate.arrival, time_zone="Asia/Kolkata", power_kw=Decimal(7), energy_kwh=Decimal(24)
    )
    assert quoted.total_cost.incl_vat is not None and quoted.total_cost.excl_vat is not None
    fee = emsp_fee(terms, quoted.total_cost.excl_vat, "INR")
    assert ac.estimate.total_incl_vat == driver_total(quoted.total_cost.incl_vat, fee, "INR", terms.rounding)
    assert abs(ac.estimate.duration - timedelta(hours=float(Decimal(24) / 7))) <= timedelta(microseconds=1)


def test_a_point_search_with_an_energy_carries_estimates_too(network: Partner) -> None:
    filters = search_filters(
        {
            "intent": {
                "item": {"quantity": {"selected": {"measure": {"unit": "kWh", "value": "12"}}}},
                "fulfillment": {"stops": [{"location": {"gps": "12.9716,77.5946"}}]},
            }
        }
    )
    hits = search(filters)
    assert hits and all(h.estimate is not None and h.placement is None for h in hits)
    hit = hits[0]
    assert hit.estimate is not None
    quote = quote_charge(evse=hit.evse, connector=hit.connector, arrival=hit.estimate.arrival, energy_kwh=Decimal(12))
    assert hit.estimate.total_incl_vat == quote.total_incl_vat


def test_without_energy_or_battery_there_is_no_estimate(corridor: Partner) -> None:
    hits = search(search_filters(route_message(_tag("connector-types", "CCS2"), _tag("battery-kwh", "60"))))
    assert hits and all(h.estimate is None for h in hits)


@pytest.mark.parametrize(
    ("message", "path"),
    [
        (
            {"intent": {"fulfillment": {"tags": [{"list": [_tag("route-polyline", "_p~iF~ps|U_")]}]}}},
            "message.intent.tags(route-polyline)",
        ),
        ({"intent": {"fulfillment": {"path": "not a polyline at all"}}}, "message.intent.fulfillment.path"),
        (route_message(_tag("soc-now", "140%")), "message.intent.tags(soc-now)"),
        (route_message(_tag("soc-now", "80"), _tag("soc-target", "20")), "message.intent.tags(soc-target)"),
        (route_message(_tag("battery-kwh", "-3")), "message.intent.tags(battery-kwh)"),
        (route_message(_tag("battery-kwh", "1e9")), "message.intent.tags(battery-kwh)"),
        (route_message(_tag("max-detour", "far")), "message.intent.tags(max-detour)"),
        (route_message(_tag("energy-kwh", "5000")), "message.intent.tags(energy-kwh)"),
        (route_message(vehicle={"battery_kwh": "lots"}), "message.intent.fulfillment.vehicle.battery-kwh"),
        (
            {"intent": {"fulfillment": {"stops": [{"location": {"gps": "15,75"}}, {"location": {"gps": "95,75"}}]}}},
            "message.intent.fulfillment.stops[1].location.gps",
        ),
    ],
)
def test_hostile_route_and_vehicle_input_is_an_invalid_request(bap: Any, message: dict[str, Any], path: str) -> None:
    response = bap("search", message)
    assert response.status_code == 200
    body = last(bap, "on_search")
    assert body["error"]["code"] == "30000"
    assert body["error"]["paths"] == path


def test_a_signed_search_along_a_route_answers_a_valid_catalogue_with_estimates(bap: Any, corridor: Partner) -> None:
    vehicle = {"category": "CAR", "energy_type": "ELECTRIC", "make": "Hyundai", "model": "Ioniq 5"}
    message = route_message(
        _tag("connector-types", "CCS2"), _tag("battery-kwh", "72.6"), _tag("soc-now", "20"), _tag("soc-target", "80"),
        _tag("max-dc-kw", "220"), _tag("max-detour", "10 km"), vehicle=vehicle,
    )  # fmt: skip
    bap("search", message)
    body = last(bap, "on_search")  # validated against the core 1.1.0 OpenAPI
    items = _items(body)
    assert [i["id"].split("/")[0] for i in items] == ["ON", "SIDE"]
    estimate = _group(items[0], "estimate")
    assert int(estimate["detour-m"]) < 1
    assert estimate["estimated-energy-kwh"] == "43.56"
    assert estimate["charging-power-kw"] == "60"
    assert estimate["estimated-duration"].startswith("PT")
    assert estimate["currency"] == "INR"
    evse = Evse.objects.get(location__location_id="ON")
    connector = Connector.objects.get(evse=evse)
    arrival = parse_utc(estimate["estimated-arrival"])
    # 20 % → 80 %: all below the taper, so a constant 60 kW: exactly a quote for that energy.
    quote = quote_charge(evse=evse, connector=connector, arrival=arrival, energy_kwh=Decimal("43.560"))
    assert Decimal(estimate["estimated-cost"]) == quote.total_incl_vat
    assert int(_group(items[1], "estimate")["detour-m"]) > 4000


def test_the_vehicle_object_may_carry_the_same_keys(corridor: Partner) -> None:
    vehicle = {"category": "CAR", "connector_types": ["Type 2"], "battery_kwh": 40, "soc_now": "0.25", "max_ac_kw": 7.4}
    hits = search(search_filters(route_message(vehicle=vehicle)))
    assert [h.evse.location.location_id for h in hits] == ["AC"]
    estimate = hits[0].estimate
    assert estimate is not None and estimate.power_kw == Decimal("7.4")
    assert estimate.energy_kwh == Decimal("22.000")  # 40 kWh × (80 % − 25 %)
