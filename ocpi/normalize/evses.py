"""Lenient-in/strict-out normalisation of OCPI 2.2.1 EVSEs and their Connectors (mod_locations §8.3.2, §8.3.3)."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from ocpi import enums
from ocpi.normalize.datetimes import read_datetime, read_last_updated
from ocpi.normalize.issues import Ctx, Issue, Rejected, collect, json_path
from ocpi.normalize.parts import geo, images
from ocpi.normalize.values import (
    PLACE_ID_MAX,
    canonical_fields,
    field_set,
    read_display_texts,
    read_enum,
    read_enum_list,
    read_identifier,
    read_integer,
    read_number,
    read_text,
)

EVSE_FIELDS = field_set(
    "uid evse_id status status_schedule capabilities connectors floor_level coordinates"
    " physical_reference directions parking_restrictions images last_updated"
)
# The spec's own "add an EVSE" example uses "floor" (mod_locations, PUT example).
EVSE_ALIASES = {"floor": "floor_level"}
CONNECTOR_FIELDS = field_set(
    "id standard format power_type max_voltage max_amperage max_electric_power tariff_ids"
    " terms_and_conditions last_updated"
)
# OCPI 2.1.1 names (Fastned, Toger, Zepto, Voltrelli): voltage/amperage/tariff_id.
CONNECTOR_ALIASES = {
    "voltage": "max_voltage",
    "amperage": "max_amperage",
    "tariff_id": "tariff_ids",
    "tariffId": "tariff_ids",
}


# --- connector ---------------------------------------------------------------------------------------------


class _DerivePower:
    """What the 2.1.1 mapping puts for a connector's power a PATCH changes what it is derived from: no parsed
    body can carry it (a 2.2.1 PATCH's null power is refused as a null required field)."""

    def __repr__(self) -> str:
        return "DERIVE_POWER"


DERIVE_POWER = _DerivePower()


def _phase_factor(power_type: str, voltage: int) -> float:
    """P = V x A x factor. OCPI max_voltage is line-to-neutral for AC_3_PHASE, but many CPOs send 400 V
    (line-to-line): then P = sqrt(3) x V x A (PowerGo/Evio/EV24 22 kW = 400 V x 32 A x sqrt 3)."""
    if power_type == "AC_3_PHASE":
        return 3.0 if voltage <= 250 else math.sqrt(3)
    if power_type in ("AC_2_PHASE", "AC_2_PHASE_SPLIT"):
        return 2.0
    return 1.0


def _infer_power_type(standard: str, v: int | None, a: int | None, p: int | None) -> str:
    if standard in enums.DC_CONNECTOR_TYPES:
        return "DC"
    if standard in enums.SINGLE_PHASE_CONNECTOR_TYPES:
        return "AC_1_PHASE"
    if standard.startswith("IEC_60309_2_three"):
        return "AC_3_PHASE"
    if v and a and p:
        return "AC_1_PHASE" if p / (v * a) < 1.3 else "AC_3_PHASE"
    if standard == "TESLA_S":
        return "DC"
    return "AC_3_PHASE"  # Type 2 / Type 3 in Europe are three-phase installations


# Beyond these a value is a unit or typing error, not a charger (MCS: 1,250 V / 3,000 A / 3.75 MW).
_MAX_VOLTAGE = 2_000
# Nor does any EV connector run below 100 V (the lowest mains is 100 V; DC chargers start near 150 V): a lower
# max_voltage is another figure in the wrong field, Toger's kW ("voltage": 22) or a bad division.
_MIN_VOLTAGE = 100
# The AC powers a charger is sold with (kW): one of them sent as the voltage, with no amperage beside it, is the
# power (Toger 2.1.1: "voltage": 22, "amperage": 0 on its 22 kW Type 2).
_STANDARD_AC_KW = frozenset({3.7, 7, 7.4, 11, 22, 43})
_MAX_AMPERAGE = 5_000
_MAX_POWER_W = 10_000_000


def _positive(value: object, path: str, ctx: Ctx, limit: int) -> tuple[int | None, bool]:
    """(value in 1..limit or None, present): 0 or negative means "unknown"; above ``limit`` is dropped."""
    if value is None:
        return None, False
    n = value if value.__class__ is int else read_integer(value, path, ctx)
    if n is None or n <= 0:
        return None, True
    if n > limit:
        ctx.drop(path, "implausible_value", f"{value!r} is beyond {limit}; treated as unknown")
        return None, True
    return n, True


_DERIVED_FIELDS = {
    "W": ("max_electric_power", "derived_power"),
    "V": ("max_voltage", "derived_voltage"),
    "A": ("max_amperage", "derived_amperage"),
}


def _derived(value: int, bound: int, unit: str, source: str, pp: str, ctx: Ctx, low: int = 1) -> int | None:
    """A connector figure worked out from the other two, if it is one a CPO could have sent (`low` up to `bound`);
    else None (unknown), with a finding."""
    name, code = _DERIVED_FIELDS[unit]
    if low <= value <= bound:
        ctx.fix(pp + name, code, f"{value} {unit} derived {source}")
        return value
    message = f"{value} {unit} derived {source} is beyond {low}-{bound}; treated as unknown"
    ctx.drop(pp + name, "implausible_value", message)
    return None


def _low_voltage(
    raw_v: object, v: int, power_type: str | None, amperes: int | None, power: int | None, pp: str, ctx: Ctx
) -> int | None:
    """A max_voltage below 100 V is no EV connector's: it is dropped (0 = unknown is stored), or, a standard AC kW
    figure with neither amperage nor power beside it, read as the power. Returns the connector's power (W)."""
    kw = raw_v if isinstance(raw_v, (int, float)) and not isinstance(raw_v, bool) else v
    if power is None and not amperes and power_type and power_type.startswith("AC") and kw in _STANDARD_AC_KW:
        ctx.fix(pp + "max_electric_power", "power_as_voltage", f"max_voltage {raw_v!r} read as {kw} kW")
        return round(kw * 1000)
    ctx.drop(pp + "max_voltage", "implausible_value", f"{raw_v!r} V is below {_MIN_VOLTAGE}; treated as unknown")
    return power


def read_connector(
    raw: object,
    prefix: str,
    ctx: Ctx,
    parent_lu: datetime | None,
    power_type_hint: str | None = None,
    *,
    partial: bool = False,
) -> tuple[dict[str, Any], datetime | None]:
    if not isinstance(raw, dict):
        raise Rejected(prefix, "connector is not an object", code="invalid_connector")
    raw = canonical_fields(raw, CONNECTOR_FIELDS, "connector", prefix, ctx, CONNECTOR_ALIASES)
    pp = f"{prefix}." if prefix else ""  # paths are built by concatenation: this loop runs per connector
    out: dict[str, Any] = {}
    get = raw.get

    cid = read_identifier(get("id"), pp + "id", ctx)
    if cid:
        out["id"] = cid
    elif not partial:
        raise Rejected(pp + "id", "connector without id", code="missing_connector_id")

    standard = None
    if not partial or "standard" in raw:
        path = pp + "standard"
        standard = read_enum(get("standard"), enums.CONNECTOR_TYPE, path, ctx)
        if standard is None:
            # IZIVIA's eMSP compatibility enhancer also drops connectors of unknown standard (ocpi-notes §10).
            exc = Rejected(path, f"unknown connector standard {get('standard')!r}", code="unknown_connector_standard")
            if not partial:
                raise exc
            ctx.drop(path, exc.code, exc.reason)
        else:
            out["standard"] = standard

    if not partial or "format" in raw:
        path = pp + "format"
        fmt = read_enum(get("format"), enums.CONNECTOR_FORMAT, path, ctx)
        if fmt is not None:
            out["format"] = fmt
        elif partial:
            ctx.drop(path, "unknown_enum", f"format {get('format')!r} dropped")
        else:
            fmt = "CABLE" if standard in enums.CABLE_CONNECTOR_TYPES else "SOCKET"
            ctx.fix(path, "inferred_format", f"format {get('format')!r} unusable; {fmt} inferred from {standard}")
            out["format"] = fmt

    raw_v = get("max_voltage")
    v, v_present = _positive(raw_v, pp + "max_voltage", ctx, _MAX_VOLTAGE)
    low_v, v = (v, None) if v is not None and v < _MIN_VOLTAGE else (None, v)
    a, a_present = _positive(get("max_amperage"), pp + "max_amperage", ctx, _MAX_AMPERAGE)
    p = None
    raw_p = get("max_electric_power")
    if raw_p is DERIVE_POWER:
        raw_p = None  # the 2.1.1 mapping's: cleared below, for the store to derive it again
    elif raw_p is None and partial and "max_electric_power" in raw:
        # A 2.2.1 or 2.3.0 PATCH nulling a required field: left as we hold it (it had been cleared, and the
        # connector read back without its max_electric_power).
        ctx.drop(pp + "max_electric_power", "invalid_power", "max_electric_power null dropped")
    if raw_p is not None:
        path = pp + "max_electric_power"
        n = read_number(raw_p, path, ctx)
        if n is not None and 0 < n <= _MAX_POWER_W:
            if n < 1000:
                # ITC/EV24 send kW (22, 150); no connector delivers less than 1 kW, so < 1000 cannot be W.
                p = round(n * 1000)
                ctx.fix(path, "power_in_kw", f"max_electric_power {raw_p!r} read as kW -> {p} W")
            else:
                p = round(n)
        else:
            ctx.drop(path, "invalid_power", f"max_electric_power {raw_p!r} dropped")

    pt = None
    if not partial or "power_type" in raw:
        path = pp + "power_type"
        pt = read_enum(get("power_type"), enums.POWER_TYPE, path, ctx)
        if pt is not None:
            out["power_type"] = pt
        elif partial:
            ctx.drop(path, "unknown_enum", f"power_type {get('power_type')!r} dropped")
        else:
            pt = power_type_hint or _infer_power_type(standard or "", v, a, p)
            ctx.fix(path, "inferred_power_type", f"power_type {get('power_type')!r} unusable; {pt} inferred")
            out["power_type"] = pt

    if low_v is not None:
        # A PATCH's voltage is dropped only: the power it may stand for is the stored connector's to decide.
        p = _low_voltage(raw_v, low_v, None if partial else pt, a, p, pp, ctx)
    if not partial and pt is not None:
        factor = _phase_factor(pt, v or 230)
        # Figures each within their bounds need not give one within its own (2,000 V x 5,000 A x sqrt 3 = 17 MW;
        # 10 MW at 1 A is 10 MV): such a figure is the error a sent one beyond it is, left unknown (_derived).
        if p is None and v and a:
            p = _derived(round(v * a * factor), _MAX_POWER_W, "W", f"from {v} V x {a} A ({pt})", pp, ctx)
        if v is None and p and a:
            source = f"from {p} W / {a} A"
            v = _derived(round(p / (a * _phase_factor(pt, 230))), _MAX_VOLTAGE, "V", source, pp, ctx, _MIN_VOLTAGE)
        if a is None and p and v:
            a = _derived(round(p / (v * factor)), _MAX_AMPERAGE, "A", f"from {p} W / {v} V", pp, ctx)
    if v is not None:
        out["max_voltage"] = v
    elif not partial or v_present:
        # Decision: 0 = "unknown" rather than an invented nominal voltage (itcharge sends power only).
        out["max_voltage"] = 0
        ctx.fix(pp + "max_voltage", "unknown_voltage", "max_voltage missing or <= 0; set to 0 (unknown)")
    if a is not None:
        out["max_amperage"] = a
    elif not partial or a_present:
        out["max_amperage"] = 0
        ctx.fix(
            pp + "max_amperage",
            "unknown_amperage",
            "max_amperage missing or <= 0; set to 0 (unknown)",
        )
    if p is not None:
        out["max_electric_power"] = p
    elif partial and get("max_electric_power") is DERIVE_POWER:
        # A 2.1.1 PATCH of voltage, amperage or power_type (ocpi/versions/v211.py: 2.1.1 has no power field, ours
        # is derived): cleared, and the store derives it again from the patched connector, as above for a whole one.
        out["max_electric_power"] = None

    tids = get("tariff_ids")
    if tids is not None:
        path = pp + "tariff_ids"
        if isinstance(tids, (str, int)):
            tids = [tids]
        if isinstance(tids, list):
            ids = [s for i, t in enumerate(tids) if (s := read_identifier(t, f"{path}[{i}]", ctx))]
            out["tariff_ids"] = ids
        else:
            ctx.drop(path, "invalid_type", "tariff_ids is not a list")
    terms = read_text(get("terms_and_conditions"), pp + "terms_and_conditions", ctx, 255)
    if terms:
        out["terms_and_conditions"] = terms

    lu = read_last_updated(raw, prefix, ctx, parent_lu, partial=partial, clamp_future=True)
    if lu is not None:
        out["last_updated"] = lu[1]
    return out, (lu[0] if lu else None)


# --- EVSE --------------------------------------------------------------------------------------------------


def _status_schedule(value: object, path: str, ctx: Ctx) -> list[dict[str, str]] | None:
    if isinstance(value, dict):
        # StatusSchedule is `*` (a list) in 2.1.1 and 2.2.1; extrawest-ocpi's 2.1.1 EVSE model has one object, so a
        # CPO built on it sends one (docs/interop.md).
        ctx.fix(path, "object_for_list", "status_schedule given as one object, read as a list of one")
        value = [value]
    if not isinstance(value, list):
        ctx.drop(path, "invalid_type", f"status_schedule is no list: {type(value).__name__} dropped")
        return None
    out = []
    for i, item in enumerate(value):
        p = f"{path}[{i}]"
        try:
            if not isinstance(item, dict):
                raise Rejected(p, "not an object")
            status = read_enum(item.get("status"), enums.EVSE_STATUS, json_path(p, "status"), ctx)
            if status is None:
                raise Rejected(json_path(p, "status"), f"unknown status {item.get('status')!r}")
            entry = {"period_begin": read_datetime(item.get("period_begin"), json_path(p, "period_begin"), ctx)[1]}
            if item.get("period_end") is not None:
                entry["period_end"] = read_datetime(item["period_end"], json_path(p, "period_end"), ctx)[1]
            entry["status"] = status
            out.append(entry)
        except Rejected as exc:
            ctx.drop(p, "invalid_status_schedule", f"status_schedule entry dropped: {exc.reason}")
    return out


def read_evse(
    raw: object, prefix: str, ctx: Ctx, parent_lu: datetime | None, *, partial: bool = False
) -> tuple[dict[str, Any], datetime | None]:
    if not isinstance(raw, dict):
        raise Rejected(prefix, "EVSE is not an object", code="invalid_evse")
    raw = canonical_fields(raw, EVSE_FIELDS, "evse", prefix, ctx, EVSE_ALIASES)
    pp = f"{prefix}." if prefix else ""
    out: dict[str, Any] = {}
    get = raw.get

    uid = read_identifier(get("uid"), pp + "uid", ctx, PLACE_ID_MAX)
    if uid:
        out["uid"] = uid
    elif not partial:
        raise Rejected(pp + "uid", "EVSE without uid", code="missing_evse_uid")

    evse_id = read_identifier(get("evse_id"), pp + "evse_id", ctx, max_len=48)
    if evse_id:
        if len(evse_id) <= 48:
            out["evse_id"] = evse_id
        else:
            ctx.drop(pp + "evse_id", "invalid_evse_id", "evse_id longer than 48 characters dropped")

    if not partial or "status" in raw:
        path = pp + "status"
        status = read_enum(get("status"), enums.EVSE_STATUS, path, ctx)
        if status is None:
            if partial:
                ctx.drop(path, "unknown_enum", f"status {get('status')!r} dropped")
            else:
                # Status is required; "no status information available" is literally UNKNOWN (§8.4.22).
                status = "UNKNOWN"
                ctx.fix(path, "unknown_status", f"status {get('status')!r} unusable; set to UNKNOWN")
        if status is not None:
            out["status"] = status
    if get("status_schedule") is not None:
        sched = _status_schedule(get("status_schedule"), pp + "status_schedule", ctx)
        if sched is not None:
            out["status_schedule"] = sched
    if get("capabilities") is not None:
        caps = read_enum_list(get("capabilities"), enums.CAPABILITY, pp + "capabilities", ctx)
        if caps is not None:
            out["capabilities"] = caps

    own = None
    if get("last_updated") is not None:
        try:
            own = read_datetime(get("last_updated"), pp + "last_updated", ctx, event=True)
        except Rejected:
            if partial:
                raise
    child_parent = own[0] if own else parent_lu
    newest: datetime | None = None
    if not partial or "connectors" in raw:
        connectors: dict[str, tuple[str, dict[str, Any]]] = {}
        raw_conns = get("connectors")
        if raw_conns is not None and not isinstance(raw_conns, list):
            ctx.drop(pp + "connectors", "invalid_type", "connectors is not a list")
            raw_conns = None
        for i, rc in enumerate(raw_conns or ()):
            cpath = f"{prefix}.connectors[{i}]" if prefix else f"connectors[{i}]"
            mark = ctx.mark()
            try:
                conn, conn_lu = read_connector(rc, cpath, ctx, child_parent)
            except Rejected as exc:
                ctx.rollback(mark)
                ctx.drop(cpath, exc.code, f"connector dropped: {exc.path}: {exc.reason}")
                continue
            key = conn["id"].upper()  # CiString: "a" and "A" are one connector
            if key in connectors:
                earlier = connectors.pop(key)[0]
                ctx.drop(earlier, "duplicate_connector_id", f"duplicate connector id {conn['id']!r}; last one kept")
            connectors[key] = (cpath, conn)
            if conn_lu is not None and (newest is None or conn_lu > newest):
                newest = conn_lu
        out["connectors"] = [conn for _path, conn in connectors.values()]
        if not connectors and not partial:
            # mod_locations: connectors is 1..*; kept so the EVSE status still shows, but it is not bookable.
            ctx.fix(pp + "connectors", "evse_without_connectors", "EVSE has no valid connector")

    floor = read_text(get("floor_level"), pp + "floor_level", ctx, 4)
    if floor:
        out["floor_level"] = floor
    if get("coordinates") is not None:
        try:
            out["coordinates"] = geo(get("coordinates"), pp + "coordinates", ctx)[0]
        except Rejected as exc:
            ctx.drop(exc.path, exc.code, f"EVSE coordinates dropped: {exc.reason}")
    ref = read_text(get("physical_reference"), pp + "physical_reference", ctx, 16)
    if ref:
        out["physical_reference"] = ref
    if get("directions") is not None:
        d = read_display_texts(get("directions"), pp + "directions", ctx)
        if d is not None:
            out["directions"] = d
    if get("parking_restrictions") is not None:
        pr = read_enum_list(get("parking_restrictions"), enums.PARKING_RESTRICTION, pp + "parking_restrictions", ctx)
        if pr is not None:
            out["parking_restrictions"] = pr
    if get("images") is not None:
        imgs = images(get("images"), pp + "images", ctx)
        if imgs is not None:
            out["images"] = imgs

    if own is None and not partial:
        own = read_last_updated(raw, prefix, ctx, newest or parent_lu, partial=False, clamp_future=True)
    if own is not None:
        out["last_updated"] = own[1]
    return out, (own[0] if own else None)


# --- public API ---------------------------------------------------------------------------------------------


def normalize_evse(raw: dict) -> tuple[dict, list[Issue]]:
    """A full EVSE (PUT on .../{location_id}/{evse_uid}); raises Rejected (e.g. no uid)."""
    return collect(lambda ctx: read_evse(raw, "", ctx, None)[0])


def normalize_connector(raw: dict, *, power_type_hint: str | None = None) -> tuple[dict, list[Issue]]:
    """A full Connector; ``power_type_hint`` is used if power_type is unusable."""
    hint = None
    if power_type_hint is not None:
        hint, _how = enums.POWER_TYPE.resolve(str(power_type_hint))
    return collect(lambda ctx: read_connector(raw, "", ctx, None, hint)[0])
