"""A booking's order after it was confirmed, as a review found it: a charger the CPO sends again without a
valid connector, a payment authorised after a no-show, a cancel after the CPO refused the start, the running
cost the driver is shown, an update of an order we don't know, a stop sent as the CPO reports the session ACTIVE,
an order id ending in a control character, and what an order that ended without a charge owes."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.db import connection
from django.utils import timezone

from beckn import tasks
from billing.models import BapAgreement, Payment
from billing.payments.gateway import AUTHORISED, Checkout, WebhookEvent
from billing.services import payments
from emsp.models import Booking, ChargingSession, Command, Connector, Driver, Evse, Partner, Reservation
from emsp.services import booking_checks, bookings
from emsp.services.commands import command_result_received
from emsp.services.sessions import session_put
from tests.beckn import test_order_races as races
from tests.beckn import test_update_crash_safety as crash_safety
from tests.beckn.bap import BAP_ID
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.beckn.test_payments_journey import BILL, CPO_INCL, start
from tests.billing import provider_standin as standin
from tests.fakes import FakePeer
from tests.races import Holds, at_once

pytestmark = pytest.mark.django_db


def ordered(bap: Any) -> str:
    select(bap, item_of(bap))
    init(bap)
    return confirm(bap)["message"]["order"]["id"]


# --- 1. a booked EVSE sent again without a valid connector ------------------------------------------------------


def evse_object(booking: Booking, *, status: str, connectors: list[dict[str, Any]]) -> dict[str, Any]:
    """The booked EVSE as the CPO PUTs it again (newer than the stored one, 2026-01-01)."""
    evse = booking.evse
    return {
        "uid": evse.uid,
        "evse_id": evse.evse_id,
        "status": status,
        "capabilities": ["RESERVABLE", "REMOTE_START_STOP_CAPABLE"],
        "connectors": connectors,
        "last_updated": "2026-07-01T00:00:00Z",
    }


def put_evse(bap: Any, ocpi: Any, booking: Booking, body: dict[str, Any]) -> Any:
    with bap.capture(execute=True):
        return ocpi.put(f"/ocpi/emsp/2.2.1/locations/IN/CPA/NEAR/{booking.evse.uid}", body)


def test_an_order_whose_connector_the_cpo_dropped_still_renders_and_can_be_cancelled(
    bap: Any, ocpi: Any, peer: FakePeer
) -> None:
    order_id = ordered(bap)
    booking = Booking.objects.get(order_id=order_id)
    unreadable = {"id": booking.connector_id, "standard": "NOT_A_STANDARD", "format": "CABLE", "power_type": "DC",
                  "max_voltage": 500, "max_amperage": 120, "last_updated": "2026-07-01T00:00:00Z"}  # fmt: skip
    response = put_evse(bap, ocpi, booking, evse_object(booking, status="AVAILABLE", connectors=[unreadable]))
    assert response.status_code == 200, response.content
    assert not Connector.objects.filter(evse=booking.evse).exists()  # kept without connectors (not bookable)

    bap("status", {"order_id": order_id})
    shown = last(bap, "on_status")
    assert "error" not in shown, shown["error"]
    (item,) = shown["message"]["order"]["items"]
    # The item the driver booked, from the booking's connector id and the EVSE: nothing of a connector we lost.
    assert item["id"] == f"NEAR/{booking.evse.uid}/{booking.connector_id}"
    assert "price" not in item
    specs = {t["descriptor"]["code"]: t["value"] for t in item["tags"][0]["list"]}
    assert specs["connector-id"] == booking.connector_id and "connector-type" not in specs
    assert [group["descriptor"]["code"] for group in item["tags"]] == ["connector-specifications"]  # no tariff

    bap("cancel", {"order_id": order_id, "cancellation_reason_id": "changed-plans"})
    cancelled = last(bap, "on_cancel")
    assert cancelled["message"]["order"]["status"] == "CANCELLED"
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CANCELLED


def test_a_booked_evse_put_removed_without_connectors_is_stored_and_cancels_the_booking(
    bap: Any, ocpi: Any, network: Partner
) -> None:
    order_id = ordered(bap)
    booking = Booking.objects.get(order_id=order_id)
    response = put_evse(bap, ocpi, booking, evse_object(booking, status="REMOVED", connectors=[]))
    assert response.status_code == 200, response.content
    assert response.json()["status_code"] == 1000
    assert Evse.objects.get(pk=booking.evse_id).status == "REMOVED"  # the CPO's update stored
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    body = last(bap, "on_cancel")
    order = body["message"]["order"]
    assert order["cancellation"]["cancelled_by"] == "PROVIDER"
    assert order["items"][0]["id"] == f"NEAR/{booking.evse.uid}/{booking.connector_id}"


# --- 2. a payment authorised after the booking ended -------------------------------------------------------------


class CheckoutStandin(standin.Fake):
    """The stand-in provider with a hosted page: init gets a checkout the driver has not paid yet."""

    def checkout(self, **kw: Any) -> Checkout:
        self.calls.append(("checkout", kw))
        return Checkout(checkout_id="cs_1", url="https://pay.example/cs_1")


@pytest.fixture
def gateway(settings: Any) -> CheckoutStandin:
    """INR collected through the stand-in (tests/billing/provider_standin.py), which answers checkouts too."""
    standin.FAKE = CheckoutStandin()
    settings.PAYMENT_PROVIDERS = {**settings.PAYMENT_PROVIDERS, "fake": {"adapter": f"{standin.__name__}.fake_gateway"}}
    settings.PAYMENT_GATEWAYS = {"INR": "fake", "*": "fake"}
    return standin.FAKE


def authorised_late(payment: Payment) -> str:
    return payments.webhook_receive(
        WebhookEvent(provider="fake", event_id="evt-1", type=AUTHORISED, provider_type="payment.authorized",
                     reference=payments.reference_of(payment), payment_id="pay_1",
                     amount_minor=payment.requested_minor, currency="INR")
    )  # fmt: skip


@pytest.mark.we_collect
def test_a_payment_authorised_after_a_no_show_is_released_and_the_ended_order_shows_no_page(
    bap: Any, gateway: CheckoutStandin
) -> None:
    order_id = ordered(bap)
    payment = Payment.objects.get(booking__order_id=order_id)
    assert last(bap, "on_confirm")["message"]["order"]["payments"][0]["url"] == "https://pay.example/cs_1"
    with bap.capture(execute=True):
        assert bookings.bookings_expire_no_shows(timezone.now() + timedelta(hours=2)) == 1
    assert Booking.objects.get(order_id=order_id).state == Booking.State.EXPIRED
    # The order ended: no page to authorise a charge that will not come.
    assert "url" not in last(bap, "on_cancel")["message"]["order"]["payments"][0]

    with bap.capture(execute=True):
        assert authorised_late(payment) == "authorised"  # the driver paid on the page afterwards
    payment.refresh_from_db()
    assert payment.status == Payment.Status.RELEASED
    assert [name for name, _ in gateway.calls] == ["checkout", "release"]
    bap("status", {"order_id": order_id})
    shown = last(bap, "on_status")["message"]["order"]["payments"][0]
    assert "url" not in shown and shown["status"] == "NOT-PAID"


# --- 3. a cancel after the CPO refused the start ------------------------------------------------------------------


def refused_start(bap: Any, order_id: str) -> Booking:
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="START_SESSION"), {"result": "REJECTED"})
    assert last(bap, "on_status")["error"]["code"] == "40006"
    booking.refresh_from_db()
    return booking


@pytest.mark.we_collect
def test_a_cancel_after_the_cpo_refused_the_start_cancels_at_once_as_the_driver_asked(bap: Any, peer: FakePeer) -> None:
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")
    order_id = ordered(bap)
    booking = refused_start(bap, order_id)
    assert booking.state == Booking.State.STARTING

    bap("cancel", {"order_id": order_id, "cancellation_reason_id": "changed-plans"})
    order = last(bap, "on_cancel")["message"]["order"]
    assert order["status"] == "CANCELLED"
    assert order["cancellation"]["cancelled_by"] == "CONSUMER"
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert booking.reservation.status == Reservation.Status.CANCELLED
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1  # the CPO held the reservation: released there too
    assert not peer.requests_to("STOP_SESSION")
    assert Payment.objects.get(booking=booking).status == Payment.Status.RELEASED

    # The booking checks later find nothing to end: the driver's cancel stands, the app hears nothing more.
    with bap.capture(execute=True):
        booking_checks.bookings_reconcile(now=timezone.now() + timedelta(minutes=30))
    booking.refresh_from_db()
    assert (booking.state, booking.cancellation_reason) == (Booking.State.CANCELLED, "changed-plans")
    assert len(bap.bap.callbacks("on_cancel")) == 1


def test_a_start_may_be_asked_again_after_the_cpo_refused_one(bap: Any, peer: FakePeer) -> None:
    order_id = ordered(bap)
    refused_start(bap, order_id)
    again = {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": again})
    answer = last(bap, "on_update")
    assert "error" not in answer, answer["error"]
    assert answer["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "PENDING"
    assert len(peer.requests_to("START_SESSION")) == 2
    assert Booking.objects.get(order_id=order_id).state == Booking.State.STARTING
    bap("update", {"update_target": "order.fulfillments[0].state", "order": again})  # this one stands: no third
    assert last(bap, "on_update")["error"]["code"] == "50002"
    assert len(peer.requests_to("START_SESSION")) == 2


START_AGAIN = {"update_target": "order.fulfillments[0].state"}


def start_again(bap: Any, order_id: str) -> dict[str, Any]:
    again = {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {**START_AGAIN, "order": again})
    return last(bap, "on_update")


def test_a_start_the_charge_point_did_not_answer_in_time_is_no_refusal(bap: Any, peer: FakePeer) -> None:
    """The CPO's CommandResult TIMEOUT is recorded FAILED, but the charger may still start: no second start, and
    a cancel is a stop (it had ended the booking at once, its hold released, and a late session ran unstopped)."""
    order_id = ordered(bap)
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="START_SESSION"), {"result": "TIMEOUT"})
    assert start_again(bap, order_id)["error"]["code"] == "50002"
    assert len(peer.requests_to("START_SESSION")) == 1
    bap("cancel", {"order_id": order_id, "cancellation_reason_id": "changed-my-mind"})
    booking.refresh_from_db()
    assert booking.state == Booking.State.STOPPING


def test_no_start_again_once_the_bookings_window_has_ended(bap: Any, peer: FakePeer) -> None:
    """After the hold's end the EVSE may be another driver's booking: a refused start is not asked again then."""
    order_id = ordered(bap)
    booking = refused_start(bap, order_id)
    now = timezone.now()
    Reservation.objects.filter(pk=booking.reservation_id).update(
        start_at=now - timedelta(minutes=30), expiry_at=now - timedelta(seconds=1)
    )
    assert start_again(bap, order_id)["error"]["code"] == "50002"
    assert len(peer.requests_to("START_SESSION")) == 1


# --- 4. the running cost is what the driver pays -----------------------------------------------------------------


def test_the_cost_so_far_includes_our_fee_and_its_vat_as_the_bill_does(bap: Any, network: Partner) -> None:
    order_id = ordered(bap)
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    command = Command.objects.get(booking=booking, type="START_SESSION")
    stamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    session = {
        "country_code": "IN", "party_id": "CPA", "id": "S-1", "start_date_time": stamp, "kwh": 20,
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                      "contract_id": booking.token.contract_id},
        "auth_method": "COMMAND", "authorization_reference": command.authorization_reference,
        "location_id": "NEAR", "evse_uid": booking.evse.uid, "connector_id": "1", "currency": "INR",
        "total_cost": {"excl_vat": 380, "incl_vat": float(CPO_INCL)}, "status": "ACTIVE", "last_updated": stamp,
    }  # fmt: skip
    with bap.capture(execute=True):
        session_put(network, session)
    assert ChargingSession.objects.get(session_id="S-1").booking_id == booking.pk
    bap("status", {"order_id": order_id})
    details = last(bap, "on_status")["message"]["order"]["fulfillments"][0]["tags"][0]
    assert details["descriptor"]["code"] == "charging-details"
    # 448.40 of the CPO's, our fee 12.60 and its VAT 2.27: what the CDR of the same total is billed (BILL).
    assert {t["descriptor"]["code"]: t["value"] for t in details["list"]}["cost-so-far"] == f"{BILL} INR"


# --- 5. an update of an order we don't know -----------------------------------------------------------------------


def test_an_update_of_an_unknown_order_names_where_the_update_carries_its_id(bap: Any) -> None:
    order = {"id": "ORD-NOPE", "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    error = last(bap, "on_update")["error"]
    assert (error["code"], error["paths"]) == ("30010", "message.order.id")
    bap("status", {"order_id": "ORD-NOPE"})
    assert last(bap, "on_status")["error"]["paths"] == "message.order_id"


@pytest.mark.parametrize("action", ["status", "track", "cancel"])
def test_an_unknown_order_sent_as_the_order_object_is_named_where_it_came(bap: Any, action: str) -> None:
    """Status, track and cancel read the order's id from `message.order.id` too (a BAP sending the order object):
    the 30010 then names that path, not `message.order_id`, which the request did not have."""
    bap(action, {"order": {"id": "ORD-NOPE"}})
    error = last(bap, f"on_{action}")["error"]
    assert (error["code"], error["paths"]) == ("30010", "message.order.id")


def test_a_start_the_cpo_answered_timeout_is_told_as_a_timeout_not_a_refusal(bap: Any) -> None:
    """The booking waits for a late session and a second start is refused (50002): "could not start" had told the
    app to try again."""
    order_id = ordered(bap)
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="START_SESSION"), {"result": "TIMEOUT"})
    told = last(bap, "on_status")["error"]
    assert told["code"] == "40006" and "could not start" not in told["message"]
    assert "if charging begins we will tell you" in told["message"]


def test_a_cancel_not_possible_names_the_path_the_request_used(bap: Any) -> None:
    order_id = ordered(bap)
    Booking.objects.filter(order_id=order_id).update(state=Booking.State.COMPLETED)
    bap("cancel", {"order": {"id": order_id}})
    assert last(bap, "on_cancel")["error"]["paths"] == "message.order.id"


# --- 6. a stop sent just as the CPO reports the session ACTIVE ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_a_stop_as_the_cpo_reports_the_session_active_stops_the_charge(
    bap: Any, network: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop read the session before it locked the booking: the PUT's session, not committed yet, was not there,
    so the stop waited to move a STARTING booking, found it CHARGING and was refused (50002); the charge went on."""
    booking = crash_safety.ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", crash_safety.update_body(bap, booking, crash_safety.START)))
    start_command = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    holds, moved, stopped = Holds(), threading.Event(), threading.Event()
    on_session_changed = bookings.on_session_changed

    def held_after_the_move(session: ChargingSession) -> Booking | None:
        moved_on = on_session_changed(session)  # the booking CHARGING, its row locked until the PUT commits
        moved.set()
        holds.until_the_other_moves(stopped)
        return moved_on

    monkeypatch.setattr(bookings, "on_session_changed", held_after_the_move)
    message = orjson.loads(crash_safety.update_body(bap, booking, crash_safety.STOP))["message"]
    stop = races.body(bap, "update", message)

    def stop_then() -> None:
        assert moved.wait(20)
        races.handle("update", stop, done=stopped)()

    failures = at_once(
        stop_then, lambda: races.reported(network, booking, start_command, ChargingSession.Status.ACTIVE)
    )

    assert not failures and not races.failed_requests(), (failures, races.failed_requests())
    assert holds.given_up == 0
    booking.refresh_from_db()
    assert booking.state == Booking.State.STOPPING
    assert Command.objects.filter(booking=booking, type=Command.Type.STOP_SESSION).count() == 1
    answer = races.answers("on_update")[-1]
    assert "error" not in answer, answer["error"]


