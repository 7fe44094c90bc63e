"""A re-pulled location and its EVSEs are updated in place on PostgreSQL (HOT updates: no new index entries, the
GiST point index included), and the catalogue's tables carry only the indexes queries use (emsp/0023)."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from emsp.models import Location
from emsp.services import catalogue
from tests.factories import PartnerFactory, ocpi_location

pytestmark = pytest.mark.django_db


def updates(table: str) -> tuple[int, int]:
    """(rows updated, of them in place) so far by this transaction, and by the connection's transactions of the
    last second or so: PostgreSQL 15 counts a committed transaction's updates there until it reports them, at
    most once a second (a CI run once counted 301 location updates for this test's 300, all in place: an earlier
    test's on the same connection). Tests compare two readings within their transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = %s", [table])
        return cursor.fetchone()


def index_definitions(table: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", [table])
        return [row[0] for row in cursor.fetchall()]


@pytest.fixture
def postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("fillfactor, HOT updates and index definitions are PostgreSQL's")


def test_a_second_pull_updates_every_location_and_evse_in_place(postgresql: None) -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    pages = [ocpi_location("IN", "CPA", f"L{i:04d}", evses=3, latitude=12 + i / 1000) for i in range(300)]
    catalogue.locations_store(partner, pages)
    for location in pages:
        location["last_updated"] = "2026-02-01T00:00:00Z"
        for evse in location["evses"]:
            evse["status"] = "CHARGING"
            evse["last_updated"] = "2026-02-01T00:00:00Z"
    before = {table: updates(table) for table in ("emsp_location", "emsp_evse")}
    result = catalogue.locations_store(partner, pages)
    assert result.updated == 300 and len(result.status_changes) == 900
    for table, rows in (("emsp_location", 300), ("emsp_evse", 900)):
        updated, in_place = (now - then for now, then in zip(updates(table), before[table], strict=True))
        assert updated == rows and in_place == rows, (table, updated, in_place)


def test_status_patches_in_the_pulls_transaction_are_in_place(postgresql: None) -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    catalogue.locations_store(partner, [ocpi_location("IN", "CPA", f"L{i:04d}", evses=2) for i in range(200)])
    before = updates("emsp_evse")
    for i in range(0, 200, 7):
        patch = {"status": "CHARGING", "last_updated": "2026-02-01T00:00:00Z"}
        assert catalogue.evse_patch_at("IN", "CPA", f"L{i:04d}", f"L{i:04d}-E1", patch).applied
    updated, in_place = (now - then for now, then in zip(updates("emsp_evse"), before, strict=True))
    assert updated == 29 and in_place == 29, (updated, in_place)


def test_no_index_for_like_queries_on_the_location_key_nor_on_a_connector_standard(postgresql: None) -> None:
    assert not [d for d in index_definitions("emsp_location") if "pattern_ops" in d]
    assert not [d for d in index_definitions("emsp_connector") if "(standard" in d]
    assert [d for d in index_definitions("emsp_location") if "UNIQUE" in d and "(ocpi_key)" in d]


def test_the_location_key_stays_unique() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    catalogue.locations_store(partner, [ocpi_location("IN", "CPA", "L1")])
    held = Location.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Location.objects.create(
            partner=partner, country_code="IN", party_id="CPA", location_id="l1", ocpi_key=held.ocpi_key,
            latitude=0, longitude=0, last_updated=held.last_updated, data={},
        )  # fmt: skip
