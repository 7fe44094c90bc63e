"""Commands end once: a refusal commits with its effects (on PostgreSQL too), a CommandResult after the end
changes nothing, a token we would refuse is never sent, and an odd CommandResponse fails the send cleanly."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from emsp.models import Booking, Command, Evse, Partner, Reservation, Token
from emsp.services import bookings, commands
from ocpi.rendering import command_response_url as response_url
from tests.conftest import OcpiTestClient
from tests.factories import DriverFactory, TokenFactory, stored_location
from tests.fakes import FakePeer, envelope

COMMANDS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/commands"
SESSIONS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/sessions"


@pytest.fixture
def evse(partner: Partner) -> Evse:
    return stored_location(partner).evses.order_by("uid").first()


def accept(timeout: Any = 30) -> tuple[int, Any]:
    return 200, envelope({"result": "ACCEPTED", "timeout": timeout})


def reject() -> tuple[int, Any]:
    return 200, envelope({"result": "REJECTED", "timeout": 30})


def result_path(command: Command) -> str:
    return response_url(command).split("8000", 1)[1]


def reservation_for(evse: Evse, **fields: Any) -> Reservation:
    now = timezone.now()
    return Reservation.objects.create(
        evse=evse, token=TokenFactory(), start_at=now, expiry_at=now + timedelta(minutes=30), **fields
    )


# --- a refusal commits with its effects ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("answer", [reject(), None], ids=["rejected", "unreachable"])
def test_a_reservation_the_cpo_refuses_ends_its_booking(peer: FakePeer, partner: Partner, answer: Any) -> None:
    """Sent after the confirm's commit, outside any transaction: the booking's handler locks the booking, which
    PostgreSQL refuses outside a transaction (CI runs this on PostgreSQL)."""
    evse = stored_location(partner).evses.order_by("uid").first()
    if answer is not None:
        peer.route("POST", f"{COMMANDS_URL}/RESERVE_NOW", answer)
    booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    command = Command.objects.get(type=Command.Type.RESERVE_NOW)
    assert command.status == Command.Status.FAILED
    assert Reservation.objects.get().status == Reservation.Status.FAILED
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert booking.cancellation_reason.startswith("the operator did not accept the reservation")


# --- a CommandResult after the end changes nothing -----------------------------------------------------------


@pytest.mark.django_db
def test_a_second_result_does_not_fail_a_started_session(peer: FakePeer, evse: Evse, ocpi: OcpiTestClient) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert ocpi.post(result_path(command), {"result": "ACCEPTED"}).json()["status_code"] == 1000
    assert ocpi.post(result_path(command), {"result": "FAILED"}).json()["status_code"] == 1000
    command.refresh_from_db()
    assert (command.status, command.result_type, command.error) == (Command.Status.SUCCEEDED, "ACCEPTED", "")


@pytest.mark.django_db
def test_a_second_result_does_not_fail_a_made_reservation(peer: FakePeer, evse: Evse, ocpi: OcpiTestClient) -> None:
    peer.route("POST", f"{COMMANDS_URL}/RESERVE_NOW", accept())
    command = commands.command_send(commands.command_reserve_now(reservation=reservation_for(evse)))
    ocpi.post(result_path(command), {"result": "ACCEPTED"})
    ocpi.post(result_path(command), {"result": "REJECTED"})
    command.refresh_from_db()
    assert command.status == Command.Status.SUCCEEDED
    assert Reservation.objects.get().status == Reservation.Status.RESERVED


@pytest.mark.django_db
def test_a_result_for_a_command_the_cpo_refused_changes_nothing(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient
) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", reject())
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.status == Command.Status.FAILED
    assert ocpi.post(result_path(command), {"result": "ACCEPTED"}).json()["status_code"] == 1000
    command.refresh_from_db()
    assert (command.status, command.result_type) == (Command.Status.FAILED, "")


@pytest.mark.django_db
def test_a_late_result_after_timeout_still_counts(peer: FakePeer, evse: Evse, ocpi: OcpiTestClient) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept(timeout=1))
    peer.route("GET", SESSIONS_URL, (200, envelope([])))
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    commands.command_check_timeout(command.pk, now=timezone.now() + timedelta(seconds=5))
    ocpi.post(result_path(command), {"result": "ACCEPTED"})
    command.refresh_from_db()
    assert command.status == Command.Status.SUCCEEDED


@pytest.mark.django_db
def test_canceled_reservation_posted_for_a_start_leaves_its_reservation(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient
) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    reservation = reservation_for(evse, status=Reservation.Status.RESERVED)
    command = commands.command_send(
        commands.command_start_session(token=reservation.token, evse=evse, reservation=reservation)
    )
    assert ocpi.post(result_path(command), {"result": "CANCELED_RESERVATION"}).json()["status_code"] == 1000
    command.refresh_from_db()
    assert (command.status, command.result_type) == (Command.Status.ACCEPTED, "")
    assert Reservation.objects.get().status == Reservation.Status.RESERVED


@pytest.mark.django_db
def test_canceled_reservation_of_a_reservation_the_cpo_refused_changes_nothing(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient
) -> None:
    peer.route("POST", f"{COMMANDS_URL}/RESERVE_NOW", reject())
    command = commands.command_send(commands.command_reserve_now(reservation=reservation_for(evse)))
    ocpi.post(result_path(command), {"result": "CANCELED_RESERVATION"})
    command.refresh_from_db()
    assert (command.status, command.result_type) == (Command.Status.FAILED, "")
    assert Reservation.objects.get().status == Reservation.Status.FAILED


@pytest.mark.django_db
def test_canceled_reservation_after_the_reservation_was_made_cancels_its_booking(
    peer: FakePeer, evse: Evse, ocpi: OcpiTestClient, django_capture_on_commit_callbacks: Any
) -> None:
    peer.route("POST", f"{COMMANDS_URL}/RESERVE_NOW", accept())
    with django_capture_on_commit_callbacks(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    command = Command.objects.get(type=Command.Type.RESERVE_NOW)
    ocpi.post(result_path(command), {"result": "ACCEPTED"})
    ocpi.post(result_path(command), {"result": "CANCELED_RESERVATION"})
    command.refresh_from_db()
    booking.refresh_from_db()
    assert (command.status, command.result_type) == (Command.Status.SUCCEEDED, "CANCELED_RESERVATION")
    assert Reservation.objects.get().status == Reservation.Status.CANCELLED
    assert booking.state == Booking.State.CANCELLED


# --- the eMSP authorizes the token before it goes to the CPO -------------------------------------------------


def blocked(token: Token) -> None:
    token.is_blocked = True
    token.save()


def driver_blocked(token: Token) -> None:
    token.driver.is_blocked = True
    token.driver.save()


def expired(token: Token) -> None:
    token.expires_at = timezone.now() - timedelta(minutes=1)
    token.save()


def out_of_credit(token: Token) -> None:
    token.driver.wallet_balance = Decimal("0")
    token.driver.save()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("refuse", "allowed"),
    [(blocked, "BLOCKED"), (driver_blocked, "BLOCKED"), (expired, "EXPIRED"), (out_of_credit, "NO_CREDIT")],
)
def test_a_start_with_a_token_we_would_refuse_is_not_sent(
    peer: FakePeer, evse: Evse, refuse: Callable[[Token], None], allowed: str
) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    token = TokenFactory()
    refuse(token)
    command = commands.command_send(commands.command_start_session(token=token, evse=evse))
    assert command.status == Command.Status.FAILED
    assert f"the token is {allowed}" in command.error
    assert not peer.requests_to("START_SESSION")


@pytest.mark.django_db
def test_a_booking_whose_driver_was_blocked_after_confirming_does_not_start(
    peer: FakePeer, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    evse = stored_location(partner, capabilities=["REMOTE_START_STOP_CAPABLE"]).evses.first()
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    token = TokenFactory(driver=DriverFactory(), type=Token.Type.APP_USER)
    booking = bookings.booking_confirm(evse=evse, connector_id="1", token=token)
    driver_blocked(token)
    with django_capture_on_commit_callbacks(execute=True):
        command = bookings.booking_start(Booking.objects.get(pk=booking.pk))
    assert command is not None
    command.refresh_from_db()
    assert command.status == Command.Status.FAILED
    assert "BLOCKED" in command.error
    assert not peer.requests_to("START_SESSION")
    from beckn.rendering import NOT_ALLOWED_TO_CHARGE, charger_answer

    assert charger_answer(command) == NOT_ALLOWED_TO_CHARGE  # what the app hears: not "could not be reached"


@pytest.mark.django_db
def test_a_reservation_for_a_blocked_driver_is_not_sent_and_ends_the_booking(
    peer: FakePeer, evse: Evse, django_capture_on_commit_callbacks: Any
) -> None:
    peer.route("POST", f"{COMMANDS_URL}/RESERVE_NOW", accept())
    token = TokenFactory()
    driver_blocked(token)
    with django_capture_on_commit_callbacks(execute=True):
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=token)
    assert not peer.requests_to("RESERVE_NOW")
    assert Command.objects.get().status == Command.Status.FAILED
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert bookings.reservation_refusal(Command.objects.get()).startswith("the driver's token may not charge")


@pytest.mark.django_db
def test_a_stop_goes_out_whatever_the_token(peer: FakePeer, evse: Evse) -> None:
    """Only StartSession and ReserveNow carry a token to authorize; ending a charge is never held back."""
    peer.route("POST", f"{COMMANDS_URL}/CANCEL_RESERVATION", accept())
    reservation = reservation_for(evse, status=Reservation.Status.RESERVED)
    blocked(reservation.token)
    command = commands.command_send(commands.command_cancel_reservation(reservation=reservation))
    assert command.status == Command.Status.ACCEPTED


# --- an odd CommandResponse ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("timeout", ["1000000000000", "100000000000000000000", "1e300"])
def test_an_absurd_timeout_is_capped_at_a_day(peer: FakePeer, evse: Evse, timeout: str) -> None:
    answer = '{"status_code": 1000, "timestamp": "2025-01-01T00:00:00Z", "data": {"result": "ACCEPTED", "timeout": %s}}'
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", (200, (answer % timeout).encode()))
    before = timezone.now()
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.status == Command.Status.ACCEPTED
    assert command.timeout_at is not None
    assert before + timedelta(hours=23) < command.timeout_at <= timezone.now() + timedelta(hours=24)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "answer",
    [
        envelope(None),
        envelope([{"result": "ACCEPTED", "timeout": 30}, {"result": "ACCEPTED", "timeout": 30}]),
        envelope("ACCEPTED"),
    ],
    ids=["no-data", "two-objects", "a-string"],
)
def test_an_unreadable_command_response_fails_the_command(peer: FakePeer, evse: Evse, answer: Any) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", (200, answer))
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.status == Command.Status.FAILED
    assert "CommandResponse could not be read" in command.error


# --- the sweep of commands left SENT ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_sweep_keeps_a_result_stored_while_it_runs(peer: FakePeer, evse: Evse) -> None:
    """The CPO's CommandResult is stored by another process just before the sweep's UPDATE reaches the row
    (simulated at the database driver: the concurrent write runs as the sweep's statement is about to run)."""
    peer.route("GET", SESSIONS_URL, (200, envelope([])))
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    Command.objects.filter(pk=command.pk).update(  # killed after the POST: its request written, as the gateway does
        status=Command.Status.SENT,
        request={"authorization_reference": command.authorization_reference},
        updated_at=timezone.now() - timedelta(minutes=5),
    )
    raced: list[str] = []

    def result_lands_first(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not raced and sql.startswith("UPDATE") and "emsp_command" in sql and '"error"' in sql:
            raced.append(sql)
            commands.command_result_received(Command.objects.get(pk=command.pk), {"result": "ACCEPTED"})
        return execute(sql, params, many, context)

    with connection.execute_wrapper(result_lands_first):
        commands.commands_expire_due()
    assert raced
    command.refresh_from_db()
    assert (command.status, command.result_type, command.error) == (Command.Status.SUCCEEDED, "ACCEPTED", "")
