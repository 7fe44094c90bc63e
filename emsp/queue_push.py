"""Queue a Celery task straight onto a Redis broker in one round trip, only if a key is new.

`task.delay()` costs about 0.45 ms a call on the Beckn ACK path (its profile, docs/benchmarks.md): Celery builds
the message, then kombu builds a new redis-py client for each publish (169 dictionary writes in its constructor)
and makes the LPUSH. Here the message is built by Celery's own `as_task_v2` and wrapped as kombu's Redis
transport would wrap it; one Lua script counts the sender's rate (emsp/ratelimit.py), sets the duplicate key
(SET NX EX) and LPUSHes the message to the queue's list, the key and the message both or neither: the ACK makes
one round trip to Redis. A worker cannot tell the two apart: tests/emsp/test_queue_push.py compares the message
with what `delay()` writes, and the end-to-end tests run it through a real worker.

It applies when the broker is the Redis that REDIS_URL names (the default) and tasks are not run eagerly;
`pushable(task)` says so and callers fall back to `delay()` otherwise (RabbitMQ, a broker of its own, tests run
eagerly, development without Redis).
"""

from __future__ import annotations

import base64
import os
import threading
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
import redis
from celery import Task
from celery.signals import after_task_publish, before_task_publish
from celery.utils.nodenames import anon_nodename
from django.conf import settings

from emsp import queue_journal
from emsp.ratelimit import WINDOW_SECONDS, Window

# KEYS[1]: the key that must be new ("" for none); KEYS[2]: the queue's list; KEYS[3], KEYS[4]: a rate limit's
# counters of this minute and the last ("" for no limit, emsp/ratelimit.py); KEYS[5], KEYS[6]: the queue's
# journal and its index ("" for none, emsp/queue_journal.py). ARGV[1]: the key's lifetime in seconds; ARGV[2]:
# the message; ARGV[3]: the limit a minute; ARGV[4]: seconds into this minute; ARGV[5]: seconds in a minute;
# ARGV[6]: the task id. The journal's times are Redis's clock (TIME), one clock for every web host, in the
# order of the queue. Returns {1, current, previous} when queued, {0, ...}
# when the key was already there, {-1, ...} when over the limit (nothing queued, no key set). The limit's
# arithmetic is emsp/ratelimit.py's `verdict`, in the same double-precision operations. A script is not rolled
# back on error, so a failed LPUSH (a wrong type, out of memory) deletes the key it set.
_PUSH_ONCE = """
local current, previous = 0, 0
if KEYS[3] ~= '' then
  current = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], 2 * tonumber(ARGV[5]))
  previous = tonumber(redis.call('GET', KEYS[4]) or '0')
  local window = tonumber(ARGV[5])
  if previous * (window - tonumber(ARGV[4])) / window + current > tonumber(ARGV[3]) then
    return {-1, current, previous}
  end
end
if KEYS[1] ~= '' and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return {0, current, previous}
end
local pushed = redis.pcall('LPUSH', KEYS[2], ARGV[2])
if type(pushed) == 'table' and pushed.err then
  if KEYS[1] ~= '' then redis.call('DEL', KEYS[1]) end
  return redis.error_reply(pushed.err)
end
if KEYS[5] ~= '' then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[5], ARGV[6], ARGV[2])
  redis.call('ZADD', KEYS[6], tonumber(now[1]) + tonumber(now[2]) / 1000000, ARGV[6])
end
return {1, current, previous}
"""

QUEUED, DUPLICATE, OVER_LIMIT = 1, 0, -1


@dataclass(frozen=True, slots=True)
class Pushed:
    """What push_once did (QUEUED, DUPLICATE or OVER_LIMIT) and, with a rate limit, the counts it saw."""

    outcome: int
    current: int = 0
    previous: int = 0


@cache
def pushable(task: Task) -> bool:
    """True when push_once can queue `task`: its app's broker is the Redis REDIS_URL names, and it does not run
    tasks eagerly. Decided once per process (reading Celery's configuration costs 30 µs a call); a test that
    changes that configuration calls `pushable.cache_clear()`."""
    url = settings.REDIS_URL
    conf = task.app.conf
    return bool(
        url and conf.broker_url == url and url.startswith(("redis://", "rediss://")) and not conf.task_always_eager
    )


class _Pusher:
    """The script on a connection of this process's own, called with a command packed here.

    Through redis-py's client the call cost 90-120 µs of CPU, a quarter of an ACK; its command packer (twelve
    encoder calls, 11 % of an ACK's profile) and its execute/retry layers a good part of that (docs/benchmarks.md,
    2026-12-04, a fifth session). Here the EVALSHA is packed in one join and sent on the client's one connection
    (redis-py still connects, reads with hiredis and raises Redis's errors). A dropped connection is reconnected
    and the call made once more: the duplicate key makes a repeat of a call that did run harmless (with a rate
    limit, the repeat is counted again). A script Redis no longer holds (after a restart, which also drops the
    connection) is sent whole with EVAL, which runs it and keeps it for the next EVALSHA. Thread-safe (one lock
    around the connection); one per process, since a connection must not cross a fork."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, single_connection_client=True)
        self.sha = self.client.script_load(_PUSH_ONCE).encode("ascii")
        self.lock = threading.Lock()

    def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        tail = [b"%d" % len(keys), *keys, *args]
        command = _packed([b"EVALSHA", self.sha, *tail])
        with self.lock:
            connection = self.client.connection
            assert connection is not None  # a single-connection client holds one from the start
            for attempt in (1, 2):
                try:
                    connection.send_packed_command([command], check_health=False)
                    try:
                        return connection.read_response()
                    except redis.exceptions.NoScriptError:
                        connection.send_packed_command([_packed([b"EVAL", _PUSH_ONCE, *tail])], check_health=False)
                        return connection.read_response()
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    connection.disconnect()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")


def _packed(parts: list[Any]) -> bytes:
    """A Redis command in RESP: an array of bulk strings (str as UTF-8, int in decimal, bytes as they are)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, str):
            part = part.encode()
        elif isinstance(part, int):
            part = b"%d" % part
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


