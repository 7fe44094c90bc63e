"""Commands to chargers (mod_commands): each is a Command row; the CPO gateway (emsp/ports.py) sends it and
the CPO's synchronous answer and later result are stored on it. No result within the CPO's `timeout` →
TIMEOUT, after which the CPO's sessions are pulled (a CPO never retries a result)."""

from __future__ import annotations

import logging
import secrets
import socket
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from urllib3.exceptions import ConnectTimeoutError

from emsp import events, metrics, outbound
from emsp.celery import run_after_commit
from emsp.models import Booking, ChargingSession, Command, Evse, Partner, Reservation, Token, ci_key
from emsp.ports import CpoUnreachable, cpo_gateway

log = logging.getLogger(__name__)


def _new_reference() -> str:
    return secrets.token_hex(12).upper()


def command_start_session(
    *,
    token: Token,
    evse: Evse,
    connector_id: str = "",
    reservation: Reservation | None = None,
    booking: Booking | None = None,
) -> Command:
    if not connector_id and evse.needs_connector_id:
        # START_SESSION_CONNECTOR_REQUIRED: the connector must then be named (mod_commands §StartSession).
        connector_id = evse.connectors.values_list("connector_id", flat=True).first() or ""
    # Charging on a reservation refers to it; otherwise a fresh reference ties the session to this command.
    reference = reservation.reservation_id[:36] if reservation is not None else _new_reference()
    return Command.objects.create(
        partner=evse.location.partner,
        type=Command.Type.START_SESSION,
        token=token,
        evse=evse,
        connector_id=connector_id,
        reservation=reservation,
        authorization_reference=reference,
        booking=booking,
    )


def commands_of_reference(
    partner_id: int,
    reference: str,
    *,
    country_code: str | None = None,
    party_id: str | None = None,
    types: tuple[str, ...] = (Command.Type.START_SESSION,),
) -> list[Command]:
    """Our commands to this partner whose authorization_reference a CPO's Session or CDR repeats (mod_cdrs: it
    "SHALL contain the same value"), newest first. A CiString(36): compared case-insensitively (a CPO upper-casing
    it had its CDR billed to the driver's account, the booking's hold left standing). With the party the Session
    or CDR is of, only commands to an EVSE of that party: a hub carries several CPOs' objects on one connection,
    and sees every reference it passes on (one party's CDR had billed another's charge)."""
    reference = (reference or "").strip()
    if not reference:
        return []
    rows = list(
        Command.objects.filter(partner_id=partner_id, type__in=types, authorization_reference__iexact=reference)
        .select_related("evse__location")
        .order_by("-created_at")[:20]
    )
    if country_code is None:
        return rows
    party = ci_key(country_code, party_id or "")
    # A command names its EVSE (kept unless the EVSE was deleted: then the partner's match is all there is).
    return [
        c for c in rows if c.evse is None or ci_key(c.evse.location.country_code, c.evse.location.party_id) == party
    ]


def command_stop_session(*, session: ChargingSession, booking: Booking | None = None) -> Command:
    return Command.objects.create(
        partner=session.partner,
        type=Command.Type.STOP_SESSION,
        session=session,
        token=session.token,
        evse=session.evse,
        booking=booking,
    )


def command_reserve_now(*, reservation: Reservation, booking: Booking | None = None) -> Command:
    return Command.objects.create(
        partner=reservation.evse.location.partner,
        type=Command.Type.RESERVE_NOW,
        token=reservation.token,
        evse=reservation.evse,
        reservation=reservation,
        authorization_reference=reservation.reservation_id[:36],
        booking=booking,
    )


def command_cancel_reservation(*, reservation: Reservation, booking: Booking | None = None) -> Command:
    return Command.objects.create(
        partner=reservation.evse.location.partner,
        type=Command.Type.CANCEL_RESERVATION,
        reservation=reservation,
        evse=reservation.evse,
        booking=booking,
    )


def command_unlock_connector(*, evse: Evse, connector_id: str) -> Command:
    """Operator/helpdesk only, never driver-triggered (mod_commands §UNLOCK_CONNECTOR)."""
    return Command.objects.create(
        partner=evse.location.partner, type=Command.Type.UNLOCK_CONNECTOR, evse=evse, connector_id=connector_id
    )


# The longest we wait for a CommandResult, whatever `timeout` the CPO names (a late result still counts).
MAX_COMMAND_TIMEOUT = timedelta(hours=24)


