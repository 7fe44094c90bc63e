"""A START_SESSION the CPO answered with a CommandResult TIMEOUT (the charge point did not answer it in time) is
not a refused one: the charger may start all the same, so a cancel is a stop, and the booking checks look for the
session rather than end the booking FAILED (which had released the hold and left a late session running
unstopped)."""

from __future__ import annotations

import pytest

from emsp.models import Booking, Command, Evse
from emsp.services import bookings, sessions
from tests.emsp import test_booking_checks as checks
from tests.emsp.test_booking_checks import Capture, later, list_sessions, reconcile, session_object, start
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db
# The booking checks' fixtures: an EVSE a start goes to at once, after-commit work run, the CPO's answers.
evse, capture, _answers = checks.evse, checks.capture, checks._answers


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
