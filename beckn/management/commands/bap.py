"""A Beckn BAP on the command line: sign a request to a BPP, listen for the callback, print what came back."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from beckn.bap_client import (
    BapClient,
    confirm_message,
    init_message,
    search_message,
    select_message,
    update_message,
)

STATE_FILE = "bap-cli-state.json"


class Command(BaseCommand):
    help = (
        "Act as a Beckn BAP: `bap search --gps 12.97,77.59 --connector CCS2`, then `bap select --item ID`, "
        "`bap init`, `bap confirm`, `bap start`, `bap status`, `bap stop`, `bap track`, `bap cancel`, "
        "`bap rating --value 5`, `bap support`. The journey (transaction, item, order) is remembered between runs."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "action",
            choices=[
                "search",
                "select",
                "init",
                "confirm",
                "start",
                "stop",
                "status",
                "track",
                "cancel",
                "rating",
                "support",
                "new",
            ],
        )
        parser.add_argument("--bpp", default=f"{settings.PUBLIC_BASE_URL}/beckn", help="The BPP's Beckn base URL")
        parser.add_argument("--gps", default="12.9716,77.5946")
        parser.add_argument("--radius", type=float, default=5.0, help="km")
        parser.add_argument("--connector", default=None, help="e.g. CCS2, Type2, CHAdeMO")
        parser.add_argument("--min-power", type=float, default=None, help="kW")
        parser.add_argument("--item", default=None, help="Item id from on_search (default: the first one)")
        parser.add_argument("--provider", default=None)
        parser.add_argument("--kwh", type=float, default=10.0)
        parser.add_argument("--name", default="Asha Demo")
        parser.add_argument("--email", default="asha.driver@example.com")
        parser.add_argument("--phone", default="+919845000000")
        parser.add_argument("--value", default="5", help="rating value")
        parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for the callback")
        parser.add_argument(
            "--no-trust", action="store_true", help="Don't register this BAP's key as trusted in our DB"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("emsp.outbound").setLevel(logging.WARNING)  # our own requests: the steps say enough
        state_path = Path(settings.VAR_DIR) / STATE_FILE
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if options["action"] == "new" or not state.get("private_key"):
            from beckn.signing import generate_keypair

            private, _ = generate_keypair()
            state = {"private_key": private, "transaction_id": None}
            if options["action"] == "new":
                state_path.write_text(json.dumps(state))
                self.stdout.write("A new journey (and BAP key) will be used.")
                return
        from beckn.keys import our_public_key_b64

        client = BapClient(
            bpp_url=options["bpp"].rstrip("/"),
            private_key_b64=state["private_key"],
            bpp_public_key_b64=our_public_key_b64() if options["bpp"].startswith(settings.PUBLIC_BASE_URL) else None,
        )
        if state.get("transaction_id"):
            client.transaction_id = state["transaction_id"]
            client.bpp_id = state.get("bpp_id")
        if not options["no_trust"]:
            from beckn import registry

            registry.trust(
                client.subscriber_id, client.unique_key_id, client.public_key_b64, subscriber_url=client.bap_uri
            )
        try:
            action, message = self._message(options, state)
            ack, callback, seconds = client.request(action, message, timeout=options["wait"])
        finally:
            client.close()
        self.stdout.write(f"{action} → {json.dumps(ack)}")
        if callback is None:
            raise CommandError(f"no on_{action} within {options['wait']} s")
        signature = {True: "signature verified", False: "SIGNATURE INVALID", None: "signature not checked"}[
            callback.signature_ok
        ]
        self.stdout.write(f"on_{action} after {seconds * 1000:.0f} ms ({signature}):")
        self.stdout.write(json.dumps(callback.body.get("error") or callback.body.get("message"), indent=2)[:8000])
        if "error" in callback.body:
            self.stdout.write(self.style.WARNING(f"error: {json.dumps(callback.body['error'])}"))
        self._remember(state, client, action, callback.body, options)
        state_path.write_text(json.dumps(state))

    def _message(self, options: dict[str, Any], state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        action = options["action"]
        if action == "search":
            lat, _, lon = options["gps"].partition(",")
            state["transaction_id"] = None
            return "search", search_message(
                float(lat),
                float(lon),
                radius_km=options["radius"],
                connector=options["connector"],
                min_power_kw=options["min_power"],
            )
        provider = options["provider"] or state.get("provider_id")
        item = options["item"] or state.get("item_id")
        if action in ("select", "init", "confirm") and not (provider and item):
            raise CommandError("search first (or give --provider and --item)")
        if action == "select":
            return "select", select_message(provider, item, options["kwh"])
        if action == "init":
            return "init", init_message(
                provider, item, name=options["name"], email=options["email"], phone=options["phone"]
            )
        if action == "confirm":
            return "confirm", confirm_message(provider, item)
        order_id = state.get("order_id")
        if not order_id and action != "support":
            raise CommandError("confirm an order first")
        if action in ("start", "stop"):
            return "update", update_message(order_id, "start-charging" if action == "start" else "stop-charging")
        if action in ("status", "track"):
            return action, {"order_id": order_id}
        if action == "cancel":
            return "cancel", {"order_id": order_id, "cancellation_reason_id": "driver-request"}
        if action == "rating":
            return "rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": options["value"]}]}
        return "support", {"support": {"ref_id": order_id or ""}}

    @staticmethod
    def _remember(
        state: dict[str, Any], client: BapClient, action: str, body: dict[str, Any], options: dict[str, Any]
    ) -> None:
        state["transaction_id"] = client.transaction_id
        state["bpp_id"] = client.bpp_id
        message = body.get("message") or {}
        if action == "search":
            for provider in (message.get("catalog") or {}).get("providers") or []:
                for item in provider.get("items") or []:
                    state["provider_id"], state["item_id"] = provider["id"], item["id"]
                    return
        order = message.get("order") or {}
        if action == "confirm" and order.get("id"):
            state["order_id"] = order["id"]
