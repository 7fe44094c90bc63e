"""Sessions receiver (mod_sessions §"Receiver interface"): GET, PUT (whole session), PATCH (fields;
charging_periods appended) at /{country_code}/{party_id}/{session_id}."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework.request import Request

from emsp.models import ChargingSession
from emsp.services import sessions
from ocpi import transport
from ocpi.normalize import normalize_session, normalize_session_patch
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, patch_ref, ref, response
from ocpi.transport import OcpiError, OcpiView, ocpi_response, patch_matches_url


@extend_schema_view(
    get=extend_schema(
        operation_id="ocpi_session_get",
        responses={200: response(ref("Session")), 404: error_response("Unknown session")},
    ),
    put=extend_schema(
        operation_id="ocpi_session_put",
        request=json_body(ref("Session")),
        responses={200: response(description="Replaced"), 201: response(description="Created")},
    ),
    patch=extend_schema(
        operation_id="ocpi_session_patch",
        summary="Changed fields of a session; charging_periods are appended",
        request=json_body(patch_ref("Session")),
        responses={200: response(), 404: error_response("Unknown session: PUT it first")},
    ),
)
@extend_schema(tags=["OCPI"], auth=TOKEN_AUTH)
class SessionReceiverView(OcpiView):
    module = "sessions"

    def _session(self, country_code: str, party_id: str, session_id: str) -> ChargingSession | None:
        self.require_own_party(country_code, party_id)
        return ChargingSession.objects.filter(ocpi_key=sessions.session_key(country_code, party_id, session_id)).first()

    def get(self, request: Request, country_code: str, party_id: str, session_id: str) -> HttpResponse:
        session = self._session(country_code, party_id, session_id)
        if session is None or sessions.made_of_cdr(session):
            # One we made of its CDR is not the CPO's object (and carries our mark): unknown, as to a PATCH.
            raise OcpiError(transport.CLIENT_ERROR, "Unknown session", 404)
        # The CPO's object without our marks (one taken over keeps one: sessions.BILLED_OF_CDR), in every version:
        # the 2.1.1 and 2.3.0 read-backs map this answer (ocpi/versions/wire.py).
        return ocpi_response(sessions.session_as_sent(session))

    def put(self, request: Request, country_code: str, party_id: str, session_id: str) -> HttpResponse:
        body = self.json_object()
        clean = self.accept_party_object(normalize_session, body, country_code, party_id, session_id)
        change = sessions.session_put(self.partner, clean)
        self.record_findings()
        return ocpi_response(http_status=201 if change.created else 200)

    def patch(self, request: Request, country_code: str, party_id: str, session_id: str) -> HttpResponse:
        body = self.json_object()
        self.require_own_party(country_code, party_id)
        # The id as sent; the party only as read: an alpha-3 `country_code` (which the PUT takes) is the URL's.
        patch_matches_url(body, id=session_id)
        # An unusable body is 2001 even if unknown.
        clean = self.accept(normalize_session_patch, body, session_id)
        # As read: a camelCase `countryCode` naming another party is the normalised `country_code`.
        patch_matches_url(clean, id=session_id, country_code=country_code, party_id=party_id)
        # Found and changed under one lock (the session read once, not once here and again to change it).
        change = sessions.session_patch(sessions.session_key(country_code, party_id, session_id), clean)
        if change is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown session: PUT it first", 404)
        if change.refused:  # the session as patched would break PUT's checks (an end before its start): unchanged
            raise OcpiError(transport.INVALID_PARAMETERS, change.refused)
        self.record_findings()  # only of a change taken: a refused one is the 2001
        return ocpi_response()
