"""Sub-objects of OCPI 2.2.1 Locations (mod_locations §8.4): coordinates, time zone, hours, images, etc."""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from ocpi import enums
from ocpi.normalize.datetimes import read_datetime
from ocpi.normalize.issues import Ctx, Rejected, json_path
from ocpi.normalize.values import (
    as_list,
    read_boolean,
    read_display_texts,
    read_enum,
    read_integer,
    read_number,
    read_text,
)

# --- coordinates -------------------------------------------------------------------------------------------

_LAT = re.compile(r"-?[0-9]{1,2}\.[0-9]{5,7}")
_LON = re.compile(r"-?[0-9]{1,3}\.[0-9]{5,7}")
_SIX = Decimal("0.000001")


def _coordinate(value: object, regex: re.Pattern[str], limit: int) -> tuple[str, float] | None:
    """(OCPI text, float) for one coordinate; None if unparsable or out of range."""
    if isinstance(value, str):
        s = value.strip()
        if regex.fullmatch(s):
            f = float(s)
            return (s, f) if -limit <= f <= limit else None
        if s.count(",") == 1 and "." not in s:  # decimal comma
            s = s.replace(",", ".")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        s = repr(value)  # shortest round-trip text: no binary noise enters the Decimal
    else:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite() or not -limit <= d <= limit:
        return None
    out = format(d.quantize(_SIX), "f")  # notes §1.3: re-render with 6 decimals
    if out.startswith("-") and not out.strip("-0."):
        out = out[1:]
    return out, float(out)


def geo(value: object, path: str, ctx: Ctx) -> tuple[dict[str, str], float, float]:
    """GeoLocation {latitude, longitude} as OCPI strings; raises Rejected when unusable."""
    if not isinstance(value, dict):
        raise Rejected(path, "coordinates missing", code="invalid_coordinates")
    lat_raw, lon_raw = value.get("latitude"), value.get("longitude")
    lat = _coordinate(lat_raw, _LAT, 90)
    lon = _coordinate(lon_raw, _LON, 180)
    if lat is None or lon is None:
        raise Rejected(path, f"unusable coordinates {lat_raw!r}, {lon_raw!r}", code="invalid_coordinates")
    if lat[1] == 0 and lon[1] == 0:
        # ITC sends "0"/"0" for unknown positions; a charger in the Gulf of Guinea is not a location.
        raise Rejected(path, "coordinates 0,0 (unknown position)", code="invalid_coordinates")
    if lat[0] != lat_raw or lon[0] != lon_raw:
        ctx.fix(path, "coordinates_format", f"coordinates {lat_raw!r}, {lon_raw!r} rendered as {lat[0]}, {lon[0]}")
    if value.keys() - {"latitude", "longitude"}:
        ctx.once("geo", "extra", path, "unknown_field", "unknown GeoLocation fields dropped", fixed=False)
    return {"latitude": lat[0], "longitude": lon[0]}, lat[1], lon[1]


# --- time zone -------------------------------------------------------------------------------------------


@functools.cache
def _tz_finder() -> Any:
    from timezonefinder import TimezoneFinder  # ~0.2 s to build: once per process, only when needed

    return TimezoneFinder()


@functools.lru_cache(maxsize=32768)
def zone_from_coordinates(lat: float, lon: float) -> str | None:
    """The IANA zone at a point (timezonefinder, ~6 µs), kept by point: every pull sends the same positions again."""
    return _tz_finder().timezone_at(lng=lon, lat=lat)


def at_sea(zone: str | None) -> bool:
    """Is a zone timezonefinder's for open sea? Its land zones take in the territorial waters (12 nautical miles
    off the coast), so a point in an "Etc/GMT±N" zone is past them: no charger stands there."""
    return zone is not None and zone.startswith("Etc/")


def _offsets(zone: str, year: int) -> tuple[timedelta | None, ...]:
    tz = ZoneInfo(zone)
    return tuple(datetime(year, month, 15, 12, tzinfo=UTC).astimezone(tz).utcoffset() for month in (1, 7))


@functools.lru_cache(maxsize=4096)
def _same_offsets(zone: str, other: str) -> bool:
    # Kept for the process's life: a zone's rules change only with a tzdata upgrade, which restarts it.
    year = datetime.now(UTC).year
    return _offsets(zone, year) == _offsets(other, year)


def same_clock(zone: str, other: str) -> bool:
    """Do two zones show the same time this winter and this summer (mid-January, mid-July)? Then either name
    serves a location: hours and tariff windows read alike ("Europe/Kiev" for "Europe/Kyiv", "Europe/Paris" for
    "Europe/Berlin")."""
    return zone == other or _same_offsets(zone, other)


# --- small objects ------------------------------------------------------------------------------------------

_HHMM = re.compile(r"(\d{1,2}):(\d{2})(?::\d{2})?")


