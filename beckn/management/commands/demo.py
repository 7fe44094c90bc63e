"""`make demo`: drivers' journeys across both protocols against the running platform (`make run`), as a Beckn
BAP, printing each step, what came back and how long it took:

A. a walk-up charge, search to settlement: the driver starts right after on_confirm (the start waits on our side
   behind the pending RESERVE_NOW);
B. a window booked ahead (~2 hours): the EVSE is held for that window only, a search for that window leaves it
   out, a start now is refused; then cancelled;
C. a reservation the CPO refuses: the simulator CPO is switched to `reject_reservations` at runtime (its
   `/_sim/faults` control endpoint); the app hears on_cancel and an on_search of alternatives, and selects one;
D. a route search: Bengaluru → Chennai with a vehicle, ranked by detour, with estimated charging time and cost;
E. a no-show: a short window booked at the start, never started: the beat ends it (on_cancel, reason no-show)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from beckn.bap_client import (
    BapClient,
    Callback,
    confirm_message,
    init_message,
    is_final_bill,
    pay_on_hosted_page,
    payment_of,
    search_message,
    select_message,
    update_message,
)
from emsp import outbound
from emsp.datetimes import format_datetime, parse_utc

# D: a route through two of the demo's cities (the simulator CPOs' catalogues), and the car driving it.
ROUTE = (("Bengaluru", "12.9716,77.5946"), ("Chennai", "13.0827,80.2707"))
VEHICLE = {
    "connector-types": "CCS2",
    "max-dc-kw": "50",
    "max-ac-kw": "7.4",
    "battery-kwh": "60",
    "soc-now": "20%",
    "soc-target": "80%",
}
DRIVER = {"name": "Asha Demo", "email": "asha.driver@example.com", "phone": "+919845000000"}


@dataclass
class Pending:
    """E's booking, made at the start and awaited at the end: what it printed meanwhile."""

    order_id: str
    arrive_by: datetime
    item: str
    lines: list[str] = field(default_factory=list)


