"""Discovery: Beckn `search` answered from our own synchronised catalogue, never by calling CPOs (RFC-ERRATA:
"search never calls a CPO"). Filters from the intent, a bounding-box query on the EVSE lat/lon index with the
exact distance re-checked, and the Beckn 1.1.0 Catalog we render from the hits."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Case, Exists, ExpressionWrapper, F, FloatField, OuterRef, Q, QuerySet, When
from django.utils import timezone

from beckn import catalogue_details, catalogue_rows
from beckn.route_search import DEFAULT_MAX_DETOUR_M, estimate_group, route_candidates, route_want, with_estimates
from billing import pricing
from billing.models import Tariff
from billing.pricing.engine import _matches as restrictions_hold
from billing.pricing.tariff import DIMENSIONS
from billing.services.driver_pricing import DEFAULT_AC_POWER_KW, tariffs_for_connector
from billing.services.estimates import ChargeEstimate
from emsp import nearest
from emsp.datetimes import format_datetime
from emsp.geo import Placement, Route
from emsp.models import Connector, Evse, Location, Partner, PartnerParty, Reservation, ci_key
from emsp.services.catalogue import connector_get
from emsp.vehicles import Vehicle

EARTH_RADIUS_M = 6_371_000.0
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()  # the tariff engine's days count from 1970-01-01
DEFAULT_RADIUS_M = 5_000.0
MAX_RADIUS_M = 50_000.0
DEFAULT_LIMIT = 20
MAX_LIMIT = 100

# How fresh an EVSE's status is decides how much a driver should trust it (perf notes §4: stale
# availability is the drivers' first complaint). LOW is what the console counts as stale.
CONFIDENCE = ((timedelta(minutes=5), "HIGH"), (Evse.STATUS_STALE_AFTER, "MEDIUM"))

# connector-type synonyms seen in RFC, UEI, DEG and missions examples → OCPI ConnectorType.
CONNECTOR_SYNONYMS = {
    "CCS2": "IEC_62196_T2_COMBO",
    "CCS": "IEC_62196_T2_COMBO",
    "CCS-2": "IEC_62196_T2_COMBO",
    "IEC_62196_CCS2": "IEC_62196_T2_COMBO",
    "TYPE2": "IEC_62196_T2",
    "TYPE-2": "IEC_62196_T2",
    "TYPE_2": "IEC_62196_T2",
    "TYPE 2": "IEC_62196_T2",
    "CCS1": "IEC_62196_T1_COMBO",
    "TYPE1": "IEC_62196_T1",
    "TYPE 1": "IEC_62196_T1",
    "CHADEMO": "CHADEMO",
    "GBT": "GBT_DC",
    "GB_T": "GBT_DC",
    "GB/T": "GBT_DC",
    "GBT_DC": "GBT_DC",
    "GBT_AC": "GBT_AC",
    "BHARAT_AC001": "DOMESTIC_D",
    "BHARAT_DC001": "GBT_DC",
}
# Short names we show for OCPI standards (the RFC example shows "CCS2").
CONNECTOR_LABELS = {
    "IEC_62196_T2_COMBO": "CCS2",
    "IEC_62196_T1_COMBO": "CCS1",
    "IEC_62196_T2": "Type2",
    "IEC_62196_T1": "Type1",
    "CHADEMO": "CHAdeMO",
    "GBT_DC": "GB/T DC",
    "GBT_AC": "GB/T AC",
    "MCS": "MCS",
}
SPEEDS = ("SLOW", "NORMAL", "FAST", "ULTRAFAST")


def charging_speed(power_w: int | None) -> str | None:
    """A coarse class of charging power, as the RFC's `charging-speed` tag and the DEG v2 vocabulary use."""
    if not power_w:
        return None
    if power_w < 7_500:
        return "SLOW"
    if power_w < 25_000:
        return "NORMAL"
    if power_w < 100_000:
        return "FAST"
    return "ULTRAFAST"


def connector_standard(value: str) -> str:
    key = value.strip().upper()
    return CONNECTOR_SYNONYMS.get(key, CONNECTOR_SYNONYMS.get(key.replace(" ", ""), key))


@dataclass
class SearchFilters:
    latitude: float | None = None
    longitude: float | None = None
    radius_m: float = DEFAULT_RADIUS_M
    connector_types: set[str] = field(default_factory=set)
    power_types: set[str] = field(default_factory=set)  # OCPI PowerTypes (`power-type` tag: AC, DC)
    min_power_w: int | None = None
    charging_speed: str | None = None
    available_only: bool = False
    max_price: Decimal | None = None  # per kWh, excl. VAT, in the tariff's currency
    provider: str | None = None  # party key CC*PID
    item_id: str | None = None
    limit: int = DEFAULT_LIMIT
    # "Available from T for D minutes" (fulfillment stop time range): EVSEs held by a booking in that window
    # are left out, and the items carry the window. None: now.
    window: tuple[datetime, datetime] | None = None
    # Opening hours, facilities, parking, accessibility, energy mix (beckn/catalogue_details.py).
    details: catalogue_details.LocationFilters = field(default_factory=catalogue_details.LocationFilters)
    # Vehicle and route (beckn/route_search.py): along a route, results are ranked by detour; with a vehicle
    # or a stated energy, each carries an estimate of the charge.
    route: Route | None = None
    max_detour_m: float = DEFAULT_MAX_DETOUR_M
    vehicle: Vehicle | None = None
    energy_kwh: Decimal | None = None
    # A fulfillment type asked for that is not charging (DEG's BATTERY-SWAP, MOBILE-BATTERY-SWAP): none of ours.
    other_fulfillment: str | None = None
    # Without a position: the city the request's context names (Context.location.city.name), matched against
    # our locations' city.
    city: str | None = None


