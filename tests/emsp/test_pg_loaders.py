"""`timestamptz` values read through psycopg's C parser (emsp/pg_loaders.py) are the values Django's own loader
gives, with Django's time zone on them; and the connection uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
