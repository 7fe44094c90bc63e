"""The probes against real processes (gunicorn, Celery worker and beat on Redis and PostgreSQL): the beat is
killed, `/readyz` fails naming `beat` once its heartbeat is older than the threshold while `/healthz` still
answers; a new beat makes it ready again."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from tests.e2e.platform import Platform, until

MAX_AGE = 3  # seconds; the default (60) would make this test wait a minute


def readyz(platform: Platform) -> tuple[int, dict[str, Any]]:
    response = requests.get(f"{platform.base}/readyz", timeout=10)
    return response.status_code, response.json()


def test_it_fails_readiness_when_beat_stops_and_recovers_when_it_is_back(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory(
        env={"BEAT_HEARTBEAT_INTERVAL_SECONDS": "0.5", "BEAT_HEARTBEAT_MAX_AGE_SECONDS": str(MAX_AGE)}
    )
    status, body = readyz(platform)  # Platform.start waited for it
    assert status == 200, body
    assert body["checks"]["broker"]["transport"] == {"redis": "redis", "rabbitmq": "amqp"}[platform.broker]
    assert body["checks"]["database"]["vendor"] == "postgresql"
    assert body["checks"]["beat"]["beats_alive"] == 1

    (beat,) = [proc for proc in platform.procs if proc.name.startswith("beat")]
    platform.kill(beat)
    killed_at = time.monotonic()

    def not_ready() -> dict[str, Any] | None:
        status, body = readyz(platform)
        return body if status == 503 else None

    body = until(not_ready, timeout=MAX_AGE + 10, what="/readyz failing after the beat was killed")
    assert time.monotonic() - killed_at >= MAX_AGE - 1  # not before the heartbeat is too old
    checks = body["checks"]
    assert body["status"] == "fail"
    assert checks["beat"]["ok"] is False
    assert checks["beat"]["age_seconds"] >= MAX_AGE  # rounded to 0.1 s
    assert checks["beat"]["beats_alive"] == 0
    assert all(checks[name]["ok"] for name in ("database", "migrations", "broker")), checks
    healthz = requests.get(f"{platform.base}/healthz", timeout=10)
    assert healthz.status_code == 200 and healthz.json() == {"status": "ok"}

    platform.start_beat()
    until(lambda: readyz(platform)[0] == 200, timeout=30, what="/readyz ready again with a new beat")
