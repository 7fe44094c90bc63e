"""End-to-end fixtures: simulator CPO processes on 127.0.0.1 next to our server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cposim.conftest import SimProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start CPO simulator processes (`python -m cposim`); all are stopped at teardown."""
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(list(args), tmp_path / f"sim{len(started)}.log")
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