@dataclass
class Hit:
    evse: Evse
    connector: Connector
    distance_m: float | None
    tariff: Tariff | None
    energy_price: Decimal | None
    placement: Placement | None = None  # where it lies relative to the route searched along
    estimate: ChargeEstimate | None = None
    # The instant its tariff and rates are those of (a window's start, else when it was found); None: now.
    priced_at: datetime | None = None


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def distances_from(lat1: float, lon1: float) -> Callable[[float, float], float]:
    """haversine_m from one point, with the point's own terms worked out once: the same operations in the same
    order, so the same floats (a test holds them equal)."""
    p1 = math.radians(lat1)
    cos_p1 = math.cos(p1)
    radians, sin, cos, asin, sqrt = math.radians, math.sin, math.cos, math.asin, math.sqrt

    def distance(lat2: float, lon2: float) -> float:
        p2 = radians(lat2)
        dp, dl = p2 - p1, radians(lon2 - lon1)
        a = sin(dp / 2) ** 2 + cos_p1 * cos(p2) * sin(dl / 2) ** 2
        return 2 * EARTH_RADIUS_M * asin(min(1.0, sqrt(a)))

    return distance


def _bounding_box(lat: float, lon: float, radius_m: float) -> tuple[float, float, float, float]:
    """The (latitude, longitude) box around the circle of `radius_m` about the point. Its half-width in longitude
    is the circle's widest, asin(sin(r/R) / cos φ) (at a latitude poleward of the centre's), not (r/R) / cos φ,
    which is narrower at high latitudes (at 85° a 50 km circle's eastern edge lay outside it). A circle reaching a
    pole spans every longitude: a half-width of 180° (no range of longitude)."""
    angle = radius_m / EARTH_RADIUS_M
    dlat = math.degrees(angle)
    cos_lat = math.cos(math.radians(lat))
    spread = math.sin(min(angle, math.pi / 2)) / cos_lat if cos_lat > 0 else math.inf
    dlon = 180.0 if angle >= math.pi / 2 or spread >= 1 else math.degrees(math.asin(spread))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


# The partners whose locations the catalogue hides (suspended, unregistered, registering again after it was
# connected once; why: beckn/catalogue_rows.py).
UNLISTED_PARTNER_STATES = catalogue_rows.UNLISTED_PARTNER_STATES
UNLISTED_PARTNER = Q(state__in=UNLISTED_PARTNER_STATES) | Q(
    state__in=catalogue_rows.REREGISTERING_STATES, registered_at__isnull=False
)

# listed_location as conditions on an EVSE query's joins (one that loads the location and partner anyway).
LISTED = Q(location__withdrawn_at__isnull=True, location__publish=True) & ~Q(
    location__partner__in=Partner.objects.filter(UNLISTED_PARTNER)
)


def listed_location(evse: str = "location_id") -> Exists:
    """The EVSE's location is one the catalogue shows: not withdrawn, to be published (OCPI `publish`), of a
    partner not suspended, unregistered or registering again (UNLISTED_PARTNER). Search (its candidates, before
    they are capped) and find_item (select) both ask it, so an item a search can't show can't be selected either.
    `evse`: the outer query's location column."""
    return Exists(
        Location.objects.filter(pk=OuterRef(evse), withdrawn_at__isnull=True, publish=True).exclude(
            partner__in=Partner.objects.filter(UNLISTED_PARTNER)
        )
    )


def search(filters: SearchFilters, now: datetime | None = None) -> list[Hit]:
    """Nearest bookable connectors first (or by provider/name when no position is given), capped."""
    now = now or timezone.now()
    ahead = _ahead(filters.window, now)
    near_a_point = filters.route is None and filters.latitude is not None and filters.longitude is not None
    if near_a_point and FAST_PATH and connection.vendor == "postgresql":
        # The same answer in two plain-SQL statements (beckn/catalogue_rows.py).
        return with_estimates(_nearest_hits(filters, ahead, now), filters, now)
    # Step 1, on the EVSE table (its (latitude, longitude) index and its own columns): the nearest candidates,
    # of locations the catalogue shows (checked per candidate, so hidden ones never take the candidates' places).
    # Joins to load locations and partners come after, on a few dozen rows.
    candidates = Evse.objects.filter(listed_location(), has_connectors=True).exclude(
        status__in=[Evse.Status.REMOVED, Evse.Status.OUTOFORDER, Evse.Status.INOPERATIVE, Evse.Status.PLANNED]
    )
    if filters.available_only and not ahead:
        candidates = candidates.filter(status=Evse.Status.AVAILABLE)
    if filters.min_power_w:
        candidates = candidates.filter(max_power_w__gte=filters.min_power_w)
    if filters.provider:
        country_code, party_id = _party_of(filters.provider)
        candidates = candidates.filter(
            location__partner__in=_partners_for(filters.provider),
            location__country_code__iexact=country_code,
            location__party_id__iexact=party_id,
        )
    if filters.connector_types or filters.power_types:  # one connector of the EVSE has both
        wanted = Connector.objects.filter(evse=OuterRef("pk"))
        if filters.connector_types:
            wanted = wanted.filter(standard__in=filters.connector_types)
        if filters.power_types:
            wanted = wanted.filter(power_type__in=filters.power_types)
        candidates = candidates.filter(Exists(wanted))
    placements: dict[int, Placement] = {}
    if filters.route is not None:  # along a route: the corridor's EVSEs by detour (beckn/route_search.py)
        placements = route_candidates(candidates, filters.route, filters.max_detour_m, route_want(filters))
    elif filters.latitude is not None and filters.longitude is not None:
        lat, lon = filters.latitude, filters.longitude
        if connection.vendor == "postgresql":  # the GiST index, nearest first (emsp/nearest.py)
            candidates = nearest.nearest_first(candidates, lat, lon, filters.radius_m)
        else:
            candidates = _in_box_nearest_first(candidates, lat, lon, filters.radius_m)
    else:
        if filters.city:
            candidates = candidates.filter(location__city__iexact=filters.city)
        candidates = candidates.order_by("location__partner_id", "location__name", "uid")
    ids = (
        list(placements)
        if filters.route is not None
        else list(candidates.values_list("pk", flat=True)[: filters.limit * 5 * filters.details.widening])
    )
    # Step 2, a chunk of candidates at a time, nearest first, until `limit` hits: load the visible ones with
    # their location and partner, drop the held and the filtered, then their connectors and tariffs. Most
    # searches finish within the first chunk (a profile of the soak test showed four fifths of a search's time
    # going to loading, connectors and tariffs of candidates beyond the hits it returned).
    hits: list[Hit] = []
    chunk = max(2 * filters.limit, SEARCH_CHUNK_MIN)
    for start in range(0, len(ids), chunk):
        for hit in _hits_among(ids[start : start + chunk], filters, placements, ahead, now):
            hits.append(hit)
            if len(hits) >= filters.limit:
                return with_estimates(hits, filters, now)
    return with_estimates(hits, filters, now)


