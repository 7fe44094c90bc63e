"""The CPO side's money after review: a dispute credit is taken off once across statements, a CDR stored while
its period closes is settled (PostgreSQL), a dispute is not credited beyond what the CPO's credit CDRs already
gave back, totals are sums of per-CDR rounded lines as the ledger books them, the console refuses the last
representable dates with a form error, and a CPO statement's dispute credits cost the same queries for 2 CDRs
as for 12."""

from __future__ import annotations

import csv
import io
import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import Cdr, CdrAudit, Dispute, LedgerLine, Settlement
from billing.services import accounts, disputes, documents, payments, records
from billing.services import settlement as settlement_service
from billing.services.audit import cdr_process
from billing.services.ledger import from_minor
from billing.services.records import cdr_key, cdr_store
from billing.services.settlement import (
    settlement_cdrs_csv,
    settlement_close,
    settlement_compute,
    settlement_csv,
)
from tests.billing.dispute_factories import audited_dispute
from tests.billing.factories import (
    CdrAuditFactory,
    CdrFactory,
    DisputeFactory,
    DriverReceiptFactory,
    PartnerTermsFactory,
    at,
)
from tests.factories import PartnerFactory

OCTOBER, NOVEMBER = date(2026, 10, 1), date(2026, 11, 1)
AFTER_OCTOBER = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
AFTER_NOVEMBER = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks (SELECT … FOR UPDATE) need PostgreSQL; SQLite has none"
)


def ocpi_cdr(cdr_id: str, *, end: str = "2026-10-10T12:00:00Z", **fields: Any) -> dict[str, Any]:
    return {
        "country_code": "IN",
        "party_id": "CPA",
        "id": cdr_id,
        "start_date_time": end.replace("T12", "T11"),
        "end_date_time": end,
        "currency": "INR",
        "total_cost": {"excl_vat": 10, "incl_vat": 11.80},
        "total_energy": 5,
        "total_time": 1,
        "last_updated": "2026-10-11T00:00:00Z",
        **fields,
    }


def credited_original(partner: Any, cdr_id: str = "D-1", day: int = 10) -> Cdr:
    """An October CDR the CPO billed 100 / 118 for, which we price at 90: its dispute resolved with a credit of
    10 (11.80 with VAT), borne by the CPO (taken off its payable in the ledger)."""
    cdr = CdrFactory(partner=partner, cdr_id=cdr_id, ocpi_key=cdr_key("IN", "CPA", cdr_id), currency="INR",
                     end_date_time=at(day), total_cost_excl_vat=Decimal("100"),
                     total_cost_incl_vat=Decimal("118"))  # fmt: skip
    CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("90"))
    dispute = DisputeFactory(cdr=cdr, partner=partner, currency="INR", difference=Decimal("10"))
    disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal("10"))
    return cdr


def credit_cdr_for(partner: Any, original: Cdr) -> Cdr:
    """The CPO's credit CDR for the same 10 (it repeats its original's end), stored and processed."""
    credit = cdr_store(partner, ocpi_cdr(
        f"{original.cdr_id}-C", credit=True, credit_reference_id=original.cdr_id,
        end=original.end_date_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
        total_cost={"excl_vat": -10, "incl_vat": -11.80}, total_energy=0, total_time=0,
    )).cdr  # fmt: skip
    cdr_process(credit.pk)
    credit.refresh_from_db()
    return credit


def closed(partner: Any, period_start: date) -> Settlement:
    (settlement,) = settlement_compute(partner=partner, period_start=period_start)
    return settlement_close(settlement=settlement, user=None)


# --- 1. a dispute credit netted by a credit CDR of a later period is taken off once ---------------------------


@pytest.mark.django_db
def test_a_credit_cdr_carried_into_a_later_period_is_not_taken_off_again() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    original = credited_original(partner)
    october = closed(partner, OCTOBER)
    with time_machine.travel(AFTER_OCTOBER, tick=False):
        october_statement = documents.issue_cpo_statement(october)
    assert october_statement.total == Decimal("106.20")  # 118 − 11.80, the dispute credit

    credit = credit_cdr_for(partner, original)  # arrives after October closed: settled in November
    assert credit.carried_to == NOVEMBER
    november = closed(partner, NOVEMBER)
    with time_machine.travel(AFTER_NOVEMBER, tick=False):
        november_statement = documents.issue_cpo_statement(november)

    # The ledger took the 11.80 off once (the dispute credit; the credit CDR posted nothing more to the payable).
    assert november_statement.total == Decimal("0.00")
    assert october_statement.total + november_statement.total == Decimal("106.20")
    text = "\n".join(page.extract_text() for page in _pdf(november_statement).pages)
    assert "Your credit CDRs for dispute credits taken off before" in text


