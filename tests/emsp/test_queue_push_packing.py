"""emsp/queue_push.py packs its Redis commands itself: byte for byte what redis-py's own serializer sends (no
Redis needed)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.connection import PythonRespSerializer

from emsp import queue_push


@pytest.mark.parametrize("parts", [[b"PING"], ["EVALSHA", "é", 12, b"\x00\r\n"], ["x" * 70_000, -3]])
def test_commands_are_packed_as_redis_reads_them(parts: list[Any]) -> None:
    reference = PythonRespSerializer(6000, lambda v: v if isinstance(v, bytes) else str(v).encode())
    assert queue_push._packed(parts) == b"".join(reference.pack(*parts))