def _in_box_nearest_first(evses: QuerySet, lat: float, lon: float, radius_m: float) -> QuerySet:
    """Elsewhere than PostgreSQL: a bounding box on the (latitude, longitude) index, ranked in SQL by an
    equirectangular distance (plain arithmetic); the exact distance is checked by the caller. A box across the
    antimeridian is two ranges of longitude, one reaching a pole none."""
    min_lat, max_lat, min_lon, max_lon = _bounding_box(lat, lon, radius_m)
    k = math.cos(math.radians(lat))
    box = Q(latitude__gte=min_lat, latitude__lte=max_lat)
    if min_lat > -90 and max_lat < 90 and max_lon - min_lon < 360:
        if min_lon < -180:
            box &= Q(longitude__gte=min_lon + 360) | Q(longitude__lte=max_lon)
        elif max_lon > 180:
            box &= Q(longitude__gte=min_lon) | Q(longitude__lte=max_lon - 360)
        else:
            box &= Q(longitude__gte=min_lon, longitude__lte=max_lon)
    # The difference in longitude the short way round.
    dlon = Case(
        When(longitude__lt=lon - 180, then=F("longitude") + 360 - lon),
        When(longitude__gt=lon + 180, then=F("longitude") - 360 - lon),
        default=F("longitude") - lon,
        output_field=FloatField(),
    )
    return (
        evses.filter(box)
        .annotate(
            d2=ExpressionWrapper(
                (F("latitude") - lat) * (F("latitude") - lat) + dlon * k * (dlon * k), output_field=FloatField()
            )
        )
        .order_by("d2", "pk")
    )


# Search near a point on PostgreSQL through beckn/catalogue_rows.py (off: through the ORM, as elsewhere; the
# tests compare the two).
FAST_PATH = True


def _nearest_hits(filters: SearchFilters, ahead: bool, now: datetime) -> list[Hit]:
    """search near a point on PostgreSQL: the nearest visible candidates a chunk at a time, until `limit`
    hits, reading at most as many candidates as the ORM path does."""
    assert filters.latitude is not None and filters.longitude is not None
    cap = filters.limit * 5 * filters.details.widening
    # Candidates are read with every filter SQL can apply; when no filter is left for Python, each EVSE gives
    # at least one hit and a chunk of `limit` is enough (a profile showed fetching and building rows that were
    # never shown costing a third of a search).
    settled_in_sql = not (filters.charging_speed or filters.max_price is not None or filters.item_id)
    settled_in_sql = settled_in_sql and not (filters.details.on_location or filters.details.on_energy)
    chunk = max(filters.limit if settled_in_sql else 2 * filters.limit, SEARCH_CHUNK_MIN)
    partner_ids = [p.pk for p in _partners_for(filters.provider)] if filters.provider else None
    party = _party_of(filters.provider) if filters.provider else None
    hits: list[Hit] = []
    for offset in range(0, cap, chunk):
        count = min(chunk, cap - offset)
        evses, held, connectors, more, generation = catalogue_rows.nearest_candidates(
            latitude=filters.latitude,
            longitude=filters.longitude,
            radius_m=filters.radius_m,
            now=now,
            window=filters.window,
            available_now=filters.available_only and not ahead,
            min_power_w=filters.min_power_w,
            partner_ids=partner_ids,
            party=party,
            connector_types=filters.connector_types,
            power_types=filters.power_types,
            offset=offset,
            count=count,
        )
        for hit in _hits_of(evses, held, connectors, filters, {}, ahead, now, generation):
            hits.append(hit)
            if len(hits) >= filters.limit:
                return hits
        if not more:
            break
    return hits


# Candidates read per step of a search (at least; twice the hits asked for otherwise).
SEARCH_CHUNK_MIN = 20


def _hits_among(
    ids: list[int], filters: SearchFilters, placements: dict[int, Placement], ahead: bool, now: datetime
) -> Iterator[Hit]:
    """The hits among these candidates, in their order (search's step 2, through the ORM)."""
    loaded = {
        evse.pk: evse
        for evse in Evse.objects.filter(LISTED, pk__in=ids)
        .select_related("location", "location__partner")
        .defer("data", "location__data", "location__partner__endpoints", "location__partner__credentials_roles")
    }
    evses = [loaded[pk] for pk in ids if pk in loaded]
    held = _held(evses, now, filters.window)
    yield from _hits_of(evses, held, None, filters, placements, ahead, now)


