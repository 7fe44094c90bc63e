"""A small Beckn BAP for demos and tests: it signs requests to a BPP (ours, over HTTP, through the outbound
seam), listens for the on_* callbacks on a local port, verifies their signatures, and hands them back. Used
by `manage.py bap` and `manage.py demo`."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from beckn.signing import (
    SignatureError,
    generate_keypair,
    load_private_key,
    parse_signature_header,
    sign_request,
    verify_signature,
)
from emsp import outbound
from emsp.datetimes import format_datetime

DEFAULT_DOMAIN = "ev-charging:beckn"
# Each request's context.ttl, and how long its signature holds: BECKN-006 "The difference between the created
# and the expires field should be equal to the TTL of the request".
REQUEST_TTL_SECONDS = 30


@dataclass
class Callback:
    action: str
    body: dict[str, Any]
    received_at: float
    signature_ok: bool | None


@dataclass
class BapClient:
    """One BAP identity talking to one BPP. `bpp_url` is the BPP's Beckn base, e.g. http://127.0.0.1:8000/beckn."""

    bpp_url: str
    subscriber_id: str = "bap.demo.local"
    unique_key_id: str = "demo-key"
    private_key_b64: str = ""
    bpp_public_key_b64: str | None = None
    domain: str = DEFAULT_DOMAIN
    port: int = 0
    reply_delay: float = 0.0  # seconds the callback receiver takes to answer (a slow BAP, in tests)
    transaction_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    bpp_id: str | None = None

    def __post_init__(self) -> None:
        if not self.private_key_b64:
            self.private_key_b64, _ = generate_keypair()
        self._key = load_private_key(self.private_key_b64)
        self._inbox: queue.Queue[Callback] = queue.Queue()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def bap_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/beckn"

    @property
    def public_key_b64(self) -> str:
        from beckn.signing import public_key_b64

        return public_key_b64(self._key)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        client = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body are two writes: no wait for a delayed ACK

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = time.perf_counter()
                action = self.path.rstrip("/").rsplit("/", 1)[-1]
                signature_ok = client._verify(raw, self.headers.get("Authorization"))
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = {"unparseable": raw[:200].decode("utf-8", "replace")}
                client._inbox.put(Callback(action, body, received, signature_ok))
                if client.reply_delay:
                    time.sleep(client.reply_delay)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message":{"ack":{"status":"ACK"}}}')

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _verify(self, raw: bytes, header: str | None) -> bool | None:
        if self.bpp_public_key_b64 is None:
            return None
        try:
            verify_signature(raw, parse_signature_header(header), self.bpp_public_key_b64, now=int(time.time()), skew=5)
        except SignatureError:
            return False
        return True

    def context(self, action: str, message_id: str | None = None) -> dict[str, Any]:
        context: dict[str, Any] = {
            "domain": self.domain,
            "action": action,
            "location": {"country": {"code": "IND"}},
            "version": "1.1.0",
            "bap_id": self.subscriber_id,
            "bap_uri": self.bap_uri,
            "transaction_id": self.transaction_id,
            "message_id": message_id or str(uuid.uuid4()),
            "timestamp": format_datetime(datetime.now(UTC), "millis"),
            "ttl": f"PT{REQUEST_TTL_SECONDS}S",
        }
        if action != "search" and self.bpp_id:
            context["bpp_id"] = self.bpp_id
            context["bpp_uri"] = self.bpp_url
        return context

    def send(self, action: str, message: dict[str, Any]) -> tuple[int, dict[str, Any], str, float]:
        """POST a signed request; returns (HTTP status, the ACK/NACK body, message_id, seconds taken)."""
        context = self.context(action)
        body = orjson.dumps({"context": context, "message": message})
        now = int(time.time())
        header = sign_request(
            body, subscriber_id=self.subscriber_id, unique_key_id=self.unique_key_id, private_key=self._key,
            created=now, expires=now + REQUEST_TTL_SECONDS,
        )  # fmt: skip
        started = time.perf_counter()
        response = outbound.send(
            "POST",
            f"{self.bpp_url}/{action}",
            body=body,
            headers={"Authorization": header, "Content-Type": "application/json"},
            timeout=10,
        )
        try:
            ack = response.json()
        except ValueError:
            ack = {"raw": response.content[:500].decode("utf-8", "replace")}
        return response.status, ack, context["message_id"], time.perf_counter() - started

    def wait(self, action: str, *, message_id: str | None = None, timeout: float = 15.0) -> Callback | None:
        """The next `action` callback (for `message_id` if given); others received meanwhile are kept."""
        deadline = time.monotonic() + timeout
        kept: list[Callback] = []
        try:
            while time.monotonic() < deadline:
                try:
                    callback = self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
                except queue.Empty:
                    return None
                if callback.action == action and (
                    message_id is None or callback.body.get("context", {}).get("message_id") == message_id
                ):
                    if callback.body.get("context", {}).get("bpp_id"):
                        self.bpp_id = callback.body["context"]["bpp_id"]
                    return callback
                kept.append(callback)
            return None
        finally:
            for callback in kept:
                self._inbox.put(callback)

    def request(
        self, action: str, message: dict[str, Any], *, timeout: float = 15.0
    ) -> tuple[dict[str, Any], Callback | None, float]:
        """Send and wait for the answer: (ACK body, the on_* callback or None, seconds until it arrived)."""
        started = time.perf_counter()
        status, ack, message_id, _ = self.send(action, message)
        if status != 200:
            return ack, None, time.perf_counter() - started
        callback = self.wait(f"on_{action}", message_id=message_id, timeout=timeout)
        return ack, callback, ((callback.received_at if callback else time.perf_counter()) - started)


