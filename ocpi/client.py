"""Our OCPI client towards a partner: authenticated requests through the outbound seam, envelope parsing,
message logging, and page walking that survives broken `Link` headers.

A partner's URLs are used exactly as it gave them (a trailing slash kept, its own query string kept byte for
byte): `url_under` puts object ids below an endpoint URL and `with_params` adds query parameters. A reply
that is not an OCPI answer — a redirect, a body that is not JSON, JSON that is not a response envelope — is
a failed request (`OcpiReplyError`), never an empty success."""

from __future__ import annotations

import base64
import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode, urlsplit

import orjson
from django.conf import settings
from django.utils import timezone

from emsp import outbound
from emsp.models import Partner
from emsp.services import breakers
from ocpi import metrics
from ocpi.hub import CONFIGURATION_MODULES, Party, routing_headers
from ocpi.models import OcpiMessage
from ocpi.normalize import Rejected, unwrap_list_payload
from ocpi.redact import log_body, redact_tokens, storable
from ocpi.transport import MAX_BODY_DEPTH, nested_deeper_than

log = logging.getLogger(__name__)

MAX_PAGES = 10_000
# A `Link` header longer than this is not read (as if absent): a page names a next and perhaps a previous page,
# a few hundred characters. A regular expression over a hostile one (`<` and 2,000 spaces) took 12 s of CPU,
# holding the GIL so that no time limit could stop it.
MAX_LINK_HEADER = 8192


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


class OcpiCircuitOpen(OcpiClientError):
    """Not sent: the partner's circuit breaker for this module is open (emsp/services/breakers.py)."""

    def __init__(self, exc: breakers.CircuitOpen) -> None:
        super().__init__(str(exc))
        self.breaker = exc.breaker


class OcpiReplyError(OcpiClientError):
    """The partner answered, but not in OCPI: a redirect (we don't follow them: a partner's URLs are used as
    given), a body that is not JSON, or JSON without the response envelope's `status_code`."""


