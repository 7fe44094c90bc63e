"""A START_SESSION whose outcome we don't know is not a refused one: its answer lost on the way (a read timeout),
or the CPO's CommandResult TIMEOUT (the charge point did not answer it in time). The charger may start all the
same: no second start, a cancel is a stop, and the booking checks look for the session rather than end the booking
FAILED (which had released the hold and left a late session running unstopped)."""

from __future__ import annotations

from typing import Any

import pytest

from emsp import outbound
from emsp.models import Booking, Command, Evse
from emsp.services import bookings, commands, sessions
from tests.emsp import test_booking_checks as checks
from tests.emsp.test_booking_checks import CPO, Capture, later, list_sessions, reconcile, session_object, start
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db
# The booking checks' fixtures: an EVSE a start goes to at once, after-commit work run, the CPO's answers.
evse, capture, _answers = checks.evse, checks.capture, checks._answers


def read_timeout(call: dict[str, Any]) -> Any:
    raise outbound.OutboundError("ReadTimeoutError: read timeout")


def test_a_start_whose_answer_was_lost_is_of_unknown_outcome_not_refused(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    peer.route("POST", f"{CPO}/commands/START_SESSION", read_timeout)
    booking = start(evse, capture, result=None)
    command = Command.objects.get(booking=booking, type="START_SESSION")
    assert command.status == Command.Status.TIMEOUT
    assert not bookings.start_refused(booking)
    with capture():
        bookings.booking_start(booking) if bookings.start_refused(booking) else None
    assert len(peer.requests_to("START_SESSION")) == 1
    with capture():
        commands.command_result_received(command, {"result": "ACCEPTED"})  # the CPO's late result still counts
    command.refresh_from_db()
    assert command.status == Command.Status.SUCCEEDED
    with capture():
        bookings.booking_cancel(booking, reason="changed my mind")
    booking.refresh_from_db()
    assert booking.state == Booking.State.STOPPING  # a stop: the charge may be on
    with capture():
        sessions.session_put(
            booking.evse.location.partner, session_object(booking, reference=command.authorization_reference)
        )
    assert Command.objects.filter(booking=booking, type="STOP_SESSION").count() == 1


def test_a_timeout_result_has_the_checks_look_for_the_session_not_end_the_booking(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = start(evse, capture, result="TIMEOUT")
    reference = Command.objects.get(booking=booking, type="START_SESSION").authorization_reference
    list_sessions(peer, session_object(booking, reference=reference))  # the charger did start; its push was lost
    reconcile(capture, later(6))
    booking.refresh_from_db()
    assert len(peer.requests_to("/sessions")) == 1
    assert booking.state == Booking.State.CHARGING


def test_a_cancel_after_a_timeout_result_stays_a_stop_through_the_checks(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = start(evse, capture, result="TIMEOUT")
    reference = Command.objects.get(booking=booking, type="START_SESSION").authorization_reference
    with capture():
        bookings.booking_cancel(booking, reason="changed my mind")
    reconcile(capture, later(6))
    booking.refresh_from_db()
    assert booking.state == Booking.State.STOPPING
    with capture():
        sessions.session_put(booking.evse.location.partner, session_object(booking, reference=reference))
    assert Command.objects.filter(booking=booking, type="STOP_SESSION").count() == 1