def command_send_after_commit(command: Command) -> None:
    run_after_commit("emsp.tasks.command_send", command.pk)


def command_send(command: Command) -> Command:
    """Send the command to its CPO and store the CPO's synchronous answer."""
    # SENT from now: `updated_at` says when (an update() leaves auto_now alone), for commands_expire_due, whose
    # grace counts from here. A task redelivered long after it was queued (its worker killed) had kept the old
    # stamp and was timed out by the sweep while its POST was still on the way.
    sent = Command.objects.filter(pk=command.pk, status=Command.Status.QUEUED)
    if not sent.update(status=Command.Status.SENT, updated_at=timezone.now()) and not _take_back_unsent(command.pk):
        command.refresh_from_db()
        return command  # already sent (a duplicate task run), or being sent
    command.refresh_from_db()
    claimed = command.updated_at
    now = timezone.now()
    # Every outcome this run writes is compare-and-set on its claim's stamp (`claimed`): a send held up past
    # SENT_GRACE may have been taken back as never sent (_unsent) and sent by another run meanwhile, whose
    # command it is then; a refusal found late must not fail it as "Not sent" while the CPO charges.
    stale = _no_longer_wanted(command)
    if stale:
        return _finish_sent(command, error=stale, tell=False, claimed=claimed)
    refusal = _token_refusal(command, now)
    if refusal:
        return _finish_sent(command, error=refusal, claimed=claimed)
    if command.partner.state != Partner.State.CONNECTED:
        return _finish_sent(command, error="The CPO has no Commands receiver or is not connected", claimed=claimed)
    # Still ours, stamped afresh, as the gateway writes the request and POSTs: otherwise it goes no further,
    # where both runs had POSTed.
    stamp = timezone.now()
    if not Command.objects.filter(pk=command.pk, status=Command.Status.SENT, updated_at=claimed).update(
        updated_at=stamp
    ):
        command.refresh_from_db()
        return command
    claimed = stamp
    try:
        reply = cpo_gateway().send_command(command)
    except CpoUnreachable as exc:
        command.refresh_from_db(fields=["request"])
        if command.type == Command.Type.RESERVE_NOW and may_have_reached_cpo(exc):
            return _finish_unanswered(
                command, error=f"No CommandResponse ({exc}): the CPO may have reserved", claimed=claimed
            )
        return _finish_sent(command, error=str(exc), claimed=claimed)
    command.refresh_from_db(fields=["request"])
    command.response = reply.response
    command.response_result = reply.result
    if not reply.accepted:
        error = reply.message or f"CommandResponse {reply.result}"
        return _finish_sent(command, error=error, also=("response", "response_result"), claimed=claimed)
    timeout = reply.timeout_seconds or settings.OCPI_COMMAND_DEFAULT_TIMEOUT_SECONDS
    # A CPO's absurd `timeout` (10^12 s) would overflow the date, and a long one leave the command waiting for ever.
    command.timeout_at = now + timedelta(seconds=min(timeout, MAX_COMMAND_TIMEOUT.total_seconds()))
    with transaction.atomic():
        Command.objects.filter(pk=command.pk, status=Command.Status.SENT).update(
            status=Command.Status.ACCEPTED,
            response=command.response,
            response_result=reply.result,
            timeout_at=command.timeout_at,
        )
        command.refresh_from_db()
        if command.status in Command.FINAL_STATUSES:
            return command  # the CommandResult overtook the CommandResponse
        if command.type == Command.Type.RESERVE_NOW and command.reservation_id:
            Reservation.objects.filter(pk=command.reservation_id, status=Reservation.Status.HELD).update(
                status=Reservation.Status.REQUESTED
            )
    # No timer task: the beat's sweep (commands_expire_due, every few seconds) times it out. A timer longer
    # than the broker's visibility timeout would be handed out again and again while it waits.
    return command


def _unsent(now: datetime) -> QuerySet[Command]:
    """Commands SENT for longer than SENT_GRACE whose request was never written: the CPO gateway writes it just
    before its POST (ocpi/gateway.py), so these certainly never left us (a worker killed between the claim and
    the POST). A send on its way has written it within the grace (command_send stamps the row just before
    calling the gateway)."""
    return Command.objects.filter(status=Command.Status.SENT, request={}, updated_at__lte=now - SENT_GRACE)


