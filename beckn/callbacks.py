"""on_* callbacks to BAPs: built with our context and stored as BecknCallback rows of the one outbox
(emsp/outbox.py) inside the caller's transaction; `send_callback` is the outbox's sender for them: it signs
the exact bytes stored (BECKN-006) and POSTs them. Retries, backoff and attempts are the outbox's."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from beckn.keys import sign_outgoing
from beckn.models import BecknCallback, BecknMessage, BecknTransaction
from beckn.parsing import parse_duration
from emsp import outbound, outbox
from emsp.datetimes import format_datetime
from emsp.inserts import insert
from emsp.models import Delivery

log = logging.getLogger(__name__)

CALLBACK_TTL_SECONDS = 30  # ONDC's context.ttl; our callbacks are valid that long after their timestamp
CALLBACK_TTL = f"PT{CALLBACK_TTL_SECONDS}S"


def now_rfc3339() -> str:
    return format_datetime(timezone.now(), "millis")


def callback_context(
    request_context: dict[str, Any] | None,
    action: str,
    *,
    txn: BecknTransaction | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """The context of an on_* callback: the request's, with our bpp_id/bpp_uri, the callback action, a new
    timestamp, and the request's message_id (solicited) or a new one (unsolicited, Context.message_id)."""
    base = dict(request_context or {})
    if txn is not None and not base:
        base = {
            "domain": txn.domain,
            "location": txn.context_location or None,
            "bap_id": txn.bap_id,
            "bap_uri": txn.bap_uri,
            "transaction_id": txn.transaction_id,
        }
    # Core 1.1.0's Context fields only (the ONIX schemas refuse any other: a 0.9-style `city`/`country` the BAP
    # sent had made our signed callback invalid), and of its location only the places (_callback_location).
    context = {k: v for k, v in base.items() if v is not None and k in CONTEXT_FIELDS}
    location = _callback_location(context.pop("location", None))
    if location:
        context["location"] = location
    context.update(
        {
            "action": action,
            "version": "1.1.0",
            "bpp_id": settings.BECKN_SUBSCRIBER_ID,
            "bpp_uri": settings.BECKN_SUBSCRIBER_URL,
            "message_id": message_id or base.get("message_id") or str(uuid.uuid4()),
            "timestamp": now_rfc3339(),
            "ttl": CALLBACK_TTL,
        }
    )
    return context


# Context's properties in core 1.1.0 (api/transaction, Context) but `key`, which is the sender's own.
CONTEXT_FIELDS = frozenset(
    {"domain", "location", "action", "version", "bap_id", "bap_uri", "bpp_id", "bpp_uri", "transaction_id",
     "message_id", "timestamp", "ttl"}
)  # fmt: skip
# What of a context's Location a callback echoes: the places (City, State, Country: a name and a code) and the
# plain texts. Not whatever else the BAP put there, which we would sign and send on.
PLACE_FIELDS = ("city", "state", "country")
LOCATION_TEXTS = ("area_code", "district", "address", "id")


def _callback_location(location: Any) -> dict[str, Any] | None:
    if not isinstance(location, dict):
        return None
    out: dict[str, Any] = {}
    for field in PLACE_FIELDS:
        place = location.get(field)
        if isinstance(place, dict):
            kept = {k: v for k in ("name", "code") if isinstance(v := place.get(k), str)}
            if kept:
                out[field] = kept
    for field in LOCATION_TEXTS:
        if isinstance(location.get(field), str):
            out[field] = location[field]
    return out or None


# The message of an error callback. Core 1.1.0's OpenAPI lets an on_* carry `context` and `error` alone, but the
# core 1.1.0 JSON schemas a Beckn-ONIX adapter checks callbacks with require `message` on every on_*, and in it
# the action's object for most: a BAP behind ONIX would refuse our errors without them. Each object's fields are
# all optional there; the error says what went wrong (tests/beckn/conformance.py checks both schemas).
ERROR_MESSAGE: dict[str, dict[str, Any]] = {
    "on_search": {"catalog": {}},
    "on_init": {"order": {}},
    "on_confirm": {"order": {}},
    "on_status": {"order": {}},
    "on_update": {"order": {}},
    "on_cancel": {"order": {}},
    "on_track": {"tracking": {}},
}