def _hits_of(
    evses: list[Evse],
    held: set[int],
    connectors: dict[int, list[Connector]] | None,
    filters: SearchFilters,
    placements: dict[int, Placement],
    ahead: bool,
    now: datetime,
    generation: int | None = None,
) -> Iterator[Hit]:
    """The hits among these loaded candidates (with their location and partner), in their order: the exact
    distance, holds, the location filters, then each connector's. `connectors`: loaded with the candidates by
    the plain-SQL path, or None (the ORM path loads them, and the tariffs, here)."""
    ranked: list[tuple[float | None, Evse]] = []
    if filters.latitude is not None and filters.longitude is not None:
        distance_to, radius_m = distances_from(filters.latitude, filters.longitude), filters.radius_m
        for evse in evses:
            distance = distance_to(evse.latitude, evse.longitude)
            if distance <= radius_m:
                ranked.append((distance, evse))
    else:
        ranked = [(None, evse) for evse in evses]
    _show_held([e for _, e in ranked], held, now, filters.window)
    if filters.available_only:
        # For a window ahead, what the charger does now does not matter: only whether it is booked then.
        ranked = [(d, e) for d, e in ranked if (e.id not in held if ahead else e.status == Evse.Status.AVAILABLE)]
    elif filters.window is not None:
        # A window asked for: what is booked then is not offered (its items carry the window as if free).
        ranked = [(d, e) for d, e in ranked if e.id not in held]
    ranked = catalogue_details.keep_matching(filters.details, ranked, now, filters.window)
    # The tariffs of the charge asked for: valid when its window opens (a select quotes the tariff valid at
    # arrival, billing/services/driver_pricing.py), else now.
    priced_at = filters.window[0] if filters.window is not None else now
    if connectors is None:  # the ORM path
        connectors = _connectors_of([e for _, e in ranked])
        tariffs = _tariffs_for(connectors, priced_at)
    else:  # the plain-SQL path (beckn/catalogue_rows.py)
        tariffs = catalogue_rows.valid_tariffs(_shown_tariff_keys(ranked, connectors), priced_at, generation)
    types, speed_wanted, min_power_w = filters.connector_types, filters.charging_speed, filters.min_power_w
    currents = filters.power_types
    max_price, wanted_item, on_energy = filters.max_price, filters.item_id, filters.details.on_energy
    # Each connector's tariff and its headline rate, chosen once per list of tariff keys: connectors of one
    # party with the same tariff ids share the list (_party_keys), and the lists live while the connectors
    # do, so their ids stay theirs (cProfile at 1 M EVSEs: the choice repeated per connector, 5 % of a search).
    choices: dict[int, tuple[Tariff | None, Decimal | None]] = {}
    for distance, evse in ranked:
        for connector in connectors.get(evse.id, []):
            if types and connector.standard not in types:
                continue
            if currents and connector.power_type not in currents:
                continue
            if speed_wanted and charging_speed(connector.max_electric_power) != speed_wanted:
                continue
            if min_power_w and (connector.max_electric_power or 0) < min_power_w:
                continue
            keys = _keys_of(connector)
            chosen = choices.get(id(keys))
            if chosen is None:
                tariff = _first_tariff(keys, tariffs)
                fixed = tariff is None or _engine_reading(tariff) is None
                chosen = choices[id(keys)] = (tariff, energy_rate(tariff) if tariff and fixed else None, fixed)
            tariff, energy_price, fixed = chosen
            if not fixed:  # restricted elements: the rate of the place's time and the connector's power
                energy_price = energy_rate(tariff, priced_at, evse.location.time_zone, connector.max_electric_power)
            if max_price is not None and (energy_price is None or energy_price > max_price):
                continue
            if wanted_item and wanted_item != item_id(evse, connector):
                continue
            if on_energy and not catalogue_details.energy_matches(filters.details, evse.location, tariff):
                continue
            yield Hit(evse, connector, distance, tariff, energy_price, placements.get(evse.id), priced_at=priced_at)


def _ahead(window: tuple[datetime, datetime] | None, now: datetime) -> bool:
    """Is this a window far enough ahead that the charger's status now says nothing about it?"""
    return window is not None and window[0] > now + timedelta(minutes=15)


def _mark_held(evses: list[Evse], now: datetime, window: tuple[datetime, datetime] | None = None) -> set[int]:
    """An EVSE held for a booking of ours (now, or in `window`) is not available to anyone else, whatever the
    CPO last said. Returns the held EVSEs' ids."""
    held = _held(evses, now, window)
    _show_held(evses, held, now, window)
    return held


def _held(evses: list[Evse], now: datetime, window: tuple[datetime, datetime] | None = None) -> set[int]:
    """The ids of those EVSEs held for a booking of ours now, or in `window`."""
    start, end = window or (now, now + timedelta(seconds=1))
    return set(
        Reservation.objects.filter(
            evse__in=evses, status__in=Reservation.ACTIVE_STATUSES, start_at__lt=end, expiry_at__gt=start
        ).values_list("evse_id", flat=True)
    )


def _show_held(evses: list[Evse], held: set[int], now: datetime, window: tuple[datetime, datetime] | None) -> None:
    """A held EVSE the CPO calls AVAILABLE shows as RESERVED (unless the window is far enough ahead)."""
    for evse in evses:
        if evse.id in held and evse.status == Evse.Status.AVAILABLE and not _ahead(window, now):
            evse.status = Evse.Status.RESERVED


def _party_of(provider: str) -> tuple[str, str]:
    """A Beckn provider id (CC*PID, or CC:PID) as the (country_code, party_id) partners are stored under."""
    country_code, _, party_id = provider.replace(":", "*").partition("*")
    return country_code.upper(), party_id.upper()


def _partners_for(provider: str) -> list[Partner]:
    """The partners that may bring this party's locations: the party's own, and those granted it (a hub)."""
    country_code, party_id = _party_of(provider)
    granted = PartnerParty.objects.filter(country_code=country_code, party_id=party_id).values("partner_id")
    return list(Partner.objects.filter(Q(country_code=country_code, party_id=party_id) | Q(pk__in=granted)))


def provider_known(provider: str) -> bool:
    """Is this Beckn provider id (CC*PID) a CPO party of ours (a partner's own, or one behind a hub)?"""
    return bool(_partners_for(provider))


def same_provider(a: str, b: str) -> bool:
    """Two Beckn provider ids naming the same party (CC*PID and CC:PID, any case)."""
    return _party_of(a) == _party_of(b)


