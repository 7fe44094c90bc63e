"""Review findings on the Beckn catalogue, each on PostgreSQL's plain-SQL path and the ORM path (SQLite's
bounding box, or the GiST index with the fast path off): a moved location takes its EVSEs along; suspended or
unregistered partners', withdrawn and unpublished locations' chargers are neither listed nor selectable, nor take
the places of visible ones among the candidates; the price shown is the tariff element's that applies at the
search instant (and find_item's at the instant asked); the bounding box is wide enough at high latitudes."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from beckn import catalogue, catalogue_rows
from beckn.catalogue import EARTH_RADIUS_M, SearchFilters, find_item, haversine_m, render_catalog, search
from billing import pricing
from billing.models import Tariff
from billing.services import tariff_put
from emsp.models import Location, Partner
from emsp.services.catalogue import location_patch, locations_store
from tests.beckn.bap import TARIFF
from tests.beckn.test_actions import item_of, last, search_message, select
from tests.factories import ocpi_location

FAST_AND_ORM = pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "orm"])
KOLKATA = ZoneInfo("Asia/Kolkata")


@pytest.fixture
def path(monkeypatch: pytest.MonkeyPatch, fast_path: bool) -> bool:
    monkeypatch.setattr(catalogue, "FAST_PATH", fast_path)
    return fast_path


def located(hits: list[catalogue.Hit]) -> list[str]:
    return [hit.evse.location.location_id for hit in hits]


def tags_of(item: dict[str, Any], group: str) -> dict[str, str]:
    (found,) = [g for g in item["tags"] if g["descriptor"]["code"] == group]
    return {tag["descriptor"]["code"]: tag["value"] for tag in found["list"]}


# --- 1. a location moved by a PATCH takes its EVSEs along ----------------------------------------------------------


@pytest.mark.django_db
@FAST_AND_ORM
def test_a_location_moved_by_a_patch_takes_its_evses_without_coordinates_along(partner: Partner, path: bool) -> None:
    moved = ocpi_location("IN", "CPA", "MOVED", evses=2, latitude=12.97, longitude=77.59)
    own = {"latitude": "12.980000", "longitude": "77.600000"}
    moved["evses"][1]["coordinates"] = own  # type: ignore[index]  # E2 stands at its own place
    locations_store(partner, [moved])
    patch = {"coordinates": {"latitude": "13.400000", "longitude": "77.590000"}, "last_updated": "2026-02-01T00:00:00Z"}
    assert location_patch(Location.objects.get(), patch).applied

    there = search(SearchFilters(latitude=13.4, longitude=77.59, radius_m=1000))
    assert [hit.evse.uid for hit in there] == ["MOVED-E1"]
    (provider,) = render_catalog(there)["providers"]
    assert provider["locations"][0]["gps"] == "13.400000,77.590000"
    # At the old place only the EVSE with coordinates of its own is left.
    assert [hit.evse.uid for hit in search(SearchFilters(latitude=12.97, longitude=77.59, radius_m=2000))] == [
        "MOVED-E2"
    ]


# --- 2. and 3. what search can't show can't be selected either --------------------------------------------------


@pytest.mark.django_db
@FAST_AND_ORM
@pytest.mark.parametrize(
    "state",
    [Partner.State.SUSPENDED, Partner.State.UNREGISTERED, Partner.State.TOKEN_A_ISSUED, Partner.State.NEW],
)
def test_a_suspended_unregistered_or_reregistering_partners_chargers_are_neither_listed_nor_quoted(
    bap: Any, network: Partner, path: bool, state: str
) -> None:
    """A partner registering again (connected once, then unregistered; staff issued a new Token A, or we
    register with it again) is hidden as while it was unregistered, until it is connected."""
    item = item_of(bap)
    Partner.objects.filter(pk=network.pk).update(state=state, registered_at=timezone.now() - timedelta(days=30))
    bap("search", search_message())
    assert last(bap, "on_search")["message"]["catalog"]["providers"] == []
    assert select(bap, item)["error"]["code"] == "30004"
    assert find_item("IN*CPA", item) is None
    # Connected again: listed at the next search (nothing keeps the state between searches).
    Partner.objects.filter(pk=network.pk).update(state=Partner.State.CONNECTED)
    assert item_of(bap) == item
    assert "error" not in select(bap, item)


@pytest.mark.django_db
@FAST_AND_ORM
@pytest.mark.parametrize(
    "hidden", [{"publish": False}, {"withdrawn_at": timezone.now()}], ids=["unpublished", "withdrawn"]
)
def test_an_item_of_a_withdrawn_or_unpublished_location_is_not_found(
    bap: Any, network: Partner, path: bool, hidden: dict[str, Any]
) -> None:
    item = item_of(bap)
    assert item.startswith("NEAR/")
    Location.objects.filter(location_id="NEAR").update(**hidden)
    assert find_item("IN*CPA", item) is None
    assert find_item(None, item) is None
    assert select(bap, item)["error"]["code"] == "30004"


@pytest.mark.django_db
@FAST_AND_ORM
def test_a_partner_never_connected_is_listed(bap: Any, network: Partner, path: bool) -> None:
    """Staff created it and its data came by import: no earlier connection whose data went stale."""
    Partner.objects.filter(pk=network.pk).update(state=Partner.State.TOKEN_A_ISSUED, registered_at=None)
    assert item_of(bap).startswith("NEAR/")


# --- 4. hidden chargers take no candidate places -------------------------------------------------------------------


@pytest.mark.django_db
@FAST_AND_ORM
@pytest.mark.parametrize("hidden_by", ["unpublished", "withdrawn", "suspended"])
def test_hidden_chargers_at_the_searched_point_leave_room_for_visible_ones(
    partner: Partner, path: bool, hidden_by: str
) -> None:
    owner = partner
    if hidden_by == "suspended":
        owner = Partner.objects.create(name="Gone CPO", country_code="IN", party_id="GON", state="SUSPENDED")
    depot = ocpi_location(owner.country_code, owner.party_id, "DEPOT", evses=100, latitude=12.97, longitude=77.59)
    depot["publish"] = hidden_by != "unpublished"
    locations_store(owner, [depot])
    if hidden_by == "withdrawn":
        Location.objects.filter(location_id="DEPOT").update(withdrawn_at=timezone.now())
    north = 12.97 + math.degrees(560 / EARTH_RADIUS_M)  # 560 m away
    locations_store(partner, [ocpi_location("IN", "CPA", "PUBLIC", evses=1, latitude=north, longitude=77.59)])
    hits = search(SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000))
    assert located(hits) == ["PUBLIC"]
    assert round(hits[0].distance_m or 0) == 560


@pytest.mark.django_db
def test_hidden_and_visible_chargers_interleaved_come_alike_in_every_chunk(
    partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plain-SQL path reads its first chunk without the visibility check and again with it when a hidden EVSE
    took a place; later chunks always check. Chunk after chunk, it must answer what the ORM path answers."""
    locations = [
        ocpi_location(
            "IN", "CPA", f"L{i:03d}", evses=1 + i % 3, latitude=12.97 + i * 0.0003, longitude=77.59,
            tariff_ids=["CHEAP" if i % 3 else "DEAR"],
        )
        for i in range(60)
    ]  # fmt: skip
    for i, location in enumerate(locations):
        location["publish"] = i % 4 != 1  # every fourth hidden, from the second on
    locations_store(partner, locations)
    for tariff_id, price in (("CHEAP", 10), ("DEAR", 40)):  # a price ceiling, applied in Python: more chunks
        energy = {"type": "ENERGY", "price": price, "vat": 18, "step_size": 1}
        tariff_put(partner, {**TARIFF, "id": tariff_id, "elements": [{"price_components": [energy]}]})
    Location.objects.filter(location_id__in=["L010", "L011", "L030"]).update(withdrawn_at=timezone.now())
    monkeypatch.setattr(catalogue, "SEARCH_CHUNK_MIN", 1)
    for limit in (1, 2, 3, 5, 8, 13, 40):
        for latitude in (12.97, 12.9745):  # at a visible location, and at a hidden one
            filters = SearchFilters(
                latitude=latitude, longitude=77.59, radius_m=3000, limit=limit, max_price=Decimal("20")
            )
            answers = []
            for fast in (True, False):
                monkeypatch.setattr(catalogue, "FAST_PATH", fast)
                answers.append([h.evse.pk for h in search(filters)])
            assert answers[0] == answers[1], (limit, latitude)
            assert len(answers[0]) == limit


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_candidates_read_chunk_by_chunk_are_those_read_at_once(partner: Partner) -> None:
    """nearest_candidates' first chunk is read without the visibility check (and again with it when a hidden EVSE
    took a place), later ones with it: chunks of any size must add up to the visible candidates read at once."""
    locations = [
        ocpi_location("IN", "CPA", f"K{i:03d}", evses=1 + i % 3, latitude=12.97 + i * 0.0003, longitude=77.59)
        for i in range(40)
    ]
    for i, location in enumerate(locations):
        location["publish"] = i % 4 != 1
    locations_store(partner, locations)
    ask = {
        "latitude": 12.97, "longitude": 77.59, "radius_m": 3000, "now": timezone.now(), "window": None,
        "available_now": False, "min_power_w": None, "partner_ids": None, "connector_types": set(),
    }  # fmt: skip
    whole = [e.pk for e in catalogue_rows.nearest_candidates(**ask, offset=0, count=500)[0]]
    assert len(whole) == sum(1 + i % 3 for i in range(40) if i % 4 != 1)
    for size in (1, 2, 3, 7, 10):
        chunked: list[int] = []
        for offset in range(0, len(whole), size):
            chunked += [e.pk for e in catalogue_rows.nearest_candidates(**ask, offset=offset, count=size)[0]]
        assert chunked == whole, size


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_a_hidden_depot_at_the_point_costs_two_statements_not_its_whole_tie(partner: Partner) -> None:
    """The first chunk's fast read stops at the first hidden row, before reading on to the end of a tie (300
    hidden EVSEs at one point), and the exact read follows."""
    depot = ocpi_location("IN", "CPA", "DEPOT", evses=300, latitude=12.97, longitude=77.59)
    depot["publish"] = False
    north = 12.97 + math.degrees(560 / EARTH_RADIUS_M)
    locations_store(partner, [depot, ocpi_location("IN", "CPA", "PUBLIC", evses=1, latitude=north, longitude=77.59)])
    ask = {
        "latitude": 12.97, "longitude": 77.59, "radius_m": 5000, "now": timezone.now(), "window": None,
        "available_now": False, "min_power_w": None, "partner_ids": None, "connector_types": set(),
    }  # fmt: skip
    with CaptureQueriesContext(connection) as seen:
        evses = catalogue_rows.nearest_candidates(**ask, offset=0, count=20)[0]
    assert [e.location.location_id for e in evses] == ["PUBLIC"]
    assert len([q for q in seen.captured_queries if "WITH ranked" in q["sql"]]) == 2


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_the_candidates_statement_still_reads_the_knn_index_nearest_first(partner: Partner) -> None:
    """Visibility is checked inside `ranked`; its plan must still be the GiST KNN scan (ordered by the index, no
    sort of the whole box), each EVSE read checked through its location's primary key."""
    locations = [ocpi_location("IN", "CPA", f"L{i:03d}", evses=2, latitude=12.9 + i * 0.001, longitude=77.59)
                 for i in range(300)]  # fmt: skip
    for i, location in enumerate(locations):
        location["publish"] = i % 3 != 0
    locations_store(partner, locations)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE emsp_partner, emsp_location, emsp_evse")
    with CaptureQueriesContext(connection) as seen:
        assert search(SearchFilters(latitude=12.95, longitude=77.59, radius_m=5000))
    statement = next(q["sql"] for q in seen.captured_queries if "WITH ranked AS" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + statement)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using evse_nearest on emsp_evse" in plan, plan
    assert "Order By: (cube(" in plan, plan
    assert "emsp_location_pkey" in plan, plan


