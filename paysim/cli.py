"""paysim's process: options, start, the ready line, the capture-window sweeper, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from typing import TextIO

from .server import PaysimServer
from .store import Store
from .webhooks import Deliverer, log


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paysim",
        description="A sandbox payment provider answering the Stripe and Razorpay API subset the eMSP uses, with "
        "hosted pages and signed webhooks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700, help="0 picks a free port (the ready line says which)")
    parser.add_argument("--public-url", default="", help="base of hosted-page URLs (default http://HOST:PORT)")
    parser.add_argument("--stripe-webhook", default="", metavar="URL", help="where Stripe events are POSTed")
    parser.add_argument("--razorpay-webhook", default="", metavar="URL", help="where Razorpay events are POSTed")
    parser.add_argument("--stripe-secret", default="whsec_paysim", help="Stripe webhook endpoint secret")
    parser.add_argument("--razorpay-webhook-secret", default="paysim_webhook_secret")
    parser.add_argument(
        "--auto-pay", type=float, default=None, metavar="SECONDS", help="pay every new checkout after SECONDS"
    )
    parser.add_argument(
        "--decline-over", type=int, default=None, metavar="AMOUNT_MINOR", help="decline payments above this amount"
    )
    parser.add_argument("--webhook-attempts", type=int, default=5, help="deliveries tried per event (default 5)")
    parser.add_argument("--webhook-backoff", type=float, default=1.0, help="seconds before the first retry, doubling")
    parser.add_argument(
        "--capture-window",
        type=float,
        default=3 * 24 * 3600,
        metavar="SECONDS",
        help="authorisations not captured within this are released: Razorpay refunds them, Stripe cancels them "
        "(default 3 days, Razorpay's default manual-capture timeout)",
    )
    return parser


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    stop = threading.Event()
    deliverer = Deliverer(
        urls={"stripe": args.stripe_webhook, "razorpay": args.razorpay_webhook},
        secrets={"stripe": args.stripe_secret, "razorpay": args.razorpay_webhook_secret},
        attempts=max(1, args.webhook_attempts),
        backoff=args.webhook_backoff,
    )
    store = Store(public_url="", emit=deliverer, decline_over=args.decline_over)
    server = PaysimServer((args.host, args.port), store)
    base = f"http://{args.host}:{server.server_address[1]}"
    store.public_url = (args.public_url or base).rstrip("/")

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    server.serve_in_background()
    threading.Thread(target=_sweep, args=(store, args, stop), daemon=True).start()
    out.write(f"paysim listening on {base}\n")
    out.flush()
    while not stop.wait(0.5):
        pass
    deliverer.stop()
    server.shutdown()
    server.server_close()
    log("stopped")
    return 0


def _sweep(store: Store, args: argparse.Namespace, stop: threading.Event) -> None:
    """Auto-pay new checkouts and release authorisations past the capture window, as the providers would."""
    while not stop.wait(0.2):
        now = time.time()
        if args.auto_pay is not None:
            with store.lock:
                due = [
                    c.id
                    for c in store.checkouts.values()
                    if not c.closed and c.id not in store.auto_paid and c.created <= now - args.auto_pay
                ]
                store.auto_paid.update(due)
            for checkout_id in due:
                try:
                    store.pay(checkout_id, "pay")
                except Exception as exc:
                    log(f"auto-pay {checkout_id}: {exc}")
        for provider in ("stripe", "razorpay"):
            for payment_id in store.authorised_before(provider, int(now - args.capture_window)):
                try:
                    store.expire(payment_id)
                except Exception as exc:
                    log(f"capture window {payment_id}: {exc}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)