def _take_back_unsent(command_id: int) -> bool:
    """A redelivered send finding its command SENT with no request written (_unsent): claimed again, by a
    compare-and-set, and sent. False for any other (sent, or a send still within its grace)."""
    now = timezone.now()
    if not _unsent(now).filter(pk=command_id).update(updated_at=now):
        return False
    log.warning("command %s: left SENT without its request by a send that never posted it: sent again", command_id)
    return True


NOT_SENT = "Not sent to the CPO: "


def refused_by_us(command: Command) -> bool:
    """Did the command fail before it went out (its token not allowed), rather than at the CPO?"""
    return command.error.startswith(NOT_SENT)


def _no_longer_wanted(command: Command) -> str:
    """Why a start or reservation queued for a booking must not go out any more, or "": its booking has ended
    (cancelled, a no-show) or its reservation is no longer active, while it waited for its send task. Sent
    anyway, a RESERVE_NOW would hold the charger for a cancelled booking (nothing cancels a reservation we
    don't know was made). The rule the booking checks use for commands left QUEUED (_stuck_commands)."""
    if command.type not in (Command.Type.START_SESSION, Command.Type.RESERVE_NOW):
        return ""
    booking = command.booking
    if booking is not None and not booking.is_active:
        return f"{NOT_SENT}the booking is {booking.state}"
    reservation = command.reservation
    if reservation is not None and reservation.status not in Reservation.ACTIVE_STATUSES:
        return f"{NOT_SENT}the reservation is {reservation.status}"
    return ""


# What shows that a request never left us: no connection was made (refused, connect timeout, the name not
# resolved), no TLS session (a failed handshake, a certificate we don't trust: before any HTTP byte is written),
# or http.client refused a header or URL before writing anything.
_NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectTimeoutError,
    outbound.TlsHandshakeError,  # not any SSLError: urllib3 raises one too for a TLS fault while reading the answer
    socket.gaierror,
    ValueError,
    TypeError,
)
# OCPI status codes of an answer that leave open whether the command reached the CPO: its own generic server
# error, and a hub's generic error or its timeout on the forwarded request (status_codes.asciidoc 3000, 4000,
# 4002). Every other code is a refusal or says it was not delivered (4001 unknown receiver, 4003 not connected).
_OUTCOME_OPEN_STATUSES = frozenset({3000, 4000, 4002})


def may_have_reached_cpo(exc: CpoUnreachable) -> bool:
    """Could the CPO have received the command although no CommandResponse came back? Yes after a transport
    error once the request may have gone out (a read timeout, a connection reset after sending) and after an
    HTTP 5xx (the CPO, or a proxy or hub in front of it, failed: not a refusal of the command). No when nothing
    was sent (not connected, no route through a hub, an open circuit breaker, a connection refused, no TLS
    session) and when the CPO answered with a refusal (HTTP 4xx, an OCPI error status whatever the HTTP status,
    a CommandResponse REJECTED). An OCPI 3000 (the CPO's server error) or a hub's 4000 or 4002 (timeout on the
    forwarded request) leaves the outcome open."""
    cause: BaseException | None = exc.__cause__
    for _ in range(10):  # the chain the adapter builds: CpoUnreachable ← client error ← OutboundError ← socket
        if cause is None:
            return False
        ocpi_status = getattr(cause, "ocpi_status", None)
        if isinstance(ocpi_status, int):  # an OCPI answer says more than its HTTP status (500 with 2001: a refusal)
            return ocpi_status in _OUTCOME_OPEN_STATUSES
        http_status = getattr(cause, "http_status", None)
        if isinstance(http_status, int):
            return http_status >= 500
        if isinstance(cause, outbound.OutboundError):
            if isinstance(cause, outbound.ForbiddenTarget):
                return False
            return not isinstance(cause.__cause__, _NOT_SENT_ERRORS)
        cause = cause.__cause__
    return False


def _token_refusal(command: Command, now: datetime) -> str:
    """Why the command's token may not go to the CPO, or "". The eMSP SHALL authorize the token of a
    StartSession or ReserveNow before sending it, and the CPO SHALL NOT check it (mod_commands §StartSession,
    §ReserveNow): we answer as real-time authorization would (a driver blocked after booking, a token expired)."""
    if command.type not in (Command.Type.START_SESSION, Command.Type.RESERVE_NOW):
        return ""
    if command.token is None:
        return f"{NOT_SENT}the command has no token"
    allowed = command.token.allowed_status(now, command.partner)
    if allowed != Token.Allowed.ALLOWED:
        return f"{NOT_SENT}the token is {allowed} (the eMSP authorizes it before a {command.type})"
    return ""


