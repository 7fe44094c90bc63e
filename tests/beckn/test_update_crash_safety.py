"""An update that starts or stops the charge sends its command to the CPO only once the request is recorded
(beckn/handlers.py `handle`): a worker killed after the CPO took the POST leaves the command and the request on
record, and the redelivered task answers the app without a second START_SESSION. A start or stop the CPO refused
stays on record too: a late session still finds its booking through the START_SESSION."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from beckn import handlers, tasks
from beckn.models import BecknMessage
from emsp import queue_journal
from emsp.models import Booking, ChargingSession, Command, Partner
from emsp.services import commands
from emsp.services.commands import command_result_received
from emsp.services.sessions import session_put
from tests.beckn.bap import CPO_BASE
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.fakes import FakePeer, envelope
from tests.races import Killed

pytestmark = pytest.mark.django_db

START = "start-charging"
STOP = "stop-charging"


def ordered(bap: Any) -> Booking:
    """A confirmed order whose reservation the CPO made: a start goes out at once (not sequenced behind it)."""
    select(bap, item_of(bap))
    init(bap)
    booking = Booking.objects.get(order_id=confirm(bap)["message"]["order"]["id"])
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    return booking


def update_body(bap: Any, booking: Booking, code: str) -> str:
    """An update as the ACK queued it: the task's `body` argument."""
    order = {"id": booking.order_id, "fulfillments": [{"state": {"descriptor": {"code": code}}}]}
    message = {"update_target": "order.fulfillments[0].state", "order": order}
    return orjson.dumps({"context": bap.bap.context("update"), "message": message}).decode()


def answers(bap: Any, body: str) -> list[dict[str, Any]]:
    """The on_update callbacks that answer this request."""
    message_id = orjson.loads(body)["context"]["message_id"]
    return [c for c in bap.bap.callbacks("on_update") if c["context"]["message_id"] == message_id]


