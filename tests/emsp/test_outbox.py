"""The one outbox: OCPI pushes and Beckn callbacks are claimed by compare-and-set, sent outside any
transaction, retried under one policy (4xx final but 408/429, backoff with jitter, a maximum of attempts),
handed back when a stopped worker left them SENDING, and retried by staff who may."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone

from emsp import outbox
from emsp.models import Delivery, DeliveryAttempt, Partner
from emsp.services.tokens import token_issue
from ocpi.models import PushDelivery
from tests.factories import DriverFactory
from tests.fakes import FakePeer, envelope

TOKENS = "http://127.0.0.1:9/ocpi/cpo/2.2.1/tokens"


def queued_push(peer: FakePeer, answer: tuple[int, Any]) -> PushDelivery:
    token = token_issue(driver=DriverFactory())
    peer.route("PUT", f"{TOKENS}/IN/EMS/{token.uid}", answer)
    return PushDelivery.objects.get()


@pytest.mark.django_db
def test_it_delivers_once_and_records_the_attempt(peer: FakePeer, partner: Partner) -> None:
    push = queued_push(peer, (200, envelope()))
    assert outbox.deliver(push.pk).status == Delivery.Status.DELIVERED
    assert outbox.deliver(push.pk) is None  # already delivered: nothing is sent again
    assert len(peer.requests_to("/tokens/")) == 1
    assert DeliveryAttempt.objects.filter(delivery=push).count() == 1


@pytest.mark.django_db
def test_a_row_another_worker_holds_is_not_sent(peer: FakePeer, partner: Partner) -> None:
    push = queued_push(peer, (200, envelope()))
    Delivery.objects.filter(pk=push.pk).update(status=Delivery.Status.SENDING, claimed_at=timezone.now())
    assert outbox.deliver(push.pk) is None
    assert peer.requests_to("/tokens/") == []


@pytest.mark.django_db
@pytest.mark.parametrize(("status", "final"), [(400, True), (404, True), (408, False), (429, False), (503, False)])
def test_a_4xx_is_final_but_408_and_429_are_retried(peer: FakePeer, partner: Partner, status: int, final: bool) -> None:
    push = queued_push(peer, (status, envelope(status_code=2000)))
    delivery = outbox.deliver(push.pk)
    assert delivery.status == (Delivery.Status.FAILED if final else Delivery.Status.PENDING)
    assert delivery.last_http_status == status


@pytest.mark.django_db
def test_an_ocpi_error_status_in_an_http_200_is_retried(peer: FakePeer, partner: Partner) -> None:
    push = queued_push(peer, (200, envelope(status_code=3000)))
    delivery = outbox.deliver(push.pk)
    assert delivery.status == Delivery.Status.PENDING
    assert "OCPI 3000" in delivery.last_error


@pytest.mark.django_db
@override_settings(OUTBOX_MAX_ATTEMPTS=3)
def test_it_gives_up_after_the_maximum_of_attempts(peer: FakePeer, partner: Partner) -> None:
    push = queued_push(peer, (503, envelope(status_code=3000)))
    for _ in range(3):
        Delivery.objects.filter(pk=push.pk).update(next_attempt_at=timezone.now())
        delivery = outbox.deliver(push.pk)
    assert (delivery.status, delivery.attempts) == (Delivery.Status.FAILED, 3)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempts in range(1, 20):
        ceiling = min(outbox.BACKOFF_CAP_SECONDS, outbox.BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
        waits = {outbox.backoff(attempts).total_seconds() for _ in range(20)}
        assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
        assert len(waits) > 1  # jittered


@pytest.mark.django_db
def test_a_row_left_sending_by_a_stopped_worker_is_sent_again_after_the_lease(peer: FakePeer, partner: Partner) -> None:
    push = queued_push(peer, (200, envelope()))
    stopped = timezone.now() - timedelta(seconds=30)
    Delivery.objects.filter(pk=push.pk).update(status=Delivery.Status.SENDING, claimed_at=stopped, attempts=1)
    assert outbox.deliver_due() == 0  # still inside the lease: the worker may yet finish
    later = timezone.now() + timedelta(seconds=200)
    assert outbox.deliver_due(now=later) == 1
    push.refresh_from_db()
    assert (push.status, push.attempts) == (Delivery.Status.DELIVERED, 2)


@pytest.mark.django_db(transaction=True)
def test_the_request_is_made_outside_any_transaction(monkeypatch: pytest.MonkeyPatch, partner: Partner) -> None:
    seen: list[bool] = []

    def sender(delivery: Delivery) -> outbox.SendResult:
        seen.append(connection.in_atomic_block)
        return outbox.SendResult(200)

    monkeypatch.setitem(outbox._senders, Delivery.Channel.OCPI_PUSH, sender)
    row = Delivery.objects.create(channel=Delivery.Channel.OCPI_PUSH, partner=partner, target="x")
    assert outbox.deliver(row.pk).status == Delivery.Status.DELIVERED
    assert seen == [False]


@pytest.mark.django_db
def test_a_fault_in_a_sender_is_recorded_and_retried_not_left_sending(
    monkeypatch: pytest.MonkeyPatch, partner: Partner
) -> None:
    def broken(delivery: Delivery) -> outbox.SendResult:
        raise RuntimeError("bug")

    monkeypatch.setitem(outbox._senders, Delivery.Channel.OCPI_PUSH, broken)
    row = Delivery.objects.create(channel=Delivery.Channel.OCPI_PUSH, partner=partner, target="x")
    delivery = outbox.deliver(row.pk)
    assert delivery.status == Delivery.Status.PENDING
    assert "RuntimeError: bug" in delivery.last_error


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "allowed"), [("admin", True), ("ops", True), ("finance", False)])
def test_retry_now_needs_the_retry_permission(
    peer: FakePeer,
    partner: Partner,
    role: str,
    allowed: bool,
    django_user_model: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    from django.contrib.auth.models import Group

    from emsp.roles import roles_setup

    roles_setup()
    push = queued_push(peer, (404, envelope(status_code=2000)))
    outbox.deliver(push.pk)
    user = django_user_model.objects.create_user(username=role, password="x", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    peer.route("PUT", peer.calls[0]["url"].split("?")[0], (200, envelope()))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:emsp_delivery_changelist"),
            {"action": "retry_now", "_selected_action": [push.pk]},
        )
    push.refresh_from_db()
    if allowed:
        assert response.status_code == 302
        assert push.status == Delivery.Status.DELIVERED  # queued again and sent (tasks run inline in tests)
    else:
        assert push.status == Delivery.Status.FAILED


@pytest.mark.django_db
def test_a_row_sent_as_written_is_not_read_back(peer: FakePeer) -> None:
    """Right after its commit a Beckn callback is sent from the instance its writer holds (outbox.sent_here):
    the claim, the send and the settling, and no SELECT of the row."""
    from django.test.utils import CaptureQueriesContext

    from beckn.models import BecknCallback

    url = "http://127.0.0.1:9/bap/on_search"
    peer.route("POST", url, (200, {"message": {"ack": {"status": "ACK"}}}))
    row = BecknCallback.objects.create(
        channel=Delivery.Channel.BECKN_CALLBACK, target=url, action="on_search", url=url, message_id="m-1",
        body='{"context": {"action": "on_search"}, "message": {}}',
    )  # fmt: skip
    with CaptureQueriesContext(connection) as seen:
        sent = outbox.deliver(row.pk, row=row, read_back=False)
    assert sent is row and row.status == Delivery.Status.SENDING and row.attempts == 1  # as claimed, not re-read
    assert not [q for q in seen.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert len(peer.requests_to("/bap/on_search")) == 1
    stored = Delivery.objects.get(pk=row.pk)
    assert (stored.status, stored.attempts) == (Delivery.Status.DELIVERED, 1)
    assert DeliveryAttempt.objects.filter(delivery=row, http_status=200).count() == 1
    assert outbox.deliver(row.pk, row=row) is None  # delivered: a second try claims nothing


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outcome", ["delivered", "retried"])
def test_claim_and_settlement_are_one_statement_each_committed_without_waiting_for_the_disk(
    peer: FakePeer, outcome: str
) -> None:
    """On PostgreSQL, out of any transaction: the claim is one UPDATE and the settlement one statement (the row's
    UPDATE and its attempt's INSERT), each committed asynchronously (a crash repeats a send, never loses one);
    the setting ends with each, and the row ends as the slower path left it."""
    from django.test.utils import CaptureQueriesContext

    from beckn.models import BecknCallback

    if connection.vendor != "postgresql":
        pytest.skip("asynchronous commit is PostgreSQL's")
    url = "http://127.0.0.1:9/bap/on_select"
    peer.route("POST", url, (200, {"message": {"ack": {"status": "ACK"}}}) if outcome == "delivered" else (503, {}))
    row = BecknCallback.objects.create(
        channel=Delivery.Channel.BECKN_CALLBACK, target=url, action="on_select", url=url, message_id="m-2",
        body='{"context": {"action": "on_select"}, "message": {}}',
    )  # fmt: skip
    with CaptureQueriesContext(connection) as seen:
        outbox.deliver(row.pk, row=row, read_back=False)
    writes = [q["sql"] for q in seen.captured_queries]
    assert len(writes) == 2, writes
    assert all(w.endswith("RETURNING set_config('synchronous_commit', 'off', true)") for w in writes)
    assert writes[1].startswith("WITH settled AS (UPDATE")
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    stored = Delivery.objects.get(pk=row.pk)
    expected = Delivery.Status.DELIVERED if outcome == "delivered" else Delivery.Status.PENDING
    assert (stored.status, stored.attempts, stored.claimed_at) == (expected, 1, None)
    if outcome == "delivered":
        assert stored.delivered_at is not None
    else:
        assert stored.next_attempt_at > timezone.now() and stored.last_http_status == 503
    (attempt,) = DeliveryAttempt.objects.filter(delivery=stored)
    assert attempt.http_status == (200 if outcome == "delivered" else 503)


@pytest.mark.django_db
def test_a_try_the_breaker_refused_does_not_count_and_waits_for_it() -> None:
    """A sender that did not send at all (the partner's breaker is open) gives the try back: `attempts` goes one
    back and the row waits until then (on PostgreSQL the settlement's hand-written UPDATE, elsewhere the ORM)."""
    until = timezone.now() + timedelta(minutes=5)
    row = Delivery.objects.create(channel="test_refused", target="nowhere", attempts=3)
    outbox.register_sender(
        "test_refused", lambda delivery: outbox.SendResult(None, "breaker open", not_sent_until=until)
    )
    try:
        outbox.deliver(row.pk)
    finally:
        outbox._senders.pop("test_refused")
    stored = Delivery.objects.get(pk=row.pk)
    assert (stored.status, stored.attempts, stored.claimed_at) == (Delivery.Status.PENDING, 3, None)
    assert stored.next_attempt_at == until and stored.last_error == "breaker open"
    assert DeliveryAttempt.objects.filter(delivery=row, http_status=None, error="breaker open").count() == 1


def _callback_written_under_sent_here(peer: FakePeer, callbacks_: Any, *, run_hooks: bool) -> Any:
    """A Beckn callback written as a request's task writes it (outbox.sent_here), its commit hooks run or not."""
    from beckn import callbacks

    url = "http://127.0.0.1:9/bap"
    peer.route("POST", f"{url}/on_search", (200, {"message": {"ack": {"status": "ACK"}}}))
    context = {"action": "on_search", "bap_uri": url, "message_id": "m-3", "transaction_id": "t-3"}
    with outbox.sent_here(), callbacks_(execute=run_hooks) as hooks:
        row = callbacks.enqueue(action="on_search", context=context, message={"catalog": {}}, url=url)
    return row, hooks


@pytest.mark.django_db
def test_a_callback_written_under_sent_here_is_written_claimed_and_sent_without_a_claim(
    peer: FakePeer, django_capture_on_commit_callbacks: Any
) -> None:
    """Its row is inserted SENDING with its first try counted, so the send after the commit is the POST and one
    settling statement: no claim UPDATE, no SELECT."""
    from django.test.utils import CaptureQueriesContext

    row, hooks = _callback_written_under_sent_here(peer, django_capture_on_commit_callbacks, run_hooks=False)
    stored = Delivery.objects.get(pk=row.pk)
    assert (stored.status, stored.attempts) == (Delivery.Status.SENDING, 1) and stored.claimed_at is not None
    assert outbox.deliver_due() == 0  # the sweep leaves a claimed row alone
    with CaptureQueriesContext(connection) as seen:
        for hook in hooks:
            hook()
    statements = [q["sql"] for q in seen.captured_queries]
    assert not [s for s in statements if "'SENDING', \"claimed_at\"" in s or s.lstrip().upper().startswith("SELECT")]
    assert len(peer.requests_to("/bap/on_search")) == 1
    stored = Delivery.objects.get(pk=row.pk)
    assert (stored.status, stored.attempts, stored.claimed_at) == (Delivery.Status.DELIVERED, 1, None)
    assert DeliveryAttempt.objects.filter(delivery=row, http_status=200).count() == 1


@pytest.mark.django_db
def test_a_callback_whose_worker_died_between_commit_and_send_is_sent_after_its_lease(
    peer: FakePeer, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    """The commit hook never ran (the worker was killed): the row waits SENDING for a callback's lease (15 s,
    above its send's 10 s timeout), then the next sweep (every 10 s) hands it back and sends it, once: within the
    body's 30 s ttl. Other rows keep the longer lease."""
    row, _ = _callback_written_under_sent_here(peer, django_capture_on_commit_callbacks, run_hooks=False)
    lease = timedelta(seconds=settings.OUTBOX_CALLBACK_LEASE_SECONDS)
    assert 10 < settings.OUTBOX_CALLBACK_LEASE_SECONDS <= 20 < settings.OUTBOX_SENDING_LEASE_SECONDS
    assert outbox.deliver_due(timezone.now() + lease - timedelta(seconds=2)) == 0
    assert outbox.deliver_due(timezone.now() + lease + timedelta(seconds=1)) == 1
    assert len(peer.requests_to("/bap/on_search")) == 1
    assert Delivery.objects.get(pk=row.pk).status == Delivery.Status.DELIVERED


@pytest.mark.django_db
def test_a_callback_that_waited_behind_another_send_renews_its_claim_and_is_sent_once(
    peer: FakePeer, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    """Two callbacks of one commit go one after the other; the first may take a send's whole timeout. The second's
    claim is renewed before its send, so the sweep meanwhile doesn't hand it back and send it a second time."""
    row, hooks = _callback_written_under_sent_here(peer, django_capture_on_commit_callbacks, run_hooks=False)
    waited = timezone.now() - timedelta(seconds=settings.OUTBOX_CALLBACK_LEASE_SECONDS - 2)
    Delivery.objects.filter(pk=row.pk).update(claimed_at=waited)
    row.claimed_at = waited
    for hook in hooks:
        hook()  # its send, once the first was done
    assert outbox.deliver_due(timezone.now() + timedelta(seconds=3)) == 0  # nothing left for the sweep
    assert len(peer.requests_to("/bap/on_search")) == 1


@pytest.mark.django_db
def test_a_callback_the_sweep_handed_back_while_it_waited_is_left_to_the_sweep(
    peer: FakePeer, django_capture_on_commit_callbacks: Any
) -> None:
    row, hooks = _callback_written_under_sent_here(peer, django_capture_on_commit_callbacks, run_hooks=False)
    waited = timezone.now() - timedelta(seconds=30)
    Delivery.objects.filter(pk=row.pk).update(claimed_at=waited)
    row.claimed_at = waited
    assert outbox.deliver_due() == 1  # handed back and sent by the sweep
    for hook in hooks:
        hook()  # the late send after commit: not a second POST
    assert len(peer.requests_to("/bap/on_search")) == 1


@pytest.mark.django_db
def test_an_older_push_sent_after_a_newer_one_carries_the_token_as_it_is_now(peer: FakePeer, partner: Partner) -> None:
    """A push row handed back after its lease (its worker killed) goes after a newer one: the CPO must not be left
    with the older state (a blocked token valid again)."""
    from emsp.models import Token
    from ocpi import push as pushes

    old = queued_push(peer, (200, envelope()))  # valid
    Delivery.objects.filter(pk=old.pk).update(status=Delivery.Status.SENDING, claimed_at=timezone.now())
    Token.objects.filter(uid=old.payload["uid"]).update(valid=False)  # then blocked: a newer push
    newer = pushes.token_changed(Token.objects.get(uid=old.payload["uid"]))[0]
    assert outbox.deliver(newer.pk).status == Delivery.Status.DELIVERED
    Delivery.objects.filter(pk=old.pk).update(
        status=Delivery.Status.PENDING, claimed_at=None, next_attempt_at=timezone.now()
    )  # handed back by the sweep
    assert outbox.deliver(old.pk).status == Delivery.Status.DELIVERED
    sent = [call["json"]["valid"] for call in peer.requests_to("/tokens/")]
    assert sent == [False, False]