# What we keep of a CommandResponse's or CommandResult's `message` (DisplayText[]): a CPO's answer is stored on its
# command, and only shown.
MAX_MESSAGES = 10
MAX_MESSAGE_CHARS = 512


def display_texts(messages: Any) -> list[dict[str, str]]:
    """A CommandResponse's or CommandResult's `message` as we keep it: of its first MAX_MESSAGES entries, the
    DisplayTexts with a text, each text stripped and cut to MAX_MESSAGE_CHARS and its language to 2 letters; a lone
    DisplayText is read as a list of one, anything else as none. The CommandResponse's had been stored whole (up to
    the 20 MB an answer may be), where the CommandResult's was capped (ocpi/views/commands.py)."""
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return []
    texts = []
    for item in messages[:MAX_MESSAGES]:
        if isinstance(item, dict) and isinstance(item.get("text"), str) and item["text"].strip():
            language = item.get("language") if isinstance(item.get("language"), str) else ""
            texts.append({"language": language.strip()[:2], "text": item["text"].strip()[:MAX_MESSAGE_CHARS]})
    return texts


def result_messages(result: dict[str, Any]) -> str:
    """The texts of a CommandResponse/CommandResult `message` (DisplayText list), joined. Lenient in: the message
    is optional and only shown, so a CPO's odd one (a number, `true`: a TypeError here had left an ACCEPTED
    command SENT, for the sweep to time out and its booking to be cancelled) reads as none, a lone DisplayText
    as a list of one, and entries that are no DisplayText are skipped."""
    messages = result.get("message")
    if isinstance(messages, dict):
        messages = [messages]
    if not isinstance(messages, list):
        return ""
    texts = []
    for message in messages:
        if isinstance(message, dict) and message.get("text"):
            texts.append(str(message["text"]))
    return "; ".join(texts)


def _finish_sent(
    command: Command, *, error: str, tell: bool = True, also: tuple[str, ...] = (), claimed: datetime | None = None
) -> Command:
    """FAILED, for a command this send still holds as SENT: one the sweep moved on meanwhile (its timeout) is
    finished once, by whoever moved it, not a second time with another outcome. The status, the command's
    effects and what its subscribers do (a booking cancelled, its app told) commit together, as for a TIMEOUT:
    the bookings' handler locks its booking, which PostgreSQL allows only in a transaction. `tell`: False for a
    command its booking no longer wants (nothing to tell: the booking has moved on, its app heard of it). `also`:
    the fields the send set on the command besides (the CPO's refusal), saved with it (`_finish`). `claimed`:
    the stamp of the send's claim, which it must still hold (command_send)."""
    held = {} if claimed is None else {"updated_at": claimed}
    with transaction.atomic():
        failed = Command.objects.filter(pk=command.pk, status=Command.Status.SENT, **held).update(
            status=Command.Status.FAILED, updated_at=timezone.now()
        )
        if not failed:
            command.refresh_from_db()
            return command
        _bookings_first(command)
        return _finish(command, Command.Status.FAILED, error=error, tell=tell, also=also)


def _finish_unanswered(command: Command, *, error: str, claimed: datetime | None = None) -> Command:
    """A RESERVE_NOW that may have reached the CPO without its answer reaching us: an unknown outcome, as a
    command left SENT without a CommandResponse (commands_expire_due) — TIMEOUT at once, not FAILED. Its
    reservation counts as asked of the CPO (REQUESTED: a cancel of the booking cancels it there too), the
    booking waiting for it is cancelled with a CANCEL_RESERVATION (on_reservation_finished), and a late
    CommandResult still counts: a reservation the CPO made after all is then released by the booking checks."""
    held = {} if claimed is None else {"updated_at": claimed}
    with transaction.atomic():
        if not Command.objects.filter(pk=command.pk, status=Command.Status.SENT, **held).update(
            status=Command.Status.TIMEOUT, updated_at=timezone.now()
        ):
            command.refresh_from_db()
            return command  # the sweep moved it on meanwhile
        _bookings_first(command)
        if command.reservation_id:
            Reservation.objects.filter(pk=command.reservation_id, status=Reservation.Status.HELD).update(
                status=Reservation.Status.REQUESTED
            )
        return _finish(command, Command.Status.TIMEOUT, error=error)


