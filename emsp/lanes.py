"""What the WSGI lanes in front of Django's middleware chain share (beckn/ack_lane.py, ocpi/wsgi_lane.py).

A lane answers a hot request without Django's URL resolving and middleware chain, and must answer it as that chain
would. `FrontDoor` gives it the chain's two halves that do not depend on the request's view:

- before the view, the checks that can turn a request away (SecurityMiddleware's HTTPS redirect, CommonMiddleware's
  host and user-agent checks and its www redirect): when one would, the lane hands the request to Django, which
  answers it as always;
- after it, the headers every answer gets (SecurityMiddleware's and XFrameOptionsMiddleware's), asked of those
  middlewares once per process: they are the same for every answer but for HSTS, which depends on HTTPS.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware
from django.middleware.security import SecurityMiddleware

STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in HTTPStatus}


def _unused(request: Any) -> None:  # the middlewares below are only asked for their request/response hooks
    return None


class EnvironHeaders(Mapping[str, str]):
    """Request headers read straight from the WSGI environ by name (what Django's HttpHeaders gives, without
    building a dictionary of every header for the two or three the answer reads)."""

    __slots__ = ("environ",)

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ

    def __getitem__(self, name: str) -> str:
        key = "HTTP_" + name.upper().replace("-", "_")
        if key == "HTTP_CONTENT_TYPE" or key == "HTTP_CONTENT_LENGTH":
            key = key[5:]
        return self.environ[key]

    def __iter__(self) -> Iterator[str]:
        for key in self.environ:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)


class FrontDoor:
    """Django's own SecurityMiddleware, CommonMiddleware and XFrameOptionsMiddleware, asked for their checks and
    headers only. Built on first use: settings are read when the middlewares are made."""

    def __init__(self) -> None:
        self._security: SecurityMiddleware | None = None
        self._common: CommonMiddleware | None = None
        self._frame: XFrameOptionsMiddleware | None = None
        self._static: dict[tuple[bool, str | None], list[tuple[str, str]]] = {}

    def _built(self) -> tuple[SecurityMiddleware, CommonMiddleware, XFrameOptionsMiddleware]:
        if self._security is None or self._common is None or self._frame is None:
            self._security = SecurityMiddleware(_unused)
            self._common = CommonMiddleware(_unused)
            self._frame = XFrameOptionsMiddleware(_unused)
        return self._security, self._common, self._frame

    def turns_away(self, request: HttpRequest) -> bool:
        """Whether the middlewares would answer the request themselves (a host not in ALLOWED_HOSTS, the HTTPS
        redirect, a refused user agent, the www redirect): then the lane leaves it to Django."""
        security, common, _ = self._built()
        try:
            return security.process_request(request) is not None or common.process_request(request) is not None
        except Exception:  # DisallowedHost, or PermissionDenied for a refused user agent: Django answers them
            return True

    def static_headers(self, request: HttpRequest, allow: str | None = None) -> list[tuple[str, str]]:
        """What SecurityMiddleware and XFrameOptionsMiddleware add to every answer (and the Allow header a view
        gives, when `allow`), for plain HTTP and for HTTPS."""
        secure = request.is_secure()
        static = self._static.get((secure, allow))
        if static is None:
            security, _, frame = self._built()
            response = HttpResponse(b"", content_type="application/json")
            if allow is not None:
                response["Allow"] = allow
            response = security.process_response(request, frame.process_response(request, response))
            static = [(k, v) for k, v in response.items() if k not in ("Content-Type", "Content-Length")]
            self._static[(secure, allow)] = static
        return static
