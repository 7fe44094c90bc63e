"""Fault-mode rendering of outgoing OCPI objects: the quirks of CPOs we met, as modes (`--fault NAME`).

- `lowercase`: enums and ids lower-cased, power in kW (feeds seen in the wild);
- `null_optionals`: optional fields it has no value for sent as `null` (extrawest-ocpi, docs/interop.md #14);
- `cdr_without_evse_uid`: CdrLocation without `evse_uid` (extrawest-ocpi's CdrLocation has none, #11);
- `status_schedule_object`: an EVSE's `status_schedule` as one StatusSchedule object, not a list
  (extrawest-ocpi's 2.1.1 EVSE model holds one; docs/interop.md, "Its 2.1.1 models").
The quirks of paths and headers (`glued_push_urls`, `no_request_ids`, `no_commands_endpoint`,
`status_in_200`) are applied where requests are made and answered (emsp_client.py, server.py)."""

from __future__ import annotations

from typing import Any

ENUM_KEYS = {
    "status",
    "standard",
    "format",
    "power_type",
    "capabilities",
    "parking_type",
    "facilities",
    "type",
    "auth_method",
    "whitelist",
    "result",
    "role",
    "parking_restrictions",
}
ID_KEYS = {
    "id",
    "uid",
    "evse_uid",
    "location_id",
    "connector_id",
    "session_id",
    "evse_id",
    "country_code",
    "party_id",
    "tariff_ids",
    "tariff_id",
    "country",
    "connector_standard",
    "connector_format",
    "connector_power_type",
}


def lowercase(obj: Any, key: str | None = None) -> Any:
    """Lower-case enum values and ids, and express max_electric_power in kW instead of W."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "max_electric_power" and isinstance(v, int | float):
                out[k] = round(v / 1000, 3)
            else:
                out[k] = lowercase(v, k)
        return out
    if isinstance(obj, list):
        return [lowercase(v, key) for v in obj]
    if isinstance(obj, str) and key in ENUM_KEYS | ID_KEYS:
        return obj.lower()
    return obj


# Optional fields extrawest-ocpi renders as null when it has no value, per object kind (recognised by a field
# only that kind has).
_NULLABLE = {
    "evses": ("state", "suboperator", "owner", "directions", "images"),  # a Location
    "connectors": ("floor_level", "physical_reference", "directions", "images"),  # an EVSE
    "max_electric_power": ("terms_and_conditions",),  # a Connector
    "cdr_location": ("authorization_reference", "remark", "invoice_reference_id"),  # a CDR
    "kwh": ("authorization_reference", "meter_id", "total_cost"),  # a Session
}


def null_optionals(obj: Any) -> Any:
    """Every absent optional field of `_NULLABLE` present as `null`, all the way down."""
    if isinstance(obj, list):
        return [null_optionals(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: null_optionals(v) for k, v in obj.items()}
    for marker, fields in _NULLABLE.items():
        if marker in obj:
            for name in fields:
                out.setdefault(name, None)
    return out


def without_cdr_evse_uid(obj: Any) -> Any:
    """CDRs (one or a list) whose `cdr_location` lacks `evse_uid`."""
    if isinstance(obj, list):
        return [without_cdr_evse_uid(v) for v in obj]
    if isinstance(obj, dict) and isinstance(obj.get("cdr_location"), dict):
        return {**obj, "cdr_location": {k: v for k, v in obj["cdr_location"].items() if k != "evse_uid"}}
    return obj


def status_schedule_object(obj: Any) -> Any:
    """Locations or EVSEs (one or a list) whose EVSEs say, as one object, that their status holds from their
    last change on: `"status_schedule": {"period_begin": …, "status": …}`."""
    if isinstance(obj, list):
        return [status_schedule_object(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if isinstance(obj.get("evses"), list):
        return {**obj, "evses": status_schedule_object(obj["evses"])}
    if "uid" in obj and "status" in obj and isinstance(obj.get("connectors"), list):
        return {**obj, "status_schedule": {"period_begin": obj.get("last_updated"), "status": obj["status"]}}
    return obj


def render(obj: Any, faults: dict[str, Any]) -> Any:
    """Apply the active rendering faults to an outgoing object."""
    if faults.get("status_schedule_object"):
        obj = status_schedule_object(obj)
    if faults.get("cdr_without_evse_uid"):
        obj = without_cdr_evse_uid(obj)
    if faults.get("null_optionals"):
        obj = null_optionals(obj)
    if faults.get("lowercase"):
        return lowercase(obj)
    return obj
