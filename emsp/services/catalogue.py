"""The catalogue: storing CPOs' locations, EVSEs and connectors (pushed one at a time or pulled in bulk).

Input is already normalised by the adapter: OCPI-shaped dicts, kept whole in `data`. Writes are bulk upserts
keyed by the case-insensitive OCPI ids; an object older than the one we hold is ignored (out-of-order pushes).

Lock order: every write locks its rows parent first, the Location, then the EVSE, then the connector (a batch its
locations in the order of their keys), so a pulled page, a location PUT and the pushes of its EVSEs and
connectors queue behind each other instead of deadlocking. The Location's lock also makes the writes of a
location's children one at a time: two PUTs of one new EVSE or connector queue on it, and the second finds the
first's row. A write that is PostgreSQL's deadlock victim all the same (a lock another module takes first) is run
again (`retried_on_deadlock`).
"""

from __future__ import annotations

import functools
import logging
import math
import operator
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import orjson
from django.db import OperationalError, connection, transaction
from django.db.models import Exists, F, Model, OuterRef, Subquery
from django.db.models.functions import Greatest
from django.utils import timezone

from emsp import bulk, events
from emsp.datetimes import parse_utc
from emsp.expressions import JsonMerge
from emsp.models import Connector, Evse, Location, Partner, ci_key
from emsp.ports import cpo_gateway
from emsp.rows import first_where
from emsp.services.partners import party_holders

log = logging.getLogger(__name__)

BATCH = 500

# Column order of the bulk writes (emsp.bulk); column names equal the models' attribute names.
LOCATION_COLUMNS = (
    "partner_id",
    "country_code",
    "party_id",
    "location_id",
    "ocpi_key",
    "name",
    "address",
    "city",
    "postal_code",
    "state",
    "country",
    "latitude",
    "longitude",
    "time_zone",
    "publish",
    "last_updated",
    "data",
    "withdrawn_at",
    "received_at",
)
EVSE_COLUMNS = (
    "location_id",
    "uid",
    "uid_key",
    "evse_id",
    "status",
    "capabilities",
    "latitude",
    "longitude",
    "max_power_w",
    "has_connectors",
    "last_updated",
    "status_updated_at",
    "data",
)
CONNECTOR_COLUMNS = (
    "evse_id",
    "connector_id",
    "id_key",
    "standard",
    "format",
    "power_type",
    "max_voltage",
    "max_amperage",
    "max_electric_power",
    "tariff_ids",
    "last_updated",
    "data",
)


class LocationNotHeld(Exception):
    """The location is under another connection than its writer's: its party moved off the writer since the
    writer's instance read its parties (ocpi/transport.py caches them for seconds). Nothing was written."""


P = ParamSpec("P")
R = TypeVar("R")
DEADLOCK_RETRIES = 2
_DEADLOCK_DETECTED = "40P01"  # PostgreSQL's SQLSTATE for the transaction it rolled back to end a deadlock


