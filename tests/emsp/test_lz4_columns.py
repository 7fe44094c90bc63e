"""Large bodies and stored OCPI objects are compressed with lz4 on PostgreSQL (emsp/migration_ops.py)."""

from __future__ import annotations

import orjson
import pytest
from django.db import connection

from beckn.models import BecknCallback
from emsp.migration_ops import lz4_available
from emsp.models import Delivery, Location
from tests.factories import stored_location

pytestmark = pytest.mark.django_db


def compression(table: str, column: str, pk: int) -> str | None:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT pg_column_compression("{column}") FROM "{table}" WHERE "id" = %s', [pk])  # noqa: S608
        return cursor.fetchone()[0]


@pytest.fixture(autouse=True)
def _postgresql_with_lz4() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("column compression is PostgreSQL's")
    if not lz4_available(connection):
        pytest.skip("this PostgreSQL server has no lz4 (the migrations leave pglz)")


def test_a_callback_body_is_stored_with_lz4_and_read_back_whole() -> None:
    catalogue = {"catalog": {"providers": [{"id": f"P{n}", "items": [{"id": f"I{n}-{i}"} for i in range(40)]}
                                           for n in range(40)]}}  # fmt: skip
    body = orjson.dumps({"context": {"action": "on_search"}, "message": catalogue}).decode()
    assert len(body) > 20_000  # past PostgreSQL's threshold for compressing a value (about 2 kB)
    row = BecknCallback.objects.create(
        channel=Delivery.Channel.BECKN_CALLBACK, target="http://127.0.0.1:9/on_search", action="on_search",
        url="http://127.0.0.1:9/on_search", message_id="m-lz4", body=body,
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT pg_column_compression("body") FROM "beckn_beckncallback" WHERE "delivery_ptr_id" = %s', [row.pk]
        )
        assert cursor.fetchone()[0] == "lz4"
    assert BecknCallback.objects.get(pk=row.pk).body == body


def test_a_location_s_ocpi_data_is_stored_with_lz4(partner: object) -> None:
    location = stored_location(partner, location_id="BIG", evses=1)
    data = dict(location.data, directions=[{"language": "en", "text": f"Gate {n}, then left. " * 8} for n in range(60)])
    Location.objects.filter(pk=location.pk).update(data=data)
    assert compression("emsp_location", "data", location.pk) == "lz4"
    assert Location.objects.get(pk=location.pk).data == data


def test_every_large_column_named_in_the_migrations_is_set_to_lz4() -> None:
    """Beckn bodies, the OCPI log's bodies and push payloads, the stored OCPI objects, quote snapshots and issued
    documents' PDFs (pglz gave up on each PDF after spending 0.5 ms on it)."""
    expected = {
        ("beckn_becknmessage", "body"), ("beckn_beckncallback", "body"), ("billing_cdr", "data"),
        ("billing_tariff", "data"), ("billing_quote", "tariff_snapshot"), ("billing_issueddocument", "pdf"),
        ("emsp_location", "data"), ("emsp_evse", "data"), ("emsp_chargingsession", "data"),
        ("ocpi_ocpimessage", "request_body"), ("ocpi_ocpimessage", "response_body"), ("ocpi_pushdelivery", "payload"),
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE a.attcompression = 'l' AND c.relkind = 'r'"
        )
        assert expected <= set(cursor.fetchall())
