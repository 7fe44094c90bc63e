"""A stand-in for a partner behind the outbound seam (`emsp.outbound.send`), for unit tests.

Routes (method, url) to canned answers and records every request. End-to-end tests use the real
simulator process instead.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from emsp import outbound
from ocpi.normalize import format_ocpi_datetime

Handler = Callable[[dict[str, Any]], tuple[int, Any, dict[str, str]]]


def envelope(data: Any = None, status_code: int = 1000) -> dict[str, Any]:
    from django.utils import timezone

    body: dict[str, Any] = {"status_code": status_code, "timestamp": format_ocpi_datetime(timezone.now())}
    if data is not None:
        body["data"] = data
    return body


@dataclass
class FakePeer:
    routes: dict[tuple[str, str], Handler | tuple[int, Any]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    only_encoding: str | None = None  # "raw" or "base64": refuse the other way of sending the token
    refusal_status: int = 401  # some partners answer 403 where 401 is due

    def route(self, method: str, url: str, answer: Handler | tuple[int, Any]) -> None:
        self.routes[(method.upper(), url)] = answer

    def send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> outbound.OutboundResponse:
        outbound.check_target(url)
        headers = headers or {}
        parsed = json if json is not None else (orjson.loads(body) if body else None)
        call = {"method": method.upper(), "url": url, "json": parsed, "body": body, "headers": headers}
        self.calls.append(call)
        if self.only_encoding is not None:
            token = headers.get("Authorization", "").removeprefix("Token ")
            try:
                is_base64 = base64.b64encode(base64.b64decode(token, validate=True)).decode() == token
            except ValueError:
                is_base64 = False
            if is_base64 != (self.only_encoding == "base64"):
                return self._response(self.refusal_status, envelope(status_code=2000), {})
        path_only = url.split("?", 1)[0]
        answer = self.routes.get((method.upper(), url)) or self.routes.get((method.upper(), path_only))
        if answer is None:
            return self._response(404, envelope(status_code=2000), {})
        if callable(answer):
            status, data, extra = answer(call)
        else:
            status, data = answer
            extra = {}
        return self._response(status, data, extra)

    @staticmethod
    def _response(status: int, data: Any, headers: dict[str, str]) -> outbound.OutboundResponse:
        content = data if isinstance(data, bytes) else orjson.dumps(data)
        return outbound.OutboundResponse(
            status=status, headers=headers, content=content, elapsed_ms=1, request_id="r", correlation_id="c"
        )

    def requests_to(self, url_part: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if url_part in c["url"]]
