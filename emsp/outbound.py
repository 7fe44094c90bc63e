"""The one seam for outbound HTTP: timeouts, no redirects, no private targets unless allowed, request ids.

Everything that talks to a partner (OCPI client, Beckn callbacks, registry lookups) goes through `send()`.
Tests patch `emsp.outbound.send`, or run a real peer process on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from django.conf import settings

from emsp.middleware import correlation_id_var

log = logging.getLogger(__name__)

_session = requests.Session()
_session.trust_env = False  # no proxies from the environment: the targets are partners, not the web


class OutboundError(Exception):
    """The request could not be made or got no HTTP answer (refused target, DNS, connect, timeout)."""


class ForbiddenTarget(OutboundError):
    """A partner-supplied URL points at a private or loopback address and that is not allowed here."""


@dataclass
class OutboundResponse:
    status: int
    headers: dict[str, str]
    content: bytes
    elapsed_ms: int
    request_id: str
    correlation_id: str
    request_body: bytes = b""
    _json: Any = field(default=None, repr=False)

    def json(self) -> Any:
        if self._json is None:
            self._json = orjson.loads(self.content)
        return self._json

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast


@lru_cache(maxsize=1024)
def _resolve(host: str) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise OutboundError(f"cannot resolve {host}: {exc}") from exc
    return tuple(sorted({info[4][0] for info in infos}))


def check_target(url: str) -> None:
    """Refuse URLs that are not http(s) or that resolve to a private address (SSRF, OWASP API7)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ForbiddenTarget(f"not an http(s) URL: {url!r}")
    if settings.ALLOW_PRIVATE_NETWORKS:
        return
    for address in _resolve(parts.hostname):
        if _is_private(address):
            raise ForbiddenTarget(f"{parts.hostname} resolves to a private address ({address})")


def send(
    method: str,
    url: str,
    *,
    json: Any = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    request_id: str | None = None,
    correlation_id: str | None = None,
) -> OutboundResponse:
    """Make one HTTP request. Raises OutboundError when no HTTP answer came back; any status is returned."""
    check_target(url)
    request_id = request_id or str(uuid.uuid4())
    inherited = correlation_id_var.get()
    correlation_id = correlation_id or (inherited if inherited != "-" else request_id)
    all_headers = {
        "X-Request-ID": request_id,
        "X-Correlation-ID": correlation_id,
        "User-Agent": "open-emsp/0.1",
    }
    if json is not None:
        body = orjson.dumps(json)
        all_headers["Content-Type"] = "application/json"
    all_headers.update(headers or {})
    read_timeout = timeout if timeout is not None else settings.OUTBOUND_TIMEOUT_SECONDS
    started = time.monotonic()
    try:
        response = _session.request(
            method,
            url,
            data=body,
            headers=all_headers,
            timeout=(min(settings.OUTBOUND_CONNECT_TIMEOUT_SECONDS, read_timeout), read_timeout),
            allow_redirects=False,
        )
    except requests.RequestException as exc:
        log.warning("%s %s failed: %s", method, url, exc)
        raise OutboundError(f"{type(exc).__name__}: {exc}") from exc
    elapsed_ms = int((time.monotonic() - started) * 1000)
    log.info("%s %s -> %s in %d ms", method, url, response.status_code, elapsed_ms)
    return OutboundResponse(
        status=response.status_code,
        headers=dict(response.headers),
        content=response.content,
        elapsed_ms=elapsed_ms,
        request_id=request_id,
        correlation_id=correlation_id,
        request_body=body or b"",
    )