# --- message builders for the EV journey --------------------------------------------------------------


def search_message(
    lat: float, lon: float, *, radius_km: float = 5, connector: str | None = None, min_power_kw: float | None = None
) -> dict[str, Any]:
    tags = []
    if connector:
        tags.append({"descriptor": {"code": "connector-type"}, "value": connector})
    if min_power_kw:
        tags.append({"descriptor": {"code": "power-rating"}, "value": f"{min_power_kw:g}kW"})
    fulfillment: dict[str, Any] = {
        "type": "CHARGING",
        "stops": [
            {
                "location": {
                    "circle": {
                        "gps": f"{lat},{lon}",
                        "radius": {"type": "CONSTANT", "value": f"{radius_km:g}", "unit": "km"},
                    }
                }
            }
        ],
    }
    if tags:
        fulfillment["tags"] = [{"descriptor": {"code": "connector-specifications"}, "list": tags}]
    return {"intent": {"fulfillment": fulfillment}}


def select_message(provider_id: str, item_id: str, kwh: float) -> dict[str, Any]:
    return {
        "order": {
            "provider": {"id": provider_id},
            "items": [
                {
                    "id": item_id,
                    "quantity": {"selected": {"measure": {"type": "CONSTANT", "value": f"{kwh:g}", "unit": "kWh"}}},
                }
            ],
        }
    }


def init_message(provider_id: str, item_id: str, *, name: str, email: str, phone: str) -> dict[str, Any]:
    return {
        "order": {
            "provider": {"id": provider_id},
            "items": [{"id": item_id}],
            "billing": {"name": name, "email": email, "phone": phone},
            "fulfillments": [{"customer": {"person": {"name": name}, "contact": {"phone": phone, "email": email}}}],
        }
    }


def confirm_message(provider_id: str, item_id: str) -> dict[str, Any]:
    return {
        "order": {
            "provider": {"id": provider_id},
            "items": [{"id": item_id}],
            "payments": [{"status": "NOT-PAID", "type": "POST-FULFILLMENT"}],
        }
    }


def update_message(order_id: str, code: str) -> dict[str, Any]:
    return {
        "update_target": "order.fulfillments[0].state",
        "order": {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": code}}}]},
    }


def pay_on_hosted_page(url: str, outcome: str = "pay") -> int:
    """What a driver does on the payment page the BPP's on_init links to (payments[].url): press Pay (or
    Decline). The page belongs to the payment provider (the sandbox `paysim` here); no card data passes us."""
    import requests

    return requests.post(url, data={"outcome": outcome}, allow_redirects=False, timeout=10).status_code


def payment_of(body: dict[str, Any]) -> dict[str, Any]:
    """The order's first payment in a callback, with its PAYMENT_STATE tags flattened (`state`, `captured`…)."""
    payments = ((body.get("message") or {}).get("order") or {}).get("payments") or [{}]
    payment = dict(payments[0])
    for group in payment.get("tags") or []:
        if (group.get("descriptor") or {}).get("code") == "PAYMENT_STATE":
            payment.update({t["descriptor"]["code"].lower(): t.get("value") for t in group.get("list", [])})
    return payment


def is_final_bill(body: dict[str, Any]) -> bool:
    """Does this callback's order carry the final bill (its `bill` tag group says `kind` final)?"""
    for group in ((body.get("message") or {}).get("order") or {}).get("tags") or []:
        if (group.get("descriptor") or {}).get("code") == "bill":
            return any((t.get("descriptor") or {}).get("code") == "kind" and t.get("value") == "final"
                       for t in group.get("list") or [])  # fmt: skip
    return False
