"""Catalogue search's hot path on PostgreSQL: the nearest candidates, with their location, partner, connectors
and holds, in one plain-SQL statement on the GiST KNN index (emsp/nearest.py), their tariffs in a second, built
into model instances as the ORM would build them.

Why not the ORM here: a profile of `beckn.catalogue.search` at 1 M EVSEs (cProfile, docs/benchmarks.md, issue
15) showed a search spending more on compiling its five ORM queries and building their objects than PostgreSQL
spent answering them. The SQL below is what those queries asked for, joined, with the columns a catalogue shows;
`tests/beckn/test_search_chunks.py` holds it to the same answers as the ORM path (`catalogue._hits_among`) on
random catalogues and filters.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from psycopg.adapt import Loader
from psycopg.pq import Format

from billing import tariff_cache
from billing.models import Tariff
from emsp import nearest, pg_loaders
from emsp.models import Connector, Evse, Location, Partner, Reservation

# What a catalogue shows of each row; the rest loads when read (a test counts the queries of a search and its
# rendering, so a field read later that is missing here shows up as a query per row).
EVSE_SHOWN = ("id", "location_id", "uid", "evse_id", "status", "capabilities", "latitude", "longitude",
              "max_power_w", "status_updated_at")  # fmt: skip
LOCATION_SHOWN = ("id", "partner_id", "country_code", "party_id", "location_id", "name", "address", "city",
                  "postal_code", "state", "country", "latitude", "longitude", "time_zone", "publish")  # fmt: skip
PARTNER_SHOWN = ("id", "name", "country_code", "party_id", "role", "state", "support_phone", "support_email", "website")
CONNECTOR_SHOWN = ("id", "evse_id", "connector_id", "standard", "format", "power_type", "max_voltage",
                   "max_amperage", "max_electric_power", "tariff_ids")  # fmt: skip


def _shown(model: type[Model], names: tuple[str, ...]) -> list[Field]:
    return [f for f in model._meta.concrete_fields if f.attname in names]


EVSE_FIELDS = _shown(Evse, EVSE_SHOWN)
LOCATION_FIELDS = _shown(Location, LOCATION_SHOWN)
PARTNER_FIELDS = _shown(Partner, PARTNER_SHOWN)
CONNECTOR_FIELDS = _shown(Connector, CONNECTOR_SHOWN)
TARIFF_FIELDS = list(Tariff._meta.concrete_fields)
HIDDEN = [str(s) for s in (Evse.Status.REMOVED, Evse.Status.OUTOFORDER, Evse.Status.INOPERATIVE, Evse.Status.PLANNED)]


def _literals(values: list[str]) -> str:
    """Constants of our own code as SQL literals (each a plain word, checked)."""
    if not all(v.isascii() and v.replace("_", "").isalnum() for v in values):
        raise ValueError(f"not a plain word: {values!r}")
    return ", ".join(f"'{v}'" for v in values)


def _listed(params: dict[str, Any], name: str, values: list[Any]) -> str:
    """An IN list of parameters (not `= ANY(array)`: see nearest_candidates); NULL, which matches nothing, for
    an empty list."""
    for i, value in enumerate(values):
        params[f"{name}{i}"] = value
    return ", ".join(f"%({name}{i})s" for i in range(len(values))) or "NULL"


HIDDEN_SQL = _literals(HIDDEN)
# The partners whose locations the catalogue hides: a suspended partner's (staff stopped the connection) and an
# unregistered one's (credentials deleted). Their chargers can't be booked or started through us, and their
# statuses and tariffs are no longer kept up to date. Read by each statement, never kept: a change of state shows
# at the next search. (Here, as this module's SQL needs it; catalogue.py imports this module.)
UNLISTED_PARTNER_STATES = (Partner.State.SUSPENDED, Partner.State.UNREGISTERED)
UNLISTED_STATES_SQL = _literals([str(s) for s in UNLISTED_PARTNER_STATES])
# And a partner registering again (it was connected once: `registered_at` is kept; now NEW or TOKEN_A_ISSUED, as
# credentials.py and issue_token_a leave an unregistered partner) until it is connected: what we hold of it is as
# stale as while it was unregistered, and it had been listed again from the moment staff issued a new Token A.
# A partner never connected (staff created it, its data imported) is listed as before.
REREGISTERING_STATES = (Partner.State.NEW, Partner.State.TOKEN_A_ISSUED)
_UNLISTED = (
    f"{{0}}.state IN ({UNLISTED_STATES_SQL}) OR ({{0}}.state IN ({_literals([str(s) for s in REREGISTERING_STATES])})"
    " AND {0}.registered_at IS NOT NULL)"
)
# A location the catalogue shows (catalogue.listed_location), `l` and its partner `p`.
LISTED_SQL = f"l.withdrawn_at IS NULL AND l.publish AND NOT ({_UNLISTED.format('p')})"
# The same for a location `l` without its partner's row: the unlisted partners' ids are one uncorrelated sub-select,
# which PostgreSQL runs once a statement and hashes (a hashed SubPlan), where a join to the partner cost a lookup by
# primary key for every EVSE the KNN scan read (bench/bench_beckn.py --part query: +10 % a search).
_UNLISTED_PARTNERS = f"SELECT u.id FROM emsp_partner u WHERE {_UNLISTED.format('u')}"  # noqa: S608
LISTED_LOCATION_SQL = f"l.withdrawn_at IS NULL AND l.publish AND l.partner_id NOT IN ({_UNLISTED_PARTNERS})"
HOLDING_SQL = _literals([str(s) for s in Reservation.ACTIVE_STATUSES])


def _columns(alias: str, fields: list[Field]) -> str:
    return ", ".join(f'{alias}."{f.column}"' for f in fields)


# Built once: a profile showed the column lists rebuilt on every search.
EVSE_COLUMNS = _columns("e", EVSE_FIELDS)
SHOWN_COLUMNS = ", ".join(
    [EVSE_COLUMNS, f"({LISTED_SQL})", _columns("l", LOCATION_FIELDS),
     _columns("p", PARTNER_FIELDS), _columns("c", CONNECTOR_FIELDS)]
)  # fmt: skip
TARIFF_COLUMNS = _columns("t", TARIFF_FIELDS)
# A select also asks the partner's endpoints (is the CPO's module answering?): read with the row, not lazily.
ITEM_PARTNER_FIELDS = _shown(Partner, (*PARTNER_SHOWN, "endpoints"))
ITEM_COLUMNS = ", ".join(
    [_columns("e", EVSE_FIELDS), _columns("l", LOCATION_FIELDS), _columns("p", ITEM_PARTNER_FIELDS)]
)


def _builder(model: type[Model], fields: list[Field]) -> tuple[type[Model], list[str]]:
    return model, [f.attname for f in fields]


def _maker(spec: tuple[type[Model], list[str]], alias: str) -> Callable[[Any], Any]:
    """What builds a model instance from its row, as `Model.from_db` builds it (the fields not in `names`
    deferred), without running `__init__` over every field: a profile of search showed instance building costing
    as much as the statement that read the rows. A model with init signal listeners is built by `from_db` itself.
    Made once per statement: the signal check and the connection's alias cost more than the building (profile).
    The row's JSON columns come decoded (rows are read through _cursor)."""
    model, names = spec
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        return lambda values: model.from_db(alias, names, values)
    new = model.__new__

    def build(values: Any) -> Any:
        instance = new(model)
        # Not zip(strict=True): its keyword alone cost 4 % of a search's instructions (callgrind); `values` is a
        # row's slice cut by the lengths of these same field lists.
        instance.__dict__.update(zip(names, values))  # noqa: B905
        state = instance._state = ModelState()
        state.adding, state.db, state.fields_cache = False, alias, {}
        return instance

    return build