def retried_on_deadlock(write: Callable[P, R]) -> Callable[P, R]:
    """`write`, run again (up to DEADLOCK_RETRIES times) when PostgreSQL ends a deadlock by rolling it back. Only
    where it is a transaction of its own: rolled back whole, with the subscribers' writes of the events it
    published and their on_commit work, running it again is the request coming again a moment later (a stamp
    already applied applies again, the same). Inside an outer transaction the deadlock is the outer one's: it
    propagates. The lock order (module docstring) leaves the catalogue's writes none among themselves; this is
    the net for a lock another module takes first, where the CPO had had a 3000 and a pull a batch lost."""

    @functools.wraps(write)
    def retrying(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            return write(*args, **kwargs)
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return write(*args, **kwargs)
            except OperationalError as exc:
                if getattr(exc.__cause__, "sqlstate", None) != _DEADLOCK_DETECTED:
                    raise
                log.warning("%s: deadlock victim, run again (%d)", write.__qualname__, attempt + 1)
        return write(*args, **kwargs)

    return retrying


@dataclass
class StoreResult:
    created: int = 0
    updated: int = 0
    ignored_older: int = 0
    not_held: int = 0  # of a party granted to another connection since the writer read its parties: not written
    created_keys: set[str] = field(default_factory=set)
    status_changes: list[tuple[int, str, str]] = field(default_factory=list)  # (evse pk, old, new)

    def __iadd__(self, other: StoreResult) -> StoreResult:
        self.created += other.created
        self.updated += other.updated
        self.ignored_older += other.ignored_older
        self.not_held += other.not_held
        self.created_keys |= other.created_keys
        self.status_changes += other.status_changes
        return self


def location_key(country_code: str, party_id: str, location_id: str) -> str:
    return ci_key(country_code, party_id, location_id)


def _coordinates(obj: dict[str, Any]) -> tuple[float, float] | None:
    coordinates = obj.get("coordinates")
    if not isinstance(coordinates, dict):
        return None
    try:
        return float(coordinates["latitude"]), float(coordinates["longitude"])
    except (KeyError, TypeError, ValueError):
        return None


def connector_power_w(connector: dict[str, Any]) -> int | None:
    power = connector.get("max_electric_power")
    return int(power) if isinstance(power, int | float) and power > 0 else None


def _evse_max_power(evse: dict[str, Any]) -> int | None:
    powers = [p for p in (connector_power_w(c) for c in evse.get("connectors") or []) if p]
    return max(powers) if powers else None


def _location_values(partner_id: int, obj: dict[str, Any], last_updated: datetime, now: datetime) -> dict[str, Any]:
    latitude, longitude = _coordinates(obj) or (0.0, 0.0)
    return {
        "partner_id": partner_id,
        "country_code": obj["country_code"],
        "party_id": obj["party_id"],
        "location_id": obj["id"],
        "ocpi_key": location_key(obj["country_code"], obj["party_id"], obj["id"]),
        "name": (obj.get("name") or "")[:255],
        "address": (obj.get("address") or "")[:255],
        "city": (obj.get("city") or "")[:45],
        "postal_code": (obj.get("postal_code") or "")[:10],
        "state": (obj.get("state") or "")[:45],
        "country": (obj.get("country") or "")[:3],
        "latitude": latitude,
        "longitude": longitude,
        "time_zone": obj.get("time_zone") or "UTC",
        "publish": bool(obj.get("publish", True)),
        "last_updated": last_updated,
        "data": {k: v for k, v in obj.items() if k != "evses"},
        "withdrawn_at": None,
        "received_at": now,
    }


def _evse_values(
    location_id: int, evse: dict[str, Any], location_coordinates: tuple[float, float], now: datetime
) -> dict[str, Any]:
    latitude, longitude = _coordinates(evse) or location_coordinates
    return {
        "location_id": location_id,
        "uid": evse["uid"],
        "uid_key": ci_key(evse["uid"]),
        "evse_id": (evse.get("evse_id") or "")[:48],
        "status": evse.get("status") or Evse.Status.UNKNOWN,
        "capabilities": list(evse.get("capabilities") or []),
        "latitude": latitude,
        "longitude": longitude,
        "max_power_w": _evse_max_power(evse),
        "has_connectors": bool(evse.get("connectors")),
        "last_updated": parse_utc(evse["last_updated"]) if evse.get("last_updated") else now,
        "status_updated_at": now,
        "data": {k: v for k, v in evse.items() if k != "connectors"},
    }


def _connector_values(evse_id: int, connector: dict[str, Any], fallback_updated: datetime) -> dict[str, Any]:
    return {
        "evse_id": evse_id,
        "connector_id": connector["id"],
        "id_key": ci_key(connector["id"]),
        "standard": connector.get("standard") or "",
        "format": connector.get("format") or "",
        "power_type": connector.get("power_type") or "",
        "max_voltage": connector.get("max_voltage"),
        "max_amperage": connector.get("max_amperage"),
        "max_electric_power": connector_power_w(connector),
        "tariff_ids": list(connector.get("tariff_ids") or []),
        "last_updated": parse_utc(connector["last_updated"]) if connector.get("last_updated") else fallback_updated,
        "data": connector,
    }


@functools.cache
def _getter(columns: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    get = operator.itemgetter(*columns)
    return get if len(columns) > 1 else lambda values: (get(values),)


def _row(values: dict[str, Any], columns: tuple[str, ...]) -> tuple[Any, ...]:
    """The values in `columns` order (one itemgetter per column list: a generator per row was 9 % of an ingest)."""
    return _getter(columns)(values)


def locations_store(partner: Partner, locations: Iterable[dict[str, Any]]) -> StoreResult:
    """Create or replace whole Locations with their EVSEs and connectors, in bulk.

    EVSEs missing from a replaced Location are marked REMOVED rather than deleted (OCPI never deletes an
    EVSE, and reservations and sessions keep pointing at it). Connectors are replaced wholesale: one left out is
    deleted, and its EVSE's last_updated is what keeps a late PUT of it out (`connector_put`).
    """
    now = timezone.now()
    incoming: dict[str, tuple[dict[str, Any], datetime]] = {}
    for obj in locations:
        last_updated = parse_utc(obj["last_updated"])
        key = location_key(obj["country_code"], obj["party_id"], obj["id"])
        if key not in incoming or incoming[key][1] <= last_updated:
            incoming[key] = (obj, last_updated)
    result = StoreResult()
    keys = list(incoming)
    for start in range(0, len(keys), BATCH):
        result += _store_in_transaction(partner, {k: incoming[k] for k in keys[start : start + BATCH]}, now)
    return result


@retried_on_deadlock
def _store_in_transaction(
    partner: Partner, batch: dict[str, tuple[dict[str, Any], datetime]], now: datetime
) -> StoreResult:
    """One batch in a transaction of its own (a pull's page is stored batch by batch): run again whole when it is
    a deadlock's victim."""
    with transaction.atomic():
        bulk.relax_durability()
        batch_result = _store_batch(partner, batch, now)
        for change in batch_result.status_changes:
            events.publish(events.EvseStatusChanged(*change))
    return batch_result


def _store_batch(partner: Partner, batch: dict[str, tuple[dict[str, Any], datetime]], now: datetime) -> StoreResult:
    result = StoreResult()
    # The batch's first lock: the locations we hold of it, in the order of their keys, read as they stand under
    # it (one statement, as the unlocked read was). A PUT of one of them committed while the batch had already
    # read it had been written over by the batch's older copy.
    existing = {
        key: (last_updated, withdrawn_at, partner_id)
        for key, last_updated, withdrawn_at, partner_id in bulk.values_in(
            Location, "ocpi_key", list(batch), ("ocpi_key", "last_updated", "withdrawn_at", "partner_id"), locked=True
        )
    }
    locations: list[dict[str, Any]] = []
    restored: list[str] = []
    taken: dict[int, list[str]] = {}  # keys whose owner becomes the writer, by the owner they were read with
    # The holders of the parties of objects new here or held under another connection, in one query a batch (the
    # common write, an object of the writer's own, asks nothing).
    holders = party_holders(
        {
            (obj["country_code"], obj["party_id"])
            for key, (obj, _) in batch.items()
            if existing.get(key) is None or existing[key][2] != partner.pk
        }
    )
    for key, (obj, last_updated) in batch.items():
        held = existing.get(key)
        if held is None or held[2] != partner.pk:
            # New here, or held under another connection: whose party is it now, as the database says? The writer
            # passed the party check against the parties its instance read (a pull goes on for minutes with them;
            # OCPI requests are answered from a partner cached for seconds, ocpi/transport.py): a party moved off
            # it since is not written, neither a new object nor data over its holder's. A party it holds takes
            # the object over (moved to it: emsp/services/partners.py::party_objects_moved).
            holder_pk = holders.get(ci_key(obj["country_code"], obj["party_id"]))
            if holder_pk is not None and holder_pk != partner.pk:
                result.not_held += 1
                continue
            if held is not None and holder_pk == partner.pk:
                taken.setdefault(held[2], []).append(key)
        if held is not None and last_updated < held[0]:
            result.ignored_older += 1
            if held[1] is not None:
                restored.append(key)
            continue
        if held is None:
            result.created += 1
            result.created_keys.add(key)
        else:
            result.updated += 1
        locations.append(_location_values(partner.pk, obj, last_updated, now))
    # Its locations written in the order of their keys (bulk.upsert): those we held are locked already, in that
    # order, and new ones are inserted in it, so another batch or a PUT of some of them queues behind this one
    # rather than deadlocking; a write of one of their EVSEs or connectors waits for it too (it locks the
    # location first). The updates below touch rows locked above.
    written = bulk.upsert(
        Location,
        LOCATION_COLUMNS,
        [_row(v, LOCATION_COLUMNS) for v in locations],
        conflict=("ocpi_key",),
        update=[c for c in LOCATION_COLUMNS if c not in ("partner_id", "ocpi_key")],
        returning=("ocpi_key", "id"),
    )
    if restored:
        # Listed (or PUT) by its CPO again: not gone, whatever its stamp. One we withdrew whose last_updated an
        # EVSE or connector push had moved past the CPO's own stayed withdrawn for good, every listing of it
        # older than ours. Only the withdrawal is undone (the data we hold is newer); received now, as a stored
        # one is, so a full pull under way keeps it (`locations_withdraw_missing`).
        Location.objects.filter(ocpi_key__in=restored, withdrawn_at__isnull=False).update(
            withdrawn_at=None, received_at=now
        )
    for owner, keys in taken.items():
        # Only from the owner read above: a move committed since (a grant to another connection) stands. The
        # upsert above leaves partner_id alone for the same reason: set from a read made before it, it had put a
        # location moved meanwhile back under its old connection.
        Location.objects.filter(ocpi_key__in=keys, partner_id=owner).update(partner_id=partner.pk)
    if not locations:
        return result
    location_ids = dict(written)

    old_evses: dict[tuple[int, str], tuple[int, str]] = {
        (loc_id, uid_key): (pk, status)
        for pk, loc_id, uid_key, status in bulk.values_in(
            Evse, "location_id", list(location_ids.values()), ("id", "location_id", "uid_key", "status")
        )
    }
    evses: dict[tuple[int, str], dict[str, Any]] = {}  # a duplicate uid inside a location: the last one wins
    evse_objects: dict[tuple[int, str], dict[str, Any]] = {}
    for values in locations:
        loc_pk = location_ids[values["ocpi_key"]]
        location_coordinates = (values["latitude"], values["longitude"])
        for evse in batch[values["ocpi_key"]][0].get("evses") or []:
            evse_values = _evse_values(loc_pk, evse, location_coordinates, now)
            evses[(loc_pk, evse_values["uid_key"])] = evse_values
            evse_objects[(loc_pk, evse_values["uid_key"])] = evse
    written_evses = bulk.upsert(
        Evse,
        EVSE_COLUMNS,
        [_row(v, EVSE_COLUMNS) for v in evses.values()],
        conflict=("location_id", "uid_key"),
        update=[c for c in EVSE_COLUMNS if c not in ("location_id", "uid_key")],
        returning=("location_id", "uid_key", "id"),
    )
    evse_ids = {(loc_id, uid_key): pk for loc_id, uid_key, pk in written_evses}
    for key, values in evses.items():
        before = old_evses.get(key)
        if before is not None and before[1] != values["status"]:
            result.status_changes.append((before[0], before[1], values["status"]))
    left_out = {pk: status for key, (pk, status) in old_evses.items() if key not in evses}
    result.status_changes += _mark_removed(left_out, now)

    bulk.delete_in(Connector, "evse_id", [evse_ids[key] for key in evses])
    connectors = []
    for key, evse_obj in evse_objects.items():
        evse_pk = evse_ids[key]
        for connector in _unique_connectors(evse_obj):
            connectors.append(
                _row(_connector_values(evse_pk, connector, evses[key]["last_updated"]), CONNECTOR_COLUMNS)
            )
    bulk.insert(Connector, CONNECTOR_COLUMNS, connectors)
    return result


# The batch's locations we hold, locked in the order of their keys (bulk.upsert writes them, and inserts new ones,
# in that order), with what _store_batch compares. FOR NO KEY UPDATE, as the upsert's updates take them: an
# insert referring to one (a session, an EVSE) goes on.
def _mark_removed(left_out: dict[int, str], now: datetime) -> list[tuple[int, str, str]]:
    """The EVSEs (pk: status) a listing of their location leaves out are REMOVED as of the listing: their
    last_updated moves up to the location's, so a PATCH or PUT of one the CPO stamped before the listing, arriving
    after it, is older than what we hold and ignored (it had put a removed EVSE back AVAILABLE, and bookable).
    One already REMOVED has its stamp moved too where a later listing still leaves it out. The status changes."""
    if not left_out:
        return []
    as_of_listing = Greatest(
        F("last_updated"), Subquery(Location.objects.filter(pk=OuterRef("location_id")).values("last_updated")[:1])
    )
    gone = {pk: status for pk, status in left_out.items() if status != Evse.Status.REMOVED}
    if gone:
        Evse.objects.filter(pk__in=list(gone)).update(
            status=Evse.Status.REMOVED, status_updated_at=now, last_updated=as_of_listing
        )
    if len(gone) < len(left_out):
        stale = [pk for pk in left_out if pk not in gone]
        listed = Location.objects.filter(pk=OuterRef("location_id"), last_updated__gt=OuterRef("last_updated"))
        Evse.objects.filter(pk__in=stale).filter(Exists(listed)).update(last_updated=as_of_listing)
    return [(pk, status, Evse.Status.REMOVED) for pk, status in gone.items()]


def location_exists(location_id: str) -> bool:
    """Is a location with this OCPI id in the catalogue (of any CPO, not withdrawn)?"""
    return Location.objects.filter(location_id=location_id, withdrawn_at__isnull=True).exists()


def location_get(country_code: str, party_id: str, location_id: str) -> Location | None:
    return Location.objects.filter(ocpi_key=location_key(country_code, party_id, location_id)).first()


def evse_get(location: Location, evse_uid: str) -> Evse | None:
    return location.evses.filter(uid_key=ci_key(evse_uid)).first()


def location_held(location: Location, writer: Partner) -> bool:
    """May `writer` write the location (an EVSE or connector PUT, a PATCH)? Where it is under the writer's
    connection, yes, and nothing is asked. Else only where the database grants its party to the writer: one left
    under another connection (moved before party_objects_moved existed) becomes the writer's, as a PUT of it
    makes it (`_store_batch`), by a compare-and-set of the owner read. One whose party was moved off the writer
    since its instance read its parties is not: the writes below then match nothing (their `writer`)."""
    if location.partner_id == writer.pk:
        return True
    party = (location.country_code, location.party_id)
    if party_holders({party}).get(ci_key(*party)) != writer.pk:
        return False
    Location.objects.filter(pk=location.pk, partner_id=location.partner_id).update(partner_id=writer.pk)
    location.partner_id = Location.objects.filter(pk=location.pk).values_list("partner_id", flat=True).first()
    return location.partner_id == writer.pk


def _require_held(location_pk: int, writer: Partner | None) -> None:
    """First in the write of an EVSE or connector, in its transaction: lock the location's row (parent first,
    the module's lock order; FOR NO KEY UPDATE, as an update takes it, so an insert referring to the location goes
    on), and check it is still the writer's (a grant committed since the caller's read moved it to another
    connection: the EVSE or connector written is then another's, and nothing is). What the write reads after it
    is what the writes of the location before it left: a PUT of a new EVSE or connector finds the one a PUT of it
    just before made, rather than inserting it again (a unique constraint's 500)."""
    rows = Location.objects.select_for_update(no_key=True).filter(pk=location_pk)
    if writer is not None:
        rows = rows.filter(partner_id=writer.pk)
    if not list(rows.values_list("pk", flat=True)) and writer is not None:
        raise LocationNotHeld(f"location {location_pk} is not held by {writer}")


def _lock_evse(evse_pk: int) -> datetime | None:
    """The EVSE's row locked, after its location's and before its connectors' (the module's lock order); its
    last_updated as it stands under the lock (None: no such EVSE)."""
    return Evse.objects.select_for_update(no_key=True).filter(pk=evse_pk).values_list("last_updated", flat=True).first()


def connector_get(evse: Evse, connector_id: str) -> Connector | None:
    """The EVSE's connector of this id (any case), with its EVSE set, as `evse.connectors.filter().first()`."""
    connector = first_where(Connector, "t.evse_id = %s AND t.id_key = %s", [evse.pk, ci_key(connector_id)])
    if connector is not None:
        connector.evse = evse
    return connector


@dataclass
class PatchResult:
    applied: bool
    status_change: tuple[int, str, str] | None = None


def _stamp(patch: dict[str, Any]) -> datetime | None:
    """A PATCH's last_updated; None when the CPO stamped none (OCPI 2.1.1: optional there, and the normalizer
    lets one through only from 2.1.1). Only the CPO's clock orders its objects: such a PATCH is its newest word
    when it comes, applied over whatever we hold, and leaves the stored stamps (and the parents') as they are. Our
    clock's time, put on it, had made a CPO clock 90 s behind ours lose its next PUT, one ahead its PATCHes."""
    stamp = patch.get("last_updated")
    return parse_utc(stamp) if stamp else None


def _bump_parents(location: Location, last_updated: datetime, evse: Evse | None = None) -> None:
    """mod_locations: a change to an EVSE/connector updates its parents' last_updated."""
    Location.objects.filter(pk=location.pk, last_updated__lt=last_updated).update(last_updated=last_updated)
    if evse is not None:
        Evse.objects.filter(pk=evse.pk, last_updated__lt=last_updated).update(last_updated=last_updated)


def _save_over(row: Model, current: Model | None) -> None:
    """Write a row rebuilt from the OCPI object in place of the one we hold (or as a new one)."""
    if current is None:
        row.save(force_insert=True)
    else:
        row.pk = current.pk
        row.save(force_update=True)


@retried_on_deadlock
def evse_put(
    location: Location, evse_obj: dict[str, Any], *, writer: Partner | None = None
) -> tuple[Evse, bool, PatchResult]:
    """PUT one EVSE (with its connectors) under a known Location. With a `writer` (a CPO's PUT), only under a
    location of the writer's connection: else LocationNotHeld, nothing written."""
    now = timezone.now()
    last_updated = parse_utc(evse_obj["last_updated"])
    with transaction.atomic():
        _require_held(location.pk, writer)  # the location first, then the EVSE, read after it
        rows = Evse.objects.select_for_update(no_key=True).filter(location=location, uid_key=ci_key(evse_obj["uid"]))
        current = rows.first()
        if current is not None and last_updated < current.last_updated:
            return current, False, PatchResult(applied=False)
        row = Evse(**_evse_values(location.pk, evse_obj, (location.latitude, location.longitude), now))
        old_status = current.status if current else None
        _save_over(row, current)
        row.connectors.all().delete()
        Connector.objects.bulk_create(
            [Connector(**_connector_values(row.pk, c, last_updated)) for c in _unique_connectors(evse_obj)]
        )
        _bump_parents(location, last_updated)
        change = (row.pk, old_status, row.status) if old_status and old_status != row.status else None
        if change:
            events.publish(events.EvseStatusChanged(*change))
    return row, current is None, PatchResult(applied=True, status_change=change)


def _unique_connectors(evse_obj: dict[str, Any]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for connector in evse_obj.get("connectors") or []:
        seen.setdefault(ci_key(connector["id"]), connector)
    return list(seen.values())


@retried_on_deadlock
def connector_put(
    evse: Evse,
    connector_obj: dict[str, Any],
    *,
    writer: Partner | None = None,
    listed_as_of: datetime | None = None,
) -> tuple[Connector | None, bool, bool]:
    """PUT one connector. Returns (connector, created, applied); the connector is None where a new one is not
    stored, said to be there before its EVSE's last_updated (below). With a `writer` (a CPO's PUT), only under a
    location of the writer's connection: else LocationNotHeld, nothing written.

    A connector a listing of its location left out is deleted (`_store_batch` writes an EVSE's connectors anew),
    so none holds the time it went; its EVSE's last_updated does (mod_locations: it moves up with any change of a
    connector, and the listing stored it). A PUT of a connector we don't hold stamped before that is older than
    what we hold, as one of a connector we hold stamped before the connector's: ignored, answered as that one is
    (it had brought back a connector the CPO had listed the EVSE without, arriving after the listing). The EVSE's
    stamp moves with a PATCH of it too: a new connector's PUT that arrives after a later PATCH of its EVSE is
    ignored as well, until the CPO sends it again or the next pull lists it.

    `listed_as_of`: the stamp of a PATCH of the EVSE (or of its location) that lists the connector, which says it
    is there as of that stamp, whatever the connector's own (older, as a child's is): compared in its place
    where later. Without it, a new connector such a PATCH lists with a stamp of its own is older than the stamp
    the PATCH has just put on its EVSE, and ignored."""
    last_updated = parse_utc(connector_obj["last_updated"])
    said_at = last_updated if listed_as_of is None else max(last_updated, listed_as_of)
    with transaction.atomic():
        _require_held(evse.location_id, writer)  # the location first, then the EVSE, then the connector
        evse_updated = _lock_evse(evse.pk)
        rows = Connector.objects.select_for_update(no_key=True).filter(evse=evse, id_key=ci_key(connector_obj["id"]))
        current = rows.first()
        if current is not None and last_updated < current.last_updated:
            return current, False, False
        if current is None and evse_updated is not None and said_at < evse_updated:
            return None, False, False
        row = Connector(**_connector_values(evse.pk, connector_obj, last_updated))
        _save_over(row, current)
        _refresh_evse_power(evse)
        _bump_parents(evse.location, last_updated, evse)
    return row, current is None, True


def _refresh_evse_power(evse: Evse) -> None:
    powers = [p for p in evse.connectors.values_list("max_electric_power", flat=True) if p]
    Evse.objects.filter(pk=evse.pk).update(
        max_power_w=max(powers) if powers else None, has_connectors=bool(powers) or evse.connectors.exists()
    )


@retried_on_deadlock
def location_patch(location: Location, patch: dict[str, Any], *, writer: Partner | None = None) -> PatchResult:
    """PATCH a location. With a `writer` (a CPO's PATCH), the row is locked only where it is under the writer's
    connection (no query more): else LocationNotHeld, nothing written."""
    stamp = _stamp(patch)
    with transaction.atomic():
        # FOR NO KEY UPDATE, as the rest of the module locks it: an insert referring to the location (a session,
        # an EVSE) goes on while the PATCH runs. A PATCH keeps the key: its ids must be the URL's (any case,
        # ocpi/transport.py::patch_matches_url), and the key is case-insensitive (`location_key`).
        rows = Location.objects.select_for_update(no_key=True).filter(pk=location.pk)
        held = (rows if writer is None else rows.filter(partner_id=writer.pk)).first()
        if held is None:
            raise LocationNotHeld(f"location {location.pk} is not held by {writer}")
        location = held
        if stamp is not None and stamp < location.last_updated:
            return PatchResult(applied=False)
        last_updated = stamp or location.last_updated
        data = _patched_location(location.data, patch)
        row = Location(**_location_values(location.partner_id, {**data, "evses": []}, last_updated, timezone.now()))
        _save_over(row, location)
        if (row.latitude, row.longitude) != (location.latitude, location.longitude):
            _move_evses_with(row)
    return PatchResult(applied=True)


def _patched_location(stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The stored Location with a PATCH's fields over it (its EVSEs are stored apart). A field the PATCH sets to
    null is removed: a 2.1.1 `type` of OTHER or UNKNOWN, which no 2.2.1 ParkingType says, clears our parking_type
    (ocpi/versions/v211.py), where leaving it out had kept the old one."""
    cleared = {k for k, v in patch.items() if v is None}
    return {k: v for k, v in {**stored, **patch}.items() if k != "evses" and k not in cleared}


def _move_evses_with(location: Location) -> None:
    """A location moved (a PATCH of its coordinates): its EVSEs without coordinates of their own stand where it
    stands, as when they were stored (_evse_values: the EVSE's own coordinates, else its location's). Search finds
    EVSEs by their own latitude and longitude (the (latitude, longitude) index, and on PostgreSQL the GiST index on
    their expression, emsp/nearest.py, which follows the columns), so without this they stayed at the old place:
    not found at the new one, found at the old one and shown with the new gps. An EVSE with coordinates of its
    own (an OCPI EVSE's `coordinates`) keeps them. In the PATCH's transaction."""
    inherited = [
        pk
        for pk, data in Evse.objects.filter(location=location).values_list("pk", "data")
        if not isinstance(data, dict) or _coordinates(data) is None
    ]
    if inherited:
        Evse.objects.filter(pk__in=inherited).update(latitude=location.latitude, longitude=location.longitude)


@dataclass(frozen=True)
class EvseRef:
    """Just enough of an EVSE and its location to apply a PATCH."""

    pk: int
    status: str
    location_pk: int
    location_last_updated: datetime


_EVSE_REF_SQL = (
    "SELECT e.id, e.status, l.id, l.last_updated FROM emsp_evse e JOIN emsp_location l ON l.id = e.location_id "
    "WHERE l.ocpi_key = %s AND e.uid_key = %s"
)
# A writer's PATCH finds only an EVSE under its own connection (`evse_patch_at`).
_WRITER_SQL = " AND l.partner_id = %s"


def evse_ref(
    country_code: str, party_id: str, location_id: str, evse_uid: str, *, writer: Partner | None = None
) -> EvseRef | None:
    """The PATCH hot path's one lookup (plain SQL: building the ORM query cost more than running it); with a
    `writer`, of an EVSE under a location of the writer's connection only."""
    params: list[Any] = [location_key(country_code, party_id, location_id), ci_key(evse_uid)]
    sql = _EVSE_REF_SQL if writer is None else _EVSE_REF_SQL + _WRITER_SQL
    if writer is not None:
        params.append(writer.pk)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    last_updated = row[3]
    if isinstance(last_updated, str):
        last_updated = parse_utc(last_updated)
    elif timezone.is_naive(last_updated):  # SQLite keeps UTC without a zone
        last_updated = last_updated.replace(tzinfo=UTC)
    return EvseRef(pk=row[0], status=row[1], location_pk=row[2], location_last_updated=last_updated)


def _evse_patch_columns(patch: dict[str, Any], last_updated: datetime | None) -> dict[str, Any]:
    """What a PATCH sets on the EVSE row (the object's fields merged into `data`, its columns replaced; the stored
    last_updated kept by one the CPO stamped none on, `_stamp`)."""
    columns: dict[str, Any] = {"data": JsonMerge("data", {k: v for k, v in patch.items() if k != "connectors"})}
    if last_updated is not None:
        columns["last_updated"] = last_updated
    if "status" in patch:
        columns["status"] = patch["status"]
        columns["status_updated_at"] = timezone.now()
    if "capabilities" in patch:
        columns["capabilities"] = list(patch["capabilities"] or [])
    if "evse_id" in patch:
        columns["evse_id"] = (patch["evse_id"] or "")[:48]
    coordinates = _coordinates(patch)
    if coordinates:
        columns["latitude"], columns["longitude"] = coordinates
    return columns


def _status_change(evse_pk: int, old_status: str, patch: dict[str, Any]) -> tuple[int, str, str] | None:
    new_status = patch.get("status")
    return (evse_pk, old_status, new_status) if new_status and new_status != old_status else None


def evse_patch(evse: EvseRef, patch: dict[str, Any]) -> PatchResult:
    """PATCH an EVSE: the hot path of live availability. One conditional UPDATE (the database merges the
    fields into the stored object, and refuses a patch older than what we hold), then the location's
    last_updated when it moves forward (mod_locations: parents' last_updated follow). One without a stamp
    applies whatever we hold and moves none (`_stamp`)."""
    last_updated = _stamp(patch)
    columns = _evse_patch_columns(patch, last_updated)
    rows = Evse.objects.filter(pk=evse.pk)
    with transaction.atomic():  # one commit for both rows
        if connection.features.has_select_for_update:  # the location first (the module's lock order)
            list(Location.objects.select_for_update(no_key=True).filter(pk=evse.location_pk).values_list("pk"))
        if not (rows if last_updated is None else rows.filter(last_updated__lte=last_updated)).update(**columns):
            return PatchResult(applied=False)
        if last_updated is not None and evse.location_last_updated < last_updated:
            Location.objects.filter(pk=evse.location_pk, last_updated__lt=last_updated).update(
                last_updated=last_updated
            )
        change = _status_change(evse.pk, evse.status, patch)
        if change:
            events.publish(events.EvseStatusChanged(*change))
    return PatchResult(applied=True, status_change=change)


# The EVSE PATCH in one statement (PostgreSQL): the location found by its path and locked, then its EVSE (the
# module's lock order: the EVSE first, then the location's stamp, had deadlocked with a location PUT or pulled
# page, which lock the location, then its EVSEs), the EVSE updated unless the patch is older than what we hold, its
# location's last_updated moved forward; the status before, and whether it applied, come back. The EVSE is
# locked by `old` above the join with `loc`, whose row is locked when `loc` gives it: always after it. {sets} are
# the EVSE's columns (_evse_patch_sql); {writer} is empty or _WRITER_SQL (a CPO's PATCH: an EVSE under another
# connection's location is not found). FOR NO KEY UPDATE, as the updates take them: an insert referring to
# either row (a reservation, a session) goes on.
_EVSE_PATCH_SQL = """
WITH loc AS (
    SELECT l.id FROM emsp_location l WHERE l.ocpi_key = %s{writer} FOR NO KEY UPDATE
), old AS (
    SELECT e.id, e.status, e.location_id FROM emsp_evse e JOIN loc ON loc.id = e.location_id
    WHERE e.uid_key = %s FOR NO KEY UPDATE OF e
), changed AS (
    UPDATE emsp_evse e SET {sets} FROM old WHERE e.id = old.id AND e.last_updated <= %s RETURNING e.id
), bumped AS (
    UPDATE emsp_location l SET last_updated = %s FROM old
    WHERE l.id = old.location_id AND l.last_updated < %s AND EXISTS (SELECT 1 FROM changed) RETURNING l.id
)
SELECT old.id, old.status, EXISTS (SELECT 1 FROM changed) FROM old
"""
# The same for a PATCH the CPO stamped none on (`_stamp`): applied whatever we hold, no stamp moved.
_EVSE_PATCH_UNSTAMPED_SQL = """
WITH loc AS (
    SELECT l.id FROM emsp_location l WHERE l.ocpi_key = %s{writer} FOR NO KEY UPDATE
), old AS (
    SELECT e.id, e.status FROM emsp_evse e JOIN loc ON loc.id = e.location_id
    WHERE e.uid_key = %s FOR NO KEY UPDATE OF e
), changed AS (
    UPDATE emsp_evse e SET {sets} FROM old WHERE e.id = old.id RETURNING e.id
)
SELECT old.id, old.status, EXISTS (SELECT 1 FROM changed) FROM old
"""


def _evse_patch_sql(columns: dict[str, Any]) -> tuple[str, list[Any]]:
    """The SET list of _EVSE_PATCH_SQL with its parameters, for the columns _evse_patch_columns gives."""
    sets, params = [], []
    for name, value in columns.items():
        if isinstance(value, JsonMerge):
            sets.append(f'"{name}" = (e."{name}" || %s::jsonb)')
            params.append(value.patch)
        elif name == "capabilities":
            sets.append(f'"{name}" = %s::jsonb')
            params.append(orjson.dumps(value).decode())
        else:
            sets.append(f'"{name}" = %s')
            params.append(value)
    return ", ".join(sets), params


# A change into one of these has consequences that must commit with it (bookings on the EVSE are cancelled,
# emsp/services/bookings.py): its subscribers run in the statement's transaction. Other changes are facts
# only; their subscribers run after the statement, which commits on its own.
_CONSEQUENTIAL_STATUSES = frozenset(Evse.FAULT_STATUSES)


@retried_on_deadlock
def evse_patch_at(
    country_code: str,
    party_id: str,
    location_id: str,
    evse_uid: str,
    patch: dict[str, Any],
    *,
    writer: Partner | None = None,
) -> PatchResult | None:
    """PATCH the EVSE at a receiver path; None when we hold no such EVSE (with a `writer`, a CPO's PATCH: under a
    location of the writer's connection; the statement itself says so, so that one whose party was moved to
    another connection since the writer's parties were read is not touched, at no cost of a round trip). On
    PostgreSQL one statement and one round trip (the lookup, both updates and the commit were five: 1.2 ms of a
    3 ms PATCH in its profile); elsewhere evse_ref then evse_patch, which give the same rows
    (tests/emsp/test_evse_patch.py)."""
    if connection.vendor != "postgresql":
        ref = evse_ref(country_code, party_id, location_id, evse_uid, writer=writer)
        return None if ref is None else evse_patch(ref, patch)
    last_updated = _stamp(patch)
    sets, set_params = _evse_patch_sql(_evse_patch_columns(patch, last_updated))
    params: list[Any] = [location_key(country_code, party_id, location_id)]
    if writer is not None:
        params.append(writer.pk)
    params.append(ci_key(evse_uid))
    params += set_params
    if last_updated is not None:
        params += [last_updated, last_updated, last_updated]
    sql = _EVSE_PATCH_UNSTAMPED_SQL if last_updated is None else _EVSE_PATCH_SQL
    consequential = patch.get("status") in _CONSEQUENTIAL_STATUSES
    with transaction.atomic() if consequential else nullcontext():
        with connection.cursor() as cursor:
            cursor.execute(sql.format(sets=sets, writer="" if writer is None else _WRITER_SQL), params)
            row = cursor.fetchone()
        if row is None:
            return None
        evse_pk, old_status, applied = row
        if not applied:
            return PatchResult(applied=False)
        change = _status_change(evse_pk, old_status, patch)
        if change:
            events.publish(events.EvseStatusChanged(*change))
    return PatchResult(applied=True, status_change=change)


@retried_on_deadlock
def connector_patch(
    evse: Evse, connector: Connector, patch: dict[str, Any], *, writer: Partner | None = None
) -> PatchResult | None:
    """PATCH a connector. With a `writer` (a CPO's PATCH), only under a location of the writer's connection: else
    LocationNotHeld, nothing written. None when the connector is no longer there (a location or EVSE PUT that
    left it out, committed while this one waited for the location)."""
    stamp = _stamp(patch)
    with transaction.atomic():
        # The location first, then the EVSE, then the connector (the module's lock order: the connector first had
        # deadlocked with a location PUT). Found again by its id: a PUT of its location or EVSE writes its
        # connectors anew (other rows).
        _require_held(evse.location_id, writer)
        _lock_evse(evse.pk)
        rows = Connector.objects.select_for_update(no_key=True).filter(evse_id=evse.pk, id_key=connector.id_key)
        held = rows.first()
        if held is None:
            return None
        connector = held
        if stamp is not None and stamp < connector.last_updated:
            return PatchResult(applied=False)
        last_updated = stamp or connector.last_updated
        data = _patched_connector(connector.data, patch)
        row = Connector(**_connector_values(evse.pk, data, last_updated))
        _save_over(row, connector)
        _refresh_evse_power(evse)
        if stamp is not None:
            _bump_parents(evse.location, stamp, evse)
    return PatchResult(applied=True)


# A derived power beyond this is a unit or typing error, not a charger: unknown (ocpi/normalize/evses.py's bound).
_MAX_DERIVED_POWER_W = 10_000_000


def _derived_power_w(connector: dict[str, Any]) -> int | None:
    """V x A x phases, as ocpi/normalize/evses.py derives a power no CPO sent (AC_3_PHASE above 250 V is read as
    line-to-line: x sqrt 3), None beyond its bound. A copy of its rule, as emsp may not import ocpi (pyproject's
    layers); tests/ocpi/test_v211_connector_power.py and tests/ocpi/test_hostile_versions_fixes.py hold the two
    equal."""
    voltage, amperage, power_type = (connector.get(k) for k in ("max_voltage", "max_amperage", "power_type"))
    if not (isinstance(voltage, int) and isinstance(amperage, int) and voltage > 0 and amperage > 0 and power_type):
        return None
    if power_type == "AC_3_PHASE":
        phases = 3.0 if voltage <= 250 else math.sqrt(3)
    else:
        phases = 2.0 if power_type in ("AC_2_PHASE", "AC_2_PHASE_SPLIT") else 1.0
    power = round(voltage * amperage * phases)
    return power if 0 < power <= _MAX_DERIVED_POWER_W else None


def _patched_connector(stored: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The stored connector with a PATCH's fields over it. One left without a power (none held, or the PATCH
    cleared it, as a 2.1.1 PATCH of voltage, amperage or power_type does: ocpi/versions/v211.py) takes the one
    they give, as a PUT of it would. A power the CPO sent is kept until it sends another: nothing records which
    powers we derived, so a 2.2.1 PATCH naming none leaves the one we hold, as a PATCH leaves what it omits."""
    merged = {**stored, **patch}
    if connector_power_w(merged) is not None:
        return merged
    merged.pop("max_electric_power", None)
    power = _derived_power_w(merged)
    return merged if power is None else {**merged, "max_electric_power": power}


_WITHDRAW_BATCH = 5000


def locations_withdraw_missing(partner: Partner, seen_keys: set[str], since: datetime) -> int:
    """After a full pull: a location the partner no longer lists is withdrawn ("pages together are the new
    truth", transport §"Pull"). Locations pushed to us during the pull are kept."""
    # Compared here, not in SQL: a `NOT IN` of every key seen goes past PostgreSQL's 65,535 parameters at a
    # CPO with that many locations (measured: a 100k-location pull failed at this step).
    candidates = Location.objects.filter(partner=partner, withdrawn_at__isnull=True, received_at__lt=since)
    stale = [pk for pk, key in candidates.values_list("pk", "ocpi_key").iterator(2000) if key not in seen_keys]
    now, withdrawn = timezone.now(), 0
    for start in range(0, len(stale), _WITHDRAW_BATCH):
        withdrawn += Location.objects.filter(pk__in=stale[start : start + _WITHDRAW_BATCH]).update(withdrawn_at=now)
    return withdrawn


def evse_refresh_from_cpo(evse: Evse, *, timeout: float = 2.0) -> bool:
    """Ask the CPO for one EVSE right now, with a short timeout, and store what it says. False when the CPO
    can't answer in time: the caller falls back to the catalogue and says how old it is."""
    location = evse.location
    if location.partner.state != Partner.State.CONNECTED:
        return False
    fresh = cpo_gateway().fetch_evse(evse, timeout=timeout)
    if fresh is None:
        return False
    evse_put(location, fresh)
    Evse.objects.filter(pk=evse.pk).update(status_updated_at=timezone.now())
    evse.refresh_from_db()
    return True
