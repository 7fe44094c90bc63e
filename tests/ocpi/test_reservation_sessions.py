"""The CPO's Session of a reservation (mod_commands §ReserveNow: "A successful reservation will result in a new
Session object being created by the CPO"; mod_sessions: status RESERVATION, and COMPLETED "when a reservation does
not result in a charging session"). It carries the ReserveNow's authorization_reference, which a START_SESSION on
the reservation repeats: it had been tied to the booking as its charge. A refused start then left the driver stuck
(no retry, the booking never ended FAILED), a cancel became a STOP_SESSION of the reservation, and the unused
reservation's completion completed the booking and fulfilled the reservation; an ended booking's unused
reservation session was listed for staff as a charge after the end. It is the charge once it goes ACTIVE (or
charged). And a late refusal of a reservation whose driver is starting had freed the EVSE under that start."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from emsp.models import Booking, BookingCheck, ChargingSession, Command, Evse, Partner, Reservation
from emsp.services import booking_checks, bookings, commands, sessions
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer
from tests.ocpi.test_commands_review_fixes import accepts, book, post_result

pytestmark = pytest.mark.django_db


@pytest.fixture
def evse(partner: Partner) -> Evse:
    return stored_location(partner).evses.order_by("uid").first()


def reservation_session(booking: Booking, seconds: int = 0, **fields: Any) -> dict[str, Any]:
    """The CPO's Session of the reservation it made (status RESERVATION), naming the ReserveNow's reference."""
    assert booking.reservation is not None and booking.token is not None
    now = timezone.now().replace(microsecond=0) + timedelta(seconds=seconds)
    stamp = now.isoformat().replace("+00:00", "Z")
    token = {"uid": booking.token.uid, "type": "RFID", "contract_id": booking.token.contract_id,
             "country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID}  # fmt: skip
    return {
        "country_code": "IN", "party_id": "CPA", "id": "RES-S1", "start_date_time": stamp, "kwh": 0,
        "cdr_token": token, "auth_method": "COMMAND", "authorization_reference": booking.reservation.reservation_id,
        "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
        "currency": "INR", "status": "RESERVATION", "last_updated": stamp, **fields,
    }  # fmt: skip


def started_on_reservation(peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, capture: Any) -> Booking:
    """Booked, reserved at the CPO (its Session of the reservation stored) and started on it, the start accepted."""
    accepts(peer, "RESERVE_NOW", "START_SESSION", timeout=3600)
    booking, reserve = book(evse, capture)
    post_result(ocpi, reserve, {"result": "ACCEPTED"}, capture)
    with capture(execute=True):
        sessions.session_put(partner, reservation_session(booking))
        bookings.booking_start(booking)
    post_result(ocpi, Command.objects.get(type=Command.Type.START_SESSION), {"result": "ACCEPTED"}, capture)
    return booking


def the_session() -> ChargingSession:
    return ChargingSession.objects.get()


def patch(booking: Booking, seconds: int, capture: Any, **fields: Any) -> None:
    """The CPO's PATCH of the reservation's session, stamped `seconds` from now."""
    stamp = reservation_session(booking, seconds)["last_updated"]
    with capture(execute=True):
        sessions.session_patch(the_session().ocpi_key, {"last_updated": stamp, **fields})


def reserved_and_start_refused(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, capture: Any
) -> Booking:
    """A booking reserved at the CPO, the reservation's Session pushed, the driver's start on it refused by the
    charger (the car not plugged in), the session PATCHed after the start (its reference now a start's too)."""
    accepts(peer, "RESERVE_NOW", "START_SESSION", "CANCEL_RESERVATION", "STOP_SESSION", timeout=3600)
    booking, reserve = book(evse, capture)
    post_result(ocpi, reserve, {"result": "ACCEPTED"}, capture)
    assert Reservation.objects.get().status == Reservation.Status.RESERVED
    with capture(execute=True):
        sessions.session_put(partner, reservation_session(booking))
    with capture(execute=True):
        bookings.booking_start(booking)
    start = Command.objects.get(type=Command.Type.START_SESSION)
    assert start.authorization_reference == booking.reservation.reservation_id  # type: ignore[union-attr]
    patch(booking, 5, capture)
    post_result(ocpi, start, {"result": "EVSE_OCCUPIED"}, capture)
    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING
    return booking


# --- a session that only held the reservation is not the charge ------------------------------------------------


def test_the_reservations_session_is_not_the_bookings_charge(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    booking = reserved_and_start_refused(peer, evse, ocpi, partner, django_capture_on_commit_callbacks)

    session = the_session()
    assert session.booking_id is None
    assert bookings.only_held_reservation(session)
    assert Command.objects.get(type=Command.Type.START_SESSION).session_id is None
    assert bookings.current_session(booking) is None
    # The driver may start again after the refused start, and the app hears of no charge.
    assert bookings.start_refused(booking)
    assert not commands.charging_began(Command.objects.get(type=Command.Type.START_SESSION))
    assert Reservation.objects.get().status == Reservation.Status.RESERVED
    # Our mark is not the CPO's: a GET of the session gives back what it sent.
    assert bookings.HELD_ONLY in session.data
    assert bookings.HELD_ONLY not in sessions.session_as_sent(session)


def test_a_refused_start_whose_reservation_then_runs_out_unused_ends_failed(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    booking = reserved_and_start_refused(peer, evse, ocpi, partner, django_capture_on_commit_callbacks)
    later = timezone.now() + timedelta(minutes=10)
    with django_capture_on_commit_callbacks(execute=True):
        bookings.bookings_expire_no_shows(later)
        booking_checks.booking_reconcile(booking=booking.pk, now=later)
    booking.refresh_from_db()
    assert booking.state == Booking.State.FAILED  # START_FAILED: the hold released, the payment hold too
    assert Reservation.objects.get().status == Reservation.Status.CANCELLED
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1

    # The CPO ends the reservation's session unused (mod_sessions: COMPLETED, no energy).
    ended = reservation_session(booking, 16 * 60)["last_updated"]
    patch(booking, 16 * 60, django_capture_on_commit_callbacks, status="COMPLETED", end_date_time=ended)
    booking.refresh_from_db()
    assert booking.state == Booking.State.FAILED
    assert Reservation.objects.get().status == Reservation.Status.CANCELLED
    assert the_session().booking_id is None
    # Told again whole (a PUT, as a pull reads it), it is still no charge.
    with django_capture_on_commit_callbacks(execute=True):
        sessions.session_put(partner, reservation_session(booking, 17 * 60, status="COMPLETED", end_date_time=ended))
    assert the_session().booking_id is None
    with django_capture_on_commit_callbacks(execute=True):
        booking_checks.booking_reconcile(booking=booking.pk, now=later + timedelta(minutes=10))
    assert not BookingCheck.objects.filter(booking=booking, kind=BookingCheck.Kind.SESSION_AFTER_END).exists()


def test_an_unused_reservation_session_completing_does_not_complete_the_booking(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    booking = reserved_and_start_refused(peer, evse, ocpi, partner, django_capture_on_commit_callbacks)
    ended = reservation_session(booking, 60)["last_updated"]
    patch(booking, 60, django_capture_on_commit_callbacks, status="COMPLETED", end_date_time=ended)
    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING  # not COMPLETED: nothing charged
    assert Reservation.objects.get().status == Reservation.Status.RESERVED  # not FULFILLED
    assert bookings.start_refused(booking)


def test_a_drivers_cancel_after_a_refused_start_on_a_reservation_cancels_it(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    booking = reserved_and_start_refused(peer, evse, ocpi, partner, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        bookings.booking_cancel(booking, reason="changed my mind")
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert Reservation.objects.get().status == Reservation.Status.CANCELLED
    assert not peer.requests_to("STOP_SESSION")
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1


def test_a_no_show_whose_unused_reservation_session_completes_is_no_session_after_end(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    accepts(peer, "RESERVE_NOW", "CANCEL_RESERVATION", timeout=3600)
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    post_result(ocpi, reserve, {"result": "ACCEPTED"}, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        sessions.session_put(partner, reservation_session(booking))
    later = timezone.now() + timedelta(minutes=16)
    with django_capture_on_commit_callbacks(execute=True):
        assert bookings.bookings_expire_no_shows(later) == 1
    cancel = Command.objects.get(type=Command.Type.CANCEL_RESERVATION)
    post_result(ocpi, cancel, {"result": "ACCEPTED"}, django_capture_on_commit_callbacks)
    ended = reservation_session(booking, 16 * 60)["last_updated"]
    patch(booking, 16 * 60, django_capture_on_commit_callbacks, status="COMPLETED", end_date_time=ended)
    with django_capture_on_commit_callbacks(execute=True):
        booking_checks.booking_reconcile(booking=booking.pk, now=later + timedelta(minutes=1))
    booking.refresh_from_db()
    assert booking.state == Booking.State.EXPIRED
    assert not BookingCheck.objects.filter(booking=booking).exists()


# --- the same Session, once the driver charges on it, is the charge ---------------------------------------------


def test_the_reservations_session_going_active_is_the_charge(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    booking = started_on_reservation(peer, evse, ocpi, partner, django_capture_on_commit_callbacks)
    start = Command.objects.get(type=Command.Type.START_SESSION)

    patch(booking, 30, django_capture_on_commit_callbacks, status="ACTIVE", kwh=0.5)
    booking.refresh_from_db()
    session = the_session()
    assert (booking.state, session.booking_id) == (Booking.State.CHARGING, booking.pk)
    assert not bookings.only_held_reservation(session)
    assert Reservation.objects.get().status == Reservation.Status.FULFILLED
    assert Command.objects.get(pk=start.pk).session_id == session.pk
    assert bookings.current_session(booking) == session

    # It ends with nothing more drawn: still the charge, which completes the booking.
    ended = reservation_session(booking, 600)["last_updated"]
    patch(booking, 600, django_capture_on_commit_callbacks, status="COMPLETED", end_date_time=ended, kwh=0)
    booking.refresh_from_db()
    assert booking.state == Booking.State.COMPLETED


def test_a_reservation_session_reported_completed_with_energy_is_the_charge(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    """Its ACTIVE state never reached us: the energy says it charged."""
    accepts(peer, "RESERVE_NOW", "START_SESSION", timeout=3600)
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    post_result(ocpi, reserve, {"result": "ACCEPTED"}, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        sessions.session_put(partner, reservation_session(booking))
        bookings.booking_start(booking)
    ended = reservation_session(booking, 600)["last_updated"]
    patch(booking, 600, django_capture_on_commit_callbacks, status="COMPLETED", end_date_time=ended, kwh=7.25)
    booking.refresh_from_db()
    session = the_session()
    assert (booking.state, session.booking_id, session.kwh) == (Booking.State.COMPLETED, booking.pk, Decimal("7.25"))
    assert Reservation.objects.get().status == Reservation.Status.FULFILLED


# --- a late refusal of the reservation does not free the EVSE under a start --------------------------------------


def test_a_late_refusal_of_the_reservation_does_not_free_the_evse_of_a_driver_starting(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    accepts(peer, "RESERVE_NOW", "START_SESSION", "CANCEL_RESERVATION", timeout=60)
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert bookings.booking_start(booking) is None  # walk-up: waits for the reservation's result
    with django_capture_on_commit_callbacks(execute=True):
        commands.commands_expire_due(timezone.now() + timedelta(seconds=90))
    start = Command.objects.get(type=Command.Type.START_SESSION)
    assert start.status == Command.Status.ACCEPTED
    now = timezone.now()

    post_result(ocpi, reserve, {"result": "REJECTED"}, django_capture_on_commit_callbacks)

    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING
    assert Command.objects.get(pk=reserve.pk).status == Command.Status.FAILED
    # Held for the driver, by us only: the CPO holds nothing.
    assert Reservation.objects.get().status == Reservation.Status.HELD
    assert bookings.active_hold(evse, now, now + timedelta(minutes=10)) is not None
    with pytest.raises(bookings.EvseUnavailable):
        bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())

    # The hold ends with the booking: the start refused, the checks end it FAILED; nothing to cancel at the CPO.
    post_result(ocpi, start, {"result": "EVSE_OCCUPIED"}, django_capture_on_commit_callbacks)
    later = timezone.now() + timedelta(minutes=10)
    with django_capture_on_commit_callbacks(execute=True):
        booking_checks.booking_reconcile(booking=booking.pk, now=later)
    booking.refresh_from_db()
    assert booking.state == Booking.State.FAILED
    assert Reservation.objects.get().status == Reservation.Status.CANCELLED
    assert bookings.active_hold(evse, now, now + timedelta(minutes=10)) is None
    assert not peer.requests_to("CANCEL_RESERVATION")


def test_a_refusal_of_the_reservation_a_walk_up_driver_waits_for_keeps_the_evse_held(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    """docs/driver-journey.md: "the start goes straight to the EVSE instead, and the EVSE stays held for them"."""
    accepts(peer, "RESERVE_NOW", "START_SESSION", timeout=3600)
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert bookings.booking_start(booking) is None

    post_result(ocpi, reserve, {"result": "REJECTED"}, django_capture_on_commit_callbacks)

    start = Command.objects.get(type=Command.Type.START_SESSION)
    assert (start.reservation_id, start.status) == (None, Command.Status.ACCEPTED)  # straight to the EVSE
    assert Reservation.objects.get().status == Reservation.Status.HELD
    now = timezone.now()
    assert bookings.active_hold(evse, now, now + timedelta(minutes=10)) is not None


def test_a_refusal_of_the_reservation_of_a_booking_waiting_for_its_driver_still_frees_the_evse(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    accepts(peer, "RESERVE_NOW", timeout=3600)
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    post_result(ocpi, reserve, {"result": "REJECTED"}, django_capture_on_commit_callbacks)
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert Reservation.objects.get().status == Reservation.Status.FAILED
    now = timezone.now()
    assert bookings.active_hold(evse, now, now + timedelta(minutes=10)) is None


# --- a re-review: the CDR of a reservation's session that charged --------------------------------------------------


def cdr_of(booking: Booking) -> dict[str, Any]:
    """The CPO's CDR of the reservation's session: it charged 7.25 kWh."""
    s = reservation_session(booking, 600)
    return {
        "country_code": "IN", "party_id": "CPA", "id": "CDR-R1", "start_date_time": s["start_date_time"],
        "end_date_time": s["last_updated"], "currency": "INR", "cdr_token": s["cdr_token"], "auth_method": "COMMAND",
        "authorization_reference": s["authorization_reference"], "session_id": "RES-S1",
        "cdr_location": {"id": s["location_id"], "evse_uid": s["evse_uid"], "connector_id": "1"},
        "total_cost": {"excl_vat": 100, "incl_vat": 118}, "total_energy": 7.25, "total_time": 0.2,
        "charging_periods": [], "last_updated": s["last_updated"],
    }  # fmt: skip


def test_a_cdr_with_energy_for_a_reservation_session_ended_without_it_settles_the_booking(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    from billing.services.records import cdr_store

    capture = django_capture_on_commit_callbacks
    booking = started_on_reservation(peer, evse, ocpi, partner, capture)
    ended = reservation_session(booking, 600)["last_updated"]
    patch(booking, 600, capture, status="COMPLETED", end_date_time=ended)  # its energy never reported
    assert bookings.only_held_reservation(the_session())

    with capture(execute=True):
        cdr_store(partner, cdr_of(booking))

    booking.refresh_from_db()
    assert booking.state == Booking.State.SETTLED  # had stayed STARTING for ever, the driver's account billed
    assert not bookings.only_held_reservation(the_session())
    assert the_session().booking_id == booking.pk
    assert Reservation.objects.get().status == Reservation.Status.FULFILLED


def test_energy_reported_after_the_completed_ties_the_start_as_one_patch_would(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    capture = django_capture_on_commit_callbacks
    booking = started_on_reservation(peer, evse, ocpi, partner, capture)
    start = Command.objects.get(type=Command.Type.START_SESSION)
    ended = reservation_session(booking, 600)["last_updated"]
    patch(booking, 600, capture, status="COMPLETED", end_date_time=ended)  # COMPLETED first, its energy after
    patch(booking, 610, capture, kwh=7.25)

    booking.refresh_from_db()
    assert (booking.state, the_session().booking_id) == (Booking.State.COMPLETED, booking.pk)
    assert Command.objects.get(pk=start.pk).session_id == the_session().pk  # had stayed None