# --- 5. and 6. the price of the element that applies ---------------------------------------------------------------

ENERGY_BY_NIGHT = {
    **TARIFF,
    "elements": [
        {
            "price_components": [{"type": "ENERGY", "price": 10, "vat": 18, "step_size": 1}],
            "restrictions": {"start_time": "00:00", "end_time": "06:00"},
        },
        {"price_components": [{"type": "ENERGY", "price": 20, "vat": 18, "step_size": 1}]},
        {"price_components": [{"type": "FLAT", "price": 20, "vat": 18, "step_size": 1}]},
    ],
}


@pytest.mark.django_db
@FAST_AND_ORM
def test_the_price_shown_is_the_elements_that_applies_at_the_search_instant_in_the_locations_zone(
    partner: Partner, path: bool
) -> None:
    locations_store(partner, [ocpi_location("IN", "CPA", "TOD", evses=1, latitude=12.97, longitude=77.59)])
    tariff_put(partner, ENERGY_BY_NIGHT)
    here = SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000)
    noon = datetime(2026, 3, 2, 12, 0, tzinfo=KOLKATA)
    night = datetime(2026, 3, 3, 3, 0, tzinfo=KOLKATA)  # 21:30 UTC the day before: the zone counts
    for at, rate in ((noon, "20"), (night, "10")):
        hits = search(here, now=at)
        assert [hit.energy_price for hit in hits] == [Decimal(rate)]
        (item,) = render_catalog(hits, now=at)["providers"][0]["items"]
        assert item["price"] == {"currency": "INR", "value": rate}
        assert tags_of(item, "tariff")["energy-rate"] == rate
        # What the engine charges a charge starting then: 1 kWh and the session fee.
        charged = pricing.quote(ENERGY_BY_NIGHT, start=at, time_zone="Asia/Kolkata", power_kw=Decimal(60),
                                energy_kwh=Decimal(1)).total_cost.excl_vat  # fmt: skip
        assert charged == Decimal(rate) + 20
    # A window asked for: the rate when it opens.
    window = SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000, window=(night, night + timedelta(hours=1)))
    assert [hit.energy_price for hit in search(window, now=noon - timedelta(days=1))] == [Decimal("10")]


