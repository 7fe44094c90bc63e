"""A driver's charge from search to settlement, and its failure modes, with every part a real process:
gunicorn, Celery worker and beat on Redis, PostgreSQL, two simulator CPOs and a signing BAP client."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import requests

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
from beckn.keys import our_public_key_b64
from beckn.models import BecknCallback, BecknMessage, BecknSubscriber
from billing.models import Cdr, LedgerAccount, Payment
from billing.money import round_money
from emsp.models import Booking
from tests.beckn.conformance import assert_valid
from tests.e2e.platform import Platform, until

BENGALURU = (12.9716, 77.5946)


def bap_for(platform: Platform, base: str | None = None) -> BapClient:
    client = BapClient(
        bpp_url=f"{base or platform.base}/beckn", subscriber_id="bap.e2e.local", bpp_public_key_b64=our_public_key_b64()
    )
    BecknSubscriber.objects.update_or_create(
        subscriber_id=client.subscriber_id,
        unique_key_id=client.unique_key_id,
        defaults={
            "type": "BAP",
            "signing_public_key": client.public_key_b64,
            "trusted": True,
            "subscriber_url": client.bap_uri,
        },
    )
    return client


def ask(client: BapClient, action: str, message: dict[str, Any], timeout: float = 30) -> Callback:
    ack, callback, _ = client.request(action, message, timeout=timeout)
    assert ack == {"message": {"ack": {"status": "ACK"}}}, ack
    assert callback is not None, f"no on_{action}"
    assert callback.signature_ok is True
    assert_valid(f"on_{action}", callback.body)
    return callback


def state_of(callback: Callback) -> str:
    return callback.body["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"]


def items(callback: Callback) -> list[tuple[str, dict[str, Any]]]:
    return [(p["id"], i) for p in callback.body["message"]["catalog"]["providers"] for i in p["items"]]


def specs(item: dict[str, Any]) -> dict[str, str]:
    return {t["descriptor"]["code"]: t["value"] for g in item.get("tags", []) for t in g.get("list", [])}


def book(client: BapClient, provider: str | None = None, walk_up: bool = False) -> tuple[str, dict[str, Any], str]:
    """search → select → init → pay → confirm; returns (provider id, item, order id). A walk-up driver is
    already at the charger: the start follows on_confirm at once, without waiting for the CPO's reservation."""
    found = ask(client, "search", search_message(*BENGALURU, radius_km=20))
    provider_id, item = next(
        (p, i)
        for p, i in items(found)
        if (provider is None or p == provider) and specs(i)["ocpi-status"] == "AVAILABLE" and "price" in i
    )
    quote = ask(client, "select", select_message(provider_id, item["id"], 3)).body["message"]["order"]["quote"]
    assert float(quote["price"]["value"]) > 0
    initialised = ask(
        client,
        "init",
        init_message(provider_id, item["id"], name="Asha", email="asha.e2e@example.com", phone="+919845000001"),
    )
    payment = payment_of(initialised.body)
    assert (payment["collected_by"], payment["type"], payment["status"]) == ("BPP", "PRE-ORDER", "NOT-PAID")
    # The driver authorises the amount on the provider's hosted page (paysim's, as Razorpay's for INR).
    assert pay_on_hosted_page(payment["url"]) == 303
    until(
        lambda: Payment.objects.filter(status=Payment.Status.AUTHORISED, url=payment["url"]).exists(),
        20,
        "the provider's signed webhook: authorised",
    )
    confirmed = ask(client, "confirm", confirm_message(provider_id, item["id"]))
    assert state_of(confirmed) == "RESERVATION"
    order_id = confirmed.body["message"]["order"]["id"]
    if not walk_up:
        # The driver arrives after the charger has confirmed the reservation (RESERVE_NOW's result).
        from emsp.services.bookings import reservation_pending

        until(lambda: not reservation_pending(Booking.objects.get(order_id=order_id)), 20, "the reservation result")
    return provider_id, item, order_id


def wait_unsolicited(
    client: BapClient, action: str, predicate: Callable[[dict[str, Any]], bool], timeout: float
) -> Callback:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        callback = client.wait(action, timeout=max(0.1, deadline - time.monotonic()))
        if callback is not None:
            assert callback.signature_ok is True
            assert_valid(action, callback.body)
            if predicate(callback.body):
                return callback
    raise AssertionError(f"no matching {action} within {timeout} s")


