"""Probing a partner whose circuit breaker is open (emsp/services/breakers.py), so recovery needs no traffic:
the beat asks each breaker whose wait is over with one cheap request — the first item of a sender list
(`limit=1`), or the partner's versions for a receiver module (a CPO that answers is back)."""

from __future__ import annotations

import logging

from emsp.models import CircuitBreaker
from emsp.services import breakers
from ocpi.client import OcpiClient, OcpiClientError, with_params

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 5.0


def probe(breaker: CircuitBreaker) -> bool:
    """One probe request for an open breaker whose wait is over. True when the partner answered (the
    breaker is closed again); False when it failed (open again, longer) or another process probes."""
    partner = breaker.partner
    try:
        breakers.admit(partner, breaker.module)
    except breakers.CircuitOpen:
        return False
    client = OcpiClient(partner, timeout=PROBE_TIMEOUT_SECONDS)
    sender = partner.endpoint_url(breaker.module, "SENDER")
    try:
        if sender:
            client.request(
                "GET", with_params(sender, {"offset": "0", "limit": "1"}), module=breaker.module, guarded=False
            )
        else:
            client.request("GET", partner.versions_url, module="versions", guarded=False)
    except OcpiClientError as exc:
        breakers.failed(partner, breaker.module, f"probe: {exc}"[:200])
        return False
    breakers.succeeded(partner, breaker.module)
    return True


def probe_due() -> int:
    """Probe every open breaker whose wait is over; the number that closed."""
    return sum(probe(breaker) for breaker in breakers.due_for_probe())
