"""Bookings: holding an EVSE (never twice), reserving it at the CPO, starting, stopping, cancelling."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.utils import timezone

from emsp.models import Booking, ChargingSession, Command, Evse, Partner, Reservation
from emsp.services import bookings, commands
from emsp.services.sessions import session_put
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope

COMMANDS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/commands"


@pytest.fixture
def evse(partner: Partner) -> Evse:
    return stored_location(partner).evses.order_by("uid").first()


def accept_all(peer: FakePeer) -> None:
    for name in ("RESERVE_NOW", "START_SESSION", "STOP_SESSION", "CANCEL_RESERVATION"):
        peer.route("POST", f"{COMMANDS_URL}/{name}", (200, envelope({"result": "ACCEPTED", "timeout": 30})))


@pytest.mark.django_db
def test_confirming_holds_the_evse_and_reserves_it_at_the_cpo(
    peer: FakePeer, evse: Evse, django_capture_on_commit_callbacks: Any
) -> None:
    accept_all(peer)
    with django_capture_on_commit_callbacks(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    assert booking.state == Booking.State.CONFIRMED
    assert booking.order_id.startswith("ORD-")
    booking.reservation.refresh_from_db()
    assert booking.reservation.status == Reservation.Status.REQUESTED
    assert peer.requests_to("RESERVE_NOW")[0]["json"]["reservation_id"] == booking.reservation.reservation_id


@pytest.mark.django_db
def test_a_non_reservable_evse_is_held_by_us_only(peer: FakePeer, partner: Partner) -> None:
    evse = stored_location(partner, capabilities=["REMOTE_START_STOP_CAPABLE"]).evses.first()
    booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    assert booking.reservation.status == Reservation.Status.HELD
    assert not Command.objects.exists()


@pytest.mark.django_db
def test_a_held_evse_cannot_be_booked_again(evse: Evse) -> None:
    bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    with pytest.raises(bookings.EvseUnavailable) as caught:
        bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    assert caught.value.available_from is not None


@pytest.mark.django_db
def test_an_out_of_order_evse_cannot_be_booked(evse: Evse) -> None:
    Evse.objects.filter(pk=evse.pk).update(status=Evse.Status.OUTOFORDER)
    evse.refresh_from_db()
    with pytest.raises(bookings.EvseUnavailable, match="OUTOFORDER"):
        bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="real concurrency needs PostgreSQL")
def test_concurrent_confirms_book_the_evse_once(partner: Partner) -> None:
    evse = stored_location(partner, capabilities=[]).evses.first()
    tokens = [TokenFactory() for _ in range(8)]
    results: list[str] = []
    barrier = threading.Barrier(len(tokens))

    def confirm(token: Any) -> None:
        try:
            barrier.wait()
            bookings.booking_confirm(evse=evse, connector_id="1", token=token)
            results.append("booked")
        except bookings.EvseUnavailable:
            results.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=confirm, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("booked") == 1
    assert results.count("refused") == len(tokens) - 1
    assert Booking.objects.count() == 1


def _session_pushed(
    partner: Partner, booking: Booking, start: Command, evse: Evse, session_id: str = "S-C1"
) -> ChargingSession:
    """The CPO reports the session its START_SESSION began (ACTIVE), as a session PUT."""
    now = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    return session_put(
        partner,
        {
            "country_code": "IN", "party_id": "CPA", "id": session_id, "start_date_time": now, "kwh": 0,
            "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "RFID",
                          "contract_id": "C"},
            "auth_method": "COMMAND", "authorization_reference": start.authorization_reference,
            "location_id": "LOC1", "evse_uid": evse.uid, "connector_id": "1", "currency": "INR",
            "status": "ACTIVE", "last_updated": now,
        },
    ).session  # fmt: skip


@pytest.mark.django_db
def test_start_then_session_then_stop_then_cdr(
    peer: FakePeer, evse: Evse, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    accept_all(peer)
    with django_capture_on_commit_callbacks(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    with django_capture_on_commit_callbacks(execute=True):
        # Walk-up: the driver starts before the CPO has answered RESERVE_NOW: the start waits for it.
        assert bookings.booking_start(booking) is None
    assert not peer.requests_to("START_SESSION")
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    reserve = Command.objects.get(type=Command.Type.RESERVE_NOW)
    with django_capture_on_commit_callbacks(execute=True):
        commands.command_result_received(reserve, {"result": "ACCEPTED"})
    start = Command.objects.get(type=Command.Type.START_SESSION)  # sent on the reservation once it was made
    assert start.reservation_id == booking.reservation_id
    start.refresh_from_db()
    assert start.status == Command.Status.ACCEPTED
    body = peer.requests_to("START_SESSION")[0]["json"]
    assert body["connector_id"] == "1" or "connector_id" not in body
    session = _session_pushed(partner, booking, start, evse, session_id="S-B1")
    booking.refresh_from_db()
    assert booking.state == Booking.State.CHARGING
    assert ChargingSession.objects.get(pk=session.pk).booking == booking
    with django_capture_on_commit_callbacks(execute=True):
        bookings.booking_stop(booking)
    assert peer.requests_to("STOP_SESSION")[0]["json"]["session_id"] == "S-B1"
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING


@pytest.mark.django_db
def test_cancel_before_charging_releases_the_hold(
    peer: FakePeer, evse: Evse, django_capture_on_commit_callbacks: Any
) -> None:
    accept_all(peer)
    with django_capture_on_commit_callbacks(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    with django_capture_on_commit_callbacks(execute=True):
        bookings.booking_cancel(booking, reason="changed my mind")
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert booking.reservation.status == Reservation.Status.CANCELLED
    assert peer.requests_to("CANCEL_RESERVATION")
    # The EVSE can be booked again at once.
    bookings.booking_confirm(
        evse=evse, connector_id="1", token=TokenFactory(), now=timezone.now() + timedelta(seconds=1)
    )


@pytest.mark.django_db
def test_a_cancel_after_the_start_went_out_stops_the_charge_when_it_is_reported(
    peer: FakePeer, evse: Evse, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    accept_all(peer)
    with django_capture_on_commit_callbacks(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    commands.command_result_received(Command.objects.get(type=Command.Type.RESERVE_NOW), {"result": "ACCEPTED"})
    with django_capture_on_commit_callbacks(execute=True):
        bookings.booking_start(booking)
    start = Command.objects.get(type=Command.Type.START_SESSION)
    # The CPO accepted the start; the driver cancels before the session is reported.
    with django_capture_on_commit_callbacks(execute=True):
        assert bookings.booking_cancel(booking, reason="changed my mind") is None
    booking.refresh_from_db()
    assert (booking.state, booking.cancellation_reason) == (Booking.State.STOPPING, "changed my mind")
    assert not peer.requests_to("CANCEL_RESERVATION")  # the reservation became the start
    with django_capture_on_commit_callbacks(execute=True):
        _session_pushed(partner, booking, start, evse)
    assert peer.requests_to("STOP_SESSION")[0]["json"]["session_id"] == "S-C1"
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING  # still active: the stop is retried


@pytest.mark.django_db
def test_a_cancel_while_charging_is_a_stop_and_a_second_cancel_sends_nothing_more(
    peer: FakePeer, evse: Evse, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    accept_all(peer)
    with django_capture_on_commit_callbacks(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    commands.command_result_received(Command.objects.get(type=Command.Type.RESERVE_NOW), {"result": "ACCEPTED"})
    with django_capture_on_commit_callbacks(execute=True):
        bookings.booking_start(booking)
    with django_capture_on_commit_callbacks(execute=True):
        _session_pushed(partner, booking, Command.objects.get(type=Command.Type.START_SESSION), evse)
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CHARGING
    with django_capture_on_commit_callbacks(execute=True):
        command = bookings.booking_cancel(booking, reason="in a hurry")
    assert command is not None and command.type == Command.Type.STOP_SESSION
    with django_capture_on_commit_callbacks(execute=True):
        assert bookings.booking_cancel(booking, reason="again") is None
    assert len(peer.requests_to("STOP_SESSION")) == 1
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING


@pytest.mark.django_db
def test_a_cancelled_booking_cannot_start(evse: Evse) -> None:
    booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    bookings.booking_cancel(booking)
    with pytest.raises(bookings.BookingStateError):
        bookings.booking_start(booking)
