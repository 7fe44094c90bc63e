"""A START_SESSION whose charge has begun is not told to the app as failed or timed out (beckn/events.py
`command_finished`, commands.charging_began). The CPO may push the Session (ACTIVE: the booking CHARGING) before
its CommandResult, or without one: our sweep then times the start out, or a late CommandResult TIMEOUT or FAILED
comes, and the app had been sent an on_status with 40006 ("TIMEOUT: the charger did not confirm the start in
time…", "Charging could not start: …") while the same callback's order said ACTIVE / Charging.

A start with no charge begun is still told: a sweep TIMEOUT and a late FAILED result here, a CommandResult
TIMEOUT or REJECTED in tests/beckn/test_post_order_review_fixes.py
(`test_a_start_the_cpo_answered_timeout_is_told_as_a_timeout_not_a_refusal`, `refused_start`), a sweep TIMEOUT of
a start whose answer was lost in tests/beckn/test_update_crash_safety.py
(`test_a_worker_killed_after_the_cpo_took_the_start_does_not_start_twice`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from beckn import tasks
from beckn.handlers import START_TIMEOUT
from emsp.models import Booking, ChargingSession, Command, Partner
from emsp.services.commands import command_check_timeout, command_result_received
from emsp.services.sessions import session_put
from tests.beckn.bap import CPO_BASE
from tests.beckn.test_stop_refusals_told import fulfillment_state, reported, started, statuses, told, update
from tests.beckn.test_update_crash_safety import START, STOP, answers, charging, ordered, update_body
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db


def start_of(booking: Booking) -> Command:
    return Command.objects.get(booking=booking, type=Command.Type.START_SESSION)


def swept(bap: Any, peer: FakePeer, start: Command) -> None:
    """Our sweep finds no CommandResult after the CPO's `timeout`: TIMEOUT, then the CPO's sessions are pulled."""
    peer.route("GET", f"{CPO_BASE}/sessions", (200, envelope([])))
    with bap.capture(execute=True):
        command_check_timeout(start.pk, now=timezone.now() + timedelta(minutes=5))


def late_result(bap: Any, start: Command, result: str) -> None:
    with bap.capture(execute=True):
        command_result_received(start, {"result": result})


def pending(bap: Any, network: Partner, booking: Booking) -> ChargingSession:
    """The CPO reports the start's session PENDING: not charging yet (the charge point may still fail it)."""
    start = start_of(booking)
    stamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    with bap.capture(execute=True):
        session_put(
            network,
            {
                "country_code": "IN", "party_id": "CPA", "id": "S-P", "start_date_time": stamp, "kwh": 0,
                "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                              "contract_id": booking.token.contract_id},
                "auth_method": "COMMAND", "authorization_reference": start.authorization_reference,
                "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
                "currency": "INR", "status": "PENDING", "last_updated": stamp,
            },
        )  # fmt: skip
    return ChargingSession.objects.get(session_id="S-P")


# --- the charge has begun: nothing negative told ------------------------------------------------------------------