# --- 7. an order id ending in a control character ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["\x1f", "\x1c", "\x85", "\x0b"])
def test_a_cancel_of_an_order_id_ending_in_a_control_character_cancels_nothing(bap: Any, suffix: str) -> None:
    """str.strip() drops these (\\x1c-\\x1f, \\x0b, \\x85) before the control-character check: the id was read as
    the order it ends, which was cancelled, and on_cancel named another id than the one asked for."""
    order_id = ordered(bap)
    bap("cancel", {"order_id": order_id + suffix})
    error = last(bap, "on_cancel")["error"]
    assert (error["code"], error["paths"]) == ("30000", "message.order_id")
    assert Booking.objects.get(order_id=order_id).state == Booking.State.CONFIRMED


@pytest.mark.parametrize("action", ["status", "track"])
def test_status_and_track_of_an_order_id_ending_in_a_control_character_are_refused(bap: Any, action: str) -> None:
    order_id = ordered(bap)
    bap(action, {"order_id": order_id + "\x1f"})
    assert last(bap, f"on_{action}")["error"]["code"] == "30000"


def test_an_order_id_with_spaces_around_it_is_still_the_order(bap: Any) -> None:
    order_id = ordered(bap)
    bap("status", {"order_id": f" {order_id} "})
    shown = last(bap, "on_status")
    assert "error" not in shown, shown["error"]
    assert shown["message"]["order"]["id"] == order_id


