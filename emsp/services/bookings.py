"""Bookings: a driver's charge at one connector from confirmation to settlement. Confirming holds the EVSE
for a time window — now and the next minutes, or a window the driver chose ahead (no two active holds may
overlap on one EVSE — an exclusion constraint on PostgreSQL, the single-writer lock on SQLite) — and reserves
it at the CPO when it is RESERVABLE, shortly before the window opens; starting and stopping send OCPI
commands; the CPO's session and CDR move the booking on. A driver who does not start in time is a no-show:
the hold ends (bookings_expire_no_shows); a reservation the CPO refuses ends the booking too."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from emsp import events
from emsp.models import Booking, ChargingSession, Command, Driver, Evse, Reservation, Token
from emsp.rows import first_where
from emsp.services import commands

HOLD = timedelta(minutes=15)  # how long a booking "for now" holds the EVSE for the driver to arrive
# Bookings that ended without a charge: cancelled before charging began, failed to start, a no-show.
ENDED_STATES = (Booking.State.CANCELLED, Booking.State.EXPIRED, Booking.State.FAILED)


def no_show_grace() -> timedelta:
    """How long after its window opens a booking waits for the driver's start before it is a no-show."""
    return timedelta(minutes=settings.BOOKING_NO_SHOW_GRACE_MINUTES)


def reserve_lead() -> timedelta:
    """How far ahead of a window RESERVE_NOW goes to the CPO (CPOs limit how far ahead they accept one)."""
    return timedelta(minutes=settings.BOOKING_RESERVE_LEAD_MINUTES)


class WindowRefused(ValueError):
    """A requested time window we don't book: in the past, too far ahead, too long, or empty."""


def window_check(start: datetime, end: datetime, now: datetime | None = None) -> tuple[datetime, datetime]:
    """A window a driver may book: it ends after it starts, has not ended, opens within BOOKING_MAX_AHEAD_DAYS
    and lasts at most BOOKING_MAX_WINDOW_MINUTES. A window already open is held from now."""
    now = now or timezone.now()
    if start.tzinfo is None or end.tzinfo is None:
        raise WindowRefused("the time range needs a time zone")
    if end <= start:
        raise WindowRefused("the time range must end after it starts")
    if end <= now:
        raise WindowRefused("the time range is over")
    if start > now + timedelta(days=settings.BOOKING_MAX_AHEAD_DAYS):
        raise WindowRefused(f"bookings open at most {settings.BOOKING_MAX_AHEAD_DAYS} days ahead")
    if end - start > timedelta(minutes=settings.BOOKING_MAX_WINDOW_MINUTES):
        raise WindowRefused(f"a booking lasts at most {settings.BOOKING_MAX_WINDOW_MINUTES} minutes")
    return max(start, now), end


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


_ACTIVE = [str(s) for s in Reservation.ACTIVE_STATUSES]
_OVERLAPPING = (
    f"t.evse_id = %s AND t.status IN ({', '.join(['%s'] * len(_ACTIVE))}) AND t.start_at < %s AND t.expiry_at > %s"
)


def active_hold(evse: Evse, start: datetime, end: datetime) -> Reservation | None:
    """The hold on `evse` overlapping [start, end) that ends first, if any (plain SQL: on every select)."""
    return first_where(Reservation, _OVERLAPPING, [evse.pk, *_ACTIVE, end, start], order="t.expiry_at")


