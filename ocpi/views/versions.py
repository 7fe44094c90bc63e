"""GET versions and version details (version_information_endpoint.asciidoc). Token A is accepted here."""

from __future__ import annotations

from django.http import HttpResponse
from rest_framework.request import Request

from ocpi.credentials import our_version_details, our_versions
from ocpi.transport import OcpiView, ocpi_response


class VersionsView(OcpiView):
    module = "versions"
    functional = False
    allow_token_a = True

    def get(self, request: Request) -> HttpResponse:
        return ocpi_response(our_versions())


class VersionDetailsView(OcpiView):
    module = "versions"
    functional = False
    allow_token_a = True

    def get(self, request: Request) -> HttpResponse:
        return ocpi_response(our_version_details())
