"""CDRs of OCPI 2.1.1 and 2.3.0 on our one CDR (2.2.1-shaped, plus 2.3.0's taxes), and back. Pure.

2.1.1 (release-2.1.1-bugfixes mod_cdrs.md) names no owner party, says `stop_date_time` for `end_date_time`,
`auth_id` (the contract id) for a `cdr_token`, carries the whole `location` (with its `time_zone`, which 2.2.1's
CdrLocation lacks: we keep it) instead of a `cdr_location`, a `total_cost` number excl. VAT, no sub-totals, no
`session_id`/`authorization_reference`/`signed_data`/credit fields, no `tariff_id` on a charging period, and a
FLAT CdrDimension 2.2 dropped. 2.3.0 (release-2.3.0-bugfixes) makes every cost a Price {before_taxes, taxes[]}:
our Price keeps its `taxes` next to excl_vat/incl_vat, and the CDR's tariffs keep `tax_included`; its open
TokenType adds EMAID (read as OTHER, as are values of a partner's own: v230.upgrade_cdr_token).
docs/ocpi-versions.md "Tariffs and CDRs" is the full account.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ocpi.versions.common import CannotCarry, Context, decimal_or_none, json_number, renamed, without
from ocpi.versions.tariffs import check_version, downgrade_tariff, upgrade_tariff
from ocpi.versions.v211 import (
    V211_CONNECTOR_TYPES,
    cdr_token,
    charging_periods_out,
    power_type_out,
    upgrade_charging_period,
)
from ocpi.versions.v230 import upgrade_cdr_token, upgrade_connector, upgrade_price

PRICE_FIELDS = (
    "total_cost",
    "total_fixed_cost",
    "total_energy_cost",
    "total_time_cost",
    "total_parking_cost",
    "total_reservation_cost",
)
_V211_FIELDS = (
    "id", "start_date_time", "auth_method", "meter_id", "currency", "charging_periods", "total_energy",
    "total_time", "total_parking_time", "remark", "last_updated",
)  # fmt: skip
_LOCATION_FIELDS = ("id", "name", "address", "city", "postal_code", "country", "coordinates")


# --- in ------------------------------------------------------------------------------------------------------


def upgrade_cdr(raw: Any, version: str, ctx: Context | None = None) -> Any:
    """A CDR as a partner speaking `version` sent it (POST body, pulled page entry), in the shape
    ocpi.normalize.normalize_cdr takes."""
    check_version(version)
    if version == "2.2.1" or not isinstance(raw, dict):
        return raw
    ctx = ctx or Context()
    return _from_v211(raw, ctx) if version == "2.1.1" else _from_v230(raw, ctx)


def _from_v211(raw: dict[str, Any], ctx: Context) -> dict[str, Any]:
    out = renamed(raw, {"stop_date_time": "end_date_time"})
    country_code, party_id = ctx.owner
    if country_code and party_id:
        out.setdefault("country_code", country_code)
        out.setdefault("party_id", party_id)
    location = out.pop("location", None)
    if isinstance(location, dict) and "cdr_location" not in out:
        out["cdr_location"] = _cdr_location(location)
    auth_id = out.pop("auth_id", None)
    if isinstance(auth_id, str) and auth_id.strip() and "cdr_token" not in out:
        out["cdr_token"] = cdr_token(auth_id.strip(), ctx)
    if isinstance(out.get("tariffs"), list):
        out["tariffs"] = [upgrade_tariff(t, "2.1.1", ctx) for t in out["tariffs"]]
    if isinstance(out.get("charging_periods"), list):
        # CdrDimensionType FLAT (gone since 2.2) is dropped: a FLAT price is billed once per session anyway.
        out["charging_periods"] = [
            upgrade_charging_period(p) if isinstance(p, dict) else p for p in out["charging_periods"]
        ]
    if "total_cost" in out and not isinstance(out["total_cost"], dict):
        number = decimal_or_none(out["total_cost"])
        if number is not None:
            # 2.1.1 CDR.total_cost: "Total cost (excluding VAT)".
            out["total_cost"] = {"excl_vat": json_number(number)}
    return out


def _the_one(value: Any) -> dict[str, Any]:
    """The first object of a list (2.1.1: the Location "including only the relevant EVSE and Connector")."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return {}


def _cdr_location(location: dict[str, Any]) -> dict[str, Any]:
    out = {k: location[k] for k in (*_LOCATION_FIELDS, "time_zone") if k in location}
    evse = _the_one(location.get("evses"))
    connector = _the_one(evse.get("connectors"))
    for target, source, key in (
        ("evse_uid", evse, "uid"),
        ("evse_id", evse, "evse_id"),
        ("connector_id", connector, "id"),
        ("connector_standard", connector, "standard"),
        ("connector_format", connector, "format"),
        ("connector_power_type", connector, "power_type"),
    ):
        if source.get(key) is not None:
            out[target] = source[key]
    return out


def _from_v230(raw: dict[str, Any], ctx: Context) -> dict[str, Any]:
    out = dict(raw)
    for key in PRICE_FIELDS:
        price = out.get(key)
        if isinstance(price, dict) and "before_taxes" in price:
            converted = upgrade_price(price)
            if isinstance(converted, dict) and "taxes" in price:
                converted = {**converted, "taxes": price["taxes"]}
            out[key] = converted
    if isinstance(out.get("tariffs"), list):
        out["tariffs"] = [upgrade_tariff(t, "2.3.0", ctx) for t in out["tariffs"]]
    location = out.get("cdr_location")
    if isinstance(location, dict) and "connector_standard" in location:
        # As for a Location's connector: SAE_J3400 is 2.2.1's TESLA_S; MCS is kept (the CDR reads back with it).
        standard = upgrade_connector({"standard": location["connector_standard"]})["standard"]
        out["cdr_location"] = {**location, "connector_standard": standard}
    if "cdr_token" in out:
        out["cdr_token"] = upgrade_cdr_token(out["cdr_token"])
    return out


