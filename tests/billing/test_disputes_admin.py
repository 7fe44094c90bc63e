"""The disputes console: the queue and its filters, the side-by-side detail page, and the workflow actions."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from billing.models import CdrAudit, Dispute, DisputeEvent, PartnerTerms
from tests.billing.dispute_factories import BareCdrFactory, QueueDisputeFactory, audited_dispute
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

QUEUE = "admin:billing_dispute_changelist"


@pytest.fixture
def boss(db: None) -> User:
    return User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x")


@pytest.fixture
def staff(boss: User) -> Client:
    client = Client()
    client.force_login(boss)
    return client


def detail(dispute: Dispute) -> str:
    return reverse("admin:billing_dispute_change", args=[dispute.pk])


def action_url(dispute: Dispute, action: str) -> str:
    return reverse(f"admin:billing_dispute_{action}", args=[dispute.pk])


def queue_ids(client: Client, query: str = "") -> list[int]:
    response = client.get(f"{reverse(QUEUE)}{query}")
    assert response.status_code == 200
    return [d.pk for d in response.context["cl"].result_list]


def texts(response: object) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]  # type: ignore[attr-defined]


def row_cells(html: str, key: str) -> list[str]:
    row = re.search(rf'<tr id="row-{key}"[^>]*>(.*?)</tr>', html, re.S)
    assert row is not None, f"no row {key}"
    return re.findall(r'<td class="num">([^<]*)</td>', row.group(1))


# -- the queue -----------------------------------------------------------------------------------


def test_the_queue_puts_open_disputes_first_and_the_oldest_on_top(staff: Client) -> None:
    resolved_oldest = QueueDisputeFactory(days_old=40, state=Dispute.State.ACCEPTED)
    open_new = QueueDisputeFactory(days_old=0)
    open_old = QueueDisputeFactory(days_old=20)
    contested = QueueDisputeFactory(days_old=5, state=Dispute.State.CONTESTED)
    assert queue_ids(staff) == [open_old.pk, contested.pk, open_new.pk, resolved_oldest.pk]


def test_the_queue_shows_amounts_and_age_in_days(staff: Client) -> None:
    dispute = QueueDisputeFactory(days_old=3, cdr__total_cost_excl_vat=Decimal("12.5"), our_amount=Decimal("10"))
    html = staff.get(reverse(QUEUE)).content.decode()
    assert dispute.cdr.cdr_id in html
    assert "12.5000" in html and "10.0000" in html and "2.5000" in html
    assert '<td class="field-age_days">3</td>' in html


def test_the_queue_filters_by_partner(staff: Client) -> None:
    mine = QueueDisputeFactory()
    QueueDisputeFactory()
    assert queue_ids(staff, f"?partner__id__exact={mine.partner_id}") == [mine.pk]


def test_the_queue_filters_by_state(staff: Client) -> None:
    QueueDisputeFactory()
    contested = QueueDisputeFactory(state=Dispute.State.CONTESTED)
    assert queue_ids(staff, "?state__exact=CONTESTED") == [contested.pk]


@pytest.mark.parametrize(
    ("band", "expected"), [("lt1", [0]), ("1-7", [3]), ("7-30", [10]), ("gt30", [45])], ids=lambda v: str(v)
)
def test_the_queue_filters_by_age(staff: Client, band: str, expected: list[int]) -> None:
    by_age = {days: QueueDisputeFactory(days_old=days) for days in (0, 3, 10, 45)}
    assert queue_ids(staff, f"?age={band}") == [by_age[d].pk for d in expected]


@pytest.mark.parametrize(
    ("band", "expected"),
    [("lt1", ["0.5", "-0.5"]), ("1-10", ["5", "-1"]), ("10-100", ["-50"]), ("gte100", ["100", "-250"])],
    ids=lambda v: str(v),
)
def test_the_queue_filters_by_amount_at_stake_in_either_direction(
    staff: Client, band: str, expected: list[str]
) -> None:
    by_difference = {
        value: QueueDisputeFactory(cdr__total_cost_excl_vat=Decimal("300"), our_amount=Decimal("300") - Decimal(value))
        for value in ("0.5", "-0.5", "5", "-1", "-50", "100", "-250")
    }
    assert sorted(queue_ids(staff, f"?stake={band}")) == sorted(by_difference[v].pk for v in expected)


def test_the_queue_searches_by_cdr_id_and_session_id(staff: Client) -> None:
    wanted = QueueDisputeFactory(cdr=BareCdrFactory(cdr_id="CDR-FIND-ME", session_id="SESSION-42"))
    QueueDisputeFactory()
    assert queue_ids(staff, "?q=CDR-FIND-ME") == [wanted.pk]
    assert queue_ids(staff, "?q=SESSION-42") == [wanted.pk]


# -- the detail page -----------------------------------------------------------------------------


def test_the_detail_page_shows_the_cpo_breakdown_next_to_ours(staff: Client) -> None:
    dispute = audited_dispute(time_cost=(0.5, 0.55))
    html = staff.get(detail(dispute)).content.decode()
    # Columns: CPO excl/incl, ours excl/incl, difference excl/incl (CPO minus ours).
    assert row_cells(html, "total_cost") == ["6.00", "6.60", "5.00", "5.50", "+1.00", "+1.100"]
    assert row_cells(html, "total_energy_cost") == ["6.00", "6.60", "5.00", "5.50", "+1.00", "+1.100"]
    assert row_cells(html, "total_time_cost") == ["0.50", "0.55", "—", "—", "+0.50", "+0.55"]
    assert 'id="row-total_parking_cost"' not in html  # neither side billed parking
    assert 'id="row-total_cost" class="beyond"' in html


def test_a_difference_within_the_tolerance_is_not_highlighted(staff: Client) -> None:
    dispute = audited_dispute(total=(5.004, 5.5), energy_cost=(6.0, 6.6))
    html = staff.get(detail(dispute)).content.decode()
    assert 'id="row-total_cost">' in html
    assert 'id="row-total_energy_cost" class="beyond"' in html


def test_unusable_numbers_in_a_breakdown_show_as_blanks(staff: Client) -> None:
    dispute = QueueDisputeFactory()
    CdrAudit.objects.create(
        cdr=dispute.cdr,
        status=CdrAudit.Status.MISMATCH,
        currency="EUR",
        cpo_breakdown={"total_cost": {"excl_vat": "NaN", "incl_vat": "a lot"}},
        our_breakdown={"total_cost": {"excl_vat": "9", "incl_vat": None}},
    )
    response = staff.get(detail(dispute))
    assert response.status_code == 200
    assert row_cells(response.content.decode(), "total_cost") == ["—", "—", "9.00", "—", "—", "—"]


def test_the_detail_page_shows_our_lines_the_cdr_and_the_history(staff: Client) -> None:
    dispute = audited_dispute()
    html = staff.get(detail(dispute)).content.decode()
    lines = re.search(r'<table id="dispute-lines">(.*?)</table>', html, re.S)
    assert lines is not None
    assert re.findall(r"<td[^>]*>([^<]*)</td>", lines.group(1)) == [
        "ENERGY",
        "0",
        "0.25",
        "10",
        "1",
        "20",
        "0",
        "5",
        "5.5",
    ]
    for essential in (
        "CDR-DISPUTE-1",
        "S-CDR-DISPUTE-1",
        "LOC-DISPUTE / LOC-DISPUTE-E1",
        "TOKEN-DISPUTE-1",
        "20.0000 kWh",
    ):
        assert essential in html
    assert "CDR audit: amounts differ beyond tolerance" in html  # the "opened" event, in the history inline


def test_the_detail_page_has_no_save_button_and_refuses_a_post(staff: Client) -> None:
    dispute = audited_dispute()
    assert 'name="_save"' not in staff.get(detail(dispute)).content.decode()
    assert staff.post(detail(dispute), {"state": "ACCEPTED"}).status_code == 405
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.OPEN


def test_a_resolved_dispute_offers_no_actions(staff: Client, boss: User) -> None:
    dispute = QueueDisputeFactory(state=Dispute.State.ACCEPTED)
    html = staff.get(detail(dispute)).content.decode()
    assert 'id="dispute-actions"' not in html
    assert "This CDR has not been audited." in html


# -- actions on one dispute ----------------------------------------------------------------------


def test_accepting_the_cpo_amount_resolves_the_dispute_and_records_who(staff: Client, boss: User) -> None:
    dispute = audited_dispute()
    response = staff.post(action_url(dispute, "accept"), {"accept-note": "fair enough"}, follow=True)
    assert "accepted the CPO amount" in " ".join(texts(response))
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.ACCEPTED and dispute.resolved_at is not None
    event = dispute.events.last()
    assert (event.user, event.from_state, event.to_state, event.note) == (boss, "OPEN", "ACCEPTED", "fair enough")
    assert "fair enough" in response.content.decode()  # the history on the page it returns to


def test_contesting_records_the_note_and_keeps_the_dispute_open(staff: Client, boss: User) -> None:
    dispute = audited_dispute()
    staff.post(action_url(dispute, "contest"), {"contest-note": "energy price is 0.25/kWh per contract"})
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.CONTESTED
    event = dispute.events.last()
    assert (event.user, event.action, event.note) == (boss, "contested", "energy price is 0.25/kWh per contract")


def test_contesting_without_a_note_is_refused(staff: Client) -> None:
    dispute = audited_dispute()
    response = staff.post(action_url(dispute, "contest"), {"contest-note": ""}, follow=True)
    assert any("required" in m for m in texts(response))
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.OPEN


def test_resolving_with_a_credit_records_the_amount(staff: Client, boss: User) -> None:
    dispute = audited_dispute()
    response = staff.post(action_url(dispute, "credit"), {"credit-amount": "0.75", "credit-note": "split"}, follow=True)
    assert "resolved with a credit of 0.75 EUR" in " ".join(texts(response))
    dispute.refresh_from_db()
    assert (dispute.state, dispute.credit_amount) == (Dispute.State.CREDITED, Decimal("0.75"))
    assert (dispute.events.last().user, dispute.events.last().note) == (boss, "split")


def test_a_credit_of_the_whole_difference_is_allowed(staff: Client) -> None:
    dispute = audited_dispute()
    staff.post(action_url(dispute, "credit"), {"credit-amount": "1.0000"})
    dispute.refresh_from_db()
    assert dispute.credit_amount == Decimal("1")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("1.01", "more than the disputed difference"),
        ("0", "greater than or equal to 0.0001"),
        ("-1", "greater than or equal to 0.0001"),
        ("0.00001", "more than 4 decimal places"),
        ("lots", "Enter a number"),
    ],
)
def test_an_invalid_credit_is_refused_with_a_message(staff: Client, amount: str, message: str) -> None:
    dispute = audited_dispute()
    response = staff.post(action_url(dispute, "credit"), {"credit-amount": amount}, follow=True)
    assert response.status_code == 200
    assert any(message in m for m in texts(response)), texts(response)
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.OPEN
    assert dispute.events.count() == 1


def test_a_dispute_the_cpo_underbilled_cannot_be_credited(staff: Client) -> None:
    dispute = QueueDisputeFactory(cdr__total_cost_excl_vat=Decimal("8"), our_amount=Decimal("9"))
    assert "nothing to credit" in staff.get(detail(dispute)).content.decode()
    response = staff.post(action_url(dispute, "credit"), {"credit-amount": "0.5"}, follow=True)
    assert any("nothing to credit" in m for m in texts(response))
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.OPEN


@pytest.mark.parametrize(
    ("action", "data"),
    [("accept", {}), ("contest", {"contest-note": "again"}), ("credit", {"credit-amount": "0.5"})],
)
def test_acting_on_a_resolved_dispute_shows_an_error_and_changes_nothing(
    staff: Client, action: str, data: dict[str, str]
) -> None:
    dispute = audited_dispute()
    staff.post(action_url(dispute, "accept"))
    events = list(dispute.events.values_list("pk", flat=True))
    response = staff.post(action_url(dispute, action), data, follow=True)
    assert response.status_code == 200
    assert any("Nothing changed" in m and "ACCEPTED" in m for m in texts(response)), texts(response)
    dispute.refresh_from_db()
    assert (dispute.state, dispute.credit_amount) == (Dispute.State.ACCEPTED, None)
    assert list(dispute.events.values_list("pk", flat=True)) == events


def test_contesting_twice_is_refused(staff: Client) -> None:
    dispute = audited_dispute()
    staff.post(action_url(dispute, "contest"), {"contest-note": "first"})
    response = staff.post(action_url(dispute, "contest"), {"contest-note": "second"}, follow=True)
    assert any("Nothing changed" in m for m in texts(response))
    assert dispute.events.filter(action="contested").count() == 1


def test_an_action_url_answers_get_with_405(staff: Client) -> None:
    dispute = audited_dispute()
    assert staff.get(action_url(dispute, "accept")).status_code == 405


# -- bulk actions on the queue -------------------------------------------------------------------


def test_bulk_accept_moves_open_disputes_and_reports_the_rest(staff: Client, boss: User) -> None:
    first, second = QueueDisputeFactory(), QueueDisputeFactory(state=Dispute.State.CONTESTED)
    done = QueueDisputeFactory(state=Dispute.State.CREDITED)
    response = staff.post(
        reverse(QUEUE),
        {"action": "accept_cpo_amount", "_selected_action": [first.pk, second.pk, done.pk]},
        follow=True,
    )
    messages = " ".join(texts(response))
    assert "2 dispute(s)" in messages and f"dispute(s) {done.pk}" in messages
    assert set(Dispute.objects.values_list("state", flat=True)) == {"ACCEPTED", "CREDITED"}
    assert DisputeEvent.objects.filter(user=boss, to_state="ACCEPTED").count() == 2
    assert not DisputeEvent.objects.filter(dispute=done).exists()


def test_bulk_contest_only_moves_open_disputes(staff: Client, boss: User) -> None:
    open_one, contested = QueueDisputeFactory(), QueueDisputeFactory(state=Dispute.State.CONTESTED)
    staff.post(reverse(QUEUE), {"action": "contest", "_selected_action": [open_one.pk, contested.pk]})
    open_one.refresh_from_db()
    assert open_one.state == Dispute.State.CONTESTED
    assert open_one.events.get().user == boss
    assert not contested.events.exists()


# -- audits, CDRs and terms ----------------------------------------------------------------------


def test_the_audit_list_filters_by_status_and_flag(staff: Client) -> None:
    dispute = audited_dispute()  # MISMATCH, flagged no_session
    audit = dispute.cdr.audit
    other = CdrAudit.objects.create(
        cdr=BareCdrFactory(), status=CdrAudit.Status.REVIEW, currency="EUR", flags=["no_tariff"]
    )
    url = reverse("admin:billing_cdraudit_changelist")
    assert [a.pk for a in staff.get(f"{url}?flag=no_session").context["cl"].result_list] == [audit.pk]
    assert [a.pk for a in staff.get(f"{url}?flag=no_tariff").context["cl"].result_list] == [other.pk]
    assert [a.pk for a in staff.get(f"{url}?status__exact=MISMATCH").context["cl"].result_list] == [audit.pk]


def test_the_audit_page_links_to_the_cdr_and_its_dispute(staff: Client) -> None:
    dispute = audited_dispute()
    html = staff.get(reverse("admin:billing_cdraudit_change", args=[dispute.cdr.audit.pk])).content.decode()
    assert reverse("admin:billing_cdr_change", args=[dispute.cdr_id]) in html
    assert detail(dispute) in html


def test_the_cdr_list_and_page_show_the_audit_status(staff: Client) -> None:
    dispute = audited_dispute()
    html = staff.get(reverse("admin:billing_cdr_changelist")).content.decode()
    assert '<td class="field-audit_status">MISMATCH</td>' in html
    page = staff.get(reverse("admin:billing_cdr_change", args=[dispute.cdr_id])).content.decode()
    assert detail(dispute) in page


def test_partner_terms_are_edited_in_the_console_and_validated(staff: Client) -> None:
    partner = PartnerFactory()
    terms = PartnerTerms.objects.create(partner=partner)
    url = reverse("admin:billing_partnerterms_change", args=[terms.pk])
    data = {
        "partner": partner.pk,
        "audit_tolerance": "0.05",
        "fee_flat": "1",
        "fee_percent": "2.5",
        "fee_vat_percent": "18",
        "rounding": "HALF_EVEN",
    }
    assert staff.post(url, data).status_code == 302
    terms.refresh_from_db()
    assert (terms.audit_tolerance, terms.rounding) == (Decimal("0.05"), "HALF_EVEN")
    response = staff.post(url, {**data, "audit_tolerance": "-1"})
    assert response.status_code == 200 and "Must not be negative." in response.content.decode()
