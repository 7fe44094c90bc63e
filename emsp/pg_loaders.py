"""PostgreSQL `timestamptz` values read through psycopg's C loader.

Django (5.2, with psycopg 3) reads every `timestamptz` through its own subclass of psycopg's pure-Python loader,
to set the connection's time zone on each value. A profile of catalogue search (docs/benchmarks.md, issue 15
point 1) showed that parse among the top costs of loading rows: 3.2 µs a value against 1.2 µs for the C loader
of psycopg[binary] with the same time zone set (timeit, this machine). Every query of the platform reads
timestamps; `connection_created` registers this loader on each new PostgreSQL connection, with Django's time
zone, giving the same values (tests/emsp/test_pg_loaders.py). When psycopg runs without its C implementation
(PSYCOPG_IMPL=python) nothing is registered and Django's loader stays.
"""

from __future__ import annotations

import functools
from datetime import tzinfo
from typing import Any

import psycopg
from psycopg import _cmodule  # noqa: F401 - loads psycopg._cmodule
from psycopg.adapt import Loader

# The C loader of the implementation psycopg itself runs on: None under the pure-Python one (PSYCOPG_IMPL=python,
# or no psycopg[binary]); a loader of another implementation than psycopg's can't read its connections.
_c = psycopg._cmodule._psycopg  # type: ignore[attr-defined]


class FastTzLoader(Loader):
    """Django's `timestamptz` loader (the value in the connection's zone, then Django's zone set on it), with
    psycopg's C parser underneath. `timezone` is what Django's own loader class carries (its create_cursor
    compares it before registering one per cursor).

    psycopg's parser gives the value in the connection's zone, which is Django's (`datetime.timezone.utc` itself,
    the same object, when both are UTC): the zone is set only where it is another object. `replace(tzinfo=...)`
    on every value cost 0.7 µs (timeit), 7 % of a catalogue search's client instructions (callgrind, 1 M EVSEs,
    issue 15 point 1)."""

    timezone: tzinfo | None = None
    parser: Any = None if _c is None else _c.TimestamptzLoader

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._parse = self.parser(oid, context).load

    def load(self, data: Any) -> Any:
        value = self._parse(data)
        zone = self.timezone
        return value if value.tzinfo is zone else value.replace(tzinfo=zone)


class FastTzBinaryLoader(FastTzLoader):
    """FastTzLoader for values read in PostgreSQL's binary format (beckn/catalogue_rows.py reads its rows so)."""

    format = psycopg.pq.Format.BINARY
    parser = None if _c is None else _c.TimestamptzBinaryLoader


@functools.cache
def binary_loader_for(zone: tzinfo | None) -> type[FastTzBinaryLoader] | None:
    """FastTzBinaryLoader for Django's zone; None where psycopg runs without its C module."""
    return None if _c is None else type("FastTzBinaryLoader", (FastTzBinaryLoader,), {"timezone": zone})


@functools.cache
def loader_for(zone: tzinfo | None) -> type[FastTzLoader]:
    return type("FastTzLoader", (FastTzLoader,), {"timezone": zone})


def register(sender: Any, connection: Any, **kwargs: Any) -> None:
    """connection_created: the C-backed loader on a new PostgreSQL connection (psycopg 3 only)."""
    if _c is None or connection.vendor != "postgresql" or not isinstance(connection.connection, psycopg.Connection):
        return
    connection.connection.adapters.register_loader("timestamptz", loader_for(connection.timezone))
