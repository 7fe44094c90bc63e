"""The simulator's wire in OCPI 2.1.1, 2.2.1 or 2.3.0 (`--ocpi-version`). It keeps 2.2.1 objects inside and
converts at its edges: what it sends (Locations, Sessions, CDRs, Tariffs, Credentials, command answers) and
what it receives (Tokens, commands, Credentials). Pure, stdlib only: cposim imports nothing of ours.

2.1.1 (release-2.1.1-bugfixes): no party on objects, Location `type`, connector `voltage`/`amperage`/`tariff_id`,
Session `start_datetime`/`auth_id`/`location`, CDR `stop_date_time`/`auth_id`/`location`, costs as numbers
excluding VAT, no VAT on tariffs, Token `auth_id` and types RFID/OTHER, CommandResponse as the result,
Credentials with one party at the top level, version details without roles.
2.3.0 (release-2.3.0-bugfixes): Price as `before_taxes` + `taxes[]`, Tariff `tax_included` and PriceLimit,
Location `parking_places` and EVSE `parking`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

_CAPABILITIES_211 = {
    "CHARGING_PROFILE_CAPABLE",
    "CREDIT_CARD_PAYABLE",
    "REMOTE_START_STOP_CAPABLE",
    "RESERVABLE",
    "RFID_READER",
    "UNLOCK_CAPABLE",
}
_LOCATION_TYPES_211 = {"ON_STREET", "PARKING_GARAGE", "UNDERGROUND_GARAGE", "PARKING_LOT"}
_RESTRICTIONS_211 = {
    "start_time",
    "end_time",
    "start_date",
    "end_date",
    "min_kwh",
    "max_kwh",
    "min_power",
    "max_power",
    "min_duration",
    "max_duration",
    "day_of_week",
}
# mod_commands 2.1.1 CommandResponseType; 2.2.1's other results are refusals there.
_RESULTS_211 = {"ACCEPTED", "REJECTED", "TIMEOUT", "NOT_SUPPORTED", "UNKNOWN_SESSION"}
_TOKEN_TYPES_211 = {"RFID", "OTHER"}
_CDR_PRICES = (
    "total_cost",
    "total_fixed_cost",
    "total_energy_cost",
    "total_time_cost",
    "total_parking_cost",
    "total_reservation_cost",
)


def _number(value: Any) -> Decimal:
    return Decimal(str(value))


def _json(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.0001")))


# --- out: prices ---------------------------------------------------------------------------------------------


def price_out(version: str, price: Any) -> Any:
    """A 2.2.1 Price in `version`: 2.1.1 a number excluding VAT; 2.3.0 before_taxes + taxes[] (the VAT)."""
    if not isinstance(price, dict) or version == "2.2.1":
        return price
    if version == "2.1.1":
        return price.get("excl_vat")
    out: dict[str, Any] = {"before_taxes": price.get("excl_vat")}
    if price.get("incl_vat") is not None:
        tax = _number(price["incl_vat"]) - _number(price["excl_vat"])
        out["taxes"] = [{"name": "VAT", "amount": _json(tax)}]
    return out


# --- out: locations ------------------------------------------------------------------------------------------


def connector_out(version: str, conn: dict[str, Any]) -> dict[str, Any]:
    if version != "2.1.1":
        return conn
    out = {
        k: v for k, v in conn.items() if k not in ("max_voltage", "max_amperage", "max_electric_power", "tariff_ids")
    }
    out["voltage"] = conn.get("max_voltage", 0)
    out["amperage"] = conn.get("max_amperage", 0)
    if conn.get("tariff_ids"):
        out["tariff_id"] = conn["tariff_ids"][0]
    return out


def evse_out(version: str, evse: dict[str, Any]) -> dict[str, Any]:
    if version == "2.2.1":
        return evse
    out = dict(evse)
    if version == "2.1.1":
        out["capabilities"] = [c for c in evse.get("capabilities") or [] if c in _CAPABILITIES_211]
    else:
        # mod_locations 2.3.0 EVSEParking: the parking space this EVSE serves (see location_out).
        out["parking"] = [{"parking_id": f"P-{evse['uid']}", "evse_position": "LEFT"}]
    if "connectors" in out:
        out["connectors"] = [connector_out(version, c) for c in out["connectors"]]
    return out


def location_out(version: str, loc: dict[str, Any]) -> dict[str, Any]:
    if version == "2.2.1":
        return loc
    out = dict(loc)
    if version == "2.1.1":
        for key in ("country_code", "party_id", "publish", "publish_allowed_to", "state", "parking_type"):
            out.pop(key, None)
        parking_type = loc.get("parking_type")
        out["type"] = parking_type if parking_type in _LOCATION_TYPES_211 else "OTHER"
        mix = out.get("energy_mix")
        if isinstance(mix, dict) and mix.get("environ_impact"):
            impacts = [{("source" if k == "category" else k): v for k, v in i.items()} for i in mix["environ_impact"]]
            out["energy_mix"] = {**mix, "environ_impact": impacts}
    else:
        out["parking_places"] = [
            {
                "id": f"P-{evse['uid']}",
                "vehicle_types": ["PERSONAL_VEHICLE"],
                "restricted_to_type": False,
                "reservation_required": False,
            }
            for evse in loc.get("evses") or []
        ]
    out["evses"] = [evse_out(version, e) for e in loc.get("evses") or []]
    return out


def _location_of(version: str, loc: dict[str, Any], evse_uid: str, connector_id: str) -> dict[str, Any]:
    """2.1.1 Sessions and CDRs carry the Location "including only the relevant EVSE and connector"."""
    evses = []
    for evse in loc.get("evses") or []:
        if evse.get("uid") == evse_uid:
            connectors = [c for c in evse.get("connectors") or [] if c.get("id") == connector_id]
            evses.append({**evse, "connectors": connectors or evse.get("connectors", [])[:1]})
    return location_out(version, {**loc, "evses": evses})


# --- out: sessions, CDRs, tariffs ------------------------------------------------------------------------------


def _periods_211(periods: Any) -> Any:
    if not isinstance(periods, list):
        return periods
    return [{k: v for k, v in p.items() if k != "tariff_id"} for p in periods]


def session_out(version: str, session: dict[str, Any], loc: dict[str, Any] | None) -> dict[str, Any]:
    if version == "2.2.1":
        return session
    if version == "2.3.0":
        return (
            {**session, "total_cost": price_out(version, session.get("total_cost"))}
            if "total_cost" in session
            else session
        )
    token = session.get("cdr_token") or {}
    out: dict[str, Any] = {
        "id": session["id"],
        "start_datetime": session["start_date_time"],
        "kwh": session.get("kwh", 0),
        "auth_id": token.get("contract_id") or token.get("uid"),
        "auth_method": session.get("auth_method"),
        "location": _location_of(version, loc or {}, session.get("evse_uid", ""), session.get("connector_id", "")),
        "currency": session.get("currency"),
        "charging_periods": _periods_211(session.get("charging_periods", [])),
        "status": session.get("status"),
        "last_updated": session.get("last_updated"),
    }
    if session.get("end_date_time"):
        out["end_datetime"] = session["end_date_time"]
    if session.get("total_cost") is not None:
        out["total_cost"] = price_out(version, session["total_cost"])
    return out


def session_patch_out(version: str, patch: dict[str, Any]) -> dict[str, Any]:
    if version == "2.2.1":
        return patch
    out = dict(patch)
    if "total_cost" in out:
        out["total_cost"] = price_out(version, out["total_cost"])
    if version == "2.1.1":
        if "end_date_time" in out:
            out["end_datetime"] = out.pop("end_date_time")
        if "charging_periods" in out:
            out["charging_periods"] = _periods_211(out["charging_periods"])
    return out


def tariff_out(version: str, tariff: dict[str, Any]) -> dict[str, Any]:
    if version == "2.2.1":
        return tariff
    if version == "2.3.0":
        out = {**tariff, "tax_included": "NO"}
        for key in ("min_price", "max_price"):
            if isinstance(tariff.get(key), dict):
                limit = {"before_taxes": tariff[key].get("excl_vat")}
                if tariff[key].get("incl_vat") is not None:
                    limit["after_taxes"] = tariff[key]["incl_vat"]
                out[key] = limit
        return out
    keep = ("id", "currency", "tariff_alt_text", "tariff_alt_url", "energy_mix", "last_updated")
    out = {k: tariff[k] for k in keep if k in tariff}
    elements = []
    for element in tariff.get("elements") or []:
        components = [{k: v for k, v in c.items() if k != "vat"} for c in element.get("price_components") or []]
        restrictions = {k: v for k, v in (element.get("restrictions") or {}).items() if k in _RESTRICTIONS_211}
        elements.append({"price_components": components, **({"restrictions": restrictions} if restrictions else {})})
    out["elements"] = elements
    return out


def cdr_out(version: str, cdr: dict[str, Any], loc: dict[str, Any] | None) -> dict[str, Any]:
    if version == "2.2.1":
        return cdr
    if version == "2.3.0":
        out = {k: price_out(version, v) if k in _CDR_PRICES else v for k, v in cdr.items()}
        out["tariffs"] = [tariff_out(version, t) for t in cdr.get("tariffs") or []]
        return out
    where = cdr.get("cdr_location") or {}
    out = {
        "id": cdr["id"],
        "start_date_time": cdr["start_date_time"],
        "stop_date_time": cdr["end_date_time"],
        "auth_id": (cdr.get("cdr_token") or {}).get("contract_id"),
        "auth_method": cdr.get("auth_method"),
        "location": _location_of(version, loc or {}, where.get("evse_uid", ""), where.get("connector_id", "")),
        "currency": cdr.get("currency"),
        "tariffs": [tariff_out(version, t) for t in cdr.get("tariffs") or []],
        "charging_periods": _periods_211(cdr.get("charging_periods", [])),
        "total_cost": price_out(version, cdr.get("total_cost")),
        "total_energy": cdr.get("total_energy"),
        "total_time": cdr.get("total_time"),
        "last_updated": cdr.get("last_updated"),
    }
    for key in ("meter_id", "total_parking_time", "remark"):
        if cdr.get(key) is not None:
            out[key] = cdr[key]
    return out


# --- out: configuration and commands ----------------------------------------------------------------------------


def endpoints_out(version: str, endpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Version details' endpoints: 2.1.1 Endpoint is identifier + url."""
    if version != "2.1.1":
        return endpoints
    return [{k: v for k, v in e.items() if k != "role"} for e in endpoints]


