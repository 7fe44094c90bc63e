"""Review fixes in OCPI commands: a CANCELED_RESERVATION that comes before the RESERVE_NOW's ACCEPTED result sends
the start the driver is waiting for at once (it had waited for our sweep to time the RESERVE_NOW out, up to the
CPO's whole timeout); a CommandResult TIMEOUT of a RESERVE_NOW cancels the reservation at the CPO, once, as our own
TIMEOUT does (the charger may have reserved); a synchronous CommandResponse is kept as its spec fields, its
message capped as a CommandResult's is (it had been stored whole, up to 20 MB)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from emsp.models import Booking, Command, Evse, Partner, Reservation
from emsp.services import booking_checks, bookings, commands
from ocpi.rendering import command_response_url
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope

COMMANDS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/commands"
SESSIONS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/sessions"


@pytest.fixture
def evse(partner: Partner) -> Evse:
    return stored_location(partner).evses.order_by("uid").first()


def answers(peer: FakePeer, command_type: str, data: dict[str, Any]) -> None:
    """The CPO's CommandResponse to `command_type`."""
    peer.route("POST", f"{COMMANDS_URL}/{command_type}", (200, envelope(data)))


def accepts(peer: FakePeer, *command_types: str, timeout: int = 60) -> None:
    for command_type in command_types:
        answers(peer, command_type, {"result": "ACCEPTED", "timeout": timeout})
    peer.route("GET", SESSIONS_URL, (200, envelope([])))


