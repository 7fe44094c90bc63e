"""HubClientInfo receiver (mod_hub_client_info §"Receiver Interface"): a hub PUTs the ClientInfo of a party it
connects us with, and may GET it back, at /{country_code}/{party_id}. A configuration module: no routing
headers (transport §"Message Routing")."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers
from rest_framework.request import Request

from emsp.models import Partner
from ocpi import transport
from ocpi.hubclientinfo import ROLES, STATUSES, client_info_as_ocpi, client_info_store, normalize_client_info
from ocpi.models import HubClientInfo
from ocpi.serializers import envelope, error_response
from ocpi.transport import OcpiError, OcpiView, normalized, ocpi_response


class OcpiHubClientInfoSerializer(serializers.Serializer):
    """mod_hub_client_info ClientInfo (the OpenAPI description; bodies are read by `normalize_client_info`)."""

    party_id = serializers.CharField(max_length=3)
    country_code = serializers.CharField(max_length=2)
    role = serializers.ChoiceField(choices=sorted(ROLES))
    status = serializers.ChoiceField(choices=sorted(STATUSES))
    last_updated = serializers.DateTimeField()


@extend_schema_view(
    get=extend_schema(
        operation_id="ocpi_hubclientinfo_get",
        responses={
            200: envelope("OcpiHubClientInfoResponse", OcpiHubClientInfoSerializer()),
            404: error_response("Unknown ClientInfo"),
        },
    ),
    put=extend_schema(
        operation_id="ocpi_hubclientinfo_put",
        request=OcpiHubClientInfoSerializer,
        responses={200: envelope("OcpiEmptyResponse"), 201: envelope("OcpiEmptyResponse")},
    ),
)
@extend_schema(tags=["OCPI"])
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
