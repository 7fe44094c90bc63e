"""Vehicle- and route-aware search: the intent's vehicle and route read liberally (docs/catalogue.md,
"Vehicle and route search"), the route's corridor queried on the EVSE (latitude, longitude) index, results
ranked by detour, and per item the charge's estimated energy, time and cost from the tariff engine.

beckn/parsing.py `search_filters` hands the intent to `parse_journey`; beckn/catalogue.py `search` takes its
candidates from `route_candidates` when there is a route and passes its hits through `with_estimates`;
`item_tags` renders `estimate_group`. The geometry is emsp/geo.py, the charge curve emsp/vehicles.py, the
pricing billing/services/estimates.py."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.db import connection
from django.db.models import BooleanField, QuerySet
from django.db.models.expressions import RawSQL

from beckn.errors import INVALID_REQUEST, BecknRequestError
from billing.services.estimates import charge_estimate, parsed_tariffs, terms_of
from emsp.datetimes import format_datetime
from emsp.geo import MAX_POLYLINE_CHARS, Placement, Route, RouteError, decode_polyline
from emsp.models import Evse
from emsp.vehicles import (
    MAX_BATTERY_KWH,
    MAX_ENERGY_KWH,
    MAX_POWER_KW,
    Vehicle,
    charge_plan,
    charging_power_kw,
)

if TYPE_CHECKING:
    from beckn.catalogue import Hit, SearchFilters

DEFAULT_MAX_DETOUR_M = 10_000.0
MAX_DETOUR_M = 100_000.0
MAX_STOPS = 25
# The corridor is searched narrow first and widened (by what is missing, ×2 to ×4, or straight to the widest
# when that is near) until it holds enough candidates: ranked by detour, the best ones are the nearest to the
# route, so a dense corridor is answered from a narrow strip. Each try costs a scan of the index over the
# route's span of latitude (the B-tree ranges on latitude first), so few wide steps beat many narrow ones.
FIRST_HALF_WIDTH_M = 1_000.0
WIDEN_BY = 4.0
MAX_CORRIDOR_ROWS = 20_000
DRIVING_KMH = 70.0  # average speed for the arrival time at a charger along the route

POLYLINE_CODES = ("route-polyline", "polyline", "route", "encoded-polyline")
STOP_ORDER = {"start": 0, "origin": 0, "end": 2, "destination": 2, "finish": 2}


def _need(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise BecknRequestError(INVALID_REQUEST, path, message)


def _decimal(text: Any, path: str, *, low: Decimal, high: Decimal, units: dict[str, Decimal]) -> Decimal:
    """'75', '75 kWh', '7.4kW' → a Decimal in the base unit, within [low, high]."""
    # Possessive spaces after the number: `\s*([a-z%]*)\s*$` tried every way of sharing a run of spaces between
    # the two `\s*` (30 kB of them cost seconds).
    match = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*+([a-z%]*)\s*$", str(text).strip().lower())
    _need(match is not None, path, "must be a number, optionally with its unit")
    assert match is not None
    unit = match.group(2)
    _need(unit in units, path, f"unit {unit!r} is not one of {sorted(u for u in units if u)}")
    try:
        value = Decimal(match.group(1)) * units[unit]
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        raise BecknRequestError(INVALID_REQUEST, path, "must be a number") from None
    _need(low <= value <= high, path, f"must be between {low} and {high}")
    return value


def _soc(text: Any, path: str) -> Decimal:
    """A state of charge: '20%', '20' (per cent) or '0.2' (a fraction: a value below 1 with a decimal point)."""
    raw = str(text).strip()
    value = _decimal(raw, path, low=Decimal(0), high=Decimal(100), units={"": Decimal(1), "%": Decimal(1)})
    if not raw.endswith("%") and "." in raw and value <= 1:
        return value
    return value / 100


_KW = {"": Decimal(1), "kw": Decimal(1), "w": Decimal("0.001")}
_KWH = {"": Decimal(1), "kwh": Decimal(1), "wh": Decimal("0.001")}
_DISTANCE = {"": Decimal(1000), "km": Decimal(1000), "m": Decimal(1), "mi": Decimal("1609.344")}


def _first(values: dict[str, Any], *codes: str) -> tuple[str, Any] | None:
    for code in codes:
        if values.get(code) not in (None, ""):
            return code, values[code]
    return None


def _gps_of(stop: Any) -> str | None:
    location = stop.get("location") if isinstance(stop, dict) else None
    if not isinstance(location, dict):
        return None
    circle = location.get("circle")
    if isinstance(circle, dict) and circle.get("gps"):
        return str(circle["gps"])
    return str(location["gps"]) if location.get("gps") else None


def parse_journey(
    intent: dict[str, Any], fulfillment: dict[str, Any], tags: dict[str, str], filters: SearchFilters
) -> None:
    """The route, the vehicle and the energy of an intent, onto `filters`. Vocabulary: docs/catalogue.md."""
    from beckn.catalogue import connector_standard
    from beckn.parsing import _gps

    # --- the route: an encoded polyline (a tag, or fulfillment.path), else two or more stops with gps ---
    points: list[tuple[float, float]] | None = None
    found = _first(tags, *POLYLINE_CODES)
    path_text = fulfillment.get("path")
    polyline, polyline_path = (
        (found[1], f"message.intent.tags({found[0]})")
        if found
        else (path_text, "message.intent.fulfillment.path")
        if isinstance(path_text, str) and path_text.strip()
        else (None, "")
    )
    if polyline is not None:
        precision_text = tags.get("route-polyline-precision") or tags.get("polyline-precision") or "5"
        _need(precision_text in ("5", "6"), "message.intent.tags(route-polyline-precision)", "precision is 5 or 6")
        _need(len(polyline) <= MAX_POLYLINE_CHARS, polyline_path, "the polyline is too long")
        try:
            points = decode_polyline(polyline, precision=int(precision_text))
        except RouteError as exc:
            raise BecknRequestError(INVALID_REQUEST, polyline_path, str(exc)) from None
    else:
        stops = fulfillment.get("stops") or []
        located = [(i, stop) for i, stop in enumerate(stops) if _gps_of(stop)] if isinstance(stops, list) else []
        if len(located) >= 2:
            _need(len(located) <= MAX_STOPS, "message.intent.fulfillment.stops", f"at most {MAX_STOPS} stops")
            ordered = sorted(located, key=lambda s: (STOP_ORDER.get(str(s[1].get("type") or "").lower(), 1), s[0]))
            points = [_gps(_gps_of(stop), f"message.intent.fulfillment.stops[{i}].location.gps") for i, stop in ordered]
    if points is not None:
        try:
            filters.route = Route.from_points(points)
        except RouteError as exc:
            raise BecknRequestError(
                INVALID_REQUEST, polyline_path or "message.intent.fulfillment.stops", str(exc)
            ) from None
        filters.latitude = filters.longitude = None  # ranked along the route, not around its first stop
        detour = _first(tags, "max-detour", "max-detour-km", "max-detour-m", "detour")
        if detour:
            units = {**_DISTANCE, "": Decimal(1) if detour[0] == "max-detour-m" else Decimal(1000)}
            value = _decimal(
                detour[1], f"message.intent.tags({detour[0]})", low=Decimal(0), high=Decimal(10**9), units=units
            )
            _need(value > 0, f"message.intent.tags({detour[0]})", "max-detour must be positive")
            filters.max_detour_m = min(float(value), MAX_DETOUR_M)

    # --- the vehicle: fulfillment.vehicle (core Vehicle plus our keys) and the `vehicle` tags ---
    raw_vehicle = fulfillment.get("vehicle")
    values: dict[str, Any] = {}
    if isinstance(raw_vehicle, dict):
        values = {str(k).strip().lower().replace("_", "-"): v for k, v in raw_vehicle.items()}
    values = {**values, **tags}

    def where(code: str) -> str:
        return f"message.intent.tags({code})" if code in tags else f"message.intent.fulfillment.vehicle.{code}"

    def number(codes: tuple[str, ...], units: dict[str, Decimal], high: Decimal) -> Decimal | None:
        hit = _first(values, *codes)
        if hit is None:
            return None
        return _decimal(hit[1], where(hit[0]), low=Decimal(0), high=high, units=units)

    connectors_raw = _first(values, "connector-types", "vehicle-connector-types", "connectors")
    connectors: frozenset[str] = frozenset()
    if connectors_raw:
        listed = connectors_raw[1] if isinstance(connectors_raw[1], list) else str(connectors_raw[1]).split(",")
        connectors = frozenset(connector_standard(str(c)) for c in listed[:20] if str(c).strip())
    soc_now = _first(values, "soc-now", "soc", "current-soc", "state-of-charge")
    soc_target = _first(values, "soc-target", "target-soc")
    vehicle = Vehicle(
        connector_types=connectors,
        max_ac_kw=number(("max-ac-kw", "max-ac-power", "ac-max-power"), _KW, MAX_POWER_KW),
        max_dc_kw=number(("max-dc-kw", "max-dc-power", "dc-max-power"), _KW, MAX_POWER_KW),
        battery_kwh=number(("battery-kwh", "battery-capacity", "battery-capacity-kwh"), _KWH, MAX_BATTERY_KWH),
        soc_now=_soc(soc_now[1], where(soc_now[0])) if soc_now else None,
        soc_target=_soc(soc_target[1], where(soc_target[0])) if soc_target else None,
    )
    if vehicle.soc_now is not None and vehicle.soc_target is not None:
        _need(
            vehicle.soc_target >= vehicle.soc_now,
            where(soc_target[0]) if soc_target else "",
            "soc-target is below soc-now",
        )
    if vehicle != Vehicle():
        filters.vehicle = vehicle
        if connectors:
            # The car's sockets and a connector-type filter both hold; nothing in common finds nothing.
            filters.connector_types = (
                (filters.connector_types & connectors or {""}) if filters.connector_types else set(connectors)
            )

    # --- the energy when stated: a tag, or the intent item's quantity in kWh ---
    energy = _first(tags, "energy-kwh", "energy", "required-energy")
    if energy:
        filters.energy_kwh = _decimal(
            energy[1], f"message.intent.tags({energy[0]})", low=Decimal(0), high=MAX_ENERGY_KWH, units=_KWH
        )
    else:
        item = intent.get("item") if isinstance(intent.get("item"), dict) else {}
        quantity = item.get("quantity") if isinstance(item.get("quantity"), dict) else {}
        for key in ("selected", "available"):
            measure = (quantity.get(key) or {}).get("measure") if isinstance(quantity.get(key), dict) else None
            if isinstance(measure, dict) and str(measure.get("unit") or "").strip().lower() == "kwh":
                filters.energy_kwh = _decimal(
                    measure.get("value"), f"message.intent.item.quantity.{key}.measure.value",
                    low=Decimal(0), high=MAX_ENERGY_KWH, units=_KWH,
                )  # fmt: skip
                break
    if filters.energy_kwh is not None and filters.energy_kwh <= 0:
        filters.energy_kwh = None


# --- the corridor query ------------------------------------------------------------------------------------


def route_candidates(candidates: QuerySet[Evse], route: Route, max_detour_m: float, want: int) -> dict[int, Placement]:
    """Up to `want` EVSE ids from `candidates` within `max_detour_m` of detour (2 × off the route), by detour
    then position along the route, with where each one lies. One query per corridor width tried: the route's
    pieces as bounding boxes OR-ed on the (latitude, longitude) index; the exact distance in Python."""
    max_off = max(1.0, max_detour_m / 2)
    width = min(max_off, FIRST_HALF_WIDTH_M)
    while True:
        rows = list(
            candidates.filter(_in_boxes(route.boxes(width)))
            .order_by()
            .values_list("pk", "latitude", "longitude")[:MAX_CORRIDOR_ROWS]
        )
        placed: dict[int, Placement] = {}
        for pk, lat, lon in rows:
            placement = route.place(lat, lon, width)
            if placement is not None:
                placed[pk] = placement
        if len(placed) >= want or width >= max_off or len(rows) >= MAX_CORRIDOR_ROWS:
            break
        # Wide enough for what is missing if the corridor is as dense further out (×1.5), at least ×2.
        grow = max(2.0, min(WIDEN_BY, 1.5 * want / max(1, len(placed))))
        width = max_off if width * grow * 1.5 >= max_off else width * grow
    best = sorted(placed.items(), key=lambda kv: (kv[1].off_route_m, kv[1].along_m, kv[0]))[:want]
    return dict(best)


def _in_boxes(boxes: list[tuple[float, float, float, float]]) -> RawSQL:
    """`(lat BETWEEN … AND lon BETWEEN …) OR …` as one expression: each box a range on the (latitude,
    longitude) index (PostgreSQL ORs them as bitmap index scans, SQLite as a multi-index OR). Built as SQL
    text because a route has dozens of boxes and Q objects cost ~0.3 ms each to compile."""
    table = connection.ops.quote_name(Evse._meta.db_table)
    lat, lon = f"{table}.{connection.ops.quote_name('latitude')}", f"{table}.{connection.ops.quote_name('longitude')}"
    term = f"({lat} BETWEEN %s AND %s AND {lon} BETWEEN %s AND %s)"
    params = [value for box in boxes for value in box]
    # Only our own quoted column names are in the text; every value is a parameter.
    return RawSQL("(" + " OR ".join([term] * len(boxes)) + ")", params, output_field=BooleanField())  # noqa: S611


def route_want(filters: SearchFilters) -> int:
    """How many EVSEs to take from the corridor for `filters.limit` items: a margin of 2× for what step 2
    drops (held, unpublished, details), 5× as a point search takes when connector-level filters (speed, price,
    item) may drop many more."""
    margin = 5 if (filters.charging_speed or filters.max_price is not None or filters.item_id) else 2
    return filters.limit * margin * filters.details.widening


# --- estimates -----------------------------------------------------------------------------------------


def wants_estimates(filters: SearchFilters) -> bool:
    return filters.energy_kwh is not None or (
        filters.vehicle is not None and filters.vehicle.energy_needed_kwh() is not None
    )


def with_estimates(hits: list[Hit], filters: SearchFilters, now: datetime) -> list[Hit]:
    """Each hit with its estimated charge when the intent says how much energy (stated, or from the
    vehicle's battery and state of charge). Arrival: the window's start (or now), plus, along a route, the
    drive to the charger at DRIVING_KMH."""
    if not hits or not wants_estimates(filters):
        return hits
    vehicle = filters.vehicle
    energy = filters.energy_kwh if filters.energy_kwh is not None else vehicle.energy_needed_kwh() if vehicle else None
    assert energy is not None
    window = getattr(filters, "window", None)
    departure = window[0] if window else now
    terms = terms_of({hit.evse.location.partner_id: hit.evse.location.partner for hit in hits}.values())
    parsed = parsed_tariffs(hit.tariff for hit in hits)
    for hit in hits:
        connector, location = hit.connector, hit.evse.location
        connector_kw = Decimal(connector.max_electric_power) / 1000 if connector.max_electric_power else None
        power = charging_power_kw(connector_kw, connector.power_type, vehicle)
        if power <= 0:
            continue
        battery = vehicle.battery_kwh if vehicle else None
        soc_start = vehicle.soc_now if vehicle else None
        plan = charge_plan(
            energy_kwh=energy, power_kw=power, power_type=connector.power_type, battery_kwh=battery, soc_start=soc_start
        )
        arrival = departure
        if hit.placement is not None:
            arrival += timedelta(hours=(hit.placement.along_m + hit.placement.off_route_m) / 1000 / DRIVING_KMH)
        arrival = arrival.replace(microsecond=0)
        hit.estimate = charge_estimate(
            plan=plan,
            arrival=arrival,
            tariff=hit.tariff,
            time_zone=location.time_zone,
            terms=terms[location.partner_id],
            parsed=parsed.get(hit.tariff.pk) if hit.tariff is not None else None,
            # A booking window: its select quotes the reservation the booking makes, and so does this. Without
            # one the driver walks up: no reservation.
            evse=hit.evse if window else None,
            now=now,
        )
    return hits


def iso_duration(value: timedelta) -> str:
    """PT1H5M30S (whole seconds, rounded up)."""
    seconds = math.ceil(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    return text if text != "PT" else "PT0S"


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def estimate_group(hit: Hit) -> dict[str, Any] | None:
    """The `estimate` tag group of an item: detour and place along the route, and the charge's estimate."""
    entries: list[tuple[str, str, str]] = []
    if hit.placement is not None:
        entries += [
            ("detour-m", str(round(hit.placement.detour_m)), "Detour from the route, m (there and back)"),
            ("distance-along-route-m", str(round(hit.placement.along_m)), "Distance along the route, m"),
        ]
    estimate = hit.estimate
    if estimate is not None:
        entries += [
            ("estimated-arrival", format_datetime(estimate.arrival), "Estimated arrival"),
            ("charging-power-kw", _plain(estimate.power_kw), "Charging power, kW"),
            ("estimated-energy-kwh", _plain(estimate.energy_kwh), "Estimated energy, kWh"),
            ("estimated-duration", iso_duration(estimate.duration), "Estimated charging time"),
        ]
        if estimate.total_incl_vat is not None:
            entries.append(
                ("estimated-cost", format(estimate.total_incl_vat, "f"), "Estimated cost, incl. VAT and fees")
            )
        if estimate.total_excl_vat is not None:
            entries.append(
                ("estimated-cost-excl-vat", format(estimate.total_excl_vat, "f"), "Estimated cost, excl. VAT")
            )
        if estimate.currency:
            entries.append(("currency", estimate.currency, "Currency"))
    if not entries:
        return None
    return {
        "descriptor": {"code": "estimate", "name": "Estimate"},
        "list": [{"descriptor": {"code": code, "name": name}, "value": value} for code, value, name in entries],
    }
