"""`timestamptz` values read through psycopg's C parser (emsp/pg_loaders.py) are the values Django's own loader
gives, with Django's time zone on them; and the connection uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta, timezone, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.db.backends.postgresql.psycopg_any import register_tzloader
from psycopg.pq import Format

from emsp.pg_loaders import FastTzLoader, binary_loader_for, loader_for

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


def test_under_psycopgs_python_implementation_djangos_loader_stays() -> None:
    """PSYCOPG_IMPL=python: psycopg runs without its C module, whose loader could not read its connections;
    nothing is registered and timestamps still load."""
    code = (
        "import django; django.setup()\n"
        "from django.db import connection\n"
        "from emsp.pg_loaders import FastTzLoader\n"
        "c = connection.cursor(); c.execute('SELECT now()'); (now,) = c.fetchone()\n"
        "loader = connection.connection.adapters.get_loader(1184, 0)\n"
        "print('OK', now.tzinfo is not None, issubclass(loader, FastTzLoader))\n"
    )
    db = connection.settings_dict  # the test database
    url = f"postgres://{db['USER'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DJANGO_ENV": "development", "PSYCOPG_IMPL": "python", "DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2], check=False)  # fmt: skip
    assert done.stdout.strip().endswith("OK True False"), done.stderr[-2000:]


def read(loader: type | None = None, *, djangos: tzinfo | None = None, binary: bool = False) -> tuple:
    """SQL's row through the connection's loaders, or with `loader` on the cursor, or Django's own loader for
    the zone `djangos`; in binary when asked."""
    with connection.cursor() as cursor:
        if loader is not None:
            cursor.cursor.adapters.register_loader("timestamptz", loader)
        if djangos is not None:
            register_tzloader(djangos, cursor.cursor)
        if binary:
            cursor.cursor.format = Format.BINARY
        cursor.execute(SQL)
        return cursor.fetchone()


def test_the_zone_is_set_only_where_it_is_another_object() -> None:
    """psycopg's parser gives Django's own UTC object; a loader for another zone object (equal or not) still
    sets it on every value, as Django's loader does."""
    assert all(v.tzinfo is connection.timezone for v in read()[:-1])
    for zone in (timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30)), ZoneInfo("Europe/Amsterdam")):
        ours = read(loader_for(zone))
        assert ours == read(djangos=zone)
        assert all(v.tzinfo is zone for v in ours[:-1])


def test_values_read_in_binary_are_the_same() -> None:
    """The binary-format loader (beckn/catalogue_rows.py reads its rows so) gives Django's values too."""
    text = read()
    for zone in (connection.timezone, ZoneInfo("Europe/Amsterdam")):
        binary = read(binary_loader_for(zone), binary=True)
        assert binary == read(djangos=zone)
        assert binary == text or zone is not connection.timezone  # another zone: Django's, the wall time kept
        assert all(v.tzinfo is zone for v in binary[:-1])
        assert binary[-1] is None
