"""OCPI 2.2.1 transport (transport_and_format.asciidoc, status_codes.asciidoc): the response envelope, status
codes, token authentication, routing headers, pagination and the base view every OCPI endpoint uses."""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import connection
from django.db.models import QuerySet
from django.db.models.base import ModelState
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from emsp.async_commit import async_commit_suffix
from emsp.datetimes import format_datetime
from emsp.models import Partner, ci_key, hash_token
from emsp.ratelimit import WINDOW_SECONDS, rate_limit_hit
from ocpi import metrics
from ocpi.models import CredentialsRotation, OcpiMessage
from ocpi.normalize import Issue, Normalizer, Rejected, parse_ocpi_datetime
from ocpi.normalize.values import PLACE_ID_MAX
from ocpi.quality import record_issues
from ocpi.redact import log_body, storable

log = logging.getLogger(__name__)

VERSION = "2.2.1"

# status_codes.asciidoc
SUCCESS = 1000
CLIENT_ERROR = 2000
INVALID_PARAMETERS = 2001
NOT_ENOUGH_INFORMATION = 2002
UNKNOWN_LOCATION = 2003
UNKNOWN_TOKEN = 2004
SERVER_ERROR = 3000
UNABLE_TO_USE_CLIENT_API = 3001
UNSUPPORTED_VERSION = 3002
NO_MATCHING_ENDPOINTS = 3003


