"""Every task is acknowledged after it ran (acks_late): a worker killed half-way, or a broker redelivering, runs
it again with the same arguments. Each kind of task here runs twice; the second run changes nothing: no new
row, no changed row, no second call to a partner (only the outbound HTTP seam is faked, tests/fakes.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.db import models
from django.utils import timezone

from beckn import tasks as beckn_tasks
from beckn.models import BecknCallback, BecknMessage
from billing import tasks as billing_tasks
from billing.models import Cdr, CdrAudit, DriverReceipt, IssuedDocument, LedgerEntry
from emsp import tasks as emsp_tasks
from emsp.models import Command, Delivery, DeliveryAttempt, Location, Partner
from emsp.services import commands
from emsp.services.tokens import token_issue
from ocpi import tasks as ocpi_tasks
from ocpi.models import SyncLease, SyncRun
from tests.beckn.bap import FakeBap
from tests.billing.test_cdr_audit import bec, example_cdr, store  # noqa: F401 - fixtures
from tests.factories import DriverFactory, TokenFactory, ocpi_location, stored_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"


def snapshot(*model_classes: type[models.Model], peer: FakePeer | None = None, ignore: tuple[str, ...] = ()) -> Any:
    """Every row of the models (all fields but `ignore`), and the calls made to partners so far."""
    rows = {
        m.__name__: sorted(repr({k: v for k, v in row.items() if k not in ignore}) for row in m.objects.values())
        for m in model_classes
    }
    return {**rows, "outbound calls": len(peer.calls) if peer is not None else 0}


@pytest.fixture
def run(django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[..., Any]:
    """Run a task as a worker does, with what it queues after commit run too (tests run tasks inline)."""

    def call(task: Any, *args: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return task.apply(args).get()

    return call


def twice(run: Callable[..., Any], task: Any, args: tuple[Any, ...], *watched: type[models.Model], peer: FakePeer):
    run(task, *args)
    after_first = snapshot(*watched, peer=peer)
    run(task, *args)
    assert snapshot(*watched, peer=peer) == after_first
    return after_first


def test_command_send_twice_posts_once(run: Any, peer: FakePeer, partner: Partner) -> None:
    peer.route("POST", f"{CPO}/commands/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    evse = stored_location(partner).evses.order_by("uid").first()
    command = commands.command_start_session(token=TokenFactory(), evse=evse)
    first = twice(run, emsp_tasks.command_send, (command.pk,), Command, peer=peer)
    assert first["outbound calls"] == 1
    assert Command.objects.get(pk=command.pk).status == Command.Status.ACCEPTED


def test_command_timeouts_twice_time_out_once(run: Any, peer: FakePeer, partner: Partner) -> None:
    peer.route("POST", f"{CPO}/commands/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    peer.route("GET", f"{CPO}/sessions", (200, envelope([])))
    evse = stored_location(partner).evses.order_by("uid").first()
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    Command.objects.filter(pk=command.pk).update(timeout_at=timezone.now() - timedelta(seconds=1))
    twice(run, emsp_tasks.command_check_timeout, (command.pk,), Command, peer=peer)
    assert Command.objects.get(pk=command.pk).status == Command.Status.TIMEOUT
    twice(run, emsp_tasks.commands_expire_due, (), Command, peer=peer)


def test_outbox_deliver_twice_pushes_once(run: Any, peer: FakePeer, partner: Partner) -> None:
    token = token_issue(driver=DriverFactory())
    peer.route("PUT", f"{CPO}/tokens/IN/EMS/{token.uid}", (200, envelope()))
    delivery = Delivery.objects.get()
    first = twice(run, emsp_tasks.outbox_deliver, (delivery.pk,), Delivery, DeliveryAttempt, peer=peer)
    assert first["outbound calls"] == 1
    assert Delivery.objects.get().status == Delivery.Status.DELIVERED


def test_the_outbox_sweep_twice_sends_a_due_row_once(run: Any, peer: FakePeer, partner: Partner) -> None:
    token = token_issue(driver=DriverFactory())
    peer.route("PUT", f"{CPO}/tokens/IN/EMS/{token.uid}", (200, envelope()))
    first = twice(run, emsp_tasks.outbox_deliver_due, (), Delivery, DeliveryAttempt, peer=peer)
    assert first["outbound calls"] == 1


@pytest.fixture
def search_body(peer: FakePeer, partner: Partner) -> Iterator[tuple[FakeBap, str]]:
    stored_location(partner, location_id="NEAR", evses=2)
    bap = FakeBap(peer)
    message = {"intent": {"fulfillment": {"stops": [{"location": {"circle": {
        "gps": "12.971600, 77.594600", "radius": {"type": "CONSTANT", "value": "20", "unit": "km"}}}}]}}}  # fmt: skip
    yield bap, orjson.dumps({"context": bap.context("search"), "message": message}).decode()


def test_handle_request_twice_answers_once(run: Any, peer: FakePeer, search_body: tuple[FakeBap, str]) -> None:
    bap, body = search_body
    first = twice(run, beckn_tasks.handle_request, ("search", body), BecknMessage, BecknCallback, peer=peer)
    assert (first["outbound calls"], len(bap.callbacks("on_search"))) == (1, 1)
    assert BecknCallback.objects.get().status == "DELIVERED"


def test_handle_request_sends_its_callback_itself_without_queueing_a_second_task(
    run: Any, peer: FakePeer, search_body: tuple[FakeBap, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The on_* callback goes out from the same task, right after its commit (outbox.sent_here): no
    outbox_deliver task, one trip through the broker fewer. The row is committed first, as always."""
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(emsp_tasks.outbox_deliver, "delay", lambda *args: queued.append(args))
    bap, body = search_body
    run(beckn_tasks.handle_request, "search", body)
    assert queued == [] and len(bap.callbacks("on_search")) == 1
    assert BecknCallback.objects.get().status == "DELIVERED"