@dataclass
class OcpiReply:
    http_status: int
    status_code: int | None
    data: Any
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""
    problem: str = ""  # why the body is not an OCPI response envelope ("" when it is one)
    timestamp: str = ""  # the envelope's `timestamp`: the partner's clock when it answered (as sent, unparsed)

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
        to_party: Party | None = None,
    ) -> None:
        """`to_party`: the party behind a hub the requests are for (ocpi/hub.py); by default the partner's own."""
        self.partner = partner
        self.to_party = to_party
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
        guarded: bool = True,
    ) -> OcpiReply:
        """One request. `guarded` (functional modules of a stored partner): it goes through the partner's
        circuit breaker for `module` — refused at once while open, its outcome counted."""
        sent = self._start(method, url, module=module, json=json, params=params, timeout=timeout, guarded=guarded)
        return self._finish(sent, sent.send())

    def _start(
        self,
        method: str,
        url: str,
        *,
        module: str,
        json: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        guarded: bool = True,
    ) -> _Sending:
        """A request up to the wire: through the breaker (which may refuse it), with its headers and id."""
        if params:
            url = with_params(url, params)
        if not self.token:
            # No token, no call (a partner that unregistered: its token is gone). Sent as `Authorization: Token `,
            # whatever came back would have been taken as the partner's.
            raise OcpiClientError(f"{method} {url}: no token to send (the partner is not connected)")
        partner = self.partner
        breaker = (
            partner if guarded and partner is not None and partner.pk and module not in CONFIGURATION_MODULES else None
        )
        if breaker is not None:
            try:
                breakers.admit(breaker, module)
            except breakers.CircuitOpen as exc:
                raise OcpiCircuitOpen(exc) from exc
        headers = {"Authorization": f"Token {encode_token(self.token, self.use_base64)}"}
        headers.update(routing_headers(self.partner, module, self.to_party))
        return _Sending(method, url, module, json, headers, timeout or self.timeout, str(uuid.uuid4()), breaker)

    def _finish(self, sent: _Sending, outcome: outbound.OutboundResponse | outbound.OutboundError) -> OcpiReply:
        """What came back, logged and counted for the breaker (in the caller's thread: both write rows)."""
        method, url, module, json, breaker = sent.method, sent.url, sent.module, sent.json, sent.breaker
        if isinstance(outcome, outbound.OutboundError):
            self._log(method, url, module, None, None, sent.request_id, "", json, b"", str(outcome), None)
            if breaker is not None:
                breakers.failed(breaker, module, str(outcome))
            raise OcpiClientError(f"{method} {url}: {outcome}") from outcome
        response = outcome
        # A credentials reply carries the partner's token: the excerpts an error quotes are taken with it redacted.
        shown = redact_tokens(response.content.decode("utf-8", "replace")).encode() if module == "credentials" else None
        reply = _parse_reply(response, shown=shown)
        failure = _failure(method, url, response, reply)
        if failure is not None and module == "credentials":
            failure = _tokens_redacted(failure)
        self._log(
            method,
            url,
            module,
            response.status,
            reply.status_code,
            sent.request_id,
            response.correlation_id,
            json,
            response.content,
            str(failure or ""),
            response.elapsed_ms,
        )
        if breaker is not None:
            _count_for_breaker(breaker, module, response, reply, failure)
        if failure is not None:
            raise failure
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
        metrics.count_request(
            direction="OUT", partner=self.partner, module=module, http_status=http_status, ocpi_status=ocpi_status
        )
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
            error=storable((redact_tokens(error) if module == "credentials" else error)[:2000]),
        )

    # -- lists ---------------------------------------------------------------------------------

    def iter_pages(
        self,
        url: str,
        *,
        module: str,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
        ahead: bool = False,
    ) -> Iterator[Page]:
        """Walk a paginated list (transport §"Pagination"). Follows `Link: rel="next"` when it points at the
        same endpoint (scheme, host and path); otherwise — no Link while `X-Total-Count` says there is more, a
        garbage one, another host or path — continues by offset/limit on the endpoint's own URL. Stops on an
        empty page or when the total is reached.

        `ahead`: the next page is asked for before this one is handed over, and awaited in a second thread
        while the caller works on this one (a pull stores a page while the partner prepares the next: without
        it, one waited for the other). The request is made and logged as any other, in order; only the wait
        for its answer overlaps.

        A `Link` header longer than MAX_LINK_HEADER is not read (a warning, once a walk): paging goes on as for
        a page without one."""
        base_params = dict(params or {})
        offset = int(base_params.get("offset", 0))
        next_url: str | None = with_params(url, base_params)
        seen_urls: set[str] = set()
        oversized_link = False
        waiting: _Ahead | None = None
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocpi-page-ahead") if ahead else None
        try:
            for _ in range(MAX_PAGES):
                if next_url is None:
                    return
                seen_urls.add(next_url)
                if waiting is not None:
                    answered, waiting = waiting, None  # taken first: a failed answer is logged once, not again below
                    reply = answered.reply()
                else:
                    reply = self.request("GET", next_url, module=module, timeout=timeout)
                try:
                    items = unwrap_list_payload(reply.data)
                except Rejected as exc:  # `data` neither a list nor an object: the pull fails, not the worker
                    raise OcpiReplyError(
                        f"GET {next_url}: HTTP {reply.http_status}, not a list of objects: {exc}",
                        http_status=reply.http_status,
                        ocpi_status=reply.status_code,
                    ) from exc
                total = _int_header(reply, "X-Total-Count")
                header = reply.header("Link")
                if header and len(header) > MAX_LINK_HEADER and not oversized_link:
                    oversized_link = True  # said once a walk: every page of such a partner may carry one
                    log.warning(
                        "GET %s: a Link header of %d characters (more than %d) is not read: paging on as without one",
                        next_url[:500],
                        len(header),
                        MAX_LINK_HEADER,
                    )
                named = _link_target(header)
                link = _next_link(header, url)
                refused = bool(named and not link)
                page = Page(
                    items=items,
                    total=total,
                    link_refused=refused,
                    timestamp=reply.timestamp,
                    limit=_int_header(reply, "X-Limit"),
                    linked=named is not None,
                )
                offset += len(items)
                next_url = _following(url, base_params, reply, items, offset, total, link, seen_urls, refused)
                if pool is not None and next_url is not None:
                    waiting = _Ahead(self, pool, next_url, module, timeout)
                yield page
            log.warning("stopped walking %s after %d pages", url, MAX_PAGES)
        finally:
            if waiting is not None:  # the walk was left early: the request made is still logged and counted
                waiting.settle()
            if pool is not None:
                pool.shutdown(wait=True)


