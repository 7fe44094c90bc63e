"""A STOP_SESSION no `update` is waiting on that the CPO refuses or leaves unanswered is told to the app, once per
stop (beckn/events.py `_stop_finished`): one asked for before the CPO reported the session (by `update` or by
`cancel`), the booking checks' second one, and the stop of a late session on an order that had ended. Otherwise
the driver takes the charge for stopping, or stopped, while it goes on and is billed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from beckn import tasks
from emsp import events
from emsp.models import Booking, ChargingSession, Command, Partner
from emsp.services.commands import command_check_timeout, command_result_received
from emsp.services.sessions import session_put
from tests.beckn.bap import CPO_BASE
from tests.beckn.conformance import assert_valid
from tests.beckn.test_late_sessions_of_ended_bookings import at, cancelled, late_session, reconcile, stops
from tests.beckn.test_update_crash_safety import START, STOP, answers, charging, ordered, update_body
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

REJECTED = (200, envelope({"result": "REJECTED"}))


def update(bap: Any, booking: Booking, code: str) -> dict[str, Any]:
    """An update to start or stop, run as its queued task; its on_update."""
    body = update_body(bap, booking, code)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))
    (answer,) = answers(bap, body)
    return answer


def started(bap: Any) -> Booking:
    """An order whose START_SESSION the CPO accepted, its session not reported yet."""
    booking = ordered(bap)
    assert "error" not in update(bap, booking, START)
    return booking


def reported(bap: Any, network: Partner, booking: Booking) -> ChargingSession:
    with bap.capture(execute=True):
        return charging(network, booking)


def told(bap: Any, since: int) -> list[dict[str, Any]]:
    """The on_status callbacks with an error since the first `since`, each checked against core 1.1.0."""
    bodies = [b for b in bap.bap.callbacks("on_status")[since:] if "error" in b]
    for body in bodies:
        assert_valid("on_status", body)
    return bodies


def statuses(bap: Any) -> int:
    return len(bap.bap.callbacks("on_status"))


def fulfillment_state(body: dict[str, Any]) -> str:
    return body["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["name"]


# --- (a) a stop asked for before the CPO reported the session -----------------------------------------------------


def test_a_stop_asked_for_before_the_session_was_reported_and_refused_is_told(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    booking = started(bap)
    assert "error" not in update(bap, booking, STOP)  # recorded: sent when the session is reported
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING
    assert not Command.objects.filter(booking=booking, type=Command.Type.STOP_SESSION).exists()
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", REJECTED)
    since = statuses(bap)

    reported(bap, network, booking)

    (body,) = told(bap, since)
    assert body["error"]["code"] == "40006"
    assert body["error"]["message"].startswith("Charging could not be stopped yet: the charger refused")
    assert "again" in body["error"]["message"]  # the booking checks send it once more
    assert (body["message"]["order"]["status"], fulfillment_state(body)) == ("ACTIVE", "Stopping")


def test_a_cancel_while_starting_whose_stop_is_refused_when_the_session_is_reported_is_told(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """A cancel once the start stands is a stop (bookings.booking_cancel): the on_cancel said it is stopping."""
    booking = started(bap)
    bap("cancel", {"order_id": booking.order_id, "cancellation_reason_id": "changed-plans"})
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", REJECTED)
    since = statuses(bap)

    reported(bap, network, booking)

    (body,) = told(bap, since)
    assert "could not be stopped yet" in body["error"]["message"]


def test_a_stop_timed_out_then_refused_by_a_late_result_is_told_once(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """CommandFinished comes twice for one command: TIMEOUT, then the late CommandResult (still counted)."""
    booking = started(bap)
    reported(bap, network, booking)
    assert "error" not in update(bap, booking, STOP)  # the stop ACCEPTED, its result to come
    stop = Command.objects.get(booking=booking, type=Command.Type.STOP_SESSION)
    since = statuses(bap)

    with bap.capture(execute=True):
        command_check_timeout(stop.pk, now=timezone.now() + timedelta(minutes=1))
    with bap.capture(execute=True):
        command_result_received(stop, {"result": "REJECTED"})

    assert Command.objects.get(pk=stop.pk).status == Command.Status.FAILED
    (body,) = told(bap, since)
    assert "could not be stopped yet: the charger did not confirm the stop in time" in body["error"]["message"]


def test_a_finished_stop_published_again_is_told_once(bap: Any, peer: FakePeer, network: Partner) -> None:
    booking = started(bap)
    reported(bap, network, booking)
    update(bap, booking, STOP)
    since = statuses(bap)
    stop = Command.objects.get(booking=booking, type=Command.Type.STOP_SESSION)
    with bap.capture(execute=True):
        command_result_received(stop, {"result": "REJECTED"})

    with bap.capture(execute=True):
        events.publish(events.CommandFinished(Command.objects.get(pk=stop.pk)))  # a handler run again (a replay)

    assert len(told(bap, since)) == 1


def test_a_stop_refused_after_the_session_ended_is_not_told(bap: Any, peer: FakePeer, network: Partner) -> None:
    """The charger stopped on its own meanwhile: "could not be stopped" would be untrue."""
    booking = started(bap)
    session = reported(bap, network, booking)
    assert "error" not in update(bap, booking, STOP)  # the stop ACCEPTED, its result to come
    with bap.capture(execute=True):
        charging_session_completed(network, session)
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.COMPLETED
    since = statuses(bap)

    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="STOP_SESSION"), {"result": "REJECTED"})

    assert told(bap, since) == []


def charging_session_completed(network: Partner, session: ChargingSession) -> None:
    stamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    obj = {**session.data, "status": "COMPLETED", "end_date_time": stamp, "last_updated": stamp}
    session_put(network, obj)


# --- (b) the booking checks' second stop ---------------------------------------------------------------------------


def test_the_booking_checks_second_stop_refused_is_told_with_what_the_driver_can_do(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    booking = started(bap)
    reported(bap, network, booking)
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", REJECTED)
    assert update(bap, booking, STOP)["error"]["code"] == "40006"  # the first refusal: in the on_update
    since = statuses(bap)

    reconcile(bap, at(6))

    assert len(peer.requests_to("STOP_SESSION")) == 2
    (body,) = told(bap, since)
    assert body["error"]["code"] == "40006"
    message = body["error"]["message"]
    assert message.startswith("Charging could not be stopped yet: the charger refused")
    assert "stop it at the charger" in message  # no third stop comes
    assert fulfillment_state(body) == "Stopping"
    reconcile(bap, at(12 + 15))
    assert len(told(bap, since)) == 1


# --- (c) the stop of a late session on an order that had ended ------------------------------------------------------


def test_a_refused_stop_of_a_late_session_is_told_the_order_ended_but_a_charge_goes_on(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    booking = cancelled(bap, peer)
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", REJECTED)
    since = statuses(bap)
    cancels = len(bap.bap.callbacks("on_cancel"))

    session = late_session(bap, network, booking)

    assert [c.status for c in stops(session)] == [Command.Status.FAILED]
    (body,) = told(bap, since)
    assert body["error"]["code"] == "40006"
    message = body["error"]["message"]
    assert "the order had ended, but a charge began" in message.lower()
    assert "unplug" in message and "billed" in message
    assert body["message"]["order"]["status"] == "CANCELLED"
    assert len(bap.bap.callbacks("on_cancel")) == cancels  # the order is not cancelled a second time

    reconcile(bap, at(6))  # the booking checks' second stop, refused too: told once more, for that stop
    assert [c.status for c in stops(session)] == [Command.Status.FAILED, Command.Status.FAILED]
    assert len(told(bap, since)) == 2
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CANCELLED
