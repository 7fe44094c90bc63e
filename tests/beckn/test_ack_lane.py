"""The WSGI fast lane (beckn/ack_lane.py) answers POST /beckn/{action} exactly as Django does: the same status,
body and headers for an ACK, a duplicate, each kind of NACK, and it hands Django what it must not answer itself
(another method or path, a host not allowed, the HTTPS redirect). The work it queues runs the same."""

from __future__ import annotations

import base64
import functools
import gc
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.test import Client

from beckn.ack_lane import AckLane
from beckn.models import BecknMessage
from emsp import ratelimit
from emsp.metrics import HTTP_REQUESTS
from emsp.wsgi import application, django_application
from ocpi.wsgi_lane import OcpiLane
from tests.wsgi_calls import call_wsgi

pytestmark = pytest.mark.django_db

SEARCH = {
    "intent": {
        "fulfillment": {
            "stops": [{"location": {"circle": {"gps": "12.971599,77.594566", "radius": {"value": "5", "unit": "km"}}}}]
        }
    }
}
LANE = AckLane(django_application)
REQUEST_IDS = {"X-Request-ID": "req-lane-1", "X-Correlation-ID": "corr-lane-1"}


class LaneResponse:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status_code = int(status.split(" ", 1)[0])
        self.headers = {k.lower(): v for k, v in headers}
        self.content = body


def through_lane(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, lane: AckLane = LANE, **extra: Any
) -> LaneResponse:
    return LaneResponse(*call_wsgi(lane, method, path, body, headers, **extra))


def both(bap: Any, endpoint: str, make_body: Any, *, signed: bool = True, headers: dict[str, str] | None = None):
    """The same kind of request through Django (the test client) and through the lane, each its own body."""
    test_bap = bap.bap
    sent = {**REQUEST_IDS, **(headers or {})}
    with bap.capture(execute=True):
        body = make_body(test_bap)
        django = test_bap.post(endpoint, {}, raw=body, signed=signed, headers=sent)
    with bap.capture(execute=True):
        body = make_body(test_bap)
        auth = {"Authorization": test_bap.sign(body)} if signed else {}
        lane = through_lane("POST", f"/beckn/{endpoint}", body, {**auth, **sent})
    return django, lane


def assert_same(django: Any, lane: LaneResponse) -> None:
    assert lane.status_code == django.status_code
    assert orjson.loads(lane.content) == orjson.loads(django.content)
    assert lane.headers == {k.lower(): v for k, v in django.headers.items()}


def search_body(test_bap: Any, **context: Any) -> bytes:
    return orjson.dumps({"context": test_bap.context("search", **context), "message": SEARCH})


def test_gunicorn_serves_the_lanes_in_front_of_django() -> None:
    assert isinstance(application, OcpiLane)  # the outermost: /ocpi/ to its own handler, the rest on
    assert isinstance(application.application, AckLane)
    assert application.application.django_app is django_application
    assert gc.get_freeze_count() > 10_000  # what loading made is out of the collector's walks (emsp/wsgi.py)


def test_an_ack_is_the_same_and_its_work_runs(bap: Any) -> None:
    django, lane = both(bap, "search", search_body)
    assert_same(django, lane)
    assert lane.status_code == 200
    assert lane.headers["x-request-id"] == "req-lane-1"
    assert {"x-content-type-options", "x-frame-options", "content-length"} <= set(lane.headers)
    assert BecknMessage.objects.filter(action="search").count() == 2  # both handled: recorded, answered
    assert len(bap.bap.callbacks("on_search")) == 2


def test_over_https_the_same_security_headers(bap: Any, settings: Any) -> None:
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_REFERRER_POLICY = "no-referrer"
    lane = AckLane(get_wsgi_application())  # middlewares read their settings when made
    test_bap = bap.bap
    answers = []
    for path in ("django", "lane"):
        body = search_body(test_bap)
        sent = {"Authorization": test_bap.sign(body), **REQUEST_IDS}
        with bap.capture(execute=True):
            if path == "django":
                answers.append(
                    Client().post("/beckn/search", body, content_type="application/json", headers=sent, secure=True)
                )
            else:
                answers.append(through_lane("POST", "/beckn/search", body, sent, lane=lane, secure=True))
    django, over_lane = answers
    assert_same(django, over_lane)
    assert over_lane.headers["strict-transport-security"] == "max-age=3600; includeSubDomains"
    assert over_lane.headers["referrer-policy"] == "no-referrer"


def test_a_repeated_message_id_gets_the_same_ack_and_nothing_else(bap: Any) -> None:
    test_bap = bap.bap
    body = search_body(test_bap)
    with bap.capture(execute=True):
        first = through_lane("POST", "/beckn/search", body, {"Authorization": test_bap.sign(body)})
        again = through_lane("POST", "/beckn/search", body, {"Authorization": test_bap.sign(body)})
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.content == again.content
    assert BecknMessage.objects.filter(action="search").count() == 1
    assert len(test_bap.callbacks("on_search")) == 1


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unsigned", 401),
        ("wrong_action", 400),
        ("not_json", 400),
        ("too_large", 413),
        ("foreign_bap_uri", 400),
    ],
)
def test_each_nack_is_the_same(bap: Any, settings: Any, case: str, status: int) -> None:
    settings.BECKN_MAX_BODY_BYTES = 4096
    makers = {
        "unsigned": search_body,
        "wrong_action": lambda b: search_body(b, action="select"),
        "not_json": lambda b: b'{"context": ',
        "too_large": lambda b: orjson.dumps({"context": b.context("search"), "message": {"pad": "x" * 5000}}),
        "foreign_bap_uri": lambda b: search_body(b, bap_uri="https://elsewhere.example/beckn"),
    }
    django, lane = both(bap, "search", makers[case], signed=case != "unsigned")
    assert_same(django, lane)
    assert lane.status_code == status
    assert orjson.loads(lane.content)["message"]["ack"]["status"] == "NACK"
    assert BecknMessage.objects.count() == 0


