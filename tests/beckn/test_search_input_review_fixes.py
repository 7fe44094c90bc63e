"""Review fixes of search and select input: hostile tag values are an error naming the tag, never a failed
message and a "please retry" (limit "²", a power of 400 nines, a NaN price ceiling, a NUL in a connector
type); a booking window without a time zone, or a bare date, is refused instead of being taken as UTC; a
route across the antimeridian is searched the short way; and a charge estimate at a RESERVABLE EVSE prices
the reservation its quote prices."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from beckn.catalogue import MAX_LIMIT, SearchFilters, search
from beckn.models import BecknMessage
from beckn.parsing import fulfillment_window, search_filters
from billing.services import tariff_put
from billing.services.driver_pricing import connector_power_kw, partner_terms, quote_charge, tariffs_for_connector
from billing.services.estimates import charge_estimate
from emsp.geo import Route, haversine_m
from emsp.models import Connector, Evse, Partner
from emsp.services.catalogue import locations_store
from emsp.vehicles import charge_plan
from tests.beckn.test_actions import last, search_message
from tests.beckn.test_booking_windows import NEAR_1, select_window
from tests.factories import ocpi_location

pytestmark = pytest.mark.django_db


def _no_failures() -> None:
    assert not BecknMessage.objects.filter(status=BecknMessage.Status.FAILED).exists()


# --- 1. hostile search tags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value"),
    [
        ("limit", "²"),  # str.isdigit() takes it, int() doesn't
        ("limit", "١٢"),  # Arabic-Indic digits: int() reads them, but a limit is ASCII
        ("limit", "ten"),
        ("power-rating", "9" * 400),  # a float infinity, which int() refuses
        ("power-rating", "20000 kW"),  # 20 MW: no charger, and past any column
        ("max-price", "NaN"),
        ("max-price", "sNaN"),
        ("max-price", "Infinity"),
        ("max-price", "-1"),
        ("connector-type", "CCS2\x00"),  # PostgreSQL refuses a NUL in a text parameter
        ("connector-type", "CCS2,Type\x1b2"),
        ("connector-type", ",".join(f"TYPE{i}" for i in range(65))),  # as many query parameters
    ],
)
def test_a_hostile_search_tag_is_an_error_naming_it_not_a_failure(bap: Any, code: str, value: str) -> None:
    message = search_message()
    message["intent"]["item"] = {"tags": [{"descriptor": {"code": code}, "value": value}]}
    response = bap("search", message)
    assert response.status_code == 200
    error = last(bap, "on_search")["error"]
    assert error["code"] == "30000"
    assert error["paths"] == f"message.intent.tags({code})"
    _no_failures()


@pytest.mark.parametrize("ceiling", ["NaN", "sNaN", "-Infinity", "-0.5"])
def test_an_item_price_ceiling_that_is_no_price_is_an_error(bap: Any, ceiling: str) -> None:
    message = search_message()
    message["intent"]["item"] = {"price": {"maximum_value": ceiling}}
    bap("search", message)
    error = last(bap, "on_search")["error"]
    assert (error["code"], error["paths"]) == ("30000", "message.intent.item.price.maximum_value")
    _no_failures()


def test_a_radius_that_is_no_number_is_an_error(bap: Any) -> None:
    message = search_message()
    message["intent"]["fulfillment"]["stops"][0]["location"]["circle"]["radius"]["value"] = "Infinity"
    bap("search", message)
    error = last(bap, "on_search")["error"]
    assert error["paths"] == "message.intent.fulfillment.stops[0].location.circle.radius.value"
    _no_failures()


def test_good_values_of_the_same_tags_still_filter() -> None:
    def filters(code: str, value: str) -> SearchFilters:
        return search_filters({"intent": {"item": {"tags": [{"descriptor": {"code": code}, "value": value}]}}})

    assert filters("limit", "3").limit == 3
    assert filters("limit", "0").limit == 1
    assert filters("limit", "9" * 5000).limit == MAX_LIMIT  # more digits than int() reads: the most we give
    assert filters("limit", "0000000000000004").limit == 4
    assert filters("power-rating", "7.4kW").min_power_w == 7400
    assert filters("power-rating", "7400 W").min_power_w == 7400
    assert filters("power-rating", "10000kW").min_power_w == 10_000_000
    assert filters("max-price", "12.50 INR").max_price == Decimal("12.50")
    assert filters("max-price", "0").max_price == Decimal(0)
    assert filters("connector-type", "CCS2, Type2").connector_types == {"IEC_62196_T2_COMBO", "IEC_62196_T2"}


def test_a_ttl_of_more_digits_than_a_number_may_have_is_refused_at_the_ack(bap: Any) -> None:
    """int() refuses over 4,300 digits with a ValueError, which had failed the ACK (a 500)."""
    response = bap("search", search_message(), ttl="P" + "9" * 5000 + "D")
    assert response.status_code == 400
    assert response.json()["error"]["paths"] == "context.ttl"


# --- 2. booking windows: RFC 3339 with an offset ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("time", "field"),
    [
        ({"range": {"start": "2026-12-10T19:30:00", "end": "2026-12-10T20:30:00Z"}}, "range.start"),
        ({"range": {"start": "2026-12-10T19:30:00Z", "end": "2026-12-10T20:30:00"}}, "range.end"),
        ({"range": {"start": "2026-12-10", "end": "2026-12-10T20:30:00Z"}}, "range.start"),
        ({"range": {"start": "2026-12-10 19:30", "end": "2026-12-10T20:30:00+05:30"}}, "range.start"),
        ({"timestamp": "2026-12-10T19:30:00", "duration": "PT1H"}, "timestamp"),
        ({"timestamp": "2026-12-10", "duration": "PT1H"}, "timestamp"),
    ],
)
def test_a_booking_window_without_a_time_zone_is_refused_naming_the_field(
    bap: Any, time: dict[str, Any], field: str
) -> None:
    """RFC 3339 requires the offset: "19:30" without one was booked as 19:30 UTC, hours off the driver's."""
    body = select_window(bap, NEAR_1, time)
    assert body["error"]["code"] == "30000"
    assert body["error"]["paths"] == f"message.order.fulfillments[0].stops[0].time.{field}"
    assert "time zone" in body["error"]["message"] or "bare date" in body["error"]["message"]
    _no_failures()