def hhmm(value: object) -> tuple[str | None, bool]:
    """("HH:MM" or None, changed); accepts "7:00" and "07:00:00"; "24:00" becomes "00:00" (end of day)."""
    if not isinstance(value, str):
        return None, False
    m = _HHMM.fullmatch(value.strip())
    if not m:
        return None, False
    h, mi = int(m.group(1)), int(m.group(2))
    if h == 24 and mi == 0:
        h = 0
    if h > 23 or mi > 59:
        return None, False
    out = f"{h:02d}:{mi:02d}"
    return out, out != value


def _image(value: object, path: str, ctx: Ctx) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        ctx.drop(path, "invalid_image", "Image is not an object")
        return None
    url = read_text(value.get("url"), json_path(path, "url"), ctx)
    if not url:
        ctx.drop(path, "invalid_image", "Image without url dropped")
        return None
    out: dict[str, Any] = {"url": url}
    thumb = read_text(value.get("thumbnail"), json_path(path, "thumbnail"), ctx)
    if thumb:
        out["thumbnail"] = thumb
    cat = read_enum(value.get("category"), enums.IMAGE_CATEGORY, json_path(path, "category"), ctx)
    if cat is None:
        cat = "OTHER"
        ctx.fix(json_path(path, "category"), "unknown_enum", f"category {value.get('category')!r} read as OTHER")
    out["category"] = cat
    typ = read_text(value.get("type"), json_path(path, "type"), ctx)
    if typ and "/" in typ:  # ITC sends the MIME type "image/jpeg"
        ctx.fix(json_path(path, "type"), "image_type", f"type {typ!r} reduced to its subtype")
        typ = typ.rsplit("/", 1)[1]
    if not typ:
        ext = url.rsplit(".", 1)[-1].lower() if "." in url.rsplit("/", 1)[-1] else ""
        if not ext.isalnum() or len(ext) > 4:
            ctx.drop(path, "invalid_image", "Image without type dropped")
            return None
        ctx.fix(json_path(path, "type"), "image_type", f"type taken from the url extension {ext!r}")
        typ = ext
    out["type"] = typ[:4].lower()
    for dim in ("width", "height"):
        n = read_integer(value.get(dim), json_path(path, dim), ctx)
        if n is not None and 0 < n < 100000:
            out[dim] = n
    return out


def images(value: object, path: str, ctx: Ctx) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        ctx.drop(path, "invalid_type", "images is not a list")
        return None
    return [img for i, v in enumerate(value) if (img := _image(v, f"{path}[{i}]", ctx)) is not None]


def business_details(value: object, path: str, ctx: Ctx) -> dict[str, Any] | None:
    if value is None:
        return None
    name = read_text(value.get("name"), json_path(path, "name"), ctx, 100) if isinstance(value, dict) else None
    if not name:
        ctx.drop(path, "invalid_business_details", "BusinessDetails without name dropped")
        return None
    out: dict[str, Any] = {"name": name}
    website = read_text(value.get("website"), json_path(path, "website"), ctx, 255)
    if website:
        out["website"] = website
    if value.get("logo") is not None:
        logo = _image(value["logo"], json_path(path, "logo"), ctx)
        if logo is not None:
            out["logo"] = logo
    return out


def _periods(value: object, path: str, ctx: Ctx) -> list[dict[str, str]]:
    out = []
    for i, item in enumerate(as_list(value)):
        p = f"{path}[{i}]"
        try:
            if not isinstance(item, dict):
                raise Rejected(p, "not an object", code="invalid_period")
            out.append(
                {
                    "period_begin": read_datetime(item.get("period_begin"), json_path(p, "period_begin"), ctx)[1],
                    "period_end": read_datetime(item.get("period_end"), json_path(p, "period_end"), ctx)[1],
                }
            )
        except Rejected as exc:
            ctx.drop(p, "invalid_period", f"exceptional period dropped: {exc}")
    return out


def _regular_hours(value: object, path: str, ctx: Ctx) -> list[dict[str, Any]]:
    """Regular hours validated ("HH:MM", weekday 1-7); invalid entries dropped.

    ITCharge numbers the days 0-6 from Sunday (JavaScript's getDay, cron): a list using 0 and no 7 has its 0 read
    as 7, Sunday, not dropped (its sites had shown "Sun closed"). A list with both keeps dropping the 0."""
    entries = []
    for i, item in enumerate(as_list(value)):
        p = f"{path}[{i}]"
        wd = read_integer(item.get("weekday"), json_path(p, "weekday"), ctx) if isinstance(item, dict) else None
        entries.append((p, item, wd))
    weekdays = {wd for _p, _item, wd in entries}
    sunday_is_0 = 0 in weekdays and 7 not in weekdays
    regular = []
    for p, item, wd in entries:
        begin, b_changed = hhmm(item.get("period_begin")) if isinstance(item, dict) else (None, False)
        end, e_changed = hhmm(item.get("period_end")) if isinstance(item, dict) else (None, False)
        if wd == 0 and sunday_is_0 and begin is not None and end is not None:
            ctx.fix(json_path(p, "weekday"), "weekday_0_sunday", "weekday 0 read as 7 (Sunday): the list has no 7")
            wd = 7
        if wd is None or not 1 <= wd <= 7 or begin is None or end is None:
            ctx.drop(p, "invalid_regular_hours", f"regular hours entry {item!r:.80} dropped")
            continue
        if b_changed or e_changed:
            ctx.fix(p, "time_format", "period times rendered as HH:MM")
        regular.append({"weekday": wd, "period_begin": begin, "period_end": end})
    return regular


