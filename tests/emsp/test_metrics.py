"""Prometheus `/metrics` (issue 14, point 2): who may read it, every family there and moving when its event
happens, the counters of several processes added up (multiprocess mode), and the partner health page's charts."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from billing.models import Cdr, DriverReceipt
from billing.services.audit import cdr_process
from emsp import metrics
from emsp.models import CircuitBreaker, Delivery, Evse, Partner
from emsp.services import commands
from emsp.services.tokens import token_issue
from ocpi import sync
from ocpi.client import OcpiClient, OcpiClientError
from ocpi.models import OcpiMessage, SyncRun
from tests.billing.test_cdr_audit import bec, example_cdr, store  # noqa: F401 - fixtures
from tests.factories import DriverFactory, PartnerFactory, TokenFactory, ocpi_location, stored_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789"
CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"
BASE_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _token(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def scrape(client: Client | None = None, token: str = TOKEN) -> str:
    response = (client or Client()).get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


def value(text: str, name: str, /, **labels: str) -> float:
    """The sample `name` with exactly these labels (0 when absent, as Prometheus treats a counter not yet seen)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


# --- access ---------------------------------------------------------------------------------------------------


def test_it_refuses_without_a_token_or_a_session_and_with_a_wrong_token() -> None:
    anonymous = Client().get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    assert b"emsp_" not in anonymous.content
    wrong = Client().get("/metrics", headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert b"emsp_" not in wrong.content


def test_it_refuses_every_token_when_none_is_set(settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401
    assert Client().get("/metrics", headers={"Authorization": "Bearer x"}).status_code == 401


def test_it_answers_staff_holding_the_permission_and_refuses_the_others(login: Any) -> None:
    assert login("ops").get("/metrics").status_code == 200
    assert login("admin").get("/metrics").status_code == 200
    assert login("finance").get("/metrics").status_code == 403
    driver_like = User.objects.create_user("not-staff", password="pw-123456-x")
    client = Client()
    client.force_login(driver_like)
    assert client.get("/metrics").status_code == 403


def test_a_scraper_by_address_over_http_is_answered_but_a_browser_is_not(settings: Any) -> None:
    # Production: hosts checked and HTTP redirected to HTTPS. A scraper inside the network asks by address.
    settings.ALLOWED_HOSTS = ["emsp.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    scraper = Client(HTTP_HOST="10.0.0.5:8000")
    answered = scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answered.status_code == 200
    assert b"emsp_http_requests_total" in answered.content
    assert scraper.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert Client(HTTP_HOST="emsp.example.com").get("/metrics").status_code == 301  # a person: to HTTPS first
    assert Client(HTTP_HOST="10.0.0.5:8000").get("/metrics").status_code == 400  # … and the host check


# --- counted where it happens -------------------------------------------------------------------------------------


def test_http_requests_are_counted_per_route_pattern_not_per_path(partner: Partner, ocpi: Any) -> None:
    before = scrape()
    endpoint = "/ocpi/emsp/2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>"
    labels = {"endpoint": endpoint, "method": "GET", "status": "404"}
    for location_id in ("NOPE-1", "NOPE-2"):
        assert ocpi.get(f"/ocpi/emsp/2.2.1/locations/IN/CPA/{location_id}").status_code == 404
    after = scrape()
    assert value(after, "emsp_http_requests_total", **labels) - value(before, "emsp_http_requests_total", **labels) == 2
    assert "NOPE-1" not in after
    count = {"endpoint": endpoint, "method": "GET"}
    assert value(after, "emsp_http_request_duration_seconds_count", **count) >= 2


def test_ocpi_requests_are_counted_per_partner_module_and_status(partner: Partner, ocpi: Any, peer: FakePeer) -> None:
    served = {
        "direction": "IN",
        "partner": "IN*CPA",
        "module": "locations",
        "http_status": "404",
        "ocpi_status": "2003",
    }
    sent = {"direction": "OUT", "partner": "IN*CPA", "module": "tariffs", "http_status": "200", "ocpi_status": "1000"}
    before = scrape()
    ocpi.get("/ocpi/emsp/2.2.1/locations/IN/CPA/NOPE")
    peer.route("GET", f"{CPO}/tariffs", (200, envelope([])))
    OcpiClient(partner).get(f"{CPO}/tariffs", module="tariffs")
    after = scrape()
    assert value(after, "emsp_ocpi_requests_total", **served) - value(before, "emsp_ocpi_requests_total", **served) == 1
    assert value(after, "emsp_ocpi_requests_total", **sent) - value(before, "emsp_ocpi_requests_total", **sent) == 1


def test_command_outcomes_are_counted(partner: Partner) -> None:
    sync.ingest_page(partner, "locations", [ocpi_location("IN", "CPA", "L1")])
    evse = Evse.objects.get(uid="L1-E1")
    Partner.objects.filter(pk=partner.pk).update(state=Partner.State.SUSPENDED)
    labels = {"type": "START_SESSION", "status": "FAILED"}
    before = scrape()
    command = commands.command_start_session(token=token_issue(driver=DriverFactory()), evse=evse)
    assert commands.command_send(command).status == "FAILED"
    after = scrape()
    assert (
        value(after, "emsp_commands_finished_total", **labels) - value(before, "emsp_commands_finished_total", **labels)
        == 1
    )


def test_breaker_transitions_are_counted_and_states_read(partner: Partner, peer: FakePeer, settings: Any) -> None:
    settings.OCPI_BREAKER_FAILURES = 2

    def down(call: dict[str, Any]) -> Any:
        from emsp import outbound

        raise outbound.OutboundError("ConnectTimeout")

    peer.route("GET", f"{CPO}/tariffs", down)
    opened = {"partner": "IN*CPA", "module": "tariffs", "state": "OPEN"}
    before = scrape()
    for _ in range(2):
        with pytest.raises(OcpiClientError):
            OcpiClient(partner).get(f"{CPO}/tariffs", module="tariffs")
    assert CircuitBreaker.objects.get(partner=partner, module="tariffs").state == "OPEN"
    after = scrape()
    assert (
        value(after, "emsp_breaker_transitions_total", **opened)
        - value(before, "emsp_breaker_transitions_total", **opened)
        == 1
    )
    assert value(after, "emsp_breaker_state", **opened) == 1
    assert value(after, "emsp_breaker_state", **{**opened, "state": "CLOSED"}) == 0


def test_cdr_audits_are_counted(bec: Any, example_cdr: dict[str, Any]) -> None:  # noqa: F811
    TokenFactory(uid="012345678")
    cdr = store(bec, example_cdr)
    before = scrape()
    assert value(before, "emsp_cdrs_unprocessed") == 1
    audit = cdr_process(cdr.pk)
    assert audit is not None
    after = scrape()
    labels = {"status": audit.status}
    assert value(after, "emsp_cdr_audits_total", **labels) - value(before, "emsp_cdr_audits_total", **labels) == 1
    assert value(after, "emsp_cdr_audits", **labels) == 1
    assert value(after, "emsp_cdrs_unprocessed") == 0
    assert not Cdr.objects.filter(processed_at__isnull=True).exists()


def test_receipts_that_keep_failing_are_counted_apart_in_the_metrics() -> None:
    from billing.services.documents import RECEIPT_GRACE, SWEEPS_TO_WARN
    from tests.billing.factories import DriverReceiptFactory

    old = timezone.now() - RECEIPT_GRACE * 2
    waiting, failing, _fresh, issued = (DriverReceiptFactory() for _ in range(4))
    DriverReceipt.objects.filter(pk__in=[waiting.pk, failing.pk, issued.pk]).update(created_at=old)
    DriverReceipt.objects.filter(pk=failing.pk).update(sweeps=SWEEPS_TO_WARN)
    DriverReceipt.objects.filter(pk=issued.pk).update(issued=True)
    text = scrape()
    unissued = [value(text, "emsp_receipts_unissued", state=state) for state in ("waiting", "swept")]
    assert unissued == [1, 1]  # the fresh one is within its grace, the issued one done


# --- read when scraped -------------------------------------------------------------------------------------------


def test_outbox_backlog_and_the_age_of_the_oldest_pending_delivery(partner: Partner) -> None:
    now = timezone.now()
    for minutes in (10, 2):
        Delivery.objects.create(
            channel=Delivery.Channel.OCPI_PUSH, partner=partner, target="x", created_at=now - timedelta(minutes=minutes)
        )
    Delivery.objects.create(channel=Delivery.Channel.BECKN_CALLBACK, target="y", status=Delivery.Status.DELIVERED)
    text = scrape()
    assert value(text, "emsp_outbox_backlog", channel="ocpi_push", status="PENDING") == 2
    assert value(text, "emsp_outbox_backlog", channel="beckn_callback", status="PENDING") == 0
    assert 600 <= value(text, "emsp_outbox_oldest_pending_age_seconds", channel="ocpi_push") < 700
    assert value(text, "emsp_outbox_oldest_pending_age_seconds", channel="beckn_callback") == 0


def test_sync_lag_per_partner_and_module(partner: Partner) -> None:
    now = timezone.now()
    SyncRun.objects.create(
        partner=partner, module="locations", mode="FULL", started_at=now - timedelta(hours=2, minutes=1),
        finished_at=now - timedelta(hours=2), outcome=SyncRun.Outcome.OK,
    )  # fmt: skip
    SyncRun.objects.create(
        partner=partner, module="locations", mode="INCREMENTAL", started_at=now - timedelta(minutes=5),
        finished_at=now - timedelta(minutes=4), outcome=SyncRun.Outcome.FAILED,
    )  # fmt: skip
    text = scrape()
    labels = {"partner": "IN*CPA", "module": "locations"}
    assert 7200 <= value(text, "emsp_ocpi_sync_lag_seconds", **labels) < 7300
    assert value(text, "emsp_ocpi_sync_last_run_ok", **labels) == 0
    assert value(text, "emsp_ocpi_sync_last_duration_seconds", **labels) == pytest.approx(60, abs=1)
    assert "tariffs" not in {s.labels.get("module") for f in text_string_to_metric_families(text)
                             if f.name == "emsp_ocpi_sync_lag_seconds" for s in f.samples}  # fmt: skip


def test_every_family_is_there_and_every_collector_answers(partner: Partner) -> None:
    text = scrape()
    expected = {
        "emsp_http_requests", "emsp_http_request_duration_seconds", "emsp_outbox_backlog",
        "emsp_outbox_oldest_pending_age_seconds", "emsp_breaker_state", "emsp_celery_queue_depth",
        "emsp_cdrs_unprocessed", "emsp_cdr_audits", "emsp_disputes_open", "emsp_settlements",
        "emsp_metrics_collector_up",
    }  # fmt: skip
    assert expected <= families(text), expected - families(text)
    for name in metrics.scrape_collectors():
        assert value(text, "emsp_metrics_collector_up", name=name) == 1, name
    assert {"outbox", "breakers", "celery_queues", "ocpi_sync", "billing"} <= set(metrics.scrape_collectors())
    assert {s.labels["queue"] for f in text_string_to_metric_families(text) if f.name == "emsp_celery_queue_depth"
            for s in f.samples} >= {"latency", "bulk"}  # fmt: skip


def test_queue_depth_counts_the_waiting_messages_of_the_filesystem_queue(tmp_path: Path) -> None:
    from emsp.celery import app

    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False}
    saved = {"broker_url": app.conf.broker_url, "broker_transport_options": app.conf.broker_transport_options}
    app.conf.update(broker_url="filesystem://", broker_transport_options=options)
    try:
        with app.connection_for_write() as conn:
            queue = conn.SimpleQueue("bulk")
            for n in range(3):
                queue.put({"n": n})
            queue.close()
        depth = {f.name: f for f in metrics.queue_figures(timezone.now())}["emsp_celery_queue_depth"]
    finally:
        app.conf.update(saved)
    assert {s.labels["queue"]: s.value for s in depth.samples} == {"bulk": 3, "latency": 0}


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set")
def test_queue_depth_counts_the_waiting_messages_of_a_redis_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from emsp.celery import app

    monkeypatch.setattr(metrics, "queue_names", lambda: ["metrics-test-queue"])
    with app.connection_for_write() as conn:
        queue = conn.SimpleQueue("metrics-test-queue")
        queue.clear()
        try:
            for n in range(2):
                queue.put({"n": n})
            depth = {f.name: f for f in metrics.queue_figures(timezone.now())}["emsp_celery_queue_depth"]
            assert [s.value for s in depth.samples] == [2]
        finally:
            queue.clear()
            queue.close()


# --- several processes ---------------------------------------------------------------------------------------------

_WORKER = """
import sys
import django
django.setup()
from emsp import metrics
for _ in range(int(sys.argv[1])):
    metrics.HTTP_REQUESTS.labels("/from-a-worker", "GET", "200").inc()
metrics.COMMANDS_FINISHED.labels("STOP_SESSION", "TIMEOUT").inc()
"""


def test_counters_of_several_processes_are_added_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "emsp.settings"}
    env["DJANGO_ENV"] = "test"
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, str(n)], env=env, cwd=BASE_DIR) for n in (2, 3)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = scrape()
    assert value(text, "emsp_http_requests_total", endpoint="/from-a-worker", method="GET", status="200") == 5
    assert value(text, "emsp_commands_finished_total", type="STOP_SESSION", status="TIMEOUT") == 2
    assert value(text, "emsp_metrics_collector_up", name="outbox") == 1  # the database figures as well


