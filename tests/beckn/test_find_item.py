"""catalogue.find_item on PostgreSQL reads the item's EVSE, location and partner in one plain statement
(beckn/catalogue_rows.py::item_evse); on random catalogues it answers exactly what the ORM query it replaces
answers: the same EVSE (or none) for ids in any case, of the right provider, and the same hit."""

from __future__ import annotations

import random

import pytest
from django.db import connection
from django.utils import timezone

from beckn import catalogue
from beckn.catalogue import find_item
from emsp.models import Connector, Partner
from emsp.services.catalogue import locations_store
from tests.beckn.test_search_chunks import random_catalogue
from tests.factories import ocpi_location


def _variant(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in text)


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_find_item_answers_as_the_orm_query(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(20261204)
    mine = Partner.objects.create(name="Random CPO", country_code="IN", party_id="RND")
    mine.endpoints = {"tariffs": "https://cpo.example/ocpi/2.2.1/tariffs"}
    mine.save()
    random_catalogue(rng, mine)
    Partner.objects.create(name="Other CPO", country_code="IN", party_id="OTH")
    connectors = list(Connector.objects.select_related("evse__location"))
    now = timezone.now()
    found = 0
    for _ in range(120):
        connector = rng.choice(connectors)
        location_id, uid = connector.evse.location.location_id, connector.evse.uid
        if rng.random() < 0.5:
            location_id, uid = _variant(rng, location_id), _variant(rng, uid)
        if rng.random() < 0.1:
            uid += "X"  # no such EVSE
        provider = rng.choice([None, "IN*RND", "in:rnd", "IN*OTH", "XX*NONE"])
        item = f"{location_id}/{uid}/{rng.choice([connector.connector_id, '9'])}"
        answers = []
        for fast in (True, False):
            with monkeypatch.context() as patch:
                patch.setattr(catalogue, "FAST_PATH", fast)
                hit = find_item(provider, item)
            if hit is None:
                answers.append(None)
                continue
            location = hit.evse.location
            answers.append((hit.evse.pk, hit.evse.status, hit.connector.pk, location.pk, location.time_zone,
                            location.partner.pk, location.partner.endpoints, hit.tariff and hit.tariff.pk,
                            hit.energy_price, catalogue.item_tags(hit, now)))  # fmt: skip
        assert answers[0] == answers[1], (provider, item)
        found += answers[0] is not None
    assert 30 < found < 120  # both found and not found were compared


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path is PostgreSQL's")
def test_the_item_s_location_is_found_through_its_any_case_index() -> None:
    """The location of an item is looked up by its id in any case through an index on that expression (at 1 M
    EVSEs without it the select's first statement scanned every location: 25 ms). Sequential scans turned off,
    the plan of item_evse's statement must use the index, so a change to either shows here. The tables hold a
    partner with many locations and are analysed first: on empty tables the plan followed whatever statistics
    earlier tests had left (a partner's few locations made its partner index look as good)."""
    from django.test.utils import CaptureQueriesContext

    partner = Partner.objects.create(name="Many CPO", country_code="IN", party_id="RND")
    locations_store(partner, [ocpi_location("IN", "RND", f"LOC-{i}", evses=1) for i in range(300)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE emsp_partner, emsp_location, emsp_evse")  # counts this transaction's rows
    with CaptureQueriesContext(connection) as seen:
        catalogue.catalogue_rows.item_evse(location_id="Loc-1", evse_uid_key="E1", party=("IN", "RND"))
    (statement,) = [q["sql"] for q in seen.captured_queries]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + statement)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "location_id_any_case" in plan, plan