class _JsonLoader(Loader):
    """`jsonb` as Python values, decoded by orjson while the row is read (Django's connections read `jsonb` as
    text, for JSONField's stdlib decoder; cProfile of search at 1 M EVSEs: the second pass over each row, copying
    it to decode its JSON columns, was 5 % of a search)."""

    def load(self, data: Any) -> Any:
        return orjson.loads(data)


class _JsonBinaryLoader(Loader):
    """_JsonLoader for rows read in binary: `jsonb`'s binary form is a version byte (1), then the text."""

    format = Format.BINARY

    def load(self, data: Any) -> Any:
        return orjson.loads(data[1:])


def _readying(cursor: Any) -> None:
    """A psycopg cursor set to read this module's rows: `jsonb` through orjson, and every column in PostgreSQL's
    binary format where psycopg's C loaders run (a number or a time is then copied, not parsed from its text:
    6 % fewer client instructions a catalogue search at 1 M EVSEs, 248 against 264 million for 100 searches under
    callgrind, issue 15 point 1). The rows build the instances the ORM builds, field for field and type for type
    (tests/beckn/test_catalogue_cursor.py)."""
    adapters = cursor.adapters
    adapters.register_loader("jsonb", _JsonLoader)
    timestamps = pg_loaders.binary_loader_for(connections[DEFAULT_DB_ALIAS].timezone)
    if timestamps is not None:
        adapters.register_loader("jsonb", _JsonBinaryLoader)
        adapters.register_loader("timestamptz", timestamps)
        cursor.format = Format.BINARY