def credentials_out(version: str, credentials: dict[str, Any]) -> dict[str, Any]:
    if version != "2.1.1":
        return credentials
    role = (credentials.get("roles") or [{}])[0]
    return {
        "token": credentials["token"],
        "url": credentials["url"],
        "business_details": role.get("business_details") or {},
        "party_id": role.get("party_id"),
        "country_code": role.get("country_code"),
    }


def command_response_out(version: str, response: Any) -> Any:
    """The synchronous CommandResponse: 2.1.1 has `result` only."""
    if version != "2.1.1" or not isinstance(response, dict):
        return response
    return {"result": response.get("result")}


def command_result_out(version: str, result: dict[str, Any]) -> dict[str, Any]:
    """The asynchronous result: in 2.1.1 a CommandResponse, whose type has no EVSE_OCCUPIED and the like."""
    if version != "2.1.1":
        return result
    value = str(result.get("result") or "")
    return {"result": value if value in _RESULTS_211 else "REJECTED"}


# --- in -----------------------------------------------------------------------------------------------------


def token_in(version: str, token: Any, country_code: str, party_id: str) -> Any:
    """An eMSP's Token in the 2.2.1 shape: 2.1.1 says auth_id and names no party (it is the URL's)."""
    if version != "2.1.1" or not isinstance(token, dict):
        return token
    out = {k: v for k, v in token.items() if k != "auth_id"}
    if "auth_id" in token:
        out.setdefault("contract_id", token["auth_id"])
    out.setdefault("country_code", country_code)
    out.setdefault("party_id", party_id)
    return out


