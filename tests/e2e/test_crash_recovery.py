"""kill -9 at any point loses and doubles nothing a partner can see: Celery workers are killed while they
handle ACKed Beckn requests, while they send callbacks to a slow BAP and while they audit CDRs, and
restarted; then every request is answered once and every CDR audited once."""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from typing import Any

import orjson
import requests

from beckn.bap_client import BapClient, search_message
from beckn.models import BecknCallback, BecknMessage
from billing.models import Cdr, CdrAudit
from emsp.models import Partner, hash_token
from tests.e2e.platform import Platform, until
from tests.e2e.test_journey import BENGALURU, bap_for

SEARCHES = 24
CDRS = 12
CPO_TOKEN = "e2e-cdr-sender-token"


def post_cdrs(platform: Platform, spec_cdr: dict[str, Any]) -> list[str]:
    """CDRs from a CPO of ours, posted to the OCPI receiver as the CPO would (each queues an audit)."""
    Partner.objects.create(
        name="CDR sender", country_code="IN", party_id="CDX", state=Partner.State.CONNECTED,
        incoming_token_hash=hash_token(CPO_TOKEN), endpoints=[],
    )  # fmt: skip
    header = {"Authorization": f"Token {base64.b64encode(CPO_TOKEN.encode()).decode()}"}
    ids = []
    for i in range(CDRS):
        cdr = copy.deepcopy(spec_cdr)
        cdr.update(country_code="IN", party_id="CDX", id=f"CRASH-{i:03d}")
        answer = requests.post(f"{platform.base}/ocpi/emsp/2.2.1/cdrs", json=cdr, headers=header, timeout=10)
        assert answer.json()["status_code"] == 1000, answer.text
        ids.append(cdr["id"])
    return ids


def kill_and_restart(platform: Platform, *, after: float) -> None:
    time.sleep(after)
    for worker in platform.workers_running():
        platform.kill(worker)
    platform.start_worker(len(platform.procs))


def test_workers_killed_mid_request_mid_callback_and_mid_audit_lose_and_double_nothing(
    platform_factory: Callable[..., Platform], spec_example: Callable[[str], Any]
) -> None:
    platform = platform_factory()
    client: BapClient = bap_for(platform)
    client.reply_delay = 0.25  # a slow BAP: callbacks are in flight when the worker dies
    try:
        sent = []
        for _ in range(SEARCHES):
            status, ack, message_id, _ = client.send("search", search_message(*BENGALURU, radius_km=20))
            assert status == 200, ack
            sent.append(message_id)
        cdr_ids = post_cdrs(platform, spec_example("cdr_example.json"))

        kill_and_restart(platform, after=0.3)  # handling requests, auditing CDRs
        kill_and_restart(platform, after=1.5)  # sending callbacks to the slow BAP
        kill_and_restart(platform, after=1.0)

        answered: dict[str, list[bytes]] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and set(answered) != set(sent):
            callback = client.wait("on_search", timeout=5)
            if callback is not None:
                answered.setdefault(callback.body["context"]["message_id"], []).append(orjson.dumps(callback.body))
        assert set(answered) == set(sent), f"unanswered: {set(sent) - set(answered)}\n{platform.logs()}"
        until(
            lambda: Cdr.objects.filter(cdr_id__in=cdr_ids, processed_at__isnull=False).count() == CDRS,
            120,
            f"every CDR processed\n{platform.logs()}",
        )
        # A row whose worker died after the POST is settled once its lease runs out and it is sent again.
        until(
            lambda: not BecknCallback.objects.filter(message_id__in=sent).exclude(status="DELIVERED").exists(),
            60,
            "every callback recorded as delivered",
        )
    finally:
        client.close()
    # Our own duplicates are suppressed: one recorded request, one callback row per request. A BAP may see a
    # delivery twice (a worker killed after the POST, before recording it: at-least-once) — the same bytes,
    # which it deduplicates by message_id.
    for message_id in sent:
        assert BecknMessage.objects.filter(message_id=message_id).count() == 1
        assert BecknCallback.objects.filter(message_id=message_id).count() == 1
        assert len(set(answered[message_id])) == 1, f"{message_id} was answered with different bodies"
    assert CdrAudit.objects.filter(cdr__cdr_id__in=cdr_ids).count() == CDRS
