"""The finance console under double-submits and races. What is held:

- a dispute's credit and a credit CDR of the same charge processed at the same moment give the driver back the
  disputed difference once: the credit's limit is read under the disputed CDR's row lock, the lock the credit
  CDR's processing takes (PostgreSQL);
- two credits of one dispute posted at once credit it once (PostgreSQL);
- a POST to a settlement's page (nothing on it is editable) is refused and writes nothing: one racing a close
  had written the row back as it was loaded, reopening the closed period;
- a dispute's history and the staff audit record the state it really moved from, read under its lock, not the
  state the request loaded before another member of staff moved it;
- a CPO statement issued twice (a double-click, the back button) is issued and recorded once, and the second
  time says it was issued already, also when both clicks arrive at once (PostgreSQL).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from billing.admin_settlement import SettlementAdmin
from billing.models import Cdr, Dispute, DisputeEvent, IssuedDocument, LedgerEntry, LedgerLine, Settlement
from billing.services import accounts, disputes, documents, records
from billing.services.audit import cdr_process
from billing.services.settlement import settlement_close, settlement_compute
from emsp.models import Partner, StaffAction
from tests.billing.dispute_factories import audited_dispute
from tests.billing.factories import DisputeFactory, PartnerTermsFactory, settlement_scenario
from tests.billing.test_settlement_review_fixes import _run, _until, needs_postgres
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory

CDRS = "/ocpi/emsp/2.2.1/cdrs"
OCTOBER = date(2026, 10, 1)


def _finance(name: str, *codenames: str) -> User:
    user = User.objects.create_user(name, password="pw-123456-x", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="billing", codename=codename))
    return user


def _logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _reconciled_inr() -> Settlement:
    """October of the settlement scenario's CPO, INR: reconciled, ready to close."""
    scenario = settlement_scenario()
    rows = {s.currency: s for s in settlement_compute(partner=scenario["partner"], period_start=OCTOBER)}
    assert rows["INR"].state == Settlement.State.RECONCILED
    return rows["INR"]


# --- a dispute credit racing a credit CDR of the same charge (PostgreSQL) ----------------------------------------


def _credit_of(original: dict[str, Any], cdr_id: str, excl: str, incl: str) -> dict[str, Any]:
    return {
        **original,
        "id": cdr_id,
        "credit": True,
        "credit_reference_id": original["id"],
        "total_cost": {"excl_vat": -float(excl), "incl_vat": -float(incl)},
    }