_scripts: dict[int, _Pusher] = {}


def _script() -> _Pusher:
    """This process's pusher (made on first use, and again in a forked child)."""
    pid = os.getpid()
    script = _scripts.get(pid)
    if script is None:
        script = _scripts[pid] = _Pusher(settings.REDIS_URL)
    return script


def push_once(
    task: Task,
    args: tuple[Any, ...],
    *,
    once_key: str = "",
    ttl: int = 0,
    argsrepr: str = "",
    rate: tuple[Window, int] | None = None,
    journal: bool = False,
) -> Pushed:
    """Queue `task(*args)` unless `once_key` is already set (DUPLICATE: nothing queued); the key is set for `ttl`
    seconds with the message, atomically. `rate` (a window of emsp/ratelimit.py and its limit a minute) counts
    this request first, and over the limit queues nothing (OVER_LIMIT). Redis errors propagate (nothing queued).
    `argsrepr` is what Flower and the worker's log show for the arguments (Celery writes saferepr(args) there,
    which for a request body costs more than the rest of the message). With `journal`, the message is also kept
    in the queue's journal until the task says it is done (emsp/queue_journal.py), so one a worker loses is put
    back."""
    queue = _queue_of(task)
    task_id = str(uuid.uuid4())
    message = build_message(task, args, queue=queue, argsrepr=argsrepr, task_id=task_id)
    if rate is None:
        keys, limit_args = [once_key, queue, "", ""], [0, 0, WINDOW_SECONDS]
    else:
        window, limit = rate
        keys = [once_key, queue, window.current_key, window.previous_key]
        limit_args = [limit, repr(window.elapsed), WINDOW_SECONDS]
    if journal:
        journal_keys = queue_journal.Keys(queue)
        keys += [journal_keys.messages, journal_keys.index]
    else:
        keys += ["", ""]
    call_args = [ttl, message, *limit_args, task_id]
    outcome, current, previous = _script()(keys=keys, args=call_args)
    return Pushed(int(outcome), int(current), int(previous))


def build_message(
    task: Task, args: tuple[Any, ...], *, queue: str, argsrepr: str = "", task_id: str | None = None
) -> bytes:
    """The bytes kombu's Redis transport LPUSHes for `task.delay(*args)` routed to `queue`: Celery's protocol 2
    message (headers, properties, body) with the transport's envelope (base64 body, delivery tag and info)."""
    app = task.app
    task_id = task_id or str(uuid.uuid4())
    options = _task_options(task)
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id,
        task.name,
        args=args,
        kwargs={},
        argsrepr=argsrepr or f"({len(args)} arguments)",
        kwargsrepr="{}",
        origin=_origin(),
        ignore_result=options["ignore_result"],
        time_limit=options["time_limit"],
        soft_time_limit=options["soft_time_limit"],
        reply_to=str(app.thread_oid),  # as send_task gives it (no result backend reads it)
    )
    properties["delivery_mode"] = 2  # persistent, as Celery's default
    properties["delivery_info"] = {"exchange": "", "routing_key": queue}
    properties["priority"] = 0
    # Listeners add their headers here as for any task (emsp/logs.py: the request and correlation ids).
    before_task_publish.send(
        sender=task.name,
        body=body,
        exchange="",
        routing_key=queue,
        headers=headers,
        properties=properties,
        declare=[],
        retry_policy=None,
    )
    payload = orjson.dumps(body)
    properties["body_encoding"] = "base64"
    properties["delivery_tag"] = str(uuid.uuid4())
    envelope = {
        "body": base64.b64encode(payload).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }
    after_task_publish.send(sender=task.name, body=body, exchange="", routing_key=queue, headers=headers)
    return orjson.dumps(envelope)


@cache
def _queue_of(task: Task) -> str:
    return str(task.app.amqp.router.route({}, task.name)["queue"].name)  # CELERY_TASK_ROUTES, else the default


@cache
def _task_options(task: Task) -> dict[str, Any]:
    app = task.app
    return {
        "ignore_result": bool(task.ignore_result if task.ignore_result is not None else app.conf.task_ignore_result),
        "time_limit": task.time_limit if task.time_limit is not None else app.conf.task_time_limit,
        "soft_time_limit": (
            task.soft_time_limit if task.soft_time_limit is not None else app.conf.task_soft_time_limit
        ),
    }


@cache
def _origin() -> str:
    return anon_nodename()