def _following(
    url: str,
    base_params: dict[str, str],
    reply: OcpiReply,
    items: list[Any],
    offset: int,
    total: int | None,
    link: str | None,
    seen_urls: set[str],
    link_refused: bool = False,
) -> str | None:
    """The URL of the page after this one (`offset`: where the next one starts), or None when the list ends.
    A next page the partner linked to elsewhere (refused) is asked for by offset here, with or without a total:
    without one, until a page comes back empty."""
    if not items:
        return None
    if link and link not in seen_urls:
        return link
    if (total is None and not link_refused) or (total is not None and offset >= total):
        return None
    limit = _int_header(reply, "X-Limit") or len(items)
    following = with_params(url, {**base_params, "offset": str(offset), "limit": str(limit)})
    return None if following in seen_urls else following


@dataclass
class _Sending:
    """A request through the breaker with its headers, not yet answered (OcpiClient._start)."""

    method: str
    url: str
    module: str
    json: Any
    headers: dict[str, str]
    timeout: float
    request_id: str
    breaker: Partner | None

    def send(self) -> outbound.OutboundResponse | outbound.OutboundError:
        """The wire part alone (no database): what the partner answered, or why nothing came back."""
        try:
            return outbound.send(
                self.method,
                self.url,
                json=self.json,
                headers=self.headers,
                timeout=self.timeout,
                request_id=self.request_id,
            )
        except outbound.OutboundError as exc:
            return exc


class _Ahead:
    """The next page's GET, admitted by the breaker and sent now, its answer awaited in `pool`'s thread (with
    this thread's context: request and correlation ids); logged and counted here when asked for."""

    def __init__(self, client: OcpiClient, pool: ThreadPoolExecutor, url: str, module: str, timeout: float | None):
        self.client = client
        self.refused: OcpiClientError | None = None
        self.future: Future[outbound.OutboundResponse | outbound.OutboundError] | None = None
        try:
            self.sent = client._start("GET", url, module=module, timeout=timeout)
        except OcpiClientError as exc:  # the breaker opened: said when this page is asked for, not before
            self.refused = exc
            return
        self.future = pool.submit(contextvars.copy_context().run, self.sent.send)

    def reply(self) -> OcpiReply:
        if self.refused is not None:
            raise self.refused
        assert self.future is not None
        return self.client._finish(self.sent, self.future.result())

    def settle(self) -> None:
        if self.future is None:
            return
        with contextlib.suppress(OcpiClientError):
            self.reply()


@dataclass
class Page:
    """One page of a list: its objects, the `X-Total-Count` it announced, and whether its `Link` pointed
    away from the endpoint (and so was not followed)."""

    items: list[dict[str, Any]]
    total: int | None = None
    link_refused: bool = False
    timestamp: str = ""  # the envelope's, as the partner sent it
    limit: int | None = None  # its `X-Limit`, where the partner sent a usable one
    # Its `Link` named a next page (followed, or refused above); not a Link without one (only `prev`, or no URL
    # we can read), which ended the walk while the client had no next page to follow.
    linked: bool = False