def _connectors_of(evses: list[Evse]) -> dict[int, list[Connector]]:
    by_evse: dict[int, list[Connector]] = defaultdict(list)
    for connector in Connector.objects.filter(evse__in=evses).order_by("evse_id", "connector_id"):
        by_evse[connector.evse_id].append(connector)
    for evse in evses:
        for connector in by_evse.get(evse.pk, []):
            connector.evse = evse  # the EVSE (with its location) is already loaded
    return by_evse


def _tariff_keys(connectors: dict[int, list[Connector]]) -> set[str]:
    keys = set()
    for group in connectors.values():
        for connector in group:
            keys.update(_keys_of(connector))
    return keys


def _shown_tariff_keys(ranked: list[tuple[float | None, Evse]], connectors: dict[int, list[Connector]]) -> set[str]:
    """_tariff_keys of the ranked EVSEs' connectors, each connector's keys kept on it for _keys_of, from the
    EVSE's location at hand (cProfile at 1 M EVSEs: the connector → EVSE → location lookups behind _keys_of
    were 4 % of a search)."""
    keys: set[str] = set()
    for _, evse in ranked:
        location = evse.location
        for connector in connectors.get(evse.id, ()):
            keys.update(_remember_keys(connector, location))
    return keys


def _keys_of(connector: Connector) -> list[str]:
    """The keys of a connector's tariffs (its location's party and each tariff id), in its order. Kept on the
    instance: search asks twice per connector (a profile: the EVSE and location lookups behind it were 7 % of a
    search's CPU at 100 k EVSEs); search builds its connectors afresh each time, so a connector whose tariffs
    change is another instance."""
    keys = connector.__dict__.get("_tariff_keys")
    return keys if keys is not None else _remember_keys(connector, connector.evse.location)


def _remember_keys(connector: Connector, location: Location) -> list[str]:
    """The connector's tariff keys under its `location`'s party, kept on the connector for _keys_of."""
    tariff_ids = connector.tariff_ids
    keys = _party_keys(location.country_code, location.party_id, tuple(tariff_ids)) if tariff_ids else []
    connector.__dict__["_tariff_keys"] = keys
    return keys


@functools.lru_cache(maxsize=4096)
def _party_keys(country_code: str, party_id: str, tariff_ids: tuple[str, ...]) -> list[str]:
    # Cached: a search's connectors mostly share a few tariffs (a profile showed the keys built twice per
    # connector, 8 % of a search's CPU). Callers only read the list.
    return [ci_key(country_code, party_id, t) for t in tariff_ids]


def _tariffs_for(connectors: dict[int, list[Connector]], now: datetime) -> dict[str, Tariff]:
    """The valid tariffs of many connectors in one query (for one connector: hit_for): valid from
    start_date_time up to and including end_date_time (OCPI: "the time after which this tariff is no longer
    valid"), as tariffs_for_connector and the pricing engine read them."""
    return {
        t.ocpi_key: t
        for t in Tariff.objects.filter(ocpi_key__in=_tariff_keys(connectors))
        if (t.start_date_time is None or t.start_date_time <= now)
        and (t.end_date_time is None or now <= t.end_date_time)
    }


def _first_tariff(keys: list[str], tariffs: dict[str, Tariff]) -> Tariff | None:
    """tariffs_for_connector's choice (the first regular one, else the first) for a connector's tariff `keys`
    (_keys_of), among preloaded tariffs."""
    if not tariffs:
        return None
    candidates = [tariffs[key] for key in keys if key in tariffs]
    regular = [t for t in candidates if t.type in ("", "REGULAR")]
    return (regular or candidates or [None])[0]


def _component_price(tariff: Tariff, dimension: str) -> Decimal | None:
    """The price of the first element with this dimension: the rate of a tariff without restrictions (the
    catalogue shows the headline rate; quotes use the full engine)."""
    for element in tariff.data.get("elements") or []:
        for component in element.get("price_components") or []:
            if component.get("type") == dimension:
                return Decimal(str(component.get("price")))
    return None


def _engine_reading(tariff: Tariff) -> pricing.Tariff | None:
    """The tariff engine's reading of a tariff with restricted elements, whose rates depend on when, where and
    how the charge is made; None for one without (its rates are its first components, whenever) or one the engine
    refuses (shown as before, by its first components: its quote has no price). Kept on the instance, for its
    data."""
    memo = tariff.__dict__.get("_engine_reading")
    if memo is None or memo[0] is not tariff.data:
        try:
            reading: pricing.Tariff | None = pricing.parse_tariff(tariff.data)
        except pricing.PricingError:
            reading = None
        if reading is not None and all(element.restrictions is None for element in reading.elements):
            reading = None
        memo = tariff.__dict__["_engine_reading"] = (tariff.data, reading)
    return memo[1]


# Rates of restricted tariffs kept per tariff instance, by (instant, time zone, power): a search prices all its
# connectors at one instant. Beyond this many the keep starts again.
RATES_KEPT = 64
Rates = tuple[dict[str, Decimal], list[tuple[str, str, str]]]  # by dimension; and as an item's tags show them


def headline_rates(
    tariff: Tariff, at: datetime | None = None, time_zone: str = "UTC", power_w: int | None = None
) -> dict[str, Decimal]:
    """The price per dimension (ENERGY, TIME, PARKING_TIME, FLAT) the charge starting at `at` (default now) at a
    location in `time_zone`, on a connector of `power_w`, would be billed at first: per dimension, the first
    charging element whose restrictions all hold (mod_tariffs: "the first element ... used"), matched by the
    tariff engine's own restriction check (billing/pricing/engine.py) in the location's local time, so the
    catalogue shows what the engine then charges (RFC-ERRATA: `calculatePricing` takes the first component
    whatever its restrictions). Restrictions that depend on the charge are read at its start, as the engine
    reads them there: no kWh and no time charged yet (a min_kwh or min_duration element does not apply yet, a
    max_ one does), the connector's power (as quote_charge prices it; unknown: DEFAULT_AC_POWER_KW), the current
    unknown (an element restricted on current is not shown, as the engine does not apply it). A dimension no
    element applies to at that instant takes the first element that applies once the charge reaches its own
    minimum time or energy (an idle fee after 2 hours); none: no rate."""
    return _rates_of(tariff, at, time_zone, power_w)[0]


