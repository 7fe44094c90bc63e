"""Beckn's Prometheus figures (emsp/metrics.py serves them): every ACK and NACK we answer a request with, per
action and reason (the BECKN-005 error code), and why signatures were refused (beckn/auth.py's reasons)."""

from __future__ import annotations

from prometheus_client import Counter

from beckn.parsing import ACTIONS
from emsp.metrics import labelled

BECKN_RESPONSES = Counter(
    "emsp_beckn_responses_total",
    "Beckn requests answered, per action, ACK or NACK, and reason (the NACK's error code; `ok` for an ACK).",
    ["action", "ack", "reason"],
)
SIGNATURE_FAILURES = Counter(
    "emsp_beckn_signature_failures_total",
    "Beckn request signatures refused, per header (Authorization, X-Gateway-Authorization) and reason.",
    ["header", "reason"],
)


def action_label(action: str) -> str:
    return action if action in ACTIONS else "<unknown>"  # bounded: any path may be asked for


def count_ack(action: str) -> None:
    labelled(BECKN_RESPONSES, action_label(action), "ACK", "ok").inc()


def count_nack(action: str, code: str) -> None:
    reason = code if code.isdigit() and len(code) <= 6 else "other"
    labelled(BECKN_RESPONSES, action_label(action), "NACK", reason).inc()


def count_signature_failure(header: str, reason: str) -> None:
    SIGNATURE_FAILURES.labels(header, reason).inc()
