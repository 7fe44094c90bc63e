"""`timestamptz` values read through psycopg's C parser (emsp/pg_loaders.py) are the values Django's own loader
gives, with Django's time zone on them; and the connection uses it."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader

from emsp.pg_loaders import FastTzLoader

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="a loader of psycopg, PostgreSQL's driver"),
]
VALUES = [
    "2026-12-05 03:30:00+00",
    "2026-12-05 03:30:00.123456+00",
    "2024-02-29 23:59:59.999999+05:30",
    "1970-01-01 00:00:00+00",
    "0001-01-01 00:00:00+00",
    "9999-12-31 23:59:59.999999+00",
    "2026-03-29 01:30:00+01",
]
SQL = "SELECT " + ", ".join(f"'{v}'::timestamptz" for v in VALUES) + ", NULL::timestamptz"


def test_the_connection_reads_timestamps_with_the_c_loader() -> None:
    connection.ensure_connection()
    loader = connection.connection.adapters.get_loader(1184, 0)  # timestamptz, text
    assert issubclass(loader, FastTzLoader)
    assert loader.timezone == connection.timezone


def test_same_values_as_djangos_loader() -> None:
    with connection.cursor() as cursor:
        cursor.execute(SQL)
        ours = cursor.fetchone()
    with connection.cursor() as cursor:
        register_tzloader(connection.timezone, cursor.cursor)  # Django's, on this cursor only
        cursor.execute(SQL)
        theirs = cursor.fetchone()
    assert ours == theirs
    assert [v.tzinfo for v in ours[:-1]] == [connection.timezone] * len(VALUES)
    assert ours[-1] is None
