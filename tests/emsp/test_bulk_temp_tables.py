"""bulk.upsert's temporary tables on PostgreSQL: emptied with DELETE, not TRUNCATE (a new file and a catalogue update
each time: 330 µs of a location PUT, twice), made if missing in the same round trip, so an upsert merges its own
rows only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from emsp import bulk
from ocpi.models import DataQualityIssue
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

COLUMNS = ("partner_id", "module", "object_id", "code", "path", "message", "fixed", "first_seen", "last_seen")


@pytest.fixture
def postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("temporary tables and COPY are the PostgreSQL path (SQLite uses bulk_create)")


def upsert(partner_id: int, object_ids: list[str]) -> list[tuple[Any, ...]]:
    now = timezone.now()
    rows = [(partner_id, "locations", oid, "bad_power", "evses[0]", "W for kW", True, now, now) for oid in object_ids]
    return bulk.upsert(DataQualityIssue, COLUMNS, rows, conflict=("partner_id", "module", "object_id", "code"),
                       update=("path", "message", "fixed", "last_seen"), returning=("object_id",))  # fmt: skip


def test_an_upsert_merges_its_own_rows_only_even_twice_in_one_transaction(postgresql: None) -> None:
    partner = PartnerFactory()
    assert sorted(upsert(partner.pk, ["A", "B"])) == [("A",), ("B",)]
    assert upsert(partner.pk, ["C"]) == [("C",)]  # A and B were cleared from the temporary table
    assert DataQualityIssue.objects.count() == 3


def test_the_temporary_table_is_emptied_without_truncate_in_one_round_trip(postgresql: None) -> None:
    partner = PartnerFactory()
    with CaptureQueriesContext(connection) as seen:
        upsert(partner.pk, ["A"])
    sql = [q["sql"] for q in seen.captured_queries]
    assert not [q for q in sql if "TRUNCATE" in q], sql
    assert [q for q in sql if "CREATE TEMP TABLE IF NOT EXISTS tmp_ocpi_dataqualityissue" in q and "DELETE FROM" in q]


def test_a_temporary_table_rolled_back_with_its_block_is_made_again(
    postgresql: None, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    """Nothing remembers the table as made: a block that made it and was rolled back leaves the next upsert to
    make it again. (A per-connection memo of made tables was tried: it broke later tests whose on-commit callbacks
    were run by the test and whose transaction was then rolled back, taking the table with it.)"""
    partner = PartnerFactory()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        upsert(partner.pk, ["A"])
        raise RuntimeError
    assert upsert(partner.pk, ["B"]) == [("B",)]
