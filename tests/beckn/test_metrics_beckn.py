"""Beckn in /metrics (issue 14, point 2): every ACK and NACK per action and reason (the BECKN-005 code), and
signature failures per header and reason (beckn/auth.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emsp.test_metrics import TOKEN, scrape, value

pytestmark = pytest.mark.django_db

SEARCH = {"intent": {"fulfillment": {"stops": [{"location": {"gps": "12.971599,77.594566"}}]}}}


@pytest.fixture(autouse=True)
def _token(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.METRICS_TOKEN = TOKEN
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def test_acks_nacks_and_signature_failures_are_counted_by_reason(bap: Any) -> None:
    ack = {"action": "search", "ack": "ACK", "reason": "ok"}
    bad_signature = {"action": "search", "ack": "NACK", "reason": "10001"}
    bad_request = {"action": "select", "ack": "NACK", "reason": "30000"}
    missing = {"header": "Authorization", "reason": "missing"}
    before = scrape()
    assert bap("search", SEARCH).status_code == 200
    assert bap("search", SEARCH, signed=False).status_code == 401
    assert bap("select", {"order": "not an order"}, bap_uri="https://elsewhere.example/beckn").status_code == 400
    after = scrape()
    for name, labels in (
        ("emsp_beckn_responses_total", ack),
        ("emsp_beckn_responses_total", bad_signature),
        ("emsp_beckn_responses_total", bad_request),
        ("emsp_beckn_signature_failures_total", missing),
    ):
        assert value(after, name, **labels) - value(before, name, **labels) == 1, (name, labels)


def test_an_unknown_action_is_one_label_value_whatever_its_path(bap: Any) -> None:
    unknown = {"action": "<unknown>", "ack": "NACK", "reason": "40001"}
    before = scrape()
    for path in ("nosuch", "another"):
        bap(path, SEARCH)
    after = scrape()
    assert (
        value(after, "emsp_beckn_responses_total", **unknown) - value(before, "emsp_beckn_responses_total", **unknown)
        == 2
    )
    assert "nosuch" not in after
