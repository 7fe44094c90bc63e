"""OCPI requests through the lane without the console's middlewares (ocpi/wsgi_lane.py) are answered as through
the whole stack: the same status, body and headers for answers, refusals, hostile ids and unknown paths, and
everything that is not OCPI still crosses every middleware."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.db import transaction

from emsp.models import Partner, hash_token
from ocpi.wsgi_lane import OcpiLane
from tests.conftest import CPO_TOKEN
from tests.factories import TokenFactory, stored_location
from tests.wsgi_calls import call_wsgi

pytestmark = pytest.mark.django_db

AUTH = {"Authorization": "Token " + base64.b64encode(CPO_TOKEN.encode()).decode()}
EVSE = "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/LOC1-E1"
IDS = {"X-Request-ID": "req-ocpi-lane", "X-Correlation-ID": "corr-ocpi-lane"}


def call(app: Any, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> tuple:
    status, response_headers, content = call_wsgi(app, method, path, body, {**IDS, **(headers or {})})
    return status, sorted(h for h in response_headers if h[0].lower() != "date"), content


def comparable(content: bytes) -> Any:
    """The body without what differs on every call (the envelope's time, a new authorization reference)."""
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content
    if isinstance(body, dict):
        body.pop("timestamp", None)
        if isinstance(body.get("data"), dict):
            body["data"].pop("authorization_reference", None)
    return body


def alike(answer: tuple, expected: tuple) -> bool:
    """Two (status, headers, body) answers the same but for what differs on every call (see comparable). The
    envelope's time is 4 bytes shorter in a whole second (no `.mmm`), so each Content-Length is held to its own
    body rather than to the other's."""

    def seen(status: str, headers: list[tuple[str, str]], content: bytes) -> tuple:
        lengths = [v for k, v in headers if k.lower() == "content-length"]
        assert lengths in ([], [str(len(content))]), (lengths, len(content))
        return status, [h for h in headers if h[0].lower() != "content-length"], comparable(content)

    return seen(*answer) == seen(*expected)


@pytest.fixture
def apps() -> tuple[WSGIHandler, OcpiLane]:
    whole = WSGIHandler()
    return whole, OcpiLane(whole)


def test_the_lane_leaves_out_only_the_consoles_middlewares() -> None:
    assert set(settings.MIDDLEWARE) - set(settings.OCPI_MIDDLEWARE) == settings.CONSOLE_ONLY_MIDDLEWARE
    assert "django.middleware.security.SecurityMiddleware" in settings.OCPI_MIDDLEWARE
    assert "emsp.middleware.RequestIdMiddleware" in settings.OCPI_MIDDLEWARE
    lane = OcpiLane(WSGIHandler())
    chain = lane.ocpi._middleware_chain
    names = set()
    while chain is not None:  # each middleware (wrapped by Django's exception handling) holds the next one
        chain = getattr(chain, "__wrapped__", chain)
        names.add(type(chain).__name__)
        chain = getattr(chain, "get_response", None)
    assert "SessionMiddleware" not in names and "CsrfViewMiddleware" not in names
    assert {"SecurityMiddleware", "RequestIdMiddleware", "MetricsMiddleware"} <= names


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("GET", "/ocpi/versions", b"", AUTH),
        ("GET", "/ocpi/2.2.1", b"", AUTH),
        ("GET", "/ocpi/versions", b"", {}),  # no token: 401
        ("GET", "/ocpi/versions", b"", {"Authorization": "Token bm9wZQ=="}),  # unknown token: 401
        ("PATCH", EVSE, b'{"status": "CHARGING", "last_updated": "2026-03-01T10:00:00Z"}', AUTH),
        ("PATCH", EVSE, b'{"status": ', AUTH),  # bad JSON: 400
        ("PATCH", "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/NOPE", b'{"status": "CHARGING"}', AUTH),
        ("PUT", "/ocpi/emsp/2.2.1/locations/NL/XXX/LOC9", b'{"id": "LOC9"}', AUTH),  # another party's
        ("GET", "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC%01X", b"", AUTH),  # a control character in the id
        ("POST", "/ocpi/emsp/2.2.1/tokens/TOK-LANE/authorize", b'{"location_id": "LOC1"}', AUTH),
        ("POST", "/ocpi/emsp/2.2.1/tokens/UNKNOWN/authorize", b"", AUTH),  # 404 + 2004
        ("DELETE", "/ocpi/emsp/2.2.1/tokens", b"", AUTH),  # method not allowed
        ("GET", "/ocpi/no/such/module", b"", AUTH),  # Django's 404
    ],
)
def test_an_ocpi_answer_is_the_same_through_the_lane(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, method: str, path: str, body: bytes, headers: dict
) -> None:
    stored_location(partner, location_id="LOC1", evses=1)
    TokenFactory(uid="TOK-LANE")
    whole, lane = apps
    status, head, content = call(whole, method, path, body, headers)
    lane_status, lane_head, lane_content = call(lane, method, path, body, headers)
    assert alike((lane_status, lane_head, lane_content), (status, head, content))