def savepoints(run: Any, *args: Any) -> int:
    """How many savepoints a request's handling had open at once (a test runs in a transaction, so the request's
    own block is one; the callback's settling after the commit, a block of its own on SQLite, is not counted)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as seen:
        run(*args)
    statements = [q["sql"] for q in seen.captured_queries]
    handling = statements[: next(i for i, sql in enumerate(statements) if sql.startswith("RELEASE"))]
    return sum(1 for sql in handling if sql.startswith("SAVEPOINT"))  # open before the first is released


def test_a_search_answers_without_a_savepoint_of_its_own_its_errors_too(
    run: Any, peer: FakePeer, search_body: tuple[FakeBap, str]
) -> None:
    """A search writes nothing an error must undo: no savepoint around its handler (two round trips a search),
    and a search its checks refuse is still recorded and answered with the error. A select keeps its own."""
    bap, body = search_body
    assert savepoints(run, beckn_tasks.handle_request, "search", body) == 1
    assert bap.callbacks("on_search")[0].get("message", {}).get("catalog")
    refused = orjson.loads(body)
    refused["context"]["message_id"] = "refused-search"
    refused["message"]["intent"]["fulfillment"]["stops"][0]["location"]["circle"]["gps"] = "95.0, 77.0"
    assert savepoints(run, beckn_tasks.handle_request, "search", orjson.dumps(refused).decode()) == 1
    (answer,) = [c for c in bap.callbacks("on_search") if c["context"]["message_id"] == "refused-search"]
    assert answer.get("error", {}).get("code") and answer["message"] == {"catalog": {}}
    assert BecknMessage.objects.filter(message_id="refused-search", status=BecknMessage.Status.PROCESSED).exists()
    select = {"context": bap.context("select"), "message": {"order": {"items": [{"id": "NOPE/1/1"}]}}}
    assert savepoints(run, beckn_tasks.handle_request, "select", orjson.dumps(select).decode()) == 2
    assert bap.callbacks("on_select")[0].get("error")


def test_a_select_opening_its_journey_writes_it_with_one_insert(
    run: Any, peer: FakePeer, search_body: tuple[FakeBap, str]
) -> None:
    """A select without a search before it (a charger's QR code) opens the journey with one INSERT … ON CONFLICT,
    not get_or_create's SELECT, SAVEPOINT, INSERT and RELEASE; the next request of the journey finds it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from beckn.models import BecknTransaction

    bap, _ = search_body
    context = bap.context("select")
    select = {"context": context, "message": {"order": {"items": [{"id": "NOPE/1/1"}]}}}
    with CaptureQueriesContext(connection) as seen:
        run(beckn_tasks.handle_request, "select", orjson.dumps(select).decode())
    journey = [q["sql"] for q in seen.captured_queries if "beckn_beckntransaction" in q["sql"].split("(")[0]]
    assert len(journey) == 2 and journey[0].startswith("SELECT") and "ON CONFLICT" in journey[1], journey
    assert BecknTransaction.objects.filter(transaction_id=context["transaction_id"]).count() == 1
    again = {**select, "context": {**context, "message_id": "select-again"}}
    with CaptureQueriesContext(connection) as seen:
        run(beckn_tasks.handle_request, "select", orjson.dumps(again).decode())
    journey = [q["sql"] for q in seen.captured_queries if "beckn_beckntransaction" in q["sql"].split("(")[0]]
    assert len(journey) == 1 and journey[0].startswith("SELECT"), journey
    assert len(bap.callbacks("on_select")) == 2


def test_a_pull_twice_stores_nothing_twice_and_a_pull_under_another_s_lease_calls_nobody(
    run: Any, peer: FakePeer, partner: Partner
) -> None:
    peer.route("GET", f"{CPO}/locations", (200, envelope([ocpi_location(location_id="LOC1")])))
    for module in ("tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{CPO}/{module}", (200, envelope([])))
    run(ocpi_tasks.sync_partner, partner.pk, True)
    stored = snapshot(Location, ignore=("received_at",))  # when we last heard of it; a second pull hears again
    assert len(stored["Location"]) == 1
    runs = SyncRun.objects.count()
    run(ocpi_tasks.sync_partner, partner.pk, True)  # a second pull: new pull records, the same objects
    assert snapshot(Location, ignore=("received_at",)) == stored
    assert SyncRun.objects.count() == 2 * runs and not SyncLease.objects.exists()
    # The duplicate delivered while the first still runs (the lease held) pulls nothing and writes nothing.
    SyncLease.objects.create(partner=partner, holder="first", held_until=timezone.now() + timedelta(minutes=5))
    calls = len(peer.calls)
    assert run(ocpi_tasks.sync_partner, partner.pk, True) == 0
    assert (len(peer.calls), SyncRun.objects.count()) == (calls, 2 * runs)


def test_process_cdr_twice_audits_receipts_and_bills_once(
    run: Any,
    peer: FakePeer,
    bec: Partner,  # noqa: F811
    example_cdr: Any,  # noqa: F811
) -> None:
    TokenFactory(uid="012345678")
    cdr = store(bec, example_cdr)
    watched = (Cdr, CdrAudit, DriverReceipt, LedgerEntry)
    twice(run, billing_tasks.process_cdr, (cdr.pk,), *watched, peer=peer)
    assert (CdrAudit.objects.count(), DriverReceipt.objects.count()) == (1, 1)
    Cdr.objects.filter(pk=cdr.pk).update(received_at=timezone.now() - timedelta(minutes=5))
    twice(run, billing_tasks.process_due_cdrs, (), *watched, peer=peer)  # nothing left to do: nothing done
    receipt = DriverReceipt.objects.get()
    twice(run, billing_tasks.issue_receipt, (receipt.pk,), DriverReceipt, IssuedDocument, peer=peer)
    assert IssuedDocument.objects.count() == 1 and DriverReceipt.objects.get().issued
    DriverReceipt.objects.update(created_at=timezone.now() - timedelta(minutes=5))
    twice(run, billing_tasks.issue_due_receipts, (), DriverReceipt, IssuedDocument, peer=peer)  # none due
