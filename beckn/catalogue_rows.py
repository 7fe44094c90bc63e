"""Catalogue search's hot path on PostgreSQL: the nearest candidates, with their location, partner and holds,
in one plain-SQL statement on the GiST KNN index (emsp/nearest.py), then their connectors in a second, built
into model instances as the ORM would build them.

Why not the ORM here: a profile of `beckn.catalogue.search` at 1 M EVSEs (cProfile, docs/benchmarks.md, issue
15) showed a search spending more on compiling its five ORM queries and building their objects than PostgreSQL
spent answering them. The SQL below is what those queries asked for, joined; `tests/beckn/test_search_nearest.py`
holds it to the same answers as the ORM path (`catalogue._hits_among`) on random catalogues and filters.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db import connection
from django.db.models import Field, JSONField, Model

from emsp import nearest
from emsp.models import Connector, Evse, Location, Partner, Reservation

# What the ORM path loads (beckn/catalogue.py `_hits_among` defers the same): the rest is loaded when read.
EVSE_FIELDS = [f for f in Evse._meta.concrete_fields if f.attname != "data"]
LOCATION_FIELDS = [f for f in Location._meta.concrete_fields if f.attname != "data"]
# The partner's name and keys, what a catalogue shows of it (its other columns load when read).
PARTNER_SHOWN = ("id", "name", "country_code", "party_id", "role", "state", "support_phone", "support_email", "website")
PARTNER_FIELDS = [f for f in Partner._meta.concrete_fields if f.attname in PARTNER_SHOWN]
CONNECTOR_FIELDS = [f for f in Connector._meta.concrete_fields if f.attname != "data"]
HIDDEN = [Evse.Status.REMOVED, Evse.Status.OUTOFORDER, Evse.Status.INOPERATIVE, Evse.Status.PLANNED]


def _columns(alias: str, fields: list[Field]) -> str:
    return ", ".join(f'{alias}."{f.column}"' for f in fields)


def _builder(model: type[Model], fields: list[Field]) -> tuple[list[str], list[int]]:
    return [f.attname for f in fields], [i for i, f in enumerate(fields) if isinstance(f, JSONField)]


def _build(model: type[Model], names: list[str], json_at: list[int], values: Any) -> Any:
    values = list(values)
    for i in json_at:  # the driver hands JSON columns over as text, as the ORM's converters expect
        if isinstance(values[i], str):
            values[i] = orjson.loads(values[i])
    return model.from_db(connection.alias, names, values)


EVSE_BUILD = _builder(Evse, EVSE_FIELDS)
LOCATION_BUILD = _builder(Location, LOCATION_FIELDS)
PARTNER_BUILD = _builder(Partner, PARTNER_FIELDS)
CONNECTOR_BUILD = _builder(Connector, CONNECTOR_FIELDS)


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
    connector_types: set[str],
    offset: int,
    count: int,
) -> tuple[list[Evse], set[int], dict[int, list[Connector]], int]:
    """The nearest EVSEs within the radius that pass search's candidate filters (beckn/catalogue.py), up to
    `count` from the `offset`-th (ties by id): the visible ones, each with its location and partner; the ids of
    those held for a booking of ours (now, or in `window`); their connectors; and how many were read (visible
    or not: fewer than `count` means there are no more)."""
    point = nearest.point_sql("e")
    here = nearest.unit_vector(latitude, longitude)
    reach = nearest.chord(radius_m) * (1 + 1e-9) + 1e-12
    start, end = window or (now, now + timedelta(seconds=1))
    where = ["e.has_connectors", "e.status <> ALL(%s)"]
    params: list[Any] = [HIDDEN]
    held_params = [list(Reservation.ACTIVE_STATUSES), end, start]
    if available_now:
        where.append("e.status = %s")
        params.append(Evse.Status.AVAILABLE)
    if min_power_w:
        where.append("e.max_power_w >= %s")
        params.append(min_power_w)
    if partner_ids is not None:
        where.append("e.location_id IN (SELECT id FROM emsp_location WHERE partner_id = ANY(%s))")
        params.append(partner_ids)
    if connector_types:
        where.append("EXISTS (SELECT 1 FROM emsp_connector c WHERE c.evse_id = e.id AND c.standard = ANY(%s))")
        params.append(sorted(connector_types))
    where.append(f"{point} <@ cube_enlarge(cube(%s::float8[]), %s, 3) AND {point} <-> cube(%s::float8[]) <= %s")
    params += [here, reach, here, reach, count, offset]
    # The nearest EVSEs first (the KNN scan reads them from the index and stops), then their locations: a
    # location not shown in the catalogue (withdrawn, or not to publish) costs its EVSEs their place but
    # gives no hit, as on the ORM path.
    sql = f"""
        SELECT {_columns("e", EVSE_FIELDS)}, (l.withdrawn_at IS NULL AND l.publish),
               {_columns("l", LOCATION_FIELDS)}, {_columns("p", PARTNER_FIELDS)},
               EXISTS (SELECT 1 FROM emsp_reservation r WHERE r.evse_id = e.id AND r.status = ANY(%s)
                       AND r.start_at < %s AND r.expiry_at > %s)
        FROM (SELECT {_columns("e", EVSE_FIELDS)}, {point} <-> cube(%s::float8[]) AS nearness
              FROM emsp_evse e WHERE {" AND ".join(where)}
              ORDER BY nearness, e.id LIMIT %s OFFSET %s) e
        JOIN emsp_location l ON l.id = e.location_id JOIN emsp_partner p ON p.id = l.partner_id
        ORDER BY e.nearness, e.id"""  # noqa: S608 - names from model metadata, values as parameters
    params = [*held_params, here, *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    ne, nl, np_ = len(EVSE_FIELDS), len(LOCATION_FIELDS), len(PARTNER_FIELDS)
    evses: list[Evse] = []
    held: set[int] = set()
    locations: dict[int, Location] = {}
    partners: dict[int, Partner] = {}
    location_cache, partner_cache = Evse.location.field, Location.partner.field  # type: ignore[attr-defined]
    for row in rows:
        if not row[ne]:
            continue
        evse = _build(Evse, *EVSE_BUILD, row[:ne])
        location_id, partner_id = row[ne + 1], row[ne + 1 + nl]
        location = locations.get(location_id)
        if location is None:
            location = locations[location_id] = _build(Location, *LOCATION_BUILD, row[ne + 1 : ne + 1 + nl])
            partner = partners.get(partner_id)
            if partner is None:
                partner = partners[partner_id] = _build(Partner, *PARTNER_BUILD, row[ne + 1 + nl : ne + 1 + nl + np_])
            partner_cache.set_cached_value(location, partner)
        location_cache.set_cached_value(evse, location)
        if row[-1]:
            held.add(evse.pk)
        evses.append(evse)
    return evses, held, connectors_of(evses), len(rows)


def connectors_of(evses: list[Evse]) -> dict[int, list[Connector]]:
    """The EVSEs' connectors (each pointing back at its loaded EVSE), in connector id order."""
    by_evse: dict[int, list[Connector]] = {evse.pk: [] for evse in evses}
    if not evses:
        return by_evse
    with connection.cursor() as cursor:
        sql = f"SELECT {_columns('c', CONNECTOR_FIELDS)} FROM emsp_connector c WHERE c.evse_id = ANY(%s)"  # noqa: S608
        cursor.execute(sql + " ORDER BY c.evse_id, c.connector_id", [list(by_evse)])
        rows = cursor.fetchall()
    evse_by_id = {evse.pk: evse for evse in evses}
    evse_cache = Connector.evse.field  # type: ignore[attr-defined]
    for row in rows:
        connector = _build(Connector, *CONNECTOR_BUILD, row)
        evse_cache.set_cached_value(connector, evse_by_id[connector.evse_id])
        by_evse[connector.evse_id].append(connector)
    return by_evse
