"""A WSGI fast lane in front of Django for POST /beckn/{action}, the busiest door of the platform.

Through Django a Beckn ACK crossed eleven middlewares, URL resolving and DRF's request wrapping before the
answer (0.45 ms of 1.29 ms in its profile, docs/benchmarks.md). The answer itself needs none of it: no session,
no CSRF (the view is exempt), no login. Here the same answer (beckn/ack.py's `answer`, which the DRF view also
gives) is wrapped in what those middlewares would add to it:

- the host is checked against ALLOWED_HOSTS and the HTTPS redirect applies (emsp/lanes.py): either one not
  passing hands the request to Django, which answers it as always;
- request and correlation ids are read or made, set for the logs and the queued task, and echoed
  (emsp/middleware.py);
- the security headers come from Django's own middlewares (SecurityMiddleware, XFrameOptionsMiddleware), asked
  once per process: they are the same for every answer but for HSTS, which depends on HTTPS;
- the request is counted for /metrics under the same route label, and the ACK or NACK per action;
- Django's request_started / request_finished signals fire (database connections are kept and closed as for
  any request), and a 4xx is logged as Django's handler logs it.

tests/beckn/test_ack_lane.py holds the two paths to the same status, body and headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers.wsgi import WSGIRequest
from django.utils.log import log_response

from beckn import ack, metrics
from beckn.error_answers import server_error_answer
from beckn.parsing import ACTIONS
from beckn.views import BecknActionView, http_response
from emsp.lanes import STATUS_LINES, EnvironHeaders, FrontDoor
from emsp.metrics import count_request
from emsp.middleware import correlation_id_var, request_id_var, request_ids

log = logging.getLogger(__name__)

PREFIX = "/beckn/"
ENDPOINT = "/beckn/<str:action>"  # the route label Django's path gives (emsp/metrics.py endpoint_label)
ALLOW = ", ".join(BecknActionView().allowed_methods)  # the Allow header DRF's view answers with


class _Body(list[bytes]):
    """The answer's bytes; closing it ends the request as closing Django's response does (request_finished)."""

    def close(self) -> None:
        signals.request_finished.send(sender=AckLane)


class AckLane:
    """Wraps the Django WSGI application; answers POST /beckn/{action} for a known action itself."""

    def __init__(self, django_app: Callable[..., Iterable[bytes]]) -> None:
        self.django_app = django_app
        self.front_door = FrontDoor()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith(PREFIX) or path[7:] not in ACTIONS:
            return self.django_app(environ, start_response)
        request = WSGIRequest(environ)
        if self.front_door.turns_away(request):  # a host not allowed, the HTTPS redirect: Django answers, as always
            return self.django_app(environ, start_response)
        return self._answer(request, path[7:], environ, start_response)

    def _answer(
        self, request: WSGIRequest, action: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        signals.request_started.send(sender=self.__class__, environ=environ)
        headers = EnvironHeaders(environ)
        request_id, correlation_id = request_ids(headers)
        t1 = request_id_var.set(request_id)
        t2 = correlation_id_var.set(correlation_id)
        try:
            try:
                answer = ack.answer(action, request.read(settings.BECKN_MAX_BODY_BYTES + 1), headers)
            except (
                Exception
            ):  # Django's answer to a view that raised (beckn/error_answers.py), logged with its traceback
                log.exception("beckn %s failed before its answer", action)
                answer = server_error_answer()
            if answer.nack_code is None:
                metrics.count_ack(action)
            else:
                metrics.count_nack(action, answer.nack_code)
        finally:
            request_id_var.reset(t1)
            correlation_id_var.reset(t2)
        if answer.status >= 400:  # logged as Django's handler logs a 4xx or 5xx (after the ids' middleware)
            response = http_response(answer)
            log_response("%s: %s", response.reason_phrase, request.path, response=response, request=request)
        try:
            count_request(request, answer.status, time.perf_counter() - started, ENDPOINT)
        except Exception:  # counting must never cost the answer
            log.exception("could not count a request")
        response_headers = [
            ("Content-Type", "application/json"),
            *answer.headers.items(),
            ("Content-Length", str(len(answer.body))),
            ("X-Request-ID", request_id),
            ("X-Correlation-ID", correlation_id),
            *self.front_door.static_headers(request, ALLOW),
        ]
        start_response(STATUS_LINES[answer.status], response_headers)
        return _Body([answer.body])
