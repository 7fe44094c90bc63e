"""The staff console in a real headless Chromium against the live server: login, onboarding a simulator CPO,
a dispute's side-by-side view, the settlement XLSX export, and a screenshot of the console home."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from emsp.models import Evse, Partner
from tests.billing.dispute_factories import audited_dispute
from tests.billing.factories import CdrFactory, DriverReceiptFactory
from tests.billing.test_console_home import charging_session
from tests.browser.conftest import ARTIFACTS, BrowserPage
from tests.cposim.conftest import SimProcess

pytestmark = pytest.mark.django_db(transaction=True)

USERNAME, PASSWORD = "console-boss", "pw-Console-123456"
TOKEN_A = "browser-sim-token-a"


def seed_a_month(partner: Partner) -> None:
    """Thirty days of sessions and receipts for the screenshot (a steady pattern, not a measurement)."""
    now = timezone.now()
    midnight = datetime.combine(timezone.localdate(now), time.min, tzinfo=timezone.get_current_timezone())
    elapsed = now - midnight  # each day's items fall in its first `elapsed`, so today's bar is drawn at any hour
    for days_ago in range(30):
        day = midnight - timedelta(days=days_ago)
        start = day + elapsed / 2
        sessions = 2 + (days_ago * 5) % 7
        for n in range(sessions):
            charging_session(partner, day + elapsed * n / sessions, f"{8 + (days_ago * 3 + n) % 11}.5")
        for n in range(1 + days_ago % 3):
            cost = Decimal(180 + 15 * ((days_ago + n) % 6))
            cdr = CdrFactory(partner=partner, end_date_time=start, currency="INR", total_cost_excl_vat=cost)
            DriverReceiptFactory(
                cdr=cdr, cpo_vat=cost * Decimal("0.18"), fee_excl_vat=Decimal(20), fee_vat=Decimal("3.6")
            )


def test_staff_work_the_console_in_a_real_browser(
    browser_page: BrowserPage,
    live_server: Any,
    settings: Any,
    simulator: Callable[..., SimProcess],
    tmp_path: Path,
) -> None:
    settings.PUBLIC_BASE_URL = live_server.url
    base = live_server.url
    page = browser_page.page
    sim = simulator("--party-id", "CPA", "--name", "Simulated CPO", "--locations", "6", "--token-a", TOKEN_A)
    User.objects.create_superuser(USERNAME, "boss@example.com", PASSWORD)

    # Staff login through the form.
    page.goto(f"{base}{reverse('admin:login')}?next={reverse('admin:index')}")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#console-home")
    assert page.url == f"{base}{reverse('admin:index')}"

    # Onboarding: Partners → Register with a CPO, with the simulator's versions URL and Token A.
    page.goto(f"{base}{reverse('admin:emsp_partner_register')}")
    page.fill("#id_versions_url", sim.versions_url)
    page.fill("#id_token_a", TOKEN_A)
    assert page.is_checked("#id_pull_now")
    page.click("input[type=submit]")
    page.wait_for_selector("#partner-health")
    assert re.search(r"/admin/emsp/partner/\d+/health/$", page.url)
    assert page.inner_text("#connection-state") == Partner.State.CONNECTED.label
    catalogue = sim.ctl("locations")
    counts = dict(
        zip(
            page.locator("#object-counts tr").nth(0).locator("th").all_inner_texts(),
            page.locator("#object-counts tr").nth(1).locator("td").all_inner_texts(),
            strict=True,
        )
    )
    assert counts["locations"] == str(len(catalogue))
    assert counts["evses"] == str(sum(len(location["evses"]) for location in catalogue))
    assert int(counts["tariffs"]) > 0
    assert "First pull" in page.inner_text(".messagelist")
    locations_run = page.locator("#last-syncs tr", has_text="locations").first.inner_text()
    assert "OK" in locations_run, locations_run

    # A CDR the CPO overbilled: the audit opens a dispute; the side-by-side view shows both columns.
    dispute = audited_dispute()
    page.goto(f"{base}{reverse('admin:billing_dispute_change', args=[dispute.pk])}")
    headings = page.locator("#dispute-comparison thead tr").first.locator("th").all_text_contents()
    assert headings == ["component", "CPO", "ours", "difference"]
    total = [Decimal(cell) for cell in page.locator("#row-total_cost td").all_inner_texts()]
    assert total == [Decimal(v) for v in ("6.00", "6.60", "5.00", "5.50", "1.00", "1.10")]  # CPO, ours, difference

    # Settlement: compute October 2026 for that CPO, select the row, run "Export XLSX", read the download.
    page.goto(f"{base}{reverse('admin:billing_settlement_compute')}")
    page.select_option("#id_partner", label=str(dispute.partner))
    page.fill("#id_month", "2026-10")
    page.click("input[type=submit]")
    page.wait_for_selector("#result_list")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "export_xlsx")
    with page.expect_download() as download_info:
        page.click("button[name=index]")
    download = download_info.value
    assert download.suggested_filename == "settlement-IN-DSP-2026-10.xlsx"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    sheet = openpyxl.load_workbook(saved).active
    header = [cell.value for cell in sheet[1]]
    row = dict(zip(header, [cell.value for cell in sheet[2]], strict=True))
    assert (row["partner"], row["party"], row["period"]) == ("Disputed CPO", "IN*DSP", "2026-10")
    assert int(row["cdr_count"]) == 1 and int(row["open_disputes"]) == 1

    # The console home, with a month of activity and a few EVSEs not heard from lately.
    partner = Partner.objects.get(party_id="CPA")
    seed_a_month(partner)
    stale = Evse.objects.filter(location__partner=partner).order_by("pk")[:5]
    Evse.objects.filter(pk__in=[e.pk for e in stale]).update(status_updated_at=timezone.now() - timedelta(hours=1))
    page.goto(f"{base}{reverse('admin:index')}")
    for section in ("sessions", "energy", "revenue-INR", "disputes", "freshness"):
        assert page.locator(f"#console-{section} svg.console-chart").is_visible(), section
    health_link = page.locator(f"#freshness-{partner.pk} a", has_text="health")
    assert health_link.get_attribute("href") == reverse("admin:emsp_partner_health", args=[partner.pk])
    bar = page.locator("#chart-sessions rect.bar").last
    assert bar.bounding_box()["height"] > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console-home.png"), full_page=True)

    assert browser_page.external_requests == []
