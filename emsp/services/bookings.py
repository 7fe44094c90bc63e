"""Bookings: a driver's charge at one connector from confirmation to settlement. Confirming holds the EVSE
(no two active holds may overlap on one EVSE — a database constraint on PostgreSQL, the single-writer lock on
SQLite) and reserves it at the CPO when it is RESERVABLE; starting and stopping send OCPI commands; the
CPO's session and CDR move the booking on."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from emsp import events
from emsp.models import Booking, ChargingSession, Command, Driver, Evse, Reservation, Token
from emsp.services import commands

HOLD = timedelta(minutes=15)  # how long a booked EVSE is held for the driver to arrive


class EvseUnavailable(Exception):
    """The EVSE is held by another booking, or not in a state that can be booked."""

    def __init__(self, reason: str, available_from: datetime | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.available_from = available_from


class BookingStateError(Exception):
    """The booking is not in a state that allows this (already started, cancelled, …)."""


def _new_order_id() -> str:
    return f"ORD-{timezone.now():%y%m%d}-{secrets.token_hex(5).upper()}"


def active_hold(evse: Evse, start: datetime, end: datetime) -> Reservation | None:
    return (
        Reservation.objects.filter(
            evse=evse, status__in=Reservation.ACTIVE_STATUSES, start_at__lt=end, expiry_at__gt=start
        )
        .order_by("expiry_at")
        .first()
    )


def booking_confirm(
    *,
    evse: Evse,
    connector_id: str,
    token: Token,
    driver: Driver | None = None,
    quote_id: int | None = None,
    payment_reference: str = "",
    hold: timedelta = HOLD,
    now: datetime | None = None,
) -> Booking:
    """Book a connector: hold the EVSE now (double booking is impossible, also under concurrent confirms),
    then RESERVE_NOW at the CPO after commit when the EVSE is RESERVABLE."""
    now = now or timezone.now()
    if evse.status in (Evse.Status.OUTOFORDER, Evse.Status.INOPERATIVE, Evse.Status.REMOVED, Evse.Status.PLANNED):
        raise EvseUnavailable(f"EVSE is {evse.status}")
    end = now + hold
    try:
        with transaction.atomic():
            # Lock the EVSE row: concurrent confirms for it queue here (PostgreSQL) and the exclusion
            # constraint backs this up; on SQLite the IMMEDIATE transaction serialises writers.
            Evse.objects.select_for_update().filter(pk=evse.pk).first()
            existing = active_hold(evse, now, end)
            if existing is not None:
                raise EvseUnavailable("EVSE already booked", available_from=existing.expiry_at)
            reservation = Reservation.objects.create(
                evse=evse,
                connector_id=connector_id,
                token=token,
                start_at=now,
                expiry_at=end,
                status=Reservation.Status.HELD,
            )
            booking = Booking.objects.create(
                order_id=_new_order_id(),
                driver=driver or token.driver,
                token=token,
                evse=evse,
                connector_id=connector_id,
                quote_id=quote_id,
                reservation=reservation,
                payment_status="PAID" if payment_reference else "NOT-PAID",
                payment_reference=payment_reference,
            )
            if evse.is_reservable:
                commands.command_send_after_commit(
                    commands.command_reserve_now(reservation=reservation, booking=booking)
                )
    except IntegrityError as exc:  # the exclusion constraint caught a concurrent confirm
        raise EvseUnavailable("EVSE already booked") from exc
    return booking


def _move(booking: Booking, to: str, allowed: tuple[str, ...]) -> Booking:
    if not Booking.objects.filter(pk=booking.pk, state__in=allowed).update(state=to, updated_at=timezone.now()):
        booking.refresh_from_db()
        raise BookingStateError(f"booking {booking.order_id} is {booking.state}")
    booking.refresh_from_db()
    return booking


def reservation_pending(booking: Booking) -> bool:
    """Is a RESERVE_NOW for this booking still waiting for the CPO's result? (A start sent meanwhile finds
    the EVSE claimed by the reservation being made and is refused as EVSE_OCCUPIED.)"""
    return Command.objects.filter(
        booking=booking,
        type=Command.Type.RESERVE_NOW,
        status__in=(Command.Status.QUEUED, Command.Status.SENT, Command.Status.ACCEPTED),
    ).exists()


def booking_start(booking: Booking) -> Command | None:
    """START_SESSION for the booked connector (mod_commands §StartSession); the token goes with it. A driver
    at the charger before the CPO has answered our RESERVE_NOW (walk-up: the most common case) is not turned
    away: the start is recorded (STARTING, no command yet) and sent as soon as the reservation's result comes —
    on the reservation when the CPO accepted it, without it otherwise (on_reservation_finished). Returns the
    command sent now, or None when it waits for the reservation."""
    with transaction.atomic():
        booking = _move(booking, Booking.State.STARTING, (Booking.State.CONFIRMED,))
        if reservation_pending(booking):
            return None
        return _start_now(booking)


def _start_now(booking: Booking) -> Command:
    reservation = booking.reservation
    use_reservation = reservation if reservation and reservation.status == Reservation.Status.RESERVED else None
    assert booking.token is not None
    command = commands.command_start_session(
        token=booking.token,
        evse=booking.evse,
        connector_id=booking.connector_id,
        reservation=use_reservation,
        booking=booking,
    )
    commands.command_send_after_commit(command)
    return command


def on_reservation_finished(event: events.CommandFinished) -> None:
    """The CPO answered a booking's RESERVE_NOW (accepted, refused, or no answer in time): a start the driver
    asked for meanwhile goes out now."""
    command = event.command
    if command.type != Command.Type.RESERVE_NOW or command.booking_id is None:
        return
    booking = Booking.objects.select_for_update().get(pk=command.booking_id)
    waiting = (
        booking.state == Booking.State.STARTING
        and not Command.objects.filter(booking=booking, type=Command.Type.START_SESSION).exists()
    )
    if waiting and not reservation_pending(booking):
        _start_now(booking)


def current_session(booking: Booking) -> ChargingSession | None:
    return booking.sessions.order_by("-start_date_time").first()


def booking_stop(booking: Booking) -> Command | None:
    """STOP_SESSION of the booking's session. A stop asked for before the CPO has reported the session (the
    driver changed their mind at once) is recorded (STOPPING, no command yet) and sent when the session
    arrives (on_session_changed). Returns the command sent now, or None when it waits for the session."""
    session = current_session(booking)
    with transaction.atomic():
        if session is None:
            _move(booking, Booking.State.STOPPING, (Booking.State.STARTING,))
            return None
        booking = _move(booking, Booking.State.STOPPING, (Booking.State.STARTING, Booking.State.CHARGING))
        command = commands.command_stop_session(session=session, booking=booking)
        commands.command_send_after_commit(command)
    return command


def booking_cancel(booking: Booking, *, reason: str = "", by_cpo: bool = False) -> Command | None:
    """Cancel: before charging, release the hold (CANCEL_RESERVATION at the CPO if it was reserved there);
    while charging, stop the session. Returns the command sent, if any."""
    with transaction.atomic():
        booking = Booking.objects.select_for_update().get(pk=booking.pk)
        if not booking.is_active:
            raise BookingStateError(f"booking {booking.order_id} is {booking.state}")
        command = None
        started = booking.state in (Booking.State.CHARGING, Booking.State.STOPPING, Booking.State.STARTING)
        session = current_session(booking) if started else None
        if session is not None:
            command = commands.command_stop_session(session=session, booking=booking)
        elif (
            booking.reservation
            and booking.reservation.status in (Reservation.Status.REQUESTED, Reservation.Status.RESERVED)
            and not by_cpo
        ):
            command = commands.command_cancel_reservation(reservation=booking.reservation, booking=booking)
        if booking.reservation:
            Reservation.objects.filter(pk=booking.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(
                status=Reservation.Status.CANCELLED
            )
        Booking.objects.filter(pk=booking.pk).update(
            state=Booking.State.CANCELLED, cancellation_reason=reason[:200], updated_at=timezone.now()
        )
        if command is not None:
            commands.command_send_after_commit(command)
        booking.refresh_from_db()
        events.publish(events.BookingCancelled(booking))
    return command


def cancellation_fee(booking: Booking, now: datetime | None = None) -> Decimal:
    """Our cancellation terms: free while only booked; once charging has been requested, the energy used
    is billed by the CDR (no extra fee)."""
    return Decimal("0")


# --- the CPO's side moves bookings on ----------------------------------------------------------------


def on_session_changed(session: ChargingSession) -> Booking | None:
    """Attach a session to its booking (via its START command) and follow its status."""
    booking = session.booking
    if booking is None:
        command = (
            Command.objects.filter(partner=session.partner, type=Command.Type.START_SESSION, booking__isnull=False)
            .filter(authorization_reference=session.authorization_reference)
            .select_related("booking")
            .first()
            if session.authorization_reference
            else None
        )
        if command is None:
            return None
        booking = command.booking
        ChargingSession.objects.filter(pk=session.pk).update(booking=booking)
    assert booking is not None
    if session.status in (ChargingSession.Status.ACTIVE, ChargingSession.Status.COMPLETED) and booking.reservation_id:
        # The driver is charging: the hold has done its job and must not block the EVSE any longer.
        Reservation.objects.filter(pk=booking.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(
            status=Reservation.Status.FULFILLED
        )
    if session.status == ChargingSession.Status.ACTIVE:
        Booking.objects.filter(pk=booking.pk, state__in=(Booking.State.CONFIRMED, Booking.State.STARTING)).update(
            state=Booking.State.CHARGING, updated_at=timezone.now()
        )
        stop_waiting = (
            Booking.objects.filter(pk=booking.pk, state=Booking.State.STOPPING).exists()
            and not Command.objects.filter(booking=booking, type=Command.Type.STOP_SESSION).exists()
        )
        if stop_waiting:  # the driver asked to stop before the session was reported: stop it now
            commands.command_send_after_commit(commands.command_stop_session(session=session, booking=booking))
    elif session.status in (ChargingSession.Status.COMPLETED, ChargingSession.Status.INVALID):
        Booking.objects.filter(pk=booking.pk, state__in=Booking.ACTIVE_STATES).update(
            state=Booking.State.COMPLETED, updated_at=timezone.now()
        )
    booking.refresh_from_db()
    return booking


def on_cdr(session: ChargingSession | None) -> Booking | None:
    if session is None or session.booking_id is None:
        return None
    Booking.objects.filter(pk=session.booking_id).exclude(state=Booking.State.CANCELLED).update(
        state=Booking.State.SETTLED, updated_at=timezone.now()
    )
    return Booking.objects.get(pk=session.booking_id)


def bookings_hit_by_evse_fault(evse_id: int) -> list[Booking]:
    """Bookings that have not started charging on an EVSE that just went out of order (they get cancelled
    with alternatives offered to the driver)."""
    return list(Booking.objects.filter(evse_id=evse_id, state=Booking.State.CONFIRMED))


def cancel_by_provider(booking: Booking, reason: str) -> None:
    booking_cancel(booking, reason=reason, by_cpo=True)
    events.publish(events.BookingCancelledByProvider(booking, reason))


def on_evse_status_changed(event: events.EvseStatusChanged) -> None:
    """A booked EVSE that fails cancels its bookings that have not started charging."""
    if event.new_status not in Evse.FAULT_STATUSES:
        return
    for booking in bookings_hit_by_evse_fault(event.evse_id):
        cancel_by_provider(booking, f"the charger went {event.new_status.lower().replace('_', ' ')}")


def on_reservation_cancelled_by_cpo(event: events.ReservationCancelledByCpo) -> None:
    """The CPO cancelled a reservation it had accepted: its booking is cancelled, the driver told why."""
    for booking in Booking.objects.filter(reservation=event.reservation, state=Booking.State.CONFIRMED):
        cancel_by_provider(booking, "the operator cancelled the reservation")
