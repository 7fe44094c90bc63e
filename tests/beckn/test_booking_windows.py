"""Issue 13, points 2-4: a booking for a time window (held for that window only, RESERVE_NOW sent shortly
before it), the no-show that ends a hold the driver did not use, a reservation the CPO refuses, and the
alternatives the app can book instead, sent as catalogue items it can select."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.services import tariff_put
from emsp.datetimes import format_datetime
from emsp.models import Booking, Command, Evse, Partner, Reservation
from emsp.services import bookings
from emsp.services.commands import command_result_received
from tests.beckn.test_actions import init, last, search_message
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db

NEAR_1 = "NEAR/NEAR-E1/1"


def window(hours_ahead: float, minutes: int = 60) -> tuple[datetime, datetime]:
    start = (timezone.now() + timedelta(hours=hours_ahead)).replace(microsecond=0)
    return start, start + timedelta(minutes=minutes)


def time_range(span: tuple[datetime, datetime]) -> dict[str, Any]:
    return {"range": {"start": format_datetime(span[0], "seconds"), "end": format_datetime(span[1], "seconds")}}


def select_window(bap: Any, item: str, span: tuple[datetime, datetime] | dict[str, Any]) -> dict[str, Any]:
    time = span if isinstance(span, dict) else time_range(span)
    bap(
        "select",
        {
            "order": {
                "provider": {"id": "IN*CPA"},
                "items": [{"id": item, "quantity": {"selected": {"measure": {"value": "20", "unit": "kWh"}}}}],
                "fulfillments": [{"stops": [{"type": "start", "time": time}]}],
            }
        },
    )
    return last(bap, "on_select")


def book(bap: Any, item: str, span: tuple[datetime, datetime]) -> dict[str, Any]:
    """select → init → confirm for a window (new transaction each time)."""
    bap.bap.transaction_id = f"txn-{item}-{span[0]:%H%M%S}-{timezone.now().timestamp()}"
    select_window(bap, item, span)
    init(bap)
    bap("confirm", {"order": {"provider": {"id": "IN*CPA"}, "payments": [{"status": "NOT-PAID"}]}})
    return last(bap, "on_confirm")


def items_of(body: dict[str, Any]) -> list[str]:
    return [i["id"] for p in body["message"]["catalog"]["providers"] for i in p["items"]]


# --- time windows -------------------------------------------------------------------------------------


def test_it_holds_the_evse_for_the_window_and_reserves_it_at_the_cpo_shortly_before(
    bap: Any, peer: FakePeer, settings: Any
) -> None:
    span = window(hours_ahead=5)
    body = book(bap, NEAR_1, span)
    assert "error" not in body, body.get("error")
    order = body["message"]["order"]
    assert order["fulfillments"][0]["stops"][0]["time"] == time_range(span)
    booking = Booking.objects.get(order_id=order["id"])
    reservation = booking.reservation
    assert (reservation.start_at, reservation.expiry_at) == span
    assert reservation.arrive_by == span[0] + timedelta(minutes=settings.BOOKING_NO_SHOW_GRACE_MINUTES)
    assert reservation.reserve_at == span[0] - timedelta(minutes=settings.BOOKING_RESERVE_LEAD_MINUTES)
    assert not peer.requests_to("RESERVE_NOW")  # five hours ahead: too early for the CPO
    assert bookings.reservations_send_due(now=reservation.reserve_at - timedelta(seconds=1)) == 0
    with bap.capture(execute=True):
        assert bookings.reservations_send_due(now=reservation.reserve_at) == 1
        assert bookings.reservations_send_due(now=reservation.reserve_at) == 0  # claimed once
    (reserve,) = peer.requests_to("RESERVE_NOW")
    assert reserve["json"]["expiry_date"] == format_datetime(span[1])
    assert reserve["json"]["reservation_id"] == reservation.reservation_id


def test_bookings_in_other_windows_of_one_evse_do_not_collide_and_an_overlap_is_refused(
    bap: Any, peer: FakePeer
) -> None:
    morning, later = window(hours_ahead=3), window(hours_ahead=5)
    assert "error" not in book(bap, NEAR_1, morning)
    assert "error" not in book(bap, NEAR_1, later)
    overlap = (morning[0] + timedelta(minutes=30), morning[1] + timedelta(minutes=30))
    bap.bap.transaction_id = "txn-overlap"
    refused = select_window(bap, NEAR_1, overlap)
    assert refused["error"]["code"] == "30008"
    assert "booked from" in refused["error"]["message"]
    # The alternatives follow as a catalogue the app can select from, free in that window.
    offered = last(bap, "on_search")
    assert offered["context"]["transaction_id"] == "txn-overlap"
    assert NEAR_1 not in items_of(offered)
    assert items_of(offered)
    stop = offered["message"]["catalog"]["providers"][0]["fulfillments"][0]["stops"][0]
    assert stop["time"] == time_range(overlap)
    assert Reservation.objects.filter(evse__uid="NEAR-E1", status="HELD").count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the exclusion constraint is PostgreSQL's")
def test_postgresql_refuses_overlapping_windows_itself(network: Partner) -> None:
    evse = Evse.objects.get(uid="NEAR-E1")
    token = TokenFactory()
    first = window(hours_ahead=2)
    Reservation.objects.create(evse=evse, token=token, start_at=first[0], expiry_at=first[1])
    Reservation.objects.create(evse=evse, token=token, start_at=first[1], expiry_at=first[1] + timedelta(hours=1))
    with pytest.raises(IntegrityError), transaction.atomic():
        Reservation.objects.create(
            evse=evse, token=token, start_at=first[0] + timedelta(minutes=59), expiry_at=first[1] + timedelta(hours=2)
        )


def test_search_for_a_window_leaves_out_chargers_booked_then_and_carries_the_window(bap: Any) -> None:
    span = window(hours_ahead=4)
    assert "error" not in book(bap, NEAR_1, span)
    Evse.objects.filter(uid="NEAR-E2").update(status="CHARGING")  # busy now, free in four hours

    def search(time: tuple[datetime, datetime]) -> dict[str, Any]:
        message = search_message(tags=[{"descriptor": {"code": "availability"}, "value": "available"}])
        message["intent"]["fulfillment"]["stops"][0]["time"] = time_range(time)
        bap("search", message)
        return last(bap, "on_search")

    during = search(span)
    assert NEAR_1 not in items_of(during)
    assert "NEAR/NEAR-E2/1" in items_of(during)
    for provider in during["message"]["catalog"]["providers"]:
        assert provider["fulfillments"][0]["stops"][0]["time"] == time_range(span)
    assert NEAR_1 in items_of(search(window(hours_ahead=8)))
    # Without asking for available chargers only, the booked one is still not offered for that window.
    message = search_message()
    message["intent"]["fulfillment"]["stops"][0]["time"] = time_range(span)
    bap("search", message)
    assert NEAR_1 not in items_of(last(bap, "on_search"))


def test_a_future_window_can_be_selected_while_the_charger_is_busy_now(bap: Any) -> None:
    Evse.objects.filter(uid="NEAR-E1").update(status="CHARGING")
    body = select_window(bap, NEAR_1, window(hours_ahead=3))
    assert "error" not in body
    assert body["message"]["order"]["quote"]["price"]["value"]


@pytest.mark.parametrize(
    ("time", "fragment"),
    [
        ({"range": {"start": "2026-13-01T00:00:00Z", "end": "2026-13-01T01:00:00Z"}}, "date-time"),
        ({"range": {"start": "99999-01-01T00:00:00Z", "end": "99999-01-01T01:00:00Z"}}, "date-time"),
        ({"range": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z"}}, "over"),
        ({"range": {"start": "2027-01-01T02:00:00Z", "end": "2027-01-01T01:00:00Z"}}, "end after"),
        ({"range": {"start": "2030-01-01T00:00:00Z", "end": "2030-01-01T01:00:00Z"}}, "days ahead"),
        ({"range": {"start": "2026-12-31T00:00:00\u0000Z", "end": "x"}}, "date-time"),
        ({"timestamp": "2027-01-01T00:00:00Z", "duration": "P99999999999D"}, "duration"),
        ({"range": {"start": 17, "end": None}}, "date-time"),
    ],
)
def test_an_impossible_window_is_a_clear_error_and_nothing_is_held(
    bap: Any, time: dict[str, Any], fragment: str
) -> None:
    body = select_window(bap, NEAR_1, time)
    assert body["error"]["code"] == "30000"
    assert "fulfillments[0].stops[0].time" in body["error"]["paths"]
    assert fragment in body["error"]["message"]
    assert not Reservation.objects.exists()


def test_a_start_before_the_window_opens_is_refused_with_the_time(bap: Any) -> None:
    order_id = book(bap, NEAR_1, window(hours_ahead=3))["message"]["order"]["id"]
    order = {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    body = last(bap, "on_update")
    assert body["error"]["code"] == "50002"
    assert "charging can start from" in body["error"]["message"]


# --- no-shows -------------------------------------------------------------------------------------------


def test_a_no_show_ends_the_booking_frees_the_evse_and_tells_the_app(bap: Any, peer: FakePeer, settings: Any) -> None:
    body = book(bap, NEAR_1, window(hours_ahead=0, minutes=60))  # now: reserved at the CPO at once
    booking = Booking.objects.get(order_id=body["message"]["order"]["id"])
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    reservation = Reservation.objects.get(pk=booking.reservation_id)
    assert reservation.status == "RESERVED"
    assert bookings.bookings_expire_no_shows(now=reservation.arrive_by - timedelta(seconds=1)) == 0
    later = reservation.arrive_by + timedelta(seconds=1)
    with bap.capture(execute=True):
        assert bookings.bookings_expire_no_shows(now=later) == 1
        assert bookings.bookings_expire_no_shows(now=later) == 0  # run twice: nothing twice
    booking.refresh_from_db()
    reservation.refresh_from_db()
    assert (booking.state, reservation.status) == ("EXPIRED", "EXPIRED")
    (cancel,) = peer.requests_to("CANCEL_RESERVATION")
    assert cancel["json"]["reservation_id"] == reservation.reservation_id
    (told,) = bap.bap.callbacks("on_cancel")
    last(bap, "on_cancel")  # valid against the OpenAPI
    order = told["message"]["order"]
    assert order["status"] == "CANCELLED"
    assert order["cancellation"]["cancelled_by"] == "PROVIDER"
    assert order["cancellation"]["reason"]["descriptor"]["code"] == "no-show"
    assert order["cancellation_terms"]
    assert order["fulfillments"][0]["state"]["descriptor"]["code"] == "NO-SHOW"
    # The rest of the window is free again for another driver.
    assert bookings.active_hold(booking.evse, later, later + timedelta(minutes=10)) is None


def test_the_grace_period_is_a_setting(bap: Any, settings: Any) -> None:
    settings.BOOKING_NO_SHOW_GRACE_MINUTES = 40
    span = window(hours_ahead=2, minutes=120)
    booking = Booking.objects.get(order_id=book(bap, NEAR_1, span)["message"]["order"]["id"])
    assert booking.reservation.arrive_by == span[0] + timedelta(minutes=40)
    assert bookings.bookings_expire_no_shows(now=span[0] + timedelta(minutes=39)) == 0
    assert bookings.bookings_expire_no_shows(now=span[0] + timedelta(minutes=41)) == 1


def test_a_driver_who_started_is_not_a_no_show(bap: Any, peer: FakePeer) -> None:
    booking = Booking.objects.get(order_id=book(bap, NEAR_1, window(0, 30))["message"]["order"]["id"])
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    order = {"id": booking.order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    assert bookings.bookings_expire_no_shows(now=timezone.now() + timedelta(hours=1)) == 0
    assert Booking.objects.get(pk=booking.pk).state == "STARTING"


# --- a reservation the CPO does not make ---------------------------------------------------------------------


@pytest.fixture
def neighbours(network: Partner) -> Partner:
    """Chargers near NEAR: a cheaper one 600 m away, a 22 kW AC one next door (not a fit for a 60 kW CCS2
    booking), and a pricier one in the same 1 km step."""
    tariff_put(network, {**_tariff("CHEAP", 12)})
    tariff_put(network, {**_tariff("DEAR", 30)})
    stored_location(network, location_id="CHEAPO", evses=1, latitude=12.9760, longitude=77.5960, tariff_ids=["CHEAP"])
    stored_location(network, location_id="DEARO", evses=1, latitude=12.9745, longitude=77.5950, tariff_ids=["DEAR"])
    slow = stored_location(network, location_id="SLOW", evses=1, latitude=12.9717, longitude=77.5946)
    slow.evses.get().connectors.update(max_electric_power=22000, standard="IEC_62196_T2", power_type="AC_3_PHASE")
    return network


def _tariff(tariff_id: str, price: int) -> dict[str, Any]:
    return {
        "country_code": "IN",
        "party_id": "CPA",
        "id": tariff_id,
        "currency": "INR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": price, "vat": 18, "step_size": 1}]}],
        "last_updated": "2026-01-01T00:00:00Z",
    }


@pytest.mark.parametrize("answer", ["REJECTED", "FAILED", "TIMEOUT"])
def test_a_refused_reservation_cancels_the_booking_with_bookable_alternatives(
    bap: Any, peer: FakePeer, neighbours: Partner, answer: str
) -> None:
    body = book(bap, NEAR_1, window(hours_ahead=0, minutes=30))
    booking = Booking.objects.get(order_id=body["message"]["order"]["id"])
    reserve = Command.objects.get(booking=booking, type="RESERVE_NOW")
    with bap.capture(execute=True):
        if answer == "TIMEOUT":
            Command.objects.filter(pk=reserve.pk).update(timeout_at=timezone.now() - timedelta(seconds=1))
            from emsp.services.commands import commands_expire_due

            commands_expire_due()
        else:
            command_result_received(reserve, {"result": answer})
    booking.refresh_from_db()
    assert booking.state == "CANCELLED"
    assert Reservation.objects.get(pk=booking.reservation_id).status in ("FAILED", "CANCELLED")
    # A reservation whose outcome is unknown is cancelled at the CPO, in case it was made.
    assert bool(peer.requests_to("CANCEL_RESERVATION")) == (answer == "TIMEOUT")
    told = last(bap, "on_cancel")["message"]["order"]
    assert told["cancellation"]["reason"]["descriptor"]["code"] == "reservation-refused"
    named = [t["value"].split(" ")[0] for t in told["tags"][0]["list"]]
    offered = last(bap, "on_search")
    assert offered["context"]["transaction_id"] == bap.bap.transaction_id
    ids = items_of(offered)
    assert [f"IN*CPA:{i}" for i in ids] == named
    # Compatible (CCS2, at least 60 kW), available, not the failed EVSE; by detour (1 km steps), then price.
    assert NEAR_1 not in ids and "SLOW/SLOW-E1/1" not in ids
    # All three within the first kilometre: cheapest first (FAR, 2 km off, comes after them).
    assert ids == ["CHEAPO/CHEAPO-E1/1", "NEAR/NEAR-E2/1", "DEARO/DEARO-E1/1"]
    prices = [Decimal(i["price"]["value"]) for p in offered["message"]["catalog"]["providers"] for i in p["items"]]
    assert prices == sorted(prices)


def test_an_alternative_can_be_selected_as_it_is(bap: Any, peer: FakePeer, neighbours: Partner) -> None:
    body = book(bap, NEAR_1, window(hours_ahead=0, minutes=30))
    booking = Booking.objects.get(order_id=body["message"]["order"]["id"])
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "REJECTED"})
    offered = last(bap, "on_search")["message"]["catalog"]["providers"][0]
    item = offered["items"][0]
    bap(
        "select",
        {"order": {"provider": {"id": offered["id"]}, "items": [{"id": item["id"]}]}},
    )
    assert "error" not in last(bap, "on_select")
    # ... and booked in the same transaction: a new order, the cancelled one left as it ended.
    billing = {"name": "Asha", "email": "asha@example.com", "phone": "+919845000000"}
    bap("init", {"order": {"provider": {"id": offered["id"]}, "items": [{"id": item["id"]}], "billing": billing}})
    assert "error" not in last(bap, "on_init")
    bap("confirm", {"order": {"provider": {"id": offered["id"]}, "payments": [{"status": "NOT-PAID"}]}})
    order = last(bap, "on_confirm")["message"]["order"]
    assert order["id"] != booking.order_id
    assert order["items"][0]["id"] == item["id"]
    assert Booking.objects.get(order_id=booking.order_id).state == Booking.State.CANCELLED


def test_a_faulted_charger_offers_alternatives_as_a_catalogue(bap: Any, peer: FakePeer, neighbours: Partner) -> None:
    body = book(bap, NEAR_1, window(hours_ahead=0, minutes=30))
    booking = Booking.objects.get(order_id=body["message"]["order"]["id"])
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
        from emsp import events

        Evse.objects.filter(pk=booking.evse_id).update(status="OUTOFORDER")
        events.publish(events.EvseStatusChanged(booking.evse_id, "AVAILABLE", "OUTOFORDER"))
    told = last(bap, "on_cancel")["message"]["order"]
    assert told["cancellation"]["reason"]["descriptor"]["code"] == "charger-error"
    assert "NEAR/NEAR-E2/1" in items_of(last(bap, "on_search"))
