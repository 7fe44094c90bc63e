"""A CPO stops answering (its process frozen with SIGSTOP: connections open, no reply — the worst kind of
down): the platform's circuit breaker opens and `select` answers from the catalogue without waiting, then
recovers by itself when the CPO is back (issue 10, point 5). Real processes: gunicorn, Celery worker and beat,
Redis, PostgreSQL, two simulator CPOs, a signing BAP."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from beckn.bap_client import BapClient, search_message, select_message
from emsp.models import CircuitBreaker, Partner
from tests.e2e.platform import Platform, until
from tests.e2e.test_journey import BENGALURU, ask, bap_for, items, specs

BREAKER_ENV = {"OCPI_BREAKER_FAILURES": "3", "OCPI_BREAKER_OPEN_SECONDS": "3"}


def timed_select(client: BapClient, provider: str, item: str) -> tuple[float, dict[str, str]]:
    started = time.monotonic()
    callback = ask(client, "select", select_message(provider, item, 3))
    took = time.monotonic() - started
    assert "error" not in callback.body, callback.body
    return took, specs(callback.body["message"]["order"]["items"][0])


def test_select_stops_waiting_for_a_cpo_that_went_silent(platform_factory: Callable[..., Platform]) -> None:
    platform = platform_factory(env=BREAKER_ENV).start_cpos()
    client = bap_for(platform)
    found = ask(client, "search", search_message(*BENGALURU, radius_km=20))
    provider, item = next((p, i) for p, i in items(found) if p == "IN*CPA" and specs(i)["ocpi-status"] == "AVAILABLE")
    cpo = Partner.objects.get(party_id="CPA")

    took, tags = timed_select(client, provider, item["id"])  # the CPO answers: a live status
    assert "status-note" not in tags

    frozen = platform.sims["A"].proc.pid
    os.kill(frozen, signal.SIGSTOP)
    silent_at = time.monotonic()
    try:
        waits = []
        while not CircuitBreaker.objects.filter(partner=cpo, module="locations", state="OPEN").exists():
            took, tags = timed_select(client, provider, item["id"])
            waits.append(took)
            assert len(waits) <= 3, "the breaker did not open after 3 timeouts"
        opened = CircuitBreaker.objects.get(partner=cpo, module="locations")
        assert all(w >= 2 for w in waits)  # each waited for the 2 s live check before the breaker opened
        # From now on: no waiting, the catalogue's status with a LOW confidence and the reason.
        fast = []
        for _ in range(3):
            took, tags = timed_select(client, provider, item["id"])
            fast.append(took)
            assert tags["status-confidence"] == "LOW"
            assert "not answering locations requests" in tags["status-note"]
        print(f"\nselect while the CPO is silent: {', '.join(f'{w:.2f}' for w in waits)} s until the breaker opened;")
        print(f"after it opened: {', '.join(f'{t:.3f}' for t in fast)} s (on_select received)")
        assert max(fast) < 1.0
        assert "3 failures" in opened.reason
        print(f"from SIGSTOP to the first select answered without waiting: {time.monotonic() - silent_at:.2f} s")
    finally:
        os.kill(frozen, signal.SIGCONT)

    # Recovery is automatic: the beat's probe (every 10 s) finds the CPO answering and closes the breaker.
    until(
        lambda: CircuitBreaker.objects.filter(partner=cpo, module="locations", state="CLOSED").exists(),
        40,
        "the breaker closing after the CPO came back",
    )
    took, tags = timed_select(client, provider, item["id"])
    assert "status-note" not in tags
