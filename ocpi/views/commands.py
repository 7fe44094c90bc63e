"""Commands sender side (mod_commands §"Sender interface"): the CPO POSTs the CommandResult of one of our
commands to the `response_url` we gave it: /{command}/{uid}."""

from __future__ import annotations

import uuid

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from emsp.models import Command
from emsp.services import commands
from ocpi import transport
from ocpi.enums import COMMAND_RESULT_TYPES
from ocpi.serializers import OcpiCommandResultSerializer, envelope, error_response
from ocpi.transport import OcpiError, OcpiView, ocpi_response


class CommandResultView(OcpiView):
    module = "commands"

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_command_result",
        summary="The CommandResult of one of our commands (its response_url)",
        request=OcpiCommandResultSerializer,
        responses={200: envelope("OcpiEmptyResponse"), 404: error_response("Unknown command")},
    )
    def post(self, request: Request, command: str, uid: str) -> HttpResponse:
        body = self.json_object()
        row = Command.objects.filter(uid=_uuid_or_none(uid), type=command.upper(), partner=self.partner).first()
        if row is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown command", 404)
        result_type = str(body.get("result") or "").strip().upper()
        if result_type not in COMMAND_RESULT_TYPES:
            raise OcpiError(transport.INVALID_PARAMETERS, f"unknown CommandResultType {result_type!r}")
        commands.command_result_received(row, body)
        return ocpi_response()


def _uuid_or_none(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
