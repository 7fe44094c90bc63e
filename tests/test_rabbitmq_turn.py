"""The test processes' turns at RabbitMQ (tests/e2e/platform.py::rabbitmq_turn): its queues are shared by every
test process on the machine, so while one holds its turn no other process gets one."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from tests.e2e.platform import rabbitmq_turn

TRY_TURN = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'w'), fcntl.LOCK_EX | fcntl.LOCK_NB)"


def _another_process_gets_it(path: str) -> bool:
    return subprocess.run([sys.executable, "-c", TRY_TURN, path], capture_output=True, check=False).returncode == 0


def test_another_process_waits_while_one_holds_its_turn() -> None:
    url = f"amqp://guest:guest@127.0.0.1:5672/turn-test-{uuid.uuid4().hex}"  # no real run waits on this one
    turn = rabbitmq_turn(url)
    try:
        assert not _another_process_gets_it(turn.name)
    finally:
        turn.close()
    assert _another_process_gets_it(turn.name)
    Path(turn.name).unlink()


def test_each_broker_url_has_its_own_turn() -> None:
    first = rabbitmq_turn(f"amqp://guest:guest@127.0.0.1:5672/a-{uuid.uuid4().hex}")
    second = rabbitmq_turn(f"amqp://guest:guest@127.0.0.1:5672/b-{uuid.uuid4().hex}")  # would wait on one lock
    try:
        assert first.name != second.name
    finally:
        for turn in (first, second):
            turn.close()
            Path(turn.name).unlink()
