"""A test BAP: signs requests with its own key (a subscriber our BPP trusts) and collects the callbacks our
BPP posts back (through the patched outbound seam)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.test import Client

from beckn.models import BecknSubscriber
from beckn.signing import generate_keypair, load_private_key, sign_request
from emsp.datetimes import format_datetime
from tests.fakes import FakePeer

BAP_ID = "bap.test.example"
BAP_URI = "https://bap.test.example/beckn"
KEY_ID = "bap-key-1"


@dataclass
class FakeBap:
    peer: FakePeer
    client: Client = field(default_factory=Client)
    private_b64: str = ""
    public_b64: str = ""
    transaction_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    bap_id: str = BAP_ID
    bap_uri: str = BAP_URI

    def __post_init__(self) -> None:
        self.private_b64, self.public_b64 = generate_keypair()
        BecknSubscriber.objects.update_or_create(
            subscriber_id=self.bap_id,
            unique_key_id=KEY_ID,
            defaults={
                "type": "BAP",
                "signing_public_key": self.public_b64,
                "trusted": True,
                "subscriber_url": self.bap_uri,
            },
        )
        for action in ("on_search", "on_select", "on_init", "on_confirm", "on_status", "on_track", "on_cancel",
                       "on_update", "on_rating", "on_support"):  # fmt: skip
            self.peer.route("POST", f"{self.bap_uri}/{action}", (200, {"message": {"ack": {"status": "ACK"}}}))

    def context(self, endpoint: str, **overrides: Any) -> dict[str, Any]:
        context = {
            "domain": "ev-charging:beckn",
            "action": endpoint,
            "location": {"country": {"code": "IND"}, "city": {"code": "std:080"}},
            "version": "1.1.0",
            "bap_id": self.bap_id,
            "bap_uri": self.bap_uri,
            "transaction_id": self.transaction_id,
            "message_id": str(uuid.uuid4()),
            "timestamp": format_datetime(datetime.now(UTC), "millis"),  # a real BAP stamps each request now
            "ttl": "PT30S",
        }
        if endpoint != "search":
            context.update({"bpp_id": settings.BECKN_SUBSCRIBER_ID, "bpp_uri": settings.BECKN_SUBSCRIBER_URL})
        context.update(overrides)
        return context

    def sign(self, body: bytes) -> str:
        now = int(time.time())
        return sign_request(
            body, subscriber_id=self.bap_id, unique_key_id=KEY_ID, private_key=load_private_key(self.private_b64),
            created=now, expires=now + 300,
        )  # fmt: skip

    def post(
        self,
        endpoint: str,
        message: dict[str, Any],
        *,
        raw: bytes | None = None,
        signed: bool = True,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> Any:
        """POST a signed request to /beckn/{endpoint}; `context` overrides context fields (even `action`)."""
        body = (
            raw if raw is not None else orjson.dumps({"context": self.context(endpoint, **context), "message": message})
        )
        headers = {**({"Authorization": self.sign(body)} if signed else {}), **(headers or {})}
        return self.client.post(f"/beckn/{endpoint}", data=body, content_type="application/json", headers=headers)

    def callbacks(self, action: str) -> list[dict[str, Any]]:
        """The bodies of the `action` callbacks our BPP posted to this BAP, oldest first."""
        return [c["json"] for c in self.calls(action)]

    def calls(self, action: str) -> list[dict[str, Any]]:
        return [c for c in self.peer.calls if c["url"] == f"{self.bap_uri}/{action}"]


# The CPO of the Beckn tests: its Commands receiver (behind the outbound seam) and its one tariff.
CPO_BASE = "http://127.0.0.1:9/ocpi/cpo/2.2.1"
TARIFF = {
    "country_code": "IN",
    "party_id": "CPA",
    "id": "T1",
    "currency": "INR",
    "elements": [
        {"price_components": [{"type": "ENERGY", "price": 18, "vat": 18, "step_size": 1}]},
        {"price_components": [{"type": "FLAT", "price": 20, "vat": 18, "step_size": 1}]},
    ],
    "last_updated": "2026-01-01T00:00:00Z",
}
