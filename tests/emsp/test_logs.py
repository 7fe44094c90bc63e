"""Logs (emsp/logs.py, settings.LOGGING): JSON or text lines with the request and correlation ids, carried from a
request into the Celery task it queues and the outbound call that task makes; secrets and personal data
masked; Sentry error reports (emsp/sentry.py) with the same ids and nothing secret."""

from __future__ import annotations

import gzip
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django.utils.module_loading import import_string

from emsp.middleware import RequestIdMiddleware, correlation_id_var, request_id_var
from emsp.models import Partner
from emsp.services.tokens import token_issue
from tests.factories import DriverFactory, PartnerFactory
from tests.fakes import envelope

REPO = Path(__file__).resolve().parents[2]


class Capture(logging.Handler):
    """A handler built exactly as settings.LOGGING builds the console one (its filters, in order, and the
    formatter for `fmt`), writing to a list."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        conf = settings.LOGGING
        for name in conf["handlers"]["console"]["filters"]:
            self.addFilter(import_string(conf["filters"][name]["()"])())
        self.setFormatter(import_string(conf["formatters"][fmt]["()"])())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def json(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


@pytest.fixture
def capture() -> Iterator[Any]:
    attached: list[tuple[logging.Logger, Capture, int]] = []

    def attach(logger_name: str, fmt: str = "json") -> Capture:
        logger = logging.getLogger(logger_name)
        handler = Capture(fmt)
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return handler

    yield attach
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


def in_request(view: Any, **headers: str) -> HttpResponse:
    """`view` behind the request-id middleware, as a request with these headers."""
    return RequestIdMiddleware(view)(RequestFactory().post("/", headers=headers))


# --- Line shape ---------------------------------------------------------------------------------------------


def test_it_writes_one_json_object_per_line_with_the_ids(capture: Any) -> None:
    lines = capture("tests.logs.shape")
    log = logging.getLogger("tests.logs.shape")

    def view(request: HttpRequest) -> HttpResponse:
        log.warning("pushed %s to %s", "TOKEN1", "CPA", extra={"partner": 7, "elapsed_ms": 12})
        try:
            raise ValueError("bad answer")
        except ValueError:
            log.exception("push failed")
        return HttpResponse()

    in_request(view, **{"X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"})
    log.info("outside")
    first, failed, outside = lines.json()
    assert first["message"] == "pushed TOKEN1 to CPA"
    assert (first["level"], first["logger"]) == ("WARNING", "tests.logs.shape")
    assert (first["request_id"], first["correlation_id"]) == ("req-1", "corr-1")
    assert (first["partner"], first["elapsed_ms"]) == (7, 12)
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert "task_id" not in first
    assert failed["exc_type"] == "ValueError"
    assert "Traceback" in failed["exception"] and "bad answer" in failed["exception"]
    assert (outside["request_id"], outside["correlation_id"]) == ("-", "-")
    assert all("\n" not in line for line in lines.lines)


def test_it_writes_readable_text_lines_in_text_mode(capture: Any) -> None:
    lines = capture("tests.logs.text", fmt="text")
    in_request(
        lambda request: logging.getLogger("tests.logs.text").info("hello %s", "world") or HttpResponse(),
        **{"X-Request-ID": "req-2", "X-Correlation-ID": "corr-2"},
    )
    (line,) = lines.lines
    assert line.endswith(" INFO tests.logs.text [req=req-2 corr=corr-2] hello world")


def run_settings(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={"PATH": os.environ.get("PATH", ""), "DJANGO_SETTINGS_MODULE": "emsp.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


FORMATTER = "from django.conf import settings; print(settings.LOGGING['handlers']['console']['formatter'])"


def test_it_logs_json_in_production_and_text_in_development_unless_told() -> None:
    from tests.test_safe_defaults import SAFE_ENV

    assert run_settings(SAFE_ENV, FORMATTER).stdout.strip() == "json"
    assert run_settings({"DJANGO_ENV": "development"}, FORMATTER).stdout.strip() == "text"
    assert run_settings({"DJANGO_ENV": "development", "LOG_FORMAT": "json"}, FORMATTER).stdout.strip() == "json"
    refused = run_settings({"DJANGO_ENV": "development", "LOG_FORMAT": "xml"}, FORMATTER)
    assert refused.returncode != 0 and "LOG_FORMAT must be json or text" in refused.stderr


# --- Ids into tasks and outbound calls ------------------------------------------------------------------------


class Peer:
    """A CPO's tokens endpoint on 127.0.0.1 that records the headers of each request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.requests.append({k.lower(): v for k, v in self.headers.items()})
                body = orjson.dumps(envelope())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int = 1, timeout: float = 10) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.requests