def enqueue(
    *,
    action: str,
    context: dict[str, Any],
    message: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    txn: BecknTransaction | None = None,
    request: BecknMessage | None = None,
    url: str | None = None,
) -> BecknCallback:
    """Store one callback and schedule its delivery after the surrounding transaction commits. An error
    callback without a message carries the least one its action's schema asks (ERROR_MESSAGE)."""
    body: dict[str, Any] = {"context": context}
    if message is None and error is not None:
        message = ERROR_MESSAGE.get(action, {})
    if message is not None:
        body["message"] = message
    if error is not None:
        body["error"] = error
    target = (url or (txn.callback_uri if txn else None) or context["bap_uri"]).rstrip("/")
    callback = BecknCallback(
        channel=Delivery.Channel.BECKN_CALLBACK,
        target=f"{target}/{action}"[:500],
        transaction=txn,
        request=request,
        action=action,
        url=f"{target}/{action}",
        message_id=context["message_id"],
        solicited=request is not None,
        body=orjson.dumps(body).decode(),
    )
    outbox.claim_if_sent_here(callback)
    insert(callback)
    outbox.deliver_after_commit(callback)
    return callback


# --- BAPs that stopped answering --------------------------------------------------------------------------
# A latency worker's process waits for the BAP's answer to each callback (up to BECKN_CALLBACK_TIMEOUT_SECONDS)
# and does nothing else meanwhile, so one BAP that accepts connections and never answers would hold every
# process in turn and stall every other app's callbacks (docs/benchmarks.md, "Latency worker processes"). A
# process that gets no answer from a BAP's host counts it quiet for BECKN_CALLBACK_QUIET_SECONDS: its callbacks
# then go one at a time across all processes (a lock in the cache), each with BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS,
# and one that again gets no answer keeps the lock QUIET_REST longer, so a silent host holds a process for 2 s
# in every 7 at most; a callback that finds the lock taken is not sent but put back for the outbox's sweep, its
# try not counted. The first answer ends it.
#
# What one process finds out, the others learn: a host that gave no answer goes into one shared cache entry,
# which each process reads at most every SHARED_REFRESH seconds, and its first answer takes it out. And a host
# this process has not heard from lately gets the full wait for one callback at a time across all processes (a
# second lock); a callback to it while that one waits gets the short timeout. So the hung app's first callbacks
# hold one process for the full wait and the others for the short one, not every process for the full wait,
# and a healthy BAP's callbacks make no extra round trip once a process has heard from it.
_quiet_until: dict[str, float] = {}
_heard_at: dict[str, float] = {}  # when this process last had an answer from each host (time.monotonic)
_quiet_lock = threading.Lock()
QUIET_PUT_OFF = timedelta(seconds=5)  # a callback not sent because another to its quiet host is in flight
QUIET_REST = 5.0  # seconds the lock is kept after a quiet host's callback got no answer either
SHARED_KEY = "beckn:quiet-bap-hosts"  # {host: until, as a Unix time}
SHARED_REFRESH = 0.5  # seconds between a process's reads of it
_shared_read_at = 0.0


def _host(url: str) -> str:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:  # a URL urllib can't split (outbound.send refuses it too): counted as its own host
        return url.lower()


def is_quiet(host: str) -> bool:
    """Has this process (or, since its last look, another) had no answer from `host` lately?"""
    _learn_from_the_others()
    until = _quiet_until.get(host)
    if until is None:
        return False
    if until > time.monotonic():
        return True
    with _quiet_lock:
        _quiet_until.pop(host, None)
    return False