# --- out -----------------------------------------------------------------------------------------------------


def downgrade_cdr(obj: dict[str, Any], version: str) -> dict[str, Any]:
    """One of our stored CDRs as a partner speaking `version` reads it (the GET of our CDRs receiver)."""
    check_version(version)
    if version == "2.1.1":
        return _to_v211(obj)
    out = dict(obj)
    if isinstance(out.get("cdr_location"), dict):
        out["cdr_location"] = without(out["cdr_location"], "time_zone")
    if isinstance(out.get("tariffs"), list):
        out["tariffs"] = [downgrade_tariff(t, version) for t in out["tariffs"]]
    for key in PRICE_FIELDS:
        if isinstance(out.get(key), dict):
            out[key] = _price_230(out[key]) if version == "2.3.0" else without(out[key], "taxes")
    return out


def downgrade_session_230(obj: dict[str, Any]) -> dict[str, Any]:
    """One of our stored sessions as a 2.3.0 partner reads it (the GET of our Sessions receiver): its running
    total_cost as 2.3.0's Price. The rest of a 2.2.1 Session is 2.3.0's."""
    out = dict(obj)
    if isinstance(out.get("total_cost"), dict) and "excl_vat" in out["total_cost"]:
        out["total_cost"] = _price_230(out["total_cost"])
    return out


def _price_230(price: dict[str, Any]) -> dict[str, Any]:
    """A stored Price as 2.3.0's: the taxes the CPO listed, else the VAT that incl_vat implies."""
    out: dict[str, Any] = {"before_taxes": price["excl_vat"]}
    if "taxes" in price:
        out["taxes"] = price["taxes"]
    elif price.get("incl_vat") is not None:
        vat = Decimal(str(price["incl_vat"])) - Decimal(str(price["excl_vat"]))
        out["taxes"] = [{"name": "VAT", "amount": json_number(vat)}]
    return out


def _to_v211(obj: dict[str, Any]) -> dict[str, Any]:
    """mod_cdrs 2.1.1 CDR. Its `location` is a whole 2.1.1 Location: what a CdrLocation doesn't hold is filled
    with the values that say "not known" (type UNKNOWN, EVSE status UNKNOWN, voltage and amperage 0)."""
    out = {k: obj[k] for k in _V211_FIELDS if k in obj}
    out["stop_date_time"] = obj["end_date_time"]
    out["auth_id"] = (obj.get("cdr_token") or {}).get("contract_id", "")
    if out.get("auth_method") == "COMMAND":
        out["auth_method"] = "AUTH_REQUEST"  # 2.1.1 AuthMethod has no COMMAND: the eMSP authorized it
    location = obj.get("cdr_location") or {}
    standard = location.get("connector_standard")
    if standard is not None and standard not in V211_CONNECTOR_TYPES:
        # A whole 2.1.1 Location with a connector of a standard 2.1.1 has no value for is no valid CDR to send.
        raise CannotCarry(f"OCPI 2.1.1 has no ConnectorType {standard!r}")
    stamp = obj.get("last_updated")
    connector = {
        "id": location.get("connector_id"),
        "standard": location.get("connector_standard"),
        "format": location.get("connector_format"),
        "power_type": power_type_out(location.get("connector_power_type")),
        "voltage": 0,
        "amperage": 0,
        "last_updated": stamp,
    }
    evse = {"uid": location.get("evse_uid"), "status": "UNKNOWN", "connectors": [connector], "last_updated": stamp}
    if location.get("evse_id"):
        evse["evse_id"] = location["evse_id"]
    out["location"] = {
        **{k: location[k] for k in (*_LOCATION_FIELDS, "time_zone") if k in location},
        "type": "UNKNOWN",
        "evses": [evse],
        "last_updated": stamp,
    }
    if isinstance(obj.get("tariffs"), list):
        out["tariffs"] = [downgrade_tariff(t, "2.1.1") for t in obj["tariffs"]]
    if isinstance(out.get("charging_periods"), list):
        out["charging_periods"] = charging_periods_out(out["charging_periods"])
    out["total_cost"] = (obj.get("total_cost") or {}).get("excl_vat")
    return out


def _upgrade_v211(obj: dict[str, Any], ctx: Context | None = None) -> Any:
    return upgrade_cdr(obj, "2.1.1", ctx)


def _upgrade_v230(obj: dict[str, Any], ctx: Context | None = None) -> Any:
    return upgrade_cdr(obj, "2.3.0", ctx)


# For ocpi.versions' registries (kind "cdr"), per version.
UPGRADES = {"2.1.1": {"cdr": _upgrade_v211}, "2.3.0": {"cdr": _upgrade_v230}}
DOWNGRADES = {
    "2.1.1": {"cdr": lambda obj: downgrade_cdr(obj, "2.1.1")},
    "2.3.0": {"cdr": lambda obj: downgrade_cdr(obj, "2.3.0"), "session": downgrade_session_230},
}
