"""What drivers choose a charger by, beyond the connector and the price: facilities, opening hours, parking,
accessibility, images, operator, energy mix, directions and help contacts of the OCPI Location (and EVSE),
rendered in Beckn core 1.1.0 terms (descriptor, tag groups, categories) and filterable in `search`.

Lenient in what we read (stored OCPI data is normalised on ingest, but old rows, PATCHes and other CPO quirks
are never trusted: a missing or unreadable field is left out, never a crash), strict in what we render (every
object is core 1.1.0: images only with an http(s) URL, tag values strings). The mapping is docs/catalogue.md."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection

from beckn.errors import INVALID_REQUEST, BecknRequestError
from emsp import opening_hours
from emsp.datetimes import format_datetime
from emsp.models import Evse, Location

if TYPE_CHECKING:
    from beckn.catalogue import Hit
    from billing.models import Tariff

# --- OCPI 2.2.1 vocabularies (mod_locations §8.5) ---------------------------------------------------------

FACILITIES = {
    "HOTEL": "Hotel",
    "RESTAURANT": "Restaurant",
    "CAFE": "Cafe",
    "MALL": "Mall",
    "SUPERMARKET": "Supermarket",
    "SPORT": "Sport facilities",
    "RECREATION_AREA": "Recreation area",
    "NATURE": "Nature",
    "MUSEUM": "Museum",
    "BIKE_SHARING": "Bike sharing",
    "BUS_STOP": "Bus stop",
    "TAXI_STAND": "Taxi stand",
    "TRAM_STOP": "Tram stop",
    "METRO_STATION": "Metro station",
    "TRAIN_STATION": "Train station",
    "AIRPORT": "Airport",
    "PARKING_LOT": "Parking lot",
    "CARPOOL_PARKING": "Carpool parking",
    "FUEL_STATION": "Fuel station",
    "WIFI": "Wi-Fi",
}
# What BAPs call them → the OCPI facilities that satisfy the wish (any one of them).
FACILITY_SYNONYMS: dict[str, frozenset[str]] = {
    "WI_FI": frozenset({"WIFI"}),
    "WLAN": frozenset({"WIFI"}),
    "INTERNET": frozenset({"WIFI"}),
    "COFFEE": frozenset({"CAFE"}),
    "COFFEE_SHOP": frozenset({"CAFE"}),
    "FOOD": frozenset({"RESTAURANT", "CAFE"}),
    "SHOPPING": frozenset({"MALL", "SUPERMARKET"}),
    "SHOPPING_MALL": frozenset({"MALL"}),
    "SHOPPING_CENTRE": frozenset({"MALL"}),
    "SHOPPING_CENTER": frozenset({"MALL"}),
    "GROCERY": frozenset({"SUPERMARKET"}),
    "GYM": frozenset({"SPORT"}),
    "PETROL_STATION": frozenset({"FUEL_STATION"}),
    "GAS_STATION": frozenset({"FUEL_STATION"}),
    "FUEL": frozenset({"FUEL_STATION"}),
    "TRAIN": frozenset({"TRAIN_STATION"}),
    "RAILWAY_STATION": frozenset({"TRAIN_STATION"}),
    "METRO": frozenset({"METRO_STATION"}),
    "SUBWAY": frozenset({"METRO_STATION"}),
    "BUS": frozenset({"BUS_STOP"}),
    "TRAM": frozenset({"TRAM_STOP"}),
    "TAXI": frozenset({"TAXI_STAND"}),
    "BIKE": frozenset({"BIKE_SHARING"}),
    "CARPOOL": frozenset({"CARPOOL_PARKING"}),
}
# Things drivers ask for that no OCPI 2.2.1 Facility (nor any other Location field) can tell: refused by name
# rather than silently matching nothing or everything.
UNREPORTED_FACILITIES = frozenset(
    {"RESTROOM", "RESTROOMS", "TOILET", "TOILETS", "WC", "LAVATORY", "BATHROOM", "SHOWER", "LOUNGE", "ATM"}
)
PARKING_TYPES = {
    "ALONG_MOTORWAY": "Along a motorway",
    "PARKING_GARAGE": "Parking garage",
    "PARKING_LOT": "Parking lot",
    "ON_DRIVEWAY": "On a driveway",
    "ON_STREET": "On the street",
    "UNDERGROUND_GARAGE": "Underground garage",
}
PARKING_SYNONYMS: dict[str, frozenset[str]] = {
    "STREET": frozenset({"ON_STREET"}),
    "MOTORWAY": frozenset({"ALONG_MOTORWAY"}),
    "HIGHWAY": frozenset({"ALONG_MOTORWAY"}),
    "DRIVEWAY": frozenset({"ON_DRIVEWAY"}),
    "LOT": frozenset({"PARKING_LOT"}),
    "GARAGE": frozenset({"PARKING_GARAGE", "UNDERGROUND_GARAGE"}),
    "UNDERGROUND": frozenset({"UNDERGROUND_GARAGE"}),
    "CAR_PARK": frozenset({"PARKING_LOT", "PARKING_GARAGE", "UNDERGROUND_GARAGE"}),
}
PARKING_RESTRICTIONS = {
    "EV_ONLY": "Electric vehicles only",
    "PLUGGED": "Only while plugged in",
    "DISABLED": "Reserved for disabled drivers",
    "CUSTOMERS": "Customers only",
    "MOTORCYCLES": "Motorcycles and scooters only",
}
# EnergySourceCategory values counted as renewable (EnergyMix.is_green_energy: "100% from regenerative sources").
RENEWABLE_SOURCES = frozenset({"SOLAR", "WIND", "WATER", "GENERAL_GREEN"})
ENERGY_SOURCES = ("SOLAR", "WIND", "WATER", "GENERAL_GREEN", "NUCLEAR", "GENERAL_FOSSIL", "COAL", "GAS")
# ImageCategory order in which a driver wants to see them (the place first, logos last).
IMAGE_ORDER = ("LOCATION", "ENTRANCE", "CHARGER", "OTHER", "NETWORK", "OPERATOR", "OWNER")
MAX_IMAGES = 10
MAX_TEXT = 1000

# Beckn categories (Provider.categories, Item.category_ids) an item can be listed under.
CATEGORIES = {
    "green-energy": "Green energy (100 % renewable)",
    "open-24-7": "Open 24/7",
    "accessible-parking": "Parking bay for disabled drivers",
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_TRUE = ("true", "yes", "y", "1", "on", "required")
_FALSE = ("false", "no", "n", "0", "off")
# Possessive spaces: each run of them can be read one way only (two `\s*` around an optional word took every way
# of sharing a run between them: 30 kB of spaces in a tag value cost seconds).
_PERCENT = re.compile(
    r"^\s*+(?:>=|≥|>|=>|at\s+least|min(?:imum)?)?\s*+([0-9]+(?:\.[0-9]+)?)\s*+(?:%|percent)?\s*+$", re.I
)


# --- filters ----------------------------------------------------------------------------------------------


@dataclass
class LocationFilters:
    """Search filters on what the location (and EVSE) offers; all off by default."""

    open_now: bool = False
    open_at_arrival: bool = False
    twentyfourseven: bool = False
    min_renewable_pct: Decimal | None = None
    green_only: bool = False
    facilities: list[frozenset[str]] = field(default_factory=list)  # each: one of these must be there
    parking_types: frozenset[str] = frozenset()
    accessible: bool = False

    @property
    def on_location(self) -> bool:
        return bool(
            self.open_now
            or self.open_at_arrival
            or self.twentyfourseven
            or self.facilities
            or self.parking_types
            or self.accessible
        )

    @property
    def on_energy(self) -> bool:
        return self.green_only or self.min_renewable_pct is not None

    @property
    def widening(self) -> int:
        """How many times the candidates the first (index-only) step reads when these filters will drop some
        (×4 cost about twice the search time at 3,000 locations; docs/catalogue.md, *Cost*)."""
        return 2 if self.on_location or self.on_energy else 1


def _fail(code: str, message: str) -> BecknRequestError:
    return BecknRequestError(INVALID_REQUEST, f"message.intent.tags({code})", message)


def _flag(tags: dict[str, str], codes: tuple[str, ...]) -> bool:
    for code in codes:
        if code in tags:
            value = tags[code].strip().lower()
            if value in _TRUE:
                return True
            if value in _FALSE:
                return False
            raise _fail(code, f"{code} must be true or false")
    return False


def _key(text: str) -> str:
    return re.sub(r"[\s\-/]+", "_", text.strip().upper())


def facility_wish(text: str, code: str) -> frozenset[str]:
    """One facility a BAP asks for → the OCPI facilities that satisfy it; refused if OCPI cannot tell."""
    key = _key(text)
    if key.startswith("HAS_"):
        key = key[4:]
    if key in FACILITIES:
        return frozenset({key})
    if key in FACILITY_SYNONYMS:
        return FACILITY_SYNONYMS[key]
    if key in UNREPORTED_FACILITIES:
        raise _fail(
            code,
            f"{text.strip().lower()!r} cannot be searched for: OCPI 2.2.1, which CPOs report locations in, has no "
            f"such facility; known facilities: {', '.join(f.lower() for f in FACILITIES)}",
        )
    raise _fail(code, f"unknown facility {text.strip()!r}; known: {', '.join(f.lower() for f in FACILITIES)}")


def _percent(text: str, code: str) -> Decimal:
    match = _PERCENT.match(text)
    if match is None:
        raise _fail(code, f"{code} must be a percentage such as '80' or '>= 80 %'")
    value = Decimal(match.group(1))
    if not Decimal(0) <= value <= Decimal(100):
        raise _fail(code, f"{code} must be between 0 and 100 %")
    return value


def parse_location_filters(tags: dict[str, str]) -> LocationFilters:
    """The filters from the intent's flattened tags (codes lower-case, '_' as '-'); liberal in the names
    (docs/catalogue.md lists them), strict in the values: a bad one is INVALID_REQUEST naming the tag."""
    out = LocationFilters()
    out.open_now = _flag(tags, ("open-now", "is-open", "currently-open"))
    out.open_at_arrival = _flag(tags, ("open-at-arrival", "open-on-arrival", "open-upon-arrival"))
    out.twentyfourseven = _flag(tags, ("twentyfourseven", "24-7", "24x7", "open-24-7", "open-24h", "open-24x7"))
    hours = tags.get("opening-hours")
    if hours:
        wish = _key(hours)
        if wish in ("OPEN_NOW", "NOW", "OPEN"):
            out.open_now = True
        elif wish in ("OPEN_AT_ARRIVAL", "AT_ARRIVAL", "ARRIVAL", "OPEN_ON_ARRIVAL"):
            out.open_at_arrival = True
        elif wish in ("24_7", "24X7", "TWENTYFOURSEVEN", "24H", "ALWAYS"):
            out.twentyfourseven = True
        else:
            raise _fail("opening-hours", "opening-hours must be open-now, open-at-arrival or 24/7")
    out.green_only = _flag(tags, ("green-energy", "green-only", "is-green-energy", "green"))
    for code in ("min-renewable-share", "renewable-share", "min-renewable", "renewable", "renewable-energy"):
        if tags.get(code):
            out.min_renewable_pct = _percent(tags[code], code)
            break
    for code in ("facilities", "facility", "amenities", "amenity"):
        if tags.get(code):
            out.facilities += [facility_wish(part, code) for part in tags[code].split(",") if part.strip()]
    for code in sorted(c for c in tags if c.startswith("has-")):
        if _flag(tags, (code,)):
            out.facilities.append(facility_wish(code, code))
    for code in ("parking-type", "parking-types"):
        if tags.get(code):
            allowed: set[str] = set()
            for part in tags[code].split(","):
                key = _key(part)
                if not key:
                    continue
                if key in PARKING_TYPES:
                    allowed.add(key)
                elif key in PARKING_SYNONYMS:
                    allowed |= PARKING_SYNONYMS[key]
                else:
                    raise _fail(code, f"unknown parking type {part.strip()!r}; known: {', '.join(PARKING_TYPES)}")
            out.parking_types = frozenset(allowed)
            break
    out.accessible = _flag(
        tags, ("accessible", "accessibility", "wheelchair-accessible", "wheelchair", "disabled-parking")
    )
    return out


# --- reading the stored OCPI objects ---------------------------------------------------------------------


def load_data(evses: list[Evse]) -> None:
    """Fill in the OCPI `data` of these EVSEs and their locations where the query deferred it, in one query
    for the few rows shown or filtered (search reads its candidates without it). EVSEs of one location are
    given one Location object, so what is worked out for a location is worked out once."""
    shared: dict[int, Location] = {}
    for evse in evses:
        location = shared.setdefault(evse.location_id, evse.location)
        if evse.location is not location:
            evse.location = location
    # A field is deferred when it is not in the instance's __dict__ (what Model.get_deferred_fields reads, field
    # by field, for every field: a profile of on_search showed that and the ORM query below costing more than
    # rendering the items).
    missing = sorted({e.id for e in evses if "data" not in e.__dict__ or "data" not in e.location.__dict__})
    if not missing:
        return
    rows = _data_rows(missing)
    for evse in evses:
        row = rows.get(evse.id)
        if row is None:
            continue
        if "data" not in evse.__dict__:
            evse.data = row[0]
        if "data" not in evse.location.__dict__:
            evse.location.data = row[1]


_EVSE_DATA, _LOCATION_DATA = Evse._meta.get_field("data"), Location._meta.get_field("data")
_DATA_SQL = (
    f'SELECT e."id", e."{_EVSE_DATA.column}", l."id", l."{_LOCATION_DATA.column}" FROM "{Evse._meta.db_table}" e '  # noqa: S608
    f'JOIN "{Location._meta.db_table}" l ON l."id" = e."location_id" WHERE e."id" IN ({{ids}})'
)


def _data_rows(ids: list[int]) -> dict[int, tuple[Any, Any]]:
    """The EVSEs' and their locations' `data`, by EVSE id, decoded as the ORM decodes them (the fields'
    from_db_value), in one plain statement; a location's once, however many of its EVSEs are shown (a profile of
    on_search at 1 M EVSEs: the same location's data decoded for each of its EVSEs)."""
    with connection.cursor() as cursor:
        cursor.execute(_DATA_SQL.format(ids=", ".join(["%s"] * len(ids))), ids)
        found = cursor.fetchall()
    evse_value, location_value = _EVSE_DATA.from_db_value, _LOCATION_DATA.from_db_value  # type: ignore[attr-defined]
    locations: dict[int, Any] = {}
    out: dict[int, tuple[Any, Any]] = {}
    for pk, data, location_pk, at in found:
        if location_pk not in locations:
            locations[location_pk] = location_value(at, None, connection)
        out[pk] = (evse_value(data, None, connection), locations[location_pk])
    return out


