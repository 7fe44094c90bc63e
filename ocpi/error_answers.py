"""OCPI's answers for a path below /ocpi/ that is no endpoint of ours, and for a failure outside a view
(emsp/error_views.py): the envelope with 2000 or 3000, never an HTML page (transport_and_format, *Response
format*: every response carries status_code and timestamp)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from emsp.error_views import ProtocolErrors
from ocpi import transport


def not_found(request: HttpRequest) -> HttpResponse:
    return transport.ocpi_response(
        status_code=transport.CLIENT_ERROR,
        message=f"No OCPI endpoint at {request.path[:200]} (the version details list ours)",
        http_status=404,
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return transport.ocpi_response(
        status_code=transport.SERVER_ERROR, message="Internal error: please retry", http_status=500
    )


ERRORS = ProtocolErrors("/ocpi/", not_found, server_error)
