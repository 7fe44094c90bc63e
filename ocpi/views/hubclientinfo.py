"""HubClientInfo receiver (mod_hub_client_info §"Receiver Interface"): a hub PUTs the ClientInfo of a party it
connects us with, and may GET it back, at /{country_code}/{party_id}. A configuration module: no routing
headers (transport §"Message Routing")."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.request import Request

from emsp.models import Partner
from ocpi import transport
from ocpi.hubclientinfo import client_info_as_ocpi, client_info_store, normalize_client_info
from ocpi.models import HubClientInfo
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, ref, response
from ocpi.transport import OcpiError, OcpiView, normalized, ocpi_response


@extend_schema_view(
    get=extend_schema(
        operation_id="ocpi_hubclientinfo_get",
        responses={
            200: response(ref("ClientInfo")),
            404: error_response("Unknown ClientInfo"),
        },
    ),
    put=extend_schema(
        operation_id="ocpi_hubclientinfo_put",
        request=json_body(ref("ClientInfo")),
        responses={200: response(description="Replaced"), 201: response(description="Created")},
    ),
)
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class HubClientInfoView(OcpiView):
    module = "hubclientinfo"
    functional = False

    def initial(self, request: Request, *args: object, **kwargs: object) -> None:
        super().initial(request, *args, **kwargs)
        # "this module is between eMSP/CPO and Hub": a CPO's own connection has no parties to announce.
        if self.partner.role != Partner.Role.HUB:
            raise OcpiError(transport.CLIENT_ERROR, "HubClientInfo is taken from hubs only", 403)

    def get(self, request: Request, country_code: str, party_id: str) -> HttpResponse:
        row = HubClientInfo.objects.filter(
            partner=self.partner, country_code=country_code.upper(), party_id=party_id.upper()
        ).first()
        if row is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown ClientInfo", 404)
        return ocpi_response(client_info_as_ocpi(row))

    def put(self, request: Request, country_code: str, party_id: str) -> HttpResponse:
        body = self.json_object()
        info, _ = normalized(normalize_client_info, body, country_code=country_code, party_id=party_id)
        created = not HubClientInfo.objects.filter(
            partner=self.partner, country_code=info["country_code"], party_id=info["party_id"]
        ).exists()
        client_info_store(self.partner, info)
        return ocpi_response(http_status=201 if created else 200)