def forget_quiet_hosts() -> None:
    """Tests: every process has heard from every host, and none lately."""
    global _shared_read_at
    with _quiet_lock:
        _quiet_until.clear()
        _heard_at.clear()
        _shared_read_at = 0.0
    _shared_write(lambda hosts: hosts.clear())


def _learn_from_the_others() -> None:
    """The hosts other processes found quiet, read from the cache at most every SHARED_REFRESH seconds."""
    global _shared_read_at
    now = time.monotonic()
    if now - _shared_read_at < SHARED_REFRESH:
        return
    _shared_read_at = now
    try:
        shared = cache.get(SHARED_KEY) or {}
    except Exception:  # the cache down: each process finds its quiet hosts out by itself, as before
        return
    left = {host: until - time.time() for host, until in shared.items() if isinstance(until, float | int)}
    with _quiet_lock:
        for host, seconds in left.items():
            if seconds > 0 and _quiet_until.get(host, 0.0) < now + seconds:
                _quiet_until[host] = now + seconds


def _shared_write(change: Callable[[dict[str, float]], object]) -> None:
    """Read, change and write the shared entry (two processes writing at once may lose one's change: that
    process's host is then found out again by the others, as it was before there was an entry)."""
    try:
        hosts = cache.get(SHARED_KEY) or {}
        wall = time.time()
        hosts = {host: until for host, until in hosts.items() if isinstance(until, float | int) and until > wall}
        change(hosts)
        cache.set(SHARED_KEY, hosts, timeout=settings.BECKN_CALLBACK_QUIET_SECONDS)
    except Exception:  # the cache down: this process still knows
        log.warning("could not share the quiet BAP hosts through the cache", exc_info=True)


def _heard_nothing_from(host: str) -> None:
    if not is_quiet(host):
        log.warning("BAP host %s gave no answer to a callback: its callbacks go one at a time with a %s s timeout "
                    "for %s s", host, settings.BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS,
                    settings.BECKN_CALLBACK_QUIET_SECONDS)  # fmt: skip
    seconds = settings.BECKN_CALLBACK_QUIET_SECONDS
    with _quiet_lock:
        _quiet_until[host] = time.monotonic() + seconds
    _shared_write(lambda hosts: hosts.update({host: time.time() + seconds}))


def _heard_from(host: str) -> None:
    _heard_at[host] = time.monotonic()
    if host in _quiet_until:
        with _quiet_lock:
            was_quiet = _quiet_until.pop(host, None) is not None
        if was_quiet:
            log.info("BAP host %s answers callbacks again", host)
            _shared_write(lambda hosts: hosts.pop(host, None))


def send_callback(delivery: Delivery) -> outbox.SendResult:
    """The outbox's sender for Beckn callbacks: the stored body, signed, POSTed to its URL."""
    callback = delivery if isinstance(delivery, BecknCallback) else BecknCallback.objects.get(pk=delivery.pk)
    host = _host(callback.url)
    if is_quiet(host):
        return _send_to_quiet(callback, host)
    if _heard_lately(host):
        return _post(callback, host, settings.BECKN_CALLBACK_TIMEOUT_SECONDS)
    full_wait = f"beckn:callback-full-wait:{host}"
    try:
        mine = cache.add(full_wait, 1, timeout=int(settings.BECKN_CALLBACK_TIMEOUT_SECONDS) + 2)
    except Exception:  # the cache down: every callback gets the full wait, as before
        log.warning("could not take the full-wait lock for %s", host, exc_info=True)
        return _post(callback, host, settings.BECKN_CALLBACK_TIMEOUT_SECONDS)
    if not mine:  # another process is waiting for this host's answer: this one waits the short time only
        result = _post(callback, host, settings.BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS)
        if result.http_status is None:  # no answer either: the host is quiet, and its next try waits
            cache.set(_in_flight_key(host), 1, timeout=QUIET_REST)
        return result
    try:
        return _post(callback, host, settings.BECKN_CALLBACK_TIMEOUT_SECONDS)
    finally:
        cache.delete(full_wait)


