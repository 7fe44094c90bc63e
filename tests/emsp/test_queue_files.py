"""The development broker writes each message file whole: no reader can find a message file before its bytes
are in it (kombu's own filesystem transport creates the file under its final name, then writes)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection

from emsp import queue_files


@pytest.fixture
def channel(tmp_path: Path) -> Any:
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False}
    with Connection("filesystem://", transport=queue_files.Transport, transport_options=options) as connection:
        yield connection.default_channel


def test_no_message_file_is_visible_before_it_is_written(channel: Any, tmp_path: Path, monkeypatch: Any) -> None:
    seen: list[tuple[list[str], int]] = []
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        # The moment before the rename: the file a reader would take must not exist yet; the partial is whole.
        seen.append((sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".latency.msg")),
                     Path(source).stat().st_size))  # fmt: skip
        real_replace(source, target)

    monkeypatch.setattr(queue_files.os, "replace", replace)
    channel._put("latency", {"body": "x" * 5000})
    assert seen == [([], seen[0][1])] and seen[0][1] > 5000
    assert channel._get("latency") == {"body": "x" * 5000}
    assert list(tmp_path.iterdir()) == []


def test_a_partial_file_is_not_taken_for_a_message(channel: Any, tmp_path: Path) -> None:
    (tmp_path / f"1_abc.latency.msg{queue_files.PARTIAL_SUFFIX}").write_bytes(b"")
    channel._put("latency", {"n": 1})
    assert channel._get("latency") == {"n": 1}
    from kombu.transport.virtual import Empty

    with pytest.raises(Empty):
        channel._get("latency")


def test_development_settings_use_it_without_a_broker_url() -> None:
    from django.conf import settings

    if settings.CELERY_BROKER_URL != "filesystem://":
        pytest.skip("a broker URL is set (REDIS_URL or CELERY_BROKER_URL)")
    from emsp.celery import app

    with app.connection_for_write() as connection:
        assert type(connection.transport) is queue_files.Transport
