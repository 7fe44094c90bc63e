"""`manage.py settlement_report`: CSV on stdout, XLSX and per-CDR files, clear errors for bad input."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import Settlement
from tests.billing.factories import settlement_scenario
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def scenario() -> dict[str, Any]:
    return settlement_scenario()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("settlement_report", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_it_prints_the_csv_of_a_partners_month(scenario: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(run("--partner", "IN*CPA", "--period", "2026-10"))))

    assert [(r["party"], r["currency"], r["cdr_count"], r["cpo_billed_excl_vat"]) for r in rows] == [
        ("IN*CPA", "EUR", "7", "35.00"),
        ("IN*CPA", "INR", "2", "150.00"),
    ]
    assert Settlement.objects.filter(partner=scenario["partner"]).count() == 2


@pytest.mark.parametrize("partner", ["in*cpa", "CPO A", "cpo a"])
def test_it_finds_the_partner_by_party_or_name(scenario: dict[str, Any], partner: str) -> None:
    assert "IN*CPA" in run("--partner", partner, "--period", "2026-10")


def test_it_finds_the_partner_by_id(scenario: dict[str, Any]) -> None:
    assert "IN*CPA" in run("--partner", str(scenario["partner"].pk), "--period", "2026-10")


def test_it_reports_every_partner(scenario: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(run("--all-partners", "--period", "2026-10"))))

    assert sorted((r["party"], r["currency"]) for r in rows) == [
        ("IN*CPA", "EUR"),
        ("IN*CPA", "INR"),
        ("IN*CPB", "EUR"),
    ]


def test_it_reports_a_range_of_months(scenario: dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO(run("--partner", "IN*CPA", "--period", "2026-09..2026-11"))))

    assert [(r["period"], r["currency"]) for r in rows] == [
        ("2026-09", "EUR"),
        ("2026-10", "EUR"),
        ("2026-10", "INR"),
        ("2026-11", "EUR"),
    ]


def test_it_writes_xlsx_with_a_sheet_of_cdrs(scenario: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "october.xlsx"

    run("--partner", "IN*CPA", "--period", "2026-10", "--output", str(target), "--details")

    book = openpyxl.load_workbook(target)
    assert book.sheetnames == ["Settlement", "CDRs"]
    assert book["Settlement"]["F2"].value == "EUR"
    assert book["CDRs"].max_row == 10


def test_it_writes_csv_and_a_cdr_file_next_to_it(scenario: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "october.csv"

    run("--partner", "IN*CPA", "--period", "2026-10", "--output", str(target), "--details", "--format", "csv")

    assert len(list(csv.DictReader(target.open()))) == 2
    assert len(list(csv.DictReader((tmp_path / "october-cdrs.csv").open()))) == 9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partner", "IN*CPA", "--period", "2026-13"], "is not YYYY-MM"),
        (["--partner", "IN*CPA", "--period", "last month"], "is not YYYY-MM"),
        (["--partner", "XX*NOP", "--period", "2026-10"], "no partner"),
        (["--partner", "999999", "--period", "2026-10"], "no partner"),
        (["--partner", "Nobody", "--period", "2026-10"], "no partner"),
        (["--partner", "IN*CPA", "--period", "2026-10", "--format", "xlsx"], "XLSX needs --output"),
        (["--partner", "IN*CPA", "--period", "2026-10", "--details"], "--details needs --output"),
        (["--partner", "IN*CPA", "--period", "2026-10", "--output", "/nonexistent/dir/x.csv"], "cannot write"),
    ],
)
def test_it_refuses_bad_input_with_a_command_error(scenario: dict[str, Any], args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message) as caught:
        run(*args)

    assert caught.value.returncode == 2


def test_it_refuses_an_ambiguous_name(db: None) -> None:
    PartnerFactory(name="Twin", party_id="TW1")
    PartnerFactory(name="Twin", party_id="TW2")

    with pytest.raises(CommandError, match="more than one"):
        run("--partner", "Twin", "--period", "2026-10")


def test_it_needs_a_partner_or_all_partners(db: None) -> None:
    with pytest.raises(CommandError):
        run("--period", "2026-10")