def _rates_of(tariff: Tariff, at: datetime | None, time_zone: str, power_w: int | None) -> Rates:
    """headline_rates with the tags' values, kept on the tariff instance for its data: a search's items mostly
    share a few tariffs, and a profile of on_search showed each item working its rates out again."""
    reading = _engine_reading(tariff)
    if reading is None:
        memo = tariff.__dict__.get("_headline_rates")
        if memo is None or memo[0] is not tariff.data:
            fixed = {d: p for d in DIMENSIONS if (p := _component_price(tariff, d)) is not None}
            memo = tariff.__dict__["_headline_rates"] = (tariff.data, _with_tags(fixed))
        return memo[1]
    at = at or timezone.now()
    memo = tariff.__dict__.get("_rates_at")
    if memo is None or memo[0] is not tariff.data:
        memo = tariff.__dict__["_rates_at"] = (tariff.data, {})
    kept: dict[tuple[datetime, str, int | None], Rates] = memo[1]
    key = (at, time_zone, power_w)
    rates = kept.get(key)
    if rates is None:
        if len(kept) >= RATES_KEPT:
            kept.clear()
        rates = kept[key] = _with_tags(_rates_applying(reading, at, time_zone, power_w))
    return rates


def _with_tags(rates: dict[str, Decimal]) -> Rates:
    shown = []
    for dimension, code, unit in _RATES:
        price = rates.get(dimension)
        if price is not None:
            shown.append((code, _money(price), f"{dimension.replace('_', ' ').title()} {unit}, excl. VAT"))
    return rates, shown


def _rates_applying(reading: pricing.Tariff, at: datetime, time_zone: str, power_w: int | None) -> dict[str, Decimal]:
    """headline_rates worked out: the engine's match context at the start of a charge (engine._price's `ctx`:
    local time of day and day in microseconds and days since 1970, time and energy so far, power max/min, current
    max/min, the tariff a period names)."""
    try:
        zone = pricing.resolve_zone(time_zone) or UTC
    except pricing.PricingError:
        zone = UTC  # as opening hours read an unusable zone (emsp/opening_hours.py zone_of)
    local = at.astimezone(zone)
    time_of_day = ((local.hour * 60 + local.minute) * 60 + local.second) * 1_000_000 + local.microsecond
    day = local.date().toordinal() - EPOCH_ORDINAL
    power = Decimal(power_w) / 1000 if power_w else DEFAULT_AC_POWER_KW
    context = [time_of_day, day, 0, Decimal(0), power, power, None, None, None]
    rates: dict[str, Decimal] = {}
    for dimension in DIMENSIONS:
        for element, component in reading.charging[dimension]:
            if element.restrictions is None or restrictions_hold(element.restrictions, context, element, set()):
                rates[dimension] = component.price
                break
        else:
            # Nothing at the start, something later in the charge: a parking fee after 2 hours, energy after the
            # first free kWh. The rate the driver meets first: at each point where an element's minimum time or
            # energy is reached, earliest first, the engine's first match over all elements (shown, not hidden
            # because it does not apply in the first second).
            rate = _first_rate_later(reading.charging[dimension], context)
            if rate is not None:
                rates[dimension] = rate
    return rates


def _first_rate_later(candidates: list[tuple[Any, Any]], context: list[Any]) -> Decimal | None:
    points = sorted(
        {
            (r.min_duration_us or 0, r.min_kwh or Decimal(0))
            for element, _ in candidates
            if (r := element.restrictions) is not None and r.has_session_limits
        }
    )
    for duration_us, kwh in points:
        later = [*context[:2], duration_us, kwh, *context[4:]]
        for element, component in candidates:
            if element.restrictions is None or restrictions_hold(element.restrictions, later, element, set()):
                return component.price
    return None


def energy_rate(
    tariff: Tariff, at: datetime | None = None, time_zone: str = "UTC", power_w: int | None = None
) -> Decimal | None:
    """The price per kWh a charge starting at `at` is billed at first (headline_rates): for a tariff without
    restrictions its first ENERGY component, worked out once per tariff instance (search keeps its tariffs
    between searches, billing/tariff_cache.py, and asks for each connector)."""
    return headline_rates(tariff, at, time_zone, power_w).get("ENERGY")


def item_id(evse: Evse, connector: Connector) -> str:
    """Beckn item id of a bookable connector: unique within its provider (the CPO's party)."""
    return item_ref(evse, connector.connector_id)


def item_ref(evse: Evse, connector_id: str) -> str:
    """The item id of `evse`'s connector `connector_id`, also when the CPO no longer lists that connector (a
    booking's, after the CPO sent its EVSE again without a valid connector)."""
    return f"{evse.location.location_id}/{evse.uid}/{connector_id}"


def provider_id(location: Location) -> str:
    """Beckn provider id of a location's CPO: the location's OCPI party, CC*PID. The party, not the partner it
    came through: a hub (or a partner granted other parties) brings several parties' locations, and location ids
    are unique within a party only (mod_locations), so items and locations keep unique ids per provider."""
    return f"{location.country_code}*{location.party_id}".upper()


def provider_name(location: Location) -> str:
    """The provider's name: the partner's, and the party it came through a hub or another partner for."""
    partner = location.partner
    party = provider_id(location)
    return partner.name if party == partner.party_key.upper() else f"{party} (via {partner.name})"


def status_confidence(evse: Evse, now: datetime) -> str:
    age = now - evse.status_updated_at
    for limit, label in CONFIDENCE:
        if age <= limit:
            return label
    return "LOW"


def _tag(code: str, value: Any, name: str | None = None) -> dict[str, Any]:
    if name:
        return {"descriptor": {"code": code, "name": name}, "value": str(value)}
    return {"descriptor": {"code": code}, "value": str(value)}


