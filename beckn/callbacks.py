"""on_* callbacks to BAPs: built with our context and stored as BecknCallback rows of the one outbox
(emsp/outbox.py) inside the caller's transaction; `send_callback` is the outbox's sender for them: it signs
the exact bytes stored (BECKN-006) and POSTs them. Retries, backoff and attempts are the outbox's."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from django.conf import settings
from django.utils import timezone

from beckn.keys import sign_outgoing
from beckn.models import BecknCallback, BecknMessage, BecknTransaction
from emsp import outbound, outbox
from emsp.datetimes import format_datetime
from emsp.inserts import insert
from emsp.models import Delivery

log = logging.getLogger(__name__)

CALLBACK_TTL = "PT30S"  # ONDC's context.ttl; our callbacks are valid that long after their timestamp


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


def send_callback(delivery: Delivery) -> outbox.SendResult:
    """The outbox's sender for Beckn callbacks: the stored body, signed, POSTed to its URL."""
    callback = delivery if isinstance(delivery, BecknCallback) else BecknCallback.objects.get(pk=delivery.pk)
    body = callback.body.encode()
    try:
        response = outbound.send(
            "POST",
            callback.url,
            body=body,
            headers={"Authorization": sign_outgoing(body), "Content-Type": "application/json"},
            timeout=10,
        )
    except outbound.OutboundError as exc:
        return outbox.SendResult(None, str(exc))
    error = response.content[:500].decode("utf-8", "replace") if response.status >= 300 else ""
    return outbox.SendResult(response.status, error)
