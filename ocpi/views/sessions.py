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
from ocpi.quality import record_issues
from ocpi.serializers import PATCH_BODY, SESSION, envelope, error_response
from ocpi.transport import OcpiError, OcpiView, normalized, ocpi_response


@extend_schema_view(
    get=extend_schema(
        operation_id="ocpi_session_get",
        responses={200: envelope("OcpiSessionResponse", SESSION), 404: error_response("Unknown session")},
    ),
    put=extend_schema(
        operation_id="ocpi_session_put",
        request=SESSION,
        responses={200: envelope("OcpiEmptyResponse"), 201: envelope("OcpiEmptyResponse")},
    ),
    patch=extend_schema(
        operation_id="ocpi_session_patch",
        request=PATCH_BODY,
        responses={200: envelope("OcpiEmptyResponse"), 404: error_response("Unknown session")},
    ),
)
@extend_schema(tags=["OCPI"])
class SessionReceiverView(OcpiView):
    module = "sessions"

    def _session(self, country_code: str, party_id: str, session_id: str) -> ChargingSession | None:
        self.require_own_party(country_code, party_id)
        return ChargingSession.objects.filter(ocpi_key=sessions.session_key(country_code, party_id, session_id)).first()

    def get(self, request: Request, country_code: str, party_id: str, session_id: str) -> HttpResponse:
        session = self._session(country_code, party_id, session_id)
        if session is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown session", 404)
        return ocpi_response(session.data)

    def put(self, request: Request, country_code: str, party_id: str, session_id: str) -> HttpResponse:
        body = self.json_object()
        clean = self.accept_party_object(normalize_session, body, country_code, party_id, session_id)
        change = sessions.session_put(self.partner, clean)
        return ocpi_response(http_status=201 if change.created else 200)

    def patch(self, request: Request, country_code: str, party_id: str, session_id: str) -> HttpResponse:
        body = self.json_object()
        session = self._session(country_code, party_id, session_id)
        clean, issues = normalized(normalize_session_patch, body)  # an unusable body is 2001 even if unknown
        if session is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown session: PUT it first", 404)
        record_issues(self.partner, self.module, [(session_id, i) for i in issues])
        sessions.session_patch(session, clean)
        return ocpi_response()