def book(evse: Evse, capture: Any) -> tuple[Booking, Command]:
    """A walk-up booking of a reservable EVSE: its RESERVE_NOW sent, accepted by the CPO, its result still due."""
    assert evse.is_reservable
    with capture(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    reserve = Command.objects.get(type=Command.Type.RESERVE_NOW)
    assert reserve.status == Command.Status.ACCEPTED
    return booking, reserve


def post_result(ocpi: OcpiTestClient, command: Command, result: dict[str, Any], capture: Any) -> None:
    """The CPO posts a CommandResult to the command's response_url."""
    path = command_response_url(command).split("8000", 1)[1]
    with capture(execute=True):
        assert ocpi.post(path, result).json()["status_code"] == 1000


# --- a CANCELED_RESERVATION before the RESERVE_NOW's result ----------------------------------------------------


@pytest.mark.django_db
def test_a_reservation_the_cpo_cancels_before_its_result_releases_the_waiting_start(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    accepts(peer, "RESERVE_NOW", "START_SESSION", timeout=3600)
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert bookings.booking_start(booking) is None  # waits for the reservation's result
    assert not peer.requests_to("START_SESSION")

    post_result(ocpi, reserve, {"result": "CANCELED_RESERVATION"}, django_capture_on_commit_callbacks)

    # Gone at the CPO, the EVSE stays held for the driver by us only, until the booking ends (it had been freed
    # under the start: another driver could book it).
    assert Reservation.objects.get().status == Reservation.Status.HELD
    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING
    assert bookings.active_hold(evse, timezone.now(), timezone.now() + timedelta(minutes=15)) is not None
    # The start goes out at once, straight to the EVSE (the reservation is gone), and only once.
    start = Command.objects.get(type=Command.Type.START_SESSION)
    assert (start.booking_id, start.reservation_id, start.status) == (booking.pk, None, Command.Status.ACCEPTED)
    assert len(peer.requests_to("START_SESSION")) == 1
    reserve.refresh_from_db()
    assert reserve.result_type == "CANCELED_RESERVATION"
    assert not bookings.reservation_pending(booking)  # no longer waiting for the CPO's result
    assert not peer.requests_to("CANCEL_RESERVATION")  # the CPO cancelled it itself

    later = timezone.now() + timedelta(minutes=30)
    with django_capture_on_commit_callbacks(execute=True):
        commands.commands_expire_due(later)
        booking_checks.booking_reconcile(booking=booking.pk, now=later)
    assert len(peer.requests_to("START_SESSION")) == 1
    # A late ACCEPTED result of the RESERVE_NOW changes nothing: the CPO's cancel came after it.
    post_result(ocpi, reserve, {"result": "ACCEPTED"}, django_capture_on_commit_callbacks)
    assert Reservation.objects.get().status != Reservation.Status.RESERVED
    assert Command.objects.filter(type=Command.Type.START_SESSION).count() == 1


@pytest.mark.django_db
def test_a_reservation_the_cpo_cancels_before_its_result_cancels_a_booking_waiting_for_its_driver_once(
    peer: FakePeer,
    evse: Evse,
    ocpi: OcpiTestClient,
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    accepts(peer, "RESERVE_NOW", timeout=3600)
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    told: list[str] = []
    cancel = bookings.cancel_by_provider

    def cancel_by_provider(booking: Booking, reason: str, *, code: str = bookings.CHARGER_FAULT) -> None:
        told.append(code)
        cancel(booking, reason, code=code)

    monkeypatch.setattr(bookings, "cancel_by_provider", cancel_by_provider)
    post_result(ocpi, reserve, {"result": "CANCELED_RESERVATION"}, django_capture_on_commit_callbacks)
    again = {"result": "CANCELED_RESERVATION", "message": [{"language": "en", "text": "cancelled"}]}
    post_result(ocpi, reserve, again, django_capture_on_commit_callbacks)
    later = timezone.now() + timedelta(hours=2)
    with django_capture_on_commit_callbacks(execute=True):
        commands.commands_expire_due(later)
        booking_checks.booking_reconcile(booking=booking.pk, now=later)

    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert told == [bookings.OPERATOR_CANCELLED]
    assert not peer.requests_to("START_SESSION")
    assert not peer.requests_to("CANCEL_RESERVATION")


# --- a CommandResult TIMEOUT of a RESERVE_NOW --------------------------------------------------------------------


@pytest.mark.django_db
def test_a_reservation_whose_charger_did_not_answer_the_cpo_is_cancelled_there(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    accepts(peer, "RESERVE_NOW", "CANCEL_RESERVATION")
    booking, reserve = book(evse, django_capture_on_commit_callbacks)

    post_result(ocpi, reserve, {"result": "TIMEOUT"}, django_capture_on_commit_callbacks)

    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1  # at once, on the result
    later = timezone.now() + timedelta(minutes=5)
    with django_capture_on_commit_callbacks(execute=True):
        booking_checks.booking_reconcile(booking=booking.pk, now=later)
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1  # not a second time


@pytest.mark.django_db
def test_a_reservation_whose_charger_did_not_answer_is_cancelled_again_by_the_checks_when_the_first_cancel_failed(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    accepts(peer, "RESERVE_NOW")
    answers(peer, "CANCEL_RESERVATION", {"result": "REJECTED", "timeout": 60})
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    post_result(ocpi, reserve, {"result": "TIMEOUT"}, django_capture_on_commit_callbacks)
    assert Command.objects.get(type=Command.Type.CANCEL_RESERVATION).status == Command.Status.FAILED
    later = timezone.now() + timedelta(minutes=5)
    with django_capture_on_commit_callbacks(execute=True):
        booking_checks.booking_reconcile(booking=booking.pk, now=later)
    assert len(peer.requests_to("CANCEL_RESERVATION")) == 2  # the checks' one more try


@pytest.mark.django_db
def test_a_walk_up_start_waiting_for_a_reservation_whose_charger_did_not_answer_goes_to_the_evse_holding_it(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    accepts(peer, "RESERVE_NOW", "START_SESSION", "CANCEL_RESERVATION")
    booking, reserve = book(evse, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert bookings.booking_start(booking) is None

    post_result(ocpi, reserve, {"result": "TIMEOUT"}, django_capture_on_commit_callbacks)

    start = Command.objects.get(type=Command.Type.START_SESSION)
    assert (start.reservation_id, start.status) == (None, Command.Status.ACCEPTED)  # straight to the EVSE
    assert not peer.requests_to("CANCEL_RESERVATION")
    # As after our own TIMEOUT: the charger may hold the reservation, so the EVSE stays held for the driver.
    assert Reservation.objects.get().status == Reservation.Status.REQUESTED
    assert bookings.active_hold(evse, timezone.now(), timezone.now() + timedelta(minutes=15)) is not None


# --- the synchronous CommandResponse as stored ---------------------------------------------------------------------


def stored_size(command: Command) -> int:
    """The length of the CommandResponse kept on the command, as JSON text (any database)."""
    kept = Command.objects.values_list("response", flat=True).get(pk=command.pk)
    return len(json.dumps(kept))


@pytest.mark.django_db
def test_a_commandresponse_is_kept_as_its_spec_fields(peer: FakePeer, evse: Evse) -> None:
    junk = "x" * 1_000_000
    answer = {
        "result": "ACCEPTED",
        "timeout": 30,
        "message": [{"language": "en", "text": junk} for _ in range(15)],
        **{f"extra{i}": junk for i in range(10)},
    }
    answers(peer, "START_SESSION", answer)
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.status == Command.Status.ACCEPTED
    assert stored_size(command) < 64_000, f"{stored_size(command)} characters of a CommandResponse stored"
    command.refresh_from_db()
    assert set(command.response) == {"result", "timeout", "message"}
    assert (command.response["result"], command.response["timeout"]) == ("ACCEPTED", 30)
    assert command.response["message"] == [{"language": "en", "text": "x" * 512}] * 10  # as a CommandResult's


@pytest.mark.django_db
def test_a_refused_commandresponse_keeps_its_words_capped(peer: FakePeer, evse: Evse) -> None:
    answers(peer, "START_SESSION", {"result": "REJECTED", "message": {"language": "en", "text": " busy " + "y" * 600}})
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert (command.status, command.response_result) == (Command.Status.FAILED, "REJECTED")
    assert command.response == {
        "result": "REJECTED",
        "message": [{"language": "en", "text": ("busy " + "y" * 600)[:512]}],
    }
    assert command.error == ("busy " + "y" * 600)[:512]


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", [True, False, "soon", None, -5, 0])
def test_a_commandresponse_timeout_that_is_no_positive_number_is_our_default(
    peer: FakePeer, evse: Evse, timeout: Any, settings: Any
) -> None:
    answers(peer, "START_SESSION", {"result": "ACCEPTED", "timeout": timeout})
    before = timezone.now()
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.status == Command.Status.ACCEPTED
    waited = (command.timeout_at - before).total_seconds()
    assert waited >= settings.OCPI_COMMAND_DEFAULT_TIMEOUT_SECONDS - 1, f"timeout {timeout!r} read as {waited:.0f} s"