# Where _cursor keeps its cursor: on Django's connection object (one per thread), with the database connection
# it belongs to (a cursor of a closed connection is never reused: Django reconnects with a new one).
KEPT_CURSOR = "_catalogue_rows_cursor"


@contextmanager
def _cursor() -> Iterator[Any]:
    """A cursor of Django's connection made ready by _readying: for this module's statements only, the
    connection's other readers unchanged.

    Kept on the connection between statements: a new cursor each time, wrapped by Django and given its own copy
    of the adapters for the loader, cost a catalogue search 0.04 of its 0.34 ms of client CPU at 1 M EVSEs
    (process CPU timed around each step, docs/benchmarks.md, issue 15 point 1). What Django's cursor adds around
    a statement is kept: the connection opened and checked, database errors translated. Where statements are
    logged (DEBUG, a test counting queries) or wrapped (`execute_wrapper`), Django's own cursor is used, so they
    are seen as before."""
    db = connections[DEFAULT_DB_ALIAS]  # `connection` looks it up again on each attribute read
    if db.queries_logged or db.execute_wrappers:
        with db.cursor() as cursor:
            _readying(cursor.cursor)
            yield cursor
        return
    db.close_if_health_check_failed()
    db.ensure_connection()
    db.validate_thread_sharing()
    db.validate_no_broken_transaction()
    raw = db.connection
    kept = db.__dict__.get(KEPT_CURSOR)
    if kept is None or kept[0] is not raw:
        with db.wrap_database_errors:
            cursor = db.create_cursor()
        _readying(cursor)
        kept = db.__dict__[KEPT_CURSOR] = (raw, cursor)
    with db.wrap_database_errors:
        yield kept[1]


EVSE_BUILD = _builder(Evse, EVSE_FIELDS)
LOCATION_BUILD = _builder(Location, LOCATION_FIELDS)
PARTNER_BUILD = _builder(Partner, PARTNER_FIELDS)
CONNECTOR_BUILD = _builder(Connector, CONNECTOR_FIELDS)
TARIFF_BUILD = _builder(Tariff, TARIFF_FIELDS)
ITEM_PARTNER_BUILD = _builder(Partner, ITEM_PARTNER_FIELDS)


def _read_chunk(
    cursor: Any, sql: str, params: dict[str, Any], read: int, hidden_at: int | None = None
) -> list[tuple[Any, ...]]:
    """The rows of one chunk: `read` EVSEs ranked, more while the tie at the chunk's end was not read whole. With
    `hidden_at` (the visibility column), rows that hold a hidden EVSE are returned at once, the tie unfinished: the
    caller reads the chunk again with the check (a hidden depot's 300 EVSEs at one point had been read whole, in
    five statements, before that)."""
    while True:
        cursor.execute(sql.replace("{read}", str(read)), params)
        rows = cursor.fetchall()
        if not rows:
            return rows
        if hidden_at is not None and any(not row[hidden_at] for row in rows):
            return rows
        got, farthest, boundary = rows[-1][-2], rows[-1][-1], rows[-1][-3]
        if got < read or farthest > boundary:  # the tie at the chunk's end was read whole
            return rows
        read *= 2  # more EVSEs as far as the chunk's last: read on to the end of the tie


