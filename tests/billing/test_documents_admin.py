"""The console's side of what we issue and what apps owe: finance issues a driver's numbered receipt and a CPO's
statement of a closed period, downloads them as issued, reads and exports an app's settlement, and sets the
terms an app is offered. Nobody edits an issued document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from billing.models import BapAgreement, IssuedDocument, Settlement
from tests.billing.bap_ledger import APP, october_of_app
from tests.billing.test_documents import charge_receipt, closed_october, pdf_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def finance(login: Callable[[str], Client]) -> Client:
    return login("finance")


def act(client: Client, model: str, action: str, pks: list[int]) -> Any:
    url = reverse(f"admin:billing_{model}_changelist")
    return client.post(url, {"action": action, "_selected_action": pks}, follow=True)


def test_finance_issues_a_receipt_and_downloads_it_as_issued(finance: Client) -> None:
    receipt = charge_receipt()
    response = act(finance, "driverreceipt", "issue", [receipt.pk])
    document = IssuedDocument.objects.get()
    assert document.number in response.content.decode()
    act(finance, "driverreceipt", "issue", [receipt.pk])  # a second time: the same document
    assert IssuedDocument.objects.count() == 1
    download = finance.get(reverse("admin:billing_issueddocument_pdf", args=[document.pk]))
    assert download["Content-Type"] == "application/pdf"
    assert document.number in pdf_text(download.content)
    page = finance.get(reverse("admin:billing_issueddocument_change", args=[document.pk])).content.decode()
    assert 'name="_save"' not in page and "deletelink" not in page


def test_the_receipt_list_shows_each_document_in_one_statement_and_filters_the_unissued(finance: Client) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.models import DriverReceipt
    from billing.services import documents
    from tests.billing.factories import DriverReceiptFactory

    receipt = charge_receipt()
    number = documents.issue_receipt(receipt).number
    url = reverse("admin:billing_driverreceipt_changelist")
    DriverReceiptFactory()
    with CaptureQueriesContext(connection) as few:
        page = finance.get(url).content.decode()
    assert (
        number in page
        and reverse("admin:billing_issueddocument_change", args=[IssuedDocument.objects.get().pk]) in page
    )
    for _ in range(4):
        DriverReceiptFactory()
    with CaptureQueriesContext(connection) as more:
        assert finance.get(url).status_code == 200
    assert len(more) == len(few)  # not a query per row
    unissued = finance.get(url, {"issued__exact": "0"}).content.decode()
    assert (
        number not in unissued
        and unissued.count('name="_selected_action"') == DriverReceipt.objects.filter(issued=False).count() == 5
    )


def test_a_tampered_document_is_not_served(finance: Client) -> None:
    receipt = charge_receipt()
    act(finance, "driverreceipt", "issue", [receipt.pk])
    document = IssuedDocument.objects.get()
    IssuedDocument.objects.filter(pk=document.pk).update(pdf=bytes(document.pdf)[:-10] + b"0123456789")
    assert finance.get(reverse("admin:billing_issueddocument_pdf", args=[document.pk])).status_code == 409


def test_ops_may_not_issue_or_read_documents(login: Callable[[str], Client]) -> None:
    ops = login("ops")
    assert ops.get(reverse("admin:billing_issueddocument_changelist")).status_code == 403


def test_finance_issues_the_statement_of_a_closed_period_only(finance: Client) -> None:
    closed = closed_october()
    act(finance, "settlement", "issue_cpo_statement", [closed.pk])
    statement = IssuedDocument.objects.get(kind=IssuedDocument.Kind.CPO_STATEMENT)
    assert statement.reference == f"settlement:{closed.pk}"
    open_eur = Settlement.objects.exclude(pk=closed.pk).first()
    response = act(finance, "settlement", "issue_cpo_statement", [open_eur.pk])
    assert "closed" in response.content.decode().lower()
    assert IssuedDocument.objects.filter(kind=IssuedDocument.Kind.CPO_STATEMENT).count() == 1


def test_the_apps_settlement_page_shows_exports_and_issues_the_statement(finance: Client) -> None:
    october_of_app()
    url = reverse("admin:billing_bap_settlement")
    query = {"bap_id": APP, "period_start": "2026-10-01", "period_end": "2026-11-01"}
    page = finance.get(url, query)
    assert page.status_code == 200 and APP in page.content.decode()
    assert page.context["rows"] and page.context["rows"][0].bap_id == APP
    csv = finance.get(url, {**query, "export": "csv"})
    assert csv["Content-Disposition"].startswith("attachment") and APP in csv.content.decode()
    finance.post(url, query)  # the page's Issue button
    statement = IssuedDocument.objects.get(kind=IssuedDocument.Kind.BAP_STATEMENT)
    assert statement.party == f"bap:{APP}"


@pytest.mark.parametrize(
    "query",
    [
        {"period_start": "2026-10-01", "period_end": "2026-09-01"},
        {"period_start": "2026-13-01", "period_end": "2026-11-01"},
        {"period_start": "2026-10-01", "period_end": "9999-12-31"},
    ],
)
def test_the_apps_settlement_page_answers_bad_input_with_a_form_error(finance: Client, query: dict[str, str]) -> None:
    page = finance.get(reverse("admin:billing_bap_settlement"), query)
    assert page.status_code == 200
    assert page.context["form"].errors


def test_a_nul_in_the_apps_settlement_query_is_refused_by_the_console(finance: Client) -> None:
    """The console refuses a control character in any parameter (emsp/middleware.py ConsoleQueryMiddleware)."""
    query = {"bap_id": "app\x00", "period_start": "2026-10-01", "period_end": "2026-11-01"}
    assert finance.get(reverse("admin:billing_bap_settlement"), query).status_code == 400


def test_an_apps_terms_are_set_with_a_valid_window_and_fee(login: Callable[[str], Client]) -> None:
    admin = login("admin")
    url = reverse("admin:billing_bapagreement_add")
    base = {"bap_id": "app.example", "legal_name": "", "settlement_basis": "delivery"}
    bad = admin.post(url, {**base, "finder_fee_percent": "80", "settlement_window": "next week"})
    assert bad.status_code == 200 and not BapAgreement.objects.exists()
    good = admin.post(url, {**base, "finder_fee_percent": "2.5", "settlement_window": "p7d", "collects": "on"})
    assert good.status_code == 302, good.context["adminform"].form.errors
    assert BapAgreement.objects.get().settlement_window == "P7D"