def test_a_search_window_without_a_time_zone_is_refused_too(bap: Any) -> None:
    message = search_message()
    message["intent"]["fulfillment"]["stops"][0]["time"] = {
        "range": {"start": "2026-12-10T19:30:00", "end": "2026-12-10T20:30:00"}
    }
    bap("search", message)
    error = last(bap, "on_search")["error"]
    assert (error["code"], error["paths"]) == ("30000", "message.intent.fulfillment.stops[0].time.range.start")
    _no_failures()


def test_a_window_with_its_offset_is_read_in_utc() -> None:
    start = (timezone.now() + timedelta(days=1)).replace(microsecond=0)
    india = timezone.get_fixed_timezone(330)
    texts = {
        "Z": (start.strftime("%Y-%m-%dT%H:%M:%SZ"), (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%Sz")),
        "+05:30": (start.astimezone(india).isoformat(), (start + timedelta(hours=1)).astimezone(india).isoformat()),
        "+0530": (
            start.astimezone(india).strftime("%Y-%m-%dT%H:%M:%S+0530"),
            (start + timedelta(hours=1)).astimezone(india).strftime("%Y-%m-%dT%H:%M:%S+0530"),
        ),
    }
    for begin, end in texts.values():
        window = fulfillment_window({"stops": [{"time": {"range": {"start": begin, "end": end}}}]}, "f")
        assert window == (start, start + timedelta(hours=1)), (begin, end)


# --- 3. routes across the antimeridian ---------------------------------------------------------------------------


def test_a_route_across_the_antimeridian_is_placed_the_short_way() -> None:
    route = Route.from_points([(-16.8, 179.95), (-16.8, -179.95)])
    assert route.length_m == pytest.approx(haversine_m(-16.8, 179.95, -16.8, -179.95), rel=1e-6)  # ~10.6 km
    on = route.place(-16.8, 179.999, 5_000)
    assert on is not None and on.off_route_m < 1
    assert on.along_m == pytest.approx(haversine_m(-16.8, 179.95, -16.8, 179.999), rel=1e-3)
    east = route.place(-16.79, -179.99, 5_000)  # 1.1 km north of the route, east of the antimeridian
    assert east is not None
    assert east.off_route_m == pytest.approx(haversine_m(-16.79, -179.99, -16.8, -179.99), rel=1e-3)
    assert route.place(-16.8, 0.0, 5_000) is None  # Greenwich is half the world away
    assert route.place(-16.8, -65.0, 5_000) is None
    boxes = route.boxes(5_000)
    assert all(-180 <= b[2] <= b[3] <= 180 for b in boxes)
    for lat, lon in ((-16.8, 179.999), (-16.79, -179.99), (-16.8, 180.0), (-16.8, -180.0)):
        assert any(b[0] <= lat <= b[1] and b[2] <= lon <= b[3] for b in boxes), (lat, lon)
    assert not any(b[2] <= 0.0 <= b[3] or b[2] <= -65.0 <= b[3] for b in boxes)


def test_a_route_that_ends_by_the_antimeridian_reaches_across_it() -> None:
    route = Route.from_points([(-16.9, 179.90), (-16.8, 179.99)])  # stops 1 km short of it
    across = route.place(-16.8, -179.995, 5_000)
    assert across is not None
    assert across.off_route_m == pytest.approx(haversine_m(-16.8, -179.995, -16.8, 179.99), rel=1e-2)
    assert any(b[2] == -180.0 and b[0] <= -16.8 <= b[1] and b[3] >= -179.995 for b in route.boxes(5_000))
    westward = Route.from_points([(-16.8, -179.95), (-16.8, 179.95)])  # the other way round
    assert westward.length_m == pytest.approx(haversine_m(-16.8, -179.95, -16.8, 179.95), rel=1e-6)
    assert westward.place(-16.8, 179.999, 5_000) is not None


def test_a_route_away_from_the_antimeridian_is_placed_as_before() -> None:
    route = Route.from_points([(15.0, 75.0), (15.5, 75.0)])
    assert route.points == [(15.0, 75.0), (15.5, 75.0)]
    placement = route.place(15.1, 75.02, 5_000)
    assert placement is not None
    assert placement.off_route_m == pytest.approx(haversine_m(15.1, 75.0, 15.1, 75.02), rel=1e-3)
    assert route.place(15.1, 75.1, 5_000) is None  # 10.7 km off
    assert route.boxes(5_000) == [pytest.approx(b) for b in route.boxes(5_000)] and all(
        74 < b[2] < b[3] < 76 for b in route.boxes(5_000)
    )


def test_a_search_along_a_route_across_the_antimeridian_finds_what_is_on_it(network: Partner) -> None:
    locations_store(
        network,
        [
            ocpi_location("IN", "CPA", "ONROUTE", evses=1, latitude=-16.8, longitude=179.999),
            ocpi_location("IN", "CPA", "BOLIVIA", evses=1, latitude=-16.8, longitude=-65.0),
            ocpi_location("IN", "CPA", "GREENWICH", evses=1, latitude=-16.8, longitude=0.0),
        ],
    )
    route = Route.from_points([(-16.8, 179.95), (-16.8, -179.95)])
    hits = search(SearchFilters(route=route, max_detour_m=10_000))
    assert [h.evse.location.location_id for h in hits] == ["ONROUTE"]
    assert hits[0].placement is not None and hits[0].placement.detour_m < 2


# --- 4. a charge estimate prices the reservation as its quote does -----------------------------------------------

RESERVATION_TARIFF = {
    "country_code": "IN",
    "party_id": "CPA",
    "id": "TRES",
    "currency": "INR",
    "elements": [
        {
            "price_components": [{"type": "TIME", "price": 60, "vat": 18, "step_size": 60}],
            "restrictions": {"reservation": "RESERVATION"},
        },
        {"price_components": [{"type": "ENERGY", "price": 18, "vat": 18, "step_size": 1}]},
    ],
    "last_updated": "2026-02-01T00:00:00Z",
}


@pytest.fixture
def reservable(network: Partner) -> Partner:
    """RES (RESERVABLE) and WALKUP (not), each one DC CCS2 60 kW EVSE on a tariff that prices a reservation."""
    tariff_put(network, RESERVATION_TARIFF)
    walk_up = ocpi_location("IN", "CPA", "WALKUP", evses=1, latitude=-10.0, longitude=20.0, tariff_ids=["TRES"])
    walk_up["evses"][0]["capabilities"] = ["REMOTE_START_STOP_CAPABLE"]  # type: ignore[index]
    res = ocpi_location("IN", "CPA", "RES", evses=1, latitude=-10.0, longitude=20.1, tariff_ids=["TRES"])
    locations_store(network, [res, walk_up])
    return network


def _estimate_and_quote(location_id: str, **plan: Any) -> tuple[Any, Any, Any]:
    evse = Evse.objects.select_related("location__partner").get(location__location_id=location_id)
    connector = Connector.objects.get(evse=evse)
    arrival = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    tariff = tariffs_for_connector(connector, arrival)[0]
    assert tariff.tariff_id == "TRES"
    kwargs = {
        "plan": charge_plan(
            energy_kwh=Decimal("10"),
            power_kw=connector_power_kw(connector),
            power_type=connector.power_type,
            battery_kwh=plan.get("battery_kwh"),
            soc_start=plan.get("soc_start"),
        ),
        "arrival": arrival,
        "tariff": tariff,
        "time_zone": evse.location.time_zone,
        "terms": partner_terms(evse.location.partner),
    }
    with_evse = charge_estimate(**kwargs, evse=evse)
    without = charge_estimate(**kwargs)
    quote = quote_charge(evse=evse, connector=connector, arrival=arrival, energy_kwh=Decimal("10"))
    return with_evse, without, quote


def test_the_estimate_at_a_reservable_evse_is_what_its_quote_costs_reservation_included(reservable: Partner) -> None:
    estimate, without, quote = _estimate_and_quote("RES")
    assert without.total_incl_vat is not None and quote.total_incl_vat is not None
    assert quote.total_incl_vat - without.total_incl_vat > Decimal("35")  # what a search had shown: too little
    reserved = [line for line in quote.breakdown["lines"] if line["type"] == "RESERVATION_TIME"]
    assert reserved and reserved[0]["price_incl_vat"] == "35.40"  # 30 min lead at 60/h, 18 % VAT
    assert estimate.total_incl_vat == quote.total_incl_vat
    assert estimate.total_excl_vat == quote.cpo_cost_excl_vat + quote.fee_excl_vat


def test_a_walk_up_evse_has_no_reservation_to_price(reservable: Partner) -> None:
    estimate, without, quote = _estimate_and_quote("WALKUP")
    assert estimate.total_incl_vat == without.total_incl_vat == quote.total_incl_vat


def test_a_tapering_dc_estimate_prices_the_reservation_too(reservable: Partner) -> None:
    estimate, without, _ = _estimate_and_quote("RES", battery_kwh=Decimal("60"), soc_start=Decimal("0.75"))
    assert estimate.total_excl_vat is not None and without.total_excl_vat is not None
    # 30 INR of reservation excl. VAT, and our 2 % on it
    assert estimate.total_excl_vat - without.total_excl_vat == Decimal("30.60")


def test_a_route_more_than_a_turn_of_longitude_round_is_placed_on_each_turn() -> None:
    lons = [-170.0 + 10 * i for i in range(41)]  # 400° east, zig-zagging about 84° N: about 4,700 km
    points = [(84.0 + 0.3 * (i % 2), lon - 360.0 if lon > 180 else lon) for i, lon in enumerate(lons)]
    route = Route.from_points(points)
    assert len(route.points) == 41 and route.points[-1][1] == pytest.approx(230.0)
    assert route.length_m > 4_000_000
    boxes = route.boxes(5_000)
    assert all(-180 <= b[2] <= b[3] <= 180 for b in boxes)
    assert any(b[2] <= -165.0 <= b[3] and b[0] <= 84.15 <= b[1] for b in boxes)
    on = route.place(84.15, -165.0, 5_000)  # on the first segment, and on the 37th: the same place a turn on
    assert on is not None and on.off_route_m < 1
    assert route.place(84.15, 105.0, 5_000) is not None


def test_a_search_for_a_window_estimates_the_reservation_its_select_quotes(reservable: Partner) -> None:
    start = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    filters = SearchFilters(
        latitude=-10.0,
        longitude=20.1,
        radius_m=20_000,
        energy_kwh=Decimal("10"),
        window=(start, start + timedelta(hours=1)),
    )
    hits = {h.evse.location.location_id: h for h in search(filters)}
    for location_id in ("RES", "WALKUP"):
        hit = hits[location_id]
        quote = quote_charge(evse=hit.evse, connector=hit.connector, arrival=start, energy_kwh=Decimal("10"))
        assert hit.estimate is not None and hit.estimate.total_incl_vat == quote.total_incl_vat, location_id
    # Without a window the driver walks up: nothing reserved, nothing priced for it.
    walk_up = {
        h.evse.location.location_id: h
        for h in search(SearchFilters(latitude=-10.0, longitude=20.1, radius_m=20_000, energy_kwh=Decimal("10")))
    }
    without = walk_up["RES"].estimate
    assert without is not None and without.total_incl_vat is not None
    assert hits["RES"].estimate.total_incl_vat - without.total_incl_vat > Decimal("35")
