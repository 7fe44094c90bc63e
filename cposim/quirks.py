"""Fault-mode rendering of outgoing OCPI objects (the `lowercase` quirky-CPO mode)."""

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


def render(obj: Any, faults: dict[str, Any]) -> Any:
    """Apply the active rendering faults to an outgoing object."""
    if faults.get("lowercase"):
        return lowercase(obj)
    return obj
