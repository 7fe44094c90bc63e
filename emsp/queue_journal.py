"""A journal of the messages queue_push put on a Redis queue, kept until their task is done, so that a message a
worker took off the queue and then lost can be put back.

Why: kombu's Redis transport takes a message off the list (BRPOP) and only then records it as unacknowledged;
a worker killed between the two loses the message (celery/celery#7950), and with it a Beckn request, which
has no database row until its worker writes one. So the ACK's script (emsp/queue_push.py) also writes the
message here, in the same call: a hash from task id to message, and an index of the push times. The task
deletes its entry when it is done (`done`), after its transaction has committed.

An entry still here is one of: waiting in the queue, held by a worker (kombu's `unacked` hash has its delivery
tag), running, done but not yet deleted (killed after the commit), or lost. `unaccounted` picks out the lost
ones without scanning the queue: the list is first in, first out, so a message pushed before one a worker has
finished with has left the queue; and an empty queue holds nothing. The caller then asks its own records
whether the task ran (a Beckn request's row) before pushing the message again (`again`). A message put back
that was not lost after all (kombu restoring it in the same instant) runs twice, and the task's unique row
keeps that to one effect."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from typing import Any

import orjson
import redis

# The latency queue's workers record what they hold under kombu's default key (emsp/celery.py gives a bulk-only
# worker keys of its own; journalled tasks are never on the bulk queue).
UNACKED_KEY = "unacked"

# KEYS: the journal's hash, its index and its high-water mark; ARGV[1]: the task id. The mark is the latest
# push time of a message whose task is done.
_DONE = """
redis.call('HDEL', KEYS[1], ARGV[1])
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if score then
  local high = redis.call('GET', KEYS[3])
  if not high or tonumber(score) > tonumber(high) then redis.call('SET', KEYS[3], score) end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Keys:
    """The journal of one queue."""

    queue: str

    @property
    def messages(self) -> str:
        return f"journal:{self.queue}"

    @property
    def index(self) -> str:
        return f"journal:{self.queue}:at"

    @property
    def high(self) -> str:
        return f"journal:{self.queue}:done-up-to"

    @property
    def tries(self) -> str:
        return f"journal:{self.queue}:tries"


@dataclass(frozen=True, slots=True)
class Entry:
    task_id: str
    message: bytes
    pushed_at: float

    def args(self) -> list[Any]:
        """The task's positional arguments, read back from the message as the worker would."""
        envelope = orjson.loads(self.message)
        args, _kwargs, _embed = orjson.loads(base64.b64decode(envelope["body"]))
        return list(args)

    def delivery_tag(self) -> str:
        return str(orjson.loads(self.message)["properties"]["delivery_tag"])


def done(client: redis.Redis, queue: str, task_id: str) -> None:
    """The task `task_id` is done with (its effects committed): forget its message."""
    keys = Keys(queue)
    _done_script(client)(keys=[keys.messages, keys.index, keys.high, keys.tries], args=[task_id])


@functools.cache
def _done_script(client: redis.Redis) -> Any:
    return client.register_script(_DONE)  # EVALSHA, loaded again if Redis forgot it


def unaccounted(client: redis.Redis, queue: str, *, older_than: float, limit: int = 200) -> list[Entry]:
    """Entries pushed more than `older_than` seconds ago that are neither in the queue nor held by a worker: lost
    by a worker, or done by one killed before it said so. Oldest first, at most `limit`."""
    keys = Keys(queue)
    empty = client.llen(queue) == 0  # read first: whatever was pushed before this is not waiting any more
    high = float(client.get(keys.high) or 0)
    ceiling = _redis_now(client) - older_than
    if not empty:
        ceiling = min(ceiling, high)
    found: list[Entry] = []
    for raw_id, score in client.zrangebyscore(keys.index, "-inf", f"({ceiling}", start=0, num=limit, withscores=True):
        task_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        message = client.hget(keys.messages, task_id)
        if message is None:  # done meanwhile
            client.zrem(keys.index, task_id)
            continue
        entry = Entry(task_id, message, float(score))
        if client.hexists(UNACKED_KEY, entry.delivery_tag()):
            continue  # held by a live worker, or kombu gives it back to the queue after its visibility timeout
        found.append(entry)
    return found


def _redis_now(client: redis.Redis) -> float:
    """Redis's clock, which stamps the entries (emsp/queue_push.py): one clock for every host."""
    seconds, microseconds = client.time()
    return seconds + microseconds / 1_000_000


def forget(client: redis.Redis, queue: str, task_id: str) -> None:
    """An entry whose task ran (its records say so), or that is given up on."""
    done(client, queue, task_id)


def again(client: redis.Redis, queue: str, entry: Entry, *, most: int) -> int | None:
    """Put a lost message back on its queue, stamped now (the queue stays in push order for `unaccounted`), and
    say how many times it has been put back; None, and the entry forgotten, when it has been `most` times."""
    keys = Keys(queue)
    tries = int(client.hget(keys.tries, entry.task_id) or 0)
    if tries >= most:
        forget(client, queue, entry.task_id)
        return None
    pipe = client.pipeline(transaction=True)
    pipe.lpush(queue, entry.message)
    pipe.zadd(keys.index, {entry.task_id: _redis_now(client)})
    pipe.hincrby(keys.tries, entry.task_id, 1)
    return int(pipe.execute()[2])
