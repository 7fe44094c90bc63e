"""emsp/queue_push.py against the real Redis: the message it writes is the one `task.delay()` writes, the key and
the message go together or not at all, and the Beckn ACK path queues through it once per message id (a real
worker runs these messages in tests/e2e, whose gunicorn answers through the fast lane)."""

from __future__ import annotations

import base64
import random
from typing import Any

import orjson
import pytest
import redis
from django.conf import settings

from beckn import tasks
from emsp import queue_push
from emsp.celery import app as celery_app
from emsp.middleware import correlation_id_var, request_id_var
from emsp.ratelimit import Window, verdict

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis (set REDIS_URL)")

QUEUE = settings.LATENCY_QUEUE  # the live_queue fixture (tests/conftest.py) empties it
TASK = tasks.handle_request._get_current_object()
ARGS = ("search", '{"context": {}}', "", "https://bap.example/beckn")


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for raw in client.lrange(QUEUE, 0, -1)]


def body_of(message: dict[str, Any]) -> Any:
    return orjson.loads(base64.b64decode(message["body"]))


def test_the_message_is_the_one_celery_writes(live_queue: redis.Redis) -> None:
    assert queue_push.pushable(TASK)
    t1, t2 = request_id_var.set("req-push"), correlation_id_var.set("corr-push")
    try:
        tasks.handle_request.delay(*ARGS)
        assert queue_push.push_once(TASK, ARGS, argsrepr="(4 arguments)").outcome == queue_push.QUEUED
    finally:
        request_id_var.reset(t1)
        correlation_id_var.reset(t2)
    ours, celerys = queued(live_queue)  # LPUSH: the newest first
    assert ours.keys() == celerys.keys()
    assert {k: v for k, v in ours.items() if k not in ("body", "headers", "properties")} == {
        k: v for k, v in celerys.items() if k not in ("body", "headers", "properties")
    }
    per_message = {"id", "root_id", "argsrepr"}
    assert ours["headers"].keys() == celerys["headers"].keys()
    assert {k: v for k, v in ours["headers"].items() if k not in per_message} == {
        k: v for k, v in celerys["headers"].items() if k not in per_message
    }
    assert ours["headers"]["emsp_request_id"] == "req-push"  # the listeners of before_task_publish ran
    assert ours["headers"]["root_id"] == ours["headers"]["id"] == ours["properties"]["correlation_id"]
    assert ours["headers"]["argsrepr"] == "(4 arguments)"
    per_delivery = {"correlation_id", "delivery_tag"}
    assert {k: v for k, v in ours["properties"].items() if k not in per_delivery} == {
        k: v for k, v in celerys["properties"].items() if k not in per_delivery
    }
    assert ours["properties"]["delivery_tag"] != celerys["properties"]["delivery_tag"]
    assert body_of(ours) == body_of(celerys) == [list(ARGS), {}, body_of(celerys)[2]]


def test_a_key_seen_before_queues_nothing(live_queue: redis.Redis) -> None:
    assert queue_push.push_once(TASK, ARGS, once_key="push-test:key", ttl=60).outcome == queue_push.QUEUED
    assert queue_push.push_once(TASK, ARGS, once_key="push-test:key", ttl=60).outcome == queue_push.DUPLICATE
    assert live_queue.llen(QUEUE) == 1
    assert 0 < live_queue.ttl("push-test:key") <= 60


def test_a_failed_push_leaves_no_key_behind(live_queue: redis.Redis) -> None:
    live_queue.set(QUEUE, "not a list")  # LPUSH fails with WRONGTYPE after the SET succeeded
    with pytest.raises(redis.ResponseError):
        queue_push.push_once(TASK, ARGS, once_key="push-test:key", ttl=60)
    assert not live_queue.exists("push-test:key")  # so the sender's retry is not taken for a duplicate
    live_queue.delete(QUEUE)
    assert queue_push.push_once(TASK, ARGS, once_key="push-test:key", ttl=60).outcome == queue_push.QUEUED
    assert live_queue.llen(QUEUE) == 1


def test_not_pushable_when_eager_or_another_broker(live_queue: redis.Redis) -> None:
    conf = celery_app.conf

    def pushable() -> bool:
        queue_push.pushable.cache_clear()  # decided once per process; here the configuration changes
        return queue_push.pushable(TASK)

    assert pushable()
    conf.task_always_eager = True
    assert not pushable()
    conf.task_always_eager = False
    broker = conf.broker_url
    conf.broker_url = "amqp://guest:guest@127.0.0.1:5672//"
    try:
        assert not pushable()
    finally:
        conf.broker_url = broker


def test_the_scripts_rate_limit_decides_as_ratelimit_verdict(live_queue: redis.Redis) -> None:
    """Random counts and moments in the minute: the script refuses exactly when emsp/ratelimit.py would."""
    rng = random.Random(15)
    for trial in range(200):
        limit = rng.randint(1, 50)
        window = Window(f"ratelimit:push-test:{trial}:b", f"ratelimit:push-test:{trial}:a", rng.uniform(0, 59.999))
        before, previous = rng.randint(0, 60), rng.randint(0, 80)
        live_queue.set(window.current_key, before)
        live_queue.set(window.previous_key, previous)
        pushed = queue_push.push_once(TASK, ARGS, rate=(window, limit))
        assert (pushed.current, pushed.previous) == (before + 1, previous)
        allowed = verdict(before + 1, previous, limit, window.elapsed).allowed
        assert pushed.outcome == (queue_push.QUEUED if allowed else queue_push.OVER_LIMIT), (trial, limit)
        live_queue.delete(window.current_key, window.previous_key)
    assert live_queue.ttl(QUEUE) == -1  # the list itself never expires