@pytest.fixture
def peer_server() -> Iterator[Peer]:
    peer = Peer()
    yield peer
    peer.server.shutdown()
    peer.server.server_close()


def cpo_at(peer: Peer) -> Partner:
    return PartnerFactory(
        endpoints=[{"identifier": "tokens", "role": "RECEIVER", "url": f"{peer.url}/ocpi/cpo/2.2.1/tokens"}]
    )


def outbound_lines(lines: Capture) -> list[dict[str, Any]]:
    return [line for line in lines.json() if line["logger"] == "emsp.outbound"]


@pytest.mark.django_db
def test_a_task_run_inline_and_its_outbound_call_carry_the_requests_ids(
    peer_server: Peer, capture: Any, django_capture_on_commit_callbacks: Any
) -> None:
    cpo_at(peer_server)
    lines = capture("emsp.outbound")
    driver = DriverFactory()

    def view(request: HttpRequest) -> HttpResponse:
        with django_capture_on_commit_callbacks(execute=True):
            token_issue(driver=driver)  # queues emsp.tasks.outbox_deliver after commit: the push to the CPO
        return HttpResponse()

    in_request(view, **{"X-Request-ID": "req-bap-3", "X-Correlation-ID": "corr-bap-3"})
    (sent,) = peer_server.wait()
    assert sent["x-correlation-id"] == "corr-bap-3"
    assert sent["x-request-id"] not in ("req-bap-3", "corr-bap-3", "")  # a new one per call (OCPI transport)
    (line,) = outbound_lines(lines)
    assert line["task_name"] == "emsp.tasks.outbox_deliver" and line["task_id"]
    assert (line["request_id"], line["correlation_id"]) == ("req-bap-3", "corr-bap-3")
    assert (request_id_var.get(), correlation_id_var.get()) == ("-", "-")  # restored after the request and task


@pytest.fixture
def worker_app() -> Iterator[Any]:
    """The worker path in this process: a Celery app on the in-memory broker, current while the test runs (the
    tasks are shared tasks, so queueing one publishes a real message), and a worker thread consuming it."""
    from celery import signals
    from celery.contrib.testing.app import TestApp, setup_default_app
    from celery.contrib.testing.worker import start_worker

    import emsp.tasks  # noqa: F401 - registered before the worker starts, or it refuses them as unknown

    app = TestApp(config={"task_always_eager": False, "task_acks_late": True})
    # Starting a worker installs Celery's Django fixup for that test app (no CELERY_DB_REUSE_MAX: it closes the
    # database connection around every task) and leaves its receivers connected after the worker stops; put
    # the signals back as they were so later tests see this process's own receivers only.
    watched = [getattr(signals, name) for name in signals.__all__ if isinstance(getattr(signals, name), signals.Signal)]
    before = {signal: list(signal.receivers) for signal in watched}
    try:
        with setup_default_app(app), start_worker(app, pool="solo", perform_ping_check=False):
            yield app
    finally:
        for signal, receivers in before.items():
            signal.receivers[:] = receivers
            signal.sender_receivers_cache.clear()


