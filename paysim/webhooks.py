"""Webhook delivery as each provider does it: signed the provider's way, POSTed as JSON, retried with backoff until a
2xx answer or the attempts run out."""

from __future__ import annotations

import hashlib
import hmac
import json
import sys
import threading
import time
import urllib.error
import urllib.request

from .store import Event


def stripe_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the endpoint secret>."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def razorpay_signature(body: bytes, secret: str) -> str:
    """X-Razorpay-Signature: hex HMAC-SHA256 of the raw body with the webhook secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Deliverer:
    """Delivers each event on its own thread, so one slow endpoint does not hold the others back (providers
    promise no order either). A retry sends the same body and event id; Stripe signs each attempt afresh."""

    def __init__(
        self,
        *,
        urls: dict[str, str],
        secrets: dict[str, str],
        attempts: int = 5,
        backoff: float = 1.0,
        timeout: float = 10.0,
    ) -> None:
        self.urls = urls
        self.secrets = secrets
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.stopping = threading.Event()

    def __call__(self, event: Event) -> None:
        if not self.urls.get(event.provider):
            return
        threading.Thread(target=self._deliver, args=(event,), name=f"webhook-{event.event_id}", daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()

    def _deliver(self, event: Event) -> None:
        body = json.dumps(event.body, separators=(",", ":")).encode()
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            status = self._post(event, body)
            event.attempts.append(status)
            if 200 <= status < 300:
                event.delivered = True
                return
            log(
                f"webhook {event.provider} {event.type} {event.event_id}: attempt {attempt} got {status or 'no answer'}"
            )
            if attempt == self.attempts or self.stopping.wait(delay):
                return
            delay *= 2

    def _post(self, event: Event, body: bytes) -> int:
        headers = {"Content-Type": "application/json", "User-Agent": f"paysim/{event.provider}"}
        secret = self.secrets[event.provider]
        if event.provider == "stripe":
            headers["Stripe-Signature"] = stripe_signature(body, secret, int(time.time()))
        else:
            headers["X-Razorpay-Signature"] = razorpay_signature(body, secret)
            headers["X-Razorpay-Event-Id"] = event.event_id
        request = urllib.request.Request(self.urls[event.provider], data=body, headers=headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (a URL we were given)
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0


def log(message: str) -> None:
    print(f"paysim: {message}", file=sys.stderr, flush=True)
