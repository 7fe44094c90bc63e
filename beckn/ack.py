"""The synchronous answer to POST /beckn/{action}: verify the signature on the raw bytes, count the sender's
rate, check the envelope (and that the message holds what its action requires), drop a repeated message id,
queue the work, and say ACK or NACK.

Framework-free on purpose: the DRF view (beckn/views.py) and the WSGI fast lane in front of Django
(beckn/ack_lane.py) both answer with `answer()`, so the two cannot drift apart. Nothing here touches the
database except a registry lookup when a key is not cached (beckn/registry.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.core.cache import cache

from beckn import tasks
from beckn.auth import BecknAuthError, verify_beckn_request
from beckn.errors import INVALID_REQUEST, POLICY_ERROR, BecknRequestError
from beckn.parsing import ACK, ACTIONS, MAX_ID_LENGTH, check_required, parse_envelope
from emsp import queue_push
from emsp.ratelimit import Verdict, rate_limit_hit, window_of
from emsp.ratelimit import redis_client as _redis_client
from emsp.ratelimit import verdict as rate_verdict

log = logging.getLogger(__name__)

ACK_BODY = orjson.dumps(ACK)
DEDUPE_SECONDS = 24 * 3600  # message ids are kept at least a day (payments practice, perf notes §3.2)


@dataclass(frozen=True, slots=True)
class Answer:
    """What to send back: HTTP status, JSON body, extra headers, and the NACK's error code (None for an ACK)."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    nack_code: str | None = None


ACKED = Answer(200, ACK_BODY)


def nack(error: dict[str, str] | None, status: int, headers: dict[str, str] | None = None) -> Answer:
    body: dict[str, Any] = {"message": {"ack": {"status": "NACK"}}}
    if error:
        body["error"] = error
    return Answer(status, orjson.dumps(body), dict(headers or {}), str((error or {}).get("code") or ""))


def first_sighting(key: str) -> bool:
    """True the first time a key is seen within DEDUPE_SECONDS (an atomic SET NX)."""
    client = _redis_client()
    if client is not None:
        return bool(client.set(key, 1, nx=True, ex=DEDUPE_SECONDS))
    return cache.add(key, 1, timeout=DEDUPE_SECONDS)


def sighted(key: str) -> bool:
    """Was this key seen within DEDUPE_SECONDS?"""
    client = _redis_client()
    if client is not None:
        return bool(client.exists(key))
    return cache.get(key) is not None