def _data(obj: Location | Evse) -> dict[str, Any]:
    data = obj.data
    return data if isinstance(data, dict) else {}


def _text(value: Any, limit: int = MAX_TEXT) -> str:
    """A DisplayText list (English first), a bare string, or nothing; control characters removed."""
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, dict) and isinstance(v.get("text"), str) and v["text"].strip()]
        english = [v for v in texts if str(v.get("language") or "").lower().startswith("en")]
        value = (english or texts or [{"text": ""}])[0]["text"]
    if not isinstance(value, str):
        return ""
    return _CONTROL.sub(" ", value).strip()[:limit]


def _enum_list(value: Any, known: dict[str, str]) -> list[str]:
    out: list[str] = []
    for item in value if isinstance(value, list) else []:
        key = _key(item) if isinstance(item, str) else ""
        if key in known and key not in out:
            out.append(key)
    return out


def _url(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > 2048 or _CONTROL.search(url) or " " in url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    try:
        number = Decimal(str(value).strip().rstrip("%"))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _is_true(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def images(value: Any) -> list[dict[str, str]]:
    """OCPI Images → Beckn Images: the image (size_type `custom` with its width and height when given) and its
    thumbnail (`xs`; OCPI: at most 128×128 px). Images without an http(s) URL are left out."""
    entries = [i for i in value if isinstance(i, dict)] if isinstance(value, list) else []
    rank = {c: n for n, c in enumerate(IMAGE_ORDER)}
    entries.sort(key=lambda i: rank.get(str(i.get("category") or "OTHER").upper(), len(IMAGE_ORDER)))
    out: list[dict[str, str]] = []
    for entry in entries:
        url = _url(entry.get("url"))
        if url is None:
            continue
        image = {"url": url}
        width, height = _number(entry.get("width")), _number(entry.get("height"))
        if width and height and width > 0 and height > 0 and width == width.to_integral():
            image.update(size_type="custom", width=str(int(width)), height=str(int(height)))
        out.append(image)
        thumbnail = _url(entry.get("thumbnail"))
        if thumbnail is not None:
            out.append({"url": thumbnail, "size_type": "xs"})
        if len(out) >= MAX_IMAGES:
            break
    return out[:MAX_IMAGES]


def hours_of(location: Location) -> opening_hours.Hours:
    """The location's hours, read once per loaded object (and its `data`)."""
    data = _data(location)
    memo = location.__dict__.get("_beckn_hours")
    if memo is not None and memo[0] is data:
        return memo[1]
    hours = opening_hours.read_hours(data.get("opening_times"), location.time_zone or data.get("time_zone"))
    location.__dict__["_beckn_hours"] = (data, hours)
    return hours


def always_open(hours: opening_hours.Hours, now: datetime) -> bool:
    """24/7 with no closing still to come."""
    return hours.twentyfourseven is True and not opening_hours.upcoming(hours.closings, now)


def energy_mix_of(location: Location, tariff: Tariff | None) -> tuple[dict[str, Any] | None, str]:
    """The location's EnergyMix, else its tariff's (OCPI has it on both); with where it came from."""
    mix = _data(location).get("energy_mix")
    if isinstance(mix, dict) and mix:
        return mix, "location"
    mix = (tariff.data or {}).get("energy_mix") if tariff is not None and isinstance(tariff.data, dict) else None
    if isinstance(mix, dict) and mix:
        return mix, "tariff"
    return None, ""


def source_shares(mix: dict[str, Any]) -> dict[str, Decimal]:
    shares: dict[str, Decimal] = {}
    for entry in mix.get("energy_sources") if isinstance(mix.get("energy_sources"), list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
            continue
        source, share = _key(entry["source"]), _number(entry.get("percentage"))
        if source in ENERGY_SOURCES and share is not None and Decimal(0) <= share <= Decimal(100):
            shares[source] = shares.get(source, Decimal(0)) + share
    return shares


def renewable_share(mix: dict[str, Any] | None) -> Decimal | None:
    """Percent of the energy from SOLAR, WIND, WATER and GENERAL_GREEN sources; 100 for `is_green_energy`
    without a breakdown (OCPI: "100% from regenerative sources"); None when nothing is known."""
    if not mix:
        return None
    shares = source_shares(mix)
    if shares:
        return min(Decimal(100), sum((v for k, v in shares.items() if k in RENEWABLE_SOURCES), Decimal(0)))
    return Decimal(100) if _is_true(mix.get("is_green_energy")) else None


def is_green(mix: dict[str, Any] | None) -> bool:
    return bool(mix) and (_is_true((mix or {}).get("is_green_energy")) is True or renewable_share(mix) == 100)


def accessible_parking(evse: Evse) -> bool:
    """OCPI has no accessibility field: a bay reserved for disabled drivers (ParkingRestriction DISABLED)."""
    return "DISABLED" in _enum_list(_data(evse).get("parking_restrictions"), PARKING_RESTRICTIONS)


# --- filtering ---------------------------------------------------------------------------------------------


def keep_matching(
    details: LocationFilters,
    ranked: list[tuple[float | None, Evse]],
    now: datetime,
    window: tuple[datetime, datetime] | None = None,
) -> list[tuple[float | None, Evse]]:
    """The ranked candidates whose location and EVSE pass the location filters (order kept); search hands them
    over a chunk at a time. Locations whose hours are unknown pass the opening-hours filters; the energy filters
    are settled here when the location states its energy mix, per hit (with the tariff's) otherwise."""
    if not (details.on_location or details.on_energy):
        return ranked
    arrival = window[0] if window is not None else now  # the stop time the driver gave, else now
    load_data([evse for _, evse in ranked])
    verdicts: dict[int, bool] = {}
    out: list[tuple[float | None, Evse]] = []
    for distance, evse in ranked:
        location = evse.location
        if location.pk not in verdicts:
            verdicts[location.pk] = _location_matches(details, location, now, arrival)
        if verdicts[location.pk] and (not details.accessible or accessible_parking(evse)):
            out.append((distance, evse))
    return out


def _location_matches(details: LocationFilters, location: Location, now: datetime, arrival: datetime) -> bool:
    data = _data(location)
    if details.open_now or details.open_at_arrival or details.twentyfourseven:
        hours = hours_of(location)
        if details.open_now and opening_hours.is_open(hours, now) is False:
            return False
        if details.open_at_arrival and opening_hours.is_open(hours, arrival) is False:
            return False
        if details.twentyfourseven and not always_open(hours, now):
            return False
    if details.facilities:
        present = set(_enum_list(data.get("facilities"), FACILITIES))
        if not all(wish & present for wish in details.facilities):
            return False
    if details.parking_types:
        parking = _key(data["parking_type"]) if isinstance(data.get("parking_type"), str) else ""
        if parking not in details.parking_types:
            return False
    if details.on_energy and energy_mix_of(location, None)[0] is not None:
        return energy_matches(details, location, None)  # the location's own mix rules over its tariff's
    return True


def energy_matches(details: LocationFilters, location: Location, tariff: Tariff | None) -> bool:
    """The energy filters on the location's energy mix (or its tariff's): unknown never passes."""
    if not details.on_energy:
        return True
    if "data" not in location.__dict__:  # deferred
        location.data = Location.objects.values_list("data", flat=True).get(pk=location.pk)
    mix, _ = energy_mix_of(location, tariff)
    if details.green_only and not is_green(mix):
        return False
    if details.min_renewable_pct is not None:
        share = renewable_share(mix)
        if share is None or share < details.min_renewable_pct:
            return False
    return True


# --- rendering ---------------------------------------------------------------------------------------------


def _tag(code: str, value: Any, name: str | None = None) -> dict[str, Any]:
    if name:
        return {"descriptor": {"code": code, "name": name}, "value": str(value)}
    return {"descriptor": {"code": code}, "value": str(value)}


def _group(code: str, name: str, tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"descriptor": {"code": code, "name": name}, "list": tags}] if tags else []


def _local(moment: datetime, hours: opening_hours.Hours) -> str:
    return moment.astimezone(hours.zone).isoformat(timespec="minutes")


def decorate_location(beckn_location: dict[str, Any], location: Location) -> None:
    """A Beckn Location's descriptor: directions as `long_desc`, the location's images."""
    data = _data(location)
    descriptor = beckn_location.setdefault("descriptor", {})
    directions = _text(data.get("directions"))
    if directions:
        descriptor["long_desc"] = directions
    pictures = images(data.get("images"))
    if pictures:
        descriptor["images"] = pictures


def opening_tags(location: Location, now: datetime) -> list[dict[str, Any]]:
    data = _data(location)
    hours = hours_of(location)
    tags = [_tag("time-zone", hours.zone.key, "Time zone")]
    state = opening_hours.is_open(hours, now)
    if state is None:
        tags.append(_tag("hours-known", "false", "Opening hours stated by the operator"))
    else:
        tags.append(_tag("open-now", "true" if state else "false", "Open now"))
        change = opening_hours.next_change(hours, now)
        if change is not None:
            tags.append(
                _tag("closes-at" if state else "opens-at", _local(change, hours), "Closes at" if state else "Opens at")
            )
    if hours.twentyfourseven is not None:
        tags.append(_tag("twentyfourseven", "true" if hours.twentyfourseven else "false", "Open 24/7"))
    if hours.twentyfourseven is False:
        today = now.astimezone(hours.zone).isoweekday()
        tags.append(_tag("today", ", ".join(opening_hours.day_periods(hours, today)) or "closed", "Hours today"))
        tags.append(_tag("regular-hours", opening_hours.week_summary(hours), "Regular hours"))
    for periods, code, name in (
        (hours.closings, "exceptional-closing", "Closed"),
        (hours.openings, "exceptional-opening", "Also open"),
    ):
        for begin, end in opening_hours.upcoming(periods, now)[:3]:
            tags.append(_tag(code, f"{format_datetime(begin)}/{format_datetime(end)}", name))
    when_closed = _is_true(data.get("charging_when_closed"))
    if when_closed is not None and hours.known:
        tags.append(_tag("charging-when-closed", "true" if when_closed else "false", "Charging goes on after closing"))
    return tags


def _business(details: Any, prefix: str, name: str) -> list[dict[str, Any]]:
    if not isinstance(details, dict):
        return []
    tags = []
    title = _text(details.get("name"), 100)
    if title:
        tags.append(_tag(prefix, title, name))
    website = _url(details.get("website"))
    if website:
        tags.append(_tag(f"{prefix}-website", website, f"{name} website"))
    logo = _url(details.get("logo").get("url")) if isinstance(details.get("logo"), dict) else None
    if logo:
        tags.append(_tag(f"{prefix}-logo", logo, f"{name} logo"))
    return tags if title else []


def detail_tags(hit: Hit, now: datetime) -> list[dict[str, Any]]:
    """The item's tag groups about where it is: facilities, opening-hours, parking, accessibility, energy-mix,
    operator, help. What belongs to the location is worked out once per location object and moment."""
    location = hit.evse.location
    memo = _location_memo(location, now)
    facilities, hours, operator, help_group = memo.groups
    energy, _ = _energy_of(location, hit.tariff, memo)
    return [*facilities, *hours, *_evse_groups(hit.evse), *energy, *operator, *help_group]


@dataclass(slots=True)
class _LocationMemo:
    """What a location's items share in one render, kept on the location object for one moment (a profile of
    render_catalog: the mix, hours and categories were worked out again for each item)."""

    now: datetime
    data: dict[str, Any]
    groups: tuple[list[dict[str, Any]], ...]  # facilities, opening hours, operator, help
    open_all_day: bool
    # id(tariff) -> (the tariff's data, energy-mix group, green?, the tariff); the tariff object is kept so that
    # its id names no other object while the memo lives.
    energy_by_tariff: dict[int | None, tuple[Any, list[dict[str, Any]], bool, Tariff | None]] = field(
        default_factory=dict
    )


def _location_memo(location: Location, now: datetime) -> _LocationMemo:
    data = _data(location)
    memo = location.__dict__.get("_beckn_groups")
    if memo is None or memo.now != now or memo.data is not data:
        memo = _LocationMemo(now, data, _location_groups(location, now), always_open(hours_of(location), now))
        location.__dict__["_beckn_groups"] = memo
    return memo


def _energy_of(location: Location, tariff: Tariff | None, memo: _LocationMemo) -> tuple[list[dict[str, Any]], bool]:
    """The energy-mix group and whether it is green, for the location with this tariff (the tariff's mix counts
    where the location states none), once per tariff and its data."""
    key = None if tariff is None else id(tariff)
    tariff_data = None if tariff is None else tariff.data
    known = memo.energy_by_tariff.get(key)
    if known is None or known[0] is not tariff_data:
        mix, _ = energy_mix_of(location, tariff)
        known = memo.energy_by_tariff[key] = (
            tariff_data,
            _group("energy-mix", "Energy mix", energy_tags(location, tariff)),
            is_green(mix),
            tariff,
        )
    return known[1], known[2]


def _location_groups(location: Location, now: datetime) -> tuple[list[dict[str, Any]], ...]:
    data = _data(location)
    facilities = [
        _tag(f.lower().replace("_", "-"), "true", FACILITIES[f]) for f in _enum_list(data.get("facilities"), FACILITIES)
    ]
    operator = (
        _business(data.get("operator"), "operator", "Operator")
        + _business(data.get("suboperator"), "suboperator", "Sub-operator")
        + _business(data.get("owner"), "owner", "Owner")
    )
    return (
        _group("facilities", "Facilities", facilities),
        _group("opening-hours", "Opening hours", opening_tags(location, now)),
        _group("operator", "Operator", operator),
        _group("help", "Help", help_tags(location)),
    )


def _evse_groups(evse: Evse) -> list[dict[str, Any]]:
    """Parking (the location's type, the EVSE's restrictions, floor, number, directions) and accessibility."""
    data, evse_data = _data(evse.location), _data(evse)
    parking = []
    parking_type = _key(data["parking_type"]) if isinstance(data.get("parking_type"), str) else ""
    if parking_type in PARKING_TYPES:
        parking.append(_tag("parking-type", parking_type, PARKING_TYPES[parking_type]))
    restrictions = _enum_list(evse_data.get("parking_restrictions"), PARKING_RESTRICTIONS)
    if restrictions:
        names = "; ".join(PARKING_RESTRICTIONS[r] for r in restrictions)
        parking.append(_tag("parking-restrictions", ",".join(restrictions), names))
    for key, code, name in (
        ("floor_level", "floor-level", "Floor"),
        ("physical_reference", "physical-reference", "Number on the charger"),
    ):
        text = _text(evse_data.get(key), 16)
        if text:
            parking.append(_tag(code, text, name))
    evse_directions = _text(evse_data.get("directions"))
    if evse_directions:
        parking.append(_tag("evse-directions", evse_directions, "How to find the charger"))
    groups = _group("parking", "Parking", parking)
    if "DISABLED" in restrictions:
        groups += _group(
            "accessibility",
            "Accessibility",
            [
                _tag("accessible-parking", "true", "Parking bay for disabled drivers"),
                _tag("basis", "OCPI parking_restrictions DISABLED", "Derived from"),
            ],
        )
    return groups


def energy_tags(location: Location, tariff: Tariff | None) -> list[dict[str, Any]]:
    mix, basis = energy_mix_of(location, tariff)
    if mix is None:
        return []
    tags = []
    green = _is_true(mix.get("is_green_energy"))
    if green is not None:
        tags.append(_tag("is-green-energy", "true" if green else "false", "100 % renewable"))
    share = renewable_share(mix)
    if share is not None:
        tags.append(_tag("renewable-share", f"{format(share.normalize(), 'f')}%", "Renewable share"))
    for source, value in sorted(source_shares(mix).items(), key=lambda kv: ENERGY_SOURCES.index(kv[0])):
        tags.append(
            _tag(f"source-{source.lower().replace('_', '-')}", f"{format(value.normalize(), 'f')}%", source.title())
        )
    for key, code, name in (
        ("supplier_name", "supplier", "Energy supplier"),
        ("energy_product_name", "product", "Energy product"),
    ):
        text = _text(mix.get(key), 64)
        if text:
            tags.append(_tag(code, text, name))
    if tags:
        tags.append(_tag("basis", basis, "Stated for the"))
    return tags


def help_tags(location: Location) -> list[dict[str, Any]]:
    """OCPI 2.2.1 gives no phone for a location or operator (BusinessDetails is name, website, logo): the
    CPO's support contacts are the ones in our agreement with it (console), ours come from the settings."""
    partner = location.partner
    tags = []
    if partner.support_phone:
        tags.append(_tag("cpo-phone", partner.support_phone, f"{partner.name} support"))
    if partner.support_email:
        tags.append(_tag("cpo-email", partner.support_email, f"{partner.name} support e-mail"))
    website = _url(partner.website)
    if website:
        tags.append(_tag("cpo-website", website, f"{partner.name} website"))
    if settings.EMSP_SUPPORT_PHONE:
        tags.append(_tag("emsp-phone", settings.EMSP_SUPPORT_PHONE, "Our support"))
    if settings.EMSP_SUPPORT_EMAIL:
        tags.append(_tag("emsp-email", settings.EMSP_SUPPORT_EMAIL, "Our support e-mail"))
    return tags


def category_ids(hit: Hit, now: datetime) -> list[str]:
    location = hit.evse.location
    memo = _location_memo(location, now)
    out = []
    if _energy_of(location, hit.tariff, memo)[1]:
        out.append("green-energy")
    if memo.open_all_day:
        out.append("open-24-7")
    if accessible_parking(hit.evse):
        out.append("accessible-parking")
    return out


def decorate_item(item: dict[str, Any], hit: Hit, now: datetime) -> None:
    """The item's details: its location's tag groups, the EVSE's images, the categories it is listed under."""
    item.setdefault("tags", []).extend(detail_tags(hit, now))
    pictures = images(_data(hit.evse).get("images"))
    if pictures:
        item.setdefault("descriptor", {})["images"] = pictures
    categories = category_ids(hit, now)
    if categories:
        item["category_ids"] = categories


def decorate_provider(provider: dict[str, Any]) -> None:
    """The categories the provider's items are listed under (Provider.categories)."""
    used = {c for item in provider.get("items", []) for c in item.get("category_ids", [])}
    if used:
        provider["categories"] = [
            {"id": code, "descriptor": {"code": code, "name": name}}
            for code, name in CATEGORIES.items()
            if code in used
        ]
