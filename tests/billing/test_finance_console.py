"""Finance console (issue 12, point 7): ledger accounts with balances, statements with running balances, entries
linked to what they came from, the trial balance and its charts, the payment exceptions queue and its retry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing import finance
from billing.models import (
    Cdr,
    Dispute,
    LedgerAccount,
    LedgerEntry,
    LedgerLine,
    Payment,
    PaymentOperation,
    PayoutReconciliation,
    ProviderWebhook,
)
from billing.services import accounts, ledger
from billing.services.ledger import Leg
from emsp.models import Booking, StaffAction
from tests.billing.factories import CdrAuditFactory, DisputeFactory
from tests.factories import PartnerFactory, stored_location

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
VIEW = ("view_ledgeraccount", "view_ledgerentry", "view_payment", "view_paymentoperation", "view_providerwebhook")


def login(*codenames: str, superuser: bool = False) -> Client:
    user = User.objects.create_user(
        f"staff-{User.objects.count()}", password="pw-123456-x", is_staff=True, is_superuser=superuser
    )
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="billing", codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def finance_staff() -> Client:
    """May read everything here and act on payments (retry)."""
    return login(*VIEW, "change_payment")


@pytest.fixture
def viewer() -> Client:
    """May read everything here, act on nothing."""
    return login(*VIEW)


def days_ago(days: int) -> datetime:
    return NOW - timedelta(days=days)


def post_at(when: datetime, *, event: str, legs: list[Leg], reference: str) -> LedgerEntry:
    with time_machine.travel(when, tick=False):
        return ledger.post(event=event, legs=legs, reference=reference, memo=f"{event} for the console test")


def booking(state: str = Booking.State.SETTLED, *, order_id: str = "O-1") -> Booking:
    evse = stored_location(PartnerFactory(), evses=1).evses.first()
    return Booking.objects.create(order_id=order_id, evse=evse, connector_id="1", state=state)


@dataclass
class Books:
    """INR: a charge, its capture, a dispute credit to the driver and part of its refund. EUR: an app's charge.

    | account                        | INR balance | EUR balance |
    | driver:1:receivable            |  0  (118 until the capture, 5 days ago) |  |
    | cpo:IN*CPA:payable             | -90 |     |
    | revenue:fees                   | -10 | -10 |
    | tax:VAT-18:payable             | -18 |     |
    | clearing:razorpay              | 113 |     |
    | expense:disputes               |  20 |     |
    | refunds:pending                | -15 |     |
    | bap:app.example:receivable     |     |  50 |
    | cpo:DE*ABC:payable             |     | -40 |
    """

    cdr: Cdr
    payment: Payment
    dispute: Dispute
    booking: Booking
    charge: LedgerEntry
    capture: LedgerEntry
    credit: LedgerEntry
    refund: LedgerEntry
    app_charge: LedgerEntry

    def account(self, code: str, currency: str = "INR") -> LedgerAccount:
        return LedgerAccount.objects.get(code=code, currency=currency)


@pytest.fixture
def books() -> Books:
    cdr = CdrAuditFactory(cdr__currency="INR").cdr
    dispute = DisputeFactory(cdr=cdr)
    app_booking = booking(order_id="O-APP")
    payment = Payment.objects.create(provider="razorpay", currency="INR", status=Payment.Status.CAPTURED)
    driver, cpo = accounts.driver_receivable(1, "INR"), accounts.cpo_payable("IN*CPA", "INR")
    clearing, refunds = accounts.clearing("razorpay", "INR"), accounts.refunds_pending("INR")
    charge = post_at(
        days_ago(10),
        event="charge",
        legs=[
            Leg(driver, Decimal("118.00")),
            Leg(cpo, Decimal("-90.00")),
            Leg(accounts.revenue_fees("INR"), Decimal("-10.00")),
            Leg(accounts.tax_payable(Decimal("18"), "INR"), Decimal("-18.00")),
        ],
        reference=f"cdr:{cdr.pk}",
    )
    capture = post_at(
        days_ago(5),
        event="capture",
        legs=[Leg(clearing, Decimal("118.00")), Leg(driver, Decimal("-118.00"))],
        reference=f"payment:{payment.pk}",
    )
    credit = post_at(
        days_ago(2),
        event="credit",
        legs=[Leg(accounts.dispute_expense("INR"), Decimal("20.00")), Leg(refunds, Decimal("-20.00"))],
        reference=f"dispute:{dispute.pk}",
    )
    refund = post_at(
        days_ago(1),
        event="refund",
        legs=[Leg(refunds, Decimal("5.00")), Leg(clearing, Decimal("-5.00"))],
        reference=f"dispute:{dispute.pk}",
    )
    app_charge = post_at(
        days_ago(3),
        event="charge",
        legs=[
            Leg(accounts.bap_receivable("app.example", "EUR"), Decimal("50.00")),
            Leg(accounts.cpo_payable("DE*ABC", "EUR"), Decimal("-40.00")),
            Leg(accounts.revenue_fees("EUR"), Decimal("-10.00")),
        ],
        reference=f"booking:{app_booking.pk}",
    )
    return Books(cdr, payment, dispute, app_booking, charge, capture, credit, refund, app_charge)


def row_of(page: str, text: str) -> str:
    """The table row (<tr>…</tr>) of `page` that contains `text`."""
    for row in re.findall(r"<tr\b.*?</tr>", page, flags=re.S):
        if text in row:
            return re.sub(r">\s+<", "><", row)
    raise AssertionError(f"no row with {text!r}")


def section(page: str, section_id: str) -> str:
    start = page.index(f'id="{section_id}"')
    return page[start : page.index("</section>", start)]


def account_url(account: LedgerAccount) -> str:
    return reverse("admin:billing_ledgeraccount_change", args=[account.pk])


# ---------------------------------------------------------------------------------------------
# Accounts and their balances
# ---------------------------------------------------------------------------------------------


def test_it_lists_accounts_with_their_balances(viewer: Client, books: Books) -> None:
    page = viewer.get(reverse("admin:billing_ledgeraccount_changelist")).content.decode()

    expected = {
        ("cpo:IN*CPA:payable", "INR"): "-90.00",
        ("clearing:razorpay", "INR"): "113.00",
        ("refunds:pending", "INR"): "-15.00",
        ("driver:1:receivable", "INR"): "0.00",
        ("bap:app.example:receivable", "EUR"): "50.00",
    }
    for (code, currency), balance in expected.items():
        row = row_of(page, account_url(books.account(code, currency)))
        assert f'<td class="field-balance">{balance}</td>' in row
        assert ledger.balance(books.account(code, currency)) == Decimal(balance)


def test_it_filters_accounts_by_currency_and_searches_codes(viewer: Client, books: Books) -> None:
    url = reverse("admin:billing_ledgeraccount_changelist")

    eur = viewer.get(url, {"currency__exact": "EUR"}).content.decode()
    found = viewer.get(url, {"q": "refunds"}).content.decode()

    assert "bap:app.example:receivable" in eur and "clearing:razorpay" not in eur
    assert "refunds:pending" in found and "clearing:razorpay" not in found


def test_the_account_list_takes_as_many_queries_for_many_accounts_as_for_few(
    viewer: Client, books: Books, django_assert_max_num_queries: Any
) -> None:
    url = reverse("admin:billing_ledgeraccount_changelist")
    viewer.get(url)  # warm: session, content types
    with CaptureQueriesContext(connection) as few:
        assert viewer.get(url).status_code == 200
    for n in range(2, 42):
        post_at(
            days_ago(1),
            event="charge",
            legs=[Leg(accounts.driver_receivable(n, "INR"), Decimal("1.00")), Leg(accounts.bank("INR"), Decimal("-1"))],
            reference="",
        )
    assert LedgerAccount.objects.count() >= 50

    with django_assert_max_num_queries(len(few)):
        page = viewer.get(url).content.decode()
    assert 'class="field-balance">1.00</td>' in row_of(page, account_url(books.account("driver:41:receivable")))


# ---------------------------------------------------------------------------------------------
# An account's statement
# ---------------------------------------------------------------------------------------------


def statement_balances(page: str) -> list[str]:
    return re.findall(r'<td class="num balance">([^<]*)</td>', page)


def test_the_statement_shows_each_line_with_its_running_balance(viewer: Client, books: Books) -> None:
    clearing = books.account("clearing:razorpay")

    page = viewer.get(account_url(clearing)).content.decode()

    assert statement_balances(page) == ["118.00", "113.00"]
    assert [f"{line.balance:,f}" for line in ledger.statement(clearing)] == statement_balances(page)
    assert 'id="account-balance">113.00<' in page
    assert 'id="statement-closing">113.00<' in page


def test_the_statement_over_a_date_range_starts_from_the_opening_balance(viewer: Client, books: Books) -> None:
    refunds = books.account("refunds:pending")
    since = days_ago(1).date()

    page = viewer.get(account_url(refunds), {"since": since.isoformat()}).content.decode()

    assert 'id="statement-opening">-20.00<' in page  # the credit, two days ago, is before the range
    assert statement_balances(page) == ["-15.00"]
    assert reverse("admin:billing_ledgerentry_change", args=[books.refund.pk]) in page
    assert reverse("admin:billing_ledgerentry_change", args=[books.credit.pk]) not in page


def test_the_statement_refuses_a_backwards_range_without_failing(viewer: Client, books: Books) -> None:
    response = viewer.get(account_url(books.account("refunds:pending")), {"since": "2026-11-19", "until": "2026-11-01"})

    assert response.status_code == 200
    assert "The range starts after it ends." in response.content.decode()
    assert statement_balances(response.content.decode()) == ["-20.00", "-15.00"]  # the whole statement


def test_a_bad_date_is_a_form_error_not_a_500(viewer: Client, books: Books) -> None:
    response = viewer.get(account_url(books.account("clearing:razorpay")), {"until": "yesterday"})

    assert response.status_code == 200
    assert "Enter a valid date." in response.content.decode()


def test_the_statement_pages_carry_the_balance_forward(
    viewer: Client, books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(finance, "STATEMENT_PAGE_SIZE", 2)
    bank = accounts.bank("INR")
    for day in range(5, 0, -1):
        post_at(
            days_ago(day),
            event="remittance",
            legs=[Leg(bank, Decimal(f"{day}.25")), Leg(accounts.revenue_fees("INR"), Decimal(f"-{day}.25"))],
            reference="",
        )
    expected = [f"{line.balance:,f}" for line in ledger.statement(bank)]

    pages = [viewer.get(account_url(bank), {"page": n}).content.decode() for n in (1, 2, 3)]

    assert [statement_balances(p) for p in pages] == [expected[0:2], expected[2:4], expected[4:5]]
    assert f'id="statement-opening">{expected[1]}<' in pages[1]
    assert "page 2 of 3 (5 lines)" in pages[1]
    assert f'id="statement-closing">{expected[-1]}<' in pages[2]


def test_statement_lines_link_to_their_entry_and_what_it_refers_to(viewer: Client, books: Books) -> None:
    page = viewer.get(account_url(books.account("cpo:IN*CPA:payable"))).content.decode()

    row = row_of(page, reverse("admin:billing_ledgerentry_change", args=[books.charge.pk]))
    assert reverse("admin:billing_cdr_change", args=[books.cdr.pk]) in row
    assert ">90.00</td>" in row  # in the credit column


# ---------------------------------------------------------------------------------------------
# Entries: lines, references, immutability
# ---------------------------------------------------------------------------------------------


def test_an_entry_shows_its_lines_and_links_its_reference(viewer: Client, books: Books) -> None:
    page = viewer.get(reverse("admin:billing_ledgerentry_change", args=[books.charge.pk])).content.decode()

    assert reverse("admin:billing_cdr_change", args=[books.cdr.pk]) in page
    for code, debit, credit in [
        ("driver:1:receivable", "118.00", ""),
        ("cpo:IN*CPA:payable", "", "90.00"),
        ("tax:VAT-18:payable", "", "18.00"),
    ]:
        row = row_of(page, account_url(books.account(code)))
        assert f'<td class="field-debit"><p>{debit}</p></td>' in row
        assert f'<td class="field-credit"><p>{credit}</p></td>' in row


@pytest.mark.parametrize(
    ("entry", "target"),
    [
        ("capture", lambda b: reverse("admin:billing_payment_change", args=[b.payment.pk])),
        ("credit", lambda b: reverse("admin:billing_dispute_change", args=[b.dispute.pk])),
        ("app_charge", lambda b: reverse("admin:emsp_booking_change", args=[b.booking.pk])),
    ],
)
def test_the_entry_list_links_each_reference_to_its_page(viewer: Client, books: Books, entry: str, target: Any) -> None:
    page = viewer.get(reverse("admin:billing_ledgerentry_changelist")).content.decode()

    row = row_of(page, reverse("admin:billing_ledgerentry_change", args=[getattr(books, entry).pk]))
    assert f'href="{target(books)}"'.replace("&", "&amp;") in row


def test_a_reference_to_nothing_known_stays_text(viewer: Client, books: Books) -> None:
    entry = post_at(
        NOW,
        event="remittance",
        legs=[Leg(accounts.bank("INR"), Decimal("1")), Leg(accounts.revenue_fees("INR"), Decimal("-1"))],
        reference="statement:abc",
    )

    page = viewer.get(reverse("admin:billing_ledgerentry_change", args=[entry.pk])).content.decode()

    assert "statement:abc" in page
    assert 'href="statement:abc"' not in page


@pytest.mark.parametrize("model", ["ledgerentry", "ledgeraccount"])
def test_nobody_can_add_change_or_delete_ledger_rows(books: Books, model: str) -> None:
    admin = login(superuser=True)
    obj = books.charge if model == "ledgerentry" else books.account("clearing:razorpay")
    change = reverse(f"admin:billing_{model}_change", args=[obj.pk])

    page = admin.get(change).content.decode()

    assert admin.get(reverse(f"admin:billing_{model}_add")).status_code == 403
    assert admin.get(reverse(f"admin:billing_{model}_delete", args=[obj.pk])).status_code == 403
    assert admin.post(reverse(f"admin:billing_{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    assert admin.post(change, {"event": "changed", "memo": "changed"}).status_code in (403, 405)
    assert 'name="_save"' not in page and "deletelink" not in page
    assert "action-checkbox" not in admin.get(reverse(f"admin:billing_{model}_changelist")).content.decode()
    assert LedgerEntry.objects.get(pk=books.charge.pk).event == "charge"
    assert LedgerLine.objects.filter(entry=books.charge).count() == 4


def test_ledger_pages_need_the_view_permission(books: Books) -> None:
    nobody = login("view_payment")

    assert nobody.get(reverse("admin:billing_ledgeraccount_changelist")).status_code == 403
    assert nobody.get(account_url(books.account("clearing:razorpay"))).status_code == 403
    assert nobody.get(reverse("admin:billing_ledgeraccount_trial_balance")).status_code == 403
    assert nobody.get(reverse("admin:billing_ledgerentry_change", args=[books.charge.pk])).status_code == 403


# ---------------------------------------------------------------------------------------------
# Trial balance and the receivables / payables charts
# ---------------------------------------------------------------------------------------------


def test_the_trial_balance_adds_up_to_zero_per_currency(viewer: Client, books: Books) -> None:
    page = viewer.get(reverse("admin:billing_ledgeraccount_trial_balance")).content.decode()

    assert 'id="trial-balance-total-INR">0.00 (balanced)' in page
    assert 'id="trial-balance-total-EUR">0.00 (balanced)' in page
    assert "THE BOOKS DO NOT BALANCE" not in page
    inr = section(page, "finance-INR")
    assert ">113.00</td>" in row_of(inr, "clearing:razorpay")
    assert ">15.00</td>" in row_of(inr, "refunds:pending")  # credit column
    assert row_of(inr, "debits − credits")


def test_the_trial_balance_sums_per_party_accounts_by_family(viewer: Client, books: Books) -> None:
    post_at(
        NOW,
        event="charge",
        legs=[Leg(accounts.driver_receivable(2, "INR"), Decimal("7.50")), Leg(accounts.bank("INR"), Decimal("-7.50"))],
        reference="",
    )

    summary = section(viewer.get(reverse("admin:billing_ledgeraccount_trial_balance")).content.decode(), "finance-INR")
    detail = section(
        viewer.get(reverse("admin:billing_ledgeraccount_trial_balance"), {"detail": "1"}).content.decode(),
        "finance-INR",
    )

    assert ">7.50</td>" in row_of(summary, "driver:*:receivable")  # driver 1 is at zero: not counted
    assert "driver:2:receivable" in row_of(detail, account_url(books.account("driver:2:receivable")))


def test_the_trial_balance_as_of_a_date_leaves_later_entries_out(viewer: Client, books: Books) -> None:
    until = days_ago(6).date()

    page = viewer.get(
        reverse("admin:billing_ledgeraccount_trial_balance"), {"until": until.isoformat()}
    ).content.decode()

    assert ">118.00</td>" in row_of(section(page, "finance-INR"), "driver:*:receivable")
    assert "finance-EUR" not in page or "Every account is at zero" in section(page, "finance-EUR")


def test_an_unbalanced_book_is_shown_loudly(viewer: Client, books: Books) -> None:
    # A ledger broken behind the checks' back (a restore, a hand-made SQL fix): around `post`, which refuses it,
    # and on PostgreSQL with the triggers off for this test's transaction only (SET LOCAL ends with it).
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
    broken = LedgerEntry.objects.create(event="manual_fix", reference="")
    LedgerLine.objects.create(entry=broken, account=books.account("clearing:razorpay"), amount_minor=500)

    page = viewer.get(reverse("admin:billing_ledgeraccount_trial_balance")).content.decode()

    assert 'id="trial-balance-unbalanced" role="alert"' in page
    assert "INR is off by 5.00" in page
    assert 'id="trial-balance-total-INR">5.00 NOT ZERO' in page
    assert 'id="trial-balance-total-EUR">0.00 (balanced)' in page


def test_receivables_and_payables_are_daily_closing_balances(books: Books) -> None:
    history = {h.currency: h for h in finance.balance_history(days=12)}

    inr = history["INR"]
    assert inr.days[-1] == NOW.date()
    # days 11..0 ago: the charge 10 days ago, the capture 5 days ago, the credit 2 and the refund 1 day ago.
    assert inr.receivables == [Decimal(n) for n in [0, 118, 118, 118, 118, 118, 0, 0, 0, 0, 0, 0]]
    assert inr.payables == [Decimal(n) for n in [0, 90, 90, 90, 90, 90, 90, 90, 90, 110, 105, 105]]
    assert history["EUR"].receivables[-5:] == [0, 50, 50, 50, 50]  # the app's charge, 3 days ago
    assert history["EUR"].payables[-5:] == [0, 40, 40, 40, 40]


def test_the_opening_balance_before_the_window_is_carried_in(books: Books) -> None:
    history = {h.currency: h for h in finance.balance_history(days=4)}

    assert history["INR"].payables == [Decimal(n) for n in [90, 110, 105, 105]]  # the charge is 10 days old
    assert history["INR"].receivables == [0, 0, 0, 0]


def test_the_balance_history_takes_two_queries(books: Books, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(2):
        finance.balance_history()


def test_the_finance_page_draws_a_chart_per_currency(viewer: Client, books: Books) -> None:
    page = viewer.get(reverse("admin:billing_ledgeraccount_trial_balance")).content.decode()

    for currency in ("INR", "EUR"):
        assert f'<svg class="console-chart" id="chart-receivables-payables-{currency}"' in page
    assert "receivables 0.00 INR, payables 105.00 INR" in page
    assert len(re.findall(r"<circle class=\"point series-2\"", section(page, "finance-INR"))) == finance.HISTORY_DAYS


# ---------------------------------------------------------------------------------------------
# Payments and the exceptions queue
# ---------------------------------------------------------------------------------------------


@dataclass
class Trouble:
    failed_payment: Payment
    failed_capture: PaymentOperation
    stuck_refund: PaymentOperation
    fresh: PaymentOperation
    retried: PaymentOperation
    capture_missing: Payment
    capture_recent: Payment
    reconciliation: PayoutReconciliation


def operation(payment: Payment, kind: str, status: str, *, minutes_ago: int, **kw: Any) -> PaymentOperation:
    return PaymentOperation.objects.create(
        payment=payment,
        kind=kind,
        status=status,
        amount_minor=kw.pop("amount_minor", 11800),
        idempotency_key=f"{payment.pk}:{kind}:{PaymentOperation.objects.count()}",
        created_at=NOW - timedelta(minutes=minutes_ago),
        **kw,
    )


@pytest.fixture
def trouble(books: Books) -> Trouble:
    failed = Payment.objects.create(
        provider="stripe", currency="EUR", status=Payment.Status.FAILED, failure="card_declined: insufficient funds"
    )
    authorised = Payment.objects.create(
        provider="razorpay", currency="INR", status=Payment.Status.AUTHORISED, authorised_minor=11800
    )
    failed_capture = operation(
        authorised, "capture", PaymentOperation.Status.FAILED, minutes_ago=3, error="gateway timeout", attempts=1
    )
    stuck_refund = operation(books.payment, "refund", PaymentOperation.Status.PENDING, minutes_ago=30, amount_minor=500)
    fresh = operation(books.payment, "release", PaymentOperation.Status.PENDING, minutes_ago=2)
    # A failure a later call of the same kind made good: not an exception any more.
    retried = operation(failed, "authorise", PaymentOperation.Status.FAILED, minutes_ago=50, error="timeout")
    operation(failed, "authorise", PaymentOperation.Status.SUCCEEDED, minutes_ago=40)

    missing_booking = booking(order_id="O-LATE")
    capture_missing = Payment.objects.create(
        booking=missing_booking, provider="razorpay", currency="INR", status="AUTHORISED", authorised_minor=20000
    )
    Booking.objects.filter(pk=missing_booking.pk).update(updated_at=NOW - timedelta(hours=2))
    recent_booking = booking(Booking.State.COMPLETED, order_id="O-JUST")
    capture_recent = Payment.objects.create(
        booking=recent_booking, provider="razorpay", currency="INR", status="AUTHORISED", authorised_minor=30000
    )
    Booking.objects.filter(pk=recent_booking.pk).update(updated_at=NOW - timedelta(minutes=20))

    PayoutReconciliation.objects.create(
        provider="razorpay",
        file_name="old.csv",
        ran_at=NOW - timedelta(days=1),
        mismatches=[{"reason": "superseded", "payout_id": "pout_OLD"}],
        mismatch_count=1,
    )
    reconciliation = PayoutReconciliation.objects.create(
        provider="razorpay",
        file_name="settlements-2026-11-19.csv",
        ran_at=NOW - timedelta(hours=1),
        rows=3,
        matched=1,
        mismatches=[
            {"reason": "no payment with this id", "payout_id": "pout_9", "amount_minor": 500},
            {"reason": "amount differs", "payment_id": "pay_7", "ours": 11800, "theirs": 11700},
        ],
        mismatch_count=2,
    )
    PayoutReconciliation.objects.create(provider="stripe", file_name="ok.csv", rows=5, matched=5, mismatch_count=0)
    return Trouble(
        failed, failed_capture, stuck_refund, fresh, retried, capture_missing, capture_recent, reconciliation
    )


def exceptions_page(client: Client) -> str:
    response = client.get(reverse("admin:billing_payment_exceptions"))
    assert response.status_code == 200
    return response.content.decode()


def test_the_exceptions_page_lists_stuck_and_failed_operations(viewer: Client, trouble: Trouble) -> None:
    operations = section(exceptions_page(viewer), "exceptions-operations")

    assert "gateway timeout" in row_of(operations, f'id="operation-{trouble.failed_capture.pk}"')
    assert "5.00 INR" in row_of(operations, f'id="operation-{trouble.stuck_refund.pk}"')
    assert f'id="operation-{trouble.fresh.pk}"' not in operations  # pending for 2 minutes only
    assert f'id="operation-{trouble.retried.pk}"' not in operations
    assert "(2)" in operations


def test_the_exceptions_page_lists_missing_captures(viewer: Client, trouble: Trouble) -> None:
    missing = section(exceptions_page(viewer), "exceptions-capture-missing")

    assert "O-LATE" in row_of(missing, f'id="capture-missing-{trouble.capture_missing.pk}"')
    assert "200.00 INR" in row_of(missing, "O-LATE")
    assert "O-JUST" not in missing  # finished 20 minutes ago: the capture may still come


def test_the_exceptions_page_lists_refunds_pending_by_what_they_come_from(
    viewer: Client, books: Books, trouble: Trouble
) -> None:
    refunds = section(exceptions_page(viewer), "exceptions-refunds")

    row = row_of(refunds, f">dispute:{books.dispute.pk}<")
    assert reverse("admin:billing_dispute_change", args=[books.dispute.pk]) in row
    assert ">15.00</td>" in row
    assert 'id="refunds-pending-INR">15.00 INR<' in refunds


def test_the_exceptions_page_lists_the_latest_unmatched_payouts(viewer: Client, trouble: Trouble) -> None:
    payouts = section(exceptions_page(viewer), "exceptions-payouts")

    assert "settlements-2026-11-19.csv" in payouts
    assert "<td>pout_9</td>" in row_of(payouts, "no payment with this id")
    assert "<td>11700</td>" in row_of(payouts, "amount differs")
    for column in ("reason", "payout_id", "amount_minor", "payment_id", "ours", "theirs"):
        assert f'<th scope="col">{column}</th>' in payouts
    assert "pout_OLD" not in payouts  # an older run of the same provider
    assert "ok.csv" not in payouts  # everything matched


def test_the_exceptions_page_lists_failed_payments(viewer: Client, trouble: Trouble) -> None:
    failed = section(exceptions_page(viewer), "exceptions-failed-payments")

    assert "card_declined" in row_of(failed, f'id="failed-payment-{trouble.failed_payment.pk}"')
    assert reverse("admin:billing_payment_change", args=[trouble.failed_payment.pk]) in failed


def test_the_exceptions_page_takes_a_fixed_number_of_queries(
    viewer: Client, trouble: Trouble, django_assert_max_num_queries: Any
) -> None:
    exceptions_page(viewer)
    with CaptureQueriesContext(connection) as few:
        exceptions_page(viewer)
    for n in range(10):
        payment = Payment.objects.create(provider="stripe", currency="EUR", status=Payment.Status.FAILED)
        operation(payment, "capture", PaymentOperation.Status.FAILED, minutes_ago=n)

    with django_assert_max_num_queries(len(few)):
        exceptions_page(viewer)


def test_the_exceptions_page_needs_the_view_permission(trouble: Trouble) -> None:
    assert login("view_ledgeraccount").get(reverse("admin:billing_payment_exceptions")).status_code == 403


def test_retry_is_offered_only_to_those_who_may_act_on_payments(
    viewer: Client, finance_staff: Client, trouble: Trouble
) -> None:
    retry = reverse("admin:billing_payment_retry_operation", args=[trouble.failed_capture.pk])
    payment_page = reverse("admin:billing_payment_change", args=[trouble.failed_capture.payment_id])

    assert retry not in exceptions_page(viewer)
    assert retry not in viewer.get(payment_page).content.decode()
    assert f'action="{retry}"' in exceptions_page(finance_staff)
    assert f'formaction="{retry}"' in finance_staff.get(payment_page).content.decode()


def test_retry_without_the_permission_is_refused(viewer: Client, trouble: Trouble) -> None:
    response = viewer.post(reverse("admin:billing_payment_retry_operation", args=[trouble.failed_capture.pk]))

    assert response.status_code == 403
    assert PaymentOperation.objects.get(pk=trouble.failed_capture.pk).status == PaymentOperation.Status.FAILED
    assert not StaffAction.objects.filter(verb="retry").exists()


def test_retry_is_a_post(finance_staff: Client, trouble: Trouble) -> None:
    response = finance_staff.get(reverse("admin:billing_payment_retry_operation", args=[trouble.failed_capture.pk]))

    assert response.status_code == 405


def test_retry_calls_the_payment_service_and_records_who(
    finance_staff: Client, trouble: Trouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def operation_retry(*, operation: PaymentOperation, user: Any) -> PaymentOperation:
        calls.append((operation.pk, user.username))
        PaymentOperation.objects.filter(pk=operation.pk).update(status=PaymentOperation.Status.SUCCEEDED)
        return operation

    monkeypatch.setattr("billing.services.payments.operation_retry", operation_retry)
    op = trouble.failed_capture

    response = finance_staff.post(reverse("admin:billing_payment_retry_operation", args=[op.pk]), follow=True)

    user = response.wsgi_request.user
    assert calls == [(op.pk, user.username)]
    assert f"Retried the capture of payment {op.payment_id}: SUCCEEDED." in response.content.decode()
    assert f'id="operation-{op.pk}"' not in section(response.content.decode(), "exceptions-operations")
    record = StaffAction.objects.get(verb="retry")
    assert (record.username, record.object_id, record.details["operation"]) == (
        user.username,
        str(op.payment_id),
        op.pk,
    )


def test_a_refused_retry_is_a_message_not_a_500(
    finance_staff: Client, trouble: Trouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    def operation_retry(*, operation: PaymentOperation, user: Any) -> PaymentOperation:
        raise ValueError("the provider refused: amount exceeds the authorisation")

    monkeypatch.setattr("billing.services.payments.operation_retry", operation_retry)

    response = finance_staff.post(
        reverse("admin:billing_payment_retry_operation", args=[trouble.stuck_refund.pk]), follow=True
    )

    assert response.status_code == 200
    assert "was not retried: the provider refused: amount exceeds the authorisation" in response.content.decode()
    assert not StaffAction.objects.filter(verb="retry").exists()


def test_an_operation_that_succeeded_is_not_retried(finance_staff: Client, trouble: Trouble) -> None:
    done = PaymentOperation.objects.get(status=PaymentOperation.Status.SUCCEEDED)

    response = finance_staff.post(reverse("admin:billing_payment_retry_operation", args=[done.pk]), follow=True)

    assert "Nothing to retry" in response.content.decode()
    assert not StaffAction.objects.filter(verb="retry").exists()


def test_a_call_pending_for_minutes_only_is_not_retried(finance_staff: Client, trouble: Trouble) -> None:
    payment_page = reverse("admin:billing_payment_change", args=[trouble.fresh.payment_id])
    retry = reverse("admin:billing_payment_retry_operation", args=[trouble.fresh.pk])

    response = finance_staff.post(retry, follow=True)

    assert "may still be answered" in response.content.decode()
    assert not StaffAction.objects.filter(verb="retry").exists()
    assert retry not in finance_staff.get(payment_page).content.decode()


def test_retry_goes_back_only_to_this_site(finance_staff: Client, trouble: Trouble) -> None:
    done = PaymentOperation.objects.get(status=PaymentOperation.Status.SUCCEEDED)

    response = finance_staff.post(
        reverse("admin:billing_payment_retry_operation", args=[done.pk]), {"next": "https://evil.example/"}
    )

    assert response["Location"] == reverse("admin:billing_payment_exceptions")


def test_payments_are_read_only_and_filterable(trouble: Trouble) -> None:
    admin = login(superuser=True)
    change = reverse("admin:billing_payment_change", args=[trouble.capture_missing.pk])
    changelist = reverse("admin:billing_payment_changelist")

    page = admin.get(change).content.decode()
    failed = admin.get(changelist, {"status__exact": "FAILED"}).content.decode()
    by_provider = admin.get(changelist, {"provider": "stripe", "collected_by__exact": "BPP"})

    assert 'name="_save"' not in page and "200.00 INR" in page
    assert admin.post(change, {"status": "CAPTURED"}).status_code == 403
    assert admin.get(reverse("admin:billing_payment_add")).status_code == 403
    assert Payment.objects.get(pk=trouble.capture_missing.pk).status == Payment.Status.AUTHORISED
    assert reverse("admin:billing_payment_change", args=[trouble.failed_payment.pk]) in failed
    assert reverse("admin:billing_payment_change", args=[trouble.capture_missing.pk]) not in failed
    assert by_provider.status_code == 200
    assert by_provider.context["cl"].result_count == 1


def test_the_payment_page_shows_its_operations(viewer: Client, trouble: Trouble) -> None:
    page = viewer.get(reverse("admin:billing_payment_change", args=[trouble.stuck_refund.payment_id])).content.decode()

    assert "5.00 INR" in row_of(page, trouble.stuck_refund.idempotency_key)
    assert "PENDING" in row_of(page, trouble.fresh.idempotency_key)


def test_provider_webhooks_are_listed_read_only(viewer: Client) -> None:
    hook = ProviderWebhook.objects.create(
        provider="razorpay", event_id="evt_1", type="payment.captured", payload={"id": "evt_1"}, outcome="captured"
    )

    listing = viewer.get(reverse("admin:billing_providerwebhook_changelist"), {"provider": "razorpay"})
    detail = viewer.get(reverse("admin:billing_providerwebhook_change", args=[hook.pk])).content.decode()

    assert "evt_1" in listing.content.decode()
    assert 'name="_save"' not in detail and "payment.captured" in detail
    assert (
        viewer.post(reverse("admin:billing_providerwebhook_delete", args=[hook.pk]), {"post": "yes"}).status_code == 403
    )
