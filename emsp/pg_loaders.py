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
    compares it before registering one per cursor)."""

    timezone: tzinfo | None = None

    def __init__(self, oid: int, context: Any = None) -> None:
        super().__init__(oid, context)
        self._parse = _c.TimestamptzLoader(oid, context).load

    def load(self, data: Any) -> Any:
        return self._parse(data).replace(tzinfo=self.timezone)


@functools.cache
def loader_for(zone: tzinfo | None) -> type[FastTzLoader]:
    return type("FastTzLoader", (FastTzLoader,), {"timezone": zone})


def register(sender: Any, connection: Any, **kwargs: Any) -> None:
    """connection_created: the C-backed loader on a new PostgreSQL connection (psycopg 3 only)."""
    if _c is None or connection.vendor != "postgresql" or not isinstance(connection.connection, psycopg.Connection):
        return
    connection.connection.adapters.register_loader("timestamptz", loader_for(connection.timezone))
