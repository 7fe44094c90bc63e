"""Reconciliation of bookings with the CPO's side (RFC §11.7.3, "status reconciliation" between the Beckn order
and the OCPI reservation, commands and session). Pushes and command results move bookings on; this periodic
check is the safety net for what they miss — a lost push or CommandResult, a worker stopped between two steps,
a session the CPO tied to something else. It compares each open booking with what we hold of the CPO's state,
reads the CPO's lists again through the port where a push may have been lost, repairs what it safely can
through the normal paths (the driver's app hears of each change as it hears of any other), and lists the rest
for staff as BookingCheck findings. What is compared, repaired and listed: docs/architecture.md,
"Reconciliation"."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from emsp import events
from emsp.models import Booking, BookingCheck, ChargingSession, Command, Partner, Reservation
from emsp.ports import cpo_gateway
from emsp.services import bookings, commands

log = logging.getLogger(__name__)

Kind = BookingCheck.Kind

QUEUED_GRACE = timedelta(seconds=60)  # a command still QUEUED this long lost its send task
PULL_EVERY = timedelta(minutes=15)  # one booking's list is read again at most this often (unless staff ask)
PULL_OVERLAP = timedelta(minutes=5)  # the CPO's clock and commit times differ from ours
ENDED_LOOKBACK = timedelta(days=1)  # ended bookings are looked at this long (a late session, a held charger)
MAX_CANCELS = 2  # CANCEL_RESERVATION tries for a booking's reservation (the first, and one more by the check)
MAX_STOPS = 2  # STOP_SESSION tries for a session the driver asked to stop
ENDED_STATES = bookings.ENDED_STATES
LINKABLE = (ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE, ChargingSession.Status.COMPLETED)
IN_FLIGHT = (Command.Status.QUEUED, Command.Status.SENT, Command.Status.ACCEPTED)
RUN_LOCK = "booking-checks:running"


def wait() -> timedelta:
    """How long a session (or its end) may take after the CPO answered a command before we ask again."""
    return timedelta(minutes=settings.BOOKING_CHECK_WAIT_MINUTES)


def give_up() -> timedelta:
    """How long after an accepted or timed-out start a booking without a session ends FAILED."""
    return timedelta(minutes=settings.BOOKING_CHECK_GIVE_UP_MINUTES)


def cdr_wait() -> timedelta:
    return timedelta(hours=settings.BOOKING_CHECK_CDR_WAIT_HOURS)


@dataclass
class Problem:
    """One mismatch: repaired by `repair` (compare-and-set; returns what it did, or None when the booking had
    moved on meanwhile), or listed for staff. `pull` asks for the CPO's list (module, since) to be read first."""

    kind: str
    detail: str
    repair: Callable[[], str | None] | None = None
    pull: tuple[str, datetime] | None = None


@dataclass
class Pulls:
    """The CPO lists read during one run, by (partner id, module): from which `since`, and whether the CPO
    answered. A list read from an earlier `since` covers a later one, so one run reads each at most once per
    partner for all its bookings; one booking's list is read again only every PULL_EVERY unless `force`."""

    force: bool = False
    done: dict[tuple[int, str], tuple[datetime, bool]] = field(default_factory=dict)

    def answered(self, partner: Partner, module: str, since: datetime) -> bool | None:
        got = self.done.get((partner.pk, module))
        if got is None or got[0] > since:
            return None
        return got[1]

    def read(self, booking: Booking, problem: Problem, partner: Partner) -> None:
        assert problem.pull is not None
        module, since = problem.pull
        if self.answered(partner, module, since) is not None:
            return
        key = f"booking-checks:pulled:{booking.pk}:{problem.kind}"
        if not cache.add(key, 1, timeout=int(PULL_EVERY.total_seconds())) and not self.force:
            return
        answered = False
        if partner.state == Partner.State.CONNECTED:
            try:
                answered = cpo_gateway().pull(partner, module, since=since)
            except Exception:  # a pull that breaks must not stop the check of every other booking
                log.warning("booking check: pulling %s of %s failed", module, partner, exc_info=True)
        self.done[(partner.pk, module)] = (since, answered)


