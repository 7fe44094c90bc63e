"""OCPI requests through Django without the staff console's middlewares.

Every OCPI request crossed the session, CSRF, authentication, messages, login-lockout (django-axes) and
static-file (WhiteNoise) middlewares, none of which an OCPI view uses: each authenticates its partner by the
`Authorization: Token` header (ocpi/transport.py OcpiView), keeps no session, is CSRF-exempt and serves no static
file. In the profile of 2,000 EVSE PATCHes through Django those six cost about a tenth of the request's CPU.

Requests under /ocpi/ are handed to a second Django handler built with OCPI_MIDDLEWARE (emsp/settings.py): the
same URLs, views, error handling, signals and database handling, the same middlewares that shape an answer (probes,
metrics, security headers and the HTTPS redirect, request ids, CommonMiddleware, X-Frame-Options), so an answer
is the same byte for byte (tests/ocpi/test_wsgi_lane.py).

The EVSE status PATCH, a CPO's live availability and by far the busiest OCPI request, and the real-time
authorization a charger waits on go one step further: their views are called straight from here (`DirectRoute`),
without Django's URL resolving and middleware chain, which were a third of a PATCH's CPU. Each route is Django's
own (its pattern turned into a regular expression when the lane is made, its view function the one the URL patterns
hold), and what the middlewares do around a view is done here with their own code (emsp/lanes.py): a request any
of them would turn away goes to the OCPI handler instead.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest, get_script_name
from django.db import connections
from django.http import HttpResponse
from django.urls import is_valid_path, resolve, set_script_prefix, set_urlconf
from django.utils.log import log_response

from emsp.lanes import EnvironHeaders, FrontDoor
from emsp.metrics import count_request
from emsp.middleware import correlation_id_var, request_id_var, request_ids

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class DirectRoute:
    """One URL pattern whose view the lane calls itself: Django's route, as a regular expression, and its view."""

    method: str
    pattern: re.Pattern[str]
    view: Callable[..., HttpResponse]
    label: str  # the route label /metrics counts it under (emsp/metrics.py endpoint_label)


# Paths Django resolves to the views called directly, one sample each (any ids): the EVSE status PATCH and the
# real-time authorization, the two requests CPOs send most and wait on.
DIRECT_ROUTES = (
    ("PATCH", "/ocpi/emsp/2.2.1/locations/XX/XXX/L/E"),
    ("POST", "/ocpi/emsp/2.2.1/tokens/T/authorize"),
)
_CONVERTED = re.compile(r"<str:(\w+)>")
_ID_HEADERS = ("x-request-id", "x-correlation-id")  # RequestIdMiddleware sets them over the view's


def direct_route(method: str, sample: str) -> DirectRoute:
    """The route Django resolves `sample` to. Only <str:…> parts (anything but a slash), as Django matches them;
    a route that a trailing slash would turn into another (CommonMiddleware's redirect of a 404) is refused, and
    so is any route while a database wraps each request in a transaction (ATOMIC_REQUESTS: Django's handler
    does that, this lane does not)."""
    match = resolve(sample)
    route = match.route
    parts = _CONVERTED.split(route)
    atomic = any(connections[alias].settings_dict.get("ATOMIC_REQUESTS") for alias in connections)
    if "<" in "".join(parts[::2]) or is_valid_path(sample + "/") or atomic:
        raise ValueError(f"{route} can't be served directly")
    expression = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return DirectRoute(method, re.compile("/" + expression), match.func, "/" + route)


def _direct_routes() -> list[DirectRoute]:
    """The routes served directly; none where one can't be (each request then goes to the OCPI handler)."""
    try:
        return [direct_route(method, sample) for method, sample in DIRECT_ROUTES]
    except ValueError:
        log.warning("OCPI requests all go through Django's handler: a direct route can't be served", exc_info=True)
        return []


class OcpiLane:
    """WSGI wrapper (settings.WSGI_WRAPPERS): /ocpi/... to the OCPI handler (the DIRECT_ROUTES straight to their
    views), everything else to `application`."""

    def __init__(self, application: WsgiApp) -> None:
        self.application = application
        self.ocpi = OcpiHandler()
        self.front_door = FrontDoor()
        self.direct = _direct_routes()
        self.direct_methods = {route.method for route in self.direct}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("PATH_INFO", "").startswith(PREFIX):
            return self.application(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method in self.direct_methods:
            request = WSGIRequest(environ)
            for route in self.direct:
                match = route.pattern.fullmatch(request.path_info) if route.method == method else None
                if match is not None and not self.front_door.turns_away(request):
                    return self._direct(route, match.groupdict(), request, environ, start_response)
        return self.ocpi(environ, start_response)

    def _direct(
        self,
        route: DirectRoute,
        kwargs: dict[str, str],
        request: WSGIRequest,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
    ) -> Iterable[bytes]:
        """The view's answer, with what Django's handler and the OCPI middlewares would do around it."""
        set_script_prefix(get_script_name(environ))  # as Django's WSGIHandler
        signals.request_started.send(sender=OcpiHandler, environ=environ)
        started = time.perf_counter()
        # Headers read by name from the environ, where Django's HttpHeaders parses every one of them first.
        request.headers = EnvironHeaders(environ)  # type: ignore[assignment]
        request_id, correlation_id = request_ids(request.headers)  # RequestIdMiddleware
        request.request_id = request_id  # type: ignore[attr-defined]
        request.correlation_id = correlation_id  # type: ignore[attr-defined]
        t1 = request_id_var.set(request_id)
        t2 = correlation_id_var.set(correlation_id)
        set_urlconf(settings.ROOT_URLCONF)  # as Django's BaseHandler, from here on
        try:
            try:
                response = route.view(request, **kwargs)
            except Exception as exc:  # what Django's handler makes of an exception that escapes a view
                response = response_for_exception(request, exc)
        finally:
            request_id_var.reset(t1)
            correlation_id_var.reset(t2)
        if response.status_code >= 400:  # logged as Django's handler logs a 4xx or 5xx (after the ids' middleware)
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        try:  # MetricsMiddleware
            count_request(request, response.status_code, time.perf_counter() - started, route.label)
        except Exception:  # counting must never cost the answer
            log.exception("could not count a request")
        response._resource_closers.append(request.close)  # as Django's BaseHandler
        response._handler_class = OcpiHandler  # closing the response sends request_finished, as Django's does
        # The middlewares' headers as they set them: the ids replace the view's, the others only where the view set
        # none, Content-Length only on a response that is not streamed (CommonMiddleware).
        own = {k.lower(): (k, v) for k, v in response.items()}
        headers = [header for name, header in own.items() if name not in _ID_HEADERS]
        if not response.streaming and "content-length" not in own:
            headers.append(("Content-Length", str(len(response.content))))
        headers += [("X-Request-ID", request_id), ("X-Correlation-ID", correlation_id)]
        headers += [(k, v) for k, v in self.front_door.static_headers(request) if k.lower() not in own]
        headers += [("Set-Cookie", c.output(header="")) for c in response.cookies.values()]
        start_response(f"{response.status_code} {response.reason_phrase}", headers)
        return response
