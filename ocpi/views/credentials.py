"""The credentials endpoint (credentials.asciidoc): GET, POST (register), PUT (rotate), DELETE (unregister)."""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.request import Request

from ocpi import credentials, transport
from ocpi.transport import OcpiError, OcpiView, ocpi_response


class CredentialsView(OcpiView):
    module = "credentials"
    functional = False
    allow_token_a = True

    def get(self, request: Request) -> HttpResponse:
        # Our credentials for the caller. We keep only a hash of the token the caller uses, so we answer
        # with the token it presented — which is that token (ocpi/ocpi#394).
        return ocpi_response(credentials.our_credentials(self.presented_token))

    def post(self, request: Request) -> HttpResponse:
        body = self.body()
        return ocpi_response(credentials.accept_registration(self.partner, body, used_token_a=self.used_token_a))

    def put(self, request: Request) -> HttpResponse:
        body = self.body()
        return ocpi_response(credentials.update_registration(self.partner, body, used_token_a=self.used_token_a))

    def delete(self, request: Request) -> HttpResponse:
        if self.used_token_a or self.partner.state != self.partner.State.CONNECTED:
            raise OcpiError(transport.CLIENT_ERROR, "Not registered", 405)
        credentials.unregister(self.partner)
        return ocpi_response()