# --- the run --------------------------------------------------------------------------------------------------


def bookings_to_check(now: datetime) -> list[int]:
    """Every open booking, those completed (waiting for their CDR), those ended lately or whose reservation
    may still hold the charger, and every booking with an open finding (to close it when it is gone)."""
    open_findings = BookingCheck.objects.filter(resolved_at__isnull=True).values("booking_id")
    query = (
        Q(state__in=(*Booking.ACTIVE_STATES, Booking.State.COMPLETED))
        | Q(state__in=ENDED_STATES, updated_at__gte=now - ENDED_LOOKBACK)
        | Q(state__in=ENDED_STATES, reservation__expiry_at__gt=now)
        | Q(pk__in=open_findings)
    )
    return list(Booking.objects.filter(query).order_by("pk").values_list("pk", flat=True).distinct())


def bookings_reconcile(*, now: datetime | None = None) -> dict[str, int]:
    """Check every booking that may disagree with its CPO (beat, every BOOKING_CHECK_INTERVAL_SECONDS). Safe to
    run twice: repairs are compare-and-set, findings one open row per booking and kind; a second run started
    while one is going returns at once."""
    now = now or timezone.now()
    lease = max(60, settings.BOOKING_CHECK_INTERVAL_SECONDS * 5)
    if not cache.add(RUN_LOCK, 1, timeout=lease):
        return {"skipped": 1}
    counts: Counter[str] = Counter()
    try:
        pulls = Pulls()
        for booking_id in bookings_to_check(now):
            counts["checked"] += 1
            try:
                checks = booking_reconcile(booking=booking_id, now=now, pulls=pulls)
            except Exception:
                counts["errors"] += 1
                log.exception("booking check of booking %s failed", booking_id)
                continue
            for check in checks:
                counts["repaired" if check.repaired else "open" if check.is_open else "gone"] += 1
    finally:
        cache.delete(RUN_LOCK)
    return dict(counts)


def booking_reconcile(
    *, booking: Booking | int, now: datetime | None = None, pulls: Pulls | None = None, force_pull: bool = False
) -> list[BookingCheck]:
    """Check one booking: compare, read the CPO's lists where that is due, then — with the booking locked —
    compare again, repair, and record what was found. Returns the findings written (opened, seen again,
    repaired, or closed as gone)."""
    now = now or timezone.now()
    pulls = pulls if pulls is not None else Pulls(force=force_pull)
    booking_id = booking if isinstance(booking, int) else booking.pk
    current = Booking.objects.select_related("evse__location__partner", "reservation").get(pk=booking_id)
    partner = current.evse.location.partner
    before = _assess(current, now, pulls)
    for problem in before:
        if problem.pull is not None:
            pulls.read(current, problem, partner)  # outside the transaction: a pull is I/O, and stores through
            # the normal paths (a missed session moves its booking on and the app hears on_status)
    with transaction.atomic():
        locked = (
            Booking.objects.select_for_update(of=("self",))
            .select_related("evse__location__partner", "reservation")
            .get(pk=booking_id)
        )
        after = _assess(locked, now, pulls)
        return _record(locked, before, after, pulls, partner, now)


# --- comparing ------------------------------------------------------------------------------------------------


def _assess(booking: Booking, now: datetime, pulls: Pulls) -> list[Problem]:
    """What disagrees, for one booking. Reads only: repairs are closures run by `_record`."""
    sent = list(Command.objects.filter(booking=booking).order_by("created_at", "pk"))
    problems = _stuck_commands(booking, sent, now)
    if booking.state in Booking.ACTIVE_STATES:
        problems += _active(booking, sent, now, pulls)
    elif booking.state == Booking.State.COMPLETED:
        problems += _completed(booking, now)
    elif booking.state in ENDED_STATES:
        problems += _ended(booking, sent, now)
    return problems


