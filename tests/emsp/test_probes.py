"""`/healthz` and `/readyz` (emsp/probes.py) and the beat's heartbeat (emsp/beat.py)."""

from __future__ import annotations

import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.test import Client, override_settings
from django.utils import timezone

from emsp.beat import Scheduler, beat_heartbeat_write, beat_heartbeats_prune, new_beat_id
from emsp.celery import app as celery_app
from emsp.models import BeatHeartbeat


def heartbeat(seconds_ago: float) -> None:
    now = timezone.now()
    beat_heartbeat_write(beat_id=new_beat_id(), started_at=now, now=now - timedelta(seconds=seconds_ago))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_it_answers_healthz_without_the_database() -> None:
    # No `db` fixture: any query would fail the test (pytest-django blocks database access).
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


@override_settings(ALLOWED_HOSTS=["emsp.example.com"], SECURE_SSL_REDIRECT=True)
def test_it_answers_probes_for_any_host_over_plain_http(db: None) -> None:
    heartbeat(seconds_ago=1)
    client = Client()
    assert client.get("/admin/login/", HTTP_HOST="10.0.0.7:8000").status_code == 400  # the host check is on
    assert client.get("/admin/login/", HTTP_HOST="emsp.example.com").status_code == 301  # so is the redirect
    assert client.get("/healthz", HTTP_HOST="10.0.0.7:8000").status_code == 200
    assert client.get("/readyz", HTTP_HOST="10.0.0.7:8000").status_code == 200


def test_it_is_ready_when_every_check_passes(db: None) -> None:
    heartbeat(seconds_ago=1)
    response = Client().get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "migrations", "broker", "beat"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["beat"]["beats_alive"] == 1


@override_settings(BEAT_HEARTBEAT_MAX_AGE_SECONDS=30)
def test_it_is_not_ready_when_the_beat_heartbeat_is_old(db: None) -> None:
    heartbeat(seconds_ago=45)
    response = Client().get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["beat"]["ok"] is False
    assert checks["beat"]["age_seconds"] >= 45
    assert "more than 30 s" in checks["beat"]["error"]
    assert checks["beat"]["beats_alive"] == 0
    assert all(checks[name]["ok"] for name in ("database", "migrations", "broker"))


def test_it_is_not_ready_before_any_beat_has_run(db: None) -> None:
    response = Client().get("/readyz")
    assert response.status_code == 503
    assert "no beat heartbeat yet" in response.json()["checks"]["beat"]["error"]


def test_it_is_not_ready_when_the_broker_is_unreachable(db: None, tmp_path: Path, settings: Any) -> None:
    heartbeat(seconds_ago=1)
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        missing = str(tmp_path / "no-such-queue")
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = {
            **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
            "data_folder_in": missing,
            "data_folder_out": missing,
        }
    else:
        settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port()}/0"
    started = time.monotonic()
    response = Client().get("/readyz")
    assert time.monotonic() - started < 5
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["broker"]["ok"] is False
    assert checks["beat"]["ok"] and checks["database"]["ok"]


def test_it_is_not_ready_with_a_migration_not_applied(db: None, settings: Any) -> None:
    heartbeat(seconds_ago=1)
    settings.MIGRATION_MODULES = {"cposim": "tests.emsp.pending_migration"}
    response = Client().get("/readyz")
    assert response.status_code == 503
    migrations = response.json()["checks"]["migrations"]
    assert migrations["ok"] is False
    assert migrations["pending"] == ["cposim.0001_pending"]


def test_it_refuses_other_methods_on_probes() -> None:
    response = Client().post("/readyz")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


def test_it_leaves_other_paths_alone(db: None) -> None:
    assert Client().get("/healthzz").status_code == 404


# --- the beat writes its heartbeat ------------------------------------------------------------------


def test_it_writes_a_heartbeat_when_beat_starts_and_again_each_interval(
    transactional_db: None, tmp_path: Path, settings: Any
) -> None:
    # transactional_db: the beat drops stale connections before each write, as a long-lived process must,
    # and a connection inside a test's transaction counts as one to drop.
    settings.BEAT_HEARTBEAT_INTERVAL_SECONDS = 0.2
    scheduler = Scheduler(app=celery_app, schedule_filename=str(tmp_path / "schedule"))
    try:
        row = BeatHeartbeat.objects.get()
        assert row.beat_id == scheduler.beat_id
        assert row.hostname == socket.gethostname()[:80]
        first = row.seen_at
        time.sleep(0.25)
        # The shortest scheduled task is seconds away, so beat would sleep longer: the heartbeat caps it.
        assert scheduler.tick() <= 0.2
        row.refresh_from_db()
        assert row.seen_at > first
    finally:
        scheduler.close()


def test_it_keeps_one_row_per_beat_and_prunes_those_gone_for_a_day(db: None) -> None:
    now = timezone.now()
    beat_heartbeat_write(beat_id="old-host:1:aaaa", started_at=now, now=now - timedelta(days=2))
    beat_heartbeat_write(beat_id="host:2:bbbb", started_at=now, now=now - timedelta(seconds=5))
    beat_heartbeat_write(beat_id="host:2:bbbb", started_at=now, now=now)
    assert beat_heartbeats_prune(now=now) == 1
    assert list(BeatHeartbeat.objects.values_list("beat_id", "seen_at")) == [("host:2:bbbb", now)]
