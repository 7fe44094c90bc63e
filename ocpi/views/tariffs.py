"""Tariffs receiver (mod_tariffs §"Receiver interface"): GET, PUT, DELETE at /{country_code}/{party_id}/{tariff_id}."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.request import Request

from billing.services import records
from ocpi import transport
from ocpi.normalize import normalize_tariff
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, ref, response
from ocpi.transport import OcpiError, OcpiView, ocpi_response


@extend_schema_view(
    get=extend_schema(
        operation_id="ocpi_tariff_get",
        responses={200: response(ref("Tariff")), 404: error_response("Unknown tariff")},
    ),
    put=extend_schema(
        operation_id="ocpi_tariff_put",
        request=json_body(ref("Tariff")),
        responses={200: response(description="Replaced"), 201: response(description="Created")},
    ),
    delete=extend_schema(
        operation_id="ocpi_tariff_delete",
        responses={200: response(description="Deleted"), 404: error_response("Unknown tariff")},
    ),
)
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class TariffReceiverView(OcpiView):
    module = "tariffs"

    def get(self, request: Request, country_code: str, party_id: str, tariff_id: str) -> HttpResponse:
        self.require_own_party(country_code, party_id)
        tariff = records.tariff_get(country_code, party_id, tariff_id)
        if tariff is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown tariff", 404)
        return ocpi_response(tariff.data)

    def put(self, request: Request, country_code: str, party_id: str, tariff_id: str) -> HttpResponse:
        body = self.json_object()
        clean = self.accept_party_object(normalize_tariff, body, country_code, party_id, tariff_id)
        _, created, _ = records.tariff_put(self.partner, clean)
        return ocpi_response(http_status=201 if created else 200)

    def delete(self, request: Request, country_code: str, party_id: str, tariff_id: str) -> HttpResponse:
        self.require_own_party(country_code, party_id)
        tariff = records.tariff_get(country_code, party_id, tariff_id)
        if tariff is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown tariff", 404)
        records.tariff_delete(tariff)
        return ocpi_response()