def test_ocpi_requests_and_only_they_take_the_lanes_handler(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner
) -> None:
    _, lane = apps
    handler, served = lane.ocpi, []

    def observed(environ: dict[str, Any], start_response: Any) -> Any:  # the lane's handler, watched
        served.append(environ["PATH_INFO"])
        return handler(environ, start_response)

    lane.ocpi = observed  # type: ignore[assignment]
    assert call(lane, "GET", "/ocpi/versions", headers=AUTH)[0].startswith("200")
    assert call(lane, "GET", "/admin/login/")[0].startswith("200")
    assert call(lane, "GET", "/ocpiversions")[0].startswith("404")
    assert served == ["/ocpi/versions"]


def test_what_is_not_ocpi_crosses_every_middleware(apps: tuple[WSGIHandler, OcpiLane]) -> None:
    _, lane = apps
    status, head, _ = call(lane, "GET", "/admin/login/")
    assert status.startswith("200")
    # The login form's CSRF cookie: CsrfViewMiddleware, left out of the OCPI lane, ran.
    assert any(name == "Set-Cookie" and value.strip().startswith("csrftoken=") for name, value in head)


def test_the_message_log_row_is_written_after_the_answer_is_sent(partner: Partner) -> None:
    """The row is written when the server closes the response (after sending it), so the partner never waits
    for it; a write that fails is logged, and the answer it followed stands."""
    from django.test import RequestFactory

    from emsp.wsgi import application
    from ocpi.models import OcpiMessage
    from tests.wsgi_calls import connections_kept

    stored_location(partner, location_id="LOC1", evses=1)
    before = OcpiMessage.objects.count()
    body = b'{"status": "CHARGING", "last_updated": "2024-05-01T10:00:00Z"}'
    environ = RequestFactory().generic("PATCH", EVSE, data=body, content_type="application/json", headers=AUTH).environ
    seen: dict[str, Any] = {}
    with connections_kept():
        answer = application(environ, lambda status, headers, exc_info=None: seen.update(status=status))
        assert b'"status_code":1000' in b"".join(answer) and seen["status"].startswith("200")
        assert OcpiMessage.objects.count() == before  # sent, not logged yet
        answer.close()
    row = OcpiMessage.objects.latest("id")
    assert OcpiMessage.objects.count() == before + 1 and row.http_status == 200 and row.ocpi_status == 1000

    environ = RequestFactory().generic("PATCH", EVSE, data=body, content_type="application/json", headers=AUTH).environ
    errors: list[tuple[Any, ...]] = []
    with connections_kept(), pytest.MonkeyPatch.context() as patch:
        patch.setattr("ocpi.transport._INSERT_MESSAGE", "INSERT INTO no_such_table VALUES (%s)")
        patch.setattr("ocpi.transport.log.exception", lambda *args, **kwargs: errors.append(args))
        answer = application(environ, lambda status, headers, exc_info=None: seen.update(status=status))
        assert seen["status"].startswith("200") and b"".join(answer)
        answer.close()  # no exception reaches the server
    assert [e[0] for e in errors] == ["could not write the OCPI message log row of %s %s (request %s)"]
    assert errors[0][1] == "PATCH" and errors[0][3]  # the request id, the context var being gone by then
    assert OcpiMessage.objects.count() == before + 1


# --- the EVSE status PATCH, called straight from the lane ---------------------------------------------------------

STATUS = b'{"status": "CHARGING", "last_updated": "2026-03-01T10:00:00Z"}'


