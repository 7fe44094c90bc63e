"""End-to-end fixtures: simulator CPO processes on 127.0.0.1 next to our server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def full_stack_available() -> str | None:
    """Why the full-stack tests can't run here, or None."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        return "the full-stack tests run on PostgreSQL (set DATABASE_URL)"
    if not settings.REDIS_URL:
        return "the full-stack tests need Redis for Celery (set REDIS_URL)"
    return None


@pytest.fixture
def platform_factory(transactional_db: None, tmp_path: Path, settings: Any) -> Iterator[Callable[..., Any]]:
    """Start the platform as real processes; stopped (before the test database is flushed) at teardown."""
    from tests.e2e.platform import E2E_BROKER, Platform, rabbitmq_turn, rabbitmq_unreachable

    reason = full_stack_available()
    if reason:
        pytest.skip(reason)
    started: list[Platform] = []
    turns: list[IO[str]] = []

    def make(
        web_processes: int = 1, workers: int = 1, env: dict[str, str] | None = None, broker: str | None = None
    ) -> Platform:
        """`workers` of each queue; `broker` "redis" or "rabbitmq" (E2E_BROKER, "redis" unless set)."""
        broker = broker or E2E_BROKER
        if broker == "rabbitmq":
            if unreachable := rabbitmq_unreachable():
                pytest.skip(unreachable)
            if not turns:
                turns.append(rabbitmq_turn())
        platform = Platform(
            tmp_path / f"platform{len(started)}",
            web_processes=web_processes,
            workers=workers,
            extra_env=env or {},
            broker=broker,
        )
        platform.tmp.mkdir()
        started.append(platform)
        platform.start()
        # This test process acts as the platform too (registration, assertions): same public URL.
        settings.PUBLIC_BASE_URL = platform.base
        settings.BECKN_SUBSCRIBER_URL = f"{platform.base}/beckn"
        return platform

    try:
        yield make
    finally:
        for platform in started:
            platform.stop()
        for turn in turns:  # after the stop: RabbitMQ is this test's until its processes are gone
            turn.close()
