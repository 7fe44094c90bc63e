"""A driver who plugged in at the booked charger with their card (the CPO's session names the reservation, PENDING)
before the booking checks tied that session to the booking is no no-show: the sweep had expired the booking, sent
CANCEL_RESERVATION with the car plugged in and told the app "no-show". Found by the re-review of the lock order
(the checks now skip a session whose change holds its row, which made the gap one check interval longer)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from emsp.models import Booking, ChargingSession, Command, Evse, Partner, Reservation
from emsp.services import booking_checks, bookings, commands
from tests.emsp.test_command_lock_order import booked_now, cpo, evse, put  # noqa: F401 (fixtures)
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db(transaction=True)
needs_postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")


def plugged_in_on_the_reservation(partner: Partner, charger: Evse) -> tuple[Booking, ChargingSession]:
    booking, reserve = booked_now(charger)
    commands.command_result_received(reserve, {"result": "ACCEPTED"})
    put(partner, booking, reserve.authorization_reference, ChargingSession.Status.PENDING)
    session = ChargingSession.objects.get()
    assert session.reservation_id == booking.reservation_id and session.booking_id is None
    return booking, session


def arrive_by_passed(booking: Booking) -> None:
    Reservation.objects.filter(pk=booking.reservation_id).update(arrive_by=timezone.now() - timedelta(minutes=1))


def test_a_pending_card_session_on_the_reservation_is_no_no_show(
    cpo: FakePeer,  # noqa: F811
    partner: Partner,
    evse: Evse,  # noqa: F811
) -> None:
    booking, _ = plugged_in_on_the_reservation(partner, evse)
    arrive_by_passed(booking)

    bookings.bookings_expire_no_shows()

    booking.refresh_from_db()
    assert booking.state == Booking.State.CONFIRMED, (booking.state, booking.cancellation_reason)
    assert not Command.objects.filter(booking=booking, type=Command.Type.CANCEL_RESERVATION).exists()


@needs_postgres
def test_a_link_skipped_while_the_cpo_changes_the_session_then_the_sweep(
    cpo: FakePeer,  # noqa: F811
    partner: Partner,
    evse: Evse,  # noqa: F811
) -> None:
    """The check runs while the CPO's PATCH of the session holds its row: `_link` leaves it to the next run; the
    no-show sweep comes first."""
    booking, session = plugged_in_on_the_reservation(partner, evse)
    locked, release = threading.Event(), threading.Event()

    def patch_in_progress() -> None:
        try:
            with transaction.atomic():
                list(ChargingSession.objects.select_for_update(no_key=True).filter(pk=session.pk))
                locked.set()
                release.wait(20)
        finally:
            connections.close_all()

    holder = threading.Thread(target=patch_in_progress)
    holder.start()
    assert locked.wait(10)
    try:
        booking_checks.booking_reconcile(booking=booking.pk)
    finally:
        release.set()
        holder.join(20)
    session.refresh_from_db()
    assert session.booking_id is None  # left to the next run
    arrive_by_passed(booking)

    bookings.bookings_expire_no_shows()

    booking.refresh_from_db()
    cancels = Command.objects.filter(booking=booking, type=Command.Type.CANCEL_RESERVATION).count()
    assert (booking.state, cancels) == (Booking.State.CONFIRMED, 0), (booking.state, booking.cancellation_reason)
