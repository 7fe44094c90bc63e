"""Reading Beckn 1.1.0 requests: the envelope and context checks that decide ACK or NACK, and the parts of
each action's message we need, each failure naming its JSON path (BECKN-005 codes, beckn/errors.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings

from beckn.catalogue import (
    DEFAULT_RADIUS_M,
    MAX_LIMIT,
    MAX_RADIUS_M,
    SPEEDS,
    SearchFilters,
    connector_standard,
)
from beckn.catalogue_details import parse_location_filters
from beckn.errors import (
    CATEGORY_NOT_FOUND,
    INVALID_REQUEST,
    INVALID_UPDATE_TARGET,
    ORDER_NOT_FOUND,
    BecknRequestError,
)
from beckn.route_search import parse_journey
from billing.services.payments import Reported
from emsp.datetimes import NOT_RFC3339, DateTimeError, parse_text, parse_utc
from emsp.services.bookings import WindowRefused, window_check
from emsp.vehicles import MAX_ENERGY_KWH

ACK = {"message": {"ack": {"status": "ACK"}}}
ACTIONS = ("search", "select", "init", "confirm", "status", "track", "cancel", "update", "rating", "support")

_GPS = re.compile(r"^\s*([-+]?\d{1,2}(?:\.\d+)?)\s*,\s*([-+]?\d{1,3}(?:\.\d+)?)\s*$")
_DURATION = re.compile(r"^P(?!$)(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.ASCII)
MAX_ID_LENGTH = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass
class Envelope:
    action: str
    context: dict[str, Any]
    message: dict[str, Any]

    @property
    def bap_id(self) -> str:
        return str(self.context["bap_id"])

    @property
    def message_id(self) -> str:
        return str(self.context["message_id"])

    @property
    def transaction_id(self) -> str:
        return str(self.context["transaction_id"])


def _need(condition: bool, path: str, message: str, code: str = INVALID_REQUEST) -> None:
    if not condition:
        raise BecknRequestError(code, path, message)


def plain_id(value: Any, path: str, max_length: int = 255) -> str:
    """An id, code or short text from the message that we look up or store (item, provider, order, rating,
    cancellation reason, a driver's billing details): text without control characters (a NUL can't even reach
    PostgreSQL, which refused it with an error the BAP only saw as "please retry"), no longer than the column it
    goes to."""
    text = str(value)
    _need(not _CONTROL.search(text), path, "contains control characters")
    _need(len(text) <= max_length, path, f"at most {max_length} characters")
    return text


def _string(context: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = context.get(key)
    if value is None:
        _need(not required, f"context.{key}", f"context.{key} is required")
        return None
    _need(isinstance(value, str) and value.strip() != "", f"context.{key}", f"context.{key} must be a non-empty string")
    _need(len(value) <= MAX_ID_LENGTH, f"context.{key}", f"context.{key} is too long")
    # Ids go into keys, URLs, headers and logs: a control character (a NUL, a newline) has no place there.
    _need(not _CONTROL.search(value), f"context.{key}", f"context.{key} contains control characters")
    return value


def parse_duration(value: str) -> timedelta | None:
    match = _DURATION.match(value)
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    try:
        return timedelta(
            days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0), seconds=float(seconds or 0)
        )
    except (OverflowError, ValueError):
        # "P99999999999D" overflows a timedelta; 4,301 digits or more are more than int() reads at all (a
        # ValueError that had failed the ACK): neither is a duration anyone means.
        return None


MAX_CONTEXT_LOCATION = 4096  # bytes of JSON: a city and a country take a few dozen


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _writable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return False
    return True


def parse_envelope(raw: bytes, action: str, *, parsed: Any = None, check_timestamp: bool = True) -> Envelope:
    """JSON, `{context, message}`, and the context fields we rely on (core 1.1.0 makes them all optional;
    a BPP needs bap_id/bap_uri to answer and the ids to correlate — the UEI layer-2 requires them too).
    `parsed` is `raw` already parsed (the ACK path parses once, before verifying); None parses `raw`."""
    body = parsed
    if body is None:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BecknRequestError(INVALID_REQUEST, "", f"invalid JSON: {exc}") from exc
    _need(isinstance(body, dict), "", "the body must be a JSON object")
    context = body.get("context")
    _need(isinstance(context, dict), "context", "context must be an object")
    message = body.get("message")
    _need(isinstance(message, dict), "message", "message must be an object")
    # What we keep and echo is written by orjson, which writes at most 255 levels (it reads 1024): deeper is no
    # request anyone means, and failed later as a 500 (the context's location) or a queue error (503, retried).
    if not _writable(body):  # written whole into the log (and context echoed): the part that is too deep
        parts = (("context.location", context.get("location")), ("context", context), ("message", message))
        deep = next((name for name, part in parts if not _writable(part)), "")
        _need(False, deep, "nested too deep (at most 255 levels)")
    _need(context.get("action") == action, "context.action", f"context.action must be {action!r} on /{action}")
    domain = _string(context, "domain")
    accepted = [d.lower() for d in settings.BECKN_DOMAINS]
    _need(
        str(domain).lower() in accepted,
        "context.domain",
        f"domain {domain!r} is not served here ({', '.join(settings.BECKN_DOMAINS)})",
    )
    version = context.get("version", context.get("core_version"))
    if version is not None:
        _need(
            isinstance(version, str) and re.fullmatch(r"1\.1(\.\d{1,4})?", version) is not None,
            "context.version",
            "only Beckn core 1.1.x is served",
        )
    _string(context, "bap_id")
    bap_uri = _string(context, "bap_uri")
    try:
        parts = urlsplit(str(bap_uri))
    except ValueError:  # "http://[bap…" (an unclosed IPv6 bracket): not a URL, an invalid request (not a 500)
        parts = None
    _need(
        parts is not None and parts.scheme in ("http", "https") and bool(parts.netloc),
        "context.bap_uri",
        "bap_uri must be an http(s) URL",
    )
    _string(context, "transaction_id")
    _string(context, "message_id")
    timestamp = _string(context, "timestamp", required=False)
    bpp_id = _string(context, "bpp_id", required=False)
    if bpp_id is not None:
        _need(bpp_id == settings.BECKN_SUBSCRIBER_ID, "context.bpp_id", f"this BPP is {settings.BECKN_SUBSCRIBER_ID!r}")
    location = context.get("location")
    if location is not None:  # kept with the journey (jsonb, which refuses a NUL) and echoed in callbacks
        _need(isinstance(location, dict), "context.location", "location must be an object")
        text = orjson.dumps(location)
        _need(len(text) <= MAX_CONTEXT_LOCATION, "context.location", f"location is over {MAX_CONTEXT_LOCATION} bytes")
        _need(not _has_nul(location), "context.location", "location contains a NUL character")
    ttl_text = context.get("ttl")
    ttl = None
    if ttl_text is not None:
        ttl = parse_duration(ttl_text) if isinstance(ttl_text, str) else None
        _need(ttl is not None, "context.ttl", "ttl must be an ISO 8601 duration")
    if timestamp is not None and check_timestamp:
        _check_timestamp(timestamp, ttl)
    return Envelope(action=action, context=context, message=message)


# The properties of each action's message that core 1.1.0's OpenAPI requires (transaction.yaml: `message.required`);
# search, rating and support require none. A request without one fails the BPP's validation: NACKed (core 1.1.0
# Ack), not ACKed and then answered with an error. Only their presence is checked here, on the ACK path; what they
# hold is read, and refused, by the action's handler.
REQUIRED_IN_MESSAGE = {
    "select": ("order",),
    "init": ("order",),
    "confirm": ("order",),
    "status": ("order_id",),
    "track": ("order_id",),
    "cancel": ("order_id",),
    "update": ("update_target", "order"),
}


def check_required(envelope: Envelope) -> None:
    """The message has the properties its action requires (REQUIRED_IN_MESSAGE), else 30000 naming the first
    missing one. An order named by `message.order` instead of `message.order_id` is read as its id (`order_id`,
    lenient for BAPs that send the order object), so an order object with an `id` counts as one (an empty one
    names nothing)."""
    message = envelope.message
    for key in REQUIRED_IN_MESSAGE.get(envelope.action, ()):
        if message.get(key) is None and not (key == "order_id" and _names_an_order(message.get("order"))):
            raise BecknRequestError(INVALID_REQUEST, f"message.{key}", f"message.{key} is required")


def _names_an_order(order: Any) -> bool:
    return isinstance(order, dict) and order.get("id") is not None


def _check_timestamp(text: str, ttl: timedelta | None = None) -> None:
    """context.timestamp (RFC 3339) within the window a signature may be good for: a request from the far past
    or the future is a replay or a broken clock, not a request (BECKN-006 §"created/expires"). With a `ttl`, the
    message holds valid for that long after its timestamp (core 1.1.0 Context.ttl): one received later is refused
    at the ACK, give or take the clock skew we allow (a request the ACK took in time is acted on however long
    the queue holds it)."""
    try:
        moment = parse_utc(text)
    except DateTimeError:
        raise BecknRequestError(
            INVALID_REQUEST, "context.timestamp", "timestamp is not an RFC 3339 date-time"
        ) from None
    now = datetime.now(UTC)
    if moment > now + timedelta(seconds=settings.BECKN_SIGNATURE_SKEW_SECONDS):
        raise BecknRequestError(INVALID_REQUEST, "context.timestamp", "timestamp is in the future")
    if moment < now - timedelta(seconds=settings.BECKN_SIGNATURE_MAX_VALIDITY_SECONDS):
        raise BecknRequestError(INVALID_REQUEST, "context.timestamp", "timestamp is too old: send a new request")
    # now − timestamp against the ttl, not timestamp + ttl: a ttl of a million years must not overflow a date.
    if ttl is not None and now - moment - timedelta(seconds=settings.BECKN_SIGNATURE_SKEW_SECONDS) > ttl:
        raise BecknRequestError(
            INVALID_REQUEST, "context.ttl", "its ttl has passed since its timestamp: send a new request"
        )


# --- search -----------------------------------------------------------------------------------------


# Tag codes whose values add up when repeated (two connector-type tags: either type), where for other codes the
# last one counts; and the group codes whose list names the values of one of them (UEI's `connector-types` group,
# each entry a connector type).
LISTED_CODES = {"connector-type", "connector-standard", "power-type"}
VALUE_GROUPS = {"connector-types": "connector-type", "connectors": "connector-type", "connector-type": "connector-type"}


def _code(descriptor: Any) -> str:
    return str(descriptor.get("code") or "").strip().lower().replace("_", "-") if isinstance(descriptor, dict) else ""


def _put_tag(out: dict[str, str], code: str, value: str) -> None:
    if code in LISTED_CODES and out.get(code):
        out[code] = f"{out[code]},{value}"
    else:
        out[code] = value


def _tags(tag_groups: Any, path: str) -> dict[str, str]:
    """Flatten tags to {code: value}, lower-case codes with '_' as '-' (UEI `connector-type`, missions
    `Connector_Type`, UEI layer-2 `CONNECTOR-TYPE` are the same thing). Read as BAPs send them: TagGroups
    (`{descriptor, list: [{descriptor, value}]}`), plain Tags in the list (the RFC's `intent.item.tags`), and a
    group whose code names the filter and whose list its values (UEI: `connector-types` → CCS2, Type2).
    Repeated connector types add up."""
    out: dict[str, str] = {}
    if tag_groups is None:
        return out
    _need(isinstance(tag_groups, list), path, "tags must be a list of tag groups")
    for i, group in enumerate(tag_groups):
        _need(isinstance(group, dict), f"{path}[{i}]", "a tag group must be an object")
        _need(
            group.get("descriptor") is None or isinstance(group.get("descriptor"), dict),
            f"{path}[{i}].descriptor",
            "a descriptor must be an object",
        )
        if group.get("list") is None and group.get("value") is not None:  # a plain Tag where a group goes
            code = _code(group.get("descriptor"))
            if code:
                _put_tag(out, code, str(group["value"]).strip())
            continue
        tags = group.get("list") or []
        _need(isinstance(tags, list), f"{path}[{i}].list", "a tag group's list must be a list of tags")
        names = VALUE_GROUPS.get(_code(group.get("descriptor")))
        for j, tag in enumerate(tags):
            _need(isinstance(tag, dict), f"{path}[{i}].list[{j}]", "a tag must be an object")
            descriptor = tag.get("descriptor") or {}
            _need(isinstance(descriptor, dict), f"{path}[{i}].list[{j}].descriptor", "a descriptor must be an object")
            code = _code(descriptor)
            if names is not None and code not in (names, "connector-standard"):
                value = tag.get("value") if tag.get("value") is not None else descriptor.get("code")
                if value is not None and str(value).strip():
                    _put_tag(out, names, str(value).strip())
            elif code and tag.get("value") is not None:
                _put_tag(out, code, str(tag["value"]).strip())
    return out


def _gps(value: Any, path: str) -> tuple[float, float]:
    _need(isinstance(value, str), path, "gps must be a 'lat,lon' string")
    match = _GPS.match(value)
    _need(match is not None, path, "gps must look like '12.9716,77.5946'")
    assert match is not None
    lat, lon = float(match.group(1)), float(match.group(2))
    _need(-90 <= lat <= 90 and -180 <= lon <= 180, path, "gps is out of range")
    return lat, lon


def _radius_m(radius: Any, path: str) -> float:
    _need(isinstance(radius, dict), path, "radius must be a Scalar object")
    try:
        value = float(Decimal(str(radius.get("value"))))
    except (InvalidOperation, ValueError) as exc:
        raise BecknRequestError(INVALID_REQUEST, f"{path}.value", "radius value must be a number") from exc
    _need(math.isfinite(value), f"{path}.value", "radius value must be a number")  # "NaN", "Infinity"
    unit = str(radius.get("unit") or "km").strip().lower()
    factor = {
        "km": 1000.0,
        "kilometer": 1000.0,
        "kilometers": 1000.0,
        "m": 1.0,
        "meter": 1.0,
        "meters": 1.0,
        "mi": 1609.344,
    }
    _need(unit in factor, f"{path}.unit", f"radius unit {unit!r} is not km, m or mi")
    _need(value > 0, f"{path}.value", "radius must be positive")
    return min(value * factor[unit], MAX_RADIUS_M)


MAX_WINDOW_TEXT = 64


# The offset that ends an RFC 3339 date-time (§5.6 time-offset: "Z" or ±hh:mm; ±hhmm read too), after its date.
_OFFSET = re.compile(r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$")


def _instant(value: Any, path: str) -> datetime:
    """A moment of a driver's booking window: an RFC 3339 date-time, with its offset. The lenient OCPI reading
    (emsp/datetimes.py) takes a text without one, or a bare date, as UTC; a driver who writes "19:30" means
    19:30 where they are, so a window that can't say where it is is refused, not booked hours off."""
    _need(isinstance(value, str) and len(value) <= MAX_WINDOW_TEXT, path, "must be an RFC 3339 date-time")
    try:
        when, deviation = parse_text(value)
    except DateTimeError as exc:
        raise BecknRequestError(INVALID_REQUEST, path, f"must be an RFC 3339 date-time: {exc}") from exc
    _need(deviation != NOT_RFC3339, path, "must be an RFC 3339 date-time with a time of day, not a bare date")
    _need(
        _OFFSET.search(value.strip()[11:]) is not None,
        path,
        "must be an RFC 3339 date-time with its time zone offset (Z or ±hh:mm), such as 2026-12-10T19:30:00+05:30",
    )
    return when


def fulfillment_window(fulfillments: Any, path: str) -> tuple[datetime, datetime] | None:
    """The time window a driver asks for: the first stop's `time.range` {start, end}, or `time.timestamp`
    with `time.duration` (ISO 8601), of a fulfillment (an intent's) or a list of them (an order's). Checked
    as bookings accept it (not over, not too far ahead, not too long). None when no stop carries a time."""
    listed = fulfillments if isinstance(fulfillments, list) else [fulfillments]
    for f, fulfillment in enumerate(listed[:5]):
        stops = fulfillment.get("stops") if isinstance(fulfillment, dict) else None
        for s, stop in enumerate(stops[:5] if isinstance(stops, list) else []):
            time = stop.get("time") if isinstance(stop, dict) else None
            if not isinstance(time, dict):
                continue
            where = f"{path}{f'[{f}]' if isinstance(fulfillments, list) else ''}.stops[{s}].time"
            window: tuple[datetime, datetime] | None = None
            time_range = time.get("range")
            if isinstance(time_range, dict):
                start = _instant(time_range.get("start"), f"{where}.range.start")
                end = _instant(time_range.get("end"), f"{where}.range.end")
                window = (start, end)
            elif time.get("timestamp") is not None:
                start = _instant(time.get("timestamp"), f"{where}.timestamp")
                length = parse_duration(str(time.get("duration") or "PT15M")[:MAX_WINDOW_TEXT])
                _need(length is not None, f"{where}.duration", "duration must be an ISO 8601 duration such as PT45M")
                assert length is not None
                try:
                    window = (start, start + length)
                except OverflowError as exc:  # a start near the year 9999 and a long duration
                    raise BecknRequestError(INVALID_REQUEST, f"{where}.duration", "the window ends past 9999") from exc
            if window is not None:
                try:
                    return window_check(*window)
                except WindowRefused as exc:
                    raise BecknRequestError(INVALID_REQUEST, where, str(exc)) from exc
    return None


# Fulfillment types our catalogue offers (every item is a charge; DEG names it CHARGING, others EV-CHARGING).
CHARGING_TYPES = {"CHARGING", "EV-CHARGING", "EV_CHARGING", "CHARGE", ""}


def context_city(context: dict[str, Any]) -> str | None:
    """The city the request's context names (Context.location.city.name), for a search without a position; a
    city given by code alone (`std:080`) names no city we can match and counts as none."""
    location = context.get("location")
    city = location.get("city") if isinstance(location, dict) else None
    name = city.get("name") if isinstance(city, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return plain_id(name.strip(), "context.location.city.name", 100)


def search_filters(message: dict[str, Any]) -> SearchFilters:
    """Filters from an intent, liberal in the vocabularies it accepts (RFC, UEI, DEG v1, missions)."""
    filters = SearchFilters()
    intent = message.get("intent") or {}
    _need(isinstance(intent, dict), "message.intent", "intent must be an object")
    fulfillment = intent.get("fulfillment") or {}
    _need(isinstance(fulfillment, dict), "message.intent.fulfillment", "fulfillment must be an object")
    stops = fulfillment.get("stops") or []
    _need(isinstance(stops, list), "message.intent.fulfillment.stops", "stops must be a list")
    for i, stop in enumerate(stops):
        path = f"message.intent.fulfillment.stops[{i}].location"
        location = (stop or {}).get("location") if isinstance(stop, dict) else None
        if not isinstance(location, dict):
            continue
        circle = location.get("circle")
        circle = circle if isinstance(circle, dict) else {}
        if circle.get("gps"):
            filters.latitude, filters.longitude = _gps(circle["gps"], f"{path}.circle.gps")
        elif location.get("gps"):
            filters.latitude, filters.longitude = _gps(location["gps"], f"{path}.gps")
        else:
            continue
        if circle.get("radius") is not None:  # a circle's radius around its own gps, or the location's
            filters.radius_m = _radius_m(circle["radius"], f"{path}.circle.radius")
        break
    tags = {
        **_tags(intent.get("tags"), "message.intent.tags"),
        **_tags(fulfillment.get("tags"), "message.intent.fulfillment.tags"),
        **_tags(
            (intent.get("item") or {}).get("tags") if isinstance(intent.get("item"), dict) else None,
            "message.intent.item.tags",
        ),
    }
    connector = tags.get("connector-type") or tags.get("connector-standard")
    if connector:
        filters.connector_types = _connector_types(connector)
    current = tags.get("power-type") or tags.get("current-type") or tags.get("current")
    if current:
        filters.power_types = _power_types(current)
    power = tags.get("power-rating") or tags.get("min-power") or tags.get("minimum-power")
    if power:
        filters.min_power_w = _power_w(power, "message.intent.tags(power-rating)")
    speed = tags.get("charging-speed")
    if speed:
        speed = speed.strip().upper().replace("-", "").replace("_", "")
        _need(speed in SPEEDS, "message.intent.tags(charging-speed)", f"charging-speed must be one of {SPEEDS}")
        filters.charging_speed = speed
    availability = (tags.get("availability") or tags.get("status") or "").strip().lower()
    filters.available_only = availability in ("available", "true", "yes", "online")
    if tags.get("max-price"):
        filters.max_price = _price_ceiling(tags["max-price"].split()[0], "message.intent.tags(max-price)")
    provider = intent.get("provider")
    if isinstance(provider, dict) and provider.get("id"):
        filters.provider = plain_id(provider["id"], "message.intent.provider.id")
    item = intent.get("item")
    if isinstance(item, dict) and item.get("id"):
        filters.item_id = plain_id(item["id"], "message.intent.item.id")
    if filters.max_price is None and isinstance(item, dict) and isinstance(item.get("price"), dict):
        ceiling = item["price"].get("maximum_value")
        if ceiling is not None:
            filters.max_price = _price_ceiling(ceiling, "message.intent.item.price.maximum_value")
    if tags.get("limit"):
        filters.limit = _limit(tags["limit"], "message.intent.tags(limit)")
    filters.window = fulfillment_window(fulfillment, "message.intent.fulfillment")
    kind = fulfillment.get("type")
    if kind is not None:
        kind = plain_id(kind if isinstance(kind, str) else "", "message.intent.fulfillment.type").upper()
        if kind not in CHARGING_TYPES:
            filters.other_fulfillment = kind
    filters.details = parse_location_filters(tags)  # opening hours, facilities, parking, energy mix
    _category(intent.get("category"), filters)
    parse_journey(intent, fulfillment, tags, filters)  # route, vehicle, energy (beckn/route_search.py)
    if filters.latitude is None:
        filters.radius_m = DEFAULT_RADIUS_M
    return filters


# At most this many connector types in one search: OCPI 2.2.1 names 38 standards; thousands would be as many
# query parameters (SQLite takes at most 32,766).
MAX_CONNECTOR_TYPES = 64


def _connector_types(text: str) -> set[str]:
    """The connector types of a `connector-type` tag (comma-separated; repeated tags add up), each as the
    standard it names. They are looked up in the database, which refuses a NUL (PostgreSQL: an error the BAP
    only heard as "please retry"): each is a plain id."""
    path = "message.intent.tags(connector-type)"
    types = {connector_standard(plain_id(c, path)) for c in text.split(",") if c.strip()}
    _need(len(types) <= MAX_CONNECTOR_TYPES, path, f"at most {MAX_CONNECTOR_TYPES} connector types")
    return types


# What a `power-type` tag may name: AC or DC (as drivers and the DEG vocabulary say it), or an OCPI 2.2.1
# PowerType (what our items' own `power-type` tag shows), in any case and with `-` or spaces for `_`.
# (beckn may not import ocpi: the two are layers side by side, pyproject's import contracts.)
CURRENT_KINDS = {
    "AC": frozenset({"AC_1_PHASE", "AC_2_PHASE", "AC_2_PHASE_SPLIT", "AC_3_PHASE"}),
    "DC": frozenset({"DC"}),
    **{kind: frozenset({kind}) for kind in ("AC_1_PHASE", "AC_2_PHASE", "AC_2_PHASE_SPLIT", "AC_3_PHASE")},
    "AC1": frozenset({"AC_1_PHASE"}),
    "AC_SINGLE_PHASE": frozenset({"AC_1_PHASE"}),
    "AC2": frozenset({"AC_2_PHASE"}),
    "AC3": frozenset({"AC_3_PHASE"}),
    "AC_THREE_PHASE": frozenset({"AC_3_PHASE"}),
}


def _power_types(text: str) -> set[str]:
    """The OCPI PowerTypes a `power-type` tag keeps (comma-separated; repeated tags add up): `AC` is every AC
    type, `DC` is DC, and an OCPI value (or a short name, `AC3`) is itself. One we can't read is 30000: ignoring
    it would list DC chargers to a driver whose car only takes AC."""
    path = "message.intent.tags(power-type)"
    kept: set[str] = set()
    for part in text.split(","):
        if not part.strip():
            continue
        value = plain_id(part, path, max_length=32).strip()
        kinds = CURRENT_KINDS.get(re.sub(r"[\s-]+", "_", value.upper()))
        _need(kinds is not None, path, f"power-type {value!r} is none of AC, DC or an OCPI PowerType")
        kept |= kinds  # type: ignore[arg-type]
    return kept


def _price_ceiling(value: Any, path: str) -> Decimal:
    """A price ceiling (the `max-price` tag, `item.price.maximum_value`): a finite decimal of 0 or more. "NaN"
    and "sNaN" are Decimals too, and had failed the search where a price was compared with them."""
    try:
        price = Decimal(str(value).strip())
    except (InvalidOperation, ValueError) as exc:
        raise BecknRequestError(INVALID_REQUEST, path, "must be a number") from exc
    _need(price.is_finite() and price >= 0, path, "must be a number of 0 or more")
    return price


def _limit(text: str, path: str) -> int:
    """How many items a search returns, 1 to MAX_LIMIT (more is MAX_LIMIT). ASCII digits only: str.isdigit()
    also takes "²", which int() refuses (the search had failed), and int() refuses over 4,300 digits."""
    digits = text.strip()
    _need(digits.isascii() and digits.isdigit(), path, "limit must be a whole number such as 20")
    digits = digits.lstrip("0") or "0"
    return max(1, min(MAX_LIMIT, int(digits) if len(digits) <= 9 else MAX_LIMIT))


# The categories our items are listed under (catalogue_details.CATEGORIES), by the codes BAPs search them by:
# DEG v1 and the UEI guide search `green-tariff`, the RFC's on_search lists `category-gt`.
CATEGORY_FILTERS = {
    "green-energy": "green_only",
    "green-tariff": "green_only",
    "category-gt": "green_only",
    "green": "green_only",
    "open-24-7": "twentyfourseven",
    "24-7": "twentyfourseven",
    "accessible-parking": "accessible",
}


def _category(category: Any, filters: SearchFilters) -> None:
    """An intent's category (its id, or its descriptor's code) as the filter it stands for; one we don't list
    items under is 30005 (BECKN-005: category not found)."""
    if category is None:
        return
    _need(isinstance(category, dict), "message.intent.category", "category must be an object")
    descriptor = category.get("descriptor")
    _need(descriptor is None or isinstance(descriptor, dict), "message.intent.category.descriptor", "must be an object")
    if category.get("id") is not None:
        path, value = "message.intent.category.id", category["id"]
    elif isinstance(descriptor, dict) and descriptor.get("code") is not None:
        path, value = "message.intent.category.descriptor.code", descriptor["code"]
    else:
        return
    code = plain_id(value if isinstance(value, str) else "", path).lower().replace("_", "-")
    flag = CATEGORY_FILTERS.get(code)
    if flag is None:
        raise BecknRequestError(
            CATEGORY_NOT_FOUND, path, f"category {code!r} not found: one of green-energy, open-24-7, accessible-parking"
        )
    setattr(filters.details, flag, True)


# The most power a search may ask a charger for: 10 MW, past any charger (megawatt truck charging is 3.75 MW).
MAX_POWER_W = 10_000_000


def _power_w(text: str, path: str) -> int:
    """'30kW', '30 kW', '7400W', '50' (kW assumed) → watts. Read as a Decimal: 400 nines were a float
    infinity, which int() refuses (the search had failed); over MAX_POWER_W no charger has, and no database
    column holds any number."""
    # Possessive spaces after the number: with `\s*(kw|w)?\s*$` each way of sharing a run of spaces between the
    # two was tried (30 kB of them cost seconds). The text is stripped, so no spaces lead or trail.
    match = re.fullmatch(r"(?:>=?|greater than)?\s*+([0-9]+(?:\.[0-9]+)?)\s*+(kw|w)?", text.strip().lower())
    _need(match is not None, path, "power must look like '30kW'")
    assert match is not None
    value = Decimal(match.group(1))
    watts = value if match.group(2) == "w" else value * 1000
    _need(watts <= MAX_POWER_W, path, f"power must be at most {MAX_POWER_W // 1_000_000} MW")
    return int(watts)


# --- order-related messages -------------------------------------------------------------------------


@dataclass
class SelectedItem:
    provider_id: str | None
    item_id: str
    energy_kwh: Decimal | None
    duration: timedelta | None
    window: tuple[datetime, datetime] | None = None


# --- init: who the driver is --------------------------------------------------------------------------

# The Billing fields kept (and echoed): strings, each at most this long (the Driver's columns where it has them).
BILLING_TEXT = {"name": 100, "email": 254, "phone": 32, "address": 255, "tax_id": 64}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_PHONE = re.compile(r"\+?[0-9][0-9 ()./-]{2,30}")


# Billing's places and organization (core 1.1.0 Billing: state for state-level tax, city, the organization
# billed), kept and echoed as the BAP sent them, each text checked as the fields above.
BILLING_PLACES = {"state": ("name", "code"), "city": ("name", "code")}
PLACE_TEXT = 100


def _billing_places(billing: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, fields in BILLING_PLACES.items():
        place = _object(billing.get(key), f"message.order.billing.{key}")
        texts = {f: _contact_text(place, f, f"message.order.billing.{key}.{f}", PLACE_TEXT) for f in fields}
        if any(texts.values()):
            kept[key] = {f: t for f, t in texts.items() if t}
    organization = _object(billing.get("organization"), "message.order.billing.organization")
    descriptor = _object(organization.get("descriptor"), "message.order.billing.organization.descriptor")
    name = _contact_text(descriptor, "name", "message.order.billing.organization.descriptor.name", 200)
    if name:
        kept["organization"] = {"descriptor": {"name": name}}
    return kept


@dataclass(frozen=True)
class Contact:
    billing: dict[str, Any]  # the order's Billing as kept and echoed
    email: str
    phone: str
    name: str


def _object(value: Any, path: str) -> dict[str, Any]:
    _need(value is None or isinstance(value, dict), path, "must be an object")
    return value or {}


def _contact_text(source: dict[str, Any], key: str, path: str, limit: int) -> str:
    value = source.get(key)
    if value is None:
        return ""
    _need(isinstance(value, str), path, "must be a string")
    return plain_id(value.strip(), path, limit)


def contact_details(order: dict[str, Any]) -> Contact:
    """The driver's details of an init: the order's Billing, else its first fulfillment's customer (contact and
    person). Each a string without control characters and of a length our records hold; an email and a phone
    that look like one. Billing fields beyond BILLING_TEXT and _billing_places (the billing period, addresses
    as objects) are not kept."""
    billing = _object(order.get("billing"), "message.order.billing")
    fulfillments = order.get("fulfillments")
    first = fulfillments[0] if isinstance(fulfillments, list) and fulfillments else None
    where = "message.order.fulfillments[0].customer"
    customer = _object(first.get("customer") if isinstance(first, dict) else None, where)
    contact = _object(customer.get("contact"), f"{where}.contact")
    person = _object(customer.get("person"), f"{where}.person")
    kept: dict[str, Any] = {}
    for key, limit in BILLING_TEXT.items():
        text = _contact_text(billing, key, f"message.order.billing.{key}", limit)
        if text:
            kept[key] = text
    kept.update(_billing_places(billing))
    found = {}
    for key, source, path in (
        ("email", contact, f"{where}.contact.email"),
        ("phone", contact, f"{where}.contact.phone"),
        ("name", person, f"{where}.person.name"),
    ):
        if key in kept:
            found[key] = (kept[key], f"message.order.billing.{key}")
        else:
            found[key] = (_contact_text(source, key, path, BILLING_TEXT[key]), path)
    (email, email_path), (phone, phone_path) = found["email"], found["phone"]
    _need(not email or _EMAIL.fullmatch(email) is not None, email_path, "is not an email address")
    _need(not phone or _PHONE.fullmatch(phone) is not None, phone_path, "is not a phone number")
    return Contact(billing=kept, email=email, phone=phone, name=found["name"][0])


# The longest charge a driver can ask a price for (a selected quantity in minutes or hours).
MAX_QUOTE_HOURS = 24


def selected_item(message: dict[str, Any]) -> SelectedItem:
    order = message.get("order")
    _need(isinstance(order, dict), "message.order", "order must be an object")
    items = order.get("items")
    _need(isinstance(items, list) and items, "message.order.items", "order.items must list one item")
    item = items[0]
    _need(
        isinstance(item, dict) and isinstance(item.get("id"), str), "message.order.items[0].id", "item id is required"
    )
    provider = order.get("provider") if isinstance(order.get("provider"), dict) else {}
    energy, duration = None, None
    quantity = item.get("quantity") if isinstance(item.get("quantity"), dict) else {}
    selected = quantity.get("selected") if isinstance(quantity.get("selected"), dict) else {}
    measure = selected.get("measure") if isinstance(selected.get("measure"), dict) else None
    if measure is not None:
        unit = str(measure.get("unit") or "kWh").strip().lower()
        try:
            value = Decimal(str(measure.get("value")))
        except InvalidOperation as exc:
            raise BecknRequestError(
                INVALID_REQUEST, "message.order.items[0].quantity.selected.measure.value", "must be a number"
            ) from exc
        path = "message.order.items[0].quantity.selected.measure.value"
        _need(value.is_finite() and value > 0, path, "must be a positive number")
        if unit in ("kwh",):
            _need(value <= MAX_ENERGY_KWH, path, f"at most {MAX_ENERGY_KWH} kWh")
            energy = value
        elif unit in ("min", "mins", "minute", "minutes"):
            _need(value <= MAX_QUOTE_HOURS * 60, path, f"at most {MAX_QUOTE_HOURS * 60} minutes")
            duration = timedelta(minutes=float(value))
        elif unit in ("h", "hr", "hour", "hours"):
            _need(value <= MAX_QUOTE_HOURS, path, f"at most {MAX_QUOTE_HOURS} hours")
            duration = timedelta(hours=float(value))
        else:
            raise BecknRequestError(
                INVALID_REQUEST,
                "message.order.items[0].quantity.selected.measure.unit",
                "unit must be kWh, minutes or hours",
            )
    return SelectedItem(
        provider_id=plain_id(provider["id"], "message.order.provider.id") if provider.get("id") else None,
        item_id=plain_id(item["id"], "message.order.items[0].id"),
        energy_kwh=energy,
        duration=duration,
        window=fulfillment_window(order.get("fulfillments"), "message.order.fulfillments"),
    )


def order_id(message: dict[str, Any], action: str) -> str:
    value = message.get("order_id")
    if value is None and isinstance(message.get("order"), dict):
        value = message["order"].get("id")  # lenient: some BAPs send the order object
    _need(isinstance(value, str) and value.strip() != "", "message.order_id", f"{action} needs message.order_id")
    # Checked as sent, and only ASCII spaces around it forgiven: str.strip() also drops \x1c-\x1f, \x0b and \x85,
    # and an id ending in one had been looked up as the order it ends (a cancel cancelled that order, and its
    # on_cancel named another id than the one asked for), where update, which does not trim, refused it (30000).
    return plain_id(value, order_id_path(message)).strip(" ")


def order_id_path(message: dict[str, Any]) -> str:
    """Where the request named its order: `message.order_id`, or `message.order.id` for a BAP that sent the order
    object (errors about the order point there)."""
    return "message.order_id" if message.get("order_id") is not None else "message.order.id"


# Fulfillment state codes meaning "start" / "stop" in the RFC, UEI, DEG v1, missions and DEG00x vocabularies.
START_CODES = {
    "start-charging",
    "charging-start",
    "charging_started",
    "start_charging",
    "charging-started",
    "active",
    "start",
}
STOP_CODES = {
    "stop-charging",
    "end-charging",
    "charging-end",
    "charging_ended",
    "end_charging",
    "stop_charging",
    "charging-ended",
    "completed",
    "stop",
    "charging-stop",
}


# The order objects an update may name (core 1.1.0 update_target: "Comma separated values of order objects being
# updated"), as a bare name or a path into the order (`order.payments`, `order.fulfillments[0].state`).
UPDATE_TARGETS = {
    "payment": "payment",
    "payments": "payment",
    "fulfillment": "fulfillment",
    "fulfillments": "fulfillment",
}


def update_targets(target: Any) -> list[str]:
    """The objects an update_target names, each checked ("payment", "fulfillment"; 30012 for any other, so no
    part of an update is dropped unsaid)."""
    _need(
        isinstance(target, str) and target.strip() != "",
        "message.update_target",
        "update_target is required",
        INVALID_UPDATE_TARGET,
    )
    found = []
    for part in str(target).split(","):
        name = part.strip().lower().removeprefix("order.")
        kind = UPDATE_TARGETS.get(re.split(r"[.\[]", name, maxsplit=1)[0])
        _need(
            kind is not None,
            "message.update_target",
            f"update_target {part.strip()!r} is not supported: only fulfillment state and payments updates are",
            INVALID_UPDATE_TARGET,
        )
        if kind not in found:
            found.append(kind)
    return found


def update_request(message: dict[str, Any]) -> tuple[str, list[str]]:
    """(order id, what to do) from an update: 'payment' (the app reports a payment it collected, order.payments)
    first, then 'start' or 'stop' (the fulfillment state, in the synonyms of every EV vocabulary)."""
    targets = update_targets(message.get("update_target"))
    order = message.get("order")
    _need(isinstance(order, dict), "message.order", "order must be an object")
    identifier = order.get("id")
    _need(isinstance(identifier, str) and identifier != "", "message.order.id", "order.id is required", ORDER_NOT_FOUND)
    identifier = plain_id(identifier, "message.order.id")
    actions = ["payment"] if "payment" in targets else []
    if "fulfillment" in targets:
        actions.append(_fulfillment_action(order))
    return identifier, actions


def _fulfillment_action(order: dict[str, Any]) -> str:
    """'start' or 'stop' from the order's fulfillments[0].state."""
    fulfillments = order.get("fulfillments")
    _need(
        isinstance(fulfillments, list) and fulfillments and isinstance(fulfillments[0], dict),
        "message.order.fulfillments",
        "fulfillments[0] is required",
    )
    state = fulfillments[0].get("state")
    code = None
    if isinstance(state, dict):
        descriptor = state.get("descriptor")
        code = descriptor.get("code") if isinstance(descriptor, dict) else None
    elif isinstance(state, str):
        code = state  # lenient: DEG00x sends a bare string
    _need(isinstance(code, str), "message.order.fulfillments[0].state.descriptor.code", "a state code is required")
    normalised = str(code).strip().lower().replace(" ", "-")
    if normalised in START_CODES or normalised.replace("_", "-") in START_CODES:
        return "start"
    if normalised in STOP_CODES or normalised.replace("_", "-") in STOP_CODES:
        return "stop"
    raise BecknRequestError(
        INVALID_UPDATE_TARGET,
        "message.order.fulfillments[0].state.descriptor.code",
        f"unknown state {code!r}: use start-charging or stop-charging",
    )


MAX_PAYMENT_AMOUNT = Decimal("1e9")


def parse_payments(order: dict[str, Any]) -> list[Reported]:
    """The app's `order.payments`, checked: an amount is a plain decimal within reason, texts are printable."""
    raw = order.get("payments")
    if raw is None:
        return []
    _need(isinstance(raw, list), "message.order.payments", "payments must be an array")
    out = []
    for index, item in enumerate(raw[:5]):
        path = f"message.order.payments[{index}]"
        _need(isinstance(item, dict), path, "a payment is an object")
        params = item.get("params") if isinstance(item.get("params"), dict) else {}
        amount = None
        if params.get("amount") is not None:
            text = str(params["amount"]).strip()
            try:
                amount = Decimal(text)
            except ArithmeticError:
                amount = None
            _need(
                amount is not None and amount.is_finite() and Decimal(0) <= amount < MAX_PAYMENT_AMOUNT,
                f"{path}.params.amount",
                "amount is a decimal number such as 123.45",
            )
        texts = {
            "collected_by": str(item.get("collected_by") or "").strip().upper(),
            "status": str(item.get("status") or "").strip().upper(),
            "currency": str(params.get("currency") or "").strip().upper(),
            "transaction_id": str(params.get("transaction_id") or "").strip(),
        }
        for name, value in texts.items():
            _need(value.isprintable() and len(value) <= 100, f"{path}.{name}", f"{name} is a short printable text")
        _need(texts["status"] in ("", "PAID", "NOT-PAID"), f"{path}.status", "status is PAID or NOT-PAID")
        out.append(Reported(amount=amount, **texts))
    return out