def test_restrictions_on_the_charge_are_read_at_its_start() -> None:
    """min_kwh does not hold yet when a charge starts; max_power holds for a connector below it; min_current
    can't be shown to hold (the engine does not apply it either)."""
    tariff = Tariff(
        data={
            **TARIFF,
            "elements": [
                {"price_components": [{"type": "ENERGY", "price": 5, "step_size": 1}], "restrictions": {"min_kwh": 10}},
                {
                    "price_components": [{"type": "ENERGY", "price": 6, "step_size": 1}],
                    "restrictions": {"min_current": 1},
                },
                {
                    "price_components": [{"type": "ENERGY", "price": 7, "step_size": 1}],
                    "restrictions": {"max_power": 22},
                },
                {"price_components": [{"type": "ENERGY", "price": 9, "step_size": 1}]},
            ],
        }
    )
    at = datetime(2026, 3, 2, 12, 0, tzinfo=KOLKATA)
    for power_w, rate in ((60_000, "9"), (11_000, "7"), (None, "7")):  # unknown power: as quotes, 7.4 kW
        assert catalogue.energy_rate(tariff, at, "Asia/Kolkata", power_w) == Decimal(rate)
        power_kw = Decimal(power_w or 7_400) / 1000
        quoted = pricing.quote(
            tariff.data, start=at, time_zone="Asia/Kolkata", power_kw=power_kw, energy_kwh=Decimal(1)
        )
        assert quoted.total_cost.excl_vat == Decimal(rate)