def _borne_by_cpo(key: str) -> Decimal:
    """What the ledger entry of `key` took off the CPO's payable (BE*BEC, EUR)."""
    lines = LedgerLine.objects.filter(account=accounts.cpo_payable("BE*BEC", "EUR"), entry__idempotency_key=key)
    return Decimal(sum(lines.values_list("amount_minor", flat=True))) / 100


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_dispute_credit_racing_a_credit_cdr_gives_the_difference_back_once(
    client_for: Callable[..., OcpiTestClient], spec_example: Callable[[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispute's credit has read its limit (2.00: no credit CDR processed yet) when the CPO's credit CDR of
    1.00 is processed: it waits for the dispute credit to commit, and nets its refund against it. Before, it
    refunded 1.10 at once and the dispute credit 2.20 after it: 3.30 given back of a 2.20 difference."""
    bec = client_for("BE", "BEC")
    PartnerTermsFactory(partner=Partner.objects.get(country_code="BE", party_id="BEC"), fee_flat=Decimal("1.00"),
                        fee_vat_percent=Decimal(18))  # fmt: skip
    TokenFactory(uid="012345678")
    cdr = spec_example("cdr_example.json")  # 4.00 / 4.40 EUR
    original = {**cdr, "cdr_token": {**cdr["cdr_token"], "country_code": "IN", "party_id": "EMS"}}
    assert bec.post(CDRS, original).json()["status_code"] == 1000
    charge = Cdr.objects.get(cdr_id=original["id"])
    cdr_process(charge.pk)
    # The CPO billed 4.00, we priced 2.00: a dispute of 2.00 excl. VAT.
    dispute = DisputeFactory(cdr=charge, partner=charge.partner, currency="EUR", cpo_amount=Decimal("4.00"),
                             our_amount=Decimal("2.00"), difference=Decimal("2.00"))  # fmt: skip
    with monkeypatch.context() as m:  # the credit CDR stored, its processing left for a worker to take later
        m.setattr(records, "run_after_commit", lambda *a, **k: None)
        assert bec.post(CDRS, _credit_of(original, "12345-C", "1.00", "1.10")).json()["status_code"] == 1000
    credit = Cdr.objects.get(cdr_id="12345-C")
    assert credit.processed_at is None

    limit_read, go_on = threading.Event(), threading.Event()
    real_limit = disputes.dispute_credit_limit

    def limit_then_wait(d: Dispute) -> Decimal:
        value = real_limit(d)
        limit_read.set()
        go_on.wait(10)
        return value

    monkeypatch.setattr(disputes, "dispute_credit_limit", limit_then_wait)
    staff, staff_out = _run(
        lambda: disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal("2.00"))
    )
    assert limit_read.wait(10)
    processed = threading.Event()

    def process_credit() -> Any:
        try:
            return cdr_process(credit.pk)
        finally:
            processed.set()

    worker, worker_out = _run(process_credit)
    _until(processed)  # processed at once (before), or waiting for the dispute credit's lock
    go_on.set()
    staff.join(20)
    worker.join(20)
    assert "error" not in staff_out and "error" not in worker_out, (staff_out, worker_out)

    by_dispute = _borne_by_cpo(f"dispute:{dispute.pk}:credit")
    by_credit_cdr = _borne_by_cpo(f"cdr:{credit.pk}:credit")
    assert by_dispute == Decimal("2.20")
    # At most the disputed 2.00 + VAT of the CPO's part, as either order run one after the other gives.
    assert by_dispute + by_credit_cdr <= Decimal("2.20"), (by_dispute, by_credit_cdr)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_credits_of_one_dispute_posted_at_once_credit_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both posts read the limit before either moved the dispute (the second, waiting on the CDR's lock, reads
    it after the first committed): one credits, the other finds the dispute credited."""
    dispute = audited_dispute()
    amount = min(disputes.dispute_credit_limit(dispute), Decimal("1"))
    both_read = threading.Barrier(2)
    real_limit = disputes.dispute_credit_limit

    def limit_then_meet(d: Dispute) -> Decimal:
        value = real_limit(d)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait(2)  # never met under the CDR's lock: the first goes on alone
        return value

    monkeypatch.setattr(disputes, "dispute_credit_limit", limit_then_meet)
    runs = [
        _run(
            lambda: disputes.dispute_resolve_with_credit(
                dispute=Dispute.objects.get(pk=dispute.pk), user=None, amount=amount
            )
        )
        for _ in range(2)
    ]
    for thread, _ in runs:
        thread.join(20)
    outs = [out for _, out in runs]
    assert sum("result" in out for out in outs) == 1, outs
    assert [type(out.get("error")) for out in outs if "error" in out] == [disputes.DisputeStateError]
    assert LedgerEntry.objects.filter(idempotency_key=f"dispute:{dispute.pk}:credit").count() == 1


# --- a POST to a settlement's page ------------------------------------------------------------------------------


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_post_to_a_settlement_page_racing_a_close_is_refused_and_leaves_it_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Staff B closes the period while staff A's "Save" of the page is in flight (had it reached save_model).
    Before, A's save wrote the row back as A's request loaded it: RECONCILED again, closed_by cleared."""
    inr = _reconciled_inr()
    finance_a, finance_b = (_finance(name, "view_settlement", "change_settlement") for name in ("fin-a", "fin-b"))
    closed = threading.Event()

    def b_closes() -> None:
        thread, out = _run(lambda: settlement_close(settlement=Settlement.objects.get(pk=inr.pk), user=finance_b))
        thread.join(20)
        assert "error" not in out, out
        closed.set()

    real_save = SettlementAdmin.save_model

    def b_closes_first(self: Any, request: Any, obj: Any, form: Any, change: bool) -> None:
        b_closes()
        real_save(self, request, obj, form, change)

    monkeypatch.setattr(SettlementAdmin, "save_model", b_closes_first)
    response = _logged_in(finance_a).post(reverse("admin:billing_settlement_change", args=[inr.pk]), {"_save": "Save"})
    if not closed.is_set():
        b_closes()  # A's POST never reached a save: B's close comes after it

    assert response.status_code == 405
    inr.refresh_from_db()
    assert (inr.state, inr.closed_by_id) == (Settlement.State.CLOSED, finance_b.pk)


@pytest.mark.django_db
def test_a_settlement_page_offers_no_save_and_refuses_a_post() -> None:
    inr = _reconciled_inr()
    client = _logged_in(_finance("fin", "view_settlement", "change_settlement"))
    url = reverse("admin:billing_settlement_change", args=[inr.pk])

    page = client.get(url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert 'name="_continue"' not in page.content.decode()
    assert client.post(url, {"_save": "Save"}).status_code == 405
    assert StaffAction.objects.count() == 0


# --- the state a dispute moved from ----------------------------------------------------------------------------


def _contested_meanwhile(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`disputes.<name>` contests the dispute first, as another member of staff would between this request
    loading the dispute and moving it (its object still says OPEN)."""
    real = getattr(disputes, name)

    def contested_first(*, dispute: Dispute, **kwargs: Any) -> Dispute:
        disputes.dispute_contest(dispute=Dispute.objects.get(pk=dispute.pk), user=None, note="asked the CPO")
        assert dispute.state == Dispute.State.OPEN
        return real(dispute=dispute, **kwargs)

    monkeypatch.setattr(disputes, name, contested_first)


@pytest.mark.django_db
def test_a_move_from_a_stale_object_records_the_state_it_really_moved_from() -> None:
    dispute = audited_dispute()
    stale = Dispute.objects.get(pk=dispute.pk)  # loaded by staff A's request
    disputes.dispute_contest(dispute=Dispute.objects.get(pk=dispute.pk), user=None, note="asked the CPO")

    disputes.dispute_accept_cpo_amount(dispute=stale, user=None, note="accept")

    event = DisputeEvent.objects.get(dispute=dispute, action="accepted CPO amount")
    assert (event.from_state, event.to_state) == (Dispute.State.CONTESTED, Dispute.State.ACCEPTED)
    assert disputes.dispute_moved_from(stale) == Dispute.State.CONTESTED


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["page", "queue"])
def test_the_staff_audit_records_the_state_a_dispute_really_moved_from(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """Contested by someone else after the request loaded it, then accepted: from CONTESTED, on the dispute's
    page and from the queue alike. Before, both recorded OPEN, the state the request had loaded."""
    dispute = audited_dispute()
    boss = User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x")
    client = _logged_in(boss)
    _contested_meanwhile(monkeypatch, "dispute_accept_cpo_amount")
    if where == "page":
        response = client.post(reverse("admin:billing_dispute_accept", args=[dispute.pk]), {"accept-note": "ok"})
    else:
        post = {"action": "accept_cpo_amount", "_selected_action": [dispute.pk]}
        response = client.post(reverse("admin:billing_dispute_changelist"), post)
    assert response.status_code == 302
    assert [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "error"] == []

    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.ACCEPTED
    record = StaffAction.objects.get(verb="accept")
    assert (record.details["from_state"], record.details["to_state"]) == (
        Dispute.State.CONTESTED,
        Dispute.State.ACCEPTED,
    )
    event = DisputeEvent.objects.get(dispute=dispute, action="accepted CPO amount")
    assert event.from_state == Dispute.State.CONTESTED


# --- a CPO statement issued twice ------------------------------------------------------------------------------


def _issue(client: Client, settlement: Settlement, *, follow: bool = True) -> list[str]:
    """The messages the action leaves, as the page it goes back to shows them; or, not followed, read off the
    action's own request, as two threads must (a followed page's context is caught by a signal that every
    thread's client hears)."""
    post = {"action": "issue_cpo_statement", "_selected_action": [settlement.pk]}
    response = client.post(reverse("admin:billing_settlement_changelist"), post, follow=follow)
    if follow:
        return [str(m) for m in response.context["messages"]]
    assert response.status_code == 302
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.mark.django_db
def test_a_cpo_statement_issued_twice_is_recorded_once_and_said_to_be_issued_already() -> None:
    """A double-click (or the back button and the same POST again). Before, the second recorded another
    "statement" staff action and said "issued" again, of the document issued the first time."""
    finance = _finance("finance", "view_settlement", "change_settlement", "add_issueddocument")
    inr = settlement_close(settlement=_reconciled_inr(), user=finance)
    client = _logged_in(finance)

    first, second = _issue(client, inr), _issue(client, inr)

    document = IssuedDocument.objects.get(kind=IssuedDocument.Kind.CPO_STATEMENT)
    assert first == [f"{document.number} issued for {inr}"]
    assert second == [f"{document.number} was issued already for {inr}"]
    assert StaffAction.objects.filter(verb="statement").count() == 1


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_cpo_statement_issued_twice_at_once_is_recorded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first click has issued the statement, not committed, when the second arrives: the second waits for
    the settlement's row and finds the statement issued."""
    finance = _finance("finance", "view_settlement", "change_settlement", "add_issueddocument")
    inr = settlement_close(settlement=_reconciled_inr(), user=finance)
    issued, go_on = threading.Event(), threading.Event()
    real_issue = documents.issue_cpo_statement

    def issue_then_wait(settlement: Settlement) -> IssuedDocument:
        document = real_issue(settlement)
        if not issued.is_set():
            issued.set()
            go_on.wait(10)
        return document

    monkeypatch.setattr(documents, "issue_cpo_statement", issue_then_wait)
    first, first_out = _run(lambda: _issue(_logged_in(finance), inr, follow=False))
    assert issued.wait(10)
    second_done = threading.Event()

    def second_click() -> list[str]:
        try:
            return _issue(_logged_in(finance), inr, follow=False)
        finally:
            second_done.set()

    second, second_out = _run(second_click)
    _until(second_done)
    go_on.set()
    first.join(20)
    second.join(20)
    assert "error" not in first_out and "error" not in second_out, (first_out, second_out)

    document = IssuedDocument.objects.get(kind=IssuedDocument.Kind.CPO_STATEMENT)
    said = sorted([*first_out["result"], *second_out["result"]])
    assert said == [f"{document.number} issued for {inr}", f"{document.number} was issued already for {inr}"]
    assert StaffAction.objects.filter(verb="statement").count() == 1
