"""on_* callbacks to BAPs: built with our context, stored in the outbox (BecknCallback) inside the caller's
transaction, delivered by Celery after commit — signed over the exact bytes sent (BECKN-006), exponential
backoff, never retried after a 4xx, every attempt recorded."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from beckn.keys import sign_outgoing
from beckn.models import BecknCallback, BecknCallbackAttempt, BecknMessage, BecknTransaction
from emsp import outbound

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10
CALLBACK_TTL = "PT30S"  # ONDC's context.ttl; our callbacks are valid that long after their timestamp


def now_rfc3339() -> str:
    return timezone.now().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
    context = {k: v for k, v in base.items() if v is not None and k not in ("key",)}
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
    context.pop("core_version", None)
    return context


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
    """Store one callback and schedule its delivery after the surrounding transaction commits."""
    body: dict[str, Any] = {"context": context}
    if message is not None:
        body["message"] = message
    if error is not None:
        body["error"] = error
    target = (url or (txn.callback_uri if txn else None) or context["bap_uri"]).rstrip("/")
    callback = BecknCallback.objects.create(
        transaction=txn,
        request=request,
        action=action,
        url=f"{target}/{action}",
        message_id=context["message_id"],
        solicited=request is not None,
        body=orjson.dumps(body).decode(),
    )
    from beckn.tasks import deliver_callback

    pk = callback.pk
    transaction.on_commit(lambda: deliver_callback.delay(pk))
    return callback


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(600, 2 ** (attempts - 1)))


def deliver(callback_id: int) -> BecknCallback | None:
    """One delivery attempt. A row lock (skip locked) keeps two workers from sending the same callback."""
    with transaction.atomic():
        callback = (
            BecknCallback.objects.select_for_update(skip_locked=True)
            .filter(pk=callback_id, status=BecknCallback.Status.PENDING)
            .first()
        )
        if callback is None:
            return None
        body = callback.body.encode()
        started = time.monotonic()
        http_status: int | None = None
        error = ""
        try:
            response = outbound.send(
                "POST",
                callback.url,
                body=body,
                headers={"Authorization": sign_outgoing(body), "Content-Type": "application/json"},
                timeout=10,
            )
            http_status = response.status
            if http_status >= 300:
                error = response.content[:500].decode("utf-8", "replace")
        except outbound.OutboundError as exc:
            error = str(exc)[:2000]
        duration_ms = int((time.monotonic() - started) * 1000)
        callback.attempts += 1
        callback.last_http_status = http_status
        callback.last_error = error
        BecknCallbackAttempt.objects.create(
            callback=callback, http_status=http_status, error=error, duration_ms=duration_ms
        )
        if http_status is not None and 200 <= http_status < 300:
            callback.status = BecknCallback.Status.DELIVERED
            callback.delivered_at = timezone.now()
        elif http_status is not None and 400 <= http_status < 500 and http_status not in (408, 429):
            callback.status = BecknCallback.Status.FAILED  # the BAP refused it: retrying can't help
        elif callback.attempts >= MAX_ATTEMPTS:
            callback.status = BecknCallback.Status.FAILED
        else:
            callback.next_attempt_at = timezone.now() + _backoff(callback.attempts)
        callback.save()
    # Retries are picked up by the beat task (deliver_due) once next_attempt_at passes — no ETA tasks,
    # which Redis redelivers when they outlive the visibility timeout (perf notes §3.6).
    return callback


def deliver_due(limit: int = 200) -> int:
    """The safety net for retries whose scheduled task was lost: deliver whatever is due."""
    ids = list(
        BecknCallback.objects.filter(status=BecknCallback.Status.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(1 for pk in ids if deliver(pk) is not None)
