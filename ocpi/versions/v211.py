"""OCPI 2.1.1 ↔ the 2.2.1 shape (release-2.1.1-bugfixes; the 2.2 changelog lists each difference). Pure.

In: Locations (LocationType `type`, connector `voltage`/`amperage`/`tariff_id`, no `publish`, no party),
Sessions (`start_datetime`, `auth_id`, a whole `location`, `total_cost` a number excluding VAT), the
CommandResponse a CPO posts as a command's result, and Credentials (one party at the top level).
Out: Tokens (`auth_id`, types RFID/OTHER, no party), AuthorizationInfo (no token, no reference), commands
(no CANCEL_RESERVATION, no authorization_reference or connector_id, an int reservation_id), Credentials, and
our copies of a CPO's Locations, EVSEs, Connectors and Sessions read back (2.1.1's fields and enum values).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from decimal import Decimal
from typing import Any

from ocpi.normalize import Unstamped
from ocpi.normalize.evses import DERIVE_POWER
from ocpi.versions.common import (
    CannotCarry,
    Context,
    decimal_or_none,
    each,
    json_number,
    renamed,
    without,
)

VERSION = "2.1.1"

# mod_locations 2.1.1 LocationType; OTHER and UNKNOWN have no 2.2.1 ParkingType (parking_type is optional).
_PARKING_TYPES = {"ON_STREET", "PARKING_GARAGE", "UNDERGROUND_GARAGE", "PARKING_LOT"}
_NO_PARKING_TYPES = {"OTHER", "UNKNOWN"}
# What our power of a 2.1.1 Connector (which has none) is derived from, by their 2.1.1 and 2.2.1 names.
_POWER_SOURCES = ("power_type", "voltage", "amperage", "max_voltage", "max_amperage")
_CONNECTOR_NAMES = {"voltage": "max_voltage", "amperage": "max_amperage"}
# mod_cdrs 2.1.1 CdrDimensionType: FLAT was removed in 2.2 ("of no use on a CDR").
_DROPPED_DIMENSIONS = {"FLAT"}
# mod_tokens 2.1.1 TokenType is RFID or OTHER: our app and ad-hoc tokens travel as OTHER.
_TOKEN_TYPES = {"RFID": "RFID", "OTHER": "OTHER", "APP_USER": "OTHER", "AD_HOC_USER": "OTHER"}
# The eMA-ID's prefix (ISO 15118 / eMI3): country code (2 letters) and provider id (3 alphanumerics), with or
# without "-" after each, then the contract instance: "NL-TNM-C00000099", "NLTNMC00000099".
_EMA_ID_PREFIX = re.compile(r"([A-Za-z]{2})-?([A-Za-z0-9]{3})-?[A-Za-z0-9]")
# mod_commands 2.1.1 CommandResponseType (§4.1), posted as the result, as the 2.2.1 CommandResultType it is:
# UNKNOWN_SESSION is none, and fails the command.
_RESULTS = {
    "ACCEPTED": "ACCEPTED",
    "REJECTED": "REJECTED",
    "TIMEOUT": "TIMEOUT",
    "NOT_SUPPORTED": "NOT_SUPPORTED",
    "UNKNOWN_SESSION": "FAILED",
}


# --- in: locations -------------------------------------------------------------------------------------------


def upgrade_connector(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    out = renamed(obj, _CONNECTOR_NAMES)
    if "tariff_id" in out:
        tariff_id = out.pop("tariff_id")
        if "tariff_ids" not in out:
            out["tariff_ids"] = [tariff_id] if tariff_id not in (None, "") else []
    return out


def upgrade_evse(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    out = dict(obj)
    if "connectors" in out:
        out["connectors"] = each(out["connectors"], upgrade_connector)
    return out


def _hours(hours: Any) -> Any:
    # 2.1.1 Hours is regular_hours *or* twentyfourseven; 2.2.1 requires twentyfourseven.
    if isinstance(hours, dict) and "twentyfourseven" not in hours:
        return {**hours, "twentyfourseven": not hours.get("regular_hours")}
    return hours


def _energy_mix(mix: Any) -> Any:
    # EnvironmentalImpact.source became .category in 2.2 (a copy/paste error in 2.1.1, says the changelog).
    if isinstance(mix, dict) and "environ_impact" in mix:
        return {**mix, "environ_impact": each(mix["environ_impact"], lambda i: renamed(i, {"source": "category"}))}
    return mix


def upgrade_location(obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
    out = _location_fields(obj)
    country_code, party_id = ctx.owner
    if country_code and party_id:
        out.setdefault("country_code", country_code)
        out.setdefault("party_id", party_id)
    # 2.1.1 has no publish flag: a CPO lists what may be shown.
    out.setdefault("publish", True)
    if "evses" in out:
        out["evses"] = each(out["evses"], upgrade_evse)
    return out


def _location_fields(obj: dict[str, Any], *, patch: bool = False) -> dict[str, Any]:
    """`patch`: the body of a PATCH, at any level (their field names don't overlap)."""
    out = _powers_cleared(obj) if patch else dict(obj)
    if "type" in out:
        location_type = out.pop("type")
        no_parking_type = isinstance(location_type, str) and location_type.strip().upper() in _NO_PARKING_TYPES
        if location_type is None or "parking_type" in out:
            pass
        elif no_parking_type:
            if patch:
                out["parking_type"] = None  # a PATCH to one clears ours (a PUT's object has none)
        else:
            # A LocationType that is a ParkingType, or anything else, for the normalizer to judge as a 2.2.1
            # parking_type: its case read (`on_street`), or dropped with a finding. Only exact values had been
            # taken and the rest dropped unsaid; a list or an object, looked up in the sets, had raised, and the
            # whole location was refused.
            out["parking_type"] = location_type
    if "opening_times" in out:
        out["opening_times"] = _hours(out["opening_times"])
    if "energy_mix" in out:
        out["energy_mix"] = _energy_mix(out["energy_mix"])
    return out


def _powers_cleared(obj: dict[str, Any]) -> dict[str, Any]:
    """A PATCH of a connector's power_type, voltage or amperage (itself, or listed in its EVSE's or location's
    PATCH) clears the connector's power: 2.1.1 has no field for it, ours is derived from those three
    (ocpi/normalize/evses.py), and the store derives it again from the patched connector, as for a PUT. The
    power of `{"amperage": 32}` had stayed the 16 A one. A power sent anyway (no 2.1.1 field) is taken."""
    out = dict(obj)
    for children in ("evses", "connectors"):
        if children in out:
            out[children] = each(out[children], _powers_cleared)
    if "max_electric_power" not in out and any(k in out for k in _POWER_SOURCES):
        out["max_electric_power"] = DERIVE_POWER
    return out


def _unstamped(patch: dict[str, Any]) -> dict[str, Any]:
    """2.1.1 PATCHes need not carry last_updated (2.2 made it required; the status PATCH, "the most common type
    of update", has none): one without is marked `Unstamped`, for the normalizer to let it through without one
    and the store to apply it whatever it holds, keeping the stored stamp. Only the CPO's clock orders its
    objects: the time it arrived, by our clock, had stood for it, and a CPO clock 90 s behind ours then lost its
    next PUT, one ahead its PATCHes. Children it lists without a stamp are unstamped too (ocpi/views/locations.py:
    a child takes its parent's). The last step of a mapping: a copy of the dict is a plain one again."""
    return Unstamped(patch) if patch.get("last_updated") is None else patch


def upgrade_location_patch(obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A PATCH at location, EVSE or connector level: the field names don't overlap between the levels."""
    out = upgrade_connector(_location_fields(obj, patch=True))
    if "evses" in out:
        out["evses"] = each(out["evses"], upgrade_evse)
    if "connectors" in out:
        out["connectors"] = each(out["connectors"], upgrade_connector)
    return _unstamped(out)


# --- in: sessions ------------------------------------------------------------------------------------------


def _price(value: Any) -> Any:
    # 2.1.1 total_cost is a number, "excluding VAT".
    number = decimal_or_none(value)
    return {"excl_vat": json_number(number)} if number is not None else value


def upgrade_charging_period(period: dict[str, Any]) -> dict[str, Any]:
    dimensions = period.get("dimensions")
    if not isinstance(dimensions, list):
        return period
    # A type that is no string (a list, an object) is no FLAT: it goes on, for the normalizer to drop that dimension
    # as in 2.2.1. Looked up in the set, it had raised, and the whole CDR (the bill) was refused.
    kept = [
        d
        for d in dimensions
        if not (isinstance(d, dict) and isinstance(d.get("type"), str) and d["type"] in _DROPPED_DIMENSIONS)
    ]
    return {**period, "dimensions": kept}


def _session_fields(obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
    out = renamed(obj, {"start_datetime": "start_date_time", "end_datetime": "end_date_time"})
    if "total_cost" in out and not isinstance(out["total_cost"], dict):
        out["total_cost"] = _price(out["total_cost"])
    if "charging_periods" in out:
        out["charging_periods"] = each(out["charging_periods"], upgrade_charging_period)
    return out


def upgrade_session(obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
    out = _session_fields(obj, ctx)
    country_code, party_id = ctx.owner
    if country_code and party_id:
        out.setdefault("country_code", country_code)
        out.setdefault("party_id", party_id)
    location = out.pop("location", None)
    if isinstance(location, dict):
        # 2.1.1 carries the Location "including only the relevant EVSE and connector".
        out.setdefault("location_id", location.get("id"))
        evse = _first(location.get("evses"))
        if evse is not None:
            out.setdefault("evse_uid", evse.get("uid"))
            connector = _first(evse.get("connectors"))
            if connector is not None:
                out.setdefault("connector_id", connector.get("id"))
    auth_id = out.pop("auth_id", None)
    if isinstance(auth_id, str) and auth_id.strip() and "cdr_token" not in out:
        out["cdr_token"] = cdr_token(auth_id.strip(), ctx)
        if "authorization_reference" not in out:
            # 2.1.1 has no authorization_reference: the START_SESSION this session answers is found by
            # our records (the same contract at the same EVSE), so the booking follows it as in 2.2.1.
            reference = ctx.authorization_reference_for(out)
            if reference:
                out["authorization_reference"] = reference
    return out


def cdr_token(auth_id: str, ctx: Context) -> dict[str, Any]:
    """2.1.1 names the driver by `auth_id` only ("Uniquely identifies the EV Driver contract token within the
    eMSP's platform"); the CdrToken's uid and type come from our record of that contract, else the auth_id
    stands for the uid (type OTHER).

    Its party (2.2.1 CdrToken party_id: "ID of the eMSP that 'owns' this Token") decides whether we bill one
    of our drivers for it (emsp/services/sessions.py token_is_ours), so it is ours only where the contract is:
    - a contract we hold: our party;
    - else the eMSP its eMA-ID prefix names (ISO 15118 / eMI3 `CC-PPP-…` or `CCPPP…`): a CPO may send us
      other eMSPs' sessions and CDRs (mod_cdrs: "not required to send all CDRs to all eMSPs"). A prefix of
      our own (a contract of ours we no longer hold) stays ours: the CDR is then a bill to us;
    - else (no prefix to read) the party the object belongs to, the CPO's (`ctx.owner`): the only party the
      object names, and not ours. Every contract we issue is in our records, so one we don't know is not ours;
      left without a party it would count as ours and be billed, or its price disputed, as a bill to us.
    """
    found = ctx.token_for(auth_id)
    uid, token_type = found if found is not None else (auth_id, "OTHER")
    token = {"uid": uid, "type": token_type, "contract_id": auth_id}
    country_code, party_id = ctx.emsp if found is not None else _contract_party(auth_id) or ctx.owner
    if country_code and party_id:
        token.update(country_code=country_code, party_id=party_id)
    return token


def _contract_party(contract_id: str) -> tuple[str, str] | None:
    """The eMSP an eMA-ID names by its prefix (country code, provider id), upper-cased; None without one."""
    prefix = _EMA_ID_PREFIX.match(contract_id)
    return (prefix[1].upper(), prefix[2].upper()) if prefix else None


def upgrade_session_patch(obj: dict[str, Any], ctx: Context) -> dict[str, Any]:
    return _unstamped(_session_fields(obj, ctx))


def _first(value: Any) -> dict[str, Any] | None:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return value[0]
    return None


# --- in: commands and credentials ------------------------------------------------------------------------


def upgrade_command_result(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """The CommandResponse a 2.1.1 CPO posts to our response_url, as a 2.2.1 CommandResult. Only the five
    CommandResponseType values are mapped; anything else goes on as sent, for the view to refuse what no version
    knows (2001, the command unchanged, as on 2.2.1) and to take a 2.2.1 value a CPO sends on 2.1.1. Taken for
    FAILED, a made-up value ("GARBAGE") had ended the command and been answered 1000."""
    result = obj.get("result")
    value = result.strip().upper() if isinstance(result, str) else None
    if value not in _RESULTS:
        return obj
    if _RESULTS[value] == value:
        return {**obj, "result": value}
    message = {"language": "en", "text": f"OCPI 2.1.1 result {value}"}
    return {**obj, "result": _RESULTS[value], "message": [message]}


def upgrade_command_response(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """The CPO's synchronous CommandResponse: 2.1.1 has a TIMEOUT there (2.2.1 moved it to the result) and
    no `timeout` field (our default applies)."""
    if isinstance(obj.get("result"), str) and obj["result"].strip().upper() == "TIMEOUT":
        return {**obj, "result": "REJECTED", "message": [{"language": "en", "text": "OCPI 2.1.1 TIMEOUT"}]}
    return obj


def upgrade_credentials(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """2.1.1 Credentials name one party at the top level; 2.2 moved it into a `roles` list. The other side of
    a 2.1.1 connection with us is a CPO."""
    if "roles" in obj:
        return obj
    out = without(obj, "business_details", "party_id", "country_code")
    out["roles"] = [
        {
            "role": "CPO",
            "business_details": obj.get("business_details"),
            "party_id": obj.get("party_id"),
            "country_code": obj.get("country_code"),
        }
    ]
    return out


# --- out -----------------------------------------------------------------------------------------------------


def downgrade_token(token: dict[str, Any]) -> dict[str, Any]:
    """mod_tokens 2.1.1 Token: auth_id for contract_id, no party, no group_id/default_profile_type/
    energy_contract. 2.1.1 `string` is printable ASCII (2.2.1's is UTF-8): visual_number and issuer go out
    transliterated (_ascii); a visual_number with nothing left is left out (it is optional), an issuer with
    nothing left (it is required) is our party, "IN EMS"."""
    out: dict[str, Any] = {
        "uid": token["uid"],
        "type": _TOKEN_TYPES.get(token.get("type", ""), "OTHER"),
        "auth_id": token["contract_id"],
    }
    for key in ("valid", "whitelist", "language", "last_updated"):
        if key in token:
            out[key] = token[key]
    if visual_number := _ascii(token.get("visual_number", ""), 64):
        out["visual_number"] = visual_number
    if "issuer" in token:
        party = f"{token.get('country_code', '')} {token.get('party_id', '')}"
        out["issuer"] = _ascii(token["issuer"], 64) or _ascii(party, 64) or "eMSP"
    return out


# Latin letters NFKD leaves whole (no base letter to keep): their usual ASCII spelling ("Ørsted", not "rsted").
_LATIN_WITHOUT_DECOMPOSITION = str.maketrans(
    dict(zip("ØøŁłĐđÐðıĦħ", "OoLlDdDdiHh", strict=True))
    | {"ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Þ": "Th", "þ": "th"}
)


def _ascii(value: str, max_length: int) -> str:
    """A 2.2.1 string as a 2.1.1 one, "only printable ASCII" of at most `max_length` characters: NFKD takes the
    accents off letters ("Électricité" → "Electricite") and spells out compatibility forms ("ﬁ" → "fi"); what is
    still not printable ASCII (an emoji, a CJK name) is dropped, and the spaces left are collapsed."""
    if value.isascii() and value.isprintable() and len(value) <= max_length:
        return value
    spelled = value.translate(_LATIN_WITHOUT_DECOMPOSITION)
    kept = "".join(c for c in unicodedata.normalize("NFKD", spelled) if " " <= c <= "~")
    return " ".join(kept.split())[:max_length].rstrip()


def downgrade_authorization_info(info: dict[str, Any]) -> dict[str, Any]:
    """mod_tokens 2.1.1 AuthorizationInfo: allowed, location?, info? (no token, no authorization_reference)."""
    return {k: v for k, v in info.items() if k in ("allowed", "location", "info")}


def downgrade_credentials(credentials: dict[str, Any]) -> dict[str, Any]:
    role = next((r for r in credentials.get("roles") or [] if r.get("role") == "EMSP"), None)
    if role is None:
        raise CannotCarry("OCPI 2.1.1 credentials name one party: we have no EMSP role to give")
    return {
        "token": credentials["token"],
        "url": credentials["url"],
        # Our name is a 2.2.1 string (printable UTF-8, emsp.E010); 2.1.1's is printable ASCII.
        "business_details": {**role["business_details"], "name": _ascii(role["business_details"]["name"], 100)},
        "party_id": role["party_id"],
        "country_code": role["country_code"],
    }


# --- out: our copies of a CPO's locations and sessions (the GET of our receivers) -----------------------------

# mod_locations 2.1.1 enums. What 2.2.1 added has no 2.1.1 value: list entries without one are left out; a
# connector whose standard 2.1.1 can't name is left out of its EVSE (and an EVSE left without one, of its
# location), or, asked for alone, can't be carried.
V211_CONNECTOR_TYPES = frozenset(
    {"CHADEMO", *(f"DOMESTIC_{c}" for c in "ABCDEFGHIJKL"), "IEC_60309_2_single_16", "IEC_60309_2_three_16",
     "IEC_60309_2_three_32", "IEC_60309_2_three_64", "IEC_62196_T1", "IEC_62196_T1_COMBO", "IEC_62196_T2",
     "IEC_62196_T2_COMBO", "IEC_62196_T3A", "IEC_62196_T3C", "TESLA_R", "TESLA_S"}
)  # fmt: skip
_V211_CAPABILITIES = frozenset(
    {"CHARGING_PROFILE_CAPABLE", "CREDIT_CARD_PAYABLE", "REMOTE_START_STOP_CAPABLE", "RESERVABLE", "RFID_READER",
     "UNLOCK_CAPABLE"}
)  # fmt: skip
_V211_FACILITIES = frozenset(
    {"HOTEL", "RESTAURANT", "CAFE", "MALL", "SUPERMARKET", "SPORT", "RECREATION_AREA", "NATURE", "MUSEUM",
     "BUS_STOP", "TAXI_STAND", "TRAIN_STATION", "AIRPORT", "CARPOOL_PARKING", "FUEL_STATION", "WIFI"}
)  # fmt: skip
# 2.1.1 PowerType has no two-phase AC (2.2 added AC_2_PHASE and AC_2_PHASE_SPLIT): both read as one phase, the
# lower figure (2.1.1 voltage is line to neutral).
_V211_POWER_TYPES = {"AC_2_PHASE": "AC_1_PHASE", "AC_2_PHASE_SPLIT": "AC_1_PHASE"}
# mod_cdrs 2.1.1 CdrDimensionType (2.2 added CURRENT, ENERGY_EXPORT/IMPORT, MAX/MIN_POWER, POWER,
# RESERVATION_TIME and STATE_OF_CHARGE).
_V211_DIMENSIONS = frozenset({"ENERGY", "FLAT", "MAX_CURRENT", "MIN_CURRENT", "PARKING_TIME", "TIME"})
# mod_sessions 2.1.1 SessionStatus has no RESERVATION (a reserved session has not started: PENDING).
_V211_SESSION_STATUSES = {"RESERVATION": "PENDING"}
# Location fields 2.2 added (parking_type is 2.1.1's `type`).
_V221_LOCATION_FIELDS = ("country_code", "party_id", "publish", "publish_allowed_to", "state", "parking_type")
_V211_SESSION_FIELDS = (
    "id", "start_date_time", "end_date_time", "kwh", "auth_method", "meter_id", "currency", "charging_periods",
    "total_cost", "status", "last_updated",
)  # fmt: skip
_SIX = Decimal("0.000001")


def _geo_out(value: Any) -> Any:
    """A GeoLocation with 2.1.1's six decimals (regex `-?[0-9]{1,2}\\.[0-9]{6}`; 2.2.1 allows 5 to 7)."""
    if not isinstance(value, dict):
        return value
    out = dict(value)
    for key in ("latitude", "longitude"):
        number = decimal_or_none(out.get(key))
        if number is not None:
            text = format(number.quantize(_SIX), "f")
            out[key] = text[1:] if text.startswith("-") and not text.strip("-0.") else text
    return out


def _energy_mix_out(mix: Any) -> Any:
    if isinstance(mix, dict) and "environ_impact" in mix:
        return {**mix, "environ_impact": each(mix["environ_impact"], lambda i: renamed(i, {"category": "source"}))}
    return mix


def _known(values: Any, allowed: frozenset[str]) -> Any:
    return [v for v in values if v in allowed] if isinstance(values, list) else values


def power_type_out(power_type: Any) -> Any:
    return _V211_POWER_TYPES.get(power_type, power_type) if isinstance(power_type, str) else power_type


def connector_out(obj: dict[str, Any]) -> dict[str, Any] | None:
    """mod_locations 2.1.1 Connector (`voltage`, `amperage`, one `tariff_id`); None when 2.1.1 has no
    ConnectorType for its standard."""
    if obj.get("standard") not in V211_CONNECTOR_TYPES:
        return None
    out: dict[str, Any] = {
        "id": obj.get("id"),
        "standard": obj["standard"],
        "format": obj.get("format"),
        "power_type": power_type_out(obj.get("power_type")),
        "voltage": obj.get("max_voltage"),
        "amperage": obj.get("max_amperage"),
    }
    tariff_ids = obj.get("tariff_ids")
    if isinstance(tariff_ids, list) and tariff_ids:
        out["tariff_id"] = tariff_ids[0]  # 2.1.1 has one tariff per connector: the first one applies
    for key in ("terms_and_conditions", "last_updated"):
        if key in obj:
            out[key] = obj[key]
    return out


def evse_out(obj: dict[str, Any]) -> dict[str, Any] | None:
    """mod_locations 2.1.1 EVSE; None when none of its connectors can be said in 2.1.1 (`connectors` is 1..*)."""
    connectors = [c for c in (connector_out(c) for c in obj.get("connectors") or [] if isinstance(c, dict)) if c]
    if not connectors:
        return None
    out = {**obj, "connectors": connectors}
    if "capabilities" in out:
        out["capabilities"] = _known(out["capabilities"], _V211_CAPABILITIES)
    if "coordinates" in out:
        out["coordinates"] = _geo_out(out["coordinates"])
    return out


def location_out(obj: dict[str, Any]) -> dict[str, Any]:
    """mod_locations 2.1.1 Location: `type` for parking_type (OTHER for a 2.2 value, UNKNOWN when none: a 2.1.1
    OTHER is not kept, so it reads back UNKNOWN), no party, publish or state, a postal_code (empty when we hold
    none); EVSEs 2.1.1 can't carry are left out."""
    out = without(obj, *_V221_LOCATION_FIELDS)
    parking_type = obj.get("parking_type")
    location_type = parking_type if parking_type in _PARKING_TYPES else "OTHER" if parking_type else "UNKNOWN"
    out = {"id": out.pop("id", None), "type": location_type, **out}
    out.setdefault("postal_code", "")  # required in 2.1.1, optional in 2.2.1: a location stored without one
    if "coordinates" in out:
        out["coordinates"] = _geo_out(out["coordinates"])
    if isinstance(out.get("related_locations"), list):
        out["related_locations"] = [_geo_out(r) for r in out["related_locations"]]
    if "facilities" in out:
        out["facilities"] = _known(out["facilities"], _V211_FACILITIES)
    # Hours pass as they are: the 2.1.1 example itself writes regular_hours with "twentyfourseven": false.
    if "energy_mix" in out:
        out["energy_mix"] = _energy_mix_out(out["energy_mix"])
    if isinstance(out.get("evses"), list):
        out["evses"] = [e for e in (evse_out(e) for e in out["evses"] if isinstance(e, dict)) if e]
    return out


def _carried(obj: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if obj is None:
        raise CannotCarry(f"OCPI 2.1.1 has no connector type for {what}")
    return obj


def charging_periods_out(periods: Any) -> Any:
    """2.1.1 ChargingPeriods: no tariff_id, only 2.1.1's dimension types; a period left without one (its
    `dimensions` is 1..*) is left out."""
    if not isinstance(periods, list):
        return periods
    out = []
    for period in periods:
        if not isinstance(period, dict):
            continue
        dimensions = [
            d for d in period.get("dimensions") or [] if isinstance(d, dict) and d.get("type") in _V211_DIMENSIONS
        ]
        if dimensions:
            out.append({**without(period, "tariff_id"), "dimensions": dimensions})
    return out


def session_out(obj: dict[str, Any], location: dict[str, Any]) -> dict[str, Any]:
    """mod_sessions 2.1.1 Session: `start_datetime`, `auth_id`, the whole `location` "including only the relevant
    EVSE and connector" (2.2.1-shaped, ours as `location_as_ocpi` renders it), `total_cost` a number excluding
    VAT."""
    fields = {k: obj[k] for k in _V211_SESSION_FIELDS if k in obj}
    out: dict[str, Any] = renamed(fields, {"start_date_time": "start_datetime", "end_date_time": "end_datetime"})
    out["auth_id"] = (obj.get("cdr_token") or {}).get("contract_id", "")
    if out.get("auth_method") == "COMMAND":
        out["auth_method"] = "AUTH_REQUEST"  # 2.1.1 AuthMethod has no COMMAND: the eMSP authorized it
    out["status"] = _V211_SESSION_STATUSES.get(out.get("status", ""), out.get("status"))
    out["location"] = location_out(location)
    if not out["location"].get("evses"):
        raise CannotCarry(f"OCPI 2.1.1 has no connector type for the session's connector {obj.get('connector_id')!r}")
    if "charging_periods" in out:
        out["charging_periods"] = charging_periods_out(out["charging_periods"])
    if isinstance(out.get("total_cost"), dict):
        out["total_cost"] = out["total_cost"].get("excl_vat")
    return out


def reservation_number(reservation_id: str) -> int:
    """2.1.1 ReserveNow.reservation_id is an int; ours are UUIDs. A stable 31-bit number from it (fits an
    OCPP reservationId); the CPO echoes it nowhere we read, it only replaces a reservation with the same one."""
    try:
        return uuid.UUID(reservation_id).int & 0x7FFFFFFF
    except ValueError:
        if reservation_id.isdigit():
            return int(reservation_id)
        raise CannotCarry(f"reservation_id {reservation_id!r} is no OCPI 2.1.1 int") from None


def _command(keep: tuple[str, ...]) -> Any:
    def downgrade(body: dict[str, Any]) -> dict[str, Any]:
        out = {k: body[k] for k in keep if k in body}
        if "response_url" in out:
            out["response_url"] = versioned_response_url(out["response_url"], VERSION)
        if "token" in out:
            out["token"] = downgrade_token(out["token"])
        if "reservation_id" in out:
            out["reservation_id"] = reservation_number(str(out["reservation_id"]))
        return out

    return downgrade


def versioned_response_url(url: str, version: str) -> str:
    """Our response_url under the version the command is sent in (its result comes in that version)."""
    return url.replace("/ocpi/emsp/2.2.1/", f"/ocpi/emsp/{version}/", 1)


def _no_cancel(body: dict[str, Any]) -> dict[str, Any]:
    raise CannotCarry("OCPI 2.1.1 has no CANCEL_RESERVATION command (the reservation runs out at its expiry)")


UPGRADES = {
    "location": upgrade_location,
    "evse": upgrade_evse,
    "connector": upgrade_connector,
    "location_patch": upgrade_location_patch,
    "connector_patch": upgrade_location_patch,  # the field names don't overlap between 2.1.1's levels
    "session": upgrade_session,
    "session_patch": upgrade_session_patch,
    "command_result": upgrade_command_result,
    "command_response": upgrade_command_response,
    "credentials": upgrade_credentials,
}

DOWNGRADES = {
    "location": location_out,
    "evse": lambda obj: _carried(evse_out(obj), "any of the EVSE's connectors"),
    "connector": lambda obj: _carried(connector_out(obj), f"standard {obj.get('standard')!r}"),
    "token": downgrade_token,
    "authorization_info": downgrade_authorization_info,
    "credentials": downgrade_credentials,
    "command:START_SESSION": _command(("response_url", "token", "location_id", "evse_uid")),
    "command:STOP_SESSION": _command(("response_url", "session_id")),
    "command:RESERVE_NOW": _command(
        ("response_url", "token", "expiry_date", "reservation_id", "location_id", "evse_uid")
    ),
    "command:CANCEL_RESERVATION": _no_cancel,
    "command:UNLOCK_CONNECTOR": _command(("response_url", "location_id", "evse_uid", "connector_id")),
}
