"""CDRs receiver (mod_cdrs §"Receiver interface"): POST a final CDR (answered with a `Location` header
that points at our copy), GET that copy. CDRs are immutable: a repeated id changes nothing."""

from __future__ import annotations

from urllib.parse import quote

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.request import Request

from billing.models import Cdr
from billing.services import records
from ocpi import transport
from ocpi.normalize import Issue, normalize_cdr
from ocpi.openapi import TOKEN_AUTH, error_response, json_body, ref, response
from ocpi.quality import record_issues
from ocpi.transport import OcpiError, OcpiView, absolute_url, normalized, ocpi_response
from ocpi.versions import v230


def cdr_url(cdr: Cdr, version: str = "2.2.1") -> str:
    """Where the CPO GETs the CDR back (mod_cdrs: the POST's Location header). A CiString id may hold any
    printable ASCII: each segment is percent-encoded, so an id with `/`, `?`, `#` or a space leads back to
    itself (the detail route takes the rest of the path as the id)."""
    segments = "/".join(quote(str(part), safe="") for part in (cdr.country_code, cdr.party_id, cdr.cdr_id))
    return absolute_url(f"/ocpi/emsp/{version}/cdrs/{segments}")


class CdrReceiverView(OcpiView):
    module = "cdrs"
    ocpi_version = "2.2.1"  # served in 2.1.1 and 2.3.0 too (ocpi/versions/wire.py::versioned sets it)

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_cdr_post",
        summary="Receive a CDR; the Location header points at our copy",
        request=json_body(ref("CDR")),
        responses={
            201: response(description="Stored (Location header set)"),
            200: response(description="Already stored: unchanged"),
        },
        auth=TOKEN_AUTH,
    )
    def post(self, request: Request) -> HttpResponse:
        body = self.json_object()
        # A CDR without its party is the sender's: the party behind a hub that routed it, else the partner's.
        sender = self.from_party or (self.partner.country_code, self.partner.party_id)
        clean, issues = normalized(normalize_cdr, body, country_code=sender[0], party_id=sender[1])
        # The party as read, which the CDR is stored under: a camelCase `countryCode`/`partyId` (checked on the raw
        # snake_case keys, another party's CDR id had been taken first, and its own refused) or an alpha-3 country
        # (refused as unknown, though it is the caller's party) is the normalised `country_code`/`party_id`.
        self.require_own_party(clean["country_code"], clean["party_id"])
        self.note_findings(str(clean.get("id")), issues)
        stored = records.cdr_store(self.partner, clean)
        if stored.changed_fields:
            # The refusal is the finding: what the normaliser found in the CDR refused is of no CDR we hold.
            # mod_cdrs: "it cannot be changed or replaced once sent to the eMSP … Instead, a Credit CDR can be sent."
            fields = ", ".join(stored.changed_fields)
            message = (
                f"CDR {stored.cdr.cdr_id} is stored with other {fields}: a CDR is never replaced; send a credit CDR"
            )
            issue = Issue(path=stored.changed_fields[0], code="cdr_changed", message=message[:500], fixed=False)
            record_issues(self.partner, self.module, [(stored.cdr.cdr_id, issue)])
            raise OcpiError(transport.INVALID_PARAMETERS, message)
        self.record_findings()
        location = cdr_url(stored.cdr, self.ocpi_version)
        return ocpi_response(http_status=201 if stored.created else 200, headers={"Location": location})


class CdrDetailView(OcpiView):
    module = "cdrs"
    ids_may_hold_a_slash = True  # the rest of the path is the id (cdr_url percent-encodes it)

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_cdr_get",
        responses={200: response(ref("CDR")), 404: error_response("Unknown CDR")},
        auth=TOKEN_AUTH,
    )
    def get(self, request: Request, country_code: str, party_id: str, cdr_id: str) -> HttpResponse:
        self.require_own_party(country_code, party_id)
        cdr = Cdr.objects.filter(ocpi_key=records.cdr_key(country_code, party_id, cdr_id)).first()
        if cdr is None:
            raise OcpiError(transport.CLIENT_ERROR, "Unknown CDR", 404)
        standard = (cdr.data.get("cdr_location") or {}).get("connector_standard")
        if getattr(self, "ocpi_version", "2.2.1") == "2.2.1" and standard in v230.V230_ONLY_STANDARDS:
            # CdrLocation.connector_standard is required: a CDR of a connector 2.2.1 has no value for can't be said.
            raise OcpiError(transport.SERVER_ERROR, f"OCPI 2.2.1 has no ConnectorType {standard!r}")
        return ocpi_response(cdr.data)