def _last(sent: list[Command], command_type: str) -> Command | None:
    of_type = [c for c in sent if c.type == command_type]
    return of_type[-1] if of_type else None


def _ago(now: datetime, then: datetime) -> str:
    return f"{max(0, int((now - then).total_seconds() // 60))} min ago"


def _stuck_commands(booking: Booking, sent: list[Command], now: datetime) -> list[Problem]:
    """Commands still QUEUED: their send task was lost (a broker or worker restart) — SENT and ACCEPTED ones
    are the commands' own sweep's (commands_expire_due). Sent once more (sending claims the row, so a send
    that was only slow is not repeated); still QUEUED after that, listed. A start or reservation of a booking
    that has ended is not sent any more."""
    problems = []
    for command in sent:
        if command.status != Command.Status.QUEUED or command.created_at > now - QUEUED_GRACE:
            continue
        if not booking.is_active and command.type in (Command.Type.START_SESSION, Command.Type.RESERVE_NOW):
            continue
        detail = f"{command.type} {command.uid} QUEUED since {_ago(now, command.created_at)}, never sent"
        if cache.get(_requeued_key(command)) is None:
            problems.append(Problem(Kind.COMMAND_STUCK, detail, repair=partial(_requeue, command.pk)))
        elif command.created_at <= now - wait():
            problems.append(Problem(Kind.COMMAND_STUCK, f"{detail} (queued again, still not sent)"))
    return problems


def _active(booking: Booking, sent: list[Command], now: datetime, pulls: Pulls) -> list[Problem]:
    session = bookings.current_session(booking)
    if session is None:
        found = _unlinked_sessions(booking, now)
        if len(found) == 1:
            detail = (
                f"session {found[0].session_id} ({found[0].status}) of the booking's token at its EVSE, "
                f"not linked (authorization_reference {found[0].authorization_reference or 'none'!r})"
            )
            return [Problem(Kind.SESSION_UNLINKED, detail, repair=partial(_link, booking.pk, found[0].pk))]
        if found:
            names = ", ".join(s.session_id for s in found)
            return [Problem(Kind.SESSION_AMBIGUOUS, f"sessions {names} could each be this booking's")]
        if booking.state in (Booking.State.STARTING, Booking.State.STOPPING):
            return _start_outcome(booking, sent, now, pulls)
        return []
    behind = _behind(booking, session, sent)
    if behind:
        return [Problem(Kind.BOOKING_BEHIND_SESSION, behind, repair=partial(_follow, booking.pk, session.pk))]
    if booking.state == Booking.State.STOPPING and session.status == ChargingSession.Status.ACTIVE:
        return _stop_outcome(booking, session, [c for c in sent if c.type == Command.Type.STOP_SESSION], now)
    return []


def _unlinked_sessions(booking: Booking, now: datetime) -> list[ChargingSession]:
    """Sessions no booking holds that are this booking's by their facts, whatever authorization_reference the
    CPO used: on its reservation, or of its token at its EVSE within its window (a start at the charger with
    the driver's card, a CPO that made up its own reference). Not the CPO's Session of the reservation while it
    has only held it (bookings.only_held_reservation: COMPLETED once the reservation ends unused): no charge, and
    on an ended booking none after its end."""
    reservation = booking.reservation
    start = reservation.start_at if reservation else booking.created_at
    end = reservation.expiry_at if reservation else now
    query = Q(pk__in=[])
    if booking.token_id is not None:
        query |= Q(
            token_id=booking.token_id,
            evse_id=booking.evse_id,
            start_date_time__gte=start - timedelta(minutes=settings.BOOKING_EARLY_START_MINUTES),
            start_date_time__lte=end,
        )
    if reservation is not None:
        query |= Q(reservation_id=reservation.pk)
    return list(
        ChargingSession.objects.filter(booking__isnull=True, partner=booking.evse.location.partner, status__in=LINKABLE)
        .filter(query)
        .exclude(bookings.holding_reservation_only())
        .order_by("start_date_time")[:5]
    )


