"""A CPO's answer we could not store had left our side stuck on PostgreSQL (it refuses a NUL in text and jsonb; a
CommandResponse `result` goes in a varchar(20)). A command the CPO answered stayed SENT, its transaction rolled
back: the sweep timed it out, the app heard "please retry" then TIMEOUT, the booking stayed STARTING and a cancel
left it STOPPING for a session that never came. A token push refused with a NUL was sent again every two minutes
for ever, OUTBOX_MAX_ATTEMPTS never reached. Now every NUL of an answer is U+FFFD as it is read
(ocpi/client.py `_parse_reply`), a `result` that is no CommandResponseType fails the command naming the CPO's word
(ocpi/gateway.py), and the outbox stores a try's error clipped and without NUL whatever the sender says
(emsp/outbox.py `_settle`). Each test fails on the old code on PostgreSQL (SQLite stores a NUL)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from emsp import outbox
from emsp.models import Booking, Command, Delivery, DeliveryAttempt, Partner
from emsp.services import commands
from emsp.services.tokens import token_changed
from ocpi.models import PushDelivery
from tests.beckn.bap import CPO_BASE
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_stop_refusals_told import statuses, told, update
from tests.beckn.test_update_crash_safety import START, ordered
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope

COMMANDS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/commands"
CPO_TOKENS = "http://127.0.0.1:9/ocpi/cpo/2.2.1/tokens"
NUL = "\u0000"


@pytest.fixture
def evse(partner: Partner) -> Any:
    return stored_location(partner).evses.order_by("uid").first()


def sent(peer: FakePeer, evse: Any, answer: tuple[int, Any]) -> Command:
    """A START_SESSION sent to a CPO answering so; the command as stored afterwards."""
    peer.route("POST", f"{COMMANDS_URL}/START_SESSION", answer)
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    commands.command_send(command)
    command.refresh_from_db()
    return command


# --- a CommandResponse ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "data",
    [
        {"result": "REJECTED", "timeout": 30, "message": [{"language": "en", "text": f"EVSE busy{NUL}"}]},
        {"result": "REJECTED", "timeout": 30, "extra": {"deep": [f"x{NUL}"]}},
        {"result": "REJECTED", "timeout": 30, f"key{NUL}": 1},
        {"result": f"REJECTED{NUL}", "timeout": 30},
    ],
    ids=["in-its-message", "in-a-field-of-its-own", "in-a-key", "in-its-result"],
)
def test_a_refusal_holding_a_nul_fails_the_command(peer: FakePeer, evse: Any, data: dict[str, Any]) -> None:
    command = sent(peer, evse, (200, envelope(data)))
    assert command.status == Command.Status.FAILED
    assert NUL not in command.error


@pytest.mark.django_db(transaction=True)
def test_a_refusals_text_is_kept_with_its_nul_replaced(peer: FakePeer, evse: Any) -> None:
    data = {"result": "REJECTED", "timeout": 30, "message": [{"language": "en", "text": f"EVSE busy{NUL}"}]}
    command = sent(peer, evse, (200, envelope(data)))
    assert (command.status, command.response_result) == (Command.Status.FAILED, "REJECTED")
    assert command.error == "EVSE busy\ufffd"
    assert command.response["message"][0]["text"] == "EVSE busy\ufffd"


@pytest.mark.django_db(transaction=True)
def test_an_accepted_answer_holding_a_nul_is_stored_accepted(peer: FakePeer, evse: Any) -> None:
    data = {"result": "ACCEPTED", "timeout": 30, "message": [{"language": "en", "text": f"ok{NUL}"}]}
    command = sent(peer, evse, (200, envelope(data)))
    assert (command.status, command.response_result) == (Command.Status.ACCEPTED, "ACCEPTED")
    assert command.response["message"][0]["text"] == "ok\ufffd"
    assert command.timeout_at is not None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("result", "named"),
    [
        ("REJECTED_BECAUSE_THE_EVSE_IS_BUSY_NOW", "'REJECTED_BECAUSE_THE_EVSE_IS_BUSY_NOW'"),
        ("X" * 5000, "'" + "X" * 40 + "'"),
        ({"a": 1}, "\"{'a': 1}\""),
        ("OK", "'OK'"),
    ],
    ids=["longer-than-its-column", "very-long", "an-object", "an-unknown-word"],
)
def test_a_result_that_is_no_command_response_type_fails_the_command_naming_it(
    peer: FakePeer, evse: Any, result: Any, named: str
) -> None:
    command = sent(peer, evse, (200, envelope({"result": result, "timeout": 30})))
    assert command.status == Command.Status.FAILED
    assert command.error == (
        f"The CPO's CommandResponse could not be read: its result {named} is no CommandResponseType"
    )
    assert command.response_result == ""


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("http", [200, 400, 500])
def test_an_ocpi_error_whose_status_message_holds_a_nul_fails_the_command(peer: FakePeer, evse: Any, http: int) -> None:
    body = {"status_code": 2001, "status_message": f"bad token{NUL}", "timestamp": "2026-12-07T00:00:00Z"}
    command = sent(peer, evse, (http, body))
    assert command.status == Command.Status.FAILED
    assert "bad token\ufffd" in command.error


@pytest.mark.django_db(transaction=True)
def test_a_start_refused_with_a_nul_is_told_as_refused_and_a_cancel_ends_the_order(
    bap: Any,  # noqa: F811
    peer: FakePeer,
    network: Partner,  # noqa: F811
) -> None:
    """Through a Beckn update: the app hears the refusal in its on_update, not "please retry" and a TIMEOUT."""
    booking = ordered(bap)
    refusal = {"result": "REJECTED", "timeout": 30, "message": [{"language": "en", "text": f"EVSE busy{NUL}"}]}
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", (200, envelope(refusal)))
    peer.route("GET", f"{CPO_BASE}/sessions", (200, envelope([])))

    answer = update(bap, booking, START)

    assert answer["error"]["code"] == "40006"
    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    assert start.status == Command.Status.FAILED
    since = statuses(bap)
    with bap.capture(execute=True):
        commands.commands_expire_due(now=timezone.now() + timedelta(minutes=2))
    assert Command.objects.get(pk=start.pk).status == Command.Status.FAILED
    assert told(bap, since) == []  # no TIMEOUT after the refusal
    bap("cancel", {"order_id": booking.order_id, "cancellation_reason_id": "changed-plans"})
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CANCELLED  # nothing started: not STOPPING


# --- a token push ----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@override_settings(OUTBOX_MAX_ATTEMPTS=3)
def test_a_token_push_refused_with_a_nul_is_retried_then_given_up(peer: FakePeer, partner: Partner) -> None:
    token = TokenFactory()
    PushDelivery.objects.all().delete()
    body = {"status_code": 2001, "status_message": f"no{NUL}", "timestamp": "2026-12-07T00:00:00Z"}
    peer.route("PUT", f"{CPO_TOKENS}/IN/EMS/{token.uid}", (200, body))

    token_changed(token=token)  # sent after commit: at once here (autocommit)

    (row,) = Delivery.objects.all()
    assert (row.status, row.attempts) == (Delivery.Status.PENDING, 1)
    assert "no\ufffd" in row.last_error
    now = timezone.now()
    for sweep in range(1, 6):
        outbox.deliver_due(now + timedelta(hours=sweep))
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Delivery.Status.FAILED, 3)
    assert len(peer.requests_to("/tokens/")) == 3


@pytest.mark.django_db(transaction=True)
def test_a_senders_error_holding_a_nul_is_stored_clipped(monkeypatch: pytest.MonkeyPatch, partner: Partner) -> None:
    """The outbox's own defence, whatever a sender says."""

    def refused(delivery: Delivery) -> outbox.SendResult:
        return outbox.SendResult(400, f"refused{NUL}" + "x" * 5000)

    monkeypatch.setitem(outbox._senders, Delivery.Channel.OCPI_PUSH, refused)
    row = Delivery.objects.create(channel=Delivery.Channel.OCPI_PUSH, partner=partner, target="x")

    delivery = outbox.deliver(row.pk)

    assert delivery.status == Delivery.Status.FAILED
    assert delivery.last_error.startswith("refused\ufffdx") and len(delivery.last_error) == 2000
    assert DeliveryAttempt.objects.get(delivery=row).error == delivery.last_error
