"""The recorded provider answers and events under recordings/ (recordings/README.md says where each comes from)."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

RECORDINGS = Path(__file__).parent / "recordings"


def recording(name: str, **changes: Any) -> Any:
    """recordings/<name>.json, with top-level fields replaced by `changes`."""
    data = json.loads((RECORDINGS / f"{name}.json").read_text())
    data = copy.deepcopy(data)
    if changes:
        data.update(changes)
    return data


def as_body(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Stripe-Signature as Stripe documents it (docs.stripe.com/webhooks#verify-manually), computed here without
    the SDK so the adapter's check is tested against the specification, not against itself."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def razorpay_signature(body: bytes, secret: str) -> str:
    """X-Razorpay-Signature as Razorpay documents it: hex HMAC-SHA256 of the raw body with the webhook secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