def opening_times(value: object, path: str, ctx: Ctx) -> dict[str, Any] | None:
    """Hours: regular hours validated (``_regular_hours``), twentyfourseven made consistent with them."""
    if not isinstance(value, dict):
        return None
    regular = _regular_hours(value.get("regular_hours"), f"{path}.regular_hours", ctx)
    tfs = read_boolean(value.get("twentyfourseven"), json_path(path, "twentyfourseven"), ctx)
    if tfs is None:
        tfs = not regular
        ctx.fix(json_path(path, "twentyfourseven"), "missing_required", f"twentyfourseven missing; set to {tfs}")
    elif tfs and regular:
        ctx.drop(json_path(path, "regular_hours"), "invalid_regular_hours", "regular_hours ignored: twentyfourseven")
        regular = []
    elif not tfs and not regular:
        # Hours with twentyfourseven=false SHALL carry regular_hours; "never open" is not what anyone sends.
        ctx.fix(json_path(path, "twentyfourseven"), "missing_required", "no regular_hours; read as twentyfourseven")
        tfs = True
    out: dict[str, Any] = {"twentyfourseven": tfs}
    if regular:
        out["regular_hours"] = regular
    for key in ("exceptional_openings", "exceptional_closings"):
        if value.get(key):
            periods = _periods(value[key], json_path(path, key), ctx)
            if periods:
                out[key] = periods
    return out


def energy_mix(value: object, path: str, ctx: Ctx) -> dict[str, Any] | None:
    if value is None:
        return None
    green = (
        read_boolean(value.get("is_green_energy"), json_path(path, "is_green_energy"), ctx)
        if isinstance(value, dict)
        else None
    )
    if green is None:
        ctx.drop(path, "invalid_energy_mix", "EnergyMix without is_green_energy dropped")
        return None
    out: dict[str, Any] = {"is_green_energy": green}
    for key, sub, table, amount in (
        ("energy_sources", "source", enums.ENERGY_SOURCE_CATEGORY, "percentage"),
        ("environ_impact", "category", enums.ENVIRONMENTAL_IMPACT_CATEGORY, "amount"),
    ):
        items = []
        for i, item in enumerate(as_list(value.get(key))):
            p = f"{path}.{key}[{i}]"
            cat = read_enum(item.get(sub), table, json_path(p, sub), ctx) if isinstance(item, dict) else None
            n = read_number(item.get(amount), json_path(p, amount), ctx) if isinstance(item, dict) else None
            if cat is None or n is None:
                ctx.drop(p, "invalid_energy_mix", f"{key} entry dropped")
                continue
            items.append({sub: cat, amount: n})
        if items:
            out[key] = items
    for key in ("supplier_name", "energy_product_name"):
        s = read_text(value.get(key), json_path(path, key), ctx, 64)
        if s:
            out[key] = s
    return out


def publish_tokens(value: object, path: str, ctx: Ctx) -> list[dict[str, str]] | None:
    if not isinstance(value, list):
        return None
    out = []
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        if not isinstance(item, dict):
            ctx.drop(p, "invalid_publish_token", "PublishTokenType is not an object")
            continue
        entry: dict[str, str] = {}
        for key, limit in (("uid", 36), ("visual_number", 64), ("issuer", 64), ("group_id", 36)):
            s = read_text(item.get(key), json_path(p, key), ctx, limit)
            if s:
                entry[key] = s
        if item.get("type") is not None:
            t = read_enum(item["type"], enums.TOKEN_TYPE, json_path(p, "type"), ctx)
            if t:
                entry["type"] = t
        if entry:
            out.append(entry)
    return out


def related_locations(value: object, path: str, ctx: Ctx) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    out = []
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        try:
            g, _lat, _lon = geo(item, p, ctx)
        except Rejected as exc:
            ctx.drop(p, exc.code, f"related location dropped: {exc.reason}")
            continue
        name = item.get("name")
        if name is not None:
            names = read_display_texts(name, json_path(p, "name"), ctx)
            if names:
                g["name"] = names[0]  # AdditionalGeoLocation.name is one DisplayText
        out.append(g)
    return out