def _pdf(document: Any) -> Any:
    from pypdf import PdfReader

    return PdfReader(io.BytesIO(bytes(document.pdf)))


@pytest.mark.django_db
def test_a_credit_cdr_in_the_same_period_as_its_dispute_credit_still_counts_once() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    original = credited_original(partner)
    credit_cdr_for(partner, original)  # October still open: settled with its original
    with time_machine.travel(AFTER_OCTOBER, tick=False):
        document = documents.issue_cpo_statement(closed(partner, OCTOBER))
    assert document.total == Decimal("106.20")


# --- 2. a CDR stored while its period is closed (PostgreSQL: two transactions at once) --------------------------


def _waiting_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def _until(done: threading.Event, seconds: float = 5) -> None:
    """Until `done` is set or another transaction waits on a row lock (then it is blocked: go on)."""
    deadline = time.monotonic() + seconds
    while not done.is_set() and not _waiting_on_a_lock() and time.monotonic() < deadline:
        time.sleep(0.02)


def _run(work: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except Exception as error:
            out["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _reconciled_october() -> tuple[Any, Settlement]:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    CdrAuditFactory(cdr=CdrFactory(partner=partner, cdr_id="ON-TIME", currency="INR", end_date_time=at(5)))
    (october,) = settlement_compute(partner=partner, period_start=OCTOBER)
    assert october.state == Settlement.State.RECONCILED
    return partner, october


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_cdr_stored_while_its_period_is_being_closed_is_carried_to_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The close has recomputed October and holds it, not committed, when the late CDR is stored: the CDR waits
    for the close and is carried to November. Before, it read October open and was stored inside it after the
    close committed: in no settlement."""
    partner, october = _reconciled_october()
    recomputed, stored = threading.Event(), threading.Event()
    real_compute = settlement_service.settlement_compute

    def compute_then_hold(**kwargs: Any) -> Any:
        result = real_compute(**kwargs)
        recomputed.set()
        _until(stored)  # the CDR is stored meanwhile, or waits for this close
        return result

    monkeypatch.setattr(settlement_service, "settlement_compute", compute_then_hold)
    closer, closing = _run(lambda: settlement_close(settlement=october, user=None))
    assert recomputed.wait(10)

    def store() -> Cdr:
        try:
            return cdr_store(partner, ocpi_cdr("LATE-1", end="2026-10-20T12:00:00Z")).cdr
        finally:
            stored.set()

    storer, storing = _run(store)
    for thread in (closer, storer):
        thread.join(20)
    assert "error" not in closing and "error" not in storing, (closing, storing)

    assert Settlement.objects.get(pk=october.pk).state == Settlement.State.CLOSED
    assert Cdr.objects.get(cdr_id="LATE-1").carried_to == NOVEMBER


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_close_waits_for_a_cdr_being_stored_in_its_period_and_counts_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The late CDR is inserted, not committed, when finance closes October: the close waits for it and counts
    it (October is then not reconciled: the CDR is still to be audited). Before, the close recomputed without it
    and froze October, the CDR committed inside it."""
    partner, october = _reconciled_october()
    inserted, closed_ = threading.Event(), threading.Event()
    real_insert = records.insert

    def insert_then_hold(row: Any, *args: Any, **kwargs: Any) -> Any:
        result = real_insert(row, *args, **kwargs)
        inserted.set()
        _until(closed_)  # the close runs meanwhile, or waits for this CDR
        return result

    monkeypatch.setattr(records, "insert", insert_then_hold)
    storer, storing = _run(lambda: cdr_store(partner, ocpi_cdr("LATE-2", end="2026-10-20T12:00:00Z")).cdr)
    assert inserted.wait(10)

    def close() -> Settlement:
        try:
            return settlement_close(settlement=october, user=None)
        finally:
            closed_.set()

    closer, closing = _run(close)
    for thread in (closer, storer):
        thread.join(20)
    assert "error" not in storing, storing

    late = Cdr.objects.get(cdr_id="LATE-2")
    october.refresh_from_db()
    assert late.carried_to is None
    assert october.cdr_count == 2  # counted in October, whether it closed (audited meanwhile) or not
    if october.state != Settlement.State.CLOSED:
        assert isinstance(closing.get("error"), settlement_service.SettlementError)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_carry_over_waits_for_a_close_of_the_period_it_carries_into(monkeypatch: pytest.MonkeyPatch) -> None:
    """November is being closed (recomputed, not committed) when finance closes October carrying its disputed
    CDR over: the carry-over waits for November's close and carries the CDR past it, into December. Before, it
    read November open and carried the CDR into it as it froze: settled nowhere."""
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    CdrAuditFactory(cdr=CdrFactory(partner=partner, cdr_id="OK-OCT", currency="INR", end_date_time=at(10)))
    disputed = CdrFactory(partner=partner, cdr_id="D-OCT", currency="INR", end_date_time=at(20))
    CdrAuditFactory(cdr=disputed, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("8"))
    DisputeFactory(cdr=disputed, partner=partner, currency="INR")
    CdrAuditFactory(cdr=CdrFactory(partner=partner, cdr_id="OK-NOV", currency="INR", end_date_time=at(5, month=11)))
    (october,) = settlement_compute(partner=partner, period_start=OCTOBER)
    (november,) = settlement_compute(partner=partner, period_start=NOVEMBER)
    assert november.state == Settlement.State.RECONCILED
    recomputed, carried = threading.Event(), threading.Event()
    real_compute = settlement_service.settlement_compute

    def compute_then_hold(**kwargs: Any) -> Any:
        result = real_compute(**kwargs)
        if kwargs["period_start"] == NOVEMBER and not recomputed.is_set():  # November's close, not the carry-over
            recomputed.set()
            _until(carried)  # the carry-over runs meanwhile, or waits for this close
        return result

    monkeypatch.setattr(settlement_service, "settlement_compute", compute_then_hold)
    november_closer, november_closing = _run(lambda: settlement_close(settlement=november, user=None))
    assert recomputed.wait(10)

    def carry_over() -> Settlement:
        try:
            return settlement_close(settlement=october, user=None, carry_over=True)
        finally:
            carried.set()

    october_closer, october_closing = _run(carry_over)
    for thread in (november_closer, october_closer):
        thread.join(20)
    assert "error" not in november_closing and "error" not in october_closing, (november_closing, october_closing)

    assert Settlement.objects.get(pk=november.pk).state == Settlement.State.CLOSED
    assert Settlement.objects.get(pk=november.pk).cdr_count == 1
    assert Cdr.objects.get(pk=disputed.pk).carried_to == date(2026, 12, 1)


# --- 3. a dispute is credited at most what the CPO's credit CDRs left --------------------------------------------


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x"))
    return client


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def partially_credited() -> Dispute:
    """The CPO billed 5.00 / 5.50, we price 4.00 / 4.40: a dispute; then its credit CDR of −0.50 / −0.55, which
    leaves it open (outside tolerance), refunded to the driver."""
    dispute = audited_dispute()
    original = dispute.cdr
    CdrFactory(partner=original.partner, cdr_id=f"{original.cdr_id}-C", credit=True, credited_cdr=original,
               credit_reference_id=original.cdr_id, currency=original.currency,
               end_date_time=original.end_date_time, total_cost_excl_vat=Decimal("-0.50"),
               total_cost_incl_vat=Decimal("-0.55"), processed_at=timezone.now())  # fmt: skip
    dispute.refresh_from_db()
    assert (dispute.state, dispute.difference) == (Dispute.State.OPEN, Decimal("1"))
    return dispute


def test_the_console_refuses_a_credit_beyond_what_the_credit_cdrs_left(staff: Client) -> None:
    dispute = partially_credited()
    url = reverse("admin:billing_dispute_credit", args=[dispute.pk])

    response = staff.post(url, {"credit-amount": "1.00"}, follow=True)
    assert any("more than the disputed difference left to credit (0.5" in m for m in texts(response)), texts(response)
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.OPEN

    staff.post(url, {"credit-amount": "0.50"})
    dispute.refresh_from_db()
    assert (dispute.state, dispute.credit_amount) == (Dispute.State.CREDITED, Decimal("0.5"))


@pytest.mark.django_db
def test_the_service_refuses_a_credit_beyond_what_the_credit_cdrs_left() -> None:
    dispute = partially_credited()
    with pytest.raises(disputes.DisputeCreditError, match="more than is left to credit"):
        disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal("1.00"))
    assert Dispute.objects.get(pk=dispute.pk).state == Dispute.State.OPEN
    assert disputes.dispute_credit_limit(dispute) == Decimal("0.5")


# --- 4. totals are the sums of per-CDR rounded lines, as the ledger books them --------------------------------


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.django_db
def test_the_summary_is_the_sum_of_its_rounded_cdr_lines() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPR")
    PartnerTermsFactory(partner=partner, rounding="HALF_UP")
    for day in (1, 2, 3):
        cdr = CdrFactory(partner=partner, end_date_time=at(day), total_cost_excl_vat=Decimal("10.125"),
                         total_cost_incl_vat=Decimal("12.0488"))  # fmt: skip
        CdrAuditFactory(cdr=cdr, computed_excl_vat=Decimal("10.0049"))
        DriverReceiptFactory(cdr=cdr, cpo_vat=Decimal("1.9238"), fee_excl_vat=Decimal("1.0125"),
                             fee_vat=Decimal("0.1823"))  # fmt: skip
    settlements = settlement_compute(partner=partner, period_start=OCTOBER)

    (summary,) = csv_rows(settlement_csv(settlements))
    lines = csv_rows("".join(settlement_cdrs_csv(settlements)))

    def total(column: str) -> Decimal:
        return sum((Decimal(line[column]) for line in lines), Decimal("0"))

    for column in ("cpo_billed_excl_vat", "cpo_billed_incl_vat", "computed_excl_vat", "margin_excl_vat",
                   "vat_collected", "charged_to_driver"):  # fmt: skip
        summary_column = "charged_to_drivers" if column == "charged_to_driver" else column
        assert Decimal(summary[summary_column]) == total(column), column
    assert summary["cpo_billed_excl_vat"] == "30.39"  # 3 × 10.13, not round(30.375) = 30.38
    # The rounded figures' difference: 30.39 − 30.00, not round(30.375 − 30.0147) = 0.36.
    assert Decimal(summary["difference_excl_vat"]) == Decimal("0.39")


@pytest.mark.django_db
def test_the_cpo_statement_states_what_the_ledger_booked_to_the_payable() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPR")
    PartnerTermsFactory(partner=partner, rounding="HALF_UP")
    for day in (10, 11):
        cdr = CdrFactory(partner=partner, currency="INR", end_date_time=at(day),
                         total_cost_excl_vat=Decimal("3.7331"), total_cost_incl_vat=Decimal("4.405"))  # fmt: skip
        CdrAuditFactory(cdr=cdr)
        receipt = DriverReceiptFactory(cdr=cdr, cpo_vat=Decimal("0.6719"))
        with time_machine.travel(at(day), tick=False):
            payments.bill(receipt)  # the ledger: 4.41 to the CPO's payable for each
    october = closed(partner, OCTOBER)
    with time_machine.travel(AFTER_OCTOBER, tick=False):
        document = documents.issue_cpo_statement(october)

    booked = LedgerLine.objects.filter(account=accounts.cpo_payable("IN*CPR", "INR")).aggregate(t=Sum("amount_minor"))
    assert -from_minor(booked["t"], "INR") == october.ledger_payable == Decimal("8.82")
    assert document.total == Decimal("8.82")  # not round(8.81)


# --- 5. the console on the last representable dates ---------------------------------------------------------------


def test_computing_the_last_month_there_is_is_a_form_error(staff: Client) -> None:
    response = staff.post(reverse("admin:billing_settlement_compute"), {"month": "9999-12"})
    assert response.status_code == 200
    assert "Give a month up to 9998-12" in response.content.decode()
    assert not Settlement.objects.exists()


@pytest.mark.parametrize("page", ["account", "trial_balance"])
def test_the_ledger_pages_refuse_the_last_day_there_is_with_a_form_error(staff: Client, page: str) -> None:
    if page == "account":
        url = reverse("admin:billing_ledgeraccount_change", args=[accounts.cpo_payable("IN*CPA", "INR").pk])
    else:
        url = reverse("admin:billing_ledgeraccount_trial_balance")
    response = staff.get(url, {"until": "9999-12-31"})
    assert response.status_code == 200
    assert "less than or equal to 9998-12-31" in response.content.decode()


def test_the_settlement_report_refuses_the_last_month_there_is() -> None:
    with pytest.raises(ValueError, match="ends after 9998-12"):
        settlement_service.parse_period("9999-12")


# --- 6. a CPO statement's dispute credits: the same queries for 2 CDRs as for 12 ----------------------------------


def _october_with_credits(party_id: str, count: int) -> Settlement:
    partner = PartnerFactory(country_code="IN", party_id=party_id)
    for n in range(count):
        cdr = CdrFactory(partner=partner, currency="INR", end_date_time=at(1 + n % 28),
                         total_cost_excl_vat=Decimal("100"), total_cost_incl_vat=Decimal("118"))  # fmt: skip
        CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("90"))
        dispute = DisputeFactory(cdr=cdr, partner=partner, currency="INR", difference=Decimal("10"))
        disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal("10"))
    return closed(partner, OCTOBER)


@pytest.mark.django_db
def test_the_cpo_statement_takes_as_many_queries_for_many_credited_cdrs_as_for_few(
    django_assert_max_num_queries: Any,
) -> None:
    few, many = _october_with_credits("CPF", 2), _october_with_credits("CPM", 12)
    with time_machine.travel(AFTER_OCTOBER, tick=False):
        with CaptureQueriesContext(connection) as queries:
            documents.issue_cpo_statement(Settlement.objects.get(pk=few.pk))
        with django_assert_max_num_queries(len(queries)):
            document = documents.issue_cpo_statement(Settlement.objects.get(pk=many.pk))
    assert document.total == Decimal("1274.40")  # 12 × (118 − 11.80)
