"""The domain's CPO port (emsp/ports.py) spoken in OCPI, in each partner's version (ocpi/versions): commands to
a CPO's Commands receiver, one EVSE from its Locations sender, our tokens pushed to its Tokens receiver, and
pulls. Registered at start-up by OcpiConfig.ready()."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from emsp.models import Command, Evse, Partner, Token
from emsp.ports import CommandReply, CpoUnreachable
from emsp.services.commands import display_texts, result_messages
from ocpi import hub, push, sync
from ocpi.client import OcpiClient, OcpiClientError, object_url, storable_answer
from ocpi.models import SyncRun
from ocpi.normalize import Rejected, normalize_evse, unwrap_object_payload
from ocpi.rendering import command_as_ocpi
from ocpi.versions import CannotCarry, wire

# mod_commands §"CommandResponseType" (2.2.1; a 2.1.1 TIMEOUT is read as REJECTED by ocpi/versions/v211.py).
COMMAND_RESPONSE_TYPES = frozenset({"ACCEPTED", "NOT_SUPPORTED", "REJECTED", "UNKNOWN_SESSION"})


class OcpiGateway:
    def send_command(self, command: Command) -> CommandReply:
        """POST {commands receiver}/{command type} (mod_commands §"Receiver interface")."""
        partner = command.partner
        base = partner.endpoint_url("commands", "RECEIVER")
        if not base or partner.state != Partner.State.CONNECTED:
            raise CpoUnreachable("The CPO has no Commands receiver or is not connected")
        to_party = hub.command_party(command)  # through a hub: the party of the EVSE (or session)
        unreachable = hub.unreachable_reason(partner, to_party)
        if unreachable:
            raise CpoUnreachable(unreachable)
        try:
            body = wire.command_body(partner, command.type, command_as_ocpi(command))
        except CannotCarry as exc:
            raise CpoUnreachable(f"OCPI {partner.version}: {exc}") from exc
        Command.objects.filter(pk=command.pk).update(request=body)
        try:
            client = OcpiClient(partner, to_party=to_party)
            reply = client.request("POST", object_url(base, command.type), module="commands", json=body)
        except OcpiClientError as exc:
            raise CpoUnreachable(str(exc)) from exc
        try:
            response = wire.command_response(partner, unwrap_object_payload(reply.data))
        except Rejected as exc:
            # No CommandResponse to read (no `data`, a list of several, a string): the command is not known to be
            # with the charger, as when the CPO answers with an error.
            raise CpoUnreachable(f"The CPO's CommandResponse could not be read: {exc}") from exc
        # Kept on the command: its spec fields only, the message capped as a CommandResult's (it had been stored
        # whole, extra fields and all, up to the 20 MB an answer may be), without NUL (PostgreSQL refuses it).
        response = storable_answer(_command_response_fields(response))
        said = response.get("result")
        result = said.strip().upper() if isinstance(said, str) else ""
        if result not in COMMAND_RESPONSE_TYPES:
            # A word of its own (longer than the column that keeps it, or none at all): the answer is not a
            # CommandResponse, and the command is not known to be with the charger.
            word = "none" if said is None else repr((said if isinstance(said, str) else str(said))[:40])
            raise CpoUnreachable(
                f"The CPO's CommandResponse could not be read: its result {word} is no CommandResponseType"
            )
        response["result"] = result
        return CommandReply(
            result=result,
            timeout_seconds=_positive_int(response.get("timeout")),
            message=result_messages(response),
            response=response,
        )

    def fetch_evse(self, evse: Evse, *, timeout: float) -> dict[str, Any] | None:
        """GET {locations sender}/{location_id}/{evse_uid} (mod_locations §"Sender interface")."""
        location = evse.location
        partner = location.partner
        base = partner.endpoint_url("locations", "SENDER")
        party = (location.country_code, location.party_id)
        if not base or hub.unreachable_reason(partner, party):
            return None
        try:
            reply = OcpiClient(partner, timeout=timeout, to_party=party).get(
                object_url(base, location.location_id, evse.uid), module="locations", timeout=timeout
            )
            clean, _ = normalize_evse(wire.evse(partner, unwrap_object_payload(reply.data)))
        except (OcpiClientError, Rejected, ValueError):
            return None
        return clean

    def push_token(self, token: Token) -> None:
        push.token_changed(token)

    def pull(self, partner: Partner, objects: str, *, since: datetime) -> bool:
        run = sync.sync_module(partner, objects, date_from=since)
        return run is not None and run.outcome == SyncRun.Outcome.OK


def _command_response_fields(response: dict[str, Any]) -> dict[str, Any]:
    """mod_commands CommandResponse {result, timeout, message?: DisplayText[]}: those fields only. The result as
    sent (read next: a command with no CommandResponseType fails, nothing of its answer kept), the timeout when it
    is a number or a short text (read as seconds when it is a positive number), the message as a CommandResult's
    is kept (commands.display_texts)."""
    kept: dict[str, Any] = {}
    if "result" in response:
        kept["result"] = response["result"]
    timeout = response.get("timeout")
    if isinstance(timeout, (bool, int, float)):
        kept["timeout"] = timeout
    elif isinstance(timeout, str):
        kept["timeout"] = timeout[:40]
    texts = display_texts(response.get("message"))
    if texts:
        kept["message"] = texts
    return kept


def _positive_int(value: Any) -> int | None:
    """The CommandResponse's `timeout` in seconds, or None (our default applies) when it is no positive number:
    `true` had been read as 1 s (int(True))."""
    if isinstance(value, bool):
        return None
    try:
        seconds = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if seconds > 0 else None