def nearest_candidates(
    *,
    latitude: float,
    longitude: float,
    radius_m: float,
    now: datetime,
    window: tuple[datetime, datetime] | None,
    available_now: bool,
    min_power_w: int | None,
    partner_ids: list[int] | None,
    party: tuple[str, str] | None = None,
    connector_types: set[str],
    power_types: Collection[str] = (),
    offset: int,
    count: int,
) -> tuple[list[Evse], set[int], dict[int, list[Connector]], bool, int | None]:
    """The nearest EVSEs within the radius that pass search's candidate filters (beckn/catalogue.py), `count`
    of them from the `offset`-th in (distance, id) order: the visible ones, each with its location and partner;
    the ids of those held for a booking of ours (now, or in `window`); their connectors; whether more lie
    beyond them (visible or not); and the tariffs' generation (billing/tariff_cache.py) for valid_tariffs."""
    point = nearest.point_sql("e")
    start, end = window or (now, now + timedelta(seconds=1))
    params: dict[str, Any] = {
        "here": nearest.cube_text(latitude, longitude),
        "reach": nearest.reach(radius_m),
        "start": start,
        "end": end,
    }
    where = [
        "e.has_connectors",
        f"e.status NOT IN ({HIDDEN_SQL})",
        f"{point} <@ cube_enlarge(%(here)s::cube, %(reach)s, 3)",
        f"{point} <-> %(here)s::cube <= %(reach)s",
    ]
    if available_now:
        where.append("e.status = %(available)s")
        params["available"] = str(Evse.Status.AVAILABLE)
    if min_power_w:
        where.append("e.max_power_w >= %(min_power)s")
        params["min_power"] = min_power_w
    if partner_ids is not None:
        listed = _listed(params, "partner", partner_ids)
        of_party = ""
        if party is not None:  # the provider is the location's party (catalogue.provider_id), not the partner
            params["party_cc"], params["party_id"] = party
            of_party = " AND UPPER(country_code) = %(party_cc)s AND UPPER(party_id) = %(party_id)s"
        where.append(f"e.location_id IN (SELECT id FROM emsp_location WHERE partner_id IN ({listed}){of_party})")  # noqa: S608 - placeholders
    if connector_types or power_types:  # one connector of the EVSE has both
        wanted = ["x.evse_id = e.id"]
        if connector_types:
            wanted.append(f"x.standard IN ({_listed(params, 'type', sorted(connector_types))})")
        if power_types:
            wanted.append(f"x.power_type IN ({_listed(params, 'current', sorted(power_types))})")
        where.append(f"EXISTS (SELECT 1 FROM emsp_connector x WHERE {' AND '.join(wanted)})")  # noqa: S608
    # Constants are literals, lists IN lists and LIMIT/OFFSET numbers in the text: with arrays (`= ANY(%s)`) and
    # LIMIT as a parameter, PostgreSQL never took a generic plan for the prepared statement at 1 M EVSEs
    # (pg_prepared_statements: 0 generic, every call custom) and planned it on each search: 1.1 ms of planning
    # against 0.6 ms of execution (EXPLAIN ANALYZE). A few texts (one per filter shape and chunk) are prepared.
    # `ranked`: the nearest candidates straight from the KNN index scan, ordered by distance alone (an
    # ORDER BY with the id as well made PostgreSQL read and sort the whole box instead: 3.4 ms against 0.5 ms
    # at 10 M EVSEs, EXPLAIN ANALYZE). Ties (EVSEs of one location) are ordered by id in `chosen`, which is
    # exact when the tie at the chunk's end was read whole: checked below from `ranked`'s size and farthest.
    # Only EVSEs of locations the catalogue shows (not withdrawn, to publish, of a listed partner) are ranked, as
    # on the ORM path: hidden ones take no place among the candidates (a depot not to publish at the searched
    # point once filled every place, and visible chargers a few hundred metres away were never shown). Checked as
    # the KNN scan reads (`exact`: a lookup by the location's primary key per EVSE read) it cost 10-15 % of a
    # search (bench/bench_beckn.py --part query, 1 M EVSEs: ratio 1.84-1.94 without, 2.05-2.19 with), so the
    # first chunk is read without it, and read again with it only when a hidden EVSE is among its rows (the
    # visibility column): with none there, both give the same rows (`more` may then count a hidden EVSE beyond
    # them: one more chunk read, which finds nothing). Later chunks always use `exact`, so their offsets count
    # visible EVSEs only.
    exact = [*where, f"EXISTS (SELECT 1 FROM emsp_location l WHERE l.id = e.location_id AND {LISTED_LOCATION_SQL})"]  # noqa: S608 - constants
    statement = f"""
        WITH ranked AS (
            SELECT {EVSE_COLUMNS}, {point} <-> %(here)s::cube AS nearness
            FROM emsp_evse e WHERE {{where}}
            ORDER BY {point} <-> %(here)s::cube LIMIT {{read}}
        ), chosen AS (
            SELECT * FROM ranked ORDER BY nearness, id OFFSET {int(offset)} LIMIT {int(count)}
        )
        SELECT {SHOWN_COLUMNS},
               EXISTS (SELECT 1 FROM emsp_reservation r WHERE r.evse_id = e.id AND r.status IN ({HOLDING_SQL})
                       AND r.start_at < %(end)s AND r.expiry_at > %(start)s),
               {tariff_cache.GENERATION_SQL},
               e.nearness, (SELECT count(*) FROM ranked), (SELECT max(nearness) FROM ranked)
        FROM chosen e
        JOIN emsp_location l ON l.id = e.location_id JOIN emsp_partner p ON p.id = l.partner_id
        LEFT JOIN emsp_connector c ON c.evse_id = e.id
        ORDER BY e.nearness, e.id, c.connector_id"""  # noqa: S608 - names from model metadata, values as parameters
    ne = len(EVSE_FIELDS)
    with _cursor() as cursor:
        if offset == 0:
            rows = _read_chunk(cursor, statement.replace("{where}", " AND ".join(where)), params, count + 1, ne)
            if any(not row[ne] for row in rows):  # a hidden EVSE took a place: read the chunk again, exactly
                rows = _read_chunk(cursor, statement.replace("{where}", " AND ".join(exact)), params, count + 1)
        else:
            rows = _read_chunk(cursor, statement.replace("{where}", " AND ".join(exact)), params, offset + count + 1)
    more = bool(rows) and rows[-1][-2] > offset + count
    generation = rows[0][-4] if rows else None
    # One row per connector (an EVSE without one: a row of NULLs), an EVSE's rows together.
    nl, np_, nc = len(LOCATION_FIELDS), len(PARTNER_FIELDS), len(CONNECTOR_FIELDS)
    at_location, at_partner = ne + 1, ne + 1 + nl
    at_connector = at_partner + np_
    at_held = at_connector + nc
    evses: list[Evse] = []
    held: set[int] = set()
    connectors: dict[int, list[Connector]] = {}
    locations: dict[int, Location] = {}
    partners: dict[int, Partner] = {}
    # What `set_cached_value` writes, written straight to each new instance's cache (the builders start it).
    location_cache = Evse.location.field.cache_name  # type: ignore[attr-defined]
    partner_cache = Location.partner.field.cache_name  # type: ignore[attr-defined]
    evse_cache = Connector.evse.field.cache_name  # type: ignore[attr-defined]
    alias = DEFAULT_DB_ALIAS
    build_evse, build_location = _maker(EVSE_BUILD, alias), _maker(LOCATION_BUILD, alias)
    build_partner, build_connector = _maker(PARTNER_BUILD, alias), _maker(CONNECTOR_BUILD, alias)
    evse: Evse | None = None
    evse_connectors: list[Connector] = []
    current = None
    for row in rows:
        if row[0] != current:
            current, evse = row[0], None
            if not row[ne]:  # its location is not shown (checked in `ranked` already: kept as a guard)
                continue
            evse = build_evse(row[:ne])
            location = locations.get(row[at_location])
            if location is None:
                location = locations[row[at_location]] = build_location(row[at_location:at_partner])
                partner = partners.get(row[at_partner])
                if partner is None:
                    partner = partners[row[at_partner]] = build_partner(row[at_partner:at_connector])
                location._state.fields_cache[partner_cache] = partner
            evse._state.fields_cache[location_cache] = location
            evse_connectors = connectors[current] = []
            if row[at_held]:
                held.add(current)
            evses.append(evse)
        if evse is not None and row[at_connector] is not None:
            connector = build_connector(row[at_connector:at_held])
            connector._state.fields_cache[evse_cache] = evse
            evse_connectors.append(connector)
    return evses, held, connectors, more, generation


