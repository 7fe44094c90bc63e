"""Documents are dated and numbered in the legal entity's time zone (settings.DOCUMENTS_TIME_ZONE, Asia/Kolkata by
default), not the deployment's TIME_ZONE (UTC): a receipt issued at 20:00 UTC on 31 December is dated 1 January
2027 in India and numbered in 2027's sequence; a statement prints its times there too; an unknown zone name
stops the settings from loading, naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.test import override_settings

from billing.models import CdrAudit, DocumentSequence, IssuedDocument
from billing.services import documents
from billing.services.settlement import settlement_close, settlement_compute
from tests.billing.factories import CdrAuditFactory, CdrFactory, DriverReceiptFactory
from tests.billing.test_documents import charge_receipt, pdf_text
from tests.factories import DriverFactory, PartnerFactory

REPO = Path(__file__).resolve().parents[2]
ENTITY = settings.LEGAL_ENTITY_CODE
NEW_YEARS_EVE_UTC = datetime(2026, 12, 31, 20, 0, tzinfo=UTC)  # 2027-01-01 01:30 in Asia/Kolkata
Kind = IssuedDocument.Kind


def text_of(document: IssuedDocument) -> str:
    """The PDF's text, each run of whitespace one space (the facts' labels and values are table cells)."""
    return " ".join(pdf_text(bytes(document.pdf)).split())


def test_the_default_is_the_legal_entitys_zone() -> None:
    assert settings.DOCUMENTS_TIME_ZONE == "Asia/Kolkata"
    assert settings.TIME_ZONE == "UTC"


@pytest.mark.django_db
def test_a_receipt_issued_before_midnight_utc_on_31_december_is_in_the_next_years_sequence_and_dated_so() -> None:
    late = DriverReceiptFactory(
        cdr=CdrFactory(currency="INR", total_cost_excl_vat=Decimal(100), total_cost_incl_vat=Decimal(118)),
        driver=DriverFactory(name="Ravi Iyer"),
        cpo_vat=Decimal(18),
    )
    with time_machine.travel(NEW_YEARS_EVE_UTC - timedelta(hours=2), tick=False):  # 23:30 in India: still 2026
        still_2026 = documents.issue_receipt(late)
    receipt = charge_receipt()
    with time_machine.travel(NEW_YEARS_EVE_UTC, tick=False):
        document = documents.issue_receipt(receipt)
    text = text_of(document)

    assert still_2026.number == f"{ENTITY}-RC-2026-000001"
    assert document.number == f"{ENTITY}-RC-2027-000001"
    assert DocumentSequence.objects.get(entity=ENTITY, kind=Kind.RECEIPT, year=2027).last == 1
    assert document.issued_at == NEW_YEARS_EVE_UTC  # stored as the instant, aware
    for expected in (
        "Issued 2027-01-01 01:30 IST",
        "Date 2027-01-01",
        "2026-10-15 23:40 IST",  # the charge started at 18:10 UTC
        "2026-10-16 01:15 IST (1 h 35 min)",  # and ended at 19:45 UTC
        "Times are in Asia/Kolkata.",
    ):
        assert expected in text, expected
    assert "2026-12-31" not in text and "UTC" not in text


@pytest.mark.django_db
def test_a_credit_note_is_dated_and_numbered_in_the_same_zone() -> None:
    receipt = charge_receipt()
    with time_machine.travel(NEW_YEARS_EVE_UTC - timedelta(days=1), tick=False):
        original = documents.issue_receipt(receipt)
    with time_machine.travel(NEW_YEARS_EVE_UTC, tick=False):
        note = documents.issue_receipt(charge_receipt(credit_of=receipt))
    text = text_of(note)

    assert original.number == f"{ENTITY}-RC-2026-000001"
    assert note.number == f"{ENTITY}-CN-2027-000001"
    assert "Date 2027-01-01" in text and "Issued 2027-01-01 01:30 IST" in text


@pytest.mark.django_db
@override_settings(DOCUMENTS_TIME_ZONE="UTC")
def test_the_setting_decides_the_zone() -> None:
    with time_machine.travel(NEW_YEARS_EVE_UTC, tick=False):
        document = documents.issue_receipt(charge_receipt())
    text = text_of(document)

    assert document.number == f"{ENTITY}-RC-2026-000001"
    assert "Issued 2026-12-31 20:00 UTC" in text and "Times are in UTC." in text


@pytest.mark.django_db
def test_the_cpo_statement_prints_its_times_in_the_zone_and_says_where_the_period_ends() -> None:
    partner = PartnerFactory(name="CPO K", country_code="IN", party_id="CPK")
    cdr = CdrFactory(
        partner=partner,
        cdr_id="LATE-31",
        currency="INR",
        end_date_time=datetime(2026, 10, 31, 20, 0, tzinfo=UTC),  # October's (UTC) last evening
        total_cost_excl_vat=Decimal(100),
        total_cost_incl_vat=Decimal(118),
    )
    CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.MATCHED)
    (october,) = settlement_compute(partner=partner, period_start=date(2026, 10, 1))
    settlement = settlement_close(settlement=october, user=None)
    with time_machine.travel(datetime(2026, 11, 3, 9, 30, tzinfo=UTC), tick=False):
        document = documents.issue_cpo_statement(settlement)
    text = text_of(document)

    for expected in (
        "Issued 2026-11-03 15:00 IST",
        "Ended (Asia/Kolkata)",
        "2026-11-01 01:30",
        "Times are in Asia/Kolkata. The period runs from midnight to midnight UTC.",
    ):
        assert expected in text, expected


def load_settings(zone: str) -> subprocess.CompletedProcess[str]:
    """The settings imported in a fresh process with DOCUMENTS_TIME_ZONE set."""
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.DOCUMENTS_TIME_ZONE)"],
        cwd=REPO,
        env={
            "PATH": os.environ.get("PATH", ""),
            "DJANGO_SETTINGS_MODULE": "emsp.settings",
            "DJANGO_ENV": "development",
            "DOCUMENTS_TIME_ZONE": zone,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("zone", ["Mars/Olympus", "asia/kolkata", "../../etc/passwd", "", "zone.tab"])
def test_an_unknown_zone_is_refused_at_startup_naming_the_setting(zone: str) -> None:
    refused = load_settings(zone)
    assert refused.returncode != 0
    assert "ImproperlyConfigured: DOCUMENTS_TIME_ZONE must be a time zone of the IANA database" in refused.stderr


def test_a_known_zone_is_taken() -> None:
    loaded = load_settings("Europe/Berlin")
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "Europe/Berlin"
