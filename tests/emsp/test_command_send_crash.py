"""A worker killed between claiming a command (QUEUED → SENT) and its POST: the gateway writes the request just
before it POSTs (ocpi/gateway.py), so a command SENT with no request certainly never left us. Its redelivered
task (acks_late), or the sweep for commands left SENT, sends it again; it had been timed out as one the CPO may
have acted on, and the driver's start was never asked of the charger. One whose request was written keeps that
rule (TIMEOUT, not sent again), with the sweep's own note kept."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from emsp import ports
from emsp import tasks as emsp_tasks
from emsp.models import Command, Partner
from emsp.services import commands
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope
from tests.races import Killed

pytestmark = pytest.mark.django_db

COMMANDS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/commands"
SESSIONS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/sessions"


class DyingGateway:
    def send_command(self, command: Command) -> Any:
        raise Killed


@pytest.fixture
def evse(partner: Partner) -> Any:
    return stored_location(partner).evses.order_by("uid").first()


@pytest.fixture
def cpo(peer: FakePeer) -> FakePeer:
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    peer.route("GET", SESSIONS_URL, (200, envelope([])))
    return peer


def killed_before_the_post(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    """The send task claims the command, and its worker dies before the gateway wrote the request."""
    real = commands.cpo_gateway
    monkeypatch.setattr(commands, "cpo_gateway", DyingGateway)
    with pytest.raises(Killed):
        emsp_tasks.command_send.apply((command.pk,))
    monkeypatch.setattr(commands, "cpo_gateway", real)
    command.refresh_from_db()
    assert (command.status, command.request) == (Command.Status.SENT, {})


def test_a_command_whose_worker_died_before_its_post_is_sent_by_the_sweep(
    cpo: FakePeer, evse: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    killed_before_the_post(command, monkeypatch)

    # Redelivered at once: within the grace, as a send on its way would be, it is left alone.
    emsp_tasks.command_send.apply((command.pk,))
    assert not cpo.requests_to("START_SESSION")

    with django_capture_on_commit_callbacks(execute=True):
        commands.commands_expire_due(now=timezone.now() + timedelta(seconds=61))

    assert len(cpo.requests_to("START_SESSION")) == 1
    command.refresh_from_db()
    assert (command.status, command.error) == (Command.Status.ACCEPTED, "")
    assert command.request["authorization_reference"] == command.authorization_reference


def test_a_send_redelivered_after_the_grace_sends_the_command_itself(
    cpo: FakePeer, evse: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    killed_before_the_post(command, monkeypatch)
    Command.objects.filter(pk=command.pk).update(updated_at=timezone.now() - commands.SENT_GRACE * 2)

    assert emsp_tasks.command_send.apply((command.pk,)).get() == Command.Status.ACCEPTED
    with django_capture_on_commit_callbacks(execute=True):  # the sweep after it, and a duplicate delivery
        commands.commands_expire_due()
        emsp_tasks.command_send.apply((command.pk,))

    assert len(cpo.requests_to("START_SESSION")) == 1
    command.refresh_from_db()
    assert command.status == Command.Status.ACCEPTED


def test_a_command_whose_request_was_written_is_timed_out_with_the_sweeps_note(cpo: FakePeer, evse: Any) -> None:
    """Killed after the gateway wrote the request: the CPO may have the command. Not sent again, and its TIMEOUT
    says why (the timeout's own words had overwritten the sweep's)."""
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    Command.objects.filter(pk=command.pk).update(
        status=Command.Status.SENT, request={"authorization_reference": "X"}, updated_at=timezone.now()
    )
    assert commands.commands_expire_due(now=timezone.now() + timedelta(seconds=61)) == 1
    command.refresh_from_db()
    assert (command.status, command.error) == (
        Command.Status.TIMEOUT,
        "no CommandResponse recorded (worker interrupted)",
    )
    assert not cpo.requests_to("START_SESSION")


def test_a_send_held_up_past_the_grace_before_its_post_does_not_post_after_the_sweep_sent_it(
    cpo: FakePeer, evse: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    """The first send stalls after its claim, long enough for the sweep to take the command back and another
    run to send it: the stalled one finds the command no longer its own (compare-and-set) and posts nothing."""
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    real_refusal, stalled = commands._token_refusal, []

    def stalls(command: Command, now: Any) -> str:
        if not stalled:
            stalled.append(command.pk)
            with django_capture_on_commit_callbacks(execute=True):
                commands.commands_expire_due(now=timezone.now() + timedelta(seconds=61))
            assert len(cpo.requests_to("START_SESSION")) == 1  # sent by the run the sweep queued
        return real_refusal(command, now)

    monkeypatch.setattr(commands, "_token_refusal", stalls)
    commands.command_send(command)

    assert stalled and len(cpo.requests_to("START_SESSION")) == 1
    command.refresh_from_db()
    assert command.status == Command.Status.ACCEPTED


class DiesAfterPost:
    """The gateway of the run the sweep queued: it POSTs (the CPO starts charging), then its worker dies before
    the CommandResponse is stored: the command stays SENT, its request written."""

    def send_command(self, command: Command) -> Any:
        ports.cpo_gateway().send_command(command)
        raise Killed


def test_a_send_held_up_past_the_grace_does_not_fail_a_command_another_run_posted(
    cpo: FakePeer, evse: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    """The stalled send's late refusal (the token blocked meanwhile) had failed the command "Not sent to the
    CPO", cancelling the booking, while the other run's START_SESSION had reached the CPO: every outcome the
    stalled run writes is compare-and-set on its own claim now."""
    token = TokenFactory()
    command = commands.command_start_session(token=token, evse=evse)
    real_refusal, stalled = commands._token_refusal, []

    def stalls(held: Command, now: Any) -> str:
        if not stalled:
            stalled.append(held.pk)
            monkeypatch.setattr(commands, "cpo_gateway", DiesAfterPost)
            with pytest.raises(Killed), django_capture_on_commit_callbacks(execute=True):
                commands.commands_expire_due(now=timezone.now() + timedelta(seconds=61))
            type(token).objects.filter(pk=token.pk).update(valid=False)
            held.token.refresh_from_db()
        return real_refusal(held, now)

    monkeypatch.setattr(commands, "_token_refusal", stalls)
    commands.command_send(command)

    command.refresh_from_db()
    assert stalled and len(cpo.requests_to("START_SESSION")) == 1
    assert command.status == Command.Status.SENT and command.request  # posted, its answer to come (or the sweep)
    assert command.error == ""