def valid_tariffs(keys: set[str], now: datetime, generation: int | None) -> dict[str, Tariff]:
    """The tariffs with these keys that are valid at `now`, by key (catalogue._tariffs_for in plain SQL), kept
    between searches under the tariffs' `generation` that nearest_candidates read (billing/tariff_cache.py)."""
    return tariff_cache.valid_tariffs(keys, now, generation, _tariffs_with)


TARIFFS_SQL = f"SELECT {TARIFF_COLUMNS} FROM billing_tariff t WHERE t.ocpi_key = ANY(%s)"  # noqa: S608


def _tariffs_with(keys: list[str]) -> list[Tariff]:
    """Every tariff with one of these keys, valid or not."""
    with _cursor() as cursor:
        cursor.execute(TARIFFS_SQL, [keys])
        rows = cursor.fetchall()
    build = _maker(TARIFF_BUILD, DEFAULT_DB_ALIAS)
    return [build(row) for row in rows]


def item_evse(
    *, location_id: str, evse_uid_key: str, party: tuple[str, str] | None, listed: bool = True
) -> Evse | None:
    """The EVSE a Beckn item names (catalogue.find_item's query in plain SQL), with its location and partner
    built as search builds them: the EVSE of that uid at the location of that id (any case), of that party when
    given, at a location the catalogue shows (LISTED_SQL), the first by id. A profile of on_select showed the ORM
    query costing 3.5 ms of CPU to compile and load (three models' every column), a sixth of a select;
    `tests/beckn/test_find_item.py` holds this to the same answers."""
    where = ["e.uid_key = %s", "UPPER(l.location_id) = UPPER(%s)"]
    if listed:
        where.append(LISTED_SQL)  # only what search can show
    params: list[Any] = [evse_uid_key, location_id]
    if party is not None:
        where.append("UPPER(l.country_code) = %s AND UPPER(l.party_id) = %s")  # the location's party (provider_id)
        params += list(party)
    sql = (
        f"SELECT {ITEM_COLUMNS}, {tariff_cache.GENERATION_SQL} FROM emsp_evse e "  # noqa: S608
        f"JOIN emsp_location l ON l.id = e.location_id JOIN emsp_partner p ON p.id = l.partner_id "
        f"WHERE {' AND '.join(where)} ORDER BY e.id LIMIT 1"
    )
    with _cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    alias = DEFAULT_DB_ALIAS
    ne, nl = len(EVSE_FIELDS), len(LOCATION_FIELDS)
    evse = _maker(EVSE_BUILD, alias)(row[:ne])
    location = _maker(LOCATION_BUILD, alias)(row[ne : ne + nl])
    partner = _maker(ITEM_PARTNER_BUILD, alias)(row[ne + nl : -1])
    # The tariffs' generation as of this statement: the item's tariffs (its hit, its quote) from the keep.
    evse.__dict__[tariff_cache.GENERATION_ATTRIBUTE] = row[-1]
    Location.partner.field.set_cached_value(location, partner)  # type: ignore[attr-defined]
    Evse.location.field.set_cached_value(evse, location)  # type: ignore[attr-defined]
    return evse