def _finish(
    command: Command,
    status: str,
    *,
    error: str = "",
    result: dict[str, Any] | None = None,
    tell: bool = True,
    also: tuple[str, ...] = (),
) -> Command:
    """The command's outcome, saved: only the fields set here (and `also`, those its caller set). A send holds
    the command as read before its POST, while the CPO's session PUT may link the session to it meanwhile
    (sessions._after_save): a whole-row save wrote that session_id back as it was, None."""
    command.status = status
    command.error = error[:2000]
    fields = ["status", "error", "updated_at", *also]
    if result is not None:
        command.result = result
        command.result_type = str(result.get("result") or "")
        fields += ["result", "result_type"]
    command.save(update_fields=fields)
    metrics.COMMANDS_FINISHED.labels(command.type, status).inc()
    _apply_effects(command)
    if command.booking_id is not None and tell:
        events.publish(events.CommandFinished(command))
    return command


def command_result_received(command: Command, result: dict[str, Any]) -> Command:
    """The CPO sent the result of a command (its type already checked by the adapter). The CommandResult comes
    once, for a command the CPO ACCEPTED (mod_commands §"Response Data"): it finishes a command still waiting
    for it — and a late one after TIMEOUT still counts — but changes nothing of a command already SUCCEEDED or
    FAILED (a repeat, or a result after the CPO's own refusal). One exception, for a RESERVE_NOW only: the CPO
    may cancel a reservation it made (CANCELED_RESERVATION, CommandResultType)."""
    result_type = str(result.get("result") or "").strip().upper()
    result = {**result, "result": result_type}
    with transaction.atomic():
        command = Command.objects.select_for_update().get(pk=command.pk)
        if command.result_type == result_type and command.result == result:
            return command  # a duplicate post
        _bookings_first(command)
        if result_type == "CANCELED_RESERVATION":
            return _reservation_cancelled_by_cpo(command, result)
        if command.status not in (Command.Status.SENT, Command.Status.ACCEPTED, Command.Status.TIMEOUT):
            if _reserved_after_all(command, result_type):
                # Kept FAILED (its booking has been cancelled on it), with what the CPO says: the booking checks
                # then release the reservation the CPO holds (booking_checks._reservation_release).
                log.warning("%s: CommandResult ACCEPTED after the command FAILED: the CPO holds a reservation", command)
                command.result = result
                command.result_type = result_type
                command.save(update_fields=["result", "result_type", "updated_at"])
                return command
            log.info("%s: CommandResult %s ignored, the command is %s", command, result_type, command.status)
            return command
        status = Command.Status.SUCCEEDED if result_type == "ACCEPTED" else Command.Status.FAILED
        return _finish(
            command,
            status,
            error="" if status == Command.Status.SUCCEEDED else (result_messages(result) or result_type),
            result=result,
        )


def charging_began(command: Command) -> bool:
    """Has the charge this START_SESSION asked for begun, whatever became of the command: the CPO reported a
    session of it charging or charged (ACTIVE or COMPLETED), linked to the command (sessions._after_save, by its
    authorization_reference) or to its booking, or the booking is CHARGING. A TIMEOUT after that (our sweep's,
    the CPO's CommandResult) or a late FAILED result is no news for the driver: the app is told nothing negative
    of it (beckn/events.py, beckn/handlers.py), where "could not start" had come beside an order saying Charging.
    Not a PENDING session (the charge point may still fail to start it) nor an INVALID one."""
    if command.type != Command.Type.START_SESSION:
        return False
    if (
        command.booking_id is not None
        and Booking.objects.filter(pk=command.booking_id, state=Booking.State.CHARGING).exists()
    ):
        return True
    ours = Q(booking_id=command.booking_id) if command.booking_id is not None else Q(pk__in=[])
    if command.session_id is not None:
        ours |= Q(pk=command.session_id)
    began = (ChargingSession.Status.ACTIVE, ChargingSession.Status.COMPLETED)
    return ChargingSession.objects.filter(ours, status__in=began).exists()


def _reserved_after_all(command: Command, result_type: str) -> bool:
    """A CPO sends a CommandResult only for a command it took (mod_commands §"Response Data"): an ACCEPTED
    result for a RESERVE_NOW we hold as FAILED at the CPO (its CommandResponse unreadable, say) means the CPO
    reserved the charger after all. Not for one we never sent."""
    return (
        command.type == Command.Type.RESERVE_NOW
        and command.status == Command.Status.FAILED
        and result_type == "ACCEPTED"
        and not refused_by_us(command)
    )


