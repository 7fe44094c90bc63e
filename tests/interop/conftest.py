"""Fixtures: the independent OCPI peer (extrawest-ocpi, in its own virtualenv) as a subprocess, and the
platform as real processes (tests/e2e)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import platform_factory  # noqa: F401  (the platform as real processes)
from tests.interop.peer import PeerProcess, VenvUnavailable, venv_python


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """The peer virtualenv's interpreter (built once, cached in var/interop-venv); skips where it can't be."""
    try:
        return venv_python()
    except (VenvUnavailable, subprocess.TimeoutExpired, OSError) as exc:
        pytest.skip(f"the independent OCPI peer (extrawest-ocpi from PyPI) could not be installed: {exc}")


@pytest.fixture
def extrawest_peer(peer_python: Path, tmp_path: Path) -> Iterator[Callable[..., PeerProcess]]:
    """Start extrawest_cpo.py processes with extra CLI args; all are stopped at teardown."""
    started: list[PeerProcess] = []

    def start(*args: str) -> PeerProcess:
        peer = PeerProcess(peer_python, tmp_path / f"peer{len(started)}", *args)
        started.append(peer)
        return peer

    yield start
    for peer in started:
        peer.stop()
