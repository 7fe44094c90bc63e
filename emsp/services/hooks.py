"""What else happens when the domain changes: the one place where the domain hands events to the billing
engine and to the consumer-facing protocol (Beckn). Each hook runs inside the caller's transaction; work
with I/O is deferred to Celery with `transaction.on_commit`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

if TYPE_CHECKING:
    from billing.models import Cdr
    from emsp.models import ChargingSession, Command, Reservation


def session_changed(session: ChargingSession, old_status: str | None) -> None:
    """A CPO created or changed a session: it moves its booking on, and the BAP hears of a new state."""
    from beckn import events
    from emsp.services import bookings

    booking = bookings.on_session_changed(session)
    if booking is not None and session.status != old_status:
        events.session_changed(booking)


def command_finished(command: Command) -> None:
    """A command reached a final state (result, refusal or TIMEOUT)."""
    from beckn import events

    if command.booking_id is not None:
        events.command_finished(command)


def reservation_cancelled_by_cpo(reservation: Reservation | None) -> None:
    """The CPO cancelled a reservation it had accepted: the booking is cancelled, the BAP told why."""
    from beckn import events
    from emsp.models import Booking
    from emsp.services import bookings

    if reservation is None:
        return
    for booking in Booking.objects.filter(reservation=reservation, state=Booking.State.CONFIRMED):
        bookings.booking_cancel(booking, reason="the operator cancelled the reservation", by_cpo=True)
        events.booking_cancelled_by_provider(booking, "the operator cancelled the reservation")


def evse_status_changed(evse_id: int, old_status: str, new_status: str) -> None:
    """An EVSE's status changed (push or pull). A booked EVSE that fails cancels its bookings; the BAP gets
    on_cancel with alternatives."""
    from beckn import events
    from emsp.services import bookings

    if new_status not in events.FAULT_STATUSES:
        return
    for booking in bookings.bookings_hit_by_evse_fault(evse_id):
        reason = f"the charger went {new_status.lower().replace('_', ' ')}"
        bookings.booking_cancel(booking, reason=reason, by_cpo=True)
        events.booking_cancelled_by_provider(booking, reason)


def cdr_billed(cdr: Cdr) -> None:
    """A CDR was audited and the driver's receipt made: the booking is settled, the BAP gets the final bill."""
    from beckn import events
    from emsp.services import bookings

    booking = bookings.on_cdr(cdr.charging_session)
    if booking is not None:
        events.booking_settled(booking)


def cdr_received(cdr: Cdr) -> None:
    """A new CDR was stored: audit it against our tariff engine and make the driver's receipt."""
    from billing.tasks import process_cdr

    cdr_id = cdr.pk
    transaction.on_commit(lambda: process_cdr.delay(cdr_id))