def watched(lane: OcpiLane) -> list[str]:
    """The paths the lane hands to its OCPI handler (the others it answered through a direct route)."""
    handler, handed = lane.ocpi, []

    def observed(environ: dict[str, Any], start_response: Any) -> Any:
        handed.append(environ["PATH_INFO"])
        return handler(environ, start_response)

    lane.ocpi = observed  # type: ignore[assignment]
    return handed


def made_ids(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers with ids we made (new UUIDs on each call) as one placeholder."""
    ids = ("X-Request-ID", "X-Correlation-ID")
    return [(k, "<made>" if k in ids and re.fullmatch(r"[0-9a-f-]{36}", v) else v) for k, v in headers]


def both(whole: WSGIHandler, lane: OcpiLane, method: str, path: str, body: bytes, headers: dict) -> tuple:
    """Django's whole stack, then the lane, each from the same database state (the first one's writes undone)."""
    with transaction.atomic():
        expected = call(whole, method, path, body, headers)
        transaction.set_rollback(True)
    return expected, call(lane, method, path, body, headers)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (EVSE, STATUS, AUTH),
        (EVSE, b'[{"status": "BLOCKED", "last_updated": "2026-03-01T10:00:00Z"}]', AUTH),  # wrapped in a list
        (EVSE, b'{"status": "CHARGING", "last_updated": "2026-03-01T10:00:00+02:00"}', AUTH),  # an offset
        (EVSE, b'{"status": "CHAR\\u0000GING", "last_updated": "2026-03-01T10:00:00Z"}', AUTH),  # a NUL
        (EVSE, b'{"status": "CHARGING", "last_updated": "9999-12-31T23:59:59Z"}', AUTH),  # an absurd date
        (EVSE, b'{"status": "CHARGING", "last_updated": 1e999}', AUTH),  # a huge number
        (EVSE, b'{"status": "CHARGING", "floor_level": "' + b"9" * 5000 + b'"}', AUTH),
        (EVSE, b'{"status": "NAPPING", "last_updated": "2026-03-01T10:00:00Z"}', AUTH),  # not a status
        (EVSE, b'{"status": ', AUTH),  # not JSON
        (EVSE, b"", AUTH),  # no body
        (EVSE, b"[1, 2]", AUTH),  # not an object
        (EVSE, STATUS, {}),  # no token
        (EVSE, STATUS, {"Authorization": "Token bm9wZQ=="}),  # an unknown token
        (EVSE, STATUS, {**AUTH, "OCPI-from-country-code": "NL", "OCPI-from-party-id": "XXX"}),  # a stray header
        (EVSE, STATUS, {**AUTH, "X-Request-ID": "bad id\x01", "X-Correlation-ID": ""}),  # unusable ids: made
        ("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/NOPE", STATUS, AUTH),  # an EVSE we don't have
        ("/ocpi/emsp/2.2.1/locations/NL/XXX/LOC1/LOC1-E1", STATUS, AUTH),  # another party's
        ("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/E\x01", STATUS, AUTH),  # a control character in the id
        ("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/" + "E" * 40, STATUS, AUTH),  # an id too long
        ("/ocpi/emsp/2.2.1/locations/INDIA/CPA/LOC1/LOC1-E1", STATUS, AUTH),  # a country code too long
    ],
)
def test_the_evse_patch_is_answered_directly_and_as_django_answers_it(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, path: str, body: bytes, headers: dict
) -> None:
    stored_location(partner, location_id="LOC1", evses=1)
    whole, lane = apps
    handed = watched(lane)
    (status, head, content), (lane_status, lane_head, lane_content) = both(whole, lane, "PATCH", path, body, headers)
    assert alike((lane_status, made_ids(lane_head), lane_content), (status, made_ids(head), content))
    assert handed == []  # answered by the direct route
    assert dict(lane_head)["Content-Length"] == str(len(lane_content))


def test_the_direct_patch_does_the_work_and_logs_it_after_the_answer(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner
) -> None:
    from emsp.models import Evse
    from ocpi.models import OcpiMessage

    stored_location(partner, location_id="LOC1", evses=1)
    _, lane = apps
    handed = watched(lane)
    status, head, content = call(lane, "PATCH", EVSE, STATUS, AUTH)
    assert status == "200 OK" and orjson.loads(content)["status_code"] == 1000 and handed == []
    assert Evse.objects.get(uid="LOC1-E1").status == "CHARGING"
    row = OcpiMessage.objects.latest("id")
    assert (row.method, row.module, row.http_status, row.ocpi_status) == ("PATCH", "locations", 200, 1000)
    assert (row.request_id, row.correlation_id, row.partner_id) == ("req-ocpi-lane", "corr-ocpi-lane", partner.pk)
    assert dict(head)["OCPI-to-party-id"] == "CPA"


def test_a_rate_limited_partner_gets_the_same_429_directly(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, settings: Any, rate_clock_held: float
) -> None:
    from django.core.cache import cache

    settings.OCPI_RATE_LIMIT_PER_MINUTE = 1
    stored_location(partner, location_id="LOC1", evses=1)
    whole, lane = apps
    handed = watched(lane)
    cache.clear()
    call(whole, "PATCH", EVSE, STATUS, AUTH)  # the minute's one request
    expected = call(whole, "PATCH", EVSE, STATUS, AUTH)
    answered = call(lane, "PATCH", EVSE, STATUS, AUTH)
    assert expected[0].startswith("429") and dict(expected[1])["Retry-After"]
    assert alike(answered, expected)
    assert handed == []


def test_a_body_over_the_limit_is_the_same_413_directly(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    stored_location(partner, location_id="LOC1", evses=1)
    whole, lane = apps
    handed = watched(lane)
    body = b'{"status": "CHARGING", "floor_level": "' + b"x" * 200 + b'"}'
    (status, head, content), answered = both(whole, lane, "PATCH", EVSE, body, AUTH)
    assert status.startswith("413")
    assert alike(answered, (status, head, content))
    assert handed == []


def test_a_failing_view_is_the_same_500_directly(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr("emsp.services.catalogue.evse_patch_at", broken)
    stored_location(partner, location_id="LOC1", evses=1)
    whole, lane = apps
    handed = watched(lane)
    (status, head, content), answered = both(whole, lane, "PATCH", EVSE, STATUS, AUTH)
    assert status.startswith("500") and orjson.loads(content)["status_code"] == 3000
    assert alike(answered, (status, head, content))
    assert handed == []


def test_an_exception_that_escapes_the_view_is_the_same_500_directly(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the view's own error handling (here: counting the answer fails), Django's handler answers, in the
    OCPI envelope (emsp/error_views.py)."""

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("the metrics went away")

    monkeypatch.setattr("ocpi.transport.metrics.count_request", broken)
    stored_location(partner, location_id="LOC1", evses=1)
    whole, lane = apps
    handed = watched(lane)
    (status, head, content), answered = both(whole, lane, "PATCH", EVSE, STATUS, AUTH)
    assert status.startswith("500") and b'"status_code":3000' in content
    assert alike(answered, (status, head, content)) and handed == []