def charge(client: BapClient, order_id: str) -> None:
    """start → ACTIVE → status → stop → the CDR's final bill."""
    started = ask(client, "update", update_message(order_id, "start-charging"))
    assert state_of(started) == "PENDING"
    wait_unsolicited(
        client,
        "on_status",
        lambda b: b["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "ACTIVE",
        40,
    )
    time.sleep(2.5)  # let the meter run
    live = ask(client, "status", {"order_id": order_id})
    details = {
        t["descriptor"]["code"]: t["value"]
        for g in live.body["message"]["order"]["fulfillments"][0]["tags"]
        for t in g["list"]
    }
    assert details["session-status"] == "ACTIVE"
    assert float(details["energy-delivered"].removesuffix("kWh")) > 0
    ask(client, "update", update_message(order_id, "stop-charging"))
    final = wait_unsolicited(client, "on_update", is_final_bill, 60)
    bill = final.body["message"]["order"]["quote"]["price"]["value"]
    paid = final.body if payment_of(final.body)["status"] == "PAID" else None
    paid = paid or wait_unsolicited(client, "on_update", lambda b: payment_of(b)["status"] == "PAID", 60).body
    payment = payment_of(paid)
    assert (payment["params"]["amount"], payment["captured"]) == (bill, bill)  # the bill, captured at the provider


def test_a_charge_from_search_to_settlement(platform_factory: Callable[..., Platform]) -> None:
    journey(platform_factory().start_cpos())


@pytest.mark.parametrize("version", ["2.1.1", "2.3.0"])
def test_a_charge_from_search_to_settlement_with_cpos_speaking(
    platform_factory: Callable[..., Platform], version: str
) -> None:
    """The same journey with both CPOs speaking another OCPI version (cposim --ocpi-version): we register with
    one and the other registers with us, each in that version."""
    from emsp.models import Partner

    platform = platform_factory().start_cpos("--ocpi-version", version, extra_b=("--ocpi-version", version))
    assert set(Partner.objects.connected().values_list("version", flat=True)) == {version}
    journey(platform)
    assert_spoken_in(platform, version)


def assert_spoken_in(platform: Platform, version: str) -> None:
    """Every call the CPOs made went to our endpoints of `version`, and what they sent needed no fixing beyond
    what that version cannot say (2.1.1 connectors have no max_electric_power: we derive it)."""
    from ocpi.models import DataQualityIssue

    base = platform.base
    ours = (f"{base}/ocpi/versions", f"{base}/ocpi/{version}", f"{base}/ocpi/emsp/{version}/")
    for name, sim in platform.sims.items():
        calls = [line.split()[4] for line in sim.log_path.read_text().splitlines() if " cposim OUT " in line]
        assert calls and all(url.startswith(ours) for url in calls), (name, calls)
    codes = set(DataQualityIssue.objects.values_list("code", flat=True))
    assert codes <= ({"derived_power"} if version == "2.1.1" else set()), codes


def journey(platform: Platform) -> None:
    """Book a charger, charge, stop: the booking settles from the CPO's CDR, which our engine matches."""
    client = bap_for(platform)
    try:
        _, _, order_id = book(client, walk_up=True)  # start sent right after on_confirm (issue 13, point 1)
        charge(client, order_id)
    finally:
        client.close()
    booking = Booking.objects.get(order_id=order_id)
    assert booking.state == Booking.State.SETTLED
    cdr = Cdr.objects.get(charging_session__booking=booking)
    audit = cdr.audit
    if audit.status != "MATCHED":
        import json

        print(json.dumps({"cdr": cdr.data, "ours": audit.our_breakdown}, indent=1, default=str))
    assert audit.status == "MATCHED", audit.flags
    assert cdr.receipt.total_incl_vat > 0
    from billing.services.settlement import settlement_compute

    rows = settlement_compute(
        partner=booking.evse.location.partner, period_start=cdr.end_date_time.date().replace(day=1)
    )
    assert sum(r.cdr_count for r in rows) >= 1
    assert BecknCallback.objects.exclude(status="DELIVERED").count() == 0
    assert_books_match_the_bill(booking, cdr)
    assert_provider_payout_reconciles(platform)


def assert_provider_payout_reconciles(platform: Platform) -> None:
    """The sandbox provider's payout file (its own format: Razorpay's settlement recon for INR) matches our
    payments, ledger and bills with no mismatch: paysim's file and our parser were written apart."""
    import io

    from billing.services.reconciliation import reconcile_payout_file

    provider = Payment.objects.get(purpose="charge").provider
    payout = requests.get(f"{platform.paysim_url}/paysim/payouts/{provider}.csv", timeout=10)
    assert payout.status_code == 200 and payout.text.count("\n") >= 2, payout.text
    run = reconcile_payout_file(provider=provider, path_or_file=io.BytesIO(payout.content))
    assert (run.rows >= 1, run.mismatch_count) == (True, 0), run.mismatches


def assert_books_match_the_bill(booking: Booking, cdr: Cdr) -> None:
    """The ledger after a paid charge: balanced, and each party's balance what the bill says."""
    from billing.services import ledger

    receipt = cdr.receipt
    payment = Payment.objects.get(booking=booking, purpose="charge")
    currency = payment.currency

    def balance(code: str) -> Decimal:
        account = LedgerAccount.objects.filter(code=code, currency=currency).first()
        return Decimal(0) if account is None else ledger.balance(account)

    assert sum(ledger.trial_balance(currency).values()) == 0
    total = round_money(receipt.total_incl_vat, currency)
    assert payment.status == Payment.Status.CAPTURED
    assert ledger.from_minor(payment.captured_minor, currency) == total
    assert balance(f"driver:{receipt.driver_id}:receivable") == 0  # billed and paid
    assert balance(f"clearing:{payment.provider}") == total  # at the provider, to be paid out to us
    assert balance(f"holds:{payment.provider}") == 0  # the authorisation's rest released
    cpo = balance(f"cpo:{cdr.country_code}*{cdr.party_id}:payable")
    assert cpo == -round_money(receipt.cpo_cost_excl_vat + receipt.cpo_vat, currency)
    ours = -(balance("revenue:fees") + balance("revenue:rounding"))
    vat = -sum(b for code, b in ledger.trial_balance(currency).items() if code.startswith("tax:"))
    assert total == -cpo + ours + vat


def test_an_evse_status_push_is_in_the_next_search_within_a_second(platform_factory: Callable[..., Platform]) -> None:
    platform = platform_factory().start_cpos()
    client = bap_for(platform)
    try:
        found = ask(client, "search", search_message(*BENGALURU, radius_km=20))
        item = next(i for p, i in items(found) if p == "IN*CPA" and specs(i)["ocpi-status"] == "AVAILABLE")
        location_id, evse_uid, _ = item["id"].split("/")
        pushed_at = time.perf_counter()
        answer = platform.sims["A"].ctl(
            "evse_status", {"location_id": location_id, "evse_uid": evse_uid, "status": "BLOCKED"}
        )
        assert answer["push_status"] == 200, (answer, item["id"])

        def visible() -> float | None:
            seen = ask(client, "search", search_message(*BENGALURU, radius_km=20))
            status = next((specs(i)["ocpi-status"] for p, i in items(seen) if i["id"] == item["id"]), "GONE")
            return (time.perf_counter() - pushed_at) if status != "AVAILABLE" else None

        elapsed = until(visible, 5, "the new status in on_search")
        print(f"EVSE status push → visible in on_search: {elapsed * 1000:.0f} ms")
        assert elapsed < 1.0
    finally:
        client.close()


def test_a_cpo_that_is_down_still_appears_in_search_with_the_age_of_its_data(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory().start_cpos()
    platform.sims["B"].stop()
    client = bap_for(platform)
    try:
        found = ask(client, "search", search_message(*BENGALURU, radius_km=20))
        b_items = [i for p, i in items(found) if p == "IN*CPB"]
        assert b_items, "CPO B's chargers come from our catalogue, not from CPO B"
        assert all("status-updated-at" in specs(i) and specs(i)["status-confidence"] for i in b_items)
        # select asks the CPO for a fresh status (short timeout) and falls back to the catalogue.
        quoted = ask(client, "select", select_message("IN*CPB", b_items[0]["id"], 3))
        assert "error" not in quoted.body, quoted.body.get("error")
    finally:
        client.close()


def test_a_booked_charger_going_out_of_order_cancels_with_alternatives(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory().start_cpos()
    client = bap_for(platform)
    try:
        _, item, order_id = book(client, provider="IN*CPA")
        location_id, evse_uid, _ = item["id"].split("/")
        platform.sims["A"].ctl(
            "evse_status", {"location_id": location_id, "evse_uid": evse_uid, "status": "OUTOFORDER"}
        )
        cancelled = wait_unsolicited(client, "on_cancel", lambda b: b["message"]["order"]["id"] == order_id, 20)
        order = cancelled.body["message"]["order"]
        assert order["status"] == "CANCELLED"
        assert order["cancellation"]["cancelled_by"] == "PROVIDER"
        assert 1 <= len(order["tags"][0]["list"]) <= 3
    finally:
        client.close()


def test_a_start_without_command_result_times_out_and_the_late_session_is_still_billed(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory().start_cpos(
        "--fault", "no_command_result", "--command-timeout", "2", "--plug-in-delay", "5"
    )
    client = bap_for(platform)
    try:
        # Walk-up: the start waits for the RESERVE_NOW, which times out too and then goes straight to the EVSE
        # (a reservation left unanswered on a booking whose driver is not there yet would cancel the booking).
        _, _, order_id = book(client, provider="IN*CPA", walk_up=True)
        ask(client, "update", update_message(order_id, "start-charging"))
        timed_out = wait_unsolicited(
            client, "on_status", lambda b: "TIMEOUT" in (b.get("error") or {}).get("message", ""), 40
        )
        assert timed_out.body["error"]["code"] == "40006"
        wait_unsolicited(
            client,
            "on_status",
            lambda b: b["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "ACTIVE",
            40,
        )
        ask(client, "update", update_message(order_id, "stop-charging"))
        wait_unsolicited(client, "on_update", is_final_bill, 60)
    finally:
        client.close()
    assert Booking.objects.get(order_id=order_id).state == Booking.State.SETTLED


def test_callbacks_reach_a_receiver_that_was_down_once_it_is_back(platform_factory: Callable[..., Platform]) -> None:
    platform = platform_factory().start_cpos()
    client = bap_for(platform)
    port = client.port
    client.close()  # the BAP's callback receiver is down (its requests still go out)
    status, ack, message_id, _ = client.send("search", search_message(*BENGALURU, radius_km=20))
    assert status == 200, ack
    until(
        lambda: BecknCallback.objects.filter(message_id=message_id, attempts__gte=1).exists(), 20, "a failed delivery"
    )
    time.sleep(2)
    back = BapClient(
        bpp_url=f"{platform.base}/beckn",
        subscriber_id=client.subscriber_id,
        private_key_b64=client.private_key_b64,
        bpp_public_key_b64=our_public_key_b64(),
        port=port,
    )
    try:
        delivered = back.wait("on_search", message_id=message_id, timeout=45)
        assert delivered is not None and delivered.signature_ok
        assert back.wait("on_search", message_id=message_id, timeout=12) is None  # and not twice
    finally:
        back.close()
    callback = BecknCallback.objects.get(message_id=message_id)
    assert callback.status == "DELIVERED"
    assert callback.attempts >= 2


def test_a_task_interrupted_by_a_killed_worker_completes_once_after_restart(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory().start_cpos(extra_b=("--fault", "slow=3"))
    client = bap_for(platform)
    try:
        found = ask(client, "search", search_message(*BENGALURU, radius_km=20))
        provider, item = next((p, i) for p, i in items(found) if p == "IN*CPB")
        # select asks CPO B for a fresh status; CPO B answers in 3 s (the request gives up after 2 s).
        status, _, message_id, _ = client.send("select", select_message(provider, item["id"], 3))
        assert status == 200
        time.sleep(1.0)  # the worker is now inside the task
        for worker in platform.workers_running():
            platform.kill(worker)
        assert not BecknMessage.objects.filter(message_id=message_id).exists()  # nothing half-stored
        platform.start_worker(1)
        answer = client.wait("on_select", message_id=message_id, timeout=60)
        assert answer is not None and answer.signature_ok
        assert client.wait("on_select", message_id=message_id, timeout=5) is None
    finally:
        client.close()
    assert BecknMessage.objects.filter(message_id=message_id).count() == 1
    assert BecknCallback.objects.filter(message_id=message_id).count() == 1


def test_two_web_processes_and_two_workers_carry_the_journey(platform_factory: Callable[..., Platform]) -> None:
    platform = platform_factory(web_processes=2, workers=2).start_cpos()
    first, second = platform.urls()
    client = bap_for(platform)
    try:
        _, _, order_id = book(client)
        client.bpp_url = f"{second}/beckn"  # the rest of the journey through the other web process
        charge(client, order_id)
    finally:
        client.close()
    assert Booking.objects.get(order_id=order_id).state == Booking.State.SETTLED
    assert requests.get(f"{first}/ocpi/versions", timeout=5).status_code == 401