def killed_on_first(answer: tuple[int, Any]) -> Callable[[dict[str, Any]], tuple[int, Any, dict[str, str]]]:
    """A CPO route that takes the first POST and then the worker dies before the answer is read."""
    seen: list[dict[str, Any]] = []

    def route(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        seen.append(call)
        if len(seen) == 1:
            raise Killed
        return (*answer, {})

    return route


ACCEPTED = (200, envelope({"result": "ACCEPTED", "timeout": 30}))


def test_a_worker_killed_after_the_cpo_took_the_start_does_not_start_twice(bap: Any, peer: FakePeer) -> None:
    booking = ordered(bap)
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", killed_on_first(ACCEPTED))
    body = update_body(bap, booking, START)
    with bap.capture(execute=True):
        with pytest.raises(Killed):
            tasks.handle_request.apply(("update", body))
        tasks.handle_request.apply(("update", body))  # acks_late: the broker hands the request out again
    assert len(peer.requests_to("START_SESSION")) == 1
    (start,) = Command.objects.filter(booking=booking, type=Command.Type.START_SESSION)
    assert start.status == Command.Status.SENT  # the POST's answer was lost with the worker: the sweep times it out
    (answer,) = answers(bap, body)
    assert "error" not in answer
    assert answer["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "PENDING"
    request = BecknMessage.objects.get(action="update", message_id=answer["context"]["message_id"])
    assert (request.status, request.command_id) == (BecknMessage.Status.PROCESSED, start.pk)
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING

    # The sweep finds no CommandResponse: TIMEOUT, told once, as on_status (the update was answered already).
    Command.objects.filter(pk=start.pk).update(updated_at=timezone.now() - commands.SENT_GRACE * 2)
    with bap.capture(execute=True):
        commands.commands_expire_due()
    assert "if charging begins we will tell you" in last(bap, "on_status")["error"]["message"]
    assert len(answers(bap, body)) == 1
    assert len(peer.requests_to("START_SESSION")) == 1


def test_a_worker_killed_before_the_send_sends_once_on_redelivery(
    bap: Any, peer: FakePeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    booking = ordered(bap)
    send = commands.command_send
    calls: list[int] = []

    def killed_first(command: Command) -> Command:
        calls.append(command.pk)
        if len(calls) == 1:
            raise Killed
        return send(command)

    monkeypatch.setattr(commands, "command_send", killed_first)
    body = update_body(bap, booking, START)
    with bap.capture(execute=True):
        with pytest.raises(Killed):
            tasks.handle_request.apply(("update", body))
        request = BecknMessage.objects.get(action="update", message_id=orjson.loads(body)["context"]["message_id"])
        assert request.status == BecknMessage.Status.RECEIVED  # recorded, with its command, not yet answered
        assert not answers(bap, body)
        tasks.handle_request.apply(("update", body))
        tasks.handle_request.apply(("update", body))  # once more: answered already, nothing happens
    assert len(peer.requests_to("START_SESSION")) == 1
    assert Command.objects.filter(booking=booking, type=Command.Type.START_SESSION).count() == 1
    (answer,) = answers(bap, body)
    assert "error" not in answer
    request.refresh_from_db()
    assert request.status == BecknMessage.Status.PROCESSED


def test_a_stop_killed_after_the_post_is_not_sent_twice(bap: Any, peer: FakePeer, network: Partner) -> None:
    booking = ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
    charging(network, booking)
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", killed_on_first(ACCEPTED))
    body = update_body(bap, booking, STOP)
    with bap.capture(execute=True):
        with pytest.raises(Killed):
            tasks.handle_request.apply(("update", body))
        tasks.handle_request.apply(("update", body))
    assert len(peer.requests_to("STOP_SESSION")) == 1
    assert len(answers(bap, body)) == 1
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING


def test_a_stop_timed_out_before_its_redelivered_update_is_answered_is_told_in_the_answer(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """The worker died after the POST; our sweep timed the stop out (no CommandResponse) before the redelivery
    answered: the answer tells it (on_status is silent while the update waits), not "stopping" alone."""
    booking = ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
    charging(network, booking)
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", killed_on_first(ACCEPTED))
    body = update_body(bap, booking, STOP)
    statuses = len(bap.bap.callbacks("on_status"))
    with bap.capture(execute=True):
        with pytest.raises(Killed):
            tasks.handle_request.apply(("update", body))
        stop = Command.objects.get(booking=booking, type=Command.Type.STOP_SESSION)
        Command.objects.filter(pk=stop.pk).update(updated_at=timezone.now() - commands.SENT_GRACE * 2)
        commands.commands_expire_due()
        assert Command.objects.get(pk=stop.pk).status == Command.Status.TIMEOUT
        tasks.handle_request.apply(("update", body))
    (answer,) = answers(bap, body)
    assert answer["error"]["code"] == "40006"
    assert answer["error"]["message"] == "the charger did not confirm the stop in time"
    assert len(bap.bap.callbacks("on_status")) == statuses  # told once, in the answer
    assert len(peer.requests_to("STOP_SESSION")) == 1
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING
    # The CPO's late refusal of it is not told again in an on_status.
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(pk=stop.pk), {"result": "REJECTED"})
    assert len(bap.bap.callbacks("on_status")) == statuses


def test_a_stop_whose_update_answer_failed_for_its_own_reason_is_told_when_refused(
    bap: Any, peer: FakePeer, network: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer failed (40000, the request FAILED: nothing said of the stop); the CPO's later refusal is told
    (the app retrying as told gets 50002, and the charge goes on)."""
    booking = ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
    charging(network, booking)
    body = update_body(bap, booking, STOP)
    real = handlers.order_block
    monkeypatch.setattr(handlers, "order_block", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))
    monkeypatch.setattr(handlers, "order_block", real)
    assert answers(bap, body)[0]["error"]["code"] == "40000"
    statuses = len(bap.bap.callbacks("on_status"))

    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="STOP_SESSION"), {"result": "REJECTED"})

    (told,) = bap.bap.callbacks("on_status")[statuses:]
    assert told["error"]["code"] == "40006"


def charging(network: Partner, booking: Booking, session_id: str = "S-1") -> ChargingSession:
    """The CPO reports the session its START_SESSION began."""
    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    stamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    session_put(
        network,
        {
            "country_code": "IN", "party_id": "CPA", "id": session_id, "start_date_time": stamp, "kwh": 0,
            "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                          "contract_id": booking.token.contract_id},
            "auth_method": "COMMAND", "authorization_reference": start.authorization_reference,
            "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
            "currency": "INR", "status": "ACTIVE", "last_updated": stamp,
        },
    )  # fmt: skip
    return ChargingSession.objects.get(session_id=session_id)


def test_a_start_that_failed_at_the_cpo_stays_on_record_and_a_late_session_finds_its_booking(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """A 502 from the CPO (or a proxy before it) may come after the charger started: the START_SESSION is kept,
    so the session the CPO reports later is linked to the booking and billed to it."""
    booking = ordered(bap)
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", (502, b"<html>bad gateway</html>"))
    body = update_body(bap, booking, START)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))
    (answer,) = answers(bap, body)
    assert answer["error"]["code"] == "40006"
    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    assert start.status == Command.Status.FAILED
    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING  # on a refused start only: the app may start again

    with bap.capture(execute=True):
        session = charging(network, booking)
    assert session.booking_id == booking.pk
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CHARGING


def test_a_start_the_cpo_refused_is_told_once_by_the_update_answer(bap: Any, peer: FakePeer) -> None:
    """The failed command's own notice (an unsolicited on_status, beckn/events.py) is not sent while the update that
    sent it is unanswered: its on_update carries the refusal. Asked again, the start goes out again."""
    booking = ordered(bap)
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", (200, envelope({"result": "REJECTED"})))
    statuses = len(bap.bap.callbacks("on_status"))
    body = update_body(bap, booking, START)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))
    (answer,) = answers(bap, body)
    assert answer["error"]["code"] == "40006" and "refused" in answer["error"]["message"]
    assert len(bap.bap.callbacks("on_status")) == statuses
    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING

    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", ACCEPTED)
    again = update_body(bap, booking, START)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", again))
    (answer,) = answers(bap, again)
    assert "error" not in answer
    assert len(peer.requests_to("START_SESSION")) == 2

    # Refused after the update was answered (a CommandResult): that one is told as on_status.
    with bap.capture(execute=True):
        command_result_received(Command.objects.filter(booking=booking).latest("pk"), {"result": "REJECTED"})
    assert last(bap, "on_status")["error"]["code"] == "40006"
    assert len(bap.bap.callbacks("on_status")) == statuses + 1


@pytest.mark.parametrize(("result", "told"), [("REJECTED", "the charger refused"), ("TIMEOUT", "if charging begins")])
def test_a_command_result_before_the_answer_is_told_in_the_answer_only(
    bap: Any, peer: FakePeer, result: str, told: str
) -> None:
    """The CPO's CommandResult may overtake its CommandResponse, before the update is answered: the answer says
    it, and no on_status repeats it. A TIMEOUT is no refusal: the order comes with it, waiting for a session."""
    booking = ordered(bap)

    def result_first(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        command_result_received(
            Command.objects.get(booking=booking, type=Command.Type.START_SESSION), {"result": result}
        )
        return (*ACCEPTED, {})

    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", result_first)
    statuses = len(bap.bap.callbacks("on_status"))
    body = update_body(bap, booking, START)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))
    (answer,) = answers(bap, body)
    assert answer["error"]["code"] == "40006" and told in answer["error"]["message"]
    assert ("id" in answer["message"]["order"]) == (result == "TIMEOUT")  # a refusal: the error alone
    assert len(bap.bap.callbacks("on_status")) == statuses


def test_a_stop_the_cpo_refused_stays_stopping_for_the_booking_checks_to_send_again(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    booking = ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
        charging(network, booking)
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", (200, envelope({"result": "REJECTED"})))
    body = update_body(bap, booking, STOP)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))
    (answer,) = answers(bap, body)
    assert answer["error"]["code"] == "40006"
    stop = Command.objects.get(booking=booking, type=Command.Type.STOP_SESSION)
    assert stop.status == Command.Status.FAILED
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING


def test_a_stop_sent_first_by_its_own_task_and_refused_after_the_answer_is_told(
    bap: Any, peer: FakePeer, network: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop's queued task (another worker) claims it before the update's own send: the on_update goes out with
    the stop on its way, and the CPO's refusal comes after it. It is told (on_status), or the driver takes the
    charge for stopping while it goes on."""
    booking = ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
        charging(network, booking)
    real_send, claimed = commands.command_send, []

    def claimed_elsewhere_first(command: Command) -> Command:
        if command.type == Command.Type.STOP_SESSION and not claimed:  # the other worker: SENT, its POST on its way
            Command.objects.filter(pk=command.pk, status=Command.Status.QUEUED).update(status=Command.Status.SENT)
            claimed.append(command.pk)
        return real_send(command)

    monkeypatch.setattr(commands, "command_send", claimed_elsewhere_first)
    body = update_body(bap, booking, STOP)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", body))
    monkeypatch.setattr(commands, "command_send", real_send)
    (answer,) = answers(bap, body)
    assert "error" not in answer
    statuses = len(bap.bap.callbacks("on_status"))

    with bap.capture(execute=True):  # the other worker's POST comes back refused
        commands._finish_sent(Command.objects.get(pk=claimed[0]), error="CommandResponse REJECTED")
    told = bap.bap.callbacks("on_status")[statuses:]
    assert len(told) == 1
    assert told[0]["error"]["code"] == "40006"
    assert "could not be stopped" in told[0]["error"]["message"]
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING


def test_a_stop_refused_in_the_answer_is_not_told_again(bap: Any, peer: FakePeer, network: Partner) -> None:
    booking = ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
        charging(network, booking)
    peer.route("POST", f"{CPO_BASE}/commands/STOP_SESSION", (200, envelope({"result": "REJECTED"})))
    statuses = len(bap.bap.callbacks("on_status"))
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, STOP)))
    assert len(bap.bap.callbacks("on_status")) == statuses


# --- a request lost by its worker between recording it and answering it ------------------------------------------

QUEUE = settings.LATENCY_QUEUE


def test_a_request_recorded_but_not_answered_is_queued_again_not_forgotten(
    bap: Any, peer: FakePeer, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its row is RECEIVED: the worker died between recording it (and its command) and answering it. The sweep
    puts it back, and the task run again sends the command (once) and answers."""
    booking = ordered(bap)  # with the suite's eager queue; from here on, the real one
    client: redis.Redis = request.getfixturevalue("live_queue")
    keys = queue_journal.Keys(QUEUE)
    names = (keys.messages, keys.index, keys.high, keys.tries, queue_journal.UNACKED_KEY)
    client.delete(*names)
    request.addfinalizer(lambda: client.delete(*names))
    monkeypatch.setattr(tasks, "LOST_AFTER_SECONDS", 0)

    message_id = str(uuid.uuid4())
    order = {"id": booking.order_id, "fulfillments": [{"state": {"descriptor": {"code": START}}}]}
    assert bap.bap.post("update", {"update_target": "order.fulfillments[0].state", "order": order},
                        message_id=message_id).status_code == 200  # fmt: skip
    raw = client.rpop(QUEUE)  # the worker takes it…
    assert raw is not None
    task_id = orjson.loads(raw)["headers"]["id"]
    args = queue_journal.Entry(task_id, raw, 0).args()
    send = commands.command_send
    monkeypatch.setattr(commands, "command_send", lambda command: (_ for _ in ()).throw(Killed()))
    # …records it and is killed at the commit: neither the send nor what the commit queues (the command's task,
    # the outbox's send) comes after.
    with bap.capture(execute=False), pytest.raises(Killed):
        tasks.handle_request.apply(args=args, task_id=task_id)
    monkeypatch.setattr(commands, "command_send", send)
    assert BecknMessage.objects.get(message_id=message_id).status == BecknMessage.Status.RECEIVED
    assert not peer.requests_to("START_SESSION")

    assert tasks.requeue_lost_requests() == 1
    assert client.lrange(QUEUE, 0, -1) == [raw]
    again = client.rpop(QUEUE)
    assert again is not None
    with bap.capture(execute=True):
        tasks.handle_request.apply(args=queue_journal.Entry(task_id, again, 0).args(), task_id=task_id).get()
    assert len(peer.requests_to("START_SESSION")) == 1
    assert BecknMessage.objects.get(message_id=message_id).status == BecknMessage.Status.PROCESSED
    assert len([c for c in bap.bap.callbacks("on_update") if c["context"]["message_id"] == message_id]) == 1
    assert tasks.requeue_lost_requests() == 0
    assert client.hlen(keys.messages) == 0
