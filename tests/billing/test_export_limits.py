"""Console exports built inside a request: an XLSX with a sheet of CDRs (or of an app's lines) is refused past
settlement.XLSX_CONSOLE_MAX_ROWS with a message that points to the streamed CSV and the report command (a big
CPO's month had run past gunicorn's timeout: a 502), and an app's settlement export is a staff action, as a
CPO's is."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date
from typing import Any

import openpyxl
import pytest
from django.test import Client
from django.urls import reverse

from billing.models import Settlement
from billing.services import settlement as service
from billing.services.settlement import XLSX_CONTENT_TYPE, settlement_compute
from emsp.models import StaffAction
from tests.billing.bap_ledger import APP, october_of_app
from tests.billing.factories import settlement_scenario

pytestmark = pytest.mark.django_db

OCTOBER = {"period_start": "2026-10-01", "period_end": "2026-11-01"}


@pytest.fixture
def finance(login: Callable[[str], Client]) -> Client:
    return login("finance")


@pytest.fixture
def eur() -> Settlement:
    """The EUR row of the scenario's October: 7 CDRs."""
    scenario = settlement_scenario()
    rows = settlement_compute(partner=scenario["partner"], period_start=date(2026, 10, 1))
    return next(s for s in rows if s.currency == "EUR")


def cap(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    # Not raising when the name is missing: on the code before the cap, the refusals fail by building the file.
    monkeypatch.setattr(service, "XLSX_CONSOLE_MAX_ROWS", rows, raising=False)


def export_with_cdrs(client: Client, settlement: Settlement, **extra: Any) -> Any:
    url = reverse("admin:billing_settlement_changelist")
    return client.post(url, {"action": "export_xlsx_with_cdrs", "_selected_action": [settlement.pk]}, **extra)


def apps_page(client: Client, **query: str) -> Any:
    return client.get(reverse("admin:billing_bap_settlement"), {"bap_id": APP, **OCTOBER, **query})


# --- A. a sheet of CDRs past the cap is refused with a message, never built --------------------------------------


def test_an_xlsx_with_more_cdrs_than_the_console_builds_is_refused_with_a_message(
    finance: Client, eur: Settlement, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap(monkeypatch, 6)
    built = []
    monkeypatch.setattr(service, "settlement_xlsx", lambda *a, **k: built.append(a) or b"")

    response = export_with_cdrs(finance, eur, follow=True)

    assert response.status_code == 200 and "Content-Disposition" not in response
    page = response.content.decode()
    assert "7 CDRs are too many for an XLSX built here (at most 6)" in page
    assert "Export the CDRs as CSV (one row per CDR)" in page
    assert "manage.py settlement_report --partner IN*CPA --period 2026-10 --output FILE.xlsx --details" in page
    assert not built  # refused before the workbook is built
    assert not StaffAction.objects.filter(verb="export").exists()


def test_an_xlsx_with_cdrs_up_to_the_cap_is_the_file_as_before(
    finance: Client, eur: Settlement, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap(monkeypatch, 7)

    response = export_with_cdrs(finance, eur)

    assert response.status_code == 200 and response["Content-Type"] == XLSX_CONTENT_TYPE
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["Settlement", "CDRs"] and book["CDRs"].max_row == 1 + 7
    assert StaffAction.objects.get(verb="export").details["format"] == "xlsx with CDRs"


def test_the_cap_counts_the_cdrs_there_are_now_not_a_closed_rows_count(
    finance: Client, eur: Settlement, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap(monkeypatch, 6)
    Settlement.objects.filter(pk=eur.pk).update(cdr_count=1)  # frozen before more CDRs arrived

    response = export_with_cdrs(finance, eur, follow=True)

    assert "Content-Disposition" not in response and "7 CDRs are too many" in response.content.decode()


def test_the_summary_xlsx_and_the_streamed_cdr_csv_have_no_console_cap(
    finance: Client, eur: Settlement, monkeypatch: pytest.MonkeyPatch
) -> None:
    cap(monkeypatch, 0)
    url = reverse("admin:billing_settlement_changelist")

    for action in ("export_xlsx", "export_cdrs_csv"):
        response = finance.post(url, {"action": action, "_selected_action": [eur.pk]})
        assert response["Content-Disposition"].startswith("attachment"), action


def test_an_apps_xlsx_with_more_lines_than_the_console_builds_is_refused_with_a_message(
    finance: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    october_of_app()
    lines = len(apps_page(finance).context["rows"][0].lines)
    cap(monkeypatch, lines - 1)

    response = apps_page(finance, export="xlsx")

    assert response.status_code == 200 and "Content-Disposition" not in response
    page = response.content.decode()
    assert f"{lines} lines are too many for an XLSX built here (at most {lines - 1})" in page
    assert f"manage.py settlement_report --party bap:{APP} --period 2026-10 --output FILE.csv --details" in page
    assert not StaffAction.objects.filter(verb="export").exists()
    csv = apps_page(finance, export="csv")  # the summary CSV is not capped
    assert csv["Content-Disposition"].startswith("attachment")


def test_an_apps_xlsx_up_to_the_cap_is_the_file_as_before(finance: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    october_of_app()
    lines = len(apps_page(finance).context["rows"][0].lines)
    cap(monkeypatch, lines)

    response = apps_page(finance, export="xlsx")

    assert response["Content-Type"] == XLSX_CONTENT_TYPE
    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["BAP settlement", "Lines"] and book["Lines"].max_row == 1 + lines


# --- B. an app's settlement export is a staff action ---------------------------------------------------------------


@pytest.mark.parametrize(("export", "fmt"), [("csv", "csv"), ("xlsx", "xlsx with lines")])
def test_an_apps_settlement_export_is_a_staff_action(finance: Client, export: str, fmt: str) -> None:
    agreement = october_of_app()

    response = apps_page(finance, export=export)

    assert response.status_code == 200 and response["Content-Disposition"].startswith("attachment")
    action = StaffAction.objects.get(verb="export")
    assert action.username == "finance-user"
    assert (action.object_type, action.object_id) == ("billing.bapagreement", str(agreement.pk))
    assert action.details == {"bap_id": APP, "period": "2026-10", "currency": "INR", "format": fmt}


def test_showing_an_apps_settlement_records_nothing(finance: Client) -> None:
    october_of_app()

    assert apps_page(finance).status_code == 200
    assert not StaffAction.objects.exists()


def test_an_export_of_an_app_without_an_agreement_is_recorded_under_its_id(finance: Client) -> None:
    october_of_app().delete()  # its defaults then: an app without a row

    assert apps_page(finance, export="csv")["Content-Disposition"].startswith("attachment")
    action = StaffAction.objects.get(verb="export")
    assert (action.object_type, action.object_repr, action.details["bap_id"]) == ("billing.bapagreement", APP, APP)