def _reservation_cancelled_by_cpo(command: Command, result: dict[str, Any]) -> Command:
    """The CPO cancelled a reservation it had accepted (mod_commands §ReserveNow, CANCELED_RESERVATION). Only
    a RESERVE_NOW's response_url carries it, and only for a reservation the CPO did not refuse. One still waiting
    for its result (its ACCEPTED result lost, or still to come after the cancel) is finished as one accepted and
    then cancelled: SUCCEEDED, with the cancel as its result. Left waiting, a start the driver had asked for
    meanwhile (walk-up) waited for our sweep to time the RESERVE_NOW out, up to the CPO's whole timeout; now it
    goes straight to the EVSE (bookings.on_reservation_finished), and a late ACCEPTED result changes nothing."""
    if command.type != Command.Type.RESERVE_NOW or command.status in (Command.Status.QUEUED, Command.Status.FAILED):
        log.info("%s: CommandResult CANCELED_RESERVATION ignored (%s)", command, command.status)
        return command
    if command.reservation_id:
        # Before the command is finished: its effects would otherwise mark the reservation RESERVED.
        # A driver starting on it keeps the EVSE, held by us only, as after a refusal (_refused_reservation_status).
        Reservation.objects.filter(pk=command.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(
            status=_refused_reservation_status(command, otherwise=Reservation.Status.CANCELLED)
        )
    if command.status in (Command.Status.SENT, Command.Status.ACCEPTED):
        _finish(command, Command.Status.SUCCEEDED, result=result)
    else:
        command.result = result
        command.result_type = result["result"]
        command.save()
    if command.reservation_id:
        events.publish(events.ReservationCancelledByCpo(command.reservation))
    return command


def _bookings_first(command: Command) -> None:
    """Lock the bookings of a RESERVE_NOW's or CANCEL_RESERVATION's reservation (and the command's own booking)
    until the transaction ends, right after the command and before its reservation is touched: one lock order, the
    booking before its reservation, as a driver's cancel, a start, the no-show sweep and a session's PUT take them
    (bookings.reservation_fulfilled). Its outcome (`_apply_effects`, or the CPO's cancel of the reservation) had
    updated the reservation first and then locked the booking (bookings.on_reservation_finished,
    on_reservation_cancelled_by_cpo): a RESERVE_NOW refused as the driver cancelled deadlocked the two, the cancel
    holding the booking and waiting for the reservation. FOR UPDATE, as those handlers lock it next: NO KEY UPDATE
    first would have them take the stronger lock later, waiting then (the reservation held) for a row that refers to
    the booking inserted meanwhile, whose transaction may go on to lock the booking."""
    if not command.reservation_id or command.type not in (Command.Type.RESERVE_NOW, Command.Type.CANCEL_RESERVATION):
        return
    ours = Q(reservation_id=command.reservation_id)
    if command.booking_id is not None:
        ours |= Q(pk=command.booking_id)
    list(Booking.objects.select_for_update().filter(ours).order_by("pk").values_list("pk", flat=True))


# A booking whose driver has asked to start: its hold is what keeps the EVSE theirs while the start goes out.
_STARTED = (Booking.State.STARTING, Booking.State.CHARGING, Booking.State.STOPPING)


def _apply_effects(command: Command) -> None:
    if not command.reservation_id:
        return
    succeeded = command.status == Command.Status.SUCCEEDED
    if command.type == Command.Type.RESERVE_NOW:
        if reservation_outcome_unknown(command):
            return  # unknown outcome: keep holding the EVSE until the reservation expires
        if command.result_type == "CANCELED_RESERVATION":
            return  # finished by the CPO's cancel, which has set the reservation (_reservation_cancelled_by_cpo)
        new = Reservation.Status.RESERVED if succeeded else _refused_reservation_status(command)
        Reservation.objects.filter(pk=command.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(status=new)
    elif command.type == Command.Type.CANCEL_RESERVATION and succeeded:
        Reservation.objects.filter(pk=command.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(
            status=Reservation.Status.CANCELLED
        )


def _refused_reservation_status(command: Command, otherwise: str = Reservation.Status.FAILED) -> str:
    """What a RESERVE_NOW that did not reserve (or whose reservation the CPO cancelled) leaves of its reservation:
    FAILED (CANCELLED), the EVSE free, unless the driver
    has asked to start on it (walk-up: the start goes straight to the EVSE, bookings.on_reservation_finished). The
    EVSE then stays held for them, by us only (HELD: nothing to cancel at the CPO), and the hold ends with the
    booking as any does (the session fulfils it, a failed start or a cancel releases it). A refusal that came late,
    after our TIMEOUT had sent the start on, had freed the EVSE under it: another driver could book it. The
    bookings are locked already (`_bookings_first`)."""
    ours = Q(reservation_id=command.reservation_id)
    if command.booking_id is not None:
        ours |= Q(pk=command.booking_id)
    if Booking.objects.filter(ours, state__in=_STARTED).exists():
        return Reservation.Status.HELD
    return otherwise


def reservation_outcome_unknown(command: Command) -> bool:
    """Is this RESERVE_NOW of unknown outcome, so that the charger may hold the reservation: our TIMEOUT (no
    result in time, or no CommandResponse once it may have reached the CPO), or the CPO's CommandResult TIMEOUT
    ("no response received from the Charge Point in a reasonable time", recorded FAILED). Both are cancelled at the
    CPO when their booking can't go ahead (bookings.on_reservation_finished), where the CPO's TIMEOUT had been
    taken for a refusal and the reservation left for the charger to hold until it expired."""
    return command.type == Command.Type.RESERVE_NOW and (
        command.status == Command.Status.TIMEOUT
        or (command.status == Command.Status.FAILED and command.result_type == "TIMEOUT")
    )


def command_check_timeout(command_id: int, now: datetime | None = None) -> Command | None:
    """TIMEOUT a command whose result did not come in time, then look for the session it may have started."""
    now = now or timezone.now()
    with transaction.atomic():
        command = (
            Command.objects.select_for_update()
            .filter(pk=command_id, status=Command.Status.ACCEPTED, timeout_at__lte=now)
            .first()
        )
        if command is None:
            return None
        # The sweep's note for a command left SENT (INTERRUPTED) says more than the timeout: it is kept.
        command = _finish(
            command, Command.Status.TIMEOUT, error=command.error or "No CommandResult within the CPO's timeout"
        )
    # The session may have started (or stopped) without the result reaching us (ocpi/ocpi#475): read the CPO's
    # sessions, unless it has unregistered meanwhile (credentials DELETE: "both parties must end any automated
    # communication"; we hold no token for it then).
    if (
        command.type in (Command.Type.START_SESSION, Command.Type.STOP_SESSION)
        and command.partner.state == Partner.State.CONNECTED
    ):
        try:
            cpo_gateway().pull(command.partner, "sessions", since=command.created_at - timedelta(minutes=5))
        except Exception:
            log.warning("sessions check after %s timed out failed", command, exc_info=True)
    return command


SENT_GRACE = timedelta(seconds=60)


INTERRUPTED = "no CommandResponse recorded (worker interrupted)"


def commands_expire_due(now: datetime | None = None) -> int:
    """Sweep for commands whose timeout task was lost (worker restarts), and for commands left SENT by a
    worker that died: one whose request was never written never left us (_unsent), and is queued and sent
    again; one that died between posting and storing the CommandResponse becomes TIMEOUT too (never re-sent:
    the CPO may have acted on the first), and the CPO's sessions are checked."""
    now = now or timezone.now()
    for pk in _unsent(now).order_by("pk").values_list("pk", flat=True)[:200]:
        # Compare-and-set: still SENT without its request (a redelivered send may have taken it back meanwhile).
        if _unsent(now).filter(pk=pk).update(status=Command.Status.QUEUED, updated_at=timezone.now()):
            log.warning("command %s: left SENT without its request by a send that never posted it: queued again", pk)
            run_after_commit("emsp.tasks.command_send", pk)
    # One statement, its condition checked on each row as it is written: a CommandResult (or the send's own
    # answer) stored since the rows were picked is not overwritten.
    Command.objects.filter(status=Command.Status.SENT, updated_at__lte=now - SENT_GRACE).exclude(request={}).update(
        status=Command.Status.ACCEPTED, timeout_at=now, error=INTERRUPTED
    )
    ids = list(Command.objects.filter(status=Command.Status.ACCEPTED, timeout_at__lte=now).values_list("pk", flat=True))
    return sum(1 for pk in ids if command_check_timeout(pk, now) is not None)
