"""Request and correlation ids: generated when absent, echoed on the response; every log line carries them
(emsp/logs.py), and so do the tasks queued and the outbound calls made meanwhile. And the console's refusal of
a NUL in its addresses."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Callable, Mapping

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
correlation_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("correlation_id", default="-")


def _clean(value: str | None) -> str | None:
    # Ids are echoed into headers and logs: keep them short and printable.
    if not value:
        return None
    value = value.strip()[:100]
    if not value or not (value.isascii() and value.isprintable()) or " " in value:
        return None
    return value


def request_ids(headers: Mapping[str, str]) -> tuple[str, str]:
    """The request's X-Request-ID and X-Correlation-ID (from its headers) when usable, else a new id for both."""
    request_id = _clean(headers.get("X-Request-ID")) or str(uuid.uuid4())
    return request_id, _clean(headers.get("X-Correlation-ID")) or request_id


class RequestIdMiddleware:
    """Reads X-Request-ID / X-Correlation-ID (OCPI transport §4.1.3), makes them when missing, echoes both."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id, correlation_id = request_ids(request.headers)
        request.request_id = request_id  # type: ignore[attr-defined]
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        t1 = request_id_var.set(request_id)
        t2 = correlation_id_var.set(correlation_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(t1)
            correlation_id_var.reset(t2)
        response["X-Request-ID"] = request_id
        response["X-Correlation-ID"] = correlation_id
        return response


class ConsoleQueryMiddleware:
    """A console list filter (a `field__lookup` parameter) holding a NUL is refused (400). The admin passes
    filter values straight to the database, and PostgreSQL refuses a NUL in text: `?status__exact=%00` on any
    list with a status filter was a server error. Other parameters reach forms, which answer with a form error."""

    PREFIX = "/admin/"

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(self.PREFIX) and "%00" in request.META.get("QUERY_STRING", ""):
            for name, values in request.GET.lists():
                if "__" in name and any("\x00" in value for value in values):
                    return HttpResponseBadRequest(
                        f"The console filter {name!r} can't contain a NUL character.", content_type="text/plain"
                    )
        return self.get_response(request)