def test_over_the_limit_nothing_is_queued_and_no_key_is_set(live_queue: redis.Redis) -> None:
    window = Window("ratelimit:push-test:now", "ratelimit:push-test:before", 30.0)
    live_queue.set(window.current_key, 5)
    try:
        pushed = queue_push.push_once(TASK, ARGS, once_key="push-test:key", ttl=60, rate=(window, 3))
        assert pushed.outcome == queue_push.OVER_LIMIT
        assert live_queue.llen(QUEUE) == 0
        assert not live_queue.exists("push-test:key")
        assert 0 < live_queue.ttl(window.current_key) <= 120  # counted, and the counter lives two minutes
    finally:
        live_queue.delete(window.current_key, window.previous_key)


def test_each_process_pushes_on_a_connection_of_its_own(
    live_queue: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = queue_push._script()
    assert queue_push._script() is here  # one client, one connection, kept
    assert here.client.connection is not None  # single-connection: no pool round per call
    monkeypatch.setattr(queue_push.os, "getpid", lambda: -1)  # as after a fork
    forked = queue_push._script()
    assert forked is not here and forked.client is not here.client
    assert queue_push.push_once(TASK, ARGS).outcome == queue_push.QUEUED
    queue_push._scripts.pop(-1).client.close()


def test_a_dropped_connection_is_reconnected_and_the_push_made_once(live_queue: redis.Redis) -> None:
    pusher = queue_push._script()
    assert queue_push.push_once(TASK, ARGS, once_key="push-test:drop1", ttl=60).outcome == queue_push.QUEUED
    own_id = pusher.client.client_id()
    live_queue.client_kill_filter(_id=own_id)  # as when Redis restarts under a running web process
    try:
        pushed = queue_push.push_once(TASK, ARGS, once_key="push-test:drop2", ttl=60)
        assert pushed.outcome == queue_push.QUEUED
        assert live_queue.llen(QUEUE) == 2
        # and the repeat of a message already pushed is still a duplicate, nothing queued
        again = queue_push.push_once(TASK, ARGS, once_key="push-test:drop2", ttl=60)
        assert again.outcome == queue_push.DUPLICATE and live_queue.llen(QUEUE) == 2
    finally:
        live_queue.delete("push-test:drop1", "push-test:drop2")


def test_after_a_redis_restart_the_first_push_is_queued(live_queue: redis.Redis) -> None:
    """A restart drops the connection and the scripts at once: reconnected, the script is sent whole."""
    pusher = queue_push._script()
    live_queue.script_flush()
    live_queue.client_kill_filter(_id=pusher.client.client_id())
    try:
        assert queue_push.push_once(TASK, ARGS, once_key="push-test:restart", ttl=60).outcome == queue_push.QUEUED
        assert live_queue.llen(QUEUE) == 1
        assert live_queue.script_exists(pusher.sha.decode()) == [True]  # kept for the next EVALSHA
    finally:
        live_queue.delete("push-test:restart")


def test_a_script_redis_forgot_is_loaded_again(live_queue: redis.Redis) -> None:
    queue_push._script()
    live_queue.script_flush()  # what a Redis restart does to loaded scripts
    try:
        assert queue_push.push_once(TASK, ARGS, once_key="push-test:flushed", ttl=60).outcome == queue_push.QUEUED
        assert live_queue.llen(QUEUE) == 1 and live_queue.exists("push-test:flushed")
    finally:
        live_queue.delete("push-test:flushed")


def test_redis_errors_reach_the_caller(live_queue: redis.Redis) -> None:
    live_queue.set(QUEUE, "not a list")  # LPUSH fails: the caller NACKs and the key it set is removed
    try:
        with pytest.raises(redis.exceptions.ResponseError):
            queue_push.push_once(TASK, ARGS, once_key="push-test:wrongtype", ttl=60)
        assert not live_queue.exists("push-test:wrongtype")
    finally:
        live_queue.delete(QUEUE)


@pytest.mark.django_db
def test_tasks_queued_after_commit_go_the_same_way(
    live_queue: redis.Redis, django_capture_on_commit_callbacks: Any
) -> None:
    """run_after_commit (a CDR's processing, its receipt, a command) queues through push_once: one script call
    instead of delay()'s client and LPUSH, the same message on the task's own queue."""
    from billing import tasks as billing_tasks
    from emsp.celery import run_after_commit

    bulk = settings.BULK_QUEUE
    live_queue.delete(bulk)
    try:
        billing_tasks.process_cdr.delay(41)
        scripts = live_queue.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
        with django_capture_on_commit_callbacks(execute=True):
            run_after_commit("billing.tasks.process_cdr", 42)
        assert live_queue.info("commandstats")["cmdstat_evalsha"]["calls"] == scripts + 1
        ours, celerys = (orjson.loads(raw) for raw in live_queue.lrange(bulk, 0, -1))
        assert ours["headers"]["task"] == celerys["headers"]["task"] == "billing.tasks.process_cdr"
        assert body_of(ours)[:2] == [[42], {}] and body_of(celerys)[:2] == [[41], {}]
        assert ours["headers"]["argsrepr"] == "(42,)"
        assert ours["properties"]["delivery_info"] == celerys["properties"]["delivery_info"]
    finally:
        live_queue.delete(bulk)