def answer(action: str, raw: bytes, headers: Mapping[str, str]) -> Answer:
    """The ACK or NACK for `raw` (the body, read up to BECKN_MAX_BODY_BYTES + 1 bytes) posted to /beckn/{action}."""
    if action not in ACTIONS:
        return nack({"code": "40001", "paths": "context.action", "message": f"/{action} is not a Beckn action"}, 404)
    if len(raw) > settings.BECKN_MAX_BODY_BYTES:
        return nack({"code": "30000", "paths": "", "message": "body too large"}, 413)
    # Verify first (on the raw bytes, BECKN-006), reading only the bap_id the keyId must match; then check the
    # envelope of the same parsed body. An unsigned request is 401 whatever its body.
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None  # parse_envelope parses again and names the JSON error
    context = body.get("context") if isinstance(body, dict) else None
    bap_id = context.get("bap_id") if isinstance(context, dict) and isinstance(context.get("bap_id"), str) else None
    try:
        sender = verify_beckn_request(raw, headers, bap_id=bap_id)
    except BecknAuthError as exc:
        # The bap_id as sent, up to an id's length: the whole of it (256 kB, say) cost the log's masking seconds.
        shown = bap_id if bap_id is None or len(bap_id) <= MAX_ID_LENGTH else f"{bap_id[:MAX_ID_LENGTH]}…"
        log.info("beckn %s from %s refused: %s", action, shown, exc)
        error = {"code": "10001", "paths": "", "message": f"Invalid signature: {exc.reason}"}
        return nack(error, 401, exc.challenges)
    # Counted only once the signature holds, so nobody can spend a subscriber's allowance for it. On Redis the
    # count goes with the duplicate key and the task in one script (emsp/queue_push.py), after the envelope
    # checks; a request failing them is counted on its own, so either way each verified request counts once
    # and over the limit is answered before anything else.
    rate_key, limit = f"beckn:{sender.subscriber_id}", settings.BECKN_RATE_LIMIT_PER_MINUTE
    task = tasks.handle_request._get_current_object()  # the task itself, not shared_task's proxy
    fast = queue_push.pushable(task)
    if not fast and not (verdict := rate_limit_hit(rate_key, limit)).allowed:
        return _over_limit(action, sender.subscriber_id, verdict)
    try:
        envelope = parse_envelope(raw, action, parsed=body)
        callback_url = registered_callback_url(envelope.context["bap_uri"], sender.subscriber_url)
        check_required(envelope)  # the context first: its errors say who may be answered at all
    except BecknRequestError as exc:
        if fast and not (verdict := rate_limit_hit(rate_key, limit)).allowed:
            return _over_limit(action, sender.subscriber_id, verdict)
        return nack(exc.as_error(), 400)
    # Duplicate check without touching the database: an atomic add (Redis SET NX in production). The worker
    # records each message once under a unique constraint, the second guard.
    dedupe_key = f"beckn:msg:{envelope.bap_id}:{action}:{envelope.message_id}"
    args: tuple[str, ...] = (action, raw.decode("utf-8", "replace"), sender.gateway_id or "", callback_url)
    if sender.gateway_url:
        # The verified gateway key's URL, where the answer to a search it forwarded goes. Appended only then: a
        # request from a BAP is journalled (emsp/queue_journal.py) in the four-argument shape it always had.
        args += (sender.gateway_url,)
    try:
        if fast:
            window = window_of(rate_key) if limit > 0 else None
            argsrepr = f"({action!r}, <{len(raw)} bytes, message_id {envelope.message_id!r}>, ...)"
            pushed = queue_push.push_once(
                task,
                args,
                once_key=dedupe_key,
                ttl=DEDUPE_SECONDS,
                argsrepr=argsrepr,
                rate=None if window is None else (window, limit),
                journal=True,  # put back if a worker loses it (emsp/queue_journal.py, beckn/tasks.py)
            )
            if pushed.outcome == queue_push.OVER_LIMIT and window is not None:
                refused = rate_verdict(pushed.current, pushed.previous, limit, window.elapsed)
                return _over_limit(action, sender.subscriber_id, refused)
            return ACKED  # queued now, or already queued for this message id: the same answer
        if sighted(dedupe_key):
            return ACKED  # same answer, nothing else
        # Queued first, then marked seen: a process killed between the two leaves no mark, and the BAP's retry of
        # this message id is queued again (the worker's unique row keeps it once). Marked first, a kill there
        # had the retry ACKed as a duplicate with nothing queued, the request lost.
        tasks.handle_request.delay(*args)
        first_sighting(dedupe_key)
    except Exception:  # the queue is down: no ACK, so the BAP retries
        log.exception("could not queue beckn %s %s", action, envelope.message_id)
        return nack({"code": "50000", "paths": "", "message": "temporarily unable to accept requests"}, 503)
    return ACKED


def _over_limit(action: str, subscriber_id: str, verdict: Verdict) -> Answer:
    log.info("beckn %s from %s refused: over %d requests a minute", action, subscriber_id, verdict.limit)
    # BECKN-005 has no rate-limit code: 50000 "Policy Error", with HTTP 429 and Retry-After.
    message = f"rate limit: at most {verdict.limit} requests a minute; retry after {verdict.retry_after} s"
    error = {"code": POLICY_ERROR, "paths": "", "message": message}
    return nack(error, 429, {"Retry-After": str(verdict.retry_after)})


def _same_url(a: str, b: str) -> bool:
    try:
        left, right = urlsplit(a.strip()), urlsplit(b.strip())
    except ValueError:  # one of them is no URL at all (an unclosed "[" of an IPv6 host): not the same
        return False
    return (left.scheme.lower(), left.netloc.lower(), left.path.rstrip("/")) == (
        right.scheme.lower(),
        right.netloc.lower(),
        right.path.rstrip("/"),
    )


def registered_callback_url(bap_uri: str, registered: str) -> str:
    """Where the answers go: the sender's registered URL, never merely what its context says (else anyone
    who can sign could direct our callbacks, and the data in them, anywhere). context.bap_uri must be it."""
    if not registered:
        raise BecknRequestError(
            INVALID_REQUEST, "context.bap_uri", "this subscriber has no registered URL to send callbacks to"
        )
    if not _same_url(bap_uri, registered):
        raise BecknRequestError(INVALID_REQUEST, "context.bap_uri", "bap_uri is not the subscriber's registered URL")
    return registered
