"""OCPI requests through the lane without the console's middlewares (ocpi/wsgi_lane.py) are answered as through
the whole stack: the same status, body and headers for answers, refusals, hostile ids and unknown paths, and
everything that is not OCPI still crosses every middleware."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler

from emsp.models import Partner
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
    assert (lane_status, lane_head, comparable(lane_content)) == (status, head, comparable(content))


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