def test_a_streamed_answer_and_the_views_own_headers_directly(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the view stream its answer or set a header a middleware sets, the middlewares' rules hold: no
    Content-Length on a stream, the view's X-Frame-Options kept, the request id replaced."""
    from django.core import signals
    from django.http import StreamingHttpResponse

    from ocpi.views.locations import EvseView

    def streamed(self: Any, request: Any, *args: Any, **kwargs: Any) -> StreamingHttpResponse:
        response = StreamingHttpResponse(iter([b'{"status_code": 1000}']), content_type="application/json")
        response["X-Frame-Options"] = "SAMEORIGIN"
        response["X-Request-ID"] = "set-by-the-view"
        return response

    monkeypatch.setattr(EvseView, "patch", streamed)
    stored_location(partner, location_id="LOC1", evses=1)
    whole, lane = apps
    handed = watched(lane)
    finished: list[Any] = []

    def count(**kwargs: Any) -> None:
        finished.append(kwargs["sender"])

    signals.request_finished.connect(count)
    try:
        expected, answered = both(whole, lane, "PATCH", EVSE, STATUS, AUTH)
    finally:
        signals.request_finished.disconnect(count)
    assert answered == expected and handed == []
    head = dict(answered[1])
    assert "Content-Length" not in head and head["X-Frame-Options"] == "SAMEORIGIN"
    assert head["X-Request-ID"] == "req-ocpi-lane"
    assert len(finished) == 2  # each answer's close() ended its request


def test_a_hub_routes_a_patch_for_its_parties_only(apps: tuple[WSGIHandler, OcpiLane]) -> None:
    from emsp.services.catalogue import locations_store
    from emsp.services.partners import partner_party_grant
    from tests.factories import PartnerFactory, ocpi_location

    hub_token = "hub-token-for-the-lane"
    hub = PartnerFactory(
        country_code="NL", party_id="HUB", role=Partner.Role.HUB, incoming_token_hash=hash_token(hub_token)
    )
    partner_party_grant(partner=hub, country_code="IN", party_id="CPA", by="staff")
    locations_store(Partner.objects.get(pk=hub.pk), [ocpi_location("IN", "CPA", "LOC1", evses=1)])
    auth = {"Authorization": "Token " + base64.b64encode(hub_token.encode()).decode()}
    whole, lane = apps
    handed = watched(lane)
    for party in (("IN", "CPA"), ("DE", "ABC")):
        routed = {**auth, "OCPI-from-country-code": party[0], "OCPI-from-party-id": party[1]}
        (status, head, content), answered = both(whole, lane, "PATCH", EVSE, STATUS, routed)
        assert alike(answered, (status, head, content))
        assert status.startswith("200" if party == ("IN", "CPA") else "404"), content
    assert handed == []


def test_requests_the_middlewares_turn_away_are_left_to_django(partner: Partner, settings: Any) -> None:
    stored_location(partner, location_id="LOC1", evses=1)
    settings.SECURE_SSL_REDIRECT = True  # read when the middlewares are made
    whole = WSGIHandler()
    lane = OcpiLane(whole)
    handed = watched(lane)
    redirect = call(lane, "PATCH", EVSE, STATUS, AUTH)
    assert redirect[0].startswith("301") and redirect == call(whole, "PATCH", EVSE, STATUS, AUTH)
    settings.SECURE_SSL_REDIRECT = False
    settings.ALLOWED_HOSTS = ["testserver"]
    lane = OcpiLane(WSGIHandler())
    handed_too = watched(lane)
    refused = call(lane, "PATCH", EVSE, STATUS, {**AUTH, "Host": "evil.example"})
    assert refused[0].startswith("400")
    assert handed == handed_too == [EVSE]


@pytest.mark.parametrize(
    "path",
    [
        EVSE,
        "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/LOC1-E1/",  # a trailing slash
        "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/LOC1-E1/1",  # a connector
        "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1",  # a location
        "/ocpi/emsp/2.2.1/locations/IN/CPA//LOC1-E1",  # an empty id
        "/ocpi/emsp/2.2.1/locationsIN/CPA/LOC1/LOC1-E1",  # extrawest-ocpi's glued form
        "/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/LOC1-E1",  # another version
        "/ocpi/emsp/2.2.1/locations/IN/CPA/LÖC 1/E.1%",  # odd characters
        "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/LOC1-E1\n",
        "/ocpi/emsp/2.2.1/tokens/TOK-1/authorize",
        "/ocpi/emsp/2.2.1/tokens/TOK-1/authorize/",
        "/ocpi/emsp/2.2.1/tokens//authorize",
        "/ocpi/emsp/2.2.1/tokens/a/b/authorize",
        "/ocpi/emsp/2.1.1/tokens/TOK-1/authorize",
    ],
)
def test_each_direct_route_matches_what_django_resolves(path: str) -> None:
    from django.urls import Resolver404, resolve

    from ocpi.wsgi_lane import DIRECT_ROUTES, direct_route

    routes = [direct_route(*sample) for sample in DIRECT_ROUTES]
    try:
        match = resolve(path)
        resolved = (match.func, match.kwargs)
    except Resolver404:
        resolved = None
    direct = [(r.view, m.groupdict()) for r in routes if (m := r.pattern.fullmatch(path)) is not None]
    served = [resolved] if resolved is not None and any(resolved[0] is r.view for r in routes) else []
    assert direct == served


def test_no_pattern_before_the_direct_route_can_take_its_paths() -> None:
    """Django tries its URL patterns in order: a pattern listed before the EVSE's that could match some of its
    paths would answer them through Django, and not through the direct route."""
    from django.urls import URLResolver, get_resolver

    from ocpi.wsgi_lane import DIRECT_ROUTES, direct_route

    def flattened(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from flattened(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                yield prefix + str(pattern.pattern), pattern.callback

    def segments(route: str) -> list[str | None]:  # None: any segment (a converter)
        return [None if part.startswith("<") else part for part in route.split("/")]

    for method, sample in DIRECT_ROUTES:
        route = direct_route(method, sample)
        target = segments(route.label.lstrip("/"))
        earlier = []
        for text, callback in flattened(get_resolver().url_patterns):
            if callback is route.view:
                break
            earlier.append(text)
        assert earlier, "the route is listed"
        for text in earlier:
            if text.startswith("^") or "(?P" in text:  # a regular expression: try it on the route's own sample
                assert not re.search(text, sample.lstrip("/")), text
                continue
            other = segments(text)
            overlaps = len(other) == len(target) and all(
                a is None or b is None or a == b for a, b in zip(other, target, strict=True)
            )
            assert not overlaps, f"{text} is tried before {route.label}"


def test_with_a_transaction_per_request_every_request_goes_through_django(
    partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ATOMIC_REQUESTS wraps each view in a transaction in Django's handler: the lane then serves nothing directly."""
    from django.db import connection

    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    lane = OcpiLane(WSGIHandler())
    assert lane.direct == []
    handed = watched(lane)
    stored_location(partner, location_id="LOC1", evses=1)
    assert call(lane, "PATCH", EVSE, STATUS, AUTH)[0] == "200 OK" and handed == [EVSE]


AUTHORIZE = "/ocpi/emsp/2.2.1/tokens/TOK-LANE/authorize"


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        (AUTHORIZE, b'{"location_id": "LOC1", "evse_uids": ["LOC1-E1"]}', AUTH),
        (AUTHORIZE, b"", AUTH),  # no LocationReferences
        (AUTHORIZE + "?type=RFID", b'{"location_id": "LOC1"}', AUTH),
        (AUTHORIZE + "?type=NOPE", b'{"location_id": "LOC1"}', AUTH),  # not a TokenType
        (AUTHORIZE, b'{"location_id": "LOC\\u00001"}', AUTH),  # a NUL
        (AUTHORIZE, b'{"location_id": 1e999}', AUTH),  # a huge number
        (AUTHORIZE, b'{"location_id": "LOC1", "evse_uids": "LOC1-E1"}', AUTH),  # not a list
        (AUTHORIZE, b"[", AUTH),  # not JSON
        (AUTHORIZE, b'{"location_id": "LOC1"}', {}),  # no token
        (AUTHORIZE, b'{"location_id": "LOC1"}', {**AUTH, "OCPI-from-country-code": "NL", "OCPI-from-party-id": "X"}),
        ("/ocpi/emsp/2.2.1/tokens/UNKNOWN/authorize", b"", AUTH),  # 404 + 2004
        ("/ocpi/emsp/2.2.1/tokens/TOK\x01/authorize", b"", AUTH),  # a control character in the uid
        ("/ocpi/emsp/2.2.1/tokens/" + "T" * 37 + "/authorize", b"", AUTH),  # a uid too long
    ],
)
def test_a_real_time_authorization_is_answered_directly_and_as_django_answers_it(
    apps: tuple[WSGIHandler, OcpiLane], partner: Partner, path: str, body: bytes, headers: dict
) -> None:
    stored_location(partner, location_id="LOC1", evses=1)
    TokenFactory(uid="TOK-LANE")
    whole, lane = apps
    handed = watched(lane)
    (status, head, content), answered = both(whole, lane, "POST", path, body, headers)
    assert alike(answered, (status, head, content))
    assert handed == []


def test_djangos_4xx_log_line_is_the_same_directly(apps: tuple[WSGIHandler, OcpiLane], partner: Partner) -> None:
    """Django's handler logs a 4xx after the middlewares have answered (the ids' context already reset): so does
    the direct route."""
    import logging

    from emsp.logs import ContextFilter

    class Kept(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.addFilter(ContextFilter())
            self.lines: list[tuple[str, str, str]] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.lines.append((record.getMessage(), record.request_id, record.correlation_id))  # type: ignore[attr-defined]

    stored_location(partner, location_id="LOC1", evses=1)
    whole, lane = apps
    handed = watched(lane)
    kept = Kept()
    logger = logging.getLogger("django.request")
    logger.addHandler(kept)
    try:
        unknown = "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/NOPE"
        both(whole, lane, "PATCH", unknown, STATUS, AUTH)
    finally:
        logger.removeHandler(kept)
    assert handed == [] and len(kept.lines) == 2
    assert kept.lines[0] == kept.lines[1]
    assert kept.lines[0][0] == "Not Found: /ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/NOPE"