# --- 8. an order that ended without a charge owes nothing ----------------------------------------------------------


def cancelled_free(order: dict[str, Any]) -> None:
    """The order as an app must read it once it ended without a charge: nothing to pay, and the lines say why."""
    quote = order["quote"]
    assert quote["price"] == {"currency": "INR", "value": "0.00"}
    assert [line["title"] for line in quote["breakup"]] == ["cancellation-fee"]
    assert sum(Decimal(line["price"]["value"]) for line in quote["breakup"]) == Decimal(quote["price"]["value"])
    assert [payment["params"]["amount"] for payment in order["payments"]] == ["0.00"]


def test_an_order_the_app_prepaid_then_cancelled_owes_nothing(bap: Any) -> None:
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True, finder_fee_percent=Decimal("2"))
    select(bap, item_of(bap))
    init(bap)
    order = confirm(bap)["message"]["order"]
    order_id, price = order["id"], order["quote"]["price"]["value"]
    params = {"amount": price, "currency": "INR", "transaction_id": "UPI-1"}
    paid = {"id": order_id, "payments": [{"status": "PAID", "params": params}]}
    bap("update", {"update_target": "order.payments", "order": paid})
    assert "error" not in last(bap, "on_update")
    bap("cancel", {"order_id": order_id})
    cancelled = last(bap, "on_cancel")["message"]["order"]  # valid core 1.1.0 (`last`)
    assert cancelled["status"] == "CANCELLED"
    cancelled_free(cancelled)
    bap("status", {"order_id": order_id})
    cancelled_free(last(bap, "on_status")["message"]["order"])


def test_an_order_the_app_collects_after_the_charge_cancelled_owes_nothing(bap: Any) -> None:
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True, finder_fee_percent=Decimal("2"))
    order_id = ordered(bap)
    bap("cancel", {"order_id": order_id})
    cancelled = last(bap, "on_cancel")["message"]["order"]
    cancelled_free(cancelled)
    assert (cancelled["payments"][0]["type"], cancelled["payments"][0]["status"]) == ("POST-FULFILLMENT", "NOT-PAID")


@pytest.mark.we_collect
def test_an_order_we_collect_for_cancelled_owes_nothing_either(bap: Any, gateway: CheckoutStandin) -> None:
    order_id = ordered(bap)
    bap("cancel", {"order_id": order_id})
    cancelled = last(bap, "on_cancel")["message"]["order"]
    cancelled_free(cancelled)
    assert "url" not in cancelled["payments"][0]
