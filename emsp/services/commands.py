"""Commands to chargers (mod_commands): each is a Command row with its own `response_url`; the CPO's
synchronous CommandResponse and later CommandResult are stored on it. No result within the CPO's
`timeout` → TIMEOUT, after which the CPO's Sessions list is checked (OCPI never retries a result)."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from emsp.models import Booking, ChargingSession, Command, Evse, Partner, Reservation, Token
from emsp.services import hooks
from ocpi.client import OcpiClient, OcpiClientError
from ocpi.enums import COMMAND_RESULT_TYPES
from ocpi.normalize import format_ocpi_datetime, unwrap_object_payload
from ocpi.serializers import token_to_ocpi

log = logging.getLogger(__name__)


class CommandError(Exception):
    pass


def _new_reference() -> str:
    return secrets.token_hex(12).upper()


def _create(partner: Partner, command_type: str, payload: dict[str, Any], **links: Any) -> Command:
    command = Command(partner=partner, type=command_type, **links)
    command.request = {"response_url": command.response_url, **payload}
    command.save()
    return command


def command_start_session(
    *,
    token: Token,
    evse: Evse,
    connector_id: str = "",
    reservation: Reservation | None = None,
    booking: Booking | None = None,
) -> Command:
    location = evse.location
    reference = _new_reference()
    payload: dict[str, Any] = {
        "token": token_to_ocpi(token),
        "location_id": location.location_id,
        "evse_uid": evse.uid,
        "authorization_reference": reference,
    }
    if connector_id or evse.needs_connector_id:
        # START_SESSION_CONNECTOR_REQUIRED: connector_id is then mandatory (mod_commands §StartSession).
        payload["connector_id"] = connector_id or evse.connectors.values_list("connector_id", flat=True).first()
    if reservation is not None:
        payload["authorization_reference"] = reservation.reservation_id[:36]
        reference = payload["authorization_reference"]
    return _create(
        location.partner,
        Command.Type.START_SESSION,
        payload,
        token=token,
        evse=evse,
        reservation=reservation,
        authorization_reference=reference,
        booking=booking,
    )


def command_stop_session(*, session: ChargingSession, booking: Booking | None = None) -> Command:
    return _create(
        session.partner,
        Command.Type.STOP_SESSION,
        {"session_id": session.session_id},
        session=session,
        token=session.token,
        evse=session.evse,
        booking=booking,
    )


def command_reserve_now(*, reservation: Reservation, booking: Booking | None = None) -> Command:
    evse = reservation.evse
    payload: dict[str, Any] = {
        "token": token_to_ocpi(reservation.token),
        "expiry_date": format_ocpi_datetime(reservation.expiry_at),
        "reservation_id": reservation.reservation_id,
        "location_id": evse.location.location_id,
        "evse_uid": evse.uid,
        "authorization_reference": reservation.reservation_id[:36],
    }
    return _create(
        evse.location.partner,
        Command.Type.RESERVE_NOW,
        payload,
        token=reservation.token,
        evse=evse,
        reservation=reservation,
        authorization_reference=payload["authorization_reference"],
        booking=booking,
    )


def command_cancel_reservation(*, reservation: Reservation, booking: Booking | None = None) -> Command:
    return _create(
        reservation.evse.location.partner,
        Command.Type.CANCEL_RESERVATION,
        {"reservation_id": reservation.reservation_id},
        reservation=reservation,
        evse=reservation.evse,
        booking=booking,
    )


def command_unlock_connector(*, evse: Evse, connector_id: str) -> Command:
    """Operator/helpdesk only, never driver-triggered (mod_commands §UNLOCK_CONNECTOR)."""
    payload = {"location_id": evse.location.location_id, "evse_uid": evse.uid, "connector_id": connector_id}
    return _create(evse.location.partner, Command.Type.UNLOCK_CONNECTOR, payload, evse=evse)


def command_send(command: Command) -> Command:
    """POST the command to the CPO's Commands receiver and store its CommandResponse."""
    if not Command.objects.filter(pk=command.pk, status=Command.Status.QUEUED).update(status=Command.Status.SENT):
        command.refresh_from_db()
        return command  # already sent (a duplicate task run)
    partner = command.partner
    base = partner.endpoint_url("commands", "RECEIVER") or partner.endpoint_url("commands")
    now = timezone.now()
    if not base or partner.state != Partner.State.CONNECTED:
        return _finish(command, Command.Status.FAILED, error="The CPO has no Commands receiver or is not connected")
    try:
        reply = OcpiClient(partner).request("POST", f"{base}/{command.type}", module="commands", json=command.request)
        response = unwrap_object_payload(reply.data)
    except OcpiClientError as exc:
        return _finish(command, Command.Status.FAILED, error=str(exc))
    result = str(response.get("result") or "").strip().upper()
    command.response = response
    command.response_result = result
    if result != "ACCEPTED":
        return _finish(command, Command.Status.FAILED, error=_messages(response) or f"CommandResponse {result}")
    timeout = _timeout_seconds(response.get("timeout"))
    command.timeout_at = now + timedelta(seconds=timeout)
    Command.objects.filter(pk=command.pk, status=Command.Status.SENT).update(
        status=Command.Status.ACCEPTED,
        response=command.response,
        response_result=result,
        timeout_at=command.timeout_at,
    )
    command.refresh_from_db()
    if command.status in Command.FINAL_STATUSES:
        return command  # the CommandResult overtook the CommandResponse
    if command.type == Command.Type.RESERVE_NOW and command.reservation_id:
        Reservation.objects.filter(pk=command.reservation_id, status=Reservation.Status.HELD).update(
            status=Reservation.Status.REQUESTED
        )
    _schedule_timeout(command, timeout)
    return command


