"""Requests handed straight to a WSGI application (a lane of emsp.wsgi, a Django handler), as gunicorn would."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from django.core import signals
from django.db import close_old_connections
from django.test import RequestFactory


@contextlib.contextmanager
def connections_kept() -> Iterator[None]:
    """As Django's test client does: a test's transaction must outlive the request's signals."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def call_wsgi(
    app: Callable[..., Any],
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> tuple[str, list[tuple[str, str]], bytes]:
    """The status line, headers and body `app` answers a JSON request with."""
    request = RequestFactory().generic(
        method, path, data=body, content_type="application/json", headers=headers or {}, **extra
    )
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(status=status, headers=response_headers)

    with connections_kept():
        result = app(request.environ, start_response)
        try:
            content = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
    return seen["status"], seen["headers"], content
