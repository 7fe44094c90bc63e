"""Beckn's answers for a BAP's POST below /beckn/ that reaches no action of ours, and for a failure outside a
view (emsp/error_views.py): a NACK with its error, never an HTML page. The pages people open below /beckn/
(tracking, support, terms) are GETs, which keep Django's page."""

from __future__ import annotations

import orjson
from django.http import HttpRequest, HttpResponse

from beckn.errors import ACTION_NOT_APPLICABLE, BUSINESS_ERROR
from emsp.error_views import ProtocolErrors


def _nack(code: str, message: str, status: int) -> HttpResponse:
    body = {"message": {"ack": {"status": "NACK"}}, "error": {"code": code, "message": message}}
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


def not_found(request: HttpRequest) -> HttpResponse | None:
    if request.method != "POST":
        return None
    return _nack(ACTION_NOT_APPLICABLE, f"{request.path[:200]} is not a Beckn endpoint of ours", 404)


def server_error(request: HttpRequest) -> HttpResponse | None:
    if request.method != "POST":
        return None
    return _nack(BUSINESS_ERROR, "Internal error: please retry", 500)


ERRORS = ProtocolErrors("/beckn/", not_found, server_error)
