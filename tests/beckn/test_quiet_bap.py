"""A BAP that accepts connections and never answers must not hold the latency worker: after one callback gets no
answer, that host's callbacks go one at a time with a short timeout, a second one at the same moment is put back
for the sweep (its try not counted), and the host's first answer ends it. Against a real socket on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.db import connection
from django.utils import timezone

from beckn import callbacks
from beckn.models import BecknCallback
from emsp import outbox
from emsp.models import Delivery

FULL, QUIET, REST = 2.0, 0.3, 1  # the test's timeouts and rest (production: 10 s, 2 s and 5 s), far apart


class SilentBap:
    """Reads each request and answers only while `answering` is set; counts the requests it read."""

    def __init__(self) -> None:
        self.answering = threading.Event()
        self.requests = 0
        self.status = b"200 OK"
        self.reading = threading.Event()  # set when a request has arrived, for the test to wait on
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/bap"
        self._closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while True:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        data += chunk
                    head, _, rest = data.partition(b"\r\n\r\n")
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length")
                        ),
                        0,
                    )
                    while len(rest) < length:
                        rest += conn.recv(65536)
                    data = rest[length:]
                    self.requests += 1
                    self.reading.set()
                    if not self.answering.is_set():
                        time.sleep(5)  # far past every timeout of the test: the sender gives up first
                        return
                    ack = b'{"message":{"ack":{"status":"ACK"}}}'
                    conn.sendall(b"HTTP/1.1 " + self.status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(ack)).encode() + b"\r\n\r\n" + ack)  # fmt: skip
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        self._server.close()


@pytest.fixture
def silent_bap(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[SilentBap]:
    monkeypatch.setattr(callbacks, "QUIET_REST", REST)
    settings.BECKN_CALLBACK_TIMEOUT_SECONDS = FULL
    settings.BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS = QUIET
    bap = SilentBap()
    yield bap
    bap.close()
    callbacks.forget_quiet_hosts()


def _callback(bap: SilentBap, n: int) -> Delivery:
    """A stored callback, waiting to be sent (as callbacks.enqueue stores it, without its send after the commit:
    the test sends each itself)."""
    url = f"{bap.url}/on_search"
    body = {"context": {"action": "on_search", "bap_uri": bap.url, "message_id": f"m-{n}"}, "message": {}}
    return BecknCallback.objects.create(
        channel=Delivery.Channel.BECKN_CALLBACK, target=url, action="on_search", url=url, message_id=f"m-{n}",
        solicited=False, body=orjson.dumps(body).decode(),
    )  # fmt: skip


def _timed_delivery(pk: int, now: Any = None) -> tuple[Delivery, float]:
    started = time.monotonic()
    row = outbox.deliver(pk, now)
    return row, time.monotonic() - started


@pytest.mark.django_db(transaction=True)
def test_a_silent_bap_holds_one_process_briefly_and_its_first_answer_ends_it(silent_bap: SilentBap) -> None:
    host = callbacks._host(silent_bap.url)
    rows = [_callback(silent_bap, n) for n in range(6)]

    # The first callback waits the full timeout and gets no answer: the host is now quiet.
    first, took = _timed_delivery(rows[0].pk)
    assert took >= FULL * 0.9
    assert (first.status, first.attempts, first.last_http_status) == (Delivery.Status.PENDING, 1, None)
    assert callbacks.is_quiet(host)

    # The next waits only the short timeout, and getting no answer again, the host rests: a callback right after
    # it is not sent (put back for the sweep, its try not counted).
    second, took = _timed_delivery(rows[1].pk)
    assert QUIET * 0.8 <= took < FULL * 0.75
    assert second.status == Delivery.Status.PENDING
    asked = silent_bap.requests
    rested, took = _timed_delivery(rows[2].pk)
    assert took < FULL * 0.5 and silent_bap.requests == asked
    assert (rested.status, rested.attempts, rested.last_http_status) == (Delivery.Status.PENDING, 0, None)
    time.sleep(REST + 0.2)

    # While one callback to the quiet host is in flight (another thread, its own connection), a second is not sent:
    # put back 5 s for the sweep, its try not counted, and nothing reaches the BAP.
    silent_bap.reading.clear()
    holder = threading.Thread(target=lambda: (outbox.deliver(rows[3].pk), connection.close()))
    holder.start()
    assert silent_bap.reading.wait(5)
    asked = silent_bap.requests
    put_off, took = _timed_delivery(rows[4].pk)
    holder.join(5)
    assert took < FULL * 0.5
    assert silent_bap.requests == asked
    assert (put_off.status, put_off.attempts, put_off.last_http_status) == (Delivery.Status.PENDING, 0, None)
    assert "put off" in put_off.last_error
    assert timezone.now() + timedelta(seconds=3) < put_off.next_attempt_at <= timezone.now() + timedelta(seconds=6)
    assert outbox.deliver(rows[4].pk) is None  # not due before then

    # The BAP answers again: once the in-flight callback's rest is over, the put-off callback is delivered when
    # due, and the host is no longer quiet...
    time.sleep(REST + 0.2)
    silent_bap.answering.set()
    delivered, _ = _timed_delivery(rows[4].pk, timezone.now() + timedelta(seconds=6))
    assert delivered.status == Delivery.Status.DELIVERED and delivered.attempts == 1
    assert not callbacks.is_quiet(host)

    # ...so should it fall silent again, the next callback is given the full timeout once more.
    silent_bap.answering.clear()
    again, took = _timed_delivery(rows[5].pk)
    assert took >= FULL * 0.9 and again.status == Delivery.Status.PENDING


@pytest.mark.django_db
def test_an_answer_of_any_status_is_an_answer(settings: Any, silent_bap: SilentBap) -> None:
    """A BAP that answers, even with an error status, is not quiet: only no answer at all counts."""
    silent_bap.answering.set()
    silent_bap.status = b"503 Service Unavailable"
    row = _callback(silent_bap, 9)
    tried = outbox.deliver(row.pk)
    assert (tried.status, tried.last_http_status) == (Delivery.Status.PENDING, 503)  # retried later, as before
    assert not callbacks.is_quiet(callbacks._host(silent_bap.url))


def _as_another_process() -> None:
    """What this process knows of quiet hosts forgotten, the shared entry kept: as a sibling worker process sees it."""
    callbacks._quiet_until.clear()
    callbacks._shared_read_at = 0.0


@pytest.mark.django_db(transaction=True)
def test_while_one_process_waits_out_a_silent_bap_the_others_wait_briefly_and_learn(silent_bap: SilentBap) -> None:
    """A hung app's first callback waits the full timeout; a second process must not wait it out as well: while
    the first waits, another callback to the host gets the short timeout, and once one got no answer, every
    process knows the host is quiet."""
    host = callbacks._host(silent_bap.url)
    rows = [_callback(silent_bap, n) for n in range(5)]
    holder = threading.Thread(target=lambda: (outbox.deliver(rows[0].pk), connection.close()))
    holder.start()
    assert silent_bap.reading.wait(5)

    _as_another_process()  # a sibling process, which has heard nothing of the host either
    second, took = _timed_delivery(rows[1].pk)
    assert QUIET * 0.8 <= took < FULL * 0.5
    assert holder.is_alive()  # the first still waits for its answer
    assert (second.status, second.attempts, second.last_http_status) == (Delivery.Status.PENDING, 1, None)
    asked = silent_bap.requests
    rested, took = _timed_delivery(rows[2].pk)  # and rests the host: the next callback is put off at once
    assert took < FULL * 0.5 and silent_bap.requests == asked and rested.attempts == 0
    _as_another_process()
    assert callbacks.is_quiet(host)  # what that process found out, a third learns from the cache
    holder.join(FULL + 2)

    # The host answers again: its first answer, in any process, takes it out of the shared entry, and a process
    # that has heard from it lately sends without asking the cache.
    time.sleep(REST + 0.2)
    silent_bap.answering.set()
    _as_another_process()
    delivered, _ = _timed_delivery(rows[3].pk)
    assert delivered.status == Delivery.Status.DELIVERED
    _as_another_process()
    assert not callbacks.is_quiet(host)
    callbacks._heard_at[host] = time.monotonic()
    with CaptureCacheCalls() as calls:
        assert outbox.deliver(rows[4].pk).status == Delivery.Status.DELIVERED
    assert [key for key in calls.keys if key != callbacks.SHARED_KEY] == []  # its twice-a-second read aside


class CaptureCacheCalls:
    """The cache keys a block reads or writes through beckn.callbacks' cache."""

    def __enter__(self) -> CaptureCacheCalls:
        self.keys: list[str] = []
        self._patch = pytest.MonkeyPatch()
        for name in ("add", "get", "set", "delete"):
            real = getattr(callbacks.cache, name)
            self._patch.setattr(callbacks.cache, name, self._recording(real))
        return self

    def _recording(self, real: Any) -> Any:
        def call(key: str, *args: Any, **kwargs: Any) -> Any:
            self.keys.append(key)
            return real(key, *args, **kwargs)

        return call

    def __exit__(self, *_: object) -> None:
        self._patch.undo()


@pytest.mark.django_db
def test_a_host_no_process_heard_from_is_shared_and_expires(settings: Any, silent_bap: SilentBap) -> None:
    """A callback that got no answer shares its host for BECKN_CALLBACK_QUIET_SECONDS, no longer; an unreadable
    shared entry is ignored."""
    from django.core.cache import cache

    host = callbacks._host(silent_bap.url)
    callbacks._heard_nothing_from(host)
    _as_another_process()
    assert callbacks.is_quiet(host)
    assert 0 < cache.get(callbacks.SHARED_KEY)[host] - time.time() <= settings.BECKN_CALLBACK_QUIET_SECONDS

    cache.set(callbacks.SHARED_KEY, {host: time.time() - 1, "other:1": "garbage"})
    _as_another_process()
    assert not callbacks.is_quiet(host) and not callbacks.is_quiet("other:1")