def command_in(version: str, body: Any, emsp_party: tuple[str, str]) -> Any:
    """A command body in the 2.2.1 shape: 2.1.1 tokens, and ReserveNow's int reservation_id."""
    if version != "2.1.1" or not isinstance(body, dict):
        return body
    out = dict(body)
    if isinstance(out.get("token"), dict):
        out["token"] = token_in(version, out["token"], *emsp_party)
    if isinstance(out.get("reservation_id"), int):
        out["reservation_id"] = str(out["reservation_id"])
    return out


def credentials_in(version: str, body: Any, role: str = "EMSP") -> Any:
    """Credentials in the 2.2.1 shape (`roles`): 2.1.1 names one party at the top level."""
    if version != "2.1.1" or not isinstance(body, dict) or "roles" in body:
        return body
    party = {k: body.get(k) for k in ("business_details", "party_id", "country_code")}
    return {"token": body.get("token"), "url": body.get("url"), "roles": [{"role": role, **party}]}


def token_out(version: str, token: Any) -> Any:
    """A stored Token as a 2.1.1 GET answers it: `auth_id`, no party, the 2.1.1 fields and types only."""
    if version != "2.1.1" or not isinstance(token, dict):
        return token
    keep = ("uid", "visual_number", "issuer", "valid", "whitelist", "language", "last_updated")
    out = {k: token[k] for k in keep if k in token}
    out["type"] = token_type_211(str(token.get("type") or ""))
    out["auth_id"] = token.get("contract_id") or token.get("uid")
    return out


def token_type_211(token_type: str) -> str:
    """TokenType for a 2.1.1 authorization request (RFID or OTHER)."""
    return token_type if token_type in _TOKEN_TYPES_211 else "OTHER"