@pytest.mark.django_db(transaction=True)
def test_the_ids_travel_with_the_task_message_to_the_worker_and_its_outbound_call(
    peer_server: Peer, capture: Any, worker_app: Any
) -> None:
    cpo_at(peer_server)
    lines = capture("emsp.outbound")
    driver = DriverFactory()

    def view(request: HttpRequest) -> HttpResponse:
        with transaction.atomic():
            token_issue(driver=driver)  # published to the broker when this commits
        return HttpResponse()

    in_request(view, **{"X-Request-ID": "req-bap-4", "X-Correlation-ID": "corr-bap-4"})
    (sent,) = peer_server.wait()
    assert sent["x-correlation-id"] == "corr-bap-4"
    assert sent["x-request-id"] not in ("req-bap-4", "corr-bap-4", "")
    deadline = time.monotonic() + 5
    while not outbound_lines(lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = outbound_lines(lines)
    assert line["task_name"] == "emsp.tasks.outbox_deliver"
    assert (line["request_id"], line["correlation_id"]) == ("req-bap-4", "corr-bap-4")


@pytest.mark.django_db(transaction=True)
def test_a_task_queued_outside_a_request_gets_a_fresh_correlation_id(
    peer_server: Peer, capture: Any, worker_app: Any
) -> None:
    cpo_at(peer_server)
    lines = capture("emsp.outbound")
    token_issue(driver=DriverFactory())  # outside any request, as the beat's tasks are queued
    (sent,) = peer_server.wait()
    deadline = time.monotonic() + 5
    while not outbound_lines(lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    (line,) = outbound_lines(lines)
    assert line["correlation_id"] == line["task_id"] == sent["x-correlation-id"]
    assert line["request_id"] == "-"


# --- Redaction ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ("OCPI GET with Authorization: Token c2VjcmV0LWNwby10b2tlbg==", "c2VjcmV0LWNwby10b2tlbg=="),
        ("upstream said {'Authorization': 'Bearer eyJhbGciOi.payloadpart.sig'}", "eyJhbGciOi.payloadpart.sig"),
        (
            'Beckn request refused: Signature keyId="bap.example|k1|ed25519",algorithm="ed25519",'
            'signature="cmVhbGx5LXNpZ25lZC1ieS1hLWJhcA=="',
            "cmVhbGx5LXNpZ25lZC1ieS1hLWJhcA==",
        ),
        ("GET https://cpo.example/ocpi/versions?token=plain-credentials-42&page=2", "plain-credentials-42"),
        ("razorpay answered: key_secret=rzp-live-secret-9", "rzp-live-secret-9"),
        ("stripe key sk_live_51HkYqzAbCdEf refused", "sk_live_51HkYqzAbCdEf"),
        ("login failed, password=hunter2-correct", "hunter2-correct"),
        ('{"api_key": "k-123456", "n": 1}', "k-123456"),
        ("broker redis://:brokerpass@redis.internal:6379/0 down", "brokerpass"),
        ("receipt mailed to asha.rao@example.in", "asha.rao@example.in"),
        ("SMS to +91 98450 12345 failed", "98450 12345"),
        ("call +44 20 7946 0958", "7946 0958"),
    ],
)
def test_it_masks_secrets_and_personal_data_in_messages(capture: Any, message: str, secret: str) -> None:
    json_lines, text_lines = capture("tests.logs.redact"), capture("tests.logs.redact", fmt="text")
    logging.getLogger("tests.logs.redact").warning("%s", message)
    assert secret not in json_lines.lines[0] and secret not in text_lines.lines[0]
    assert "[redacted]" in json_lines.lines[0] or "[email]" in json_lines.lines[0] or "[phone]" in json_lines.lines[0]


class Target:
    def __str__(self) -> str:
        return "<Request GET https://cpo.example/ocpi/cdrs?token=obj-secret-7>"


def test_it_masks_extra_fields_and_tracebacks_but_keeps_the_rest(capture: Any) -> None:
    lines = capture("tests.logs.redact_extra")
    log = logging.getLogger("tests.logs.redact_extra")
    try:
        raise RuntimeError("credentials token=tok-in-exception for x@example.com")
    except RuntimeError:
        log.exception(
            "push to %s failed",
            "CPA",
            extra={
                "headers": {"Authorization": "Token tok-in-header", "X-Request-ID": "r-5"},
                "driver": {"email": "d@example.com", "phone": "0098450", "name_on_invoice": "kept"},
                "password": "pw-extra",
                "target": Target(),
                "status": 502,
            },
        )
    (raw,) = lines.lines
    secrets = ("tok-in-exception", "x@example.com", "tok-in-header", "d@example.com", "0098450", "pw-extra")
    secrets += ("obj-secret-7",)
    assert [secret for secret in secrets if secret in raw] == []
    (line,) = lines.json()
    assert line["headers"] == {"Authorization": "[redacted]", "X-Request-ID": "r-5"}
    assert line["driver"]["name_on_invoice"] == "kept" and line["status"] == 502
    assert line["target"] == "<Request GET https://cpo.example/ocpi/cdrs?token=[redacted]>"
    assert line["message"] == "push to CPA failed" and "RuntimeError" in line["exception"]


def test_celery_task_lines_keep_the_task_and_drop_its_arguments(capture: Any) -> None:
    """Celery's "received"/"succeeded" lines carry the task's arguments: for handle_request, a whole Beckn init
    with the driver's name, which no pattern recognises as personal data."""
    lines = capture("celery.app.trace")
    body = '{"message":{"order":{"billing":{"name":"Asha Rao"}}}}'
    logging.getLogger("celery.app.trace").info(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        {"name": "beckn.tasks.handle_request", "id": "t-1", "runtime": 0.01, "return_value": None},
        extra={"data": {"id": "t-1", "name": "beckn.tasks.handle_request", "runtime": 0.01,
                        "args": f"('init', {body!r})", "kwargs": "{}"}},
    )  # fmt: skip
    (raw,) = lines.lines
    assert "Asha" not in raw
    (line,) = lines.json()
    assert line["data"] == {"id": "t-1", "name": "beckn.tasks.handle_request", "runtime": 0.01}
    assert line["message"] == "Task beckn.tasks.handle_request[t-1] succeeded in 0.01s: None"