def _behind(booking: Booking, session: ChargingSession, sent: list[Command]) -> str:
    """Why the booking does not reflect its session, or "" when it does."""
    status = session.status
    if status == ChargingSession.Status.ACTIVE and booking.state in (Booking.State.CONFIRMED, Booking.State.STARTING):
        return f"session {session.session_id} is ACTIVE, the booking {booking.state}"
    if status in (ChargingSession.Status.COMPLETED, ChargingSession.Status.INVALID):
        return f"session {session.session_id} is {status}, the booking {booking.state}"
    if (
        status == ChargingSession.Status.ACTIVE
        and booking.state == Booking.State.STOPPING
        and _last(sent, Command.Type.STOP_SESSION) is None
    ):
        return f"the driver asked to stop, session {session.session_id} is ACTIVE and no STOP_SESSION was sent"
    return ""


def _start_outcome(booking: Booking, sent: list[Command], now: datetime, pulls: Pulls) -> list[Problem]:
    """A booking that asked to start and has no session: what became of the start."""
    start = _last(sent, Command.Type.START_SESSION)
    if start is None:
        if bookings.reservation_pending(booking) or booking.updated_at > now - wait():
            return []
        reserve = _last(sent, Command.Type.RESERVE_NOW)
        detail = f"the driver asked to start {_ago(now, booking.updated_at)}; no START_SESSION was sent"
        if booking.state == Booking.State.STARTING and reserve is not None and reserve.status in Command.FINAL_STATUSES:
            # The reservation's answer came, and the start waiting for it was lost on the way.
            repair = partial(_replay_reservation_answer, reserve.pk)
            return [Problem(Kind.START_NOT_SENT, f"{detail} after RESERVE_NOW {reserve.status}", repair=repair)]
        return [Problem(Kind.START_NOT_SENT, detail)]
    if start.status not in Command.FINAL_STATUSES:
        return []  # on its way; a missing answer is timed out by commands_expire_due
    age = now - start.updated_at
    if age < wait():
        return []
    answer = start.error or start.result_type or start.response_result
    # A CommandResult TIMEOUT (the charge point did not answer the CPO in time) is recorded FAILED but refuses
    # nothing: the charger may have started, so it is looked after as a start of unknown outcome (below).
    if start.status == Command.Status.FAILED and start.result_type != "TIMEOUT":
        reason = f"charging could not start: {answer or 'the charger refused'}"
        detail = f"START_SESSION {start.uid} FAILED {_ago(now, start.updated_at)} ({answer}); no session"
        return [Problem(Kind.START_FAILED, detail, repair=partial(_end_failed, booking.pk, booking.state, reason))]
    # SUCCEEDED or TIMEOUT: the session may be at the CPO without its push having reached us.
    partner = booking.evse.location.partner
    since = start.created_at - PULL_OVERLAP
    detail = f"START_SESSION {start.uid} {start.status} {_ago(now, start.updated_at)}; no session reported"
    answered = pulls.answered(partner, "sessions", since)
    if answered is False:
        detail += "; the CPO's sessions list could not be read"
    if age >= give_up() and answered:
        reason = "charging did not begin: the charger never reported a session"
        detail += "; the CPO's sessions list has none either"
        return [Problem(Kind.SESSION_MISSING, detail, repair=partial(_end_failed, booking.pk, booking.state, reason))]
    return [Problem(Kind.SESSION_MISSING, detail, pull=("sessions", since))]