def _money(value: Decimal) -> str:
    return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")


def item_tags(hit: Hit, now: datetime, status_note: str | None = None) -> list[dict[str, Any]]:
    """The item's tag groups. A `status_note` (the CPO is not answering) makes the status confidence LOW and
    says why."""
    connector, evse = hit.connector, hit.evse
    specs = [
        _tag("connector-id", connector.connector_id, "Connector id"),
        _tag("connector-type", CONNECTOR_LABELS.get(connector.standard, connector.standard), "Connector type"),
        _tag("connector-standard", connector.standard, "OCPI connector standard"),
        _tag("connector-format", connector.format or "UNKNOWN", "Connector format"),
        _tag("power-type", connector.power_type or "UNKNOWN", "Power type"),
    ]
    if connector.max_electric_power:
        specs.append(_tag("power-rating", f"{_kilowatts(connector.max_electric_power)}kW", "Power rating"))
        specs.append(_tag("charging-speed", charging_speed(connector.max_electric_power), "Charging speed"))
    specs += _evse_specs(evse, now, status_note)
    groups = [_specifications(specs)]
    if hit.tariff is not None:
        rates = [_tag("tariff-id", hit.tariff.tariff_id, "Tariff"), _tag("currency", hit.tariff.currency)]
        shown = _rates_of(hit.tariff, hit.priced_at or now, evse.location.time_zone, connector.max_electric_power)[1]
        rates += [_tag(code, value, name) for code, value, name in shown]
        groups.append({"descriptor": {"code": "tariff", "name": "Tariff"}, "list": rates})
    estimate = estimate_group(hit)  # detour and charge estimate (beckn/route_search.py)
    if estimate is not None:
        groups.append(estimate)
    return groups


def connectorless_item_tags(evse: Evse, connector_id: str, now: datetime) -> list[dict[str, Any]]:
    """The tags of a booked item whose connector the CPO no longer lists (it sent the EVSE again with none it
    could read: ocpi/normalize/evses.py keeps such an EVSE, "evse_without_connectors"): the connector's id and
    the EVSE's status, nothing of a connector or tariff we no longer know."""
    return [_specifications([_tag("connector-id", connector_id, "Connector id"), *_evse_specs(evse, now, None)])]


def _specifications(specs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"descriptor": {"code": "connector-specifications", "name": "Connector Specifications"}, "list": specs}


# The RFC's mapStatus (BECKN-EV-001 §5.3.2): the words a driver reads in `status`; any other OCPI status is
# "Unknown" there, and every one is in `ocpi-status` as the CPO sent it, for machines (as connector-type and
# connector-standard).
STATUS_WORDS = {
    "AVAILABLE": "Available",
    "CHARGING": "In Use",
    "BLOCKED": "Blocked",
    "OUTOFORDER": "Out of Order",
    "RESERVED": "Reserved",
}


def _evse_specs(evse: Evse, now: datetime, status_note: str | None) -> list[dict[str, Any]]:
    return [
        _tag("status", STATUS_WORDS.get(evse.status, "Unknown"), "Status"),
        _tag("ocpi-status", evse.status, "OCPI EVSE status"),
        _tag("status-updated-at", format_datetime(evse.status_updated_at), "Status last heard"),
        _tag("status-confidence", "LOW" if status_note else status_confidence(evse, now), "Status confidence"),
        *([_tag("status-note", status_note, "Why the status may be out of date")] if status_note else []),
        _tag("evse-id", evse.evse_id or evse.uid, "EVSE id"),
        _tag("reservable", "true" if evse.is_reservable else "false", "Can be reserved"),
    ]


_RATES = (
    ("ENERGY", "energy-rate", "per kWh"),
    ("TIME", "time-rate", "per hour"),
    ("PARKING_TIME", "parking-rate", "per hour"),
    ("FLAT", "flat-fee", "per session"),
)


def window_time(window: tuple[datetime, datetime]) -> dict[str, Any]:
    """A time window as a Beckn stop's `time`."""
    return {"range": {"start": format_datetime(window[0], "seconds"), "end": format_datetime(window[1], "seconds")}}


def render_catalog(
    hits: list[Hit], now: datetime | None = None, window: tuple[datetime, datetime] | None = None
) -> dict[str, Any]:
    """A Beckn 1.1.0 Catalog: providers = CPOs; locations; one fulfillment (CHARGING) per location; items =
    bookable connectors with a per-kWh price, specification and tariff tags and status freshness. With a
    `window` asked for, each fulfillment's stop carries it (the items are free then)."""
    now = now or timezone.now()
    stop_time = {"time": window_time(window)} if window else {}
    catalogue_details.load_data([hit.evse for hit in hits])
    providers: dict[str, dict[str, Any]] = {}
    seen_locations: dict[str, set[int]] = defaultdict(set)
    for hit in hits:
        location = hit.evse.location
        party = provider_id(location)
        provider = providers.get(party)
        if provider is None:
            provider = providers[party] = {
                "id": party,
                "descriptor": {"name": provider_name(location)},
                "locations": [],
                "fulfillments": [],
                "items": [],
            }
        location_ref = f"LOC-{location.location_id}"
        fulfillment_ref = f"FUL-{location.location_id}"
        if location.pk not in seen_locations[party]:
            seen_locations[party].add(location.pk)
            address = ", ".join(p for p in (location.address, location.city, location.postal_code) if p)
            gps = f"{location.latitude:.6f},{location.longitude:.6f}"
            place: dict[str, Any] = {
                "id": location_ref,
                "descriptor": {"name": location.name or location.location_id},
                "gps": gps,
                "address": address,
            }
            if location.city:  # required in OCPI, yet real feeds leave it out (kept as ""): no city, not ""
                place["city"] = {"name": location.city}
            place["country"] = {"code": location.country}
            provider["locations"].append(place)
            catalogue_details.decorate_location(provider["locations"][-1], location)
            provider["fulfillments"].append(
                {
                    "id": fulfillment_ref,
                    "type": "CHARGING",
                    "stops": [{"type": "start", "location": {"gps": gps, "address": address}, **stop_time}],
                }
            )
        item: dict[str, Any] = {
            "id": item_id(hit.evse, hit.connector),
            "descriptor": {
                "name": f"{CONNECTOR_LABELS.get(hit.connector.standard, hit.connector.standard)} "
                f"{_power_label(hit.connector)} at {location.name or location.location_id}".strip(),
                "code": "energy",
            },
            "location_ids": [location_ref],
            "fulfillment_ids": [fulfillment_ref],
            "quantity": {"unitized": {"measure": {"type": "CONSTANT", "value": "1", "unit": "kWh"}}},
            "tags": item_tags(hit, now),
        }
        if hit.tariff is not None and hit.energy_price is not None:
            # Beckn Price.currency is ISO 4217; the unit (per kWh) is in quantity and tags (RFC-ERRATA).
            item["price"] = {"currency": hit.tariff.currency, "value": _money(hit.energy_price)}
        catalogue_details.decorate_item(item, hit, now)
        provider["items"].append(item)
    for provider in providers.values():
        catalogue_details.decorate_provider(provider)
    return {"descriptor": {"name": "EV charging"}, "providers": list(providers.values())}


