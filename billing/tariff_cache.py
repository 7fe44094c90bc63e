"""Tariffs kept in the process between searches, never stale: a generation number PostgreSQL moves on every
write to the tariffs, read by the search's own statement, tells whether what was kept still holds.

Why: a profile of catalogue search at 100 k EVSEs (docs/benchmarks.md, issue 15 point 1) showed the tariffs'
statement, a second round trip after the candidates', costing a fifth of a search, for the same few tariffs
every time. Tariffs change seldom (a CPO's PUT, a pull); searches read them hundreds of times a second.

How it stays exact (PostgreSQL; elsewhere nothing is kept):
- `billing_tariff_generation` holds one row (migration billing/0010). A statement trigger on `billing_tariff`
  (INSERT, UPDATE, DELETE, TRUNCATE: the ORM, raw SQL, a partner's cascade and the console alike) sets it to the
  next value of a sequence, BEFORE the statement touches a tariff. The row lock it takes is held to the end of
  the writing transaction, so a reader never sees a tariff written under a generation it has already seen; a
  sequence never gives a number twice, so a generation rolled back is never seen again. Generations are only
  ever compared for equality (two writers may commit their numbers out of order).
- A search reads the generation in its candidates' statement (an init plan, once per statement); a Beckn
  item's statement (a select's, `item_evse`) reads it too, for the item's tariff and its quote's. Kept tariffs
  are used only under the generation they were kept at; tariffs missing from the keep are read then, in a
  snapshot at least as new, and kept under that generation (at worst newer than it: the next search sees the
  next generation and drops them).
- Kept per database connection (so per thread and per database), what was read, including "no such tariff";
  validity dates are checked on each use. A new connection (a reconnect, a failover, a restored database)
  starts with nothing kept: generations are only compared on the connection that read them. And nothing is kept
  longer than KEEP_SECONDS: where a generation number could come back on a live connection (a dump restored into
  the running database behind a pooler that keeps client connections, an asynchronous failover that lost the
  last commits, tariffs written with triggers disabled), a search is stale for at most that long.
- Every writer takes the generation's lock first, so two transactions writing tariffs can't deadlock on it:
  a statement through its trigger, and code that locks tariff rows through `Tariff.objects.select_for_update()`,
  which moves the generation before it locks (billing/models.py; `tariff_put` locks its row that way).

The price: writers of tariffs take turns, across CPOs, until each commits. tariff_put's transactions are short
(one tariff); a partner's deletion cascades to its tariffs and holds the turn for its whole transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import connection

if TYPE_CHECKING:
    from billing.models import Tariff

TABLE = "billing_tariff_generation"
SEQUENCE = "billing_tariff_generation_seq"
# The generation, for a SELECT list: NULL where the row is missing (then nothing is kept).
GENERATION_SQL = f"(SELECT n FROM {TABLE} WHERE id = 1)"  # noqa: S608 - constant names
# Where an EVSE read with the generation carries it (its instance's __dict__), for tariffs_for_connector.
GENERATION_ATTRIBUTE = "_tariff_generation"
BUMP_SQL = (
    f"INSERT INTO {TABLE} (id, n) VALUES (1, nextval('{SEQUENCE}')) "  # noqa: S608
    "ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n"
)
# Beyond this many keys, or this many tariff elements, the keep starts again. A tariff of a few elements is a few
# kB, and searches near one place name a few tariffs; but a tariff may have up to 1,000 elements (ocpi/tariffs):
# a week of quarter-hour prices (672 elements) measured 0.63 MB decoded and 1.6 MB with the engine's reading the
# catalogue keeps on it (tracemalloc), so 2,000 such tariffs would have been gigabytes per connection. Counted
# by elements, the keep stays within about 12 MB per connection, whatever the tariffs.
MAX_KEPT = 2_000
MAX_KEPT_ELEMENTS = 5_000
# The longest a keep is used (see above): a search's tariffs are read again at least this often.
KEEP_SECONDS = 60.0


def bump() -> None:
    """Move the generation on now (and hold its lock to the end of the transaction): Tariff's select_for_update
    calls this before it locks tariff rows, so the generation's lock is always taken first."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(BUMP_SQL)


class Kept:
    """The tariffs read on one connection, by key (None: no such tariff), under one generation."""

    __slots__ = ("by_key", "elements", "generation", "on", "until")

    def __init__(self) -> None:
        self.generation: int | None = None
        self.by_key: dict[str, Tariff | None] = {}
        self.elements = 0  # the kept tariffs' elements, together
        self.on: object = None  # the driver's connection they were read on
        self.until = 0.0  # monotonic time after which they are read again


def _kept() -> Kept:
    kept = getattr(connection, "_kept_tariffs", None)
    if kept is None:
        kept = Kept()
        connection._kept_tariffs = kept  # type: ignore[attr-defined]
    return kept


def valid_tariffs(
    keys: set[str], now: datetime, generation: int | None, read: Callable[[list[str]], Iterable[Tariff]]
) -> dict[str, Tariff]:
    """The tariffs with these keys valid at `now`, by key: from the keep when it was filled under `generation`
    (read by the caller's statement), the rest by `read(keys) -> list[Tariff]` (every tariff with those keys,
    valid or not), which are then kept. `generation` None: nothing kept, all read."""
    if not keys:
        return {}
    if generation is None:
        found = {t.ocpi_key: t for t in read(sorted(keys))}
    else:
        kept, on, clock = _kept(), connection.connection, time.monotonic()
        full = len(kept.by_key) > MAX_KEPT or kept.elements > MAX_KEPT_ELEMENTS
        if kept.generation != generation or kept.on is not on or clock > kept.until or full:
            kept.generation, kept.by_key, kept.on, kept.until = generation, {}, on, clock + KEEP_SECONDS
            kept.elements = 0
        by_key = kept.by_key
        missing = [k for k in keys if k not in by_key]
        if missing:
            for key in missing:
                by_key[key] = None
            for tariff in read(missing):
                by_key[tariff.ocpi_key] = tariff
                kept.elements += _elements(tariff)
        found = {k: t for k in keys if (t := by_key[k]) is not None}
    return {
        key: t
        for key, t in found.items()
        if (t.start_date_time is None or t.start_date_time <= now)
        and (t.end_date_time is None or now <= t.end_date_time)
    }


def _elements(tariff: Tariff) -> int:
    elements = tariff.data.get("elements") if isinstance(tariff.data, dict) else None
    return len(elements) if isinstance(elements, list) else 0
