"""Unsolicited callbacks: what the BAP hears without asking when the CPO's side changes — on_status when
the session changes state or a start fails, on_update with the final quote and payment once the CDR is
billed, on_cancel when a booked charger fails (with up to three nearby alternatives). Each carries a new
message_id. These are handlers of the domain's events (emsp/events.py), subscribed in BecknConfig.ready()."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings

from beckn import callbacks
from beckn.catalogue import alternatives, alternatives_tags
from beckn.errors import FULFILMENT_AGENT_UNAVAILABLE
from beckn.handlers import START_TIMEOUT, send_alternatives, start_timed_out
from beckn.models import BecknCallback, BecknMessage, BecknTransaction
from beckn.rendering import cancellation_terms, charger_answer, order_block, stop_answer
from emsp import events
from emsp.models import Booking, ChargingSession, Command
from emsp.services import booking_checks, bookings, commands

log = logging.getLogger(__name__)


def _txn(booking: Booking) -> BecknTransaction | None:
    """The Beckn journey of a booking; None for a booking made outside Beckn (console, tests). By the app and
    transaction the order was confirmed in: the journey's current booking is another order once the app confirmed
    an alternative in the same transaction, and news of the first (its refund, its end) still goes to the app."""
    if booking.app_id:
        journey = BecknTransaction.objects.filter(bap_id=booking.app_id, transaction_id=booking.app_transaction_id)
        if (found := journey.first()) is not None:
            return found
    return BecknTransaction.objects.filter(booking=booking).first()


def _send(
    txn: BecknTransaction,
    action: str,
    message: dict[str, Any],
    error: dict[str, str] | None = None,
    message_id: str | None = None,
) -> None:
    context = callbacks.callback_context(None, action, txn=txn, message_id=message_id)
    callbacks.enqueue(action=action, context=context, message=message, error=error, txn=txn)


def session_changed(event: events.BookingSessionChanged) -> None:
    booking = event.booking
    txn = _txn(booking)
    if txn is not None:
        _send(txn, "on_status", {"order": order_block(booking, txn)})


def command_finished(event: events.CommandFinished) -> None:
    """A start that failed or timed out reaches the BAP (OCPI TIMEOUT: we keep watching for a late session). Not
    while the update that sent it is unanswered (RECEIVED): its on_update carries the outcome (beckn/handlers.py
    `_answer_sent`, which reads the command after this transaction commits). Nor once its charge has begun
    (commands.charging_began: the CPO pushed the session before the CommandResult, or without one)."""
    command = event.command
    booking = command.booking
    if booking is None:
        return
    if command.type == Command.Type.STOP_SESSION:
        _stop_finished(command, booking)
        return
    if command.type != Command.Type.START_SESSION:
        return
    if commands.charging_began(command):
        # The CPO reported the session before (or without) the start's outcome: the app heard it charging
        # (session_changed). A TIMEOUT or a late FAILED result says nothing it must hear, where "could not start"
        # had come with an order saying Charging.
        return
    # A CommandResult TIMEOUT is recorded FAILED but refuses nothing (bookings._start_standing): told as a timeout,
    # not "could not start", which had an app retry into a 50002.
    if start_timed_out(command):
        error = {"code": "40006", "message": START_TIMEOUT}
    elif command.status == Command.Status.FAILED:
        error = {
            "code": "40006",
            "message": f"Charging could not start: {charger_answer(command)}",
        }
    else:
        return
    if BecknMessage.objects.filter(command=command, status=BecknMessage.Status.RECEIVED).exists():
        return
    txn = _txn(booking)
    if txn is not None:
        booking.refresh_from_db()
        _send(txn, "on_status", {"order": order_block(booking, txn)}, error=error)


def _stop_finished(command: Command, booking: Booking) -> None:
    """A STOP_SESSION the CPO refused or did not answer, while the charge goes on: the app is told (on_status
    with the error), or the driver takes the charge for stopping, or stopped, while it goes on and is billed.
    Whoever sent it: an `update` answered before the outcome (the command's own queued task sent it first), a
    stop asked for before the CPO reported the session (by `update` or `cancel`, sent when it is reported), the
    booking checks' second one, or the stop of a late session on an order that had ended. While the update that
    sent it is unanswered (RECEIVED), its on_update tells it. Once per command: a TIMEOUT is finished again by a
    late CommandResult."""
    if command.status not in (Command.Status.FAILED, Command.Status.TIMEOUT):
        return
    if BecknMessage.objects.filter(command=command, status=BecknMessage.Status.RECEIVED).exists():
        return
    ended = (ChargingSession.Status.COMPLETED, ChargingSession.Status.INVALID)
    if not ChargingSession.objects.filter(pk=command.session_id).exclude(status__in=ended).exists():
        return  # the charge ended meanwhile (the charger stopped it, the driver unplugged): nothing goes on
    txn = _txn(booking)
    if txn is None:
        return
    told = _stop_told_id(command)
    if BecknCallback.objects.filter(transaction=txn, action="on_status", message_id=told).exists():
        return
    told_in_answer = BecknCallback.objects.filter(
        request__command=command,
        request__status=BecknMessage.Status.PROCESSED,
        body__contains=f'"code":"{FULFILMENT_AGENT_UNAVAILABLE}"',
    )
    if told_in_answer.exists():
        # Its update's answer told it (beckn/handlers.py _command_outcome): a timeout, then a late refusal. Not
        # an answer that failed for a reason of its own (handlers._failed: 40000, the request FAILED).
        return
    booking.refresh_from_db()
    message = _stop_not_done(command, booking)
    if message:
        error = {"code": FULFILMENT_AGENT_UNAVAILABLE, "message": message}
        _send(txn, "on_status", {"order": order_block(booking, txn)}, error=error, message_id=told)


def _stop_not_done(command: Command, booking: Booking) -> str:
    """What the driver must hear of a stop not done, or "" (the booking has moved on). A STOPPING booking's stop
    is sent once more by the booking checks, the last one not. A late session of an order that had ended
    (bookings._late_session: its start's answer lost, then the driver cancelled) is said in words of its own, in
    an on_status too: the app heard the order end, a second on_cancel would read as a second cancellation and an
    unsolicited on_update carries the bill."""
    answer = stop_answer(command)
    if booking.state == Booking.State.STOPPING:
        if booking_checks.stop_tried_again(booking):
            return f"Charging could not be stopped yet: {answer}; we are asking the charger again"
        return (
            f"Charging could not be stopped yet: {answer}; please stop it at the charger or unplug the vehicle, "
            "as what it charges until then is billed to you"
        )
    if booking.state in bookings.ENDED_STATES:
        return (
            f"The order had ended, but a charge began on it that could not be stopped ({answer}): please unplug "
            "the vehicle, as what it charges is billed to you"
        )
    return ""


# The on_status that tells of a failed stop has a message_id derived from the command: its outbox row is the
# record that it was told, so a second CommandFinished for the command (a TIMEOUT, then the late CommandResult;
# a handler run again) finds it and tells nothing more. Each is published with the command's row locked
# (commands.py), so the second waits for the first to commit.
STOP_TOLD_NAMESPACE = uuid.UUID("6b1d3c0e-5f7a-4c28-9e41-2a8d7f05b3c9")


def _stop_told_id(command: Command) -> str:
    return str(uuid.uuid5(STOP_TOLD_NAMESPACE, f"{settings.BECKN_SUBSCRIBER_ID}/stop-not-done/{command.uid}"))


def _order_update(booking: Booking) -> None:
    """An unsolicited on_update with the order as it now stands (a booking made outside Beckn: nothing)."""
    txn = _txn(booking)
    if txn is not None:
        booking.refresh_from_db()
        _send(txn, "on_update", {"order": order_block(booking, txn)})


def booking_settled(event: events.BookingSettled) -> None:
    """The CDR is billed: the final quote and the payment due (DEG00x: POST-FULFILLMENT = the CDR total)."""
    _order_update(event.booking)


def booking_cancelled_by_provider(event: events.BookingCancelledByProvider) -> None:
    """The operator's side ended a booking before charging (charger fault, reservation refused or cancelled by
    the CPO, or the driver's no-show): on_cancel with the reason and our cancellation terms. Unless the driver
    simply did not come, chargers to book instead follow as an on_search catalogue (named in the order's
    tags too)."""
    booking, reason, code = event.booking, event.reason, event.code
    txn = _txn(booking)
    if txn is None:
        return
    hits = [] if code == bookings.NO_SHOW else alternatives(booking.evse, booking.connector_id)
    tags = (
        [
            {
                "descriptor": {"code": "alternatives", "name": "Nearby chargers you can book instead"},
                "list": alternatives_tags(hits),
            }
        ]
        if hits
        else None
    )
    booking.refresh_from_db()
    order = order_block(booking, txn, extra_tags=tags)
    order["cancellation"] = {
        "cancelled_by": "PROVIDER",
        "time": callbacks.now_rfc3339(),
        "reason": {"descriptor": {"code": code, "name": reason}},
    }
    currency = booking.quote.currency if booking.quote is not None else "EUR"
    order["cancellation_terms"] = cancellation_terms(currency)
    _send(txn, "on_cancel", {"order": order})
    if hits:
        send_alternatives(hits, txn=txn)


def payment_changed(event: events.BookingPaymentChanged) -> None:
    """The money of an order moved (authorised, captured, refunded, failed, a balance to pay): on_update."""
    _order_update(event.booking)


def subscribe() -> None:
    events.subscribe(events.BookingPaymentChanged, payment_changed)
    events.subscribe(events.BookingSessionChanged, session_changed)
    events.subscribe(events.CommandFinished, command_finished)
    events.subscribe(events.BookingSettled, booking_settled)
    events.subscribe(events.BookingCancelledByProvider, booking_cancelled_by_provider)
