"""Unsolicited callbacks: what the BAP hears without asking when the CPO's side changes — on_status when
the session changes state or a start fails, on_update with the final quote and payment once the CDR is
billed, on_cancel when a booked charger fails (with up to three nearby alternatives). Each carries a new
message_id. These are handlers of the domain's events (emsp/events.py), subscribed in BecknConfig.ready()."""

from __future__ import annotations

import logging
from typing import Any

from beckn import callbacks
from beckn.catalogue import alternatives, alternatives_tags
from beckn.handlers import START_TIMEOUT, send_alternatives, start_timed_out
from beckn.models import BecknMessage, BecknTransaction
from beckn.rendering import cancellation_terms, charger_answer, order_block
from emsp import events
from emsp.models import Booking, Command
from emsp.services import bookings

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


def _send(txn: BecknTransaction, action: str, message: dict[str, Any], error: dict[str, str] | None = None) -> None:
    context = callbacks.callback_context(None, action, txn=txn)
    callbacks.enqueue(action=action, context=context, message=message, error=error, txn=txn)


def session_changed(event: events.BookingSessionChanged) -> None:
    booking = event.booking
    txn = _txn(booking)
    if txn is not None:
        _send(txn, "on_status", {"order": order_block(booking, txn)})


def command_finished(event: events.CommandFinished) -> None:
    """A start that failed or timed out reaches the BAP (OCPI TIMEOUT: we keep watching for a late session). Not
    while the update that sent it is unanswered (RECEIVED): its on_update carries the outcome (beckn/handlers.py
    `_answer_sent`, which reads the command after this transaction commits)."""
    command = event.command
    booking = command.booking
    if booking is None:
        return
    if command.type == Command.Type.STOP_SESSION:
        _stop_finished(command, booking)
        return
    if command.type != Command.Type.START_SESSION:
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
    """A stop the app asked for by `update` that failed after its on_update had gone without the outcome: the
    command's own queued task (emsp.tasks.command_send) had sent it first, and the CPO refused it or did not
    answer. The booking stays STOPPING, and the booking checks send the stop once more; the app is told, or the
    driver takes the charge for stopping while it goes on. While the update is unanswered (RECEIVED), its
    on_update tells it; a stop no update sent (asked before the session was reported, or the booking checks'
    second one) is not told, as before."""
    if command.status not in (Command.Status.FAILED, Command.Status.TIMEOUT):
        return
    if not BecknMessage.objects.filter(command=command, status=BecknMessage.Status.PROCESSED).exists():
        return
    txn = _txn(booking)
    if txn is not None:
        booking.refresh_from_db()
        error = {"code": "40006", "message": f"Charging could not be stopped yet: {charger_answer(command)}"}
        _send(txn, "on_status", {"order": order_block(booking, txn)}, error=error)


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