def _parse_reply(response: outbound.OutboundResponse, *, shown: bytes | None = None) -> OcpiReply:
    """The envelope's parts. `problem` says why the body is not an OCPI response envelope, if it isn't, quoting
    the body's first bytes (of `shown`, the body as it may be quoted, when given)."""
    status_code: int | None = None
    quoted = response.content if shown is None else shown
    try:
        body = orjson.loads(response.content) if response.content.strip() else None
    except orjson.JSONDecodeError:
        return _reply(response, problem=f"the body is not JSON: {_excerpt(quoted)!r}")
    if nested_deeper_than(body, MAX_BODY_DEPTH):
        # orjson reads 1024 levels; no OCPI object nests more than a few, and str() of such a value (a status_message,
        # a role) raised RecursionError out of the client: a 500 on our credentials endpoint, a pull left RUNNING.
        return _reply(response, problem=f"JSON nested deeper than {MAX_BODY_DEPTH} levels: {_excerpt(quoted)!r}")
    if not isinstance(body, dict) or "status_code" not in body:
        what = "empty" if body is None else f"JSON without an OCPI envelope: {_excerpt(quoted)!r}"
        return _reply(response, data=body, problem=f"the body is {what}")
    try:
        status_code = int(body["status_code"])
    except (TypeError, ValueError, OverflowError):
        return _reply(response, data=body, problem=f"status_code {_excerpt(orjson.dumps(body['status_code']))!r}")
    stamp = body.get("timestamp")
    message = body.get("status_message")
    return _reply(
        response,
        status_code=status_code,
        data=body.get("data"),
        # Kept as a command's or a push's error: without NUL, which PostgreSQL's text refuses (a refusal quoting one
        # had left its command SENT, its transaction rolled back, and a push sent again for ever). `data` is left
        # as the partner sent it: pulled objects go through the normalizers, and what is stored of an answer
        # otherwise is made storable where it is kept (`storable_answer`).
        message=storable(message if isinstance(message, str) else ""),
        timestamp=stamp[:64] if isinstance(stamp, str) else "",
    )