def test_the_sweep_timing_out_a_start_whose_session_charges_tells_nothing(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    booking = started(bap)
    session = reported(bap, network, booking)  # the CPO pushed the session: ACTIVE, the booking CHARGING
    start = start_of(booking)
    assert start.session_id == session.pk
    since = statuses(bap)

    swept(bap, peer, start)

    assert Command.objects.get(pk=start.pk).status == Command.Status.TIMEOUT
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CHARGING
    assert told(bap, since) == []


@pytest.mark.parametrize("result", ["TIMEOUT", "FAILED", "REJECTED"])
def test_a_late_negative_result_of_a_start_whose_session_charges_tells_nothing(
    bap: Any, peer: FakePeer, network: Partner, result: str
) -> None:
    booking = started(bap)
    reported(bap, network, booking)
    since = statuses(bap)

    late_result(bap, start_of(booking), result)

    assert Command.objects.get(pk=start_of(booking).pk).status == Command.Status.FAILED
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CHARGING
    assert told(bap, since) == []


def test_a_start_timed_out_by_the_sweep_then_failed_late_while_charging_tells_nothing(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """Both finishes of one command (TIMEOUT, then the late CommandResult, which still counts)."""
    booking = started(bap)
    reported(bap, network, booking)
    since = statuses(bap)

    swept(bap, peer, start_of(booking))
    late_result(bap, start_of(booking), "FAILED")

    assert told(bap, since) == []


def test_a_start_whose_session_was_reported_with_another_reference_is_judged_by_its_booking(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """The session not linked to the command (command.session_id unset), the booking CHARGING on it all the same."""
    booking = started(bap)
    reported(bap, network, booking)
    start = start_of(booking)
    Command.objects.filter(pk=start.pk).update(session=None)
    since = statuses(bap)

    late_result(bap, start, "TIMEOUT")

    assert told(bap, since) == []


def test_a_late_negative_result_of_a_start_whose_charge_is_being_stopped_tells_nothing(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """The booking STOPPING on the session the start began (the driver asked to stop): judged by that session."""
    booking = started(bap)
    reported(bap, network, booking)
    assert "error" not in update(bap, booking, STOP)
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING
    since = statuses(bap)

    late_result(bap, start_of(booking), "TIMEOUT")

    assert told(bap, since) == []


# --- no charge begun: still told ----------------------------------------------------------------------------------


def test_the_sweep_timing_out_a_start_without_a_session_is_still_told(bap: Any, peer: FakePeer) -> None:
    booking = started(bap)
    since = statuses(bap)

    swept(bap, peer, start_of(booking))

    (body,) = told(bap, since)
    assert body["error"] == {"code": "40006", "message": START_TIMEOUT}
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    assert fulfillment_state(body) != "Charging"


def test_a_late_failed_result_of_a_start_without_a_session_is_still_told(bap: Any, peer: FakePeer) -> None:
    booking = started(bap)
    since = statuses(bap)

    late_result(bap, start_of(booking), "FAILED")

    (body,) = told(bap, since)
    assert body["error"]["code"] == "40006"
    assert body["error"]["message"].startswith("Charging could not start: ")


@pytest.mark.parametrize("result", ["TIMEOUT", "FAILED"])
def test_a_start_whose_session_is_only_pending_is_still_told(
    bap: Any, peer: FakePeer, network: Partner, result: str
) -> None:
    """A PENDING session is linked to its command, but nothing charges: the charge point may fail to start it."""
    booking = started(bap)
    session = pending(bap, network, booking)
    assert start_of(booking).session_id == session.pk
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    since = statuses(bap)

    late_result(bap, start_of(booking), result)

    (body,) = told(bap, since)
    assert body["error"]["code"] == "40006"


# --- the update's own answer (beckn/handlers.py `_answer_sent`, `_command_outcome`) -------------------------------


@pytest.mark.parametrize("result", ["TIMEOUT", "FAILED"])
def test_the_answer_to_a_start_whose_session_charges_before_its_answer_tells_nothing_negative(
    bap: Any, peer: FakePeer, network: Partner, result: str
) -> None:
    """The CPO pushes the session, then a CommandResult TIMEOUT or FAILED, before its CommandResponse: the update
    is still unanswered (its on_update carries the outcome, and no on_status), and the order it carries charges."""
    booking = ordered(bap)

    def session_then_result(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        charging(network, booking)
        command_result_received(start_of(booking), {"result": result})
        return 200, envelope({"result": "ACCEPTED", "timeout": 30}), {}

    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", session_then_result)
    since = statuses(bap)
    body = update_body(bap, booking, START)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))

    (answer,) = answers(bap, body)
    assert "error" not in answer
    assert answer["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["name"] == "Charging"
    assert told(bap, since) == []
