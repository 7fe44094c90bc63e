"""A callback sent long after it was made (a retry, a BAP that was down) carries a new context.timestamp: its
context.ttl (PT30S) counts from the timestamp, and a BAP may drop a message past it as stale. The first send,
moments after the callback was made, goes byte for byte as stored. Through the outbox, the HTTP seam patched."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from django.utils import timezone

from beckn import callbacks
from beckn.models import BecknCallback
from emsp import outbox
from emsp.datetimes import parse_utc
from emsp.models import Delivery

pytestmark = pytest.mark.django_db

URL = "https://bap.example.com/beckn/on_status"


def _stored(made: datetime) -> BecknCallback:
    context = callbacks.callback_context(
        {"bap_id": "bap.example.com", "bap_uri": "https://bap.example.com/beckn", "transaction_id": "t-1",
         "message_id": "m-1", "domain": "ev-charging:beckn"},
        "on_status",
    )  # fmt: skip
    context["timestamp"] = made.isoformat().replace("+00:00", "Z")
    body = {"context": context, "message": {"order": {"id": "ORD-1", "status": "ACTIVE", "price": "10.10"}}}
    return BecknCallback.objects.create(
        channel=Delivery.Channel.BECKN_CALLBACK, target=URL, action="on_status", url=URL, message_id="m-1",
        solicited=True, body=orjson.dumps(body).decode(), created_at=made,
    )  # fmt: skip


def test_a_callback_sent_at_once_goes_as_stored(peer: Any) -> None:
    peer.route("POST", URL, (200, {"message": {"ack": {"status": "ACK"}}}))
    callback = _stored(timezone.now())
    outbox.deliver(callback.pk)
    assert peer.calls[0]["body"] == callback.body.encode()


def test_a_callback_sent_after_its_ttl_goes_with_a_new_timestamp(peer: Any) -> None:
    peer.route("POST", URL, (200, {"message": {"ack": {"status": "ACK"}}}))
    made = datetime.now(UTC) - timedelta(minutes=5)
    callback = _stored(made)
    before = orjson.loads(callback.body)
    outbox.deliver(callback.pk)
    sent = orjson.loads(peer.calls[0]["body"])
    stamped = parse_utc(sent["context"]["timestamp"])
    assert abs((stamped - datetime.now(UTC)).total_seconds()) < 5
    sent["context"]["timestamp"] = before["context"]["timestamp"]
    assert sent == before  # nothing else changed: ids, ttl, message
    assert BecknCallback.objects.get(pk=callback.pk).body.encode() == peer.calls[0]["body"]  # the log: what went
    assert Delivery.objects.get(pk=callback.pk).status == Delivery.Status.DELIVERED
