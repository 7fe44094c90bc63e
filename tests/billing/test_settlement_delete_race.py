"""A settlement deleted from the console while a close of it runs, or after one committed since the request loaded
it. The delete was allowed on the state the request loaded (RECONCILED): its DELETE waited for the close's row lock
and then removed the period just closed. The page's delete and the bulk "delete selected" now lock the row and
read its state again: a closed one is refused with a message on the console, and nothing is deleted."""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.urls import reverse

from billing.admin_settlement import SettlementAdmin
from billing.models import Settlement
from billing.services import settlement as service
from billing.services.settlement import settlement_close
from tests.billing import test_console_races as console_races
from tests.races import Holds, at_once

OCTOBER = date(2026, 10, 1)
needs_postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")


def _finance(name: str = "finance") -> User:
    return console_races._finance(name, "view_settlement", "change_settlement", "delete_settlement")


_reconciled_inr = console_races._reconciled_inr  # October of the scenario's CPO, INR: ready to close (and delete)


def _delete(user: User, settlement: Settlement, how: str) -> tuple[int, list[tuple[str, str]]]:
    """The confirmed delete POST, from the settlement's page or the list's action: its status and the messages it
    left (read off the request: a thread's client can't follow to the next page's context)."""
    client = Client()
    client.force_login(user)
    if how == "page":
        response = client.post(reverse("admin:billing_settlement_delete", args=[settlement.pk]), {"post": "yes"})
    else:
        post = {"action": "delete_selected", "_selected_action": [settlement.pk], "post": "yes"}
        response = client.post(reverse("admin:billing_settlement_changelist"), post)
    return response.status_code, [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def _refused(settlement: Settlement, how: str) -> list[tuple[str, str]]:
    if how == "page":
        return [("error", f"Not deleted: {settlement} is closed.")]
    return [("error", f"Nothing deleted: {settlement} is closed.")]


HOW = pytest.mark.parametrize("how", ["page", "bulk"])


@pytest.mark.django_db
@HOW
def test_a_settlement_not_closed_is_deleted(how: str) -> None:
    inr = _reconciled_inr()
    status, said = _delete(_finance(), inr, how)
    assert status == 302
    assert [level for level, _ in said] == ["success"]
    assert not Settlement.objects.filter(pk=inr.pk).exists()
    assert LogEntry.objects.filter(object_id=str(inr.pk), action_flag=DELETION).count() == 1


@pytest.mark.django_db
@HOW
def test_a_delete_of_a_closed_settlement_is_refused_with_a_message(how: str) -> None:
    """A page or list loaded before the close, its delete POSTed after: a message, not a 403 (or a 500)."""
    finance = _finance()
    inr = settlement_close(settlement=_reconciled_inr(), user=finance)

    status, said = _delete(finance, inr, how)

    assert status == 302
    assert said == _refused(inr, how)
    assert Settlement.objects.get(pk=inr.pk).state == Settlement.State.CLOSED
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("to_field", ["no_such_field", "partner"])
def test_a_delete_naming_a_field_that_is_not_a_key_is_refused_before_any_read(to_field: str) -> None:
    """`?_to_field=` of a field that does not exist or is not unique: Django's 400, where the state's re-read
    looked the settlement up by it first (FieldDoesNotExist, MultipleObjectsReturned: a 500)."""
    inr = _reconciled_inr()
    client = Client(raise_request_exception=False)
    client.force_login(_finance())
    key = inr.partner_id if to_field == "partner" else inr.pk
    url = reverse("admin:billing_settlement_delete", args=[key]) + f"?_to_field={to_field}"
    assert client.post(url, {"post": "yes"}).status_code == 400
    assert Settlement.objects.filter(pk=inr.pk).exists()


@needs_postgres
@pytest.mark.django_db(transaction=True)
@HOW
def test_a_delete_while_the_close_runs_waits_for_it_and_is_refused(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The close has locked the period and recomputed it, not committed, when the delete is POSTed: the delete
    waits for the close and reads the settlement CLOSED. Before, it was allowed on the RECONCILED row its request
    read, and its DELETE, once the close's lock was let go, removed the period just closed."""
    finance = _finance()
    inr = _reconciled_inr()
    holds, closing, deleted = Holds(), threading.Event(), threading.Event()
    real_compute = service.settlement_compute

    def compute_then_hold(**kwargs: Any) -> Any:  # inside the close, under its lock of the period's rows
        result = real_compute(**kwargs)
        closing.set()
        holds.until_the_other_moves(deleted)
        return result

    monkeypatch.setattr(service, "settlement_compute", compute_then_hold)
    out: dict[str, Any] = {}

    def close() -> None:
        settlement_close(settlement=Settlement.objects.get(pk=inr.pk), user=finance)

    def delete() -> None:
        assert closing.wait(20)
        try:
            out["delete"] = _delete(finance, inr, how)
        finally:
            deleted.set()

    failures = at_once(close, delete)

    assert not failures, failures
    assert holds.given_up == 0  # the delete waited on the close's lock
    assert out["delete"] == (302, _refused(inr, how))
    assert Settlement.objects.get(pk=inr.pk).state == Settlement.State.CLOSED
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_delete_post_made_stale_by_a_close_committed_meanwhile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The delete's request has loaded the settlement (RECONCILED) when another member of staff's close commits.
    Before, the delete was allowed on the state loaded and removed the closed period."""
    finance, other = _finance(), _finance("other")
    inr = _reconciled_inr()
    real_get_object = SettlementAdmin.get_object
    closed: list[Settlement] = []

    def loaded_then_closed(self: SettlementAdmin, *args: Any, **kwargs: Any) -> Any:
        obj = real_get_object(self, *args, **kwargs)
        if not closed:
            failures = at_once(lambda: closed.append(settlement_close(settlement=inr, user=other)))
            assert not failures, failures
        return obj

    monkeypatch.setattr(SettlementAdmin, "get_object", loaded_then_closed)

    status, said = _delete(finance, inr, "page")

    assert closed and closed[0].state == Settlement.State.CLOSED
    assert (status, said) == (302, _refused(inr, "page"))
    assert Settlement.objects.get(pk=inr.pk).state == Settlement.State.CLOSED
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()
