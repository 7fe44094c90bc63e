"""OCPI 2.3.0 ↔ the 2.2.1 shape (release-2.3.0-bugfixes; changelog "Changes between 2.2.1-d2 and 2.3.0"). Pure.

In: Locations lose what 2.2.1 has no field for (Location `parking_places` and `help_phone`, EVSE `parking`
and `accepted_service_providers`, Connector `capabilities`); the open ConnectorType value SAE_J3400 becomes
TESLA_S; a Price (`before_taxes` + `taxes[]`) becomes `excl_vat`/`incl_vat`; a TokenType 2.2.1 lacks (EMAID, a
partner's own) becomes OTHER; Credentials keep `hub_party_id`.
Out: the same objects as 2.2.1, with our response_url under 2.3.0.
"""

from __future__ import annotations

from typing import Any

from ocpi.enums import TOKEN_TYPES
from ocpi.normalize.sessions import OPEN_TYPE_FIELD
from ocpi.versions.common import Context, decimal_or_none, each, json_number, without
from ocpi.versions.v211 import versioned_response_url

VERSION = "2.3.0"

# mod_locations 2.3.0: "TESLA_S … Mechanically compatible with SAE J3400". MCS, which 2.2.1 lacks, is kept as
# it is: our model holds it (ocpi/enums.py). It had been dropped, and a connector PATCHed to it kept its old
# standard, offered to drivers as what it no longer was.
_CONNECTOR_STANDARDS = {"SAE_J3400": "TESLA_S"}
# mod_tokens 2.3.0 TokenType values 2.2.1 lacks, as 2.2.1 reads them (2.2.1 has no such type).
_TOKEN_TYPES = {"EMAID": "OTHER"}


def upgrade_connector(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    out = without(obj, "capabilities")
    standard = out.get("standard")
    if isinstance(standard, str) and standard.strip().upper() in _CONNECTOR_STANDARDS:
        out["standard"] = _CONNECTOR_STANDARDS[standard.strip().upper()]
    return out


def upgrade_evse(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    out = without(obj, "parking", "accepted_service_providers")
    if "connectors" in out:
        out["connectors"] = each(out["connectors"], upgrade_connector)
    return out


def upgrade_location(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    out = without(obj, "parking_places", "help_phone")
    if "evses" in out:
        out["evses"] = each(out["evses"], upgrade_evse)
    return out


def upgrade_location_patch(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """A PATCH of a Location or an EVSE: what 2.2.1 can't hold is left out, the rest applies. Not a connector's
    (`connector_patch`): 2.3.0 gives the Connector a `capabilities` of its own, which 2.2.1 lacks, while an
    EVSE's `capabilities` is 2.2.1's (stripped at every level, an EVSE's changed capabilities were answered 1000
    and dropped: RESERVE_NOW kept going to a charger no longer RESERVABLE)."""
    return upgrade_evse(upgrade_location(obj))


def upgrade_price(price: Any) -> Any:
    """types 2.3.0 Price {before_taxes, taxes: TaxAmount[]} → 2.2.1 Price {excl_vat, incl_vat?}: incl_vat is
    before_taxes plus every tax amount when taxes are listed (Decimal sums). A 2.2.1-shaped Price (some
    CPOs keep sending it) passes through."""
    if not isinstance(price, dict) or "excl_vat" in price or "before_taxes" not in price:
        return price
    before = decimal_or_none(price["before_taxes"])
    if before is None:
        return price  # the normalizer refuses it, naming the field
    out: dict[str, Any] = {"excl_vat": json_number(before)}
    taxes = price.get("taxes")
    if isinstance(taxes, list) and taxes:
        amounts = [decimal_or_none(t.get("amount")) if isinstance(t, dict) else None for t in taxes]
        if all(a is not None for a in amounts):
            out["incl_vat"] = json_number(before + sum(a for a in amounts if a is not None))
    return out


def upgrade_cdr_token(token: Any) -> Any:
    """mod_tokens 2.3.0 TokenType is an OpenEnum: it gained EMAID (ISO 15118 Plug & Charge; we issue none), and
    a CPO may send values of its own. 2.2.1 has neither, so both are read as OTHER: the session or CDR is kept
    and billed by its token's party as any other. EMAID is a spec value (no finding); another value is left in
    OPEN_TYPE_FIELD for the normalizer to report (finding `unknown_enum`). A type that is no string is left to
    the normalizer to refuse."""
    if not isinstance(token, dict) or not isinstance(token.get("type"), str):
        return token
    value = token["type"].strip().upper()
    if value in TOKEN_TYPES:
        return token  # the normalizer reads it (a case or whitespace slip is its finding)
    if value in _TOKEN_TYPES:
        return {**token, "type": _TOKEN_TYPES[value]}
    return {**token, "type": "OTHER", OPEN_TYPE_FIELD: token["type"]}


def upgrade_session(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """A Session, whole (PUT, a pulled page) or in part (PATCH): its Price and its CdrToken's type."""
    out = dict(obj)
    if "total_cost" in out:
        out["total_cost"] = upgrade_price(out["total_cost"])
    if "cdr_token" in out:
        out["cdr_token"] = upgrade_cdr_token(out["cdr_token"])
    return out


def upgrade_credentials(obj: dict[str, Any], ctx: Context | None = None) -> dict[str, Any]:
    """2.3.0 adds `hub_party_id` (CC+PID of the hub the platform is reached through) and lists a hub's
    reachable parties in `roles`: both are kept as they are (roles are recorded, never granted)."""
    return obj


def _command(body: dict[str, Any]) -> dict[str, Any]:
    if "response_url" not in body:
        return body
    return {**body, "response_url": versioned_response_url(body["response_url"], VERSION)}


UPGRADES = {
    "location": upgrade_location,
    "evse": upgrade_evse,
    "connector": upgrade_connector,
    "location_patch": upgrade_location_patch,
    "connector_patch": upgrade_connector,
    "session": upgrade_session,
    "session_patch": upgrade_session,
    "credentials": upgrade_credentials,
}

DOWNGRADES = {
    f"command:{t}": _command
    for t in ("START_SESSION", "STOP_SESSION", "RESERVE_NOW", "CANCEL_RESERVATION", "UNLOCK_CONNECTOR")
}


# --- our copy read back in 2.2.1: what 2.3.0 added to our model, left out ---------------------------------------

# ConnectorType values our model holds from 2.3.0 that 2.2.1 lacks (ocpi/enums.py).
V230_ONLY_STANDARDS = frozenset({"MCS"})


def connectors_for_221(connectors: Any) -> Any:
    """A list of Connectors without those whose standard 2.2.1 has no value for."""
    if not isinstance(connectors, list):
        return connectors
    return [c for c in connectors if not (isinstance(c, dict) and c.get("standard") in V230_ONLY_STANDARDS)]


def evse_for_221(evse: dict[str, Any]) -> dict[str, Any]:
    return {**evse, "connectors": connectors_for_221(evse.get("connectors"))} if "connectors" in evse else evse


def location_for_221(location: dict[str, Any]) -> dict[str, Any]:
    """Its EVSEs without such connectors; an EVSE left with none is left out (EVSE.connectors is 1..*)."""
    if not isinstance(location.get("evses"), list):
        return location
    evses = [evse_for_221(e) if isinstance(e, dict) else e for e in location["evses"]]
    return {**location, "evses": [e for e in evses if not isinstance(e, dict) or e.get("connectors")]}
