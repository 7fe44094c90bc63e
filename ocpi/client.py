"""Our OCPI client towards a partner: authenticated requests through the outbound seam, envelope parsing,
message logging, and page walking that survives broken `Link` headers."""

from __future__ import annotations

import base64
import logging
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from django.conf import settings

from emsp import outbound
from emsp.models import Partner
from ocpi.models import OcpiMessage
from ocpi.normalize import unwrap_list_payload
from ocpi.redact import log_body, storable

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
_LINK_NEXT = re.compile(r'<\s*([^>]+?)\s*>\s*;[^,]*rel\s*=\s*"?next"?', re.IGNORECASE)
# Modules without routing headers (transport §"Message Routing": credentials, versions, hubclientinfo).
_CONFIGURATION_MODULES = {"versions", "credentials", "hubclientinfo"}


class OcpiClientError(Exception):
    """A call to a partner failed: no answer, an HTTP error, or an OCPI status outside 1xxx."""

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        ocpi_status: int | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.ocpi_status = ocpi_status
        self.data = data


class OcpiAuthError(OcpiClientError):
    """The partner refused our token: 401, or 403 from partners that use it where 401 is due."""


@dataclass
class OcpiReply:
    http_status: int
    status_code: int | None
    data: Any
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def encode_token(token: str, use_base64: bool) -> str:
    return base64.b64encode(token.encode()).decode() if use_base64 else token


class OcpiClient:
    """Talks to one partner (or, during registration, to a URL with a Token A)."""

    def __init__(
        self,
        partner: Partner | None = None,
        *,
        token: str | None = None,
        use_base64: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        self.partner = partner
        self.token = token if token is not None else (partner.outgoing_token if partner else "")
        self.use_base64 = use_base64 if use_base64 is not None else (partner.outgoing_token_base64 if partner else True)
        self.timeout = timeout

    # -- single requests -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        module: str,
        json: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> OcpiReply:
        if params:
            url = _with_params(url, params)
        headers = {"Authorization": f"Token {encode_token(self.token, self.use_base64)}"}
        if module not in _CONFIGURATION_MODULES and self.partner is not None:
            headers.update(
                {
                    "OCPI-from-country-code": settings.OCPI_COUNTRY_CODE,
                    "OCPI-from-party-id": settings.OCPI_PARTY_ID,
                    "OCPI-to-country-code": self.partner.country_code,
                    "OCPI-to-party-id": self.partner.party_id,
                }
            )
        request_id = str(uuid.uuid4())
        try:
            response = outbound.send(
                method,
                url,
                json=json,
                headers=headers,
                timeout=timeout or self.timeout,
                request_id=request_id,
            )
        except outbound.OutboundError as exc:
            self._log(method, url, module, None, None, request_id, "", json, b"", str(exc), None)
            raise OcpiClientError(f"{method} {url}: {exc}") from exc
        reply = _parse_reply(response)
        self._log(
            method,
            url,
            module,
            response.status,
            reply.status_code,
            request_id,
            response.correlation_id,
            json,
            response.content,
            "",
            response.elapsed_ms,
        )
        if response.status in (401, 403):
            raise OcpiAuthError(
                f"{method} {url}: HTTP {response.status}",
                http_status=response.status,
                ocpi_status=reply.status_code,
            )
        if response.status >= 400:
            raise OcpiClientError(
                f"{method} {url}: HTTP {response.status} {reply.message}".strip(),
                http_status=response.status,
                ocpi_status=reply.status_code,
                data=reply.data,
            )
        if reply.status_code is not None and not 1000 <= reply.status_code < 2000:
            raise OcpiClientError(
                f"{method} {url}: OCPI {reply.status_code} {reply.message}".strip(),
                http_status=response.status,
                ocpi_status=reply.status_code,
                data=reply.data,
            )
        return reply

    def get(
        self, url: str, *, module: str, params: dict[str, str] | None = None, timeout: float | None = None
    ) -> OcpiReply:
        return self.request("GET", url, module=module, params=params, timeout=timeout)

    def _log(
        self,
        method: str,
        url: str,
        module: str,
        http_status: int | None,
        ocpi_status: int | None,
        request_id: str,
        correlation_id: str,
        request_json: Any,
        response_body: bytes,
        error: str,
        duration_ms: int | None,
    ) -> None:
        body = orjson.dumps(request_json) if request_json is not None and settings.OCPI_LOG_BODIES else b""
        OcpiMessage.objects.create(
            partner=self.partner if self.partner is not None and self.partner.pk else None,
            direction=OcpiMessage.Direction.OUT,
            method=method,
            url=storable(url[:500]),
            module=module,
            http_status=http_status,
            ocpi_status=ocpi_status,
            request_id=request_id,
            correlation_id=correlation_id,
            duration_ms=duration_ms,
            request_body=log_body(body, module),
            response_body=log_body(response_body, module) if settings.OCPI_LOG_BODIES else "",
            error=storable(error[:2000]),
        )

    # -- lists ---------------------------------------------------------------------------------

    def iter_pages(
        self, url: str, *, module: str, params: dict[str, str] | None = None, timeout: float | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Walk a paginated list (transport §"Pagination"). Follows `Link: rel="next"` when it is usable;
        otherwise (missing while `X-Total-Count` says there is more, garbage, or another host) continues by
        offset/limit. Stops on an empty page or when the total is reached."""
        base_params = dict(params or {})
        offset = int(base_params.get("offset", 0))
        next_url: str | None = _with_params(url, base_params)
        seen_urls: set[str] = set()
        for _ in range(MAX_PAGES):
            assert next_url is not None
            seen_urls.add(next_url)
            reply = self.request("GET", next_url, module=module, timeout=timeout)
            items = unwrap_list_payload(reply.data)
            yield items
            if not items:
                return
            offset += len(items)
            total = _int_header(reply, "X-Total-Count")
            link = _next_link(reply.header("Link"), url)
            if link and link not in seen_urls:
                next_url = link
                continue
            if total is None or offset >= total:
                return
            limit = _int_header(reply, "X-Limit") or len(items)
            next_url = _with_params(url, {**base_params, "offset": str(offset), "limit": str(limit)})
            if next_url in seen_urls:
                return
        log.warning("stopped walking %s after %d pages", url, MAX_PAGES)


def _parse_reply(response: outbound.OutboundResponse) -> OcpiReply:
    """Lenient in: an envelope is expected, but a bare JSON document (some partners) is taken as `data`."""
    data: Any = None
    status_code: int | None = None
    message = ""
    if response.content.strip():
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            body = None
            message = response.content[:200].decode("utf-8", "replace")
        if isinstance(body, dict) and "status_code" in body:
            raw_code = body.get("status_code")
            try:
                status_code = int(raw_code) if raw_code is not None else None
            except (TypeError, ValueError):
                status_code = None
            data = body.get("data")
            message = str(body.get("status_message") or "")
        elif body is not None:
            data = body
    return OcpiReply(
        http_status=response.status,
        status_code=status_code,
        data=data,
        headers=response.headers,
        message=message,
    )


def _int_header(reply: OcpiReply, name: str) -> int | None:
    value = reply.header(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _next_link(header: str | None, base_url: str) -> str | None:
    """The next-page URL from a `Link` header, if it is an absolute http(s) URL on the list's own host."""
    if not header:
        return None
    match = _LINK_NEXT.search(header)
    if not match:
        return None
    link = match.group(1)
    parts, base = urlsplit(link), urlsplit(base_url)
    if parts.scheme not in ("http", "https") or parts.netloc != base.netloc:
        return None
    return link


def _with_params(url: str, params: dict[str, str]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
