"""Beckn's answers for a BAP's POST below /beckn/ that reaches no action of ours, and for a failure outside a
view (emsp/error_views.py): a NACK with its error (beckn/ack.py's, as the actions answer), never an HTML page.
The pages people open below /beckn/ (tracking, support, terms) are GETs, which keep Django's page."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from beckn import ack
from beckn.errors import ACTION_NOT_APPLICABLE, BUSINESS_ERROR
from beckn.views import http_response
from emsp.error_views import ProtocolErrors


def not_found(request: HttpRequest) -> HttpResponse | None:
    if request.method != "POST":
        return None
    message = f"{request.path[:200]} is not a Beckn endpoint of ours"
    return http_response(ack.nack({"code": ACTION_NOT_APPLICABLE, "message": message}, 404))


def server_error_answer() -> ack.Answer:
    """The NACK for a POST that failed in our code: Django's (through server_error below) and the WSGI fast
    lane's (beckn/ack_lane.py) alike, so a BAP sees one answer whichever path took its request."""
    return ack.nack({"code": BUSINESS_ERROR, "message": "Internal error: please retry"}, 500)


def server_error(request: HttpRequest) -> HttpResponse | None:
    if request.method != "POST":
        return None
    return http_response(server_error_answer())


ERRORS = ProtocolErrors("/beckn/", not_found, server_error)
