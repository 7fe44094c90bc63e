"""Beckn rate limits per signing subscriber: beyond BECKN_RATE_LIMIT_PER_MINUTE a NACK with BECKN-005 code
50000 (Policy Error), HTTP 429 and Retry-After; only verified requests count."""

from __future__ import annotations

from typing import Any

import pytest

from beckn import tasks
from beckn.models import BecknMessage
from emsp import ratelimit

pytestmark = pytest.mark.django_db

SEARCH = {
    "intent": {
        "fulfillment": {
            "stops": [
                {
                    "location": {
                        "circle": {
                            "gps": "12.971599,77.594566",
                            "radius": {"type": "CONSTANT", "value": "5", "unit": "km"},
                        }
                    }
                }
            ]
        }
    }
}


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    """Counts in Redis (when REDIS_URL is set) outlive a test; this subscriber starts each test at zero."""
    client = ratelimit.redis_client()
    if client is not None:
        for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}beckn:*", count=1000):
            client.delete(key)


def test_a_subscriber_over_its_limit_gets_a_policy_error_nack_with_429_and_retry_after(bap: Any, settings: Any) -> None:
    settings.BECKN_RATE_LIMIT_PER_MINUTE = 2
    assert [bap("search", SEARCH).status_code for _ in range(2)] == [200, 200]
    refused = bap("search", SEARCH)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    body = refused.json()
    assert body["message"]["ack"]["status"] == "NACK"
    assert body["error"]["code"] == "50000"
    assert "rate limit" in body["error"]["message"]


def test_a_refused_request_is_neither_queued_nor_recorded(
    bap: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BECKN_RATE_LIMIT_PER_MINUTE = 1
    bap("search", SEARCH)
    recorded = BecknMessage.objects.count()
    queued: list[Any] = []
    monkeypatch.setattr(tasks.handle_request, "delay", lambda *args: queued.append(args))
    assert bap("search", SEARCH).status_code == 429
    assert queued == []
    assert BecknMessage.objects.count() == recorded


def test_unsigned_requests_do_not_spend_the_subscribers_allowance(bap: Any, settings: Any) -> None:
    settings.BECKN_RATE_LIMIT_PER_MINUTE = 2
    assert {bap("search", SEARCH, signed=False).status_code for _ in range(5)} == {401}
    assert [bap("search", SEARCH).status_code for _ in range(2)] == [200, 200]


def test_a_limit_of_zero_lets_a_subscriber_send_without_limit(bap: Any, settings: Any) -> None:
    settings.BECKN_RATE_LIMIT_PER_MINUTE = 0
    assert {bap("search", SEARCH).status_code for _ in range(5)} == {200}


def test_a_process_killed_before_the_queue_has_the_request_leaves_the_bap_s_retry_to_be_queued(
    bap: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The path without queue_push (a RabbitMQ broker, or no Redis): the message id is marked seen only once the
    queue has the request. A kill before (here: an exception no handler catches) leaves the retry to be queued."""
    from beckn import ack

    monkeypatch.setattr(ack.queue_push, "pushable", lambda task: False)
    queued: list[Any] = []

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt  # as far as this request goes, the process is gone

    monkeypatch.setattr(tasks.handle_request, "delay", killed)
    with pytest.raises(KeyboardInterrupt):
        bap("search", SEARCH, message_id="m-killed")
    monkeypatch.setattr(tasks.handle_request, "delay", lambda *args: queued.append(args))
    assert bap("search", SEARCH, message_id="m-killed").status_code == 200  # the BAP's retry
    assert len(queued) == 1
    assert bap("search", SEARCH, message_id="m-killed").status_code == 200  # a duplicate: ACKed, not queued
    assert len(queued) == 1