def booking_confirm(
    *,
    evse: Evse,
    connector_id: str,
    token: Token,
    driver: Driver | None = None,
    quote_id: int | None = None,
    payment_reference: str = "",
    hold: timedelta = HOLD,
    window: tuple[datetime, datetime] | None = None,
    now: datetime | None = None,
    app_id: str = "",
    app_transaction_id: str = "",
) -> Booking:
    """Book a connector for `window` (default: now for `hold`): hold the EVSE for it (double booking is
    impossible, also under concurrent confirms), then RESERVE_NOW at the CPO when the EVSE is RESERVABLE —
    after commit when the window is near, else by the beat when it comes near (reservations_send_due).
    `app_id` and `app_transaction_id`: the consumer app and its journey ordering it (Booking.app_id)."""
    now = now or timezone.now()
    if evse.status in (Evse.Status.OUTOFORDER, Evse.Status.INOPERATIVE, Evse.Status.REMOVED, Evse.Status.PLANNED):
        raise EvseUnavailable(f"EVSE is {evse.status}")
    start, end = window_check(*window, now=now) if window else (now, now + hold)
    arrive_by = min(end, start + (no_show_grace() if window else hold))
    reserve_at = max(now, start - reserve_lead()) if evse.is_reservable else None
    reserve_now = reserve_at is not None and reserve_at <= now
    try:
        with transaction.atomic():
            # Lock the EVSE row: concurrent confirms for it queue here (PostgreSQL) and the exclusion
            # constraint backs this up; on SQLite the IMMEDIATE transaction serialises writers.
            Evse.objects.select_for_update().filter(pk=evse.pk).first()
            existing = active_hold(evse, start, end)
            if existing is not None:
                raise EvseUnavailable("EVSE already booked", available_from=existing.expiry_at)
            reservation = Reservation.objects.create(
                evse=evse,
                connector_id=connector_id,
                token=token,
                start_at=start,
                expiry_at=end,
                arrive_by=arrive_by,
                reserve_at=None if reserve_now else reserve_at,
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
                app_id=app_id,
                app_transaction_id=app_transaction_id,
            )
            if reserve_now:
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
    on the reservation when the CPO accepted it, without it otherwise (on_reservation_finished). A start is
    taken again while the booking is STARTING on starts the CPO refused only (start_refused). Returns the
    command sent now, or None when it waits for the reservation."""
    reservation = booking.reservation
    opens = reservation.start_at - timedelta(minutes=settings.BOOKING_EARLY_START_MINUTES) if reservation else None
    if opens is not None and timezone.now() < opens and booking.state == Booking.State.CONFIRMED:
        raise BookingStateError(
            f"booking {booking.order_id} is for {reservation.start_at:%Y-%m-%d %H:%M} UTC: "
            f"charging can start from {opens:%H:%M} UTC"
        )
    with transaction.atomic():
        locked = Booking.objects.select_for_update().get(pk=booking.pk)
        if start_refused(locked):
            # Again after the CPO refused the start (or it never left us): still STARTING, nothing started at the
            # charger. Locked: the booking checks end such a booking FAILED once it has waited (booking_checks.py
            # _start_outcome), and either that comes first or they find this start on its way.
            return _start_now(locked)
        booking = _move(booking, Booking.State.STARTING, (Booking.State.CONFIRMED,))
        if reservation_pending(booking):
            return None
        return _start_now(booking)


def _start_now(booking: Booking) -> Command:
    reservation = booking.reservation
    if reservation is not None and reservation.reserve_at is not None:
        # The driver is here before the reservation was due at the CPO: it will not be needed.
        Reservation.objects.filter(pk=reservation.pk).update(reserve_at=None)
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
    """The CPO answered a booking's RESERVE_NOW (accepted, refused, or no answer in time). A start the driver
    asked for meanwhile goes out now (on the reservation, or straight to the EVSE). A booking still waiting
    for its driver whose reservation the CPO refused, failed or left unanswered can't go ahead as booked: it
    is cancelled and the driver told why, with alternatives (a reservation of unknown outcome — our TIMEOUT, or
    the CPO's CommandResult TIMEOUT: the charge point did not answer it — is cancelled at the CPO too, in case it
    was made)."""
    command = event.command
    if command.type != Command.Type.RESERVE_NOW or command.booking_id is None:
        return
    booking = Booking.objects.select_for_update().get(pk=command.booking_id)
    waiting = booking.state == Booking.State.STARTING and not _start_sent(booking)
    if waiting and not reservation_pending(booking):
        _start_now(booking)
    elif booking.state == Booking.State.CONFIRMED and command.status != Command.Status.SUCCEEDED:
        if commands.reservation_outcome_unknown(command) and command.reservation is not None:
            commands.command_send_after_commit(
                commands.command_cancel_reservation(reservation=command.reservation, booking=booking)
            )
        cancel_by_provider(booking, reservation_refusal(command), code=RESERVATION_REFUSED)


def reservation_refusal(command: Command) -> str:
    """Why a RESERVE_NOW did not reserve, in words a driver can read."""
    if command.status == Command.Status.TIMEOUT:
        return "the operator did not confirm the reservation in time"
    if commands.refused_by_us(command):
        return "the driver's token may not charge now (blocked, expired or out of credit): nothing was reserved"
    answer = command.result_type or command.response_result or ""
    detail = {
        "REJECTED": "refused it",
        "OCCUPIED": "reports the charger occupied",
        "FAULTED": "reports the charger faulted",
        "NOT_SUPPORTED": "does not take reservations for this charger",
        "UNKNOWN_SESSION": "did not recognise it",
        "EVSE_OCCUPIED": "reports the charger occupied",
        "EVSE_INOPERATIVE": "reports the charger out of order",
        "TIMEOUT": "reports that the charger did not answer",
        "FAILED": "could not make it",
    }.get(answer.upper(), f"answered {answer}" if answer else "could not be reached")
    return f"the operator did not accept the reservation: it {detail}"


def _start_sent(booking: Booking) -> bool:
    return Command.objects.filter(booking=booking, type=Command.Type.START_SESSION).exists()


def _start_standing(booking: Booking) -> bool:
    """Is a START_SESSION of the booking on its way, accepted or of unknown outcome (TIMEOUT: a session may still
    come)? Not one that FAILED: the CPO refused it (REJECTED, EVSE_OCCUPIED, …) or it never left us. A CommandResult
    TIMEOUT is recorded FAILED (commands.command_result_received) but is no refusal: the charge point did not answer
    the CPO in time, and may still start (a cancel then taken for nothing started had left a late session running
    with its hold released)."""
    return (
        Command.objects.filter(booking=booking, type=Command.Type.START_SESSION)
        .filter(~Q(status=Command.Status.FAILED) | Q(result_type="TIMEOUT"))
        .exists()
    )


def start_refused(booking: Booking, now: datetime | None = None) -> bool:
    """Is the booking STARTING on refused starts only (each START_SESSION FAILED), with no session, and its hold
    not yet over? Nothing was started at the charger: the driver may start again, and a cancel ends the booking at
    once. Not once the reservation's window has ended: the EVSE may be another driver's booking by then (each
    refused retry had also put off the booking checks' end of it)."""
    if booking.state != Booking.State.STARTING:
        return False
    reservation = booking.reservation
    if reservation is not None and (now or timezone.now()) >= reservation.expiry_at:
        return False
    return _start_sent(booking) and not _start_standing(booking) and not charges(booking).exists()


def _charge_begun(booking: Booking) -> bool:
    """Has charging been asked of the CPO: a session reported, or a START_SESSION standing (not refused)?"""
    if booking.state in (Booking.State.CHARGING, Booking.State.STOPPING):
        return True
    return booking.state == Booking.State.STARTING and (_start_standing(booking) or charges(booking).exists())


def current_session(booking: Booking) -> ChargingSession | None:
    return charges(booking).order_by("-start_date_time").first()


# --- the CPO's Session of a reservation ---------------------------------------------------------------------

# Our mark in a session's data (sessions.OUR_MARKS, set by sessions._apply): the session has only held a
# reservation. The session's status says so only while it is RESERVATION; COMPLETED, it may have charged.
HELD_ONLY = "held_reservation_only"


def only_held_reservation(session: ChargingSession) -> bool:
    """Has this session only held a reservation, no charge? A successful RESERVE_NOW makes the CPO create a Session
    (mod_commands §ReserveNow), status RESERVATION, carrying the RESERVE_NOW's authorization_reference, which a
    START_SESSION on the reservation repeats; "when a reservation does not result in a charging session" it is set
    COMPLETED (mod_sessions). Tied to the booking as its charge, it had kept a driver whose start was refused from
    starting again or cancelling (a STOP_SESSION of the reservation went instead), and its completion completed the
    booking unused. Marked (HELD_ONLY) while it is RESERVATION and then as long as it is COMPLETED or INVALID without
    having been PENDING or ACTIVE or drawn energy (sessions._apply); the same Session going on to charge (the
    spec's path when the driver starts on the reservation) is the charge from then on. Status RESERVATION also for
    a session stored before the mark was."""
    return session.status == ChargingSession.Status.RESERVATION or HELD_ONLY in (session.data or {})


def holding_reservation_only() -> Q:
    """The sessions `only_held_reservation` tells, as a query."""
    return Q(status=ChargingSession.Status.RESERVATION) | Q(data__has_key=HELD_ONLY)


def charges(booking: Booking) -> QuerySet[ChargingSession]:
    """The booking's sessions that are its charge: not one that only held its reservation (none is tied to it, see
    on_session_changed; one tied before that was is left out here)."""
    return booking.sessions.exclude(holding_reservation_only())


def booking_stop(booking: Booking) -> Command | None:
    """STOP_SESSION of the booking's session. A stop asked for before the CPO has reported the session (the
    driver changed their mind at once) is recorded (STOPPING, no command yet) and sent when the session
    arrives (on_session_changed). A stop before any start went out (the start was waiting for the CPO's answer
    to the reservation), or after the CPO refused the start, cancels the booking: nothing was started. Returns the
    command sent now, or None.

    The booking is locked before its session and state are read, as booking_cancel (and a start) lock it: a CPO's PUT
    of the session ACTIVE holds the booking's row (on_session_changed) until it commits, and a stop at that moment
    waits for it, then finds the session and the booking CHARGING. Read before the lock, the session was not there
    yet, the stop waited to move a STARTING booking that was CHARGING by then, and was refused: the charge went on."""
    with transaction.atomic():
        booking = Booking.objects.select_for_update().get(pk=booking.pk)
        session = current_session(booking)
        if session is None and booking.state == Booking.State.STARTING and not _start_standing(booking):
            # Still waiting for the CPO's answer to the reservation, or the CPO refused the start: nothing was
            # started, so nothing to stop.
            booking_cancel(booking, reason="stopped before charging started")
            return None
        if session is None:
            _move(booking, Booking.State.STOPPING, (Booking.State.STARTING,))
            return None
        booking = _move(booking, Booking.State.STOPPING, (Booking.State.STARTING, Booking.State.CHARGING))
        command = commands.command_stop_session(session=session, booking=booking)
        commands.command_send_after_commit(command)
    return command


def booking_cancel(booking: Booking, *, reason: str = "", by_cpo: bool = False) -> Command | None:
    """Cancel: before charging, release the hold (CANCEL_RESERVATION at the CPO if it was reserved there) and
    end the booking CANCELLED. Once a start has gone to the CPO (one it refused does not count: nothing started),
    a driver's cancel is a stop (the RFC's flow: cancel → STOP_SESSION, then the CDR bills what was charged): the
    booking stays active, STOPPING, until the CPO ends the session, with STOP_SESSION sent now or when the session
    is reported, and retried by the booking checks, as for an `update` stop; the reason is kept. Returns the
    command sent, if any."""
    with transaction.atomic():
        booking = Booking.objects.select_for_update().get(pk=booking.pk)
        if not booking.is_active:
            raise BookingStateError(f"booking {booking.order_id} is {booking.state}")
        if not by_cpo and _charge_begun(booking):
            Booking.objects.filter(pk=booking.pk).update(cancellation_reason=reason[:200])
            if booking.state == Booking.State.STOPPING:
                return None  # already being stopped
            return booking_stop(booking)
        command = None
        started = booking.state in (Booking.State.CHARGING, Booking.State.STOPPING, Booking.State.STARTING)
        session = current_session(booking) if started else None
        if session is not None:
            command = commands.command_stop_session(session=session, booking=booking)
        elif booking.reservation and _reserved_at_cpo(booking.reservation) and not by_cpo:
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


def _reserved_at_cpo(reservation: Reservation) -> bool:
    """May the CPO hold this reservation: reserved or asked for there, or its RESERVE_NOW on the way (a cancel
    then may come before the reservation is made: the CPO answers UNKNOWN_RESERVATION, and the booking checks
    cancel again once it is). A RESERVE_NOW still QUEUED is not sent once its booking has ended (command_send)."""
    if reservation.status in (Reservation.Status.REQUESTED, Reservation.Status.RESERVED):
        return True
    return Command.objects.filter(
        reservation=reservation,
        type=Command.Type.RESERVE_NOW,
        status__in=(Command.Status.SENT, Command.Status.ACCEPTED),
    ).exists()


def cancellation_fee(booking: Booking, now: datetime | None = None) -> Decimal:
    """Our cancellation terms: free while only booked; once charging has been requested, the energy used
    is billed by the CDR (no extra fee)."""
    return Decimal("0")


# --- the CPO's side moves bookings on ----------------------------------------------------------------


def on_session_changed(session: ChargingSession) -> Booking | None:
    """Attach a session to its booking (via its START command) and follow its status. A session charging on a
    booking that had ended is stopped (_late_session). One that has only held the booking's reservation is not its
    charge (`only_held_reservation`): neither tied to it nor followed (the CPO ending it unused completes nothing,
    fulfils no reservation); it is once it goes on to charge."""
    if only_held_reservation(session):
        return None
    booking = session.booking
    if booking is None:
        started = commands.commands_of_reference(
            session.partner_id,
            session.authorization_reference,
            country_code=session.country_code,
            party_id=session.party_id,
        )
        command = next((c for c in started if c.booking_id is not None), None)
        if command is None:
            return None
        booking = command.booking
        ChargingSession.objects.filter(pk=session.pk).update(booking=booking)
    assert booking is not None
    if session.status in (ChargingSession.Status.ACTIVE, ChargingSession.Status.COMPLETED) and booking.reservation_id:
        reservation_fulfilled(booking.reservation_id, booking_id=booking.pk)
    if session.status == ChargingSession.Status.ACTIVE:
        Booking.objects.filter(pk=booking.pk, state__in=(Booking.State.CONFIRMED, Booking.State.STARTING)).update(
            state=Booking.State.CHARGING, updated_at=timezone.now()
        )
        stop_waiting = (
            Booking.objects.filter(pk=booking.pk, state=Booking.State.STOPPING).exists()
            and not Command.objects.filter(booking=booking, type=Command.Type.STOP_SESSION).exists()
        )
        # The driver asked to stop before the session was reported, or it charges on a booking that had ended:
        # stop it now.
        if stop_waiting or _late_session(booking, session):
            commands.command_send_after_commit(commands.command_stop_session(session=session, booking=booking))
    elif session.status in (ChargingSession.Status.COMPLETED, ChargingSession.Status.INVALID):
        Booking.objects.filter(pk=booking.pk, state__in=Booking.ACTIVE_STATES).update(
            state=Booking.State.COMPLETED, updated_at=timezone.now()
        )
    booking.refresh_from_db()
    return booking


def reservation_fulfilled(reservation_id: int, *, booking_id: int | None = None) -> None:
    """The driver is charging on the reservation (a session ACTIVE or COMPLETED): the hold has done its job and must
    not block the EVSE any longer (FULFILLED). Its booking is locked first (and `booking_id`'s, the session's, where
    another): one lock order, the booking before its reservation, as a cancel, a start and the no-show sweep take
    them, and a CDR's session made of it (billing/services/audit.py `_session_made`). The reservation first had
    deadlocked a driver's cancel with the CPO's PUT of the session. One read (and no lock) for a reservation
    fulfilled already: the CPO PATCHes an ACTIVE session every minute or so."""
    active = Reservation.objects.filter(pk=reservation_id, status__in=Reservation.ACTIVE_STATUSES)
    if not active.exists():
        return
    ours = Q(reservation_id=reservation_id) | (Q(pk=booking_id) if booking_id is not None else Q(pk__in=[]))
    _bookings_locked(ours)
    active.update(status=Reservation.Status.FULFILLED)


def _bookings_locked(which: Q) -> None:
    """Lock these bookings (by id, one order) until the transaction ends, as an UPDATE of them would (NO KEY
    UPDATE: the rows that refer to a booking, a command or payment inserted, hold KEY SHARE locks on it, which FOR
    UPDATE would wait for). Before their reservation is touched: see `reservation_fulfilled`."""
    list(Booking.objects.select_for_update(no_key=True).filter(which).order_by("pk").values_list("pk", flat=True))


def _late_session(booking: Booking, session: ChargingSession) -> bool:
    """Is `session` charging on a booking that had ended without a charge, and not yet asked to stop? A start
    whose answer was lost (a 502: recorded FAILED) that the charger carried out after all, after the driver's
    cancel, the booking checks' end (FAILED) or a no-show (EXPIRED): the hold and the payment hold are released
    and the app heard the order end, so nobody would pay for it. Stopped once per session (the CPO PATCHes an
    ACTIVE session every minute); a stop the CPO refused or left unanswered is sent once more by the booking
    checks, as for a booking STOPPING, which list the session for staff (session_after_end)."""
    if not Booking.objects.filter(pk=booking.pk, state__in=ENDED_STATES).exists():
        return False
    # Only a charge one of the booking's own starts began: a session linked to it otherwise (the driver's card
    # at the booked EVSE, linked by the booking checks) is the driver's own charge, not ours to stop.
    ours = commands.commands_of_reference(
        session.partner_id,
        session.authorization_reference,
        country_code=session.country_code,
        party_id=session.party_id,
    )
    if not any(c.booking_id == booking.pk for c in ours):
        return False
    return not Command.objects.filter(session=session, type=Command.Type.STOP_SESSION).exists()


def on_cdr(session: ChargingSession | None) -> Booking | None:
    """The CDR settles the booking of the charge it bills, and returns it for the app to hear the final bill
    (BookingSettled); also a booking settled already (a CDR that replaces a voided one is the new final bill).
    A booking that had ended without a charge (CANCELLED, EXPIRED, FAILED) keeps its state: settling it had closed
    the staff finding that lists its late session (booking_checks session_after_end) as gone. Its charge is still
    the driver's, billed as any (billing/services/payments.py collects it with a payment of its own when the hold
    was released), and the app hears that bill: an app that collects from its driver could not otherwise."""
    if session is None or session.booking_id is None:
        return None
    Booking.objects.filter(pk=session.booking_id, state__in=(*Booking.ACTIVE_STATES, Booking.State.COMPLETED)).update(
        state=Booking.State.SETTLED, updated_at=timezone.now()
    )
    return Booking.objects.filter(pk=session.booking_id, state__in=(Booking.State.SETTLED, *ENDED_STATES)).first()


def bookings_hit_by_evse_fault(evse_id: int) -> list[Booking]:
    """Bookings that have not started charging on an EVSE that just went out of order (they get cancelled
    with alternatives offered to the driver)."""
    return list(Booking.objects.filter(evse_id=evse_id, state=Booking.State.CONFIRMED))


# Why the operator's side ended a booking (the Beckn on_cancel reason code).
CHARGER_FAULT = "charger-error"
RESERVATION_REFUSED = "reservation-refused"
OPERATOR_CANCELLED = "operator-cancelled"
NO_SHOW = "no-show"


def cancel_by_provider(booking: Booking, reason: str, *, code: str = CHARGER_FAULT) -> None:
    booking_cancel(booking, reason=reason, by_cpo=True)
    events.publish(events.BookingCancelledByProvider(booking, reason, code))


def on_evse_status_changed(event: events.EvseStatusChanged) -> None:
    """A booked EVSE that fails cancels its bookings that have not started charging."""
    if event.new_status not in Evse.FAULT_STATUSES:
        return
    for booking in bookings_hit_by_evse_fault(event.evse_id):
        cancel_by_provider(booking, f"the charger went {event.new_status.lower().replace('_', ' ')}")


def on_reservation_cancelled_by_cpo(event: events.ReservationCancelledByCpo) -> None:
    """The CPO cancelled a reservation it had accepted: a booking still waiting for its driver is cancelled, the
    driver told why (once: a repeated CANCELED_RESERVATION finds it cancelled). A driver who asked to start while
    the reservation's result was awaited (walk-up) is not left waiting: the start goes straight to the EVSE (sent by
    on_reservation_finished when the cancel finished the RESERVE_NOW; here if it has not gone yet). Locked, as a
    start locks the booking: a start at the same moment either comes first (and is seen STARTING) or finds the
    booking cancelled."""
    waiting = (
        Booking.objects.select_for_update()
        .filter(reservation=event.reservation, state__in=(Booking.State.CONFIRMED, Booking.State.STARTING))
        .order_by("pk")
    )
    for booking in waiting:
        if booking.state == Booking.State.CONFIRMED:
            cancel_by_provider(booking, "the operator cancelled the reservation", code=OPERATOR_CANCELLED)
        elif not _start_sent(booking) and not reservation_pending(booking):
            _start_now(booking)


# --- the clock moves bookings on (beat sweeps) ------------------------------------------------------------


def reservations_send_due(now: datetime | None = None) -> int:
    """RESERVE_NOW for windows booked ahead that are now near enough for the CPO. Each reservation is
    claimed once (its reserve_at cleared in the same statement), so a sweep run twice sends nothing twice.
    Only while the driver may still come (before arrive_by): after a beat outage a window whose arrive-by time
    has passed is not reserved at the CPO any more (a reservation made then would hold the charger for a
    driver who is a no-show already, or be refused for an expiry in the past and told to the app as the
    operator's refusal); the no-show sweep ends it as any other no-show (its reserve_at cleared with it)."""
    now = now or timezone.now()
    sent = 0
    due = Reservation.objects.filter(reserve_at__lte=now, status=Reservation.Status.HELD).filter(
        Q(arrive_by__gt=now) | Q(arrive_by__isnull=True, expiry_at__gt=now)
    )
    for reservation in due.select_related("evse__location__partner", "token")[:500]:
        with transaction.atomic():
            # The booking before its reservation (`reservation_fulfilled`): claimed first, the reservation had
            # deadlocked a cancel of the booking, which waits for it while this waits to refer to the booking.
            booking = (
                reservation.bookings.select_for_update(no_key=True)
                .filter(state=Booking.State.CONFIRMED)
                .order_by("pk")
                .first()
            )
            if not Reservation.objects.filter(pk=reservation.pk, reserve_at__isnull=False).update(reserve_at=None):
                continue
            if booking is None or not reservation.evse.is_reservable:
                continue  # cancelled, started, or no longer reservable at the CPO: our own hold stays
            commands.command_send_after_commit(commands.command_reserve_now(reservation=reservation, booking=booking))
            sent += 1
    return sent


# A booking whose driver has asked to start: its reservation is the one the start uses at the CPO.
_STARTED = (Booking.State.STARTING, Booking.State.CHARGING, Booking.State.STOPPING)


def _started_on() -> Q:
    """Reservations a driver started on in time (before the session is reported, which marks them FULFILLED):
    their booking has left CONFIRMED for a start, or a START_SESSION of a standing booking refers to them, or a
    session is linked to their booking that has not begun charging (the driver's card at the booked EVSE, the
    car plugged in: PENDING), which an expiry would have ended and its charge then stopped as a late one."""
    # Correlated (EXISTS on the foreign keys' indexes): looked up for the few reservations due, not listed whole.
    started = Booking.objects.filter(reservation=OuterRef("pk"), state__in=_STARTED)
    referred = Command.objects.filter(
        reservation=OuterRef("pk"), type=Command.Type.START_SESSION, booking__state__in=Booking.ACTIVE_STATES
    )
    plugged_in = ChargingSession.objects.filter(
        booking__reservation=OuterRef("pk"),
        booking__state__in=Booking.ACTIVE_STATES,
        status__in=(ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE),
    )
    # The same, not yet tied to the booking: the session names the reservation (the RESERVE_NOW's
    # authorization_reference) and the booking checks link it on their next run (sooner skipped while the CPO's
    # change of it holds its row). Expired meanwhile, the driver plugged in had been told "no-show" and their hold
    # cancelled at the CPO.
    plugged_in_unlinked = ChargingSession.objects.filter(
        reservation=OuterRef("pk"),
        booking__isnull=True,
        status__in=(ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE),
    )
    return Q(Exists(started)) | Q(Exists(referred)) | Q(Exists(plugged_in)) | Q(Exists(plugged_in_unlinked))


def bookings_expire_no_shows(now: datetime | None = None) -> int:
    """Bookings whose driver did not start charging by the hold's arrive-by time: the booking ends EXPIRED,
    the hold is released (CANCEL_RESERVATION at the CPO when it was reserved there), the payment hold
    released, and the driver's app told (on_cancel, reason no-show). A driver who started in time is no
    no-show, though the session is not reported yet: the reservation is what the start uses at the CPO, and
    the hold stays until the session marks it FULFILLED (a start that never becomes a session ends the
    booking, and the hold, through the booking checks). Safe to run twice: compare-and-set, with the booking
    locked, so that a start at the same moment either comes first (and is seen) or finds the booking EXPIRED."""
    now = now or timezone.now()
    due = (
        Reservation.objects.filter(status__in=Reservation.ACTIVE_STATUSES)
        .filter(Q(arrive_by__lt=now) | Q(arrive_by__isnull=True, expiry_at__lt=now))
        .exclude(_started_on())
    )
    expired = 0
    for reservation in due.select_related("evse__location__partner")[:500]:
        with transaction.atomic():
            booking = reservation.bookings.select_for_update().order_by("pk").first()
            if Reservation.objects.filter(pk=reservation.pk).filter(_started_on()).exists():
                continue  # the driver started meanwhile
            at_cpo = reservation.status in (Reservation.Status.REQUESTED, Reservation.Status.RESERVED)
            if not Reservation.objects.filter(pk=reservation.pk, status=reservation.status).update(
                status=Reservation.Status.EXPIRED, reserve_at=None
            ):
                continue  # moved meanwhile (a start, a cancel)
            if at_cpo:
                commands.command_send_after_commit(
                    commands.command_cancel_reservation(reservation=reservation, booking=booking)
                )
            if booking is None or not Booking.objects.filter(pk=booking.pk, state=Booking.State.CONFIRMED).update(
                state=Booking.State.EXPIRED,
                cancellation_reason="no-show: charging did not start in time",
                updated_at=now,
            ):
                continue
            booking.refresh_from_db()
            events.publish(events.BookingCancelled(booking))  # the payment hold is released
            deadline = reservation.arrive_by or reservation.expiry_at
            events.publish(
                events.BookingCancelledByProvider(
                    booking, f"charging did not start by {deadline:%Y-%m-%d %H:%M} UTC: the hold has ended", NO_SHOW
                )
            )
            expired += 1
    return expired