def _stop_outcome(booking: Booking, session: ChargingSession, stops: list[Command], now: datetime) -> list[Problem]:
    """A session asked to stop (its booking STOPPING, or ended: a late session) still ACTIVE well after the CPO
    answered the stop, the last of `stops`."""
    stop = stops[-1]
    if stop.status not in Command.FINAL_STATUSES or now - stop.updated_at < wait():
        return []
    answer = stop.error or stop.result_type or stop.response_result
    detail = (
        f"STOP_SESSION {stop.uid} {stop.status} {_ago(now, stop.updated_at)}"
        f"{f' ({answer})' if answer and stop.status != Command.Status.SUCCEEDED else ''}; "
        f"session {session.session_id} still ACTIVE"
    )
    pull = ("sessions", stop.created_at - PULL_OVERLAP)
    if stop.status != Command.Status.SUCCEEDED and len(stops) < MAX_STOPS:
        repair = partial(_stop_again, booking.pk, session.pk, stop.pk)
        return [Problem(Kind.SESSION_NOT_STOPPED, detail, repair=repair, pull=pull)]
    return [Problem(Kind.SESSION_NOT_STOPPED, detail, pull=pull)]


def stop_tried_again(booking: Booking) -> bool:
    """Will the checks send a STOP_SESSION of this STOPPING booking once more, should it be refused or go
    unanswered (_stop_outcome: fewer than MAX_STOPS sent)? The driver's app is told which (beckn/events.py): a
    last refusal leaves the charge to be stopped at the charger, and listed for staff."""
    return Command.objects.filter(booking=booking, type=Command.Type.STOP_SESSION).count() < MAX_STOPS


def _completed(booking: Booking, now: datetime) -> list[Problem]:
    """A finished charge waiting for its CDR."""
    session = bookings.current_session(booking)
    if session is None:
        return []
    charged = bookings.charges(booking).exclude(status=ChargingSession.Status.INVALID)
    if session.status == ChargingSession.Status.INVALID and not charged.exists():
        return [Problem(Kind.SESSION_INVALID, f"session {session.session_id} is INVALID: the CPO will not bill it")]
    # The CDRs are billing's (billing.Cdr, related_name "cdrs"); the domain only asks whether one arrived.
    received = [
        r for r in ChargingSession.objects.filter(pk=session.pk).values_list("cdrs__received_at", flat=True) if r
    ]
    if received:
        if min(received) <= now - wait():
            return [Problem(Kind.CDR_NOT_SETTLED, f"CDR received {_ago(now, min(received))}, the booking not settled")]
        return []
    ended = session.end_date_time or booking.updated_at
    if now - ended < cdr_wait():
        return []
    detail = f"session {session.session_id} ended {_ago(now, ended)}; no CDR"
    return [Problem(Kind.CDR_MISSING, detail, pull=("cdrs", ended - PULL_OVERLAP))]


def _ended(booking: Booking, sent: list[Command], now: datetime) -> list[Problem]:
    """An ended booking had no charge: a driver's cancel once a start stands is a stop (the booking STOPPING until
    the session ends), so a session on a CANCELLED booking is as late as one on an EXPIRED or FAILED one — a start
    whose answer was lost (a 502) that the charger carried out after all. Nobody pays for it: listed for staff.
    Its stop (bookings._late_session) is followed as a STOPPING booking's is."""
    problems = []
    linked = list(bookings.charges(booking).filter(status__in=LINKABLE))
    charged = linked or _unlinked_sessions(booking, now)
    if charged:
        names = ", ".join(f"{s.session_id} ({s.status})" for s in charged)
        problems.append(Problem(Kind.SESSION_AFTER_END, f"the booking is {booking.state}, yet session {names}"))
    for session in linked:
        stops = [c for c in sent if c.type == Command.Type.STOP_SESSION and c.session_id == session.pk]
        if session.status == ChargingSession.Status.ACTIVE and stops:
            problems += _stop_outcome(booking, session, stops, now)
    problems += _reservation_release(booking, sent, now)
    return problems