def _heard_lately(host: str) -> bool:
    heard = _heard_at.get(host)
    return heard is not None and time.monotonic() - heard < settings.BECKN_CALLBACK_QUIET_SECONDS


def _in_flight_key(host: str) -> str:
    return f"beckn:callback-in-flight:{host}"


def _send_to_quiet(callback: BecknCallback, host: str) -> outbox.SendResult:
    timeout = settings.BECKN_CALLBACK_QUIET_TIMEOUT_SECONDS
    in_flight = _in_flight_key(host)
    if not cache.add(in_flight, 1, timeout=int(timeout * 2) + 1):  # expires should its holder die
        return outbox.SendResult(
            None,
            f"{host} gave no answer to a recent callback and another callback to it is in flight: put off",
            not_sent_until=timezone.now() + QUIET_PUT_OFF,
        )
    try:
        result = _post(callback, host, timeout)
    except Exception:  # a fault of ours (the outbox logs it): the lock is not this host's to keep
        cache.delete(in_flight)
        raise
    if result.http_status is None:  # no answer again: the next try waits
        cache.set(in_flight, 1, timeout=QUIET_REST)
    else:
        cache.delete(in_flight)
    return result


# A callback sent this long after it was made (a retry, a BAP that was down) goes with a new context.timestamp:
# its CALLBACK_TTL counts from the timestamp, and a BAP may drop a message past it as stale. Within the 30 s
# ttl, with room for the BAP's clock; the first send, moments after the callback was made, sends it as stored.
RESTAMP_AFTER = timedelta(seconds=20)


def _body_to_send(callback: BecknCallback) -> bytes:
    """The callback's body as it goes now: as stored, or stamped anew when it has waited (RESTAMP_AFTER); the
    stored body is then the one sent, for the log and the next try."""
    if timezone.now() - callback.created_at < RESTAMP_AFTER:
        return callback.body.encode()
    document = orjson.loads(callback.body)
    context = document.get("context") if isinstance(document, dict) else None
    if not isinstance(context, dict):
        return callback.body.encode()
    context["timestamp"] = now_rfc3339()
    body = orjson.dumps(document)
    read, callback.body = callback.body, body.decode()
    # Only over the body it was read from: a driver's erasure may have emptied it meanwhile (beckn/privacy.py),
    # and writing the old body back would have kept the driver's billing for the delivery retention.
    BecknCallback.objects.filter(pk=callback.pk, body=read).update(body=callback.body)
    return body


def _ttl_seconds(body: bytes) -> int:
    """The body's context.ttl in whole seconds, which the signature must last no longer than (BECKN-006:
    expires - created "should be equal to the TTL of the request"); CALLBACK_TTL_SECONDS when the body has none
    we can read (every callback we build has one). Between 1 s and the longest validity we accept ourselves."""
    try:
        document = orjson.loads(body)
        ttl = parse_duration(document["context"]["ttl"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return CALLBACK_TTL_SECONDS
    if ttl is None:
        return CALLBACK_TTL_SECONDS
    return min(max(1, int(ttl.total_seconds())), settings.BECKN_SIGNATURE_MAX_VALIDITY_SECONDS)


def _post(callback: BecknCallback, host: str, timeout: float) -> outbox.SendResult:
    body = _body_to_send(callback)
    headers = {"Authorization": sign_outgoing(body, ttl_seconds=_ttl_seconds(body)), "Content-Type": "application/json"}
    try:
        response = outbound.send("POST", callback.url, body=body, headers=headers, timeout=timeout)
    except outbound.ForbiddenTarget as exc:
        return outbox.SendResult(None, str(exc))
    except outbound.OutboundError as exc:
        _heard_nothing_from(host)
        return outbox.SendResult(None, str(exc))
    _heard_from(host)
    error = response.content[:500].decode("utf-8", "replace") if response.status >= 300 else ""
    return outbox.SendResult(response.status, error)