def test_a_fee_that_starts_later_in_the_charge_is_still_shown() -> None:
    """Energy, and parking at 6 an hour after two hours (an idle fee), or energy after a first free kWh: the
    catalogue shows the rate the driver meets, not nothing because it does not apply in the first second."""
    tariff = Tariff(
        data={
            **TARIFF,
            "elements": [
                {"price_components": [{"type": "ENERGY", "price": 0.3, "step_size": 1}]},
                {
                    "price_components": [{"type": "PARKING_TIME", "price": 6, "step_size": 60}],
                    "restrictions": {"min_duration": 7200},
                },
            ],
        }
    )
    at = datetime(2026, 3, 2, 12, 0, tzinfo=KOLKATA)
    rates = catalogue.headline_rates(tariff, at, "Asia/Kolkata", 22_000)
    assert rates == {"ENERGY": Decimal("0.3"), "PARKING_TIME": Decimal("6")}
    free_first = Tariff(
        data={
            **TARIFF,
            "elements": [
                {"price_components": [{"type": "ENERGY", "price": 0.4, "step_size": 1}], "restrictions": {"min_kwh": 1}}
            ],
        }
    )
    assert catalogue.energy_rate(free_first, at, "Asia/Kolkata", 22_000) == Decimal("0.4")
    # Two later fees: the one the driver meets first (after one hour), whatever their order in the list.
    two_fees = Tariff(
        data={
            **TARIFF,
            "elements": [
                {"price_components": [{"type": "ENERGY", "price": 0.3, "step_size": 1}]},
                {
                    "price_components": [{"type": "TIME", "price": 1, "step_size": 60}],
                    "restrictions": {"min_duration": 7200},
                },
                {
                    "price_components": [{"type": "TIME", "price": 5, "step_size": 60}],
                    "restrictions": {"min_duration": 3600},
                },
            ],
        }
    )
    assert catalogue.headline_rates(two_fees, at, "Asia/Kolkata", 22_000)["TIME"] == Decimal("5")
    # A later element whose other restrictions don't hold at that instant is not shown.
    night_only = Tariff(
        data={
            **TARIFF,
            "elements": [
                {"price_components": [{"type": "ENERGY", "price": 0.3, "step_size": 1}]},
                {
                    "price_components": [{"type": "PARKING_TIME", "price": 6, "step_size": 60}],
                    "restrictions": {"min_duration": 7200, "start_time": "22:00", "end_time": "06:00"},
                },
            ],
        }
    )
    assert "PARKING_TIME" not in catalogue.headline_rates(night_only, at, "Asia/Kolkata", 22_000)


