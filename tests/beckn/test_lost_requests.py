"""A Beckn request a worker takes off the Redis queue and loses is queued again (emsp/queue_journal.py,
beckn/tasks.py::requeue_lost_requests).

kombu's Redis transport pops a message (BRPOP) before it records it as unacknowledged, so a worker killed between
the two loses it (celery/celery#7950), and a Beckn request has no row until its worker writes one. Here the kill
is that pop with nothing after it, on the real Redis; the sweep and the task then run as a worker runs them."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
import pytest
import redis
from django.conf import settings

from beckn import handlers, tasks
from beckn.models import BecknMessage
from emsp import queue_journal

QUEUE = settings.LATENCY_QUEUE


@pytest.fixture
def journal(live_queue: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The live queue with an empty journal, and the sweep counting a request lost as soon as it qualifies."""
    keys = queue_journal.Keys(QUEUE)
    names = (keys.messages, keys.index, keys.high, keys.tries, queue_journal.UNACKED_KEY)
    live_queue.delete(*names)
    monkeypatch.setattr(tasks, "LOST_AFTER_SECONDS", 0)
    yield live_queue
    live_queue.delete(*names)


def search(bap: Any, n: int = 1) -> list[str]:
    """ACK `n` signed searches; their message ids."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    for message_id in ids:
        response = bap("search", {"intent": {"fulfillment": {"type": "CHARGING"}}}, message_id=message_id)
        assert response.status_code == 200, response.content
    return ids


def taken_and_lost(client: redis.Redis) -> bytes:
    """A worker's BRPOP, then kill -9 before kombu records the message unacknowledged."""
    raw = client.rpop(QUEUE)
    assert raw is not None
    return raw


def run_as_a_worker(raw: bytes) -> None:
    """What a worker does with a message from the queue: the task, under the message's task id."""
    message = orjson.loads(raw)
    entry = queue_journal.Entry(message["headers"]["id"], raw, 0)
    tasks.handle_request.apply(args=entry.args(), task_id=message["headers"]["id"]).get()


def journalled(client: redis.Redis) -> int:
    return int(client.hlen(queue_journal.Keys(QUEUE).messages))


def test_a_request_lost_between_the_pop_and_the_unacked_record_is_queued_again(
    bap: Any, journal: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    (message_id,) = search(bap)
    assert journalled(journal) == 1
    raw = taken_and_lost(journal)
    assert journal.llen(QUEUE) == 0 and not BecknMessage.objects.exists()  # nowhere: neither queued nor held

    with caplog.at_level(logging.WARNING, logger="beckn.tasks"):
        assert tasks.requeue_lost_requests() == 1
    assert journal.lrange(QUEUE, 0, -1) == [raw]  # the same message, as the worker would have had it
    assert f"search {message_id}" in caplog.text and "queued again" in caplog.text

    run_as_a_worker(journal.rpop(QUEUE))
    assert BecknMessage.objects.filter(action="search", message_id=message_id).count() == 1
    assert journalled(journal) == 0  # the task struck it when done
    assert tasks.requeue_lost_requests() == 0
    assert journal.llen(QUEUE) == 0


def test_a_request_handled_by_a_worker_killed_before_it_said_so_is_forgotten(bap: Any, journal: redis.Redis) -> None:
    (message_id,) = search(bap)
    raw = taken_and_lost(journal)
    action, body, via_gateway, callback_url = queue_journal.Entry("", raw, 0).args()
    handlers.handle(action, body, via_gateway, callback_url)  # committed; the kill comes before `done`
    assert journalled(journal) == 1

    assert tasks.requeue_lost_requests() == 0  # its row says it ran: not run twice
    assert journal.llen(QUEUE) == 0
    assert journalled(journal) == 0
    assert BecknMessage.objects.filter(message_id=message_id).count() == 1


def test_a_request_waiting_in_the_queue_or_held_by_a_worker_is_left_alone(bap: Any, journal: redis.Redis) -> None:
    search(bap, 3)
    assert tasks.requeue_lost_requests() == 0  # all three are waiting
    assert journal.llen(QUEUE) == 3

    held = taken_and_lost(journal)  # a worker takes the oldest and records it, as kombu does
    journal.hset(queue_journal.UNACKED_KEY, orjson.loads(held)["properties"]["delivery_tag"], held)
    lost = taken_and_lost(journal)  # another worker takes the next and is killed in the gap
    assert tasks.requeue_lost_requests() == 0  # the third still waits, and nobody is done with a later one: unknown

    run_as_a_worker(taken_and_lost(journal))  # the newest is done: the two before it have left the queue
    assert tasks.requeue_lost_requests() == 1  # the held one stays with its worker (or kombu's restore)
    assert journal.lrange(QUEUE, 0, -1) == [lost]


def test_a_request_no_worker_can_finish_is_given_up_after_some_tries(
    bap: Any, journal: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    search(bap)
    for _ in range(tasks.MOST_TRIES):
        taken_and_lost(journal)
        assert tasks.requeue_lost_requests() == 1
    taken_and_lost(journal)
    with caplog.at_level(logging.ERROR, logger="beckn.tasks"):
        assert tasks.requeue_lost_requests() == 0
    assert "given up" in caplog.text
    assert journal.llen(QUEUE) == 0 and journalled(journal) == 0


def test_a_repeated_message_id_is_journalled_once(bap: Any, journal: redis.Redis) -> None:
    (message_id,) = search(bap)
    assert bap("search", {"intent": {}}, message_id=message_id).status_code == 200
    assert journal.llen(QUEUE) == 1 and journalled(journal) == 1