def _reservation_release(booking: Booking, sent: list[Command], now: datetime) -> list[Problem]:
    """An ended booking whose reservation the CPO may still hold: reserved (or no answer) and not cancelled —
    a cancel lost, refused, or sent before the reservation was made (the CPO then knew none: its later
    acceptance still holds the charger until expiry)."""
    reservation = booking.reservation
    if reservation is None or reservation.expiry_at <= now:
        return []  # past its expiry the CPO has released it itself (mod_commands ReserveNow expiry_date)
    reserve = next(
        (c for c in reversed(sent) if c.type == Command.Type.RESERVE_NOW and c.reservation_id == reservation.pk), None
    )
    if reserve is None or reserve.status in IN_FLIGHT:
        return []
    if reserve.status == Command.Status.FAILED and reserve.result_type not in ("ACCEPTED", "TIMEOUT"):
        # Refused, or never sent. An ACCEPTED result after the failure: the CPO reserved after all; a CommandResult
        # TIMEOUT: the charge point did not answer the CPO, and may have reserved
        # (commands.reservation_outcome_unknown).
        return []
    if reserve.result_type == "CANCELED_RESERVATION":
        return []
    cancels = [c for c in sent if c.type == Command.Type.CANCEL_RESERVATION and c.reservation_id == reservation.pk]
    if any(c.status in (*IN_FLIGHT, Command.Status.SUCCEEDED) for c in cancels):
        return []
    last = cancels[-1] if cancels else None
    if (
        last is not None
        and "UNKNOWN_RESERVATION" in (last.result_type, last.response_result)
        and last.created_at >= reserve.updated_at
    ):
        return []  # asked after the reservation was made, and the CPO holds none
    detail = (
        f"the booking is {booking.state}; RESERVE_NOW {reserve.uid} {reserve.status}, reservation "
        f"{reservation.reservation_id} until {reservation.expiry_at:%Y-%m-%d %H:%M} UTC; "
        + (
            "no CANCEL_RESERVATION sent"
            if last is None
            else f"CANCEL_RESERVATION {last.status} ({last.error or last.result_type or last.response_result})"
        )
    )
    if len(cancels) < MAX_CANCELS:
        return [Problem(Kind.RESERVATION_NOT_RELEASED, detail, repair=partial(_cancel_again, booking.pk, len(cancels)))]
    return [Problem(Kind.RESERVATION_NOT_RELEASED, detail)]


# --- repairing (each runs in the booking's transaction, with the booking row locked) -----------------------


def _requeued_key(command: Command) -> str:
    return f"booking-checks:requeued:{command.pk}"


def _requeue(command_id: int) -> str | None:
    """Queue a command left QUEUED once more (once a day at most). Marked once the repair commits: a mark set
    before, with the transaction then rolled back or its process killed, kept the command from being queued
    again for a day. Two checks queuing it at once send it once (command_send's compare-and-set)."""
    command = Command.objects.filter(pk=command_id, status=Command.Status.QUEUED).first()
    if command is None or cache.get(_requeued_key(command)) is not None:
        return None
    key = _requeued_key(command)
    transaction.on_commit(lambda: cache.add(key, 1, timeout=86400))
    commands.command_send_after_commit(command)
    return f"{command.type} {command.uid} queued for sending again"


def _follow(booking_id: int, session_id: int) -> str | None:
    """The booking follows its session through the same path as a pushed session, and the app hears of it."""
    session = ChargingSession.objects.get(pk=session_id)
    before = Booking.objects.get(pk=booking_id)
    stops_before = Command.objects.filter(booking_id=booking_id, type=Command.Type.STOP_SESSION).count()
    booking = bookings.on_session_changed(session)
    if booking is None:
        return None
    if booking.state != before.state:
        events.publish(events.BookingSessionChanged(booking))
        return f"the booking followed session {session.session_id} ({session.status}): {before.state} → {booking.state}"
    if Command.objects.filter(booking_id=booking_id, type=Command.Type.STOP_SESSION).count() > stops_before:
        return f"STOP_SESSION sent for session {session.session_id} (asked for before it was reported)"
    return None


