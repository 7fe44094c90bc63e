"""GET versions and version details (version_information_endpoint.asciidoc). Token A is accepted here."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from ocpi.credentials import VERSION, our_version_details, our_versions
from ocpi.hubclientinfo import receiver_endpoint
from ocpi.openapi import TOKEN_AUTH, list_of, ref, response
from ocpi.transport import OcpiView, ocpi_response


class VersionsView(OcpiView):
    module = "versions"
    functional = False
    allow_token_a = True

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_versions",
        summary="OCPI versions we support (2.1.1, 2.2.1, 2.3.0)",
        responses={200: response(list_of("Version"))},
        auth=TOKEN_AUTH,
    )
    def get(self, request: Request) -> HttpResponse:
        return ocpi_response(our_versions())


class VersionDetailsView(OcpiView):
    module = "versions"
    functional = False
    allow_token_a = True
    handles_versions = True  # served per version by ocpi/urls.py with its own ocpi_version
    ocpi_version = VERSION

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_version_details",
        summary="The modules we implement in OCPI 2.2.1 (the same at /ocpi/2.1.1 and /ocpi/2.3.0)",
        responses={200: response(ref("VersionDetails"))},
        auth=TOKEN_AUTH,
    )
    def get(self, request: Request) -> HttpResponse:
        details = our_version_details(self.ocpi_version)
        hub_endpoint = receiver_endpoint(self.partner, self.ocpi_version)  # for hubs only
        if hub_endpoint is not None:
            details["endpoints"].append(hub_endpoint)
        return ocpi_response(details)
