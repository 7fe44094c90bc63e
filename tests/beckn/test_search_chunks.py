"""The catalogue search reads its candidates a chunk at a time and stops at `limit` hits (beckn/catalogue.py):
on random catalogues and random filters it answers exactly what reading every candidate at once answers."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from beckn import catalogue
from beckn.catalogue import SearchFilters, search
from billing.services import tariff_put
from emsp.models import Evse, Partner, Reservation
from emsp.services.catalogue import locations_store
from tests.beckn.bap import TARIFF
from tests.factories import TokenFactory, ocpi_location

STANDARDS = ["IEC_62196_T2_COMBO", "IEC_62196_T2", "CHADEMO"]
POWER_TYPES = ["AC_1_PHASE", "AC_3_PHASE", "DC", "DC"]
STATUSES = ["AVAILABLE", "AVAILABLE", "AVAILABLE", "CHARGING", "OUTOFORDER", "BLOCKED"]


def random_catalogue(rng: random.Random, partner: Partner) -> None:
    objs = []
    for i in range(150):
        obj = ocpi_location("IN", "RND", f"R{i:03d}", evses=rng.randint(1, 3),
                            latitude=12.97 + rng.gauss(0, 0.03), longitude=77.59 + rng.gauss(0, 0.03),
                            status=rng.choice(STATUSES))  # fmt: skip
        obj["publish"] = rng.random() > 0.1
        for evse in obj["evses"]:  # type: ignore[union-attr]
            evse["status"] = rng.choice(STATUSES)
            connector = evse["connectors"][0]
            connector["standard"] = rng.choice(STANDARDS)
            connector["max_electric_power"] = rng.choice([7400, 22000, 50000, 150000])
            connector["power_type"] = rng.choice(POWER_TYPES)
            connector["tariff_ids"] = rng.choice([["T1"], ["T2"], ["T2", "T1"], [], ["NONE"]])
        objs.append(obj)
    locations_store(partner, objs)
    for tariff_id, price in (("T1", "0.08"), ("T2", "0.5")):
        energy = {"type": "ENERGY", "price": price, "step_size": 1}
        tariff_put(
            partner, {**TARIFF, "party_id": "RND", "id": tariff_id, "elements": [{"price_components": [energy]}]}
        )
    token = TokenFactory()
    now = timezone.now()
    for evse in rng.sample(list(Evse.objects.all()), 20):  # some held by bookings of ours
        Reservation.objects.create(evse=evse, token=token, start_at=now - timedelta(minutes=5),
                                   expiry_at=now + timedelta(minutes=rng.choice([-1, 30])))  # fmt: skip


def random_filters(rng: random.Random) -> SearchFilters:
    return SearchFilters(
        latitude=12.97 + rng.gauss(0, 0.02),
        longitude=77.59 + rng.gauss(0, 0.02),
        radius_m=rng.choice([1000, 3000, 5000, 20000]),
        connector_types=set(rng.sample(STANDARDS, rng.randint(0, 1))),
        power_types=rng.choice([set(), set(), {"DC"}, {"AC_1_PHASE", "AC_3_PHASE"}]),
        min_power_w=rng.choice([None, None, 22000, 50000]),
        available_only=rng.random() < 0.5,
        max_price=rng.choice([None, None, Decimal("0.1")]),
        limit=rng.choice([1, 5, 20]),
    )


@pytest.mark.django_db
def test_chunked_search_answers_as_reading_every_candidate_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261203)
    random_catalogue(rng, Partner.objects.create(name="Random CPO", country_code="IN", party_id="RND"))
    compared = 0
    for _ in range(60):
        filters = random_filters(rng)
        with monkeypatch.context() as patch:
            patch.setattr(catalogue, "SEARCH_CHUNK_MIN", 1)  # chunks of twice the limit: often several per search
            chunked = [(h.evse.pk, h.connector.pk, h.distance_m) for h in search(filters)]
        with monkeypatch.context() as patch:
            patch.setattr(catalogue, "SEARCH_CHUNK_MIN", 10**6)  # one chunk: every candidate read at once
            at_once = [(h.evse.pk, h.connector.pk, h.distance_m) for h in search(filters)]
        assert chunked == at_once, filters
        compared += bool(at_once)
    assert compared > 30  # most searches found something: the comparison is not of empty lists


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_the_plain_sql_path_answers_as_the_orm_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """beckn/catalogue_rows.py against the ORM path it replaces on PostgreSQL, on random catalogues and filters
    (with providers, windows and held EVSEs), hit for hit and tag for tag."""
    rng = random.Random(20261215)
    partner = Partner.objects.create(name="Random CPO", country_code="IN", party_id="RND")
    random_catalogue(rng, partner)
    Partner.objects.create(name="Other CPO", country_code="IN", party_id="OTH")
    now = timezone.now()
    compared = 0
    for _ in range(80):
        filters = random_filters(rng)
        filters.provider = rng.choice([None, None, "IN*RND", "IN*OTH"])
        if rng.random() < 0.3:
            start = now + timedelta(minutes=rng.choice([0, 5, 60]))
            filters.window = (start, start + timedelta(minutes=30))
        answers = []
        for fast in (True, False):
            with monkeypatch.context() as patch:
                patch.setattr(catalogue, "FAST_PATH", fast)
                hits = search(filters, now)
                answers.append([(h.evse.pk, h.connector.pk, h.distance_m, h.evse.status, h.tariff and h.tariff.pk,
                                 h.energy_price, catalogue.item_tags(h, now)) for h in hits])  # fmt: skip
        assert answers[0] == answers[1], filters
        compared += bool(answers[0])
    assert compared > 25


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_the_plain_sql_path_reads_json_decoded_and_leaves_the_connection_as_django_reads_it() -> None:
    """catalogue_rows reads `jsonb` through its own loader on its own cursors; the connection's other cursors go
    on reading it as text, which Django's JSONField decodes (a loader left on the connection would hand it dicts
    and lists, which json.loads refuses)."""
    rng = random.Random(7)
    random_catalogue(rng, Partner.objects.create(name="Random CPO", country_code="IN", party_id="RND"))
    hits = search(SearchFilters(latitude=12.97, longitude=77.59, radius_m=20000, limit=20))
    assert hits and all(isinstance(h.connector.tariff_ids, list) for h in hits)
    assert all(isinstance(h.evse.capabilities, list) for h in hits)
    with connection.cursor() as cursor:
        cursor.execute("SELECT tariff_ids FROM emsp_connector LIMIT 1")
        assert isinstance(cursor.fetchone()[0], str)
    stored = Evse.objects.filter(pk=hits[0].evse.pk).values_list("capabilities", flat=True).get()
    assert stored == hits[0].evse.capabilities