def _timeout_seconds(value: Any) -> int:
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        seconds = 0
    return seconds if seconds > 0 else settings.OCPI_COMMAND_DEFAULT_TIMEOUT_SECONDS


def _schedule_timeout(command: Command, timeout: int) -> None:
    from emsp.tasks import command_check_timeout

    pk = command.pk
    transaction.on_commit(lambda: command_check_timeout.apply_async((pk,), countdown=timeout + 1))


def _messages(obj: dict[str, Any]) -> str:
    texts = []
    for message in obj.get("message") or []:
        if isinstance(message, dict) and message.get("text"):
            texts.append(str(message["text"]))
    return "; ".join(texts)


def _finish(command: Command, status: str, *, error: str = "", result: dict[str, Any] | None = None) -> Command:
    command.status = status
    command.error = error[:2000]
    if result is not None:
        command.result = result
        command.result_type = str(result.get("result") or "")
    command.save()
    _apply_effects(command)
    hooks.command_finished(command)
    return command


def command_result_received(command: Command, result: dict[str, Any]) -> Command:
    """The CPO posted a CommandResult to our response_url. A late result (after TIMEOUT) still counts."""
    result_type = str(result.get("result") or "").strip().upper()
    if result_type not in COMMAND_RESULT_TYPES:
        raise CommandError(f"unknown CommandResultType {result_type!r}")
    result = {**result, "result": result_type}
    with transaction.atomic():
        command = Command.objects.select_for_update().get(pk=command.pk)
        if command.result_type == result_type and command.result == result:
            return command  # a duplicate post
        if result_type == "CANCELED_RESERVATION":
            # The CPO cancelled a reservation it had accepted (mod_commands §ReserveNow).
            command.result = result
            command.result_type = result_type
            command.save()
            if command.reservation_id:
                Reservation.objects.filter(pk=command.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(
                    status=Reservation.Status.CANCELLED
                )
                hooks.reservation_cancelled_by_cpo(command.reservation)
            return command
        status = Command.Status.SUCCEEDED if result_type == "ACCEPTED" else Command.Status.FAILED
        return _finish(
            command,
            status,
            error="" if status == Command.Status.SUCCEEDED else (_messages(result) or result_type),
            result=result,
        )


def _apply_effects(command: Command) -> None:
    if not command.reservation_id:
        return
    succeeded = command.status == Command.Status.SUCCEEDED
    if command.type == Command.Type.RESERVE_NOW:
        new = Reservation.Status.RESERVED if succeeded else Reservation.Status.FAILED
        if command.status == Command.Status.TIMEOUT:
            return  # unknown outcome: keep holding the EVSE until the reservation expires
        Reservation.objects.filter(pk=command.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(status=new)
    elif command.type == Command.Type.CANCEL_RESERVATION and succeeded:
        Reservation.objects.filter(pk=command.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(
            status=Reservation.Status.CANCELLED
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
        command = _finish(command, Command.Status.TIMEOUT, error="No CommandResult within the CPO's timeout")
    if command.type in (Command.Type.START_SESSION, Command.Type.STOP_SESSION):
        from ocpi.sync import sync_module

        try:
            sync_module(command.partner, "sessions", date_from=command.created_at - timedelta(minutes=5))
        except Exception:
            log.warning("sessions check after %s timed out failed", command, exc_info=True)
    return command


SENT_GRACE = timedelta(seconds=60)


def commands_expire_due(now: datetime | None = None) -> int:
    """Sweep for commands whose timeout task was lost (worker restarts), and for commands left SENT by a
    worker that died between posting and storing the CommandResponse: those become TIMEOUT too (never
    re-sent: the CPO may have acted on the first), and the CPO's sessions are checked."""
    now = now or timezone.now()
    stuck = Command.objects.filter(status=Command.Status.SENT, updated_at__lte=now - SENT_GRACE)
    Command.objects.filter(pk__in=list(stuck.values_list("pk", flat=True))).update(
        status=Command.Status.ACCEPTED, timeout_at=now, error="no CommandResponse recorded (worker interrupted)"
    )
    ids = list(Command.objects.filter(status=Command.Status.ACCEPTED, timeout_at__lte=now).values_list("pk", flat=True))
    return sum(1 for pk in ids if command_check_timeout(pk, now) is not None)
