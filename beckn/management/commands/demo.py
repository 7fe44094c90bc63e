"""`make demo`: one driver's charge across both protocols against the running platform — Beckn search to
settlement — printing each step, what came back and how long it took."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from beckn.bap_client import (
    BapClient,
    Callback,
    confirm_message,
    init_message,
    pay_on_hosted_page,
    payment_of,
    search_message,
    select_message,
    update_message,
)


class Command(BaseCommand):
    help = "Walk one driver through search → select → init → confirm → start → status → stop → CDR → settlement."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bpp", default=f"{settings.PUBLIC_BASE_URL}/beckn")
        parser.add_argument("--gps", default="12.9716,77.5946", help="where the driver is (default Bengaluru)")
        parser.add_argument("--kwh", type=float, default=5.0)
        parser.add_argument("--charge-seconds", type=float, default=12.0, help="how long to charge before stopping")

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("emsp.outbound").setLevel(logging.WARNING)  # our own requests: the steps say enough
        from beckn import registry
        from beckn.keys import our_public_key_b64

        client = BapClient(
            bpp_url=options["bpp"].rstrip("/"), subscriber_id="bap.demo.local", bpp_public_key_b64=our_public_key_b64()
        )
        registry.trust(client.subscriber_id, client.unique_key_id, client.public_key_b64, subscriber_url=client.bap_uri)
        time.sleep(registry.TRUSTED_MEMO_SECONDS)  # the web processes pick up the new trusted key
        try:
            self.journey(client, options)
        finally:
            client.close()

    def step(self, client: BapClient, label: str, action: str, message: dict[str, Any]) -> Callback:
        ack, callback, seconds = client.request(action, message, timeout=30)
        return self.step_result(label, action, ack, callback, seconds)

    def step_result(
        self, label: str, action: str, ack: dict[str, Any], callback: Callback | None, seconds: float
    ) -> Callback:
        status = (ack.get("message") or {}).get("ack", {}).get("status", ack)
        if callback is None:
            raise CommandError(f"{label}: {status}, and no on_{action} arrived")
        error = callback.body.get("error")
        signed = "signed ✓" if callback.signature_ok else "signature NOT verified"
        self.stdout.write(f"{label:<28} {status:<4} on_{action:<8} {seconds * 1000:7.0f} ms  {signed}")
        if error:
            raise CommandError(f"{label}: {error}")
        return callback

    def wait_for(self, client: BapClient, action: str, predicate: Any, label: str, timeout: float) -> Callback:
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            callback = client.wait(action, timeout=max(0.1, deadline - time.monotonic()))
            if callback is not None and predicate(callback.body):
                self.stdout.write(
                    f"{label:<28} unsolicited {action:<9} {(time.perf_counter() - started) * 1000:7.0f} ms later"
                )
                return callback
        raise CommandError(f"{label}: nothing within {timeout:.0f} s")

    def journey(self, client: BapClient, options: dict[str, Any]) -> None:
        lat, _, lon = options["gps"].partition(",")
        self.stdout.write(f"Driver at {options['gps']}, BAP listening on {client.bap_uri}\n")
        found = self.step(client, "1. search", "search", search_message(float(lat), float(lon), radius_km=10))
        provider, item = self.pick(found.body)
        self.stdout.write(f"   chose {item['descriptor']['name']} from {provider['id']}, {item.get('price', {})}")
        quoted = self.step(client, "2. select", "select", select_message(provider["id"], item["id"], options["kwh"]))
        quote = quoted.body["message"]["order"]["quote"]
        self.stdout.write(
            f"   quote {quote['price']['value']} {quote['price']['currency']}: "
            + ", ".join(f"{b['title']} {b['price']['value']}" for b in quote["breakup"])
        )
        initialised = self.step(
            client,
            "3. init",
            "init",
            init_message(
                provider["id"], item["id"], name="Asha Demo", email="asha.driver@example.com", phone="+919845000000"
            ),
        )
        payment = payment_of(initialised.body)
        self.stdout.write(
            f"   payment: {payment.get('collected_by')} collects {payment.get('params', {}).get('amount')} "
            f"{payment.get('params', {}).get('currency')} {payment.get('type')} by {payment.get('method')}"
        )
        if payment.get("url"):
            status = pay_on_hosted_page(payment["url"])
            self.stdout.write(f"   the driver authorises it on the provider's page {payment['url']} (HTTP {status})")
        confirmed = self.step(client, "4. confirm", "confirm", confirm_message(provider["id"], item["id"]))
        order_id = confirmed.body["message"]["order"]["id"]
        self.stdout.write(f"   order {order_id}, state {self.state(confirmed.body)}")
        started = self.start_when_paid(client, order_id)
        self.stdout.write(f"   state {self.state(started.body)}")
        self.wait_for(client, "on_status", lambda b: self.state(b) == "ACTIVE", "6. charging (ACTIVE)", 60)
        deadline = time.monotonic() + options["charge_seconds"]
        while time.monotonic() < deadline:
            time.sleep(min(4.0, max(0.0, deadline - time.monotonic())))
            live = self.step(client, "7. live status", "status", {"order_id": order_id})
            self.stdout.write(f"   {self.details(live.body)}")
        stopped = self.step(client, "8. stop charging", "update", update_message(order_id, "stop-charging"))
        self.stdout.write(f"   state {self.state(stopped.body)}")
        final = self.wait_for(
            client,
            "on_update",
            lambda b: (b.get("message") or {}).get("order", {}).get("quote", {}).get("id", "").startswith("FINAL"),
            "9. CDR billed (final bill)",
            90,
        )
        bill = final.body["message"]["order"]["quote"]
        self.stdout.write(
            f"   final {bill['price']['value']} {bill['price']['currency']}: "
            + ", ".join(f"{b['title']} {b['price']['value']}" for b in bill["breakup"])
        )
        paid = payment_of(final.body)
        if paid.get("collected_by") == "BPP" and paid.get("status") != "PAID":
            paid = payment_of(
                self.wait_for(
                    client, "on_update", lambda b: payment_of(b).get("status") == "PAID", "10. payment captured", 60
                ).body
            )
        self.stdout.write(
            f"   payment {paid.get('status')}: captured {paid.get('captured')}, authorised {paid.get('authorised')}"
        )
        self.settlement(order_id)
        self.books(order_id)
        self.stdout.write(self.style.SUCCESS(f"\nDone: order {order_id} from search to settlement."))

    def books(self, order_id: str) -> None:
        """The ledger after the charge: every account the order touched, and the trial balance."""
        from billing.models import LedgerLine
        from billing.services.ledger import from_minor, trial_balance

        lines = LedgerLine.objects.filter(entry__reference__in=self.references(order_id)).select_related(
            "account", "entry"
        )
        for line in lines.order_by("entry_id", "pk"):
            amount = from_minor(line.amount_minor, line.account.currency)
            self.stdout.write(f"   ledger {line.entry.event:<14} {line.account.code:<32} {amount:>10}")
        for currency in sorted(set(lines.values_list("account__currency", flat=True))):
            total = sum(trial_balance(currency).values())
            self.stdout.write(f"12. trial balance {currency}: {total} (every debit has its credit)")

    @staticmethod
    def references(order_id: str) -> list[str]:
        from billing.models import Cdr, Payment

        payments = [
            f"payment:{pk}" for pk in Payment.objects.filter(booking__order_id=order_id).values_list("pk", flat=True)
        ]
        cdrs = [
            f"cdr:{pk}"
            for pk in Cdr.objects.filter(charging_session__booking__order_id=order_id).values_list("pk", flat=True)
        ]
        return payments + cdrs

    def start_when_paid(self, client: BapClient, order_id: str) -> Callback:
        """The driver starts at once (walk-up: a start before the CPO has answered RESERVE_NOW waits for it on
        our side). Until the provider's webhook has told us the payment is authorised, the start is refused
        with error 40004 naming the payment page; the app tries again a second later."""
        deadline = time.monotonic() + 30
        while True:
            ack, callback, seconds = client.request("update", update_message(order_id, "start-charging"), timeout=30)
            error = (callback.body.get("error") or {}) if callback else {}
            if "authorises it" not in str(error.get("message", "")) or time.monotonic() > deadline:
                return self.step_result("5. start charging", "update", ack, callback, seconds)
            self.stdout.write(f"   not yet ({error.get('message')}, {seconds * 1000:.0f} ms): retrying")
            time.sleep(1)

    @staticmethod
    def pick(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        for provider in body["message"]["catalog"]["providers"]:
            for item in provider["items"]:
                specs = {t["descriptor"]["code"]: t["value"] for g in item.get("tags", []) for t in g.get("list", [])}
                if specs.get("status") == "AVAILABLE" and "price" in item:
                    return provider, item
        raise CommandError("no available charger with a known price nearby: is the platform running (make run)?")

    @staticmethod
    def state(body: dict[str, Any]) -> str:
        fulfillments = ((body.get("message") or {}).get("order") or {}).get("fulfillments") or [{}]
        return ((fulfillments[0].get("state") or {}).get("descriptor") or {}).get("code", "?")

    @staticmethod
    def details(body: dict[str, Any]) -> str:
        fulfillments = ((body.get("message") or {}).get("order") or {}).get("fulfillments") or [{}]
        tags = [t for g in fulfillments[0].get("tags") or [] for t in g.get("list", [])]
        return ", ".join(f"{t['descriptor']['code']} {t['value']}" for t in tags) or "no session figures yet"

    def settlement(self, order_id: str) -> None:
        from billing.services.settlement import settlement_compute
        from emsp.models import Booking

        booking = Booking.objects.select_related("evse__location__partner").get(order_id=order_id)
        today = timezone.now().date()
        rows = settlement_compute(partner=booking.evse.location.partner, period_start=today.replace(day=1))
        for row in rows:
            self.stdout.write(
                f"11. settlement {row.partner} {row.period_start:%Y-%m} {row.currency}: {row.cdr_count} CDRs, "
                f"{row.energy_kwh.normalize()} kWh, CPO billed {row.cpo_billed_incl_vat.normalize()}, "
                f"charged to drivers {row.charged_to_drivers.normalize()}, margin {row.margin_excl_vat.normalize()}, "
                f"state {row.state}"
            )
