"""Commands sender side (mod_commands §"Sender interface"): the CPO POSTs the CommandResult of one of our
commands to the `response_url` we gave it: /{command}/{uid}."""

from __future__ import annotations

import uuid
from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from emsp.models import Command
from emsp.services import commands
from ocpi import hub, transport
from ocpi.enums import COMMAND_RESULT_TYPES
from ocpi.normalize import Issue
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, ref, response
from ocpi.transport import OcpiError, OcpiView, ocpi_response


class CommandResultView(OcpiView):
    module = "commands"
    # The message is optional and only shown: a NUL in it (refused anywhere else, transport.check_json) drops it,
    # with a finding, and the result is applied. Refused with 2001, the result had been lost: the command stayed
    # ACCEPTED until it timed out.
    nul_droppable = frozenset({"message"})

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_command_result",
        summary="The CommandResult of one of our commands (its response_url)",
        request=json_body(ref("CommandResult")),
        responses={200: response(), 404: error_response("Unknown command")},
        auth=TOKEN_AUTH,
    )
    def post(self, request: Request, command: str, uid: str) -> HttpResponse:
        body = self.json_object()
        row = Command.objects.filter(uid=_uuid_or_none(uid), type=command.upper(), partner=self.partner).first()
        party = hub.command_party(row) if row is not None else None
        if row is None or (party is not None and not self.routed_for(*party)):  # through a hub: from its party
            raise OcpiError(transport.CLIENT_ERROR, "Unknown command", 404)
        result, issues = command_result(body)
        if "message" in self.nul_dropped:
            found = "message: a NUL character in it (no column holds one); dropped, the result applied"
            issues.append(Issue(path="message", code="control_characters", message=found, fixed=False))
        self.note_findings(str(row.uid), issues)
        commands.command_result_received(row, result)
        self.record_findings()
        return ocpi_response()


def _uuid_or_none(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


def command_result(body: dict[str, Any]) -> tuple[dict[str, Any], list[Issue]]:
    """mod_commands CommandResult {result, message?: DisplayText[]}: exactly that is kept, with the findings;
    an unknown result is 2001. The message is optional and only shown: one that is no DisplayText (a plain
    string, a number) reads as none (commands.result_messages), with a finding. Refused with 2001, the result
    itself had been lost: the command stayed ACCEPTED."""
    result = body.get("result")
    result_type = result.strip().upper() if isinstance(result, str) else ""
    if result_type not in COMMAND_RESULT_TYPES:
        raise OcpiError(transport.INVALID_PARAMETERS, f"result: unknown CommandResultType {str(result)[:40]!r}")
    clean: dict[str, Any] = {"result": result_type}
    issues: list[Issue] = []
    messages = body.get("message")
    if messages is not None and not isinstance(messages, (dict, list)):
        found = f"message: a list of DisplayText expected, got {type(messages).__name__}; dropped"
        issues.append(Issue(path="message", code="invalid_type", message=found, fixed=False))
    texts = commands.display_texts(messages)  # capped as the synchronous CommandResponse's is (ocpi/gateway.py)
    if texts:
        clean["message"] = texts
    return clean, issues
