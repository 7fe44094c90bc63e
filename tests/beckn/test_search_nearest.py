"""The catalogue's nearest-first candidates (emsp/nearest.py on PostgreSQL, the bounding box elsewhere) are
exactly the EVSEs within the radius, by true distance: compared with measuring every EVSE in Python, on random
catalogues at the equator, far north, far south and across the antimeridian."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from beckn import catalogue
from beckn.catalogue import SearchFilters, haversine_m, search
from emsp import nearest
from emsp.models import Evse, Partner
from emsp.services.catalogue import locations_store
from tests.factories import ocpi_location

# (latitude, longitude) of the places the random catalogues cluster around.
PLACES = [(12.97, 77.59), (69.65, 18.96), (-54.80, -68.30), (-17.75, 179.995), (0.0, 0.0)]


def wrap(longitude: float) -> float:
    return (longitude + 180.0) % 360.0 - 180.0


def random_catalogue(rng: random.Random) -> None:
    partner = Partner.objects.create(name="Random CPO", country_code="IN", party_id="RND")
    objs = []
    for i in range(240):
        lat, lon = PLACES[i % len(PLACES)]
        objs.append(
            ocpi_location(
                "IN",
                "RND",
                f"N{i:03d}",
                evses=rng.randint(1, 2),
                latitude=round(lat + rng.gauss(0, 0.03), 6),
                longitude=round(wrap(lon + rng.gauss(0, 0.06)), 6),
            )
        )
    locations_store(partner, objs)


def near_a_place(rng: random.Random) -> tuple[float, float]:
    lat, lon = rng.choice(PLACES)
    return lat + rng.gauss(0, 0.02), wrap(lon + rng.gauss(0, 0.04))


def nearest_by_hand(lat: float, lon: float, radius_m: float) -> list[tuple[int, float]]:
    """Every EVSE measured in Python: those within the radius, nearest first (ties by id)."""
    measured = [
        (pk, haversine_m(lat, lon, a, b)) for pk, a, b in Evse.objects.values_list("pk", "latitude", "longitude")
    ]
    return sorted(((pk, d) for pk, d in measured if d <= radius_m), key=lambda row: (row[1], row[0]))


def assert_same_nearest(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert {pk for pk, _ in got} == {pk for pk, _ in want}
    # The same order by distance; EVSEs of one location are equally far, and two float formulas may order
    # distances a micrometre apart either way, so compare the distances in order, not the ids.
    assert [d for _, d in got] == pytest.approx([d for _, d in want], abs=1e-6)


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the GiST KNN index is PostgreSQL's")
def test_the_knn_scan_finds_exactly_what_lies_within_the_radius_nearest_first() -> None:
    rng = random.Random(15)
    random_catalogue(rng)
    compared = 0
    for _ in range(80):
        lat, lon = near_a_place(rng)
        radius = rng.choice([500, 2000, 5000, 20000])
        rows = nearest.nearest_first(Evse.objects.all(), lat, lon, radius).values_list("pk", "latitude", "longitude")
        got = [(pk, haversine_m(lat, lon, a, b)) for pk, a, b in rows]
        assert_same_nearest([(pk, d) for pk, d in got if d <= radius], nearest_by_hand(lat, lon, radius))
        # The distance condition trims the box's corners: nothing lies beyond the radius but by a hair.
        assert all(d <= radius * 1.000001 for _, d in got)
        compared += bool(got)
    assert compared > 50


@pytest.mark.django_db
def test_search_answers_the_nearest_connectors_whatever_the_database() -> None:
    rng = random.Random(16)
    random_catalogue(rng)
    compared = 0
    for _ in range(40):
        lat, lon = near_a_place(rng)
        radius = rng.choice([2000, 5000, 20000])
        filters = SearchFilters(latitude=lat, longitude=lon, radius_m=radius, limit=rng.choice([5, 20, 100]))
        hits = [(h.evse.pk, h.distance_m) for h in search(filters)]
        want = nearest_by_hand(lat, lon, radius)[: filters.limit]  # the factory's EVSEs have one connector each
        if connection.vendor == "postgresql":
            assert_same_nearest(hits, want)
        else:  # the box ranks by an equirectangular distance: the same EVSEs, in near enough the same order
            assert {pk for pk, _ in hits} == {pk for pk, _ in want} or len(want) == filters.limit
        compared += bool(hits)
    assert compared > 25
    assert catalogue.SEARCH_CHUNK_MIN > 0


@pytest.mark.django_db
def test_a_search_and_its_catalogue_read_no_more_for_more_hits() -> None:
    """The plain-SQL path loads only the columns a catalogue shows (beckn/catalogue_rows.py): a field read later
    that it left out would cost a query per row, and would show here as many more queries for more hits."""
    rng = random.Random(17)
    random_catalogue(rng)
    lat, lon = PLACES[1]
    counts = []
    for limit in (3, 30):
        with CaptureQueriesContext(connection) as queries:
            hits = search(SearchFilters(latitude=lat, longitude=lon, radius_m=20000, limit=limit))
            catalogue.render_catalog(hits)
        assert len(hits) == limit
        counts.append(len(queries))
    # One statement more at most: the candidates' statement runs again when a tie spans a chunk's end.
    assert counts[1] <= counts[0] + 1, counts


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_evses_equally_far_come_by_id_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub: many EVSEs at one point, which the KNN index hands out in no particular order. Chunks that end
    inside the hub must still give them by id, as the ORM path does (beckn/catalogue_rows.py reads on to the
    end of a tie at a chunk's end)."""
    partner = Partner.objects.create(name="Hub CPO", country_code="IN", party_id="HUB")
    hub = [ocpi_location("IN", "HUB", f"H{i}", evses=12, latitude=12.5, longitude=77.5) for i in range(3)]
    near = [ocpi_location("IN", "HUB", f"N{i}", evses=1, latitude=12.5 + i / 1000, longitude=77.5) for i in range(1, 6)]
    locations_store(partner, hub + near)
    monkeypatch.setattr(catalogue, "SEARCH_CHUNK_MIN", 1)  # chunks of twice the limit end inside the hub
    for limit in (1, 2, 3, 5, 7, 11, 16, 40):
        filters = SearchFilters(latitude=12.5, longitude=77.5, radius_m=2000, limit=limit)
        answers = []
        for fast in (True, False):
            monkeypatch.setattr(catalogue, "FAST_PATH", fast)
            answers.append([h.evse.pk for h in search(filters)])
        assert answers[0] == answers[1], limit
        assert len(answers[0]) == limit


def test_distances_from_a_point_are_haversines_to_the_bit() -> None:
    """Search measures its candidates with catalogue.distances_from (the point's terms worked out once): the
    same floats as haversine_m, so the radius check keeps exactly the same EVSEs."""
    rng = random.Random(20261205)
    for _ in range(2000):
        lat1, lon1 = rng.uniform(-90, 90), rng.uniform(-180, 180)
        distance_to = catalogue.distances_from(lat1, lon1)
        for _ in range(5):
            lat2 = max(-90.0, min(90.0, lat1 + rng.gauss(0, 0.05)))
            lon2 = wrap(lon1 + rng.gauss(0, 0.05)) if rng.random() < 0.9 else rng.uniform(-180, 180)
            assert distance_to(lat2, lon2) == haversine_m(lat1, lon1, lat2, lon2)
