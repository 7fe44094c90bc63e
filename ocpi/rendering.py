"""What we send, strict out: our objects as OCPI 2.2.1 wire objects — our Tokens, the CommandRequest bodies
of mod_commands, and the catalogue as we hold it (GET on our Locations receiver)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from emsp.datetimes import format_datetime
from emsp.models import Command, Connector, Evse, Location, Partner, Token
from emsp.models.drivers import iso_639_1_codes, ocpi_ci_string
from ocpi.transport import absolute_url


def token_as_ocpi(token: Token, partner: Partner | None = None) -> dict[str, Any]:
    """mod_tokens §"Token object": only spec fields, spec types. `valid` ("Is this Token valid") is what the CPO
    stores and whitelists by: a token blocked, its driver blocked, expired, or — to `partner`, in our list and
    pushes — restricted to other partners is not valid. The copy `partner` stores serves only its own charge
    points, and there such a token may charge nowhere; a CPO that whitelists (ALLOWED, the default) never asks
    us, so this is the only word it gets. Credit is left out: it changes with every charge and is asked in real
    time.

    Without `partner`, `valid` is the token's own validity: the AuthorizationInfo's token (ocpi/views/tokens.py),
    whose `allowed` says whether it may charge there; mod_tokens AllowedType NOT_ALLOWED is "Token is valid, but
    is not allowed to charge at the given location", so NOT_ALLOWED comes with `valid: true`."""
    obj: dict[str, Any] = {
        "country_code": settings.OCPI_COUNTRY_CODE,
        "party_id": settings.OCPI_PARTY_ID,
        "uid": token.uid,
        "type": token.type,
        "contract_id": token.contract_id,
        # Required (mod_tokens): made printable, never left out.
        "issuer": _printable(token.issuer) or settings.OCPI_BUSINESS_NAME[:64],
        "valid": token_is_valid(token, partner),
        "whitelist": token.whitelist,
        "last_updated": format_datetime(token.last_updated),
    }
    if visual_number := _printable(token.visual_number):
        obj["visual_number"] = visual_number
    if group_id := _ci_string(token.group_id):
        obj["group_id"] = group_id
    if language := _language(token.language):
        obj["language"] = language
    return obj


# The model checks these (emsp/models/drivers.py); rows stored before it did are sent as the spec has them: a
# CPO that refuses the PUT refuses every later one of the token too (a block, an invalidation), all full PUTs.
_ISO_639_1 = re.compile(r"[a-z]{2}")


def _printable(value: str) -> str:
    """OCPI string is printable UTF-8: each tab, line break or other non-printable character becomes a space,
    and the spaces are collapsed into one (a "CARD\r\n7" is sent as "CARD 7")."""
    if value.isprintable():
        return value
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def _ci_string(value: str) -> str:
    """An optional CiString field as the model checks it since emsp 0029 (printable ASCII, no space at either end;
    its column holds 36), or "" (left out) when an older row holds anything else. Not repaired: a group_id made
    up here would name another group at the CPO; left out, the token is in none."""
    try:
        ocpi_ci_string(value)
    except ValidationError:
        return ""
    return value


def _language(value: str) -> str:
    """ISO 639-1 (string(2)), lower-case, one of its codes; anything else is left out (the field is optional)."""
    language = value.lower() if value.isascii() else value
    return language if _ISO_639_1.fullmatch(language) and language in iso_639_1_codes() else ""


def token_is_valid(token: Token, partner: Partner | None = None, now: datetime | None = None) -> bool:
    if not token.valid or token.is_blocked or token.driver.is_blocked:
        return False
    if token.expires_at is not None and token.expires_at <= (now or timezone.now()):
        return False
    if partner is not None:
        if hasattr(token, "is_restricted"):  # read with the token by real-time authorization's query
            restricted, allowed_here = token.is_restricted, token.allowed_here
        else:
            allowed = {p.pk for p in token.allowed_partners.all()}  # prefetched by lists
            restricted, allowed_here = bool(allowed), partner.pk in allowed
        if restricted and not allowed_here:
            return False
    return True


# --- commands (mod_commands §"Object description") ---------------------------------------------------------


def command_response_url(command: Command) -> str:
    """Where the CPO posts the CommandResult of this one command (ocpi/views/commands.py)."""
    return absolute_url(f"/ocpi/emsp/2.2.1/commands/{command.type}/{command.uid}")


def command_as_ocpi(command: Command) -> dict[str, Any]:
    """The request body of one command, with its own response_url."""
    body: dict[str, Any] = {"response_url": command_response_url(command)}
    evse = command.evse
    if command.type == Command.Type.START_SESSION:
        assert command.token is not None and evse is not None
        body.update(
            token=token_as_ocpi(command.token, command.partner),
            location_id=evse.location.location_id,
            evse_uid=evse.uid,
            authorization_reference=command.authorization_reference,
        )
        if command.connector_id:
            body["connector_id"] = command.connector_id
    elif command.type == Command.Type.STOP_SESSION:
        assert command.session is not None
        body["session_id"] = command.session.session_id
    elif command.type == Command.Type.RESERVE_NOW:
        reservation = command.reservation
        assert reservation is not None and command.token is not None and evse is not None
        body.update(
            token=token_as_ocpi(command.token, command.partner),
            expiry_date=format_datetime(reservation.expiry_at),
            reservation_id=reservation.reservation_id,
            location_id=evse.location.location_id,
            evse_uid=evse.uid,
            authorization_reference=command.authorization_reference,
        )
    elif command.type == Command.Type.CANCEL_RESERVATION:
        assert command.reservation is not None
        body["reservation_id"] = command.reservation.reservation_id
    elif command.type == Command.Type.UNLOCK_CONNECTOR:
        assert evse is not None
        body.update(location_id=evse.location.location_id, evse_uid=evse.uid, connector_id=command.connector_id)
    return body


# --- the catalogue as we hold it (mod_locations: GET on the Receiver interface) -----------------------------


def location_as_ocpi(location: Location) -> dict[str, Any]:
    """The stored Location with its EVSEs and connectors. An EVSE kept without a valid connector (lenient in:
    its status still shows in the catalogue) is left out: EVSE.connectors is 1..* (strict out)."""
    evses = [evse_as_ocpi(evse) for evse in location.evses.prefetch_related("connectors").order_by("pk")]
    evses = [evse for evse in evses if evse["connectors"]]
    return {**location.data, "evses": evses, "last_updated": format_datetime(location.last_updated)}


def evse_as_ocpi(evse: Evse) -> dict[str, Any]:
    # Sorted in Python: an order_by() here would bypass the connectors prefetched by location_as_ocpi.
    connectors = [connector_as_ocpi(c) for c in sorted(evse.connectors.all(), key=lambda c: c.pk)]
    return {
        **evse.data,
        "status": evse.status,
        "connectors": connectors,
        "last_updated": format_datetime(evse.last_updated),
    }


def connector_as_ocpi(connector: Connector) -> dict[str, Any]:
    return {**connector.data, "last_updated": format_datetime(connector.last_updated)}