class Command(BaseCommand):
    help = (
        "Drive the running platform as a Beckn BAP: a walk-up charge from search to settlement, a booked window, "
        "a reservation the CPO refuses (alternatives offered), a route search and a no-show."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bpp", default=f"{settings.PUBLIC_BASE_URL}/beckn")
        parser.add_argument("--gps", default="12.9716,77.5946", help="where the driver is (default Bengaluru)")
        parser.add_argument("--kwh", type=float, default=5.0)
        parser.add_argument("--charge-seconds", type=float, default=12.0, help="how long to charge before stopping")
        parser.add_argument(
            "--no-show-seconds",
            type=int,
            default=30,
            help="length of E's window, booked from now: the driver who never comes is a no-show when it ends",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("emsp.outbound").setLevel(logging.WARNING)  # our own requests: the steps say enough
        from beckn import registry
        from beckn.keys import our_public_key_b64

        bpp_url = options["bpp"].rstrip("/")
        client = BapClient(bpp_url=bpp_url, subscriber_id="bap.demo.local", bpp_public_key_b64=our_public_key_b64())
        # E's driver: the same app on its own callback port (its own key id, registered with that URL).
        other = BapClient(
            bpp_url=bpp_url,
            subscriber_id=client.subscriber_id,
            unique_key_id="demo-key-2",
            private_key_b64=client.private_key_b64,
            bpp_public_key_b64=client.bpp_public_key_b64,
        )
        for bap in (client, other):
            registry.trust(bap.subscriber_id, bap.unique_key_id, bap.public_key_b64, subscriber_url=bap.bap_uri)
        time.sleep(registry.TRUSTED_MEMO_SECONDS)  # the web processes pick up the new trusted keys
        self.buffer: list[str] | None = None
        try:
            self.run_all(client, other, options)
        finally:
            client.close()
            other.close()

    def run_all(self, client: BapClient, other: BapClient, options: dict[str, Any]) -> None:
        lat, _, lon = options["gps"].partition(",")
        position = (float(lat), float(lon))
        self.out(f"Driver at {options['gps']}, BAP listening on {client.bap_uri}")
        pending = self.no_show_book(other, position, options)
        self.section("A. A walk-up charge, search to settlement: the driver starts right after on_confirm")
        order_id = self.journey(client, options, exclude={pending.item})
        self.section("B. A window booked ahead: the charger is held for that window only")
        self.new_transaction(client)
        self.booked_window(client, position, options, exclude={pending.item})
        self.section("C. A reservation the CPO refuses: on_cancel, and alternatives the app can select")
        self.new_transaction(client)
        self.rejected_reservation(client, position, options, exclude={pending.item})
        self.section(f"D. A route search: {ROUTE[0][0]} → {ROUTE[-1][0]} with a vehicle, ranked by detour")
        self.new_transaction(client)
        self.route_search(client)
        self.section("E. A no-show: a window booked at the start of the demo, never started")
        self.no_show_wait(other, pending)
        self.out(self.style.SUCCESS(f"\nDone: order {order_id} from search to settlement, and scenarios B to E."))

    # --- output -------------------------------------------------------------------------------------------

    def out(self, line: str) -> None:
        """A line of the demo's output (held back while a later section's steps run early)."""
        if self.buffer is not None:
            self.buffer.append(line)
        else:
            self.stdout.write(line)

    def section(self, title: str) -> None:
        self.out(f"\n{title}")

    @staticmethod
    def new_transaction(client: BapClient) -> None:
        """The next scenario is another journey of the app: a transaction of its own."""
        client.transaction_id = str(uuid.uuid4())

    # --- Beckn requests and callbacks ---------------------------------------------------------------------

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
        self.out(f"{label:<28} {status:<4} on_{action:<8} {seconds * 1000:7.0f} ms  {signed}")
        if error:
            raise CommandError(f"{label}: {error}")
        return callback

    def wait_for(self, client: BapClient, action: str, predicate: Any, label: str, timeout: float) -> Callback:
        """The next unsolicited `action` callback of the client's transaction that `predicate` accepts."""
        started = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            callback = client.wait(action, timeout=max(0.1, deadline - time.monotonic()))
            if (
                callback is not None
                and (callback.body.get("context") or {}).get("transaction_id") == client.transaction_id
                and predicate(callback.body)
            ):
                self.out(f"{label:<28} unsolicited {action:<9} {(time.perf_counter() - started) * 1000:7.0f} ms later")
                return callback
        raise CommandError(f"{label}: nothing within {timeout:.0f} s")

    def book(
        self,
        client: BapClient,
        prefix: str,
        provider: dict[str, Any],
        item: dict[str, Any],
        kwh: float,
        window: tuple[datetime, datetime] | None = None,
        first: int = 2,
    ) -> Callback:
        """select → init → pay on the provider's page → confirm, for `window` when given; the on_confirm."""
        select = select_message(provider["id"], item["id"], kwh)
        confirm = confirm_message(provider["id"], item["id"])
        if window is not None:
            select["order"]["fulfillments"] = confirm["order"]["fulfillments"] = [window_fulfillment(window)]
        quoted = self.step(client, f"{prefix}{first}. select", "select", select)
        quote = quoted.body["message"]["order"]["quote"]
        self.out(f"   quote {quote['price']['value']} {quote['price']['currency']}")
        initialised = self.step(
            client, f"{prefix}{first + 1}. init", "init", init_message(provider["id"], item["id"], **DRIVER)
        )
        payment = payment_of(initialised.body)
        if payment.get("url"):
            status = pay_on_hosted_page(payment["url"])
            self.out(
                f"   the driver authorises {payment.get('params', {}).get('amount')} "
                f"{payment.get('params', {}).get('currency')} on the provider's page (HTTP {status})"
            )
        return self.step(client, f"{prefix}{first + 2}. confirm", "confirm", confirm)

    # --- A: a walk-up charge, search to settlement ---------------------------------------------------------

    def journey(self, client: BapClient, options: dict[str, Any], exclude: set[str]) -> str:
        lat, _, lon = options["gps"].partition(",")
        found = self.step(client, "1. search", "search", search_message(float(lat), float(lon), radius_km=10))
        provider, item = self.pick(found.body, exclude=exclude, prefer=self.reservable)
        self.out(f"   chose {item['descriptor']['name']} from {provider['id']}, {item.get('price', {})}")
        quoted = self.step(client, "2. select", "select", select_message(provider["id"], item["id"], options["kwh"]))
        quote = quoted.body["message"]["order"]["quote"]
        self.out(
            f"   quote {quote['price']['value']} {quote['price']['currency']}: "
            + ", ".join(f"{b['title']} {b['price']['value']}" for b in quote["breakup"])
        )
        initialised = self.step(client, "3. init", "init", init_message(provider["id"], item["id"], **DRIVER))
        payment = payment_of(initialised.body)
        self.out(
            f"   payment: {payment.get('collected_by')} collects {payment.get('params', {}).get('amount')} "
            f"{payment.get('params', {}).get('currency')} {payment.get('type')} by {payment.get('method')}"
        )
        if payment.get("url"):
            status = pay_on_hosted_page(payment["url"])
            self.out(f"   the driver authorises it on the provider's page {payment['url']} (HTTP {status})")
        confirmed = self.step(client, "4. confirm", "confirm", confirm_message(provider["id"], item["id"]))
        order_id = confirmed.body["message"]["order"]["id"]
        self.out(f"   order {order_id}, state {self.state(confirmed.body)}")
        reserve = self.commands_of(order_id).filter(type="RESERVE_NOW").first()
        if reserve is not None:
            self.out(f"   RESERVE_NOW at the CPO: {reserve.status} — a start now waits for its result on our side")
        else:
            self.out("   the charger takes no reservations: the hold is ours alone")
        started = self.start_when_paid(client, order_id)
        self.out(f"   state {self.state(started.body)}")
        self.wait_for(client, "on_status", lambda b: self.state(b) == "ACTIVE", "6. charging (ACTIVE)", 60)
        self.out("   commands, in order: " + self.command_story(order_id))
        deadline = time.monotonic() + options["charge_seconds"]
        while time.monotonic() < deadline:
            time.sleep(min(4.0, max(0.0, deadline - time.monotonic())))
            live = self.step(client, "7. live status", "status", {"order_id": order_id})
            self.out(f"   {self.details(live.body)}")
        stopped = self.step(client, "8. stop charging", "update", update_message(order_id, "stop-charging"))
        self.out(f"   state {self.state(stopped.body)}")
        final = self.wait_for(
            client,
            "on_update",
            is_final_bill,
            "9. CDR billed (final bill)",
            90,
        )
        bill = final.body["message"]["order"]["quote"]
        self.out(
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
        self.out(
            f"   payment {paid.get('status')}: captured {paid.get('captured')}, authorised {paid.get('authorised')}"
        )
        self.settlement(order_id)
        self.books(order_id)
        return order_id

    def books(self, order_id: str) -> None:
        """The ledger after the charge: every account the order touched, and the trial balance."""
        from billing.models import LedgerLine
        from billing.services.ledger import from_minor, trial_balance

        lines = LedgerLine.objects.filter(entry__reference__in=self.references(order_id)).select_related(
            "account", "entry"
        )
        for line in lines.order_by("entry_id", "pk"):
            amount = from_minor(line.amount_minor, line.account.currency)
            self.out(f"   ledger {line.entry.event:<14} {line.account.code:<32} {amount:>10}")
        for currency in sorted(set(lines.values_list("account__currency", flat=True))):
            total = sum(trial_balance(currency).values())
            self.out(f"12. trial balance {currency}: {total} (every debit has its credit)")

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
            self.out(f"   not yet ({error.get('message')}, {seconds * 1000:.0f} ms): retrying")
            time.sleep(1)

    # --- B: a window booked ahead ---------------------------------------------------------------------------

    def booked_window(
        self, client: BapClient, position: tuple[float, float], options: dict[str, Any], exclude: set[str]
    ) -> None:
        opens = (timezone.now() + timedelta(hours=2)).replace(second=0, microsecond=0)
        opens += timedelta(minutes=-opens.minute % 5)
        window = (opens, opens + timedelta(minutes=45))
        span = f"{opens:%H:%M}–{window[1]:%H:%M} UTC"
        found = self.step(client, f"B1. search {span}", "search", windowed_search(position, window))
        provider, item = self.pick(found.body, exclude=exclude)
        self.out(f"   chose {item['descriptor']['name']} from {provider['id']}")
        confirmed = self.book(client, "B", provider, item, options["kwh"], window)
        order = confirmed.body["message"]["order"]
        held = stop_window(order)
        self.out(
            f"   order {order['id']}, state {self.state(confirmed.body)}, held for "
            f"{held[0] if held else '?'} – {held[1] if held else '?'} (the fulfillment's stop time range)"
        )
        if held is None:
            raise CommandError("B4. confirm: on_confirm carries no time range")
        again = self.step(client, "B5. search that window", "search", windowed_search(position, window))
        offered = {i["id"] for _, i in self.items(again.body)}
        if item["id"] in offered:
            raise CommandError(f"B5. search that window: {item['id']} is offered although it is booked then")
        self.out(f"   {item['id']} is left out: booked then ({len(offered)} others offered for that window)")
        ack, callback, seconds = client.request("update", update_message(order["id"], "start-charging"), timeout=30)
        error = (callback.body.get("error") or {}) if callback else {}
        label = "B6. start charging now"
        if callback is None or not error:
            raise CommandError(f"{label}: a start two hours early was not refused")
        status = (ack.get("message") or {}).get("ack", {}).get("status", "?")
        self.out(f"{label:<28} {status:<4} on_update  {seconds * 1000:7.0f} ms  refused, as it should be:")
        self.out(f"   error {error.get('code')}: {error.get('message')}")
        cancelled = self.step(
            client, "B7. cancel", "cancel", {"order_id": order["id"], "cancellation_reason_id": "plans-changed"}
        )
        self.out(f"   order {cancelled.body['message']['order'].get('status')}: the window is free again")

    # --- C: a reservation the CPO refuses -------------------------------------------------------------------

    def rejected_reservation(
        self, client: BapClient, position: tuple[float, float], options: dict[str, Any], exclude: set[str]
    ) -> None:
        found = self.step(client, "C1. search", "search", search_message(*position, radius_km=10))
        candidates = [
            (p, i) for p, i in self.items(found.body) if i["id"] not in exclude and self.available(i) and "price" in i
        ]
        target = next(
            ((p, i, url) for p, i in candidates if self.reservable(p, i) and (url := self.sim_control(p))), None
        )
        if target is None:
            self.out("   skipped: no reservable charger of a simulator CPO nearby (make run starts two)")
            return
        provider, item, control = target
        self.out(f"   chose {item['descriptor']['name']} from {provider['id']}")
        self.sim_faults(control, {"set": {"reject_reservations": True}})
        self.out(f"   the CPO now refuses every reservation: POST {control} reject_reservations (cposim fault)")
        try:
            confirmed = self.book(client, "C", provider, item, options["kwh"])
            self.out(f"   order {confirmed.body['message']['order']['id']}, state {self.state(confirmed.body)}")
            cancelled = self.wait_for(
                client, "on_cancel", lambda b: reason_code(b) == "reservation-refused", "C5. refused → on_cancel", 60
            )
            alternatives = self.wait_for(
                client,
                "on_search",
                lambda b: (
                    ((b.get("message") or {}).get("catalog") or {}).get("descriptor", {}).get("code") == "alternatives"
                ),
                "C6. alternatives (on_search)",
                30,
            )
        finally:
            self.sim_faults(control, {"clear": ["reject_reservations"]})
        order = cancelled.body["message"]["order"]
        reason = order["cancellation"]["reason"]["descriptor"]
        self.out(f"   order {order['status']} by {order['cancellation']['cancelled_by']}: {reason['name']}")
        named = [
            t for g in order.get("tags") or [] for t in g.get("list", []) if t["descriptor"]["code"] == "alternative"
        ]
        offered = self.items(alternatives.body)
        self.out(f"   the order's tags name {len(named)} alternatives; the on_search offers them as items to select:")
        for p, i in offered:
            self.out(f"   offered: {p['id']} {i['id']} {i['descriptor']['name']}, {price_text(i)}")
        if not offered:
            raise CommandError("C6. alternatives: the catalogue is empty")
        self.payment_released(client, cancelled, "C7. payment hold released")
        self.out("   (the CPO takes reservations again: fault cleared)")
        provider, item = offered[0]
        quoted = self.step(
            client, "C8. select an alternative", "select", select_message(provider["id"], item["id"], options["kwh"])
        )
        quote = quoted.body["message"]["order"]["quote"]
        self.out(f"   {item['descriptor']['name']}: quote {quote['price']['value']} {quote['price']['currency']}")

    def sim_control(self, provider: dict[str, Any]) -> str | None:
        """The fault control endpoint of the provider's CPO when it is one of `make run`'s simulators (its
        control API sits beside its OCPI versions URL), else None."""
        from emsp.models import Partner

        country_code, _, party_id = str(provider["id"]).partition("*")
        for partner in Partner.objects.filter(country_code=country_code, party_id=party_id):
            base = (partner.versions_url or "").removesuffix("/ocpi/versions")
            if base == partner.versions_url or not base.startswith("http://127.0.0.1:"):
                continue
            try:
                if outbound.send("GET", f"{base}/_sim/state", timeout=3).status == 200:
                    return f"{base}/_sim/faults"
            except outbound.OutboundError:
                continue
        return None

    @staticmethod
    def sim_faults(control: str, change: dict[str, Any]) -> None:
        answer = outbound.send("POST", control, json=change, timeout=10)
        if answer.status != 200:
            raise CommandError(f"{control}: HTTP {answer.status} {answer.content[:200]!r}")

    # --- D: a route search ----------------------------------------------------------------------------------

    def route_search(self, client: BapClient) -> None:
        stops = [
            {"type": kind, "location": {"gps": gps, "descriptor": {"name": name}}}
            for kind, (name, gps) in zip(("start", "end"), ROUTE, strict=True)
        ]
        message = {
            "intent": {
                "fulfillment": {"type": "CHARGING", "stops": stops},
                "tags": [
                    {
                        "descriptor": {"code": "vehicle"},
                        "list": [{"descriptor": {"code": code}, "value": value} for code, value in VEHICLE.items()],
                    },
                    {
                        "descriptor": {"code": "route"},
                        "list": [
                            {"descriptor": {"code": "max-detour"}, "value": "10km"},
                            {"descriptor": {"code": "limit"}, "value": "20"},
                        ],
                    },
                ],
            }
        }
        self.out(
            "   vehicle: " + ", ".join(f"{k} {v}" for k, v in VEHICLE.items()) + "; up to 10 km detour (there and back)"
        )
        found = self.step(client, "D1. search along the route", "search", message)
        rows = []
        for provider, item in self.items(found.body):
            estimate = {
                t["descriptor"]["code"]: t["value"]
                for g in item.get("tags") or []
                if g.get("descriptor", {}).get("code") == "estimate"
                for t in g.get("list", [])
            }
            rows.append((float(estimate.get("detour-m", "inf")), provider, item, estimate))
        if not rows:
            raise CommandError("D1. search along the route: no charger along the route")
        rows.sort(key=lambda r: (r[0], float(r[3].get("distance-along-route-m", "inf"))))
        operators = {p["id"] for _, p, _, _ in rows}
        self.out(f"   {len(rows)} chargers along the route from {len(operators)} operators; the 5 with least detour:")
        for _, _, item, estimate in rows[:5]:
            detour = float(estimate.get("detour-m", "nan")) / 1000
            along = float(estimate.get("distance-along-route-m", "nan")) / 1000
            arrival = estimate.get("estimated-arrival", "?")
            self.out(
                f"   {item['descriptor']['name']}\n"
                f"      detour {detour:.1f} km, {along:.0f} km along; arrive {arrival}; "
                f"{estimate.get('estimated-energy-kwh', '?')} kWh at {estimate.get('charging-power-kw', '?')} kW "
                f"in {estimate.get('estimated-duration', '?')}, about {estimate.get('estimated-cost', '?')} "
                f"{estimate.get('currency', '')}".rstrip()
            )

    # --- E: a no-show ---------------------------------------------------------------------------------------

    def no_show_book(self, client: BapClient, position: tuple[float, float], options: dict[str, Any]) -> Pending:
        """Book a short window from now on another charger, before the other scenarios (they run while it
        passes); what it prints is shown with E at the end."""
        self.buffer = []
        try:
            now = timezone.now().replace(microsecond=0)
            window = (now, now + timedelta(seconds=max(20, options["no_show_seconds"])))
            span = f"{window[0]:%H:%M:%S}–{window[1]:%H:%M:%S} UTC"
            found = self.step(client, f"E1. search {span}", "search", windowed_search(position, window))
            listed = list(reversed(self.items(found.body)))  # A takes the nearest: E one further away
            provider, item = self.pick_from(listed, exclude=set(), prefer=self.reservable)
            self.out(f"   chose {item['descriptor']['name']} from {provider['id']}")
            confirmed = self.book(client, "E", provider, item, options["kwh"], window)
            order = confirmed.body["message"]["order"]
            held = stop_window(order)
            arrive_by = window[1] if held is None else parse_utc(held[1])
            self.out(
                f"   order {order['id']}, state {self.state(confirmed.body)}, held {held[0] if held else '?'} – "
                f"{held[1] if held else '?'}: the driver never comes"
            )
            return Pending(order["id"], arrive_by, item["id"], self.buffer)
        finally:
            self.buffer = None

    def no_show_wait(self, client: BapClient, pending: Pending) -> None:
        for line in pending.lines:
            self.out(line)
        left = (pending.arrive_by - timezone.now()).total_seconds()
        when = f"ends in {left:.0f} s" if left > 0 else f"ended {-left:.0f} s ago"
        self.out(f"   … meanwhile B to D ran; the window {when}, and the beat sweeps for no-shows every 15 s")
        cancelled = self.wait_for(
            client, "on_cancel", lambda b: reason_code(b) == "no-show", "E5. no-show → on_cancel", max(0, left) + 90
        )
        arrived = timezone.now() - timedelta(seconds=time.perf_counter() - cancelled.received_at)
        order = cancelled.body["message"]["order"]
        reason = order["cancellation"]["reason"]["descriptor"]
        self.out(
            f"   {(arrived - pending.arrive_by).total_seconds():.0f} s after the window ended: order "
            f"{order['status']} by {order['cancellation']['cancelled_by']} — {reason['name']}"
        )
        terms = order.get("cancellation_terms") or []
        if terms:
            fee = (terms[0].get("cancellation_fee") or {}).get("amount") or {}
            self.out(f"   cancellation terms: fee {fee.get('value', '0')} {fee.get('currency', '')}".rstrip())
        self.payment_released(client, cancelled, "E6. payment hold released")
        self.out("   commands for it: " + self.command_story(pending.order_id))

    def payment_released(self, client: BapClient, cancelled: Callback, label: str) -> None:
        """The payment hold of a cancelled order is released with the provider after on_cancel: on_update."""
        payment = payment_of(cancelled.body)
        if payment.get("state") in (None, "RELEASED"):
            self.out(f"   payment {payment.get('state') or payment.get('status', '?')}")
            return
        self.out(f"   payment {payment['state']}: its release with the provider follows")
        released = self.wait_for(
            client, "on_update", lambda b: payment_of(b).get("state") == "RELEASED", label, timeout=30
        )
        payment = payment_of(released.body)
        self.out(
            f"   payment {payment['state']}: authorised {payment.get('authorised')}, captured {payment.get('captured')}"
        )

    # --- reading catalogues and the platform's records ------------------------------------------------------

    @staticmethod
    def items(body: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        catalog = (body.get("message") or {}).get("catalog") or {}
        return [(p, i) for p in catalog.get("providers") or [] for i in p.get("items") or []]

    @staticmethod
    def available(item: dict[str, Any]) -> bool:
        specs = {t["descriptor"]["code"]: t["value"] for g in item.get("tags", []) for t in g.get("list", [])}
        return specs.get("ocpi-status") == "AVAILABLE"

    def pick(
        self, body: dict[str, Any], *, exclude: set[str], prefer: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.pick_from(self.items(body), exclude=exclude, prefer=prefer)

    def pick_from(
        self, listed: list[tuple[dict[str, Any], dict[str, Any]]], *, exclude: set[str], prefer: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The first available charger with a known price (one `prefer` accepts, if any)."""
        usable = [(p, i) for p, i in listed if i["id"] not in exclude and self.available(i) and "price" in i]
        for provider, item in usable:
            if prefer is None or prefer(provider, item):
                return provider, item
        if usable:
            return usable[0]
        raise CommandError("no available charger with a known price nearby: is the platform running (make run)?")

    @staticmethod
    def reservable(provider: dict[str, Any], item: dict[str, Any]) -> bool:
        from beckn.catalogue import find_item

        hit = find_item(provider["id"], item["id"])
        return hit is not None and hit.evse.is_reservable

    @staticmethod
    def commands_of(order_id: str) -> Any:
        from emsp.models import Command as OcpiCommand

        return OcpiCommand.objects.filter(booking__order_id=order_id).order_by("created_at", "pk")

    def command_story(self, order_id: str) -> str:
        """The OCPI commands sent for an order, in order, with what became of them."""
        return (
            ", ".join(
                f"{c.type} {c.status}{f' ({c.result_type})' if c.result_type and c.result_type != 'ACCEPTED' else ''}"
                for c in self.commands_of(order_id)
            )
            or "none"
        )

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
            self.out(
                f"11. settlement {row.partner} {row.period_start:%Y-%m} {row.currency}: {row.cdr_count} CDRs, "
                f"{row.energy_kwh.normalize()} kWh, CPO billed {row.cpo_billed_incl_vat.normalize()}, "
                f"charged to drivers {row.charged_to_drivers.normalize()}, margin {row.margin_excl_vat.normalize()}, "
                f"state {row.state}"
            )


def window_fulfillment(window: tuple[datetime, datetime]) -> dict[str, Any]:
    """A fulfillment asking for a time window: its first stop's time range (RFC 3339)."""
    return {
        "type": "CHARGING",
        "stops": [
            {
                "type": "start",
                "time": {
                    "range": {
                        "start": format_datetime(window[0], "seconds"),
                        "end": format_datetime(window[1], "seconds"),
                    }
                },
            }
        ],
    }


def windowed_search(position: tuple[float, float], window: tuple[datetime, datetime]) -> dict[str, Any]:
    """A search near `position` for chargers free in `window` (the stop's time range, and availability)."""
    message = search_message(*position, radius_km=10)
    message["intent"]["fulfillment"]["stops"][0]["time"] = window_fulfillment(window)["stops"][0]["time"]
    message["intent"]["tags"] = [
        {"descriptor": {"code": "filters"}, "list": [{"descriptor": {"code": "availability"}, "value": "available"}]}
    ]
    return message


def stop_window(order: dict[str, Any]) -> tuple[str, str] | None:
    """The time range an order's fulfillment holds, as the BPP wrote it."""
    for fulfillment in order.get("fulfillments") or []:
        for stop in fulfillment.get("stops") or []:
            time_range = (stop.get("time") or {}).get("range") or {}
            if time_range.get("start") and time_range.get("end"):
                return time_range["start"], time_range["end"]
    return None


def reason_code(body: dict[str, Any]) -> str:
    order = (body.get("message") or {}).get("order") or {}
    return (((order.get("cancellation") or {}).get("reason") or {}).get("descriptor") or {}).get("code", "")


def price_text(item: dict[str, Any]) -> str:
    price = item.get("price") or {}
    return f"{price.get('value', '?')} {price.get('currency', '')} per kWh".strip()
