"""beckn/catalogue_rows.py reads its rows on a cursor it keeps on the connection, in PostgreSQL's binary format:
the rows build the same instances as the ORM path, the cursor is kept only while its connection lives, statements
are still seen where Django logs them, and database errors are still Django's."""

from __future__ import annotations

import random

import pytest
from django.db import DEFAULT_DB_ALIAS, DatabaseError, ProgrammingError, connection, connections, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext
from psycopg.pq import Format

from beckn import catalogue, catalogue_rows
from beckn.catalogue import SearchFilters, search
from emsp.models import Partner
from emsp.services.catalogue import locations_store
from tests.beckn.test_search_chunks import random_catalogue, random_filters
from tests.factories import ocpi_location

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the plain-SQL path is PostgreSQL's"),
]
SHOWN = {
    "evse": catalogue_rows.EVSE_FIELDS,
    "location": catalogue_rows.LOCATION_FIELDS,
    "partner": catalogue_rows.PARTNER_FIELDS,
    "connector": catalogue_rows.CONNECTOR_FIELDS,
}


def shown_values(hit: catalogue.Hit) -> dict[str, list[tuple[str, object, type]]]:
    """Each shown field of a hit's instances, with its value's type (a float read as a Decimal, or a JSON list as
    its text, would compare unequal only by type)."""
    objects = {"evse": hit.evse, "location": hit.evse.location, "partner": hit.evse.location.partner,
               "connector": hit.connector}  # fmt: skip
    values = {}
    for name, fields in SHOWN.items():
        values[name] = [(f.attname, v, type(v)) for f in fields for v in [getattr(objects[name], f.attname)]]
    return values


def kept() -> tuple[object, object]:
    """(database connection, cursor) kept on Django's connection object (`connection` is a proxy to it)."""
    return connections[DEFAULT_DB_ALIAS].__dict__[catalogue_rows.KEPT_CURSOR]


def kept_cursor() -> object:
    return kept()[1]


@pytest.fixture
def catalogue_of_150() -> None:
    random_catalogue(
        random.Random(20261205), Partner.objects.create(name="Random CPO", country_code="IN", party_id="RND")
    )


def test_rows_read_in_binary_build_the_instances_the_orm_builds(
    catalogue_of_150: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(5)
    compared = 0
    for _ in range(40):
        filters = random_filters(rng)
        answers = []
        for fast in (True, False):
            with monkeypatch.context() as patch:
                patch.setattr(catalogue, "FAST_PATH", fast)
                answers.append([shown_values(h) for h in search(filters)])
        assert answers[0] == answers[1], filters
        compared += len(answers[0])
    assert compared > 100
    assert kept_cursor().format == Format.BINARY  # the rows above were read in binary
    hit = search(SearchFilters(latitude=12.97, longitude=77.59, radius_m=20000, limit=1))[0]
    assert hit.evse.status_updated_at.tzinfo is connection.timezone


@pytest.mark.django_db(transaction=True)  # the connection is closed mid-test
def test_one_cursor_is_kept_while_its_connection_lives() -> None:
    # A few committed rows only: many would leave the tables' statistics to autovacuum, and other tests' plans
    # (test_find_item's) to them.
    partner = Partner.objects.create(name="Small CPO", country_code="IN", party_id="SML")
    locations_store(partner, [ocpi_location("IN", "SML", f"S{i}", latitude=12.97 + i / 1000) for i in range(3)])
    filters = SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000, limit=5)
    first = search(filters)
    assert first
    cursor = kept_cursor()
    assert [h.connector.pk for h in search(filters)] == [h.connector.pk for h in first]
    assert kept_cursor() is cursor
    connection.close()  # Django reconnects on the next statement, with a new database connection
    assert [h.connector.pk for h in search(filters)] == [h.connector.pk for h in first]
    assert kept_cursor() is not cursor
    assert kept()[0] is connection.connection
    assert cursor.connection.closed


def test_logged_statements_are_seen(catalogue_of_150: None) -> None:
    """Where Django logs statements (DEBUG, a test counting queries), the module's go through its cursor."""
    filters = SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000, limit=5)
    unlogged = search(filters)
    with CaptureQueriesContext(connection) as queries:
        logged = search(filters)
    assert [h.connector.pk for h in logged] == [h.connector.pk for h in unlogged]
    assert any("WITH ranked AS" in q["sql"] for q in queries.captured_queries)


def test_database_errors_are_djangos() -> None:
    with transaction.atomic():
        with pytest.raises(ProgrammingError), transaction.atomic(), catalogue_rows._cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM emsp_evse")
        with pytest.raises(DatabaseError), transaction.atomic(), catalogue_rows._cursor() as cursor:
            cursor.execute("SELECT 1 / 0")
        connection.needs_rollback = True  # as after an error caught inside the block without a savepoint
        with pytest.raises(TransactionManagementError), catalogue_rows._cursor():
            pass
        connection.needs_rollback = False
        with catalogue_rows._cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
