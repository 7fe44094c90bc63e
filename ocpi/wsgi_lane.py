"""OCPI requests through Django without the staff console's middlewares.

Every OCPI request crossed the session, CSRF, authentication, messages, login-lockout (django-axes) and
static-file (WhiteNoise) middlewares, none of which an OCPI view uses: each authenticates its partner by the
`Authorization: Token` header (ocpi/transport.py OcpiView), keeps no session, is CSRF-exempt and serves no static
file. In the profile of 2,000 EVSE PATCHes through Django those six cost about a tenth of the request's CPU.

Requests under /ocpi/ are handed to a second Django handler built with OCPI_MIDDLEWARE (emsp/settings.py): the
same URLs, views, error handling, signals and database handling, the same middlewares that shape an answer (probes,
metrics, security headers and the HTTPS redirect, request ids, CommonMiddleware, X-Frame-Options), so an answer
is the same byte for byte (tests/ocpi/test_wsgi_lane.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

PREFIX = "/ocpi/"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


_building = threading.Lock()


@contextlib.contextmanager
def ocpi_middleware() -> Iterator[None]:
    """settings.MIDDLEWARE reads as OCPI_MIDDLEWARE while a handler loads its middlewares (Django's
    load_middleware reads that setting; it runs once, when the handler is made: at start-up, before any request
    is served). Also used by the tests' OCPI client, so every OCPI test runs on this middleware list."""
    with _building:
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.OCPI_MIDDLEWARE
        try:
            yield
        finally:
            settings.MIDDLEWARE = full


class OcpiHandler(WSGIHandler):
    """Django's WSGI handler with the middlewares of OCPI_MIDDLEWARE."""

    def load_middleware(self, is_async: bool = False) -> None:
        with ocpi_middleware():
            super().load_middleware(is_async)


class OcpiLane:
    """WSGI wrapper (settings.WSGI_WRAPPERS): /ocpi/... to the OCPI handler, everything else to `application`."""

    def __init__(self, application: WsgiApp) -> None:
        self.application = application
        self.ocpi = OcpiHandler()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(PREFIX):
            return self.ocpi(environ, start_response)
        return self.application(environ, start_response)