def storable_answer(data: Any) -> Any:
    """A decoded answer kept as it came (a CommandResponse on its command) with every NUL, in any string at any
    depth (keys too), made U+FFFD (`redact.storable`): PostgreSQL refuses it in text and jsonb, and unstorable, a
    command the CPO had answered stayed SENT (its transaction rolled back) for the sweep to time out. In place,
    without recursion (orjson reads 1024 levels, deeper than Python's stack)."""
    if isinstance(data, str):
        return storable(data)
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if any("\x00" in key for key in node if isinstance(key, str)):
                items = list(node.items())
                node.clear()
                node.update((storable(key) if isinstance(key, str) else key, value) for key, value in items)
            for key, value in node.items():
                if isinstance(value, str):
                    if "\x00" in value:
                        node[key] = storable(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                if isinstance(value, str):
                    if "\x00" in value:
                        node[index] = storable(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
    return data


def _reply(
    response: outbound.OutboundResponse,
    *,
    status_code: int | None = None,
    data: Any = None,
    message: str = "",
    problem: str = "",
    timestamp: str = "",
) -> OcpiReply:
    return OcpiReply(
        http_status=response.status,
        status_code=status_code,
        data=data,
        headers=response.headers,
        message=message,
        problem=problem,
        timestamp=timestamp,
    )


def _failure(method: str, url: str, response: outbound.OutboundResponse, reply: OcpiReply) -> OcpiClientError | None:
    """Why this answer is a failed request, or None when it is a success."""
    status = response.status
    where = f"{method} {url}"
    if 300 <= status < 400:
        target = reply.header("Location") or "nowhere"
        return OcpiReplyError(
            f"{where}: HTTP {status} redirect to {_excerpt(target.encode())} (not followed: a partner's URLs are "
            "used exactly as it gave them)",
            http_status=status,
        )
    if status in (401, 403):
        return OcpiAuthError(f"{where}: HTTP {status}", http_status=status, ocpi_status=reply.status_code)
    if status >= 400:
        detail = reply.message or reply.problem
        return OcpiClientError(
            f"{where}: HTTP {status} {detail}".strip(),
            http_status=status,
            ocpi_status=reply.status_code,
            data=reply.data,
        )
    if reply.problem:
        return OcpiReplyError(f"{where}: HTTP {status}, not an OCPI answer: {reply.problem}", http_status=status)
    if not 1000 <= (reply.status_code or 0) < 2000:
        return OcpiClientError(
            f"{where}: OCPI {reply.status_code} {reply.message}".strip(),
            http_status=status,
            ocpi_status=reply.status_code,
            data=reply.data,
        )
    return None


def _count_for_breaker(
    partner: Partner,
    module: str,
    response: outbound.OutboundResponse,
    reply: OcpiReply,
    failure: OcpiClientError | None,
) -> None:
    """What the answer says of the partner's health: a 429 opens the breaker until Retry-After; a 5xx, an
    answer that is not OCPI or an OCPI server error (3xxx) is a failure; anything else — our own errors
    (2xxx, 4xx) included — shows the partner is there. So does a hub error (status_codes §4xxx: the party
    behind the hub is unknown, timed out or not connected), whatever its HTTP status: the hub answered, and one
    party it cannot reach must not close the connection to every other party behind it."""
    if response.status == 429:
        breakers.throttled(partner, module, retry_after_seconds(reply.header("Retry-After")))
    elif partner.role == Partner.Role.HUB and 4000 <= (reply.status_code or 0) < 5000:
        breakers.succeeded(partner, module)
    elif response.status >= 500 or isinstance(failure, OcpiReplyError) or 3000 <= (reply.status_code or 0) < 4000:
        breakers.failed(partner, module, str(failure or f"HTTP {response.status}")[:200])
    else:
        breakers.succeeded(partner, module)


def retry_after_seconds(value: str | None) -> int | None:
    """`Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) if len(value) <= 9 else 10**9
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0, int((when - timezone.now()).total_seconds()))


def _excerpt(content: bytes, length: int = 200) -> str:
    return content[:length].decode("utf-8", "replace")


def _tokens_redacted(failure: OcpiClientError) -> OcpiClientError:
    """The same failure, its message without tokens (it is logged, stored and quoted by the registration's
    own errors)."""
    text = str(failure)
    clean = redact_tokens(text)
    if clean == text:
        return failure
    return type(failure)(clean, http_status=failure.http_status, ocpi_status=failure.ocpi_status, data=failure.data)


def _int_header(reply: OcpiReply, name: str) -> int | None:
    """A count header (X-Total-Count, X-Limit): a whole number, not negative; None otherwise (as if absent)."""
    value = reply.header(name)
    try:
        number = int(value) if value is not None else None
    except ValueError:
        return None
    return number if number is None or number >= 0 else None


def _link_target(header: str | None) -> str | None:
    """The URL a `Link` header (RFC 8288) names as rel="next", in angle brackets or bare (`https://…; rel="next"`,
    as some partners send it; one in brackets first); None without one, or when the header is longer than
    MAX_LINK_HEADER. Read in one pass, without regular expressions: each link-value's URL, then its
    `;`-separated parameters up to the next `,` outside a quoted string; its first `rel` (quoted or not, in
    single quotes too; any case) names a next page when `next` is one of its space-separated relation types."""
    if not header or len(header) > MAX_LINK_HEADER:
        return None
    bare = None
    for target, params, bracketed in _link_values(header):
        if target and _rel_names_next(params):
            if bracketed:
                return target
            bare = bare or target
    return bare


def _link_values(header: str) -> Iterator[tuple[str, str, bool]]:
    """(URL, parameters, whether the URL was in angle brackets) of each link-value of a `Link` header; the URL is
    "" where none can be read (a bare one holding a space or a quote). Junk before a `<` is skipped; an unclosed
    `<` ends the header. Each character is looked at once or twice: the time is linear in the header's length."""
    pos, size = 0, len(header)
    while pos < size:
        while pos < size and header[pos] in " \t,":
            pos += 1
        start = pos
        while pos < size and header[pos] not in "<;,":
            pos += 1
        if pos < size and header[pos] == "<":
            closing = header.find(">", pos + 1)
            if closing == -1:
                return
            target, pos, bracketed = header[pos + 1 : closing].strip(), closing + 1, True
        else:
            bracketed = False
            target = header[start:pos].strip()
            if any(c in target for c in ' \t"'):
                target = ""
        end = _unquoted(header, ",", pos)
        if target or end > pos:
            yield target, header[pos:end], bracketed
        pos = end + 1


def _unquoted(text: str, separator: str, pos: int = 0) -> int:
    """Where the next `separator` outside a quoted string (with its `\\` escapes) is in `text` from `pos`, or the
    end: a link-value's parameters end at such a `,`, and are separated by such `;`s."""
    quoted = False
    size = len(text)
    while pos < size:
        char = text[pos]
        if char == '"':
            quoted = not quoted
        elif char == "\\" and quoted:
            pos += 1
        elif char == separator and not quoted:
            return pos
        pos += 1
    return size


def _rel_names_next(params: str) -> bool:
    """Whether a link-value's parameters (`; rel="prev next"; title=…`) name the `next` relation: RFC 8288 §3.3,
    only the first `rel` counts, its value case-insensitive and perhaps several space-separated types. A `;`
    inside a quoted value (`title="see also; rel=prev"`) separates nothing. Lenient in: a value in single quotes
    (`rel='next'`, which some CPOs send) is read as if in double quotes; only the rel value's own quotes, so a `'`
    elsewhere (`title=it's`) still quotes nothing."""
    for param in _params_of(params):
        name, equals, value = param.partition("=")
        if equals and name.strip().lower() == "rel":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            return "next" in value.strip('"').lower().split()
    return False


def _params_of(params: str) -> Iterator[str]:
    """A link-value's `;`-separated parameters, a `;` inside a quoted string kept in it."""
    start, size = 0, len(params)
    while start <= size:
        end = _unquoted(params, ";", start)
        yield params[start:end]
        start = end + 1


def _next_link(header: str | None, endpoint_url: str) -> str | None:
    """The next-page URL from a `Link` header, if it points at the same endpoint: same scheme, host and path
    (its query may differ). Anything else is not followed."""
    link = _link_target(header)
    if link is None:
        return None
    parts, endpoint = urlsplit(link), urlsplit(endpoint_url)
    same = (
        parts.scheme.lower() == endpoint.scheme.lower()
        and parts.netloc.lower() == endpoint.netloc.lower()
        and parts.path == endpoint.path
    )
    return link if same else None


def with_params(url: str, params: dict[str, str]) -> str:
    """`url` with query parameters added: the partner's own query string is kept as it gave it (only a
    parameter we set replaces one of the same name)."""
    if not params:
        return url
    base, _, fragment = url.partition("#")
    path, _, query = base.partition("?")
    kept = [pair for pair in query.split("&") if pair and unquote_plus(pair.partition("=")[0]) not in params]
    joined = "&".join([*kept, urlencode(params)])
    return f"{path}?{joined}" + (f"#{fragment}" if fragment else "")


def url_under(endpoint_url: str, path: str) -> str:
    """An object's URL below a module endpoint: `path` (ids already quoted, perhaps with its own `?query`)
    after the endpoint's path, one slash between them whether or not the endpoint ends with one."""
    base, _, query = endpoint_url.partition("?")
    path, _, extra = path.lstrip("/").partition("?")
    url = f"{base}{'' if base.endswith('/') else '/'}{path}"
    joined = "&".join(q for q in (query, extra) if q)
    return f"{url}?{joined}" if joined else url


def object_url(endpoint_url: str, *ids: str) -> str:
    """The URL of one object below a module endpoint: `{endpoint}/{id}/{id}…`, each id percent-encoded."""
    return url_under(endpoint_url, "/".join(quote(str(i), safe="") for i in ids))
