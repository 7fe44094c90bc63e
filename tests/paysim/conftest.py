"""paysim as a real process on a free loopback port, and a small webhook receiver it delivers to."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from billing.payments.razorpay_gateway import RazorpayGateway
from billing.payments.stripe_gateway import StripeGateway

STRIPE_SECRET = "whsec_paysim_test"
RAZORPAY_SECRET = "paysim_webhook_test"
DECLINE_OVER = 900_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Delivery:
    provider: str
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every webhook; answers 500 once to the first delivery whose body holds a string in `fail_once` (to
    see paysim retry)."""

    deliveries: list[Delivery] = field(default_factory=list)
    fail_once: set[bytes] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, match: Callable[[Delivery], bool], timeout: float = 10.0) -> Delivery:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [d for d in self.deliveries if match(d)]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError("no such webhook arrived")

    def event(self, provider: str, event_type: str, object_id: str) -> Delivery:
        """The first delivery of `event_type` about `object_id` (a payment intent, session, payment or link)."""
        return self.wait_for(lambda d: d.provider == provider and _about(d, event_type, object_id))


def _about(delivery: Delivery, event_type: str, object_id: str) -> bool:
    payload = delivery.payload
    if delivery.provider == "stripe":
        obj = payload["data"]["object"]
        ids = {obj.get("id"), obj.get("payment_intent")}
        return payload["type"] == event_type and object_id in ids
    entities = [v["entity"] for v in payload["payload"].values()]
    return payload["event"] == event_type and any(object_id in (e.get("id"), e.get("payment_id")) for e in entities)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with state.lock:
                failing = next((token for token in state.fail_once if token in body), None)
                state.fail_once.discard(failing)
                state.deliveries.append(Delivery(self.path.strip("/"), dict(self.headers.items()), body))
            self.send_response(500 if failing is not None else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def paysim(receiver: tuple[Receiver, str]) -> Iterator[str]:
    _, hooks = receiver
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paysim",
            "--port",
            str(port),
            "--stripe-webhook",
            f"{hooks}/stripe",
            "--razorpay-webhook",
            f"{hooks}/razorpay",
            "--stripe-secret",
            STRIPE_SECRET,
            "--razorpay-webhook-secret",
            RAZORPAY_SECRET,
            "--decline-over",
            str(DECLINE_OVER),
            "--webhook-backoff",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert line.strip() == f"paysim listening on http://127.0.0.1:{port}", line + (process.stderr.read() or "")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, "paysim did not stop cleanly on SIGTERM"


@pytest.fixture
def stripe(paysim: str) -> StripeGateway:
    return StripeGateway(api_key="sk_test_paysim", webhook_secret=STRIPE_SECRET, api_base=f"{paysim}/stripe")


@pytest.fixture
def razorpay(paysim: str) -> RazorpayGateway:
    return RazorpayGateway(
        key_id="rzp_test_paysim",
        key_secret="paysim_secret",
        webhook_secret=RAZORPAY_SECRET,
        api_base=f"{paysim}/razorpay/v1",
    )


def pay(paysim: str, checkout_id: str, outcome: str = "pay") -> dict[str, Any]:
    answer = requests.post(f"{paysim}/paysim/pay/{checkout_id}", json={"outcome": outcome}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()