def _link(booking_id: int, session_id: int) -> str | None:
    """Tie a session no booking holds to this one, unless the CPO's change of it is going on: its row locked by a
    PUT or PATCH (FOR NO KEY UPDATE SKIP LOCKED), it is left to the next check. That change locks the session, then
    its booking (sessions._after_save: the reservation it fulfils); waited for here, under the booking's lock, the
    two had deadlocked."""
    unlinked = ChargingSession.objects.filter(pk=session_id, booking__isnull=True)
    free = unlinked.select_for_update(no_key=True, skip_locked=True).values_list("pk", flat=True)
    if not list(free) or not unlinked.update(booking_id=booking_id):
        return None
    session = ChargingSession.objects.get(pk=session_id)
    followed = _follow(booking_id, session_id)
    return f"session {session.session_id} linked to the booking" + (f"; {followed}" if followed else "")


def _replay_reservation_answer(reserve_id: int) -> str | None:
    reserve = Command.objects.get(pk=reserve_id)
    bookings.on_reservation_finished(events.CommandFinished(reserve))
    start = Command.objects.filter(booking_id=reserve.booking_id, type=Command.Type.START_SESSION).first()
    return f"START_SESSION {start.uid} sent" if start is not None else None


def _stop_again(booking_id: int, session_id: int, last_stop_id: int) -> str | None:
    newer = Command.objects.filter(booking_id=booking_id, type=Command.Type.STOP_SESSION, pk__gt=last_stop_id)
    session = ChargingSession.objects.get(pk=session_id)
    if newer.exists() or session.status != ChargingSession.Status.ACTIVE:
        return None
    booking = Booking.objects.get(pk=booking_id)
    command = commands.command_stop_session(session=session, booking=booking)
    commands.command_send_after_commit(command)
    return f"STOP_SESSION {command.uid} sent again"


def _cancel_again(booking_id: int, cancels_seen: int) -> str | None:
    booking = Booking.objects.select_related("reservation").get(pk=booking_id)
    reservation = booking.reservation
    assert reservation is not None
    cancels = Command.objects.filter(reservation=reservation, type=Command.Type.CANCEL_RESERVATION)
    if cancels.count() != cancels_seen:
        return None
    command = commands.command_cancel_reservation(reservation=reservation, booking=booking)
    commands.command_send_after_commit(command)
    return f"CANCEL_RESERVATION {command.uid} sent for reservation {reservation.reservation_id}"


def _end_failed(booking_id: int, from_state: str, reason: str) -> str | None:
    """A start that failed, or never became a session: the booking ends FAILED, the charger's hold is released
    (at the CPO too when it was reserved there), the driver's payment hold released, and the app told
    (on_cancel, by the provider, with nearby chargers)."""
    now = timezone.now()
    if not Booking.objects.filter(pk=booking_id, state=from_state).update(
        state=Booking.State.FAILED, cancellation_reason=reason[:200], updated_at=now
    ):
        return None
    booking = Booking.objects.select_related("reservation").get(pk=booking_id)
    released = ""
    reservation = booking.reservation
    if reservation is not None and reservation.status in Reservation.ACTIVE_STATUSES:
        at_cpo = reservation.status in (Reservation.Status.REQUESTED, Reservation.Status.RESERVED)
        if Reservation.objects.filter(pk=reservation.pk, status=reservation.status).update(
            status=Reservation.Status.CANCELLED, reserve_at=None
        ):
            released = "; hold released"
            if at_cpo:
                commands.command_send_after_commit(
                    commands.command_cancel_reservation(reservation=reservation, booking=booking)
                )
                released += " (CANCEL_RESERVATION sent)"
    events.publish(events.BookingCancelled(booking))
    events.publish(events.BookingCancelledByProvider(booking, reason, code=bookings.CHARGER_FAULT))
    return f"booking ended FAILED from {from_state}: {reason}{released}; the app told"


