"""Settlement console: list, compute view, recompute, CSV/XLSX downloads behind the export permission, close."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import openpyxl
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from billing.models import Cdr, Dispute, Settlement
from billing.services.settlement import CSV_CONTENT_TYPE, XLSX_CONTENT_TYPE, settlement_compute
from tests.billing.factories import settlement_scenario

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:billing_settlement_changelist"


@pytest.fixture
def settlements() -> dict[str, Settlement]:
    scenario = settlement_scenario()
    return {s.currency: s for s in settlement_compute(partner=scenario["partner"], period_start=date(2026, 10, 1))}


def login(*permissions: str) -> Client:
    user = User.objects.create_user("finance", password="pw-123456-x", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="billing", codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def finance() -> Client:
    return login("view_settlement", "change_settlement", "export_settlement")


def act(client: Client, action: str, *settlements: Settlement, **extra: Any) -> Any:
    return client.post(
        reverse(CHANGELIST), {"action": action, "_selected_action": [s.pk for s in settlements]}, **extra
    )


def test_it_lists_settlements_with_filters_and_a_compute_link(
    finance: Client, settlements: dict[str, Settlement]
) -> None:
    page = finance.get(reverse(CHANGELIST), {"period": "2026-10", "state__exact": "OPEN"}).content.decode()

    assert "CPO A (IN*CPA)" in page
    assert "2026-10" in page
    assert reverse("admin:billing_settlement_compute") in page
    assert finance.get(reverse("admin:billing_settlement_change", args=[settlements["EUR"].pk])).status_code == 200


def test_it_exports_csv_as_a_download(finance: Client, settlements: dict[str, Settlement]) -> None:
    response = act(finance, "export_csv", settlements["EUR"], settlements["INR"])

    assert response.status_code == 200
    assert response["Content-Type"] == CSV_CONTENT_TYPE
    assert response["Content-Disposition"] == 'attachment; filename="settlement-IN-CPA-2026-10.csv"'
    assert response.content.decode().splitlines()[0].startswith("partner,party,period")


def test_it_exports_xlsx_as_a_download(finance: Client, settlements: dict[str, Settlement]) -> None:
    response = act(finance, "export_xlsx", settlements["EUR"])

    assert response["Content-Type"] == XLSX_CONTENT_TYPE
    assert response["Content-Disposition"] == 'attachment; filename="settlement-IN-CPA-2026-10.xlsx"'
    sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
    assert sheet["B2"].value == "IN*CPA"


def test_it_exports_xlsx_with_cdrs(finance: Client, settlements: dict[str, Settlement]) -> None:
    response = act(finance, "export_xlsx_with_cdrs", settlements["EUR"])

    book = openpyxl.load_workbook(io.BytesIO(response.content))
    assert book["CDRs"].max_row == 8  # header + 7 EUR CDRs


def test_it_streams_the_cdrs_as_csv(finance: Client, settlements: dict[str, Settlement]) -> None:
    response = act(finance, "export_cdrs_csv", settlements["INR"])

    assert response.streaming
    assert response["Content-Type"] == CSV_CONTENT_TYPE
    assert response["Content-Disposition"] == 'attachment; filename="settlement-IN-CPA-2026-10-cdrs.csv"'
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("party,period,cdr_id")


@pytest.mark.parametrize("action", ["export_csv", "export_xlsx", "export_xlsx_with_cdrs", "export_cdrs_csv"])
def test_it_refuses_exports_without_the_permission(settlements: dict[str, Settlement], action: str) -> None:
    client = login("view_settlement", "change_settlement")

    response = act(client, action, settlements["EUR"], follow=True)

    assert "Content-Disposition" not in response
    assert response["Content-Type"].startswith("text/html")
    assert action not in response.content.decode()  # not even offered


def test_it_closes_a_reconciled_period(finance: Client, settlements: dict[str, Settlement]) -> None:
    response = act(finance, "close_period", settlements["INR"], follow=True)

    inr = Settlement.objects.get(pk=settlements["INR"].pk)
    assert inr.state == Settlement.State.CLOSED
    assert inr.closed_by.username == "finance"
    assert "Closed CPO A (IN*CPA) 2026-10 INR" in response.content.decode()


def test_it_refuses_to_close_a_period_that_is_not_reconciled(
    finance: Client, settlements: dict[str, Settlement]
) -> None:
    response = act(finance, "close_period", settlements["EUR"], follow=True)

    assert Settlement.objects.get(pk=settlements["EUR"].pk).state == Settlement.State.OPEN
    assert "Not closed" in response.content.decode()
    assert "2 open dispute(s)" in response.content.decode()


def test_it_closes_a_period_in_review_carrying_its_open_cdrs_to_the_next(
    finance: Client, settlements: dict[str, Settlement]
) -> None:
    response = act(finance, "close_period_carrying_over", settlements["EUR"], follow=True)

    eur = Settlement.objects.get(pk=settlements["EUR"].pk)
    assert eur.state == Settlement.State.CLOSED
    assert eur.carried_over >= 2 and eur.open_disputes == 0  # the disputed CDRs wait in November
    assert "Closed CPO A (IN*CPA) 2026-10 EUR" in response.content.decode()
    november = Settlement.objects.get(partner=eur.partner, period_start=date(2026, 11, 1), currency="EUR")
    carried = Cdr.objects.filter(carried_to=date(2026, 11, 1), currency="EUR")
    assert carried.filter(disputes__state__in=Dispute.OPEN_STATES).count() == 2
    assert november.open_disputes >= 2


def test_it_needs_the_change_permission_to_close(settlements: dict[str, Settlement]) -> None:
    client = login("view_settlement", "export_settlement")

    act(client, "close_period", settlements["INR"], follow=True)

    assert Settlement.objects.get(pk=settlements["INR"].pk).state == Settlement.State.RECONCILED


def test_it_recomputes_the_selected_periods(finance: Client, settlements: dict[str, Settlement]) -> None:
    Settlement.objects.filter(pk=settlements["EUR"].pk).update(cdr_count=0)

    act(finance, "recompute", settlements["EUR"])

    assert Settlement.objects.get(pk=settlements["EUR"].pk).cdr_count == 7


def test_it_computes_a_period_from_the_form(finance: Client) -> None:
    partner = settlement_scenario()["partner"]
    url = reverse("admin:billing_settlement_compute")
    assert finance.get(url).status_code == 200

    response = finance.post(url, {"partner": partner.pk, "month": "2026-10"})

    assert response.status_code == 302
    assert "period=2026-10" in response["Location"]
    assert Settlement.objects.filter(partner=partner, period_start=date(2026, 10, 1)).count() == 2


def test_it_shows_a_form_error_for_a_bad_month(finance: Client) -> None:
    response = finance.post(reverse("admin:billing_settlement_compute"), {"month": "10/2026"})

    assert response.status_code == 200
    assert "YYYY-MM" in response.content.decode()
    assert not Settlement.objects.exists()


def test_it_refuses_the_compute_view_without_the_change_permission(db: None) -> None:
    client = login("view_settlement")

    assert client.get(reverse("admin:billing_settlement_compute")).status_code == 403
