"""Settlement with a consumer app (BAP), read from the ledger: who collected, finder fees, net due and its date,
the account's balances, exports and `settlement_report --party bap:…`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import openpyxl
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing.models import BapAgreement
from billing.services import accounts, ledger
from billing.services.bap_settlement import (
    BapSettlementError,
    add_duration,
    bap_export_filename,
    bap_ids,
    bap_settlement_compute,
    bap_settlement_csv,
    bap_settlement_xlsx,
    bap_settlements_compute,
)
from tests.billing import bap_ledger
from tests.billing.bap_ledger import APP, OTHER_APP, at, d
from tests.billing.factories import settlement_scenario

pytestmark = pytest.mark.django_db

OCTOBER = {"period_start": date(2026, 10, 1), "period_end": date(2026, 11, 1)}


@pytest.fixture
def agreement() -> BapAgreement:
    return bap_ledger.october_of_app()


def october(bap_id: str = APP):  # type: ignore[no-untyped-def]
    return bap_settlement_compute(bap_id=bap_id, currency="INR", **OCTOBER)


def test_it_splits_what_the_app_and_we_collected(agreement: BapAgreement) -> None:
    s = october()

    assert s.charge_count == 3
    assert s.collected_by_bap == d("286.00")
    assert s.collected_by_us == d("177.00")
    assert s.billed_incl_vat == d("463.00")
    assert s.credits == d("-9.00")


def test_it_reads_the_finder_fees_kept_and_owed(agreement: BapAgreement) -> None:
    s = october()

    assert s.finder_fees_retained == d("14.75")
    assert s.finder_fees_owed == d("8.85")


def test_the_net_due_is_what_the_app_collected_less_all_its_fees(agreement: BapAgreement) -> None:
    s = october()

    assert s.net_due == d("262.40")
    assert s.net_due == s.collected_by_bap - s.finder_fees_retained - s.finder_fees_owed + s.other
    assert s.payer == "BAP"


def test_its_balances_agree_with_the_ledger(agreement: BapAgreement) -> None:
    s = october()
    receivable, payable = accounts.bap_receivable(APP, "INR"), accounts.bap_payable(APP, "INR")
    end = datetime(2026, 10, 31, 23, 59, 59, 999999, tzinfo=UTC)

    assert s.opening_balance == d("112.10")
    assert (s.paid_by_bap, s.paid_to_bap) == (d("112.10"), d("3.00"))
    assert s.closing_balance == d("265.40")
    assert s.closing_balance == ledger.balance(receivable, until=end) + ledger.balance(payable, until=end)


def test_the_due_date_is_the_period_end_plus_the_agreed_window(agreement: BapAgreement) -> None:
    assert october().due_date == date(2026, 11, 8)

    agreement.settlement_window = "P1M"
    agreement.save()

    assert october().due_date == date(2026, 12, 1)


def test_a_bap_without_an_agreement_gets_the_default_window(agreement: BapAgreement) -> None:
    s = october(OTHER_APP)

    assert (s.settlement_window, s.due_date, s.legal_name) == ("P7D", date(2026, 11, 8), "")
    assert (s.charge_count, s.collected_by_bap, s.net_due) == (1, d("45.90"), d("45.90"))


def test_it_groups_lines_by_reference_in_posting_order(agreement: BapAgreement) -> None:
    lines = {line.reference: line for line in october().lines}

    assert list(lines) == ["booking:2", "booking:3", "booking:4", "bap-payment:1", "bap-payout:1"]
    assert (lines["booking:3"].collected_by, lines["booking:3"].billed, lines["booking:3"].credits) == (
        "BAP",
        d("50.00"),
        d("-9.00"),
    )
    assert (lines["booking:3"].finder_fee, lines["booking:3"].net) == (d("2.95"), d("47.05"))
    assert (lines["booking:4"].collected_by, lines["booking:4"].net) == ("BPP", d("-8.85"))
    assert (lines["bap-payment:1"].paid, lines["bap-payout:1"].paid) == (d("112.10"), d("-3.00"))


def test_a_period_starts_and_ends_at_midnight(agreement: BapAgreement) -> None:
    september = bap_settlement_compute(
        bap_id=APP, currency="INR", period_start=date(2026, 9, 1), period_end=date(2026, 10, 1)
    )
    november = bap_settlement_compute(
        bap_id=APP, currency="INR", period_start=date(2026, 11, 1), period_end=date(2026, 12, 1)
    )

    assert [line.reference for line in september.lines] == ["booking:1"]
    assert november.opening_balance == d("265.40")
    assert [line.reference for line in november.lines] == ["booking:5"]


def test_a_reversed_charge_takes_itself_back(agreement: BapAgreement) -> None:
    entry = ledger.LedgerEntry.objects.get(reference="booking:2", event="charge")
    with bap_ledger.time_machine.travel(at(25), tick=False):
        ledger.reverse(entry)

    s = october()

    assert s.collected_by_bap == d("286.00") - d("236.00")
    assert s.charge_count == 3  # the charge happened; its reversal takes its amount back


def test_it_lists_every_app_with_ledger_accounts(agreement: BapAgreement) -> None:
    assert bap_ids() == [APP, OTHER_APP]
    settlements = bap_settlements_compute(**OCTOBER)

    assert [(s.bap_id, s.currency) for s in settlements] == [(APP, "INR"), (OTHER_APP, "INR")]


def test_an_app_with_nothing_outstanding_is_left_out(agreement: BapAgreement) -> None:
    assert bap_settlements_compute(period_start=date(2026, 8, 1), period_end=date(2026, 9, 1)) == []


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ("P7D", datetime(2026, 2, 7, tzinfo=UTC)),
        ("P2W", datetime(2026, 2, 14, tzinfo=UTC)),
        ("P1M", datetime(2026, 2, 28, tzinfo=UTC)),  # 31 Jan + 1 month: the end of February
        ("P1Y", datetime(2027, 1, 31, tzinfo=UTC)),
        ("PT48H", datetime(2026, 2, 2, tzinfo=UTC)),
        ("P1DT12H", datetime(2026, 2, 1, 12, tzinfo=UTC)),
        ("p10d", datetime(2026, 2, 10, tzinfo=UTC)),
    ],
)
def test_it_adds_an_iso_8601_window(window: str, expected: datetime) -> None:
    assert add_duration(datetime(2026, 1, 31, tzinfo=UTC), window) == expected


@pytest.mark.parametrize("window", ["", "P", "PT", "7D", "P7", "P-1D", "P1.5D", "next week", "P99999D"])
def test_it_refuses_a_malformed_window(window: str) -> None:
    with pytest.raises(BapSettlementError, match="window"):
        add_duration(datetime(2026, 1, 31, tzinfo=UTC), window)


def test_it_refuses_a_period_that_ends_before_it_starts() -> None:
    with pytest.raises(BapSettlementError):
        bap_settlement_compute(bap_id=APP, currency="INR", period_start=date(2026, 10, 1), period_end=date(2026, 9, 1))


# --- exports -------------------------------------------------------------------------------------------------


def test_the_csv_has_one_row_per_app_and_currency(agreement: BapAgreement) -> None:
    rows = list(csv.DictReader(io.StringIO(bap_settlement_csv(bap_settlements_compute(**OCTOBER)))))

    mine = rows[0]
    assert (mine["bap_id"], mine["period"], mine["currency"], mine["due_date"]) == (APP, "2026-10", "INR", "2026-11-08")
    assert (mine["collected_by_bap"], mine["collected_by_us"], mine["net_due"], mine["payer"]) == (
        "286.00",
        "177.00",
        "262.40",
        "BAP",
    )
    assert (mine["finder_fees_retained_by_bap"], mine["finder_fees_owed_to_bap"]) == ("14.75", "8.85")
    assert rows[1]["bap_id"] == OTHER_APP


def test_the_xlsx_has_a_sheet_of_lines(agreement: BapAgreement) -> None:
    book = openpyxl.load_workbook(io.BytesIO(bap_settlement_xlsx([october()], include_lines=True)))

    assert book.sheetnames == ["BAP settlement", "Lines"]
    assert book["Lines"].max_row == 1 + 5
    assert [c.value for c in book["Lines"][1]][:4] == ["bap_id", "period", "currency", "reference"]


def test_app_text_cannot_become_a_formula() -> None:
    BapAgreement.objects.create(bap_id="=cmd()", legal_name="@SUM(A1)")
    bap_ledger.charge(at(2), reference="booking:x", cpo="1.00", fee="0.10", vat="0.02", bap_id="=cmd()")

    row = next(csv.DictReader(io.StringIO(bap_settlement_csv(bap_settlements_compute(**OCTOBER)))))

    assert (row["bap_id"], row["legal_name"]) == ("'=cmd()", "'@SUM(A1)")


def test_the_file_name_names_the_app_and_the_period(agreement: BapAgreement) -> None:
    assert bap_export_filename([october()], "csv") == "bap-settlement-app.example.com-2026-10.csv"


# --- manage.py settlement_report --party ----------------------------------------------------------------------


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("settlement_report", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_prints_an_apps_settlement(agreement: BapAgreement) -> None:
    rows = list(csv.DictReader(io.StringIO(run("--party", f"bap:{APP}", "--period", "2026-10"))))

    assert [(r["bap_id"], r["currency"], r["net_due"], r["closing_balance"]) for r in rows] == [
        (APP, "INR", "262.40", "265.40")
    ]


def test_the_command_reports_every_app_over_months(agreement: BapAgreement) -> None:
    rows = list(csv.DictReader(io.StringIO(run("--party", "bap:*", "--period", "2026-09..2026-11"))))

    assert [(r["bap_id"], r["period"]) for r in rows] == [
        (APP, "2026-09"),
        (APP, "2026-10"),
        (OTHER_APP, "2026-10"),
        (APP, "2026-11"),
        (OTHER_APP, "2026-11"),  # nothing happened, but it still owes us October's
    ]


def test_the_command_writes_xlsx_and_csv_lines(agreement: BapAgreement, tmp_path: Path) -> None:
    run("--party", f"bap:{APP}", "--period", "2026-10", "--output", str(tmp_path / "app.xlsx"), "--details")
    run("--party", f"bap:{APP}", "--period", "2026-10", "--output", str(tmp_path / "app.csv"), "--details")

    assert openpyxl.load_workbook(tmp_path / "app.xlsx").sheetnames == ["BAP settlement", "Lines"]
    lines = list(csv.DictReader((tmp_path / "app-lines.csv").open()))
    assert [r["reference"] for r in lines][:3] == ["booking:2", "booking:3", "booking:4"]


@pytest.mark.parametrize("party", ["cpo:IN*CPA", "cpo:in*cpa", "IN*CPA", "CPO A"])
def test_the_command_still_reports_a_cpo_by_party(party: str) -> None:
    settlement_scenario()

    rows = list(csv.DictReader(io.StringIO(run("--party", party, "--period", "2026-10"))))

    assert [(r["party"], r["currency"]) for r in rows] == [("IN*CPA", "EUR"), ("IN*CPA", "INR")]


@pytest.mark.parametrize(
    ("party", "message"),
    [("bap:nobody.example", "no BAP"), ("bap:", "no BAP"), ("cpo:XX*NOP", "no partner")],
)
def test_the_command_refuses_an_unknown_party(agreement: BapAgreement, party: str, message: str) -> None:
    with pytest.raises(CommandError, match=message) as caught:
        run("--party", party, "--period", "2026-10")

    assert caught.value.returncode == 2


def test_the_command_refuses_an_app_with_a_malformed_window(agreement: BapAgreement) -> None:
    agreement.settlement_window = "a week"
    agreement.save()

    with pytest.raises(CommandError, match="not an ISO 8601 duration"):
        run("--party", f"bap:{APP}", "--period", "2026-10")


def test_amounts_are_decimal_not_float(agreement: BapAgreement) -> None:
    s = october()

    assert all(isinstance(v, Decimal) for v in (s.net_due, s.collected_by_bap, s.closing_balance))