@pytest.mark.django_db
@FAST_AND_ORM
def test_find_item_prices_the_item_at_the_instant_asked(partner: Partner, path: bool) -> None:
    location = ocpi_location("IN", "CPA", "WIN", evses=1, latitude=12.97, longitude=77.59, tariff_ids=["T1", "T2"])
    locations_store(partner, [location])
    switch = timezone.now().replace(microsecond=0) + timedelta(hours=2)
    energy = {"type": "ENERGY", "vat": 18, "step_size": 1}
    tariff_put(partner, {**TARIFF, "id": "T1", "elements": [{"price_components": [{**energy, "price": 18}]}],
                         "end_date_time": switch.isoformat()})  # fmt: skip
    tariff_put(partner, {**TARIFF, "id": "T2", "elements": [{"price_components": [{**energy, "price": 30}]}],
                         "start_date_time": switch.isoformat()})  # fmt: skip
    item = "WIN/WIN-E1/1"
    now = find_item("IN*CPA", item)
    assert now is not None and now.tariff is not None
    assert (now.tariff.tariff_id, now.energy_price) == ("T1", Decimal("18"))
    later = find_item("IN*CPA", item, at=switch + timedelta(hours=1))
    assert later is not None and later.tariff is not None
    assert (later.tariff.tariff_id, later.energy_price) == ("T2", Decimal("30"))
    assert tags_of({"tags": catalogue.item_tags(later, timezone.now())}, "tariff")["energy-rate"] == "30"
    # As search shows it for a window opening then.
    window = (switch + timedelta(hours=1), switch + timedelta(hours=2))
    (shown,) = search(SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000, window=window))
    assert (shown.tariff and shown.tariff.tariff_id, shown.energy_price) == ("T2", Decimal("30"))


# --- 7. the bounding box at high latitudes -------------------------------------------------------------------------


def eastern_extreme(latitude: float, longitude: float, distance_m: float) -> tuple[float, float]:
    """The easternmost point of the circle of `distance_m` about the point (spherical trigonometry)."""
    angle = distance_m / EARTH_RADIUS_M
    phi = math.radians(latitude)
    return (
        math.degrees(math.asin(math.sin(phi) / math.cos(angle))),
        longitude + math.degrees(math.asin(math.sin(angle) / math.cos(phi))),
    )


@pytest.mark.parametrize("latitude", [85.0, 89.5])
def test_the_bounding_box_holds_the_circles_eastern_and_western_extremes(latitude: float) -> None:
    lat, lon = eastern_extreme(latitude, 20.0, 49_975)
    assert haversine_m(latitude, 20.0, lat, lon) == pytest.approx(49_975, abs=0.01)
    min_lat, max_lat, min_lon, max_lon = catalogue._bounding_box(latitude, 20.0, 50_000)
    assert min_lat <= lat <= max_lat
    assert min_lon <= 20.0 - (lon - 20.0) and lon <= max_lon


@pytest.mark.django_db
@pytest.mark.parametrize("latitude", [85.0, 89.5])
def test_a_charger_at_the_circles_eastern_extreme_is_found_with_the_fast_path_off(
    monkeypatch: pytest.MonkeyPatch, partner: Partner, latitude: float
) -> None:
    monkeypatch.setattr(catalogue, "FAST_PATH", False)
    lat, lon = eastern_extreme(latitude, 20.0, 49_975)
    locations_store(partner, [ocpi_location("IN", "CPA", "EAST", evses=1, latitude=lat, longitude=lon)])
    hits = search(SearchFilters(latitude=latitude, longitude=20.0, radius_m=50_000))
    assert located(hits) == ["EAST"]
    assert hits[0].distance_m == pytest.approx(49_975, abs=1)
