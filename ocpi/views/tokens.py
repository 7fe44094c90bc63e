"""Tokens sender (mod_tokens §"Sender interface"): our tokens as a paginated list, and real-time
authorization at POST {token_uid}/authorize[?type=...]."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request

from emsp.models import Token
from emsp.services import tokens
from ocpi import transport
from ocpi.normalize.values import PLACE_ID_MAX
from ocpi.openapi import PAGINATION_PARAMETERS, TOKEN_AUTH, error_response, json_body, list_of, ref, response
from ocpi.rendering import token_as_ocpi
from ocpi.transport import OcpiError, OcpiView, ocpi_response, paginated_response

TOKEN_TYPES = {t.value for t in Token.Type}
# 2.1.1 TokenType is RFID or OTHER, and our app and ad-hoc tokens travel there as OTHER (ocpi/versions/v211.py).
V211_OTHER = tuple(sorted(TOKEN_TYPES - {Token.Type.RFID}))


class TokenListView(OcpiView):
    module = "tokens"

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_tokens_list",
        summary="Our tokens, paginated (Link, X-Total-Count, X-Limit)",
        parameters=PAGINATION_PARAMETERS,
        responses={200: response(list_of("Token"))},
        auth=TOKEN_AUTH,
    )
    def get(self, request: Request) -> HttpResponse:
        tokens = Token.objects.select_related("driver").prefetch_related("allowed_partners")
        return paginated_response(request, tokens, lambda token: token_as_ocpi(token, self.partner))


class TokenAuthorizeView(OcpiView):
    """Real-time authorization. A legacy token's uid may hold a `/` (sent as %2F): its own route (ocpi/urls.py)
    serves it with ids_may_hold_a_slash set."""

    module = "tokens"
    ocpi_version = "2.2.1"  # served in 2.1.1 and 2.3.0 too (ocpi/versions/wire.py::versioned sets it)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if self.ids_may_hold_a_slash:
            _refuse_an_encoded_authorize(request)

    @extend_schema(
        tags=["OCPI"],
        operation_id="ocpi_token_authorize",
        summary="Real-time authorization",
        parameters=[OpenApiParameter("type", type=str, location=OpenApiParameter.QUERY, enum=sorted(TOKEN_TYPES))],
        request=json_body(ref("LocationReferences")),
        responses={
            200: response(ref("AuthorizationInfo")),
            404: error_response("Unknown token (OCPI 2004)"),
        },
        auth=TOKEN_AUTH,
    )
    def post(self, request: Request, token_uid: str) -> HttpResponse:
        # mod_tokens: `type` "Default if omitted: RFID" (2.1.1 and 2.3.0 alike): an APP_USER token whose uid an RFID
        # reader could read is not authorized by a request without a type.
        token_type = _sent_type(request) or Token.Type.RFID
        if token_type not in TOKEN_TYPES:
            if self.ocpi_version == "2.3.0":
                # 2.3.0 TokenType is an OpenEnum: EMAID (Plug & Charge) or a value of the CPO's own is a valid
                # request for a token we don't have (we issue no EMAID tokens, and a Plug & Charge contract we
                # never provisioned is not one of ours to authorize by its contract id).
                raise OcpiError(transport.UNKNOWN_TOKEN, "Unknown token", 404)
            raise OcpiError(transport.INVALID_PARAMETERS, f"type must be one of {sorted(TOKEN_TYPES)}")
        references = location_references(self.body())
        try:
            result = tokens.token_authorize(
                uid=token_uid,
                token_type=V211_OTHER if (self.ocpi_version, token_type) == ("2.1.1", "OTHER") else token_type,
                partner=self.partner,
                location_references=references,
                party=self.routed_party(),
            )
        except tokens.UnknownToken as exc:
            # mod_tokens: unknown token → HTTP 404 with OCPI 2004 and no data (ocpi/ocpi#528).
            raise OcpiError(transport.UNKNOWN_TOKEN, "Unknown token", 404) from exc
        data = {
            "allowed": result.allowed,
            # Its own validity, not this partner's restriction: `allowed` (NOT_ALLOWED) says that one.
            "token": token_as_ocpi(result.token),
            "authorization_reference": result.authorization_reference,
        }
        if result.location is not None:
            data["location"] = result.location
        return ocpi_response(data)


def _refuse_an_encoded_authorize(request: Request) -> None:
    """On the route of a uid holding `/`: every %2F of the path as the server received it (gunicorn's RAW_URI,
    uWSGI's REQUEST_URI) is in the uid, the path ending with a real `/authorize`. `tokens/A%2FB%2Fauthorize` is
    no authorization of a token `A/B`, but a path naming no action (2001, as transport.refuse_an_encoded_slash
    answers it). Where the server gives no raw path, nothing is checked."""
    raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
    if raw and not raw.partition("?")[0].endswith("/authorize"):
        raise OcpiError(transport.INVALID_PARAMETERS, "A token uid holding '/' (%2F) must be followed by /authorize")


def _sent_type(request: Request) -> str:
    """The `type` of an authorization, upper-cased ("" when none). 2.1.1's parameter table names it `token_type`
    (its URL example `type`): read too, or a 2.1.1 CPO following the table is answered for RFID."""
    params = request.query_params
    return (params.get("type") or params.get("token_type") or "").strip().upper()


def location_references(body: Any) -> dict[str, Any] | None:
    """mod_tokens LocationReferences {location_id CiString(36), evse_uids CiString(36)[]}: exactly that, or 2001.
    Ids up to 39 characters are taken (string(39) in 2.1.1, and the places we store)."""
    if body is None or body == {}:
        return None
    if not isinstance(body, dict):
        raise OcpiError(transport.INVALID_PARAMETERS, "LocationReferences object expected")
    location_id = body.get("location_id")
    if not isinstance(location_id, str) or not 1 <= len(location_id.strip()) <= PLACE_ID_MAX:
        raise OcpiError(
            transport.INVALID_PARAMETERS, f"location_id: a string of at most {PLACE_ID_MAX} characters is required"
        )
    evse_uids = body.get("evse_uids")
    if evse_uids is None:
        evse_uids = []
    if not isinstance(evse_uids, list) or len(evse_uids) > 1000:
        raise OcpiError(transport.INVALID_PARAMETERS, "evse_uids: a list of EVSE uids expected")
    for i, uid in enumerate(evse_uids):
        readable = isinstance(uid, str) and 1 <= len(uid.strip()) <= PLACE_ID_MAX and transport.is_printable_text(uid)
        if not readable:
            raise OcpiError(
                transport.INVALID_PARAMETERS, f"evse_uids[{i}]: an EVSE uid of at most {PLACE_ID_MAX} characters"
            )
    if not transport.is_printable_text(location_id):
        raise OcpiError(transport.INVALID_PARAMETERS, "location_id: printable characters only")
    return {"location_id": location_id.strip(), "evse_uids": [uid.strip() for uid in evse_uids]}
