"""A short journey once on each broker, Redis and RabbitMQ (the rest of the e2e suite runs on E2E_BROKER, Redis
unless set): a signed search and select answered by the latency worker while CDRs are audited by the bulk
worker, each task on its own worker (docs/operations.md, "Queues and workers")."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import requests

from beckn.bap_client import search_message, select_message
from billing.models import Cdr
from tests.e2e.platform import Platform, until
from tests.e2e.test_crash_recovery import post_cdrs
from tests.e2e.test_journey import BENGALURU, ask, bap_for, items

TRANSPORT = {"redis": "redis", "rabbitmq": "amqp"}


def tasks_received(platform: Platform, queue: str) -> set[str]:
    (worker,) = [proc for proc in platform.procs if proc.name.startswith("worker") and f"-{queue}-" in proc.name]
    return set(re.findall(r"Task ([\w.]+)\[[0-9a-f-]+\] received", worker.log.read_text(errors="replace")))


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_it_runs_beckn_on_the_latency_worker_and_audits_on_the_bulk_worker_on_each_broker(
    platform_factory: Callable[..., Platform], spec_example: Callable[[str], Any], broker: str
) -> None:
    platform = platform_factory(broker=broker).start_cpos()
    readyz = requests.get(f"{platform.base}/readyz", timeout=10).json()
    assert readyz["checks"]["broker"]["transport"] == TRANSPORT[broker]
    client = bap_for(platform)
    try:
        found = ask(client, "search", search_message(*BENGALURU, radius_km=20))
        provider, item = items(found)[0]
        selected = ask(client, "select", select_message(provider, item["id"], 3))
        assert selected.body["message"]["order"]["items"][0]["id"] == item["id"]
    finally:
        client.close()
    cdr_ids = post_cdrs(platform, spec_example("cdr_example.json"))
    until(
        lambda: Cdr.objects.filter(cdr_id__in=cdr_ids, processed_at__isnull=False).count() == len(cdr_ids),
        60,
        f"every CDR audited\n{platform.logs()}",
    )

    latency, bulk = tasks_received(platform, "latency"), tasks_received(platform, "bulk")
    assert "beckn.tasks.handle_request" in latency  # its on_* callbacks are sent by the same task (outbox.sent_here)
    assert "billing.tasks.process_cdr" in bulk
    assert not latency & {"billing.tasks.process_cdr", "ocpi.tasks.sync_due_partners"}
    assert not bulk & {"beckn.tasks.handle_request", "emsp.tasks.outbox_deliver"}
