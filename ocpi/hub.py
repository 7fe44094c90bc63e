"""Message routing through hubs (transport_and_format §"Message Routing"): the party each request we send is
addressed to, the hub's own party in its credentials, and whether a party behind a hub can be reached now.

A connection (`Partner`) has its own party and — for a hub — the parties staff granted it (`Partner.parties`).
What we send carries `OCPI-from-*` = us and `OCPI-to-*` = the party it is for:
- a request about one party's object — a command for its EVSE, a GET of its EVSE — goes to that party
  (the "Direct request" rows of the spec's tables: TO = receiving party, through the hub as it is);
- the lists we pull go to the hub itself ("GET All via Hubs": TO = Hub; each object names its owner);
- our token pushes go to the hub itself, once: a "Broadcast Push" (TO = Hub), which the hub sends on to every
  party behind it; the spec names Tokens as what Broadcast Push is for.
For a CPO we reach directly, all of these are its own party. Configuration modules (versions, credentials,
hubclientinfo) carry no routing headers at all. What a hub sends us is read in `ocpi/transport.py`."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings

from emsp.models import Command, Partner, ci_key
from ocpi.models import HubClientInfo

Party = tuple[str, str]

# transport §"Message Routing": "routing headers SHALL NOT be used with these modules".
CONFIGURATION_MODULES = frozenset({"versions", "credentials", "hubclientinfo"})
# mod_hub_client_info §"Scenarios": OFFLINE, PLANNED and SUSPENDED parties — "No requests can be sent".
UNREACHABLE = frozenset({HubClientInfo.Status.OFFLINE, HubClientInfo.Status.PLANNED, HubClientInfo.Status.SUSPENDED})
# credentials (2.3.0) `hub_party_id`: CiString(5), the country code and party id of the hub run together.
_HUB_PARTY_ID = re.compile(r"^([A-Za-z]{2})([A-Za-z0-9]{3})$")


def routing_headers(partner: Partner | None, module: str, to_party: Party | None = None) -> dict[str, str]:
    """The routing headers of a request to `partner` in `module`, addressed to `to_party` (by default the
    connection's own party: the CPO itself, or the hub for a broadcast push or a GET All)."""
    if partner is None or module in CONFIGURATION_MODULES:
        return {}
    country_code, party_id = to_party or (partner.country_code, partner.party_id)
    return {
        "OCPI-from-country-code": settings.OCPI_COUNTRY_CODE,
        "OCPI-from-party-id": settings.OCPI_PARTY_ID,
        "OCPI-to-country-code": country_code.upper(),
        "OCPI-to-party-id": party_id.upper(),
    }


def command_party(command: Command) -> Party | None:
    """The party a command is for: the owner of its EVSE (via its reservation for CANCEL_RESERVATION) or of
    its session (STOP_SESSION)."""
    evse = command.evse or (command.reservation.evse if command.reservation is not None else None)
    if evse is not None:
        return evse.location.country_code, evse.location.party_id
    if command.session is not None:
        return command.session.country_code, command.session.party_id
    return None


def unreachable_reason(partner: Partner, party: Party | None) -> str | None:
    """Why a party behind a hub can't be sent a request now — the hub's last ClientInfo says it is OFFLINE,
    PLANNED or SUSPENDED — or None (no ClientInfo is no news: the hub answers for it)."""
    if party is None or ci_key(*party) == partner.party_key:
        return None
    status = (
        HubClientInfo.objects.filter(
            partner=partner, country_code=party[0].strip().upper(), party_id=party[1].strip().upper()
        )
        .values_list("status", flat=True)
        .first()
    )
    if status in UNREACHABLE:
        return f"{ci_key(*party)} is {status} at the hub {partner.party_key} (HubClientInfo): no requests can be sent"
    return None


def hub_first(roles: list[dict[str, Any]], hub_party_id: Any = None, own_party: str = "") -> list[dict[str, Any]]:
    """A partner's (validated) CredentialsRoles with the hub's own party first, when the partner is a hub:
    2.3.0 names it in `hub_party_id` ("A Platform that supports Hub functionality … SHALL give the country code
    and party ID of the Hub in the hub_party_id field"; 2.3.0 has no role HUB, so one is put in for it), 2.2.1
    by a role HUB. A 2.3.0 hub lists the parties reachable through it after its own. Other partners' roles
    come back as they are — also those of a platform that names, next to its own party (`own_party`, CC*PID,
    when we know it), another in `hub_party_id`: lenient in, that is read as the hub it is reached through."""
    match = _HUB_PARTY_ID.match(str(hub_party_id or "").strip())
    if match and ci_key(match.group(1), match.group(2)) == ci_key(settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID):
        match = None  # our own party is no hub's: read as if none were named (registration then refuses it)
    hub_role: dict[str, Any] | None
    if match:
        party = (match.group(1).upper(), match.group(2).upper())
        if own_party and own_party != ci_key(*party) and own_party in {ci_key(*_party(r)) for r in roles}:
            return roles
        hub_role = next((r for r in roles if r["role"] == "HUB" and _party(r) == party), None) or {
            "role": "HUB",
            "country_code": party[0],
            "party_id": party[1],
            "business_details": {},
        }
    else:
        hub_role = next((r for r in roles if r["role"] == "HUB"), None)
    if hub_role is None:
        return roles
    return [hub_role, *(r for r in roles if r is not hub_role)]


def announced_parties(roles: list[dict[str, Any]]) -> list[Party]:
    """The CPO parties a hub's credentials list after its own (`hub_first`): reachable through it, never
    granted by being named."""
    us = (settings.OCPI_COUNTRY_CODE.upper(), settings.OCPI_PARTY_ID.upper())
    return [_party(r) for r in roles[1:] if r["role"] == "CPO" and _party(r) not in (_party(roles[0]), us)]


def _party(role: dict[str, Any]) -> Party:
    return str(role["country_code"]).upper(), str(role["party_id"]).upper()