# --- the console's charts ----------------------------------------------------------------------------------------


def test_the_partner_health_page_draws_error_rate_sync_duration_and_freshness(
    partner: Partner, admin_client: Client
) -> None:
    now = timezone.now()
    stored_location(partner, evses=2)
    for hours_ago, failed in ((3, False), (3, True), (1, False)):
        message = OcpiMessage.objects.create(
            partner=partner, direction="IN", method="PATCH", url="/x", module="locations",
            http_status=400 if failed else 200, ocpi_status=2001 if failed else 1000,
        )  # fmt: skip
        OcpiMessage.objects.filter(pk=message.pk).update(created_at=now - timedelta(hours=hours_ago))
    for days_ago, seconds in ((2, 30), (1, 90)):
        started = now - timedelta(days=days_ago)
        SyncRun.objects.create(
            partner=partner, module="locations", mode="FULL", started_at=started,
            finished_at=started + timedelta(seconds=seconds), outcome=SyncRun.Outcome.OK,
        )  # fmt: skip
    other = PartnerFactory()  # another partner's traffic stays off this page
    OcpiMessage.objects.create(partner=other, direction="IN", method="GET", url="/y", http_status=500)

    text = admin_client.get(reverse("admin:emsp_partner_health", args=[partner.pk])).content.decode()
    for chart in ("chart-error-rate", "chart-sync-duration", "chart-freshness", "chart-evse-heard"):
        assert f'<svg class="console-chart" id="{chart}"' in text, chart
    error_rate = text.split('id="chart-error-rate"')[1].split("</svg>")[0]
    assert error_rate.count("<circle") == 2 * 48  # a point per hour and direction
    assert "50.0 theirs to us" in error_rate  # the hour with one failure in two
    sync_duration = text.split('id="chart-sync-duration"')[1].split("</svg>")[0]
    assert "30.0 locations" in sync_duration and "90.0 locations" in sync_duration
    freshness = text.split('id="chart-freshness"')[1].split("</svg>")[0]
    assert freshness.count("<circle") == 48
    assert "emsp/console.css" in text


# --- the docs stay true --------------------------------------------------------------------------------------------


def _known_names(text: str) -> set[str]:
    from prometheus_client import REGISTRY

    names = {name for name in REGISTRY._names_to_collectors if name.startswith("emsp_")}  # the counters
    return names | {s.name for f in text_string_to_metric_families(text) for s in f.samples}  # and the gauges


def test_the_grafana_dashboard_and_the_operations_doc_name_only_metrics_that_exist(partner: Partner) -> None:
    import json
    import re

    CircuitBreaker.objects.create(partner=partner, module="tariffs")  # the per-row gauges need rows
    now = timezone.now()
    SyncRun.objects.create(
        partner=partner, module="locations", mode="FULL", started_at=now, finished_at=now, outcome=SyncRun.Outcome.OK
    )
    known = _known_names(scrape())
    dashboard = json.loads((BASE_DIR / "docs" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 20
    used = {name for expr in exprs for name in re.findall(r"\bemsp_[a-z_]+", expr)}
    assert used - known == set()
    operations = (BASE_DIR / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`(emsp_[a-z_]+)`", operations))
    assert documented - known == set()
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in known if n.startswith("emsp_")}
    assert {f for f in families if f not in documented and f + "_total" not in documented} == set()