class OcpiError(Exception):
    """A protocol-level error: rendered as the envelope with `status_code`, under `http_status`.

    status_codes.asciidoc: a valid-JSON request from an authenticated partner that addresses an existing
    resource has reached the OCPI layer and MUST NOT get an HTTP error, so 2xxx codes default to HTTP 200.
    """

    def __init__(
        self, status_code: int, message: str, http_status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.http_status = http_status
        self.headers = headers or {}  # e.g. Retry-After on a 429


def envelope(data: Any = None, status_code: int = SUCCESS, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if data is not None:
        body["data"] = data
    body["status_code"] = status_code
    if message:
        body["status_message"] = status_message(message)
    body["timestamp"] = format_datetime(timezone.now())
    return body


# The most of a status_message we send: it often echoes what the partner sent (an id, a path, a field name, its
# own server's answer), which has no bound of its own.
STATUS_MESSAGE_MAX = 255


def status_message(message: str) -> str:
    """`status_message` is an OCPI string, "only printable UTF-8 (no carriage returns, tabs, line breaks)": each
    non-printable character is written as its escape (a line break as the two characters \\n, an ESC as \\x1b), so
    the partner still reads what it sent, and the whole is cut to STATUS_MESSAGE_MAX characters with an ellipsis.
    Every envelope's message passes here: the error answers quote URLs, bodies and partners' answers."""
    if message.isprintable():
        return message if len(message) <= STATUS_MESSAGE_MAX else message[: STATUS_MESSAGE_MAX - 1] + "…"
    out, length = [], 0
    for c in message:
        written = c if c.isprintable() else repr(c)[1:-1]
        if length + len(written) > STATUS_MESSAGE_MAX - 1:  # cut between escapes, never inside one
            out.append("…")
            break
        out.append(written)
        length += len(written)
    return "".join(out)


class OcpiResponse(HttpResponse):
    """An OCPI envelope; keeps its status code so the message log need not parse the body back."""

    ocpi_status: int | None = None


def ocpi_response(
    data: Any = None,
    *,
    status_code: int = SUCCESS,
    message: str | None = None,
    http_status: int = 200,
    headers: dict[str, str] | None = None,
) -> OcpiResponse:
    response = OcpiResponse(
        orjson.dumps(envelope(data, status_code, message)),
        status=http_status,
        content_type="application/json",
    )
    response.ocpi_status = status_code
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def is_printable_token(token: str) -> bool:
    """credentials.asciidoc: a token is printable, non-whitespace ASCII (U+0021–U+007E)."""
    return is_printable_text(token) and " " not in token


def decode_authorization(header: str | None) -> list[str]:
    """Candidate tokens from `Authorization: Token <x>`: Base64-decoded (2.2.x) and raw (2.1.1 habits)."""
    if not header:
        return []
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "token" or not value.strip():
        return []
    value = value.strip()
    candidates = [value]
    try:
        decoded = base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    # Both Base64 examples of transport_and_format encode the token with a line break after it (`echo` output):
    # a partner that encodes as they do sends one; the token is what comes before it.
    decoded = decoded.removesuffix("\n").removesuffix("\r")
    # A Base64-decoded token must itself be a valid token.
    if decoded and is_printable_token(decoded):
        candidates.insert(0, decoded)
    return candidates


# Token → partner (with the parties granted to it), per process, for a few seconds: the lookup ran on every
# request of the hot paths (EVSE PATCH, real-time authorization). Credentials changes clear it here at once;
# other processes see a rotated or revoked token refused, or a new grant, at most TOKEN_CACHE_SECONDS later.
TOKEN_CACHE_SECONDS = 3.0
_token_cache: dict[str, tuple[float, Partner]] = {}


def forget_cached_tokens() -> None:
    _token_cache.clear()


def _copy_of(partner: Partner) -> Partner:
    """What copy.copy makes of a model instance (Model.__getstate__: its fields, and its state with the related
    objects' cache copied), without copy's generic path through __reduce_ex__ (a Partner holds no memoryview for
    __getstate__ to convert): a request changing its partner leaves the cached one as it was."""
    clone = Partner.__new__(Partner)
    fields = partner.__dict__.copy()
    state = ModelState()
    state.__dict__.update(partner._state.__dict__)
    state.fields_cache = partner._state.fields_cache.copy()
    fields["_state"] = state
    clone.__dict__.update(fields)
    return clone


def partner_for_token(
    candidates: Iterable[str], *, allow_token_a: bool, cached: bool = False
) -> tuple[Partner, bool, str] | None:
    """The partner owning one of the candidate tokens, whether it was a Token A, and the candidate that
    matched. `cached` allows an answer up to TOKEN_CACHE_SECONDS old (functional modules; never the
    credentials module)."""
    by_hash = {hash_token(c): c for c in candidates}
    if not by_hash:
        return None
    now = time.monotonic()
    for token_hash in by_hash if cached else ():
        hit = _token_cache.get(token_hash)
        if hit is not None and hit[0] > now:
            return _copy_of(hit[1]), False, by_hash[token_hash]
    hashes = list(by_hash)
    partner = Partner.objects.filter(incoming_token_hash__in=hashes).exclude(state=Partner.State.UNREGISTERED).first()
    if partner is not None:
        # Only settled connections are cached: during a handshake the row still changes (its party, its
        # state) and a copy taken then would be wrong for the next seconds.
        if partner.state == Partner.State.CONNECTED:
            if len(_token_cache) > 10_000:
                _token_cache.clear()
            partner.party_keys()  # read once with the partner: the copies served from the cache carry them
            _token_cache[partner.incoming_token_hash] = (now + TOKEN_CACHE_SECONDS, _copy_of(partner))
        return partner, False, by_hash[partner.incoming_token_hash]
    # The new token of a rotation we started works next to the old one until the partner answers (not cached).
    rotation = (
        CredentialsRotation.objects.filter(token_hash__in=hashes, outcome=CredentialsRotation.Outcome.PENDING)
        .exclude(partner__state=Partner.State.UNREGISTERED)
        .select_related("partner")
        .first()
    )
    if rotation is not None:
        return rotation.partner, False, by_hash[rotation.token_hash]
    if allow_token_a:
        partner = Partner.objects.filter(token_a_hash__in=hashes).first()
        if partner is not None:
            return partner, True, by_hash[partner.token_a_hash]
    return None


_PARTY_CODES = re.compile(r"^[A-Z]{2}\*[A-Z0-9]{1,3}$")


def sender_party(request: Request, partner: Partner) -> tuple[str, str]:
    """The party a functional request comes from (transport §"Message Routing"): the one `OCPI-from-*` names
    when it is one of the connection's parties, else the connection's own. A hub naming a party not granted
    to it is refused as unknown; a CPO's stray header is ignored (lenient in: what it sends is checked
    against its parties anyway)."""
    country_code = (request.headers.get("OCPI-from-country-code") or "").strip().upper()
    party_id = (request.headers.get("OCPI-from-party-id") or "").strip().upper()
    if not country_code or not party_id:
        return partner.country_code, partner.party_id
    if partner.owns(country_code, party_id):
        return country_code, party_id
    if partner.role == Partner.Role.HUB:
        named = ci_key(country_code, party_id)
        named = named if _PARTY_CODES.match(named) else "the OCPI-from-* party"
        raise OcpiError(CLIENT_ERROR, f"Unknown party for this token: {named} is not granted to this hub", 404)
    return partner.country_code, partner.party_id


def refuse_a_message_for_another_party(request: Request, partner: Partner) -> None:
    """A hub delivers to us what is addressed to us: `OCPI-to-*` names the receiving party (transport §"Party
    to Party via Hub": "Direct request | Hub to receiving platform | TO = Receiving-party"; a Broadcast Push and
    an Open Routing Request too). A hub naming another party misrouted the message: it is refused as for an
    unknown receiver (HTTP 404, OCPI 2000), nothing stored, no token of ours answered for another eMSP's driver.
    Without both headers (routing headers are not required in every request) the message is ours. A CPO's
    stray header is logged, not refused (lenient in: its connection is with us, there is no one else)."""
    country_code = (request.headers.get("OCPI-to-country-code") or "").strip()
    party_id = (request.headers.get("OCPI-to-party-id") or "").strip()
    if not country_code or not party_id:
        return
    named = ci_key(country_code, party_id)
    if named == ci_key(settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID):
        return
    if partner.role == Partner.Role.HUB and named == ci_key(partner.country_code, partner.party_id):
        # A Broadcast Push as its sender addressed it ("the client uses the party-id and country-code of the Hub
        # in the 'OCPI-to-' headers"), passed on unchanged: for every receiver, us included.
        return
    named = named if _PARTY_CODES.match(named) else "the OCPI-to-* party"
    if partner.role == Partner.Role.HUB:
        raise OcpiError(CLIENT_ERROR, f"Unknown receiver: {named} is not a party of this platform", 404)
    # One line per partner, minute and process: a CPO that gets it wrong gets it wrong on every EVSE PATCH.
    window = int(time.time() // 60)
    if _misaddressed_logged.get(partner.pk) != window:
        _misaddressed_logged[partner.pk] = window
        log.info(
            "OCPI requests of %s are addressed to %s, not to us: taken as ours (a direct connection)", partner, named
        )


# Partner pk → the minute this process last logged a direct partner's request addressed to another party.
_misaddressed_logged: dict[int, int] = {}


def parse_query_datetime(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        return parse_ocpi_datetime(raw.replace(" ", "+"), name)
    except Rejected as exc:
        raise OcpiError(INVALID_PARAMETERS, f"{name} is not an RFC 3339 date-time") from exc


# offset/limit beyond this address no page that can exist (and would overflow the database's bigint).
MAX_QUERY_INT = 10**9
# The OCPI objects we take nest at most ~7 levels (tariff → elements → price_components …): far deeper is an
# attack on our recursion (and PostgreSQL's jsonb), not data.
MAX_BODY_DEPTH = 32
# URL path parts (transport §"Client Owned Object Push"): country_code string(2), party_id CiString(3), ids
# CiString(36) (39 for CDR ids, and for location and EVSE ids: string(39) in 2.1.1), all printable ASCII
# (types §16.3). Anything else names no object of ours.
_URL_ID_LIMITS = {"country_code": 2, "party_id": 3, "cdr_id": 39, "location_id": PLACE_ID_MAX, "evse_uid": PLACE_ID_MAX}


def check_url_ids(kwargs: dict[str, Any]) -> None:
    """Ids in the URL are printable ASCII of the spec's lengths, else 2001: never stored, echoed or looked up."""
    for name, value in kwargs.items():
        limit = _URL_ID_LIMITS.get(name, 36)
        if not isinstance(value, str) or not 1 <= len(value) <= limit or not is_printable_text(value):
            raise OcpiError(
                INVALID_PARAMETERS, f"{name} in the URL is not a printable id of at most {limit} characters"
            )


def refuse_an_encoded_slash(request: Request | HttpRequest) -> None:
    """An id holding `/` (printable ASCII, so allowed) sent percent-encoded, `…/locations/BE/BEC/A%2FB`, reaches
    Django decoded (WSGI decodes the path before routing) and would be routed as two ids: a location PUT became
    a PUT of EVSE `B` at location `A`, storing the location's body as an EVSE. The path as the server received it
    (gunicorn's RAW_URI, uWSGI's REQUEST_URI) tells them apart: such a request is 2001, routed nowhere. Where
    the server gives no raw path, nothing is checked."""
    raw = request.META.get("RAW_URI") or request.META.get("REQUEST_URI")
    if raw:
        path = raw.partition("?")[0]
        if "%2F" in path or "%2f" in path:
            raise OcpiError(INVALID_PARAMETERS, "An id holding '/' (%2F in the URL) can't be addressed at this path")


def is_printable_text(value: str) -> bool:
    """Printable ASCII, U+0020–U+007E (str methods, not a loop over the characters: every OCPI request checks its
    URL ids and token with it)."""
    return value.isascii() and value.isprintable()


def check_json(value: Any, *, droppable: Collection[str] = ()) -> set[str]:
    """Refuse what no OCPI object holds: nesting beyond MAX_BODY_DEPTH, a NUL in any string (no database column
    can hold one). Iterative, so a deep document can't exhaust our stack either.

    `droppable` names optional fields of the body's object (a one-object list read as its object, as json_object
    reads it) that are only shown, never acted on: a NUL in one of them, anywhere below it, does not refuse the
    body; the fields found are returned for the caller to drop with a finding. Depth is refused everywhere."""
    obj = value[0] if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) else value
    with_nul: set[str] = set()
    stack: list[tuple[Any, int, str, str | None]] = [(value, 0, "", None)]
    while stack:
        item, depth, path, field = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise OcpiError(INVALID_PARAMETERS, f"{path or 'body'}: nested deeper than {MAX_BODY_DEPTH} levels")
        if isinstance(item, str):
            if "\x00" in item:
                if field is None or field not in droppable:
                    raise OcpiError(INVALID_PARAMETERS, f"{path or 'body'}: a NUL character in a string")
                with_nul.add(field)
        elif isinstance(item, dict):
            for key, child in item.items():
                # A member of the object itself starts a field; below it, everything belongs to that field.
                under = key if item is obj else field
                if "\x00" in key:
                    if under is None or under not in droppable:
                        raise OcpiError(INVALID_PARAMETERS, f"{path or 'body'}: a NUL character in a field name")
                    with_nul.add(under)
                stack.append((child, depth + 1, f"{path}.{key}" if path else key, under))
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{path}[{i}]", field) for i, child in enumerate(item))
    return with_nul


def nested_deeper_than(value: Any, limit: int = MAX_BODY_DEPTH) -> bool:
    """Whether decoded JSON nests deeper than `limit` levels (counted as check_json counts them). Iterative:
    orjson reads 1024 levels, and str() or a recursive walk of such a value exhausts Python's stack."""
    stack: list[tuple[Any, int]] = [(value, 0)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit or (depth == limit and item):  # its members are a level deeper
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise OcpiError(INVALID_PARAMETERS, f"{name} must be an integer") from exc
    if not 0 <= value <= MAX_QUERY_INT:
        raise OcpiError(INVALID_PARAMETERS, f"{name} must be between 0 and {MAX_QUERY_INT}")
    return value


def parse_query_limit(request: Request, server_limit: int) -> int:
    """`limit`, capped at our page size: transport §"Paginated Request" lets the server return fewer objects
    than asked, and its example answers `?limit=2000` with pages of its own size and `X-Limit` saying so. Only
    what is no count at all is refused (2001): not a number, or negative. 0 asks for nothing: the page size."""
    raw = request.query_params.get("limit")
    if raw in (None, ""):
        return server_limit
    digits = raw.strip().removeprefix("+")
    if digits.isascii() and digits.isdigit():
        # However many digits: int() refuses a string of more than sys.get_int_max_str_digits() (4,300).
        value = int(digits) if len(digits) <= 12 else server_limit
    else:
        try:
            value = int(raw)
        except ValueError as exc:
            raise OcpiError(INVALID_PARAMETERS, "limit must be an integer") from exc
        if value < 0:
            raise OcpiError(INVALID_PARAMETERS, "limit must not be negative")
    return min(value, server_limit) or server_limit


def paginated_response(
    request: Request,
    queryset: QuerySet[Any],
    serialize: Callable[[Any], dict[str, Any]],
    *,
    date_field: str = "last_updated",
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """A paginated OCPI list (transport §"Pagination"): date_from (incl.), date_to (excl.) on `date_field`,
    offset, limit; `Link` to the next page with the same filters, `X-Total-Count`, `X-Limit`.

    In the order the objects were created (the primary key), oldest first: transport §"Paginated Response",
    "the sequence of objects mustn't change, or as little as possible … order the objects by creation date
    ascending". An object changed during a pull keeps its place, so a client paging by `offset` on URLs of its
    own misses nothing (in `last_updated` order it moved to the end and shifted every later object back by one:
    the object after it was never served, and nothing told the client). Objects created during the pull come
    last, where the last page serves them.

    The `Link` also carries where the page ended (`after`: the offset it leads to, the last object's key, the
    count and the table's highest key when the pull began). A client following it is served the objects after
    that key from the primary key's index, not `offset` rows skipped again. Its `X-Total-Count` is the pull's
    first count plus the objects now matching beyond that highest key: transport's "the X-Total-Count will be
    higher on the next call" for objects created during the pull, without counting the whole list again on
    every page (a million tokens: the count was three quarters of each page's time; docs/benchmarks.md), and
    never less than the objects served up to the end of the page (one more while there is a next page). A
    request without `after`, or whose `offset` is not the one `after` leads to (a client building its own URLs),
    is served by offset and counted afresh. One following a Link of the earlier shape (`offset.date.key.total`,
    pages in `last_updated` order) gets the list again from its first object (`_earlier_page_end`)."""
    date_from = parse_query_datetime(request, "date_from")
    date_to = parse_query_datetime(request, "date_to")
    offset = parse_query_int(request, "offset", 0)
    server_limit = settings.OCPI_PAGE_LIMIT
    limit = parse_query_limit(request, server_limit)
    if date_from is not None:
        queryset = queryset.filter(**{f"{date_field}__gte": date_from})
    if date_to is not None:
        queryset = queryset.filter(**{f"{date_field}__lt": date_to})
    ordered = queryset.order_by("pk")
    raw_after = request.query_params.get("after")
    after = _page_after(raw_after, offset)
    restarted = after is None and _earlier_page_end(raw_after, offset)
    if after is None:
        # The highest key read before the count: an object created in between is counted twice on the pages that
        # follow (a count too high, never too low).
        highest = queryset.model._base_manager.order_by("-pk").values_list("pk", flat=True).first() or 0
        counted = total = queryset.count()
        if restarted:
            # A pull begun before the list was in creation order, following a Link of the earlier shape: its
            # first pages came in `last_updated` order, and this offset in key order skips whatever of the rest
            # sorted before it. The list starts again from its first object, placed after the `offset` objects
            # the client has: it gets some twice and misses none. X-Total-Count counts those `offset` in: a client
            # stopping where its own offset reaches the count would otherwise leave the last `offset` out.
            counted = total = offset + total
            page = list(ordered[: limit + 1])
        else:
            page = list(ordered[offset : offset + limit + 1])
    else:
        key, counted, highest = after
        total = counted + queryset.filter(pk__gt=highest).count()
        page = list(ordered.filter(pk__gt=key)[: limit + 1])
    more, page = len(page) > limit, page[:limit]
    if after is not None or restarted:
        # Never fewer than served so far and on this page, and one more while the Link says there is more. A
        # token changed into the `date_from` window since the first count, its key below the highest then, is
        # served by the pages after the cursor but counted by neither: without this the count said the list had
        # ended while the Link named a next page.
        total = max(total, offset + len(page) + (1 if more else 0))
    all_headers = dict(headers or {})
    # transport: "excluding limit and offset" (an offset past the end is not a count).
    all_headers["X-Total-Count"] = str(total)
    all_headers["X-Limit"] = str(server_limit)
    if more:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit", "after")}
        following = offset + len(page)
        params.update({"offset": str(following), "limit": str(limit),
                       "after": f"p.{following}.{page[-1].pk}.{counted}.{highest}"})  # fmt: skip
        all_headers["Link"] = f'<{absolute_url(request.path)}?{urlencode(params)}>; rel="next"'
    return ocpi_response([serialize(obj) for obj in page], headers=all_headers)


_PAGE_END = re.compile(r"p\.(\d{1,12})\.(\d{1,19})\.(\d{1,12})\.(\d{1,19})")


def _page_after(raw: str | None, offset: int) -> tuple[int, int, int] | None:
    """What a Link's `after` (`p.offset.key.count.highest`) names: the key after which the page starts, the
    pull's first count and the highest key then, when it leads to this `offset`; None otherwise (absent,
    malformed, out of range, for another offset, or of the earlier `offset.date.key.total` shape: the page is
    then served by offset, the earlier shape from the list's start)."""
    found = _PAGE_END.fullmatch(raw or "")
    if found is None or int(found[1]) != offset:
        return None
    key, counted, highest = int(found[2]), int(found[3]), int(found[4])
    return (key, counted, highest) if key < 2**63 and highest < 2**63 else None


# The `after` of our Links before the list was in creation order: `offset.microseconds.key.total`.
_EARLIER_PAGE_END = re.compile(r"(\d{1,12})\.(-?\d{1,17})\.(\d{1,19})\.(\d{1,12})")


def _earlier_page_end(raw: str | None, offset: int) -> bool:
    """Does `after` have the earlier shape and lead to this `offset`: a pull begun before the list was in
    creation order, following its Link?"""
    found = _EARLIER_PAGE_END.fullmatch(raw or "")
    return found is not None and int(found[1]) == offset


_MESSAGE_COLUMNS = (
    "partner_id",
    "direction",
    "method",
    "url",
    "module",
    "http_status",
    "ocpi_status",
    "request_id",
    "correlation_id",
    "duration_ms",
    "request_body",
    "response_body",
    "error",
    "created_at",
)
_INSERT_MESSAGE = (
    f"INSERT INTO ocpi_ocpimessage ({', '.join(_MESSAGE_COLUMNS)}) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join(['%s'] * len(_MESSAGE_COLUMNS))})"
)


# A log row alone in its transaction commits asynchronously (emsp/async_commit.py): the wait for the WAL was
# 0.11-0.13 ms of a 0.25 ms insert here, on every OCPI request; a PostgreSQL crash may lose the log rows of its
# last ~0.6 s, never a business row (inside a transaction the row commits with it).


def log_message_row(**values: Any) -> None:
    """One row of the OCPI message log (plain SQL: it is written on every request of the hot paths)."""
    values.setdefault("error", "")
    values["created_at"] = timezone.now()
    for column in ("method", "url", "module", "request_id", "correlation_id", "error"):
        values[column] = storable(values[column])
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_MESSAGE + async_commit_suffix(), [values[c] for c in _MESSAGE_COLUMNS])


def _write_log_row(values: dict[str, Any]) -> None:
    try:
        log_message_row(**values)
    except Exception:  # Django's response.close() would swallow it silently: say what was lost
        log.exception(
            "could not write the OCPI message log row of %s %s (request %s)",
            values["method"],
            values["url"],
            values["request_id"],
        )


# Partner pk → the minute of the last rate-limit refusal this process wrote to the message log.
_refusals_logged: dict[int, int] = {}


class JsonAnswers(BaseContentNegotiation):
    """Every OCPI answer is JSON (transport_and_format: the body is JSON, `Content-Type: application/json`),
    whatever the request's Accept header asks: lenient in, where DRF's negotiation refused a client asking only
    for text/html with HTTP 406, and cheaper (it was 4 % of an EVSE PATCH's CPU)."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(self, request: Request, renderers: list[Any], format_suffix: str | None = None) -> Any:
        return renderers[0], renderers[0].media_type


class OcpiView(APIView):
    """Base of every OCPI endpoint we serve: token auth, envelope on every answer (errors too), request
    and correlation ids (set by emsp.middleware), routing headers on functional modules, message log."""

    module = ""
    functional = True  # routing headers (transport §"Message Routing") on all but credentials/versions
    allow_token_a = False
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JsonAnswers

    partner: Partner
    used_token_a: bool
    presented_token: str
    from_party: tuple[str, str] | None = None  # who a functional request comes from (sender_party)
    ids_may_hold_a_slash = False  # True where the route takes an id's `/` (refuse_an_encoded_slash)
    # Optional, only-shown fields of the body's object dropped where they hold a NUL, the rest taken (check_json);
    # `nul_dropped` says which were, for the view's finding.
    nul_droppable: frozenset[str] = frozenset()
    nul_dropped: frozenset[str] = frozenset()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # The findings of the objects this request takes, recorded once the store has taken them (record_findings).
        self._findings: list[tuple[str, Issue]] = []
        super().initial(request, *args, **kwargs)
        self._started = time.monotonic()
        candidates = decode_authorization(request.headers.get("Authorization"))
        found = partner_for_token(candidates, allow_token_a=self.allow_token_a, cached=self.functional)
        if found is None:
            raise OcpiError(CLIENT_ERROR, "Missing or unknown token", 401)
        self.partner, self.used_token_a, self.presented_token = found
        self.rate_limit()
        check_url_ids(kwargs)
        if not self.ids_may_hold_a_slash:
            refuse_an_encoded_slash(request)
        if self.functional:
            self.from_party = sender_party(request, self.partner)
            refuse_a_message_for_another_party(request, self.partner)

    def rate_limit(self) -> None:
        """OCPI_RATE_LIMIT_PER_MINUTE requests per partner (all modules, all web processes): beyond it HTTP 429
        with Retry-After. OCPI names no code for it; 2000 is the generic client error."""
        verdict = rate_limit_hit(f"ocpi:{self.partner.pk}", settings.OCPI_RATE_LIMIT_PER_MINUTE)
        if verdict.allowed:
            return
        # A flooding partner must not cost a log row per refused request: one per partner, minute and process.
        window = int(time.time() // WINDOW_SECONDS)
        self._skip_log = _refusals_logged.get(self.partner.pk) == window
        if not self._skip_log:
            _refusals_logged[self.partner.pk] = window
            log.warning("OCPI rate limit: %s over %d requests a minute", self.partner, verdict.limit)
        raise OcpiError(
            CLIENT_ERROR,
            f"Too many requests: at most {verdict.limit} a minute per partner; retry after {verdict.retry_after} s",
            429,
            headers={"Retry-After": str(verdict.retry_after)},
        )

    def body(self) -> Any:
        """The request's JSON body; invalid JSON is HTTP 400 (transport §"Response format")."""
        try:
            raw = self.request._request.body
        except RequestDataTooBig as exc:
            raise OcpiError(CLIENT_ERROR, "Request body too large", 413) from exc
        if not raw.strip():
            return None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise OcpiError(CLIENT_ERROR, f"Invalid JSON: {exc}", 400) from exc
        dropped = check_json(data, droppable=self.nul_droppable)
        if dropped:
            obj = data[0] if isinstance(data, list) else data  # the object check_json read the fields of
            for field in dropped:
                del obj[field]
            self.nul_dropped = frozenset(dropped)
        return data

    def json_object(self) -> dict[str, Any]:
        data = self.body()
        # Lenient in: some partners wrap the single object in a list.
        if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
            data = data[0]
        if not isinstance(data, dict):
            raise OcpiError(INVALID_PARAMETERS, "Expected a JSON object")
        return data

    def options(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        """OPTIONS is no OCPI method: the methods this endpoint takes, in an envelope. DRF's own answer (a Response
        not yet rendered when the message log read it) had been a 500."""
        response = ocpi_response()
        response["Allow"] = ", ".join(self.allowed_methods)
        return response

    def handle_exception(self, exc: Exception) -> HttpResponse:
        if isinstance(exc, OcpiError):
            return ocpi_response(
                status_code=exc.status_code, message=exc.message, http_status=exc.http_status, headers=exc.headers
            )
        if isinstance(exc, Http404 | exceptions.NotFound):
            return ocpi_response(status_code=CLIENT_ERROR, message=str(exc) or "Not found", http_status=404)
        if isinstance(exc, exceptions.MethodNotAllowed):
            return ocpi_response(status_code=CLIENT_ERROR, message=str(exc.detail), http_status=405)
        if isinstance(exc, exceptions.APIException):
            return ocpi_response(status_code=CLIENT_ERROR, message=str(exc.detail), http_status=exc.status_code)
        log.exception("OCPI %s failed", self.module)
        return ocpi_response(status_code=SERVER_ERROR, message="Internal error", http_status=500)

    def finalize_response(self, request: Request, response: HttpResponse, *args: Any, **kwargs: Any) -> HttpResponse:
        response = super().finalize_response(request, response, *args, **kwargs)
        partner = getattr(self, "partner", None)
        if self.functional and partner is not None:
            # Direct party-to-party: the response is addressed back to the requester (transport §4.2).
            to_country_code, to_party_id = self.from_party or (partner.country_code, partner.party_id)
            response["OCPI-to-country-code"] = to_country_code
            response["OCPI-to-party-id"] = to_party_id
            response["OCPI-from-country-code"] = settings.OCPI_COUNTRY_CODE
            response["OCPI-from-party-id"] = settings.OCPI_PARTY_ID
        if not getattr(self, "_skip_log", False):
            self.log_message(request, response, partner)
        ocpi_status = getattr(response, "ocpi_status", None)
        metrics.count_request(
            direction="IN",
            partner=partner,
            module=self.module,
            http_status=response.status_code,
            ocpi_status=ocpi_status if isinstance(ocpi_status, int) else None,
        )
        return response

    def log_message(self, request: Request, response: HttpResponse, partner: Partner | None) -> None:
        status_code = None
        response_body = b""
        if isinstance(response, HttpResponse) and not response.streaming:
            response_body = response.content
            if isinstance(response, OcpiResponse):
                status_code = response.ocpi_status
            else:
                try:
                    status_code = orjson.loads(response_body).get("status_code")
                except (orjson.JSONDecodeError, AttributeError):
                    status_code = None
        started = getattr(self, "_started", None)
        try:
            request_body = request._request.body if settings.OCPI_LOG_BODIES else b""
        except Exception:  # RequestDataTooBig, or a stream already consumed: the log must not fail the answer
            request_body = b""
        values = dict(
            partner_id=partner.pk if partner is not None else None,
            direction=OcpiMessage.Direction.IN,
            method=request.method or "",
            url=request.get_full_path()[:500],
            module=self.module,
            http_status=response.status_code,
            ocpi_status=status_code if isinstance(status_code, int) else None,
            request_id=getattr(request._request, "request_id", ""),
            correlation_id=getattr(request._request, "correlation_id", ""),
            duration_ms=int((time.monotonic() - started) * 1000) if started else None,
            request_body=log_body(request_body, self.module),
            response_body=log_body(response_body, self.module) if settings.OCPI_LOG_BODIES else "",
        )
        # Written once the answer is on its way: the WSGI server closes the response after sending it (the test
        # client too), so the partner does not wait for the log's round trip to PostgreSQL. A process killed in
        # between loses that log row, as a PostgreSQL crash may lose the last asynchronously committed ones.
        response._resource_closers.append(lambda: _write_log_row(values))

    def require_own_party(self, country_code: str, party_id: str) -> None:
        """BOLA guard: a partner may only address objects under a party it owns (transport §"Client Owned
        Object Push"); anything else is answered as unknown."""
        if not self.partner.owns(country_code, party_id) or not self.routed_for(country_code, party_id):
            raise OcpiError(CLIENT_ERROR, "Unknown party for this token", 404)

    def routed_party(self) -> tuple[str, str] | None:
        """The party behind a hub this request comes from, or None when it comes from the connection's own."""
        sender = self.from_party
        return None if sender is None or ci_key(*sender) == self.partner.party_key else sender

    def routed_for(self, country_code: str, party_id: str) -> bool:
        """Whether this request may address the party's objects: one a hub routes from a party behind it
        (`OCPI-from-*`) only that party's; one from the connection's own party (a CPO's, a hub's broadcast)
        those of every party granted to it."""
        sender = self.routed_party()
        return sender is None or ci_key(*sender) == ci_key(country_code, party_id)

    def accept(self, normalize: Normalizer, body: dict[str, Any], object_id: str, **kwargs: Any) -> dict[str, Any]:
        """`normalized`, with its data-quality findings kept against `object_id` (`note_findings`)."""
        clean, issues = normalized(normalize, body, **kwargs)
        self.note_findings(object_id, issues)
        return clean

    def accept_party_object(
        self, normalize: Normalizer, body: dict[str, Any], country_code: str, party_id: str, object_id: str
    ) -> dict[str, Any]:
        """A whole CPO-owned object PUT at /{country_code}/{party_id}/{object_id}: the party must be the
        caller's, and the body's id and party those of the URL (a missing id is taken from it).

        The party is compared as the normaliser reads it, not as the body spells it: it takes camelCase
        `countryCode`/`partyId` (canonical_fields) and an alpha-3 country for the party too, and the stores key the
        object on what it read. Checked on the raw snake_case keys only, a camelCase party had put a session over
        another partner's and stored a tariff under a party nobody holds (as ocpi/sync.py::ingest_page checks)."""
        self.require_own_party(country_code, party_id)
        body = body_with_url_id(body, "id", object_id)
        clean, issues = normalized(normalize, body, country_code=country_code, party_id=party_id)
        patch_matches_url(clean, id=object_id, country_code=country_code, party_id=party_id)
        self.note_findings(object_id, issues)
        return clean

    def note_findings(self, object_id: str, issues: Iterable[Issue]) -> None:
        """Keep the findings of an object this request is taking; `record_findings` records them once the store has
        taken it. A refused object (2001; 404 for one we don't hold, or whose party has moved) is the answer, not a
        finding: recorded at once, a PATCH of a location we don't hold, a tariff of a party no longer held, a
        session PATCH refused as inconsistent and an EVSE PATCH rolled back for its listed connector had each left
        findings of objects we never took."""
        self._findings.extend((object_id, i) for i in issues)

    def record_findings(self) -> None:
        """The findings noted (`note_findings`), recorded: called once the store has taken the object(s)."""
        if self._findings:
            record_issues(self.partner, self.module, self._findings)
            self._findings = []

    def forget_findings_since(self, mark: int) -> None:
        """Drop the findings noted after the first `mark` (`len(self._findings)` then): the objects they were
        noted for were rolled back (a transaction run again after a deadlock notes them again)."""
        del self._findings[mark:]


def patch_matches_url(body: dict[str, Any], **url_ids: str) -> None:
    """A PATCH body that repeats its object's ids (some CPOs send the whole object) must name the object of the
    URL, as a PUT must (transport_and_format: a differing id is 2001); a PATCH never moves an object to another
    id or party. Fields left out are fine: a PATCH holds only what changed. Asked of the normalised object too
    (`accept_party_object`), where a camelCase `countryCode` has become `country_code`."""
    for field, url_value in url_ids.items():
        object_matches_url(body, field, url_value)


def normalized(normalize: Normalizer, body: Any, **kwargs: Any) -> tuple[dict[str, Any], list[Issue]]:
    """An ocpi.normalize function applied to a request body; an unusable object is OCPI 2001 naming the field."""
    try:
        return normalize(body, **kwargs)
    except Rejected as exc:
        raise OcpiError(INVALID_PARAMETERS, f"{exc.path}: {exc.reason}") from exc


def object_matches_url(obj: dict[str, Any], field: str, url_value: str) -> None:
    """The id in the body must equal the id in the URL (case-insensitive CiString), else 2001."""
    value = obj.get(field)
    if value is not None and str(value).strip().upper() != url_value.strip().upper():
        raise OcpiError(INVALID_PARAMETERS, f"{field} in the body ({value}) differs from the URL ({url_value})")


def body_with_url_id(body: dict[str, Any], field: str, url_value: str) -> dict[str, Any]:
    """The body of a PUT with its id `field` checked against the URL (object_matches_url), or taken from it."""
    object_matches_url(body, field, url_value)
    return {**body, field: body.get(field, url_value)}


def absolute_url(path: str) -> str:
    """A URL we hand to partners: always on PUBLIC_BASE_URL."""
    return f"{settings.PUBLIC_BASE_URL}{path}"
