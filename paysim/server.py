"""paysim's HTTP face: the Stripe and Razorpay API subset our adapters call (under /stripe/v1 and /razorpay/v1, in the
providers' request and answer formats), the hosted payment pages, the test hooks and the payout files."""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import itertools
import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .store import ApiError, Store, razorpay_error, stripe_error

# Columns of Stripe's payout reconciliation report (payout_reconciliation.itemized.5; gross, fee and net in major
# units) and of Razorpay's settlement recon (GET /v1/settlements/recon/combined; amounts in paise). docs/payments.md.
STRIPE_PAYOUT_COLUMNS = [
    "automatic_payout_id",
    "automatic_payout_effective_at",
    "balance_transaction_id",
    "created_utc",
    "available_on_utc",
    "currency",
    "gross",
    "fee",
    "net",
    "reporting_category",
    "source_id",
    "description",
    "customer_facing_amount",
    "customer_facing_currency",
    "charge_id",
    "payment_intent_id",
    "payment_method_type",
    "card_brand",
    "payment_metadata[reference]",
]
RAZORPAY_SETTLEMENT_COLUMNS = [
    "entity_id",
    "type",
    "debit",
    "credit",
    "amount",
    "currency",
    "fee",
    "tax",
    "on_hold",
    "settled",
    "created_at",
    "settled_at",
    "settlement_id",
    "posted_at",
    "credit_type",
    "description",
    "notes",
    "payment_id",
    "settlement_utr",
    "order_id",
    "order_receipt",
    "method",
    "card_network",
    "card_issuer",
    "card_type",
    "dispute_id",
]
ZERO_DECIMAL = {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF"}


def parse_stripe_form(body: str) -> dict[str, Any]:
    """Stripe's form encoding of nested params (`line_items[0][price_data][currency]=eur`) back into dicts and
    lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+", key)
        node: Any = root
        for part, following in itertools.pairwise(parts):
            nxt: Any = [] if following.isdigit() else {}
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(None)
                if node[index] is None:
                    node[index] = nxt
                node = node[index]
            else:
                node = node.setdefault(part, nxt)
        last = parts[-1] if parts else key
        if isinstance(node, list):
            index = int(last)
            while len(node) <= index:
                node.append(None)
            node[index] = value
        else:
            node[last] = value
    return root


# Razorpay's X-Refund-Idempotency: "at least 10 character long and can contain alphabets, numbers, hyphens and
# underscores only".
_RAZORPAY_KEY = re.compile(r"[A-Za-z0-9_-]{10,}")


class Handler(BaseHTTPRequestHandler):
    server: PaysimServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms wait for a delayed ACK

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing ---------------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        body = self._body() if method == "POST" else b""
        try:
            if path.startswith("/stripe/v1/"):
                self._api("stripe", method, path, body, self._stripe)
            elif path.startswith("/razorpay/v1/"):
                self._api("razorpay", method, path, body, self._razorpay)
            elif path.startswith("/pay/"):
                self._page(method, path.removeprefix("/pay/"), body)
            elif path.startswith("/paysim/"):
                self._hook(method, path, body)
            elif path == "/":
                self._json(200, {"paysim": "ok"})
            else:
                self._json(404, {"error": "not found"})
        except Exception as exc:  # a bug here must answer, not hang the client
            self._json(500, {"error": {"type": "api_error", "message": f"paysim: {exc}"}})
            raise

    # --- provider APIs ----------------------------------------------------------------------------------------

    def _api(self, provider: str, method: str, path: str, body: bytes, route: Callable[..., Any]) -> None:
        """Auth, then the idempotency key (same key and same request: the first answer again, marked
        Idempotent-Replayed; same key, other request: refused), then the route. Stripe's is `Idempotency-Key` on
        every POST; Razorpay's is `X-Refund-Idempotency` on refunds only (docs: razorpay.com/docs/api/refunds/
        normal-refunds-idempotent), at least 10 letters, digits, `-` or `_`."""
        if not self._authorised(provider):
            error = (
                stripe_error(401, "Invalid API Key provided", kind="invalid_request_error")
                if provider == "stripe"
                else razorpay_error("The api key provided is invalid", status=401)
            )
            self._json(error.status, error.body)
            return
        key = self.headers.get("Idempotency-Key" if provider == "stripe" else "X-Refund-Idempotency")
        if key is not None and provider == "razorpay" and not _RAZORPAY_KEY.fullmatch(key):
            error = razorpay_error("The idempotency key must be at least 10 characters of a-z, A-Z, 0-9, - and _")
            self._json(error.status, error.body)
            return
        if method != "POST" or not key:
            status, payload = self._answer(route, method, path, body)
            self._json(status, payload)
            return
        store = self.server.store
        fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).hexdigest()
        slot = (provider, key)
        with store.lock:
            cached = store.idempotency.get(slot)
            busy = slot in store.in_flight
            if cached is None and not busy:
                store.in_flight.add(slot)
        if busy:
            error = (
                stripe_error(
                    409,
                    "There is currently another in-progress request using this Idempotent Key (that probably means "
                    "you submitted twice, and the other request is still going through): " + key,
                    code="idempotency_key_in_use",
                )
                if provider == "stripe"
                else razorpay_error("A request with this idempotency key is still being processed", status=409)
            )
            self._json(error.status, error.body)
            return
        if cached is not None:
            seen, status, payload = cached
            if seen != fingerprint:
                error = (
                    stripe_error(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters they were first used "
                        "with.",
                        kind="idempotency_error",
                    )
                    if provider == "stripe"
                    else razorpay_error("Different request with the same idempotency key has already been processed.")
                )
                self._json(error.status, error.body)
            else:
                self._json(status, payload, {"Idempotent-Replayed": "true", "Idempotency-Key": key})
            return
        try:
            status, payload = self._answer(route, method, path, body)
            with store.lock:
                # Stripe keeps every answer for a key, "including 500 errors" (docs.stripe.com/api/idempotent_requests):
                # a retry with the key gets the same 500 back, whatever became of the request (not so Razorpay's).
                if status < 500 or provider == "stripe":
                    store.idempotency[slot] = (fingerprint, status, payload)
        finally:
            with store.lock:
                store.in_flight.discard(slot)
        self._json(status, payload, {"Idempotency-Key": key})

    def _answer(self, route: Callable[..., Any], method: str, path: str, body: bytes) -> tuple[int, Any]:
        with self.server.store.lock:
            fault = self.server.store.faults.pop((method, path), None)
        lost = (500, {"error": {"type": "api_error", "message": "paysim: an error occurred (a fault asked for)"}})
        if fault == "before":
            return lost
        try:
            answer = 200, route(method, path, body)
        except ApiError as exc:
            answer = exc.status, exc.body
        return lost if fault == "after" else answer

    def _authorised(self, provider: str) -> bool:
        auth = self.headers.get("Authorization") or ""
        if provider == "stripe":
            return auth.startswith("Bearer sk_")
        if not auth.startswith("Basic "):
            return False
        try:
            key_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return False
        return key_id.startswith("rzp_") and bool(secret)

    def _stripe(self, method: str, path: str, body: bytes) -> Any:
        store = self.server.store
        params = parse_stripe_form(body.decode()) if body else {}
        parts = path.removeprefix("/stripe/v1/").strip("/").split("/")
        match method, parts:
            case "POST", ["checkout", "sessions"]:
                return store.stripe_create_session(params)
            case "GET", ["checkout", "sessions", session_id]:
                return store.stripe_get(session_id, "checkout.session")
            case "POST", ["checkout", "sessions", session_id, "expire"]:
                return store.stripe_expire_session(session_id)
            case "GET", ["payment_intents", intent_id]:
                return store.stripe_get(intent_id, "payment_intent")
            case "POST", ["payment_intents", intent_id, "capture"]:
                return store.stripe_capture(intent_id, params)
            case "POST", ["payment_intents", intent_id, "cancel"]:
                return store.stripe_cancel(intent_id, params.get("cancellation_reason"))
            case "POST", ["refunds"]:
                return store.stripe_refund(params)
            case "GET", ["refunds"]:
                query = dict(parse_qsl(urlsplit(self.path).query))
                return store.stripe_refunds(query.get("payment_intent"))
            case "GET", ["refunds", refund_id]:
                return store.stripe_get(refund_id, "refund")
        raise stripe_error(404, f"Unrecognized request URL ({method}: {path}).")

    def _razorpay(self, method: str, path: str, body: bytes) -> Any:
        store = self.server.store
        try:
            params = json.loads(body) if body else {}
        except ValueError as exc:
            raise razorpay_error("The request body is not valid JSON") from exc
        query = dict(parse_qsl(urlsplit(self.path).query))
        parts = path.removeprefix("/razorpay/v1/").strip("/").split("/")
        match method, parts:
            case "POST", ["payment_links"]:
                return store.razorpay_create_link(params)
            case "GET", ["payment_links"]:
                return store.razorpay_links(query.get("reference_id"))
            case "GET", ["payment_links", link_id]:
                return store.razorpay_get(link_id, "plink_")
            case "POST", ["payment_links", link_id, "cancel"]:
                return store.razorpay_cancel_link(link_id)
            case "GET", ["payments", payment_id]:
                return store.razorpay_get(payment_id, "pay_")
            case "POST", ["payments", payment_id, "capture"]:
                return store.razorpay_capture(payment_id, params)
            case "POST", ["payments", payment_id, "refund"]:
                return store.razorpay_refund(payment_id, params)
            case "GET", ["payments", payment_id, "refunds"]:
                return store.razorpay_refunds(payment_id)
        raise razorpay_error(f"The requested URL was not found on the server. ({method} {path})", status=404)

    # --- hosted pages and test hooks ---------------------------------------------------------------------------

    def _page(self, method: str, checkout_id: str, body: bytes) -> None:
        store = self.server.store
        checkout = store.checkouts.get(checkout_id)
        if checkout is None:
            self._send(404, b"<h1>No such checkout</h1>", "text/html; charset=utf-8")
            return
        if method == "POST":
            outcome = dict(parse_qsl(body.decode())).get("outcome", "")
            try:
                result = store.pay(checkout_id, outcome)
            except ValueError:
                self._send(400, b"<h1>outcome must be pay or decline</h1>", "text/html; charset=utf-8")
                return
            except ApiError:
                self._send(409, b"<h1>This checkout is closed</h1>", "text/html; charset=utf-8")
                return
            if result["approved"] and checkout.return_url:
                location = checkout.return_url
                if checkout.provider == "razorpay":
                    link = store.razorpay[checkout_id]
                    query = urlencode(
                        {
                            "razorpay_payment_id": result["payment_id"],
                            "razorpay_payment_link_id": checkout_id,
                            "razorpay_payment_link_reference_id": link["reference_id"],
                            "razorpay_payment_link_status": "paid",
                        }
                    )
                    location += ("&" if "?" in location else "?") + query
                self._send(303, b"", "text/html; charset=utf-8", {"Location": location})
                return
            message = "Payment authorised." if result["approved"] else "Your card was declined. Try again."
            self._send(200, _page_html(checkout, message, closed=result["approved"]), "text/html; charset=utf-8")
            return
        self._send(200, _page_html(checkout, "", closed=checkout.closed), "text/html; charset=utf-8")

    def _hook(self, method: str, path: str, body: bytes) -> None:
        store = self.server.store
        parts = path.strip("/").split("/")
        try:
            match method, parts:
                case "POST", ["paysim", "pay", checkout_id]:
                    outcome = (json.loads(body) if body else {}).get("outcome", "pay")
                    self._json(200, store.pay(checkout_id, outcome))
                case "POST", ["paysim", "expire", object_id]:
                    self._json(200, store.expire(object_id))
                case "POST", ["paysim", "fail-next"]:
                    fault = json.loads(body) if body else {}
                    if fault.get("when") not in ("before", "after") or not str(fault.get("path", "")).startswith("/"):
                        raise ValueError('fail-next takes {"path": "/stripe/v1/...", "when": "before"|"after"}')
                    with store.lock:
                        store.faults[(str(fault.get("method", "POST")), fault["path"])] = fault["when"]
                    self._json(200, {"fail-next": fault})
                case "GET", ["paysim", "payouts", file_name] if file_name in ("stripe.csv", "razorpay.csv"):
                    text = payout_csv(store, file_name.removesuffix(".csv"))
                    self._send(200, text.encode(), "text/csv; charset=utf-8")
                case "GET", ["paysim", "events"]:
                    with store.lock:
                        events = [
                            {
                                "provider": e.provider,
                                "id": e.event_id,
                                "type": e.type,
                                "attempts": e.attempts,
                                "delivered": e.delivered,
                            }
                            for e in store.events
                        ]
                    self._json(200, {"events": events})
                case _:
                    self._json(404, {"error": "not found"})
        except KeyError as exc:
            self._json(404, {"error": f"no such object: {exc}"})
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
        except ApiError as exc:
            self._json(exc.status, exc.body)


def _page_html(checkout: Any, message: str, *, closed: bool) -> bytes:
    amount = _major(checkout.amount, checkout.currency)
    provider = "Stripe Checkout" if checkout.provider == "stripe" else "Razorpay Payment Link"
    form = (
        ""
        if closed
        else (
            f'<form method="post" action="/pay/{html.escape(checkout.id)}">'
            '<button name="outcome" value="pay" id="pay">Pay</button> '
            '<button name="outcome" value="decline" id="decline">Decline</button></form>'
        )
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>paysim: pay</title></head><body>"
        f"<p>paysim sandbox, acting as {provider}. No card data is asked for.</p>"
        f"<h1 id='amount'>{html.escape(checkout.currency)} {amount}</h1>"
        f"<p>{html.escape(checkout.description)}</p>"
        f"<p id='message'>{html.escape(message or ('This checkout is closed.' if closed else ''))}</p>"
        f"{form}</body></html>"
    )
    return page.encode()


def _major(amount: int, currency: str) -> str:
    if currency.upper() in ZERO_DECIMAL:
        return str(amount)
    return str((Decimal(amount) / 100).quantize(Decimal("0.01")))


def payout_csv(store: Store, provider: str) -> str:
    """Every captured and refunded amount so far as one payout (Stripe) or settlement (Razorpay), one row per balance
    transaction in the provider's own report columns: per payment, the rows add up to captured minus refunded."""
    with store.lock:
        rows = [t for t in store.balance if t["provider"] == provider]
        payout_id = "po_paysim" + hashlib.sha1(str(len(rows)).encode(), usedforsecurity=False).hexdigest()[:15]
    out = io.StringIO()
    if provider == "stripe":
        writer = csv.DictWriter(out, STRIPE_PAYOUT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for t in rows:
            currency = t["currency"].lower()
            created = _utc(t["created"])
            writer.writerow(
                {
                    "automatic_payout_id": payout_id,
                    "automatic_payout_effective_at": created,
                    "balance_transaction_id": t["id"],
                    "created_utc": created,
                    "available_on_utc": created,
                    "currency": currency,
                    "gross": _major(t["amount"], currency),
                    "fee": _major(t["fee"], currency),
                    "net": _major(t["amount"] - t["fee"], currency),
                    "reporting_category": t["kind"],
                    "source_id": t["source"],
                    "description": "",
                    "customer_facing_amount": _major(t["amount"], currency),
                    "customer_facing_currency": currency,
                    "charge_id": t["charge"] or "",
                    "payment_intent_id": t["payment"],
                    "payment_method_type": "card",
                    "card_brand": "visa",
                    "payment_metadata[reference]": (t["metadata"] or {}).get("reference", ""),
                }
            )
        return out.getvalue()
    writer = csv.DictWriter(out, RAZORPAY_SETTLEMENT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    settlement_id = "setl_" + payout_id[9:23]
    for t in rows:
        payment = t["kind"] == "payment"
        amount = abs(t["amount"])
        notes = t["metadata"] if isinstance(t["metadata"], dict) else {}
        writer.writerow(
            {
                "entity_id": t["source"],
                "type": t["kind"],
                "debit": 0 if payment else amount,
                "credit": amount - t["fee"] if payment else 0,
                "amount": amount,
                "currency": t["currency"],
                "fee": t["fee"],
                "tax": t["tax"],
                "on_hold": "false",
                "settled": "true",
                "created_at": t["created"],
                "settled_at": t["created"],
                "settlement_id": settlement_id,
                "posted_at": "",
                "credit_type": "default",
                "description": "",
                "notes": notes.get("reference", ""),
                "payment_id": "" if payment else t["payment"],
                "settlement_utr": settlement_id.removeprefix("setl_").upper(),
                "order_id": t["order_id"] or "",
                "order_receipt": "",
                "method": "card",
                "card_network": "Visa",
                "card_issuer": "HDFC",
                "card_type": "credit",
                "dispute_id": "",
            }
        )
    return out.getvalue()


def _utc(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


class PaysimServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: Store) -> None:
        super().__init__(address, Handler)
        self.store = store

    def serve_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        return thread
