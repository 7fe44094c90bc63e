"""Settlement exports: CSV and XLSX summaries rounded per currency and policy, per-CDR detail rows."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from typing import Any

import openpyxl
import pytest

from billing.models import PartnerTerms
from billing.services.settlement import (
    CDR_HEADERS,
    SUMMARY_HEADERS,
    settlement_cdrs_csv,
    settlement_compute,
    settlement_csv,
    settlement_dataset,
    settlement_xlsx,
)
from tests.billing.factories import CdrFactory, settlement_scenario

pytestmark = pytest.mark.django_db

OCTOBER = date(2026, 10, 1)


@pytest.fixture
def settlements() -> list[Any]:
    scenario = settlement_scenario()
    return settlement_compute(partner=scenario["partner"], period_start=OCTOBER)


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_it_exports_the_summary_as_csv_rounded_per_currency(settlements: list[Any]) -> None:
    rows = csv_rows(settlement_csv(settlements))

    assert [r["currency"] for r in rows] == ["EUR", "INR"]
    eur = rows[0]
    assert eur["partner"] == "CPO A"
    assert eur["party"] == "IN*CPA"
    assert eur["period"] == "2026-10"
    assert eur["period_start"] == "2026-10-01"
    assert eur["period_end_exclusive"] == "2026-11-01"
    assert eur["state"] == "OPEN"
    assert eur["cdr_count"] == "7"
    assert eur["energy_kwh"] == "73.0000"
    assert eur["cpo_billed_excl_vat"] == "35.00"
    assert eur["cpo_billed_incl_vat"] == "40.13"
    assert eur["computed_excl_vat"] == "34.50"
    assert eur["difference_excl_vat"] == "0.50"
    assert eur["disputed_excl_vat"] == "2.50"
    assert eur["open_disputes"] == "2"
    assert eur["charged_to_drivers"] == "29.61"
    assert eur["margin_excl_vat"] == "2.90"
    assert eur["vat_collected"] == "4.71"  # each CDR's VAT rounded to cents, as the ledger books it (4.702 exact)
    assert eur["closed_at"] == ""
    assert rows[1]["state"] == "RECONCILED"
    assert rows[1]["vat_collected"] == "19.80"


def test_it_rounds_with_the_partners_policy(settlements: list[Any]) -> None:
    PartnerTerms.objects.filter(partner=settlements[0].partner).update(rounding="UP")

    (eur, _) = csv_rows(settlement_csv(settlements))

    assert eur["vat_collected"] == "4.71"


def test_it_rounds_to_the_currencys_minor_unit(db: None) -> None:
    cdr = CdrFactory(currency="JPY", total_cost_excl_vat=Decimal("1234.5"), total_cost_incl_vat=Decimal("1358"))

    (row,) = csv_rows(settlement_csv(settlement_compute(partner=cdr.partner, period_start=OCTOBER)))

    assert row["cpo_billed_excl_vat"] == "1235"


def test_it_keeps_partner_text_from_becoming_a_formula(db: None) -> None:
    cdr = CdrFactory(partner__name="=HYPERLINK(1)", cdr_id="@SUM(A1)")
    settlements = settlement_compute(partner=cdr.partner, period_start=OCTOBER)

    (row,) = csv_rows(settlement_csv(settlements))
    (detail,) = csv_rows("".join(settlement_cdrs_csv(settlements)))

    assert row["partner"] == "'=HYPERLINK(1)"
    assert detail["cdr_id"] == "'@SUM(A1)"


def test_it_exports_the_summary_as_xlsx(settlements: list[Any]) -> None:
    book = openpyxl.load_workbook(io.BytesIO(settlement_xlsx(settlements)))

    sheet = book.active
    assert sheet.title == "Settlement"
    header = [c.value for c in sheet[1]]
    assert header == SUMMARY_HEADERS
    eur = dict(zip(header, [c.value for c in sheet[2]], strict=True))
    assert eur["party"] == "IN*CPA"
    assert eur["currency"] == "EUR"
    assert eur["cdr_count"] == 7
    assert Decimal(str(eur["cpo_billed_excl_vat"])) == Decimal("35.00")
    assert Decimal(str(eur["charged_to_drivers"])) == Decimal("29.61")
    assert Decimal(str(eur["vat_collected"])) == Decimal("4.71")
    assert eur["state"] == "OPEN"
    assert sheet.max_row == 3


def test_it_adds_a_sheet_of_cdrs_to_the_xlsx(settlements: list[Any]) -> None:
    book = openpyxl.load_workbook(io.BytesIO(settlement_xlsx(settlements, include_cdrs=True)))

    assert book.sheetnames == ["Settlement", "CDRs"]
    sheet = book["CDRs"]
    assert [c.value for c in sheet[1]] == CDR_HEADERS
    rows = [dict(zip(CDR_HEADERS, [c.value for c in row], strict=True)) for row in sheet.iter_rows(min_row=2)]
    assert len(rows) == 9  # 7 EUR + 2 INR
    eur2 = next(r for r in rows if r["cdr_id"] == "EUR-2")
    assert eur2["audit_status"] == "MISMATCH"
    assert eur2["dispute_state"] == "OPEN"
    assert Decimal(str(eur2["dispute_difference"])) == Decimal("1.50")
    assert Decimal(str(eur2["charged_to_driver"])) == Decimal("15.70")


def test_it_streams_the_cdr_csv_in_chunks_with_one_header(settlements: list[Any]) -> None:
    pieces = list(settlement_cdrs_csv(settlements, chunk_size=2))

    assert len(pieces) == 1 + 5  # the header, then 9 rows in chunks of 2
    rows = csv_rows("".join(pieces))
    assert len(rows) == 9
    credit = next(r for r in rows if r["cdr_id"] == "EUR-6-C")
    assert credit["credit"] == "True"
    assert credit["credit_reference_id"] == "EUR-6"
    assert credit["cpo_billed_excl_vat"] == "-7.00"
    assert credit["audit_status"] == "CREDIT"
    assert credit["charged_to_driver"] == "-8.33"
    assert [r["end_date_time"] for r in rows[:1]] == ["2026-10-01T00:00:00Z"]


def test_it_builds_a_dataset_of_the_summary(settlements: list[Any]) -> None:
    dataset = settlement_dataset(settlements)

    assert dataset.headers == SUMMARY_HEADERS
    assert dataset.height == 2
    assert dataset["cpo_billed_excl_vat"] == [Decimal("35.00"), Decimal("150.00")]
