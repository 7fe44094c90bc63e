"""Commands to chargers: request shapes, CommandResponse and CommandResult handling, TIMEOUT and late sessions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from emsp.models import ChargingSession, Command, Partner, Reservation
from emsp.services import commands, sessions
from ocpi.rendering import command_response_url as response_url
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

COMMANDS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/commands"


@pytest.fixture
def evse(partner: Partner) -> Any:
    return stored_location(partner).evses.order_by("uid").first()


def accept(timeout: int = 30) -> tuple[int, Any]:
    return 200, envelope({"result": "ACCEPTED", "timeout": timeout})


def result_path(command: Command) -> str:
    return response_url(command).split("8000", 1)[1]


def test_start_session_posts_the_spec_body_with_its_own_response_url(peer: FakePeer, evse: Any) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    token = TokenFactory()
    first = commands.command_send(commands.command_start_session(token=token, evse=evse))
    second = commands.command_send(commands.command_start_session(token=token, evse=evse))
    body = peer.requests_to("START_SESSION")[0]["json"]
    assert set(body) == {"response_url", "token", "location_id", "evse_uid", "authorization_reference"}
    assert body["token"]["uid"] == token.uid
    assert body["location_id"] == "LOC1"
    assert body["response_url"] == response_url(first)
    assert response_url(first) != response_url(second)
    assert first.status == Command.Status.ACCEPTED
    assert first.timeout_at is not None


def test_connector_id_is_sent_when_the_evse_requires_it(peer: FakePeer, partner: Partner) -> None:
    evse = stored_location(partner, capabilities=["START_SESSION_CONNECTOR_REQUIRED"]).evses.first()
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert peer.requests_to("START_SESSION")[0]["json"]["connector_id"] == "1"


def test_a_command_result_completes_the_command(peer: FakePeer, evse: Any, ocpi: OcpiTestClient) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    response = ocpi.post(result_path(command), {"result": "ACCEPTED"})
    assert response.json()["status_code"] == 1000
    command.refresh_from_db()
    assert command.status == Command.Status.SUCCEEDED
    assert command.result == {"result": "ACCEPTED"}


def test_a_refused_command_fails_with_the_cpo_message(peer: FakePeer, evse: Any) -> None:
    peer.route(
        "POST",
        f"{COMMANDS_URL}/START_SESSION",
        (
            200,
            envelope({"result": "REJECTED", "timeout": 30, "message": [{"language": "en", "text": "EV not plugged"}]}),
        ),
    )
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.status == Command.Status.FAILED
    assert command.response_result == "REJECTED"
    assert "EV not plugged" in command.error


def test_an_unreachable_cpo_fails_the_command(peer: FakePeer, evse: Any) -> None:
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert command.status == Command.Status.FAILED


def test_no_result_within_the_timeout_is_timeout_and_the_sessions_list_is_checked(peer: FakePeer, evse: Any) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept(timeout=10))
    peer.route("GET", "http://127.0.0.1:9/ocpi/cpo/2.2.1/sessions", (200, envelope([])))
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert commands.command_check_timeout(command.pk, now=timezone.now()) is None  # not yet due
    timed_out = commands.command_check_timeout(command.pk, now=timezone.now() + timedelta(seconds=11))
    assert timed_out is not None and timed_out.status == Command.Status.TIMEOUT
    assert "date_from=" in peer.requests_to("/sessions")[0]["url"]


def test_a_session_arriving_after_timeout_is_still_linked(peer: FakePeer, evse: Any, partner: Partner) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept(timeout=1))
    peer.route("GET", "http://127.0.0.1:9/ocpi/cpo/2.2.1/sessions", (200, envelope([])))
    token = TokenFactory()
    command = commands.command_send(commands.command_start_session(token=token, evse=evse))
    commands.command_check_timeout(command.pk, now=timezone.now() + timedelta(seconds=5))
    session = session_object(command, token.uid)
    change = sessions.session_put(partner, session)
    command.refresh_from_db()
    assert command.status == Command.Status.TIMEOUT
    assert command.session == change.session
    assert change.session.token == token
    assert change.session.evse == evse


def session_object(command: Command, token_uid: str) -> dict[str, Any]:
    now = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "country_code": "IN",
        "party_id": "CPA",
        "id": "S1",
        "start_date_time": now,
        "kwh": 0,
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": token_uid, "type": "RFID", "contract_id": "X"},
        "auth_method": "COMMAND",
        "authorization_reference": command.authorization_reference,
        "location_id": "LOC1",
        "evse_uid": command.evse.uid,
        "connector_id": "1",
        "currency": "INR",
        "status": "ACTIVE",
        "last_updated": now,
    }


def reservation_for(evse: Any) -> Reservation:
    now = timezone.now()
    return Reservation.objects.create(
        evse=evse, token=TokenFactory(), start_at=now, expiry_at=now + timedelta(minutes=30)
    )


def test_reserve_now_then_result_reserves_and_cpo_cancellation_cancels(
    peer: FakePeer, evse: Any, ocpi: OcpiTestClient
) -> None:
    peer.route("POST", f"{COMMANDS_URL}/RESERVE_NOW", accept())
    reservation = reservation_for(evse)
    command = commands.command_send(commands.command_reserve_now(reservation=reservation))
    body = peer.requests_to("RESERVE_NOW")[0]["json"]
    assert body["reservation_id"] == reservation.reservation_id
    assert body["expiry_date"].endswith("Z")
    assert Reservation.objects.get().status == Reservation.Status.REQUESTED
    ocpi.post(result_path(command), {"result": "ACCEPTED"})
    assert Reservation.objects.get().status == Reservation.Status.RESERVED
    ocpi.post(result_path(command), {"result": "CANCELED_RESERVATION"})
    assert Reservation.objects.get().status == Reservation.Status.CANCELLED


def test_cancel_reservation_stop_session_and_unlock_bodies(peer: FakePeer, evse: Any, partner: Partner) -> None:
    for name in ("CANCEL_RESERVATION", "STOP_SESSION", "UNLOCK_CONNECTOR"):
        peer.route("POST", f"{COMMANDS_URL}/{name}", accept())
    reservation = reservation_for(evse)
    commands.command_send(commands.command_cancel_reservation(reservation=reservation))
    session = ChargingSession.objects.create(
        partner=partner,
        country_code="IN",
        party_id="CPA",
        session_id="S9",
        ocpi_key="IN*CPA*S9",
        status="ACTIVE",
        start_date_time=timezone.now(),
        currency="INR",
        ocpi_location_id="LOC1",
        evse_uid=evse.uid,
        connector_id="1",
        token_uid="X",
        auth_method="COMMAND",
        last_updated=timezone.now(),
        data={},
    )
    commands.command_send(commands.command_stop_session(session=session))
    commands.command_send(commands.command_unlock_connector(evse=evse, connector_id="1"))
    assert set(peer.requests_to("CANCEL_RESERVATION")[0]["json"]) == {"response_url", "reservation_id"}
    assert set(peer.requests_to("STOP_SESSION")[0]["json"]) == {"response_url", "session_id"}
    assert set(peer.requests_to("UNLOCK_CONNECTOR")[0]["json"]) == {
        "response_url",
        "location_id",
        "evse_uid",
        "connector_id",
    }


def test_a_result_for_another_partners_command_is_404(peer: FakePeer, evse: Any, client_for: Any) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    response = client_for("NL", "XXX").post(result_path(command), {"result": "ACCEPTED"})
    assert response.status_code == 404
    command.refresh_from_db()
    assert command.status == Command.Status.ACCEPTED


def test_an_unknown_result_type_is_2001(peer: FakePeer, evse: Any, ocpi: OcpiTestClient) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    assert ocpi.post(result_path(command), {"result": "MAYBE"}).json()["status_code"] == 2001


def test_sending_twice_posts_once(peer: FakePeer, evse: Any) -> None:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", accept())
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    commands.command_send(command)
    commands.command_send(Command.objects.get(pk=command.pk))
    assert len(peer.requests_to("START_SESSION")) == 1


def test_a_command_left_sent_by_a_dead_worker_times_out_and_is_not_resent(peer: FakePeer, evse: Any) -> None:
    peer.route("GET", "http://127.0.0.1:9/ocpi/cpo/2.2.1/sessions", (200, envelope([])))
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    Command.objects.filter(pk=command.pk).update(  # killed after the POST: its request written, as the gateway does
        status=Command.Status.SENT,
        request={"authorization_reference": command.authorization_reference},
        updated_at=timezone.now() - timedelta(minutes=5),
    )
    assert commands.commands_expire_due() == 1
    command.refresh_from_db()
    assert command.status == Command.Status.TIMEOUT
    assert not peer.requests_to("START_SESSION")


def test_a_send_redelivered_long_after_it_was_queued_is_not_timed_out_on_its_way(peer: FakePeer, evse: Any) -> None:
    """A worker killed holding the send task: the broker hands it out again a minute or more later. The sweep for
    commands left SENT counts from the send, not from when the command was queued."""
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    Command.objects.filter(pk=command.pk).update(updated_at=timezone.now() - timedelta(minutes=5))
    swept: list[int] = []

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        swept.append(commands.commands_expire_due())  # the beat's sweep runs while the POST is on its way
        return 200, envelope({"result": "ACCEPTED", "timeout": 30}), {}

    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", cpo)
    sent = commands.command_send(command)
    assert swept == [0]
    assert (sent.status, sent.error) == (Command.Status.ACCEPTED, "")


def test_a_refusal_after_the_sweep_timed_the_command_out_does_not_finish_it_twice(peer: FakePeer, evse: Any) -> None:
    command = commands.command_start_session(token=TokenFactory(), evse=evse)

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:  # the sweep got there first
        Command.objects.filter(pk=command.pk).update(status=Command.Status.TIMEOUT)
        return 200, envelope({"result": "REJECTED", "timeout": 30}), {}

    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", cpo)
    assert commands.command_send(command).status == Command.Status.TIMEOUT
