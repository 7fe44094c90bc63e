"""The simulator's HTTP plumbing: the framework-free request and reply that server.App routes, and the
http.server adapter that turns sockets into them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from .common import dumps, loads, log


class BadJson(Exception):
    """The request body is not valid JSON (HTTP 400)."""


@dataclass
class Request:
    """A parsed inbound HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    client_ip: str

    def q(self, name: str) -> str | None:
        """First value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        """The JSON body (None when empty)."""
        if not self.body.strip():
            return None
        try:
            return loads(self.body)
        except ValueError as exc:
            raise BadJson(str(exc)) from exc


@dataclass
class Reply:
    """An outbound HTTP response: status, JSON body and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class Application(Protocol):
    """What the HTTP server hands each request to (server.App)."""

    def handle(self, req: Request) -> Reply: ...


class Handler(BaseHTTPRequestHandler):
    """Adapter from http.server to the Application (server.App); one log line per request."""

    server_version = "cposim/1.0"
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: with Nagle's algorithm the body waited for the client's delayed ACK
    # (40 ms on Linux) on every keep-alive request. A CPO's real server answers at once.
    disable_nagle_algorithm = True

    def _dispatch(self) -> None:
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        req = Request(self.command, split.path, parse_qs(split.query), self.headers, body, self.client_address[0])
        app: Application = self.server.app  # type: ignore[attr-defined]
        reply = app.handle(req)
        payload = dumps(reply.body) if reply.body is not None else b""
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        ms = (time.monotonic() - started) * 1000
        log(
            f'IN {self.client_address[0]} "{self.command} {self.path}" {reply.status} {ms:.0f}ms '
            f"rid={reply.headers.get('X-Request-ID')}"
        )

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log (we log in _dispatch)."""