def _power_label(connector: Connector) -> str:
    if not connector.max_electric_power:
        return ""
    return f"{_kilowatts(connector.max_electric_power)} kW"


@functools.lru_cache(maxsize=4096)
def _kilowatts(watts: int) -> str:
    """A connector's power in kW as shown: catalogues hold a few dozen distinct ratings, each item shows its
    rating twice (Decimal arithmetic and formatting were 5 % of a render)."""
    return _money(Decimal(watts) / 1000)


def find_item(provider: str | None, item: str, at: datetime | None = None, *, listed: bool = True) -> Hit | None:
    """Resolve a Beckn item id (location/evse/connector) of a provider to the catalogue objects: only an item
    search can show (listed_location: not withdrawn, published, of a partner not suspended or unregistered), else
    None (a select answers 30004). Its tariff and price are those at `at` (a select's window start: the tariff
    search showed for that window, and the one its quote prices), default now. `listed=False`: any item we hold
    (a rating of a charger a driver used, hidden since)."""
    location_id, _, rest = item.partition("/")
    evse_uid, _, connector_id = rest.partition("/")
    if not (location_id and evse_uid and connector_id):
        return None
    if FAST_PATH and connection.vendor == "postgresql":  # the same query in plain SQL (beckn/catalogue_rows.py)
        evse = catalogue_rows.item_evse(
            location_id=location_id,
            evse_uid_key=ci_key(evse_uid),
            party=_party_of(provider) if provider else None,
            listed=listed,
        )
    else:
        evses = Evse.objects.select_related("location", "location__partner").filter(
            LISTED if listed else Q(), uid_key=ci_key(evse_uid), location__location_id__iexact=location_id
        )
        if provider:
            country_code, party_id = _party_of(provider)
            evses = evses.filter(location__country_code__iexact=country_code, location__party_id__iexact=party_id)
        evse = evses.first()
    if evse is None:
        return None
    connector = connector_get(evse, connector_id)
    if connector is None:
        return None
    now = timezone.now()
    _mark_held([evse], now)
    return hit_for(evse, connector, at or now)


def hit_for(evse: Evse, connector: Connector, now: datetime) -> Hit:
    """One connector of a loaded EVSE (with its location) as search shows it, without a distance, with the tariff
    valid and the rates that apply at `now`."""
    connector.evse = evse
    tariffs = tariffs_for_connector(connector, now)
    tariff = tariffs[0] if tariffs else None
    price = energy_rate(tariff, now, evse.location.time_zone, connector.max_electric_power) if tariff else None
    return Hit(evse, connector, None, tariff, price, priced_at=now)


ALTERNATIVES_RADIUS_M = 15_000.0


def alternatives(
    evse: Evse,
    connector_id: str,
    *,
    limit: int = 3,
    other_operators: bool = False,
    window: tuple[datetime, datetime] | None = None,
) -> list[Hit]:
    """Bookable replacements for a booking that can't go ahead at `evse`: available EVSEs nearby with a
    connector of the same standard and at least its power, not `evse` itself (nor its operator's, with
    `other_operators`: when that CPO is not answering), free in `window` when given. Ranked by detour from the
    booked charger (1 km steps) and then by price, cheapest first; no price known ranks last."""
    booked = evse.connectors.filter(connector_id__iexact=connector_id).first() or evse.connectors.first()
    filters = SearchFilters(
        latitude=evse.latitude,
        longitude=evse.longitude,
        radius_m=ALTERNATIVES_RADIUS_M,
        connector_types={booked.standard} if booked else set(),
        min_power_w=booked.max_electric_power if booked and booked.max_electric_power else None,
        available_only=True,
        window=window,
        limit=limit * 4 + (20 if other_operators else 2),
    )
    operator = evse.location.partner_id
    found = [
        hit
        for hit in search(filters)
        if hit.evse.pk != evse.pk and not (other_operators and hit.evse.location.partner_id == operator)
    ]
    never = Decimal("1e9")
    found.sort(
        key=lambda h: (int((h.distance_m or 0) // 1000), h.energy_price if h.energy_price is not None else never)
    )
    return found[:limit]


def alternatives_tags(hits: list[Hit]) -> list[dict[str, Any]]:
    """The alternatives named in tags (`provider:item (distance m)`); the items themselves go to the app in an
    on_search catalogue it can select from."""
    return [
        {
            "descriptor": {"code": "alternative", "name": hit.evse.location.name or hit.evse.location.location_id},
            "value": f"{provider_id(hit.evse.location)}:{item_id(hit.evse, hit.connector)}"
            f" ({int(hit.distance_m or 0)} m)",
        }
        for hit in hits
    ]
