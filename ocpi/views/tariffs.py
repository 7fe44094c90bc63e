"""Tariffs receiver (mod_tariffs §"Receiver interface"): GET, PUT, DELETE at /{country_code}/{party_id}/{tariff_id}."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions
from rest_framework.request import Request

from billing.services import records
from ocpi import transport, versions
from ocpi.normalize import normalize_tariff
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, ref, response
from ocpi.transport import OcpiError, OcpiView, ocpi_response, patch_matches_url
from ocpi.versions import wire


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
    patch=extend_schema(exclude=True),  # 2.1.1 only: the schema describes 2.2.1
)
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class TariffReceiverView(OcpiView):
    module = "tariffs"
    ocpi_version = "2.2.1"  # served in 2.1.1 and 2.3.0 too (ocpi/versions/wire.py::versioned sets it)

    def get(self, request: Request, country_code: str, party_id: str, tariff_id: str) -> HttpResponse:
        self.require_own_party(country_code, party_id)
        tariff = records.tariff_get(country_code, party_id, tariff_id)
        if tariff is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown tariff", 404)
        return ocpi_response(tariff.data)

    def put(self, request: Request, country_code: str, party_id: str, tariff_id: str) -> HttpResponse:
        body = self.json_object()
        clean = self.accept_party_object(normalize_tariff, body, country_code, party_id, tariff_id)
        _, created, _ = self._put(clean)
        return ocpi_response(http_status=201 if created else 200)

    def _put(self, clean: dict[str, Any]) -> tuple[Any, bool, bool]:
        """The tariff stored, and then its findings recorded (a refused one's are none: the 404 is the answer)."""
        try:
            stored = records.tariff_put(self.partner, clean)
        except records.PartyNotHeld:
            # Granted to another connection (or taken back) since this partner's parties were read (cached for
            # seconds): nothing was written, and the answer is the one a fresh read gives.
            raise OcpiError(transport.CLIENT_ERROR, "Unknown party for this token", 404) from None
        self.record_findings()
        return stored

    @property
    def allowed_methods(self) -> list[str]:
        """PATCH in 2.1.1 only (OPTIONS and a 405's Allow say so)."""
        methods = super().allowed_methods
        return methods if self.ocpi_version == "2.1.1" else [m for m in methods if m != "PATCH"]

    def patch(self, request: Request, country_code: str, party_id: str, tariff_id: str) -> HttpResponse:
        """2.1.1 only (mod_tariffs 2.1.1: the eMSP's interface takes PUT and PATCH; 2.2.1 dropped the PATCH): the
        fields sent replace the stored tariff's, and the whole is taken as a PUT of it would be. It had been
        answered 405 and the price change lost, while quotes and CDR audits went on with the old one."""
        if self.ocpi_version != "2.1.1":
            raise exceptions.MethodNotAllowed("PATCH")
        self.require_own_party(country_code, party_id)
        tariff = records.tariff_get(country_code, party_id, tariff_id)
        if tariff is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown tariff", 404)
        body = self.json_object()
        patch_matches_url(body, id=tariff_id, country_code=country_code, party_id=party_id)
        owner = wire.context(self.partner, (country_code, party_id))
        # The fields sent, in our shape, over the tariff as we hold it (not over its 2.1.1 read-back, which
        # leaves out what 2.1.1 can't say: a PATCH of its alt URL had dropped an element and its min_price).
        changed = versions.upgrade("2.1.1", "tariff", body, owner)
        merged = {**tariff.data, **changed} if isinstance(changed, dict) else changed
        clean = self.accept_party_object(normalize_tariff, merged, country_code, party_id, tariff_id)
        self._put(clean)
        return ocpi_response()

    def delete(self, request: Request, country_code: str, party_id: str, tariff_id: str) -> HttpResponse:
        self.require_own_party(country_code, party_id)
        tariff = records.tariff_get(country_code, party_id, tariff_id)
        if tariff is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown tariff", 404)
        try:
            records.tariff_delete(tariff, writer=self.partner)
        except records.PartyNotHeld:
            # As a PUT's (`_put`): granted to another connection since this partner's parties were read.
            raise OcpiError(transport.CLIENT_ERROR, "Unknown party for this token", 404) from None
        return ocpi_response()
