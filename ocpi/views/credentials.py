"""The credentials endpoint (credentials.asciidoc): GET, POST (register), PUT (rotate), DELETE (unregister)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.request import Request

from ocpi import credentials, transport
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, ref, response
from ocpi.transport import OcpiError, OcpiView, ocpi_response

_CREDENTIALS = response(ref("Credentials"))


@extend_schema_view(
    get=extend_schema(
        operation_id="ocpi_credentials_get", summary="Our credentials for the caller", responses=_CREDENTIALS
    ),
    post=extend_schema(
        operation_id="ocpi_credentials_register",
        summary="Register with Token A: we fetch your versions with your token, then answer with ours",
        request=json_body(ref("Credentials")),
        responses={200: _CREDENTIALS, 405: error_response("Already registered")},
    ),
    put=extend_schema(
        operation_id="ocpi_credentials_update",
        summary="Rotate tokens / switch version",
        request=json_body(ref("Credentials")),
        responses={200: _CREDENTIALS, 405: error_response("Not registered")},
    ),
    delete=extend_schema(
        operation_id="ocpi_credentials_unregister",
        summary="Unregister",
        responses={200: response(), 405: error_response("Not registered")},
    ),
)
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class CredentialsView(OcpiView):
    """One per version (ocpi/urls.py): a POST or PUT here makes the connection speak this endpoint's version."""

    module = "credentials"
    functional = False
    allow_token_a = True
    handles_versions = True
    ocpi_version = credentials.VERSION

    def get(self, request: Request) -> HttpResponse:
        # Our credentials for the caller. We keep only a hash of the token the caller uses, so we answer
        # with the token it presented — which is that token (ocpi/ocpi#394).
        return ocpi_response(credentials.our_credentials(self.presented_token, self.ocpi_version))

    def post(self, request: Request) -> HttpResponse:
        body = self.body()
        answer = credentials.accept_registration(
            self.partner, body, used_token_a=self.used_token_a, version=self.ocpi_version
        )
        return ocpi_response(answer)

    def put(self, request: Request) -> HttpResponse:
        body = self.body()
        answer = credentials.update_registration(
            self.partner, body, used_token_a=self.used_token_a, version=self.ocpi_version
        )
        return ocpi_response(answer)

    def delete(self, request: Request) -> HttpResponse:
        if self.used_token_a or self.partner.state != self.partner.State.CONNECTED:
            raise OcpiError(transport.CLIENT_ERROR, "Not registered", 405)
        credentials.unregister(self.partner)
        return ocpi_response()