def test_the_rate_limit_nack_is_the_same(bap: Any, settings: Any, rate_clock_held: float) -> None:
    settings.BECKN_RATE_LIMIT_PER_MINUTE = 1
    answers = []
    for path in ("django", "lane"):
        client = ratelimit.redis_client()
        if client is not None:
            for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}beckn:*"):
                client.delete(key)
        else:
            from django.core.cache import cache

            cache.clear()
        test_bap = bap.bap
        with bap.capture(execute=True):
            for _ in range(2):
                body = search_body(test_bap)
                if path == "django":
                    last = test_bap.post("search", {}, raw=body, headers=REQUEST_IDS)
                else:
                    signed = {"Authorization": test_bap.sign(body), **REQUEST_IDS}
                    last = through_lane("POST", "/beckn/search", body, signed)
        answers.append(last)
    django, lane = answers
    assert lane.status_code == 429
    assert lane.headers["retry-after"] == django.headers["Retry-After"]
    assert_same(django, lane)


def test_the_lane_counts_requests_under_djangos_route_label(bap: Any) -> None:
    counter = HTTP_REQUESTS.labels("/beckn/<str:action>", "POST", "200")
    before = counter._value.get()
    both(bap, "search", search_body)
    assert counter._value.get() == before + 2  # one each: Django's route label and the lane's are the same


def test_what_the_lane_does_not_answer_goes_to_django(bap: Any, settings: Any) -> None:
    test_bap = bap.bap
    body = search_body(test_bap)
    signed = {"Authorization": test_bap.sign(body)}
    unknown = through_lane("POST", "/beckn/teleport", body, signed)
    assert unknown.status_code == 404
    assert orjson.loads(unknown.content)["error"]["code"] == "40001"
    got = through_lane("GET", "/beckn/search")
    assert got.status_code == test_bap.client.get("/beckn/search").status_code == 405
    settings.ALLOWED_HOSTS = ["testserver"]
    assert through_lane("POST", "/beckn/search", body, signed, HTTP_HOST="evil.example").status_code == 400
    settings.SECURE_SSL_REDIRECT = True
    fresh = AckLane(get_wsgi_application())  # middlewares read their settings when made
    redirected = through_lane("POST", "/beckn/search", body, signed, lane=fresh)
    assert redirected.status_code == 301
    assert redirected.headers["location"].startswith("https://")
    assert BecknMessage.objects.count() == 0


def test_the_ack_queues_once_per_message_id_and_not_when_the_queue_fails(bap: Any, live_queue: Any) -> None:
    """On Redis the ACK queues through emsp/queue_push.py: the message-id key and the task go together."""
    test_bap = bap.bap
    body = orjson.dumps({"context": test_bap.context("search"), "message": {"intent": {}}})

    def post() -> Any:
        return through_lane("POST", "/beckn/search", body, {"Authorization": test_bap.sign(body), **REQUEST_IDS})

    live_queue.set(settings.LATENCY_QUEUE, "not a list")
    refused = post()
    assert refused.status_code == 503
    assert orjson.loads(refused.content)["error"]["code"] == "50000"
    live_queue.delete(settings.LATENCY_QUEUE)
    assert [post().status_code for _ in range(3)] == [200, 200, 200]  # the retry is taken; repeats are not
    (raw,) = live_queue.lrange(settings.LATENCY_QUEUE, 0, -1)
    message = orjson.loads(raw)
    assert message["headers"]["task"] == "beckn.tasks.handle_request"
    assert message["headers"]["emsp_request_id"] == "req-lane-1"
    assert orjson.loads(base64.b64decode(message["body"]))[0][1] == body.decode()


def signed_search_through_lane(test_bap: Any, **context: Any) -> LaneResponse:
    body = search_body(test_bap, **context)
    return through_lane("POST", "/beckn/search", body, {"Authorization": test_bap.sign(body), **REQUEST_IDS})


def _rate_counts_cleared(client: Any) -> None:
    for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}beckn:*"):
        client.delete(key)


def test_on_redis_the_rate_limit_rides_in_the_same_script(bap: Any, live_queue: Any, settings: Any) -> None:
    """One round trip counts the rate, sets the message id and queues; over the limit: 429, nothing queued."""
    settings.BECKN_RATE_LIMIT_PER_MINUTE = 2
    _rate_counts_cleared(live_queue)
    post = functools.partial(signed_search_through_lane, bap.bap)

    assert [post().status_code for _ in range(2)] == [200, 200]
    refused = post()
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    error = orjson.loads(refused.content)["error"]
    assert error["code"] == "50000"
    assert "at most 2 requests a minute" in error["message"]
    assert post(action="select").status_code == 429  # over the limit is said before what is wrong with it
    assert live_queue.llen(settings.LATENCY_QUEUE) == 2
    (counter,) = [k for k in live_queue.scan_iter(f"{ratelimit.KEY_PREFIX}beckn:*") if int(live_queue.get(k)) > 0]
    assert int(live_queue.get(counter)) == 4  # each verified request counted once, refused ones too


def test_on_redis_a_request_failing_its_checks_still_counts(bap: Any, live_queue: Any, settings: Any) -> None:
    settings.BECKN_RATE_LIMIT_PER_MINUTE = 3
    _rate_counts_cleared(live_queue)
    post = functools.partial(signed_search_through_lane, bap.bap)

    assert post(action="select").status_code == 400
    assert [post().status_code for _ in range(3)] == [200, 200, 429]
    assert live_queue.llen(settings.LATENCY_QUEUE) == 2