# --- recording ------------------------------------------------------------------------------------------------


def _record(
    booking: Booking, before: list[Problem], after: list[Problem], pulls: Pulls, partner: Partner, now: datetime
) -> list[BookingCheck]:
    written: list[BookingCheck] = []
    handled: set[str] = set()
    for problem in after:
        if problem.kind in handled:
            continue  # one row per kind and booking in one check (e.g. two stuck commands)
        if problem.repair is not None:
            done = problem.repair()
            if done is not None:
                handled.add(problem.kind)
                written.append(_repaired(booking, problem.kind, problem.detail, done, now))
            continue
        handled.add(problem.kind)
        check = _seen(booking, problem.kind, problem.detail, now)
        if check is not None:
            written.append(check)
    # A mismatch seen before reading the CPO's list and gone after it was repaired by the read (a missed
    # session or CDR stored through the normal paths).
    for problem in before:
        if problem.kind in handled or problem.pull is None:
            continue
        module, since = problem.pull
        if pulls.answered(partner, module, since):
            handled.add(problem.kind)
            booking.refresh_from_db(fields=["state"])
            done = f"the CPO's {module} were read again: the booking is now {booking.state}"
            written.append(_repaired(booking, problem.kind, problem.detail, done, now))
    for check in BookingCheck.objects.filter(booking=booking, resolved_at__isnull=True).exclude(kind__in=handled):
        booking.refresh_from_db(fields=["state"])
        resolution = f"gone: no longer seen (the booking is {booking.state})"
        if BookingCheck.objects.filter(pk=check.pk, resolved_at__isnull=True).update(
            resolved_at=now, resolution=resolution
        ):
            check.refresh_from_db()
            written.append(check)
    return written


def _repaired(booking: Booking, kind: str, detail: str, done: str, now: datetime) -> BookingCheck:
    resolution = f"repaired: {done}"[:300]
    check = BookingCheck.objects.filter(booking=booking, kind=kind, resolved_at__isnull=True).first()
    if check is None:
        return BookingCheck.objects.create(
            booking=booking,
            kind=kind,
            detail=detail,
            first_seen=now,
            last_seen=now,
            repaired=True,
            resolved_at=now,
            resolution=resolution,
        )
    BookingCheck.objects.filter(pk=check.pk).update(
        detail=detail, last_seen=now, repaired=True, resolved_at=now, resolution=resolution
    )
    check.refresh_from_db()
    return check


def _seen(booking: Booking, kind: str, detail: str, now: datetime) -> BookingCheck | None:
    """Open the finding, or note that it is still there. Not again once staff resolved this kind for this
    booking: they have taken it in hand."""
    if BookingCheck.objects.filter(booking=booking, kind=kind).exclude(resolved_by="").exists():
        return None
    check = BookingCheck.objects.filter(booking=booking, kind=kind, resolved_at__isnull=True).first()
    if check is None:
        try:
            with transaction.atomic():
                return BookingCheck.objects.create(
                    booking=booking, kind=kind, detail=detail, first_seen=now, last_seen=now
                )
        except IntegrityError:  # a run going on at the same time opened it
            check = BookingCheck.objects.get(booking=booking, kind=kind, resolved_at__isnull=True)
    BookingCheck.objects.filter(pk=check.pk).update(detail=detail, last_seen=now, times_seen=F("times_seen") + 1)
    check.refresh_from_db()
    return check


def booking_checks_resolve(*, checks: list[BookingCheck], user: object) -> int:
    """Staff mark findings resolved (they looked into them): closed, and not opened again for that booking."""
    username = str(getattr(user, "get_username", lambda: "")() or "staff")
    now = timezone.now()
    ids = [c.pk for c in checks if c.resolved_at is None]
    return BookingCheck.objects.filter(pk__in=ids, resolved_at__isnull=True).update(
        resolved_at=now, resolution=f"resolved by {username}"[:300], resolved_by=username[:150]
    )