def test_it_leaves_ordinary_lines_alone(capture: Any) -> None:
    lines = capture("tests.logs.ordinary")
    text = "PUT http://127.0.0.1:9/ocpi/cpo/2.2.1/tokens/IN/EMS/TOKEN000001 -> 200 in 12 ms, 2024-05-01 10:00:00"
    logging.getLogger("tests.logs.ordinary").info(text)
    assert lines.json()[0]["message"] == text


# --- Sentry --------------------------------------------------------------------------------------------------------

SENTRY_SCRIPT = """
import logging, django
django.setup()
import sentry_sdk
from emsp.middleware import correlation_id_var, request_id_var
request_id_var.set("req-sentry-6"); correlation_id_var.set("corr-sentry-6")
try:
    raise RuntimeError("refund failed: password=pw-in-exception, mail asha@example.com")
except RuntimeError:
    logging.getLogger("billing.test").exception("refund for +91 98450 12345 failed, Authorization: Token tok-in-log")
sentry_sdk.flush(10)
"""


class SentryCollector:
    """A Sentry DSN on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://public0key@127.0.0.1:{self.server.server_address[1]}/42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [
            orjson.loads(line)
            for body in self.received
            for line in io.BytesIO(body).read().splitlines()
            if line.startswith(b"{") and b'"exception"' in line
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        """`script` run with production-like test settings reporting to this collector, which is then closed."""
        try:
            return run_settings({"DJANGO_ENV": "test", "SENTRY_DSN": self.dsn}, script)
        finally:
            self.close()


LANE_SENTRY_SCRIPT = """
import io, logging, django
django.setup()
import sentry_sdk
from django.test import RequestFactory
import ocpi.transport
from emsp.wsgi import application
assert type(application).__name__ == "SentryWsgiMiddleware", type(application)

def broken(*args, **kwargs):
    logging.getLogger("ocpi.test").warning("breadcrumb of request %s", calls)
    raise RuntimeError("the token store went away")

ocpi.transport.partner_for_token = broken
for calls in (1, 2):
    environ = RequestFactory().generic(
        "PATCH", f"/ocpi/emsp/2.2.1/locations/IN/CPA/LOC{calls}/E1", data=b'{"status": "CHARGING"}',
        content_type="application/json", headers={"Authorization": "Token dG9r", "X-Request-ID": f"req-{calls}"},
    ).environ
    answer = application(environ, lambda status, headers, exc_info=None: print(status))
    b"".join(answer)  # not closed: the message log's row would need the database
sentry_sdk.flush(10)
"""


def test_a_sentry_report_from_a_lane_is_of_its_own_request() -> None:
    """A request the OCPI lane answers without Django's handler (the EVSE PATCH) still gets a scope of its own:
    its report names its URL and carries its breadcrumbs, not an earlier request's."""
    collector = SentryCollector()
    result = collector.run(LANE_SENTRY_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["500", "Internal", "Server", "Error"] * 2
    reports = {}
    for event in collector.events():
        crumbs = [c.get("message") or "" for c in event.get("breadcrumbs", {}).get("values", [])]
        reports.setdefault(event["tags"]["request_id"], []).append((event.get("request", {}).get("url", ""), crumbs))
    assert set(reports) == {"req-1", "req-2"}
    for n in (1, 2):
        for url, crumbs in reports[f"req-{n}"]:
            assert url.endswith(f"/ocpi/emsp/2.2.1/locations/IN/CPA/LOC{n}/E1"), url
            assert f"breadcrumb of request {n}" in crumbs
            assert not any(f"breadcrumb of request {3 - n}" in c for c in crumbs), crumbs


def test_a_sentry_report_carries_the_ids_and_no_secrets() -> None:
    collector = SentryCollector()
    result = collector.run(SENTRY_SCRIPT)
    assert result.returncode == 0, result.stderr
    received, events = collector.received, collector.events()
    assert events, received
    (event,) = events
    assert event["tags"]["request_id"] == "req-sentry-6" and event["tags"]["correlation_id"] == "corr-sentry-6"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    everything = b"".join(received)
    for secret in (b"pw-in-exception", b"asha@example.com", b"98450 12345", b"tok-in-log"):
        assert secret not in everything
