"""A settlement's figures beside the ledger and the documents we issue: a charge voided by a credit CDR leaves no
margin, VAT nor charge to drivers (the ledger gives back our fee and its VAT, the credit note states it); partial
credits that together void a charge settle as one voiding credit; a period's ledger_payable is what the ledger
booked for its CDRs, whenever it was posted; the CDR sheet's lines add up to the summary."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db.models import Sum
from django.utils import timezone

from billing import dashboard
from billing.models import Cdr, CdrAudit, IssuedDocument, LedgerLine, Settlement
from billing.services import accounts, documents, payments
from billing.services.ledger import from_minor
from billing.services.settlement import (
    settlement_cdrs_csv,
    settlement_close,
    settlement_compute,
    settlement_csv,
    settlement_dataset,
    settlement_report_rows,
    voiding_credits,
)
from emsp.models import Partner
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_payments_journey import BILL, FEE, FEE_VAT, balance
from tests.billing.factories import (
    CdrAuditFactory,
    CdrFactory,
    CreditCdrFactory,
    DriverReceiptFactory,
    PartnerTermsFactory,
)
from tests.billing.test_cdr_booking_links import charged, credit_for, store, wallet, wallet_driver
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

OCTOBER, NOVEMBER = date(2026, 10, 1), date(2026, 11, 1)
VAT = "tax:VAT-18:payable"
SHEET_TO_SUMMARY = {
    "energy_kwh": "energy_kwh",
    "cpo_billed_excl_vat": "cpo_billed_excl_vat",
    "cpo_billed_incl_vat": "cpo_billed_incl_vat",
    "computed_excl_vat": "computed_excl_vat",
    "charged_to_driver": "charged_to_drivers",
    "margin_excl_vat": "margin_excl_vat",
    "vat_collected": "vat_collected",
}


def summary_and_sheet(settlement: Settlement) -> tuple[dict[str, str], list[dict[str, str]]]:
    (summary,) = csv.DictReader(io.StringIO(settlement_csv([settlement])))
    return summary, list(csv.DictReader(io.StringIO("".join(settlement_cdrs_csv([settlement])))))


def assert_sheet_adds_up(settlement: Settlement) -> None:
    """Every column the summary totals is the sum of the sheet's lines (a blank line adds 0)."""
    summary, lines = summary_and_sheet(settlement)
    for column, total in SHEET_TO_SUMMARY.items():
        assert Decimal(summary[total]) == sum((Decimal(line[column] or "0") for line in lines), Decimal(0)), column


def this_month() -> date:
    return timezone.now().date().replace(day=1)


def revenue_today() -> tuple[Decimal, Decimal]:
    """The console home's revenue and margin of today, in INR."""
    (inr,) = [r for r in dashboard.revenue_per_day(dashboard.window_of()) if r.currency == "INR"]
    return inr.revenue[-1], inr.margin[-1]


def voided(partner: Partner, credits: list[tuple[str, str]], **carried: date) -> Cdr:
    """An October CDR of 380 / 448.40 INR and 20 kWh, repriced at 380 (MATCHED), and credit CDRs of it (excl.,
    incl. VAT); `carried` maps a credit's index ("c1") to the period it was carried to."""
    original = CdrFactory(partner=partner, currency="INR", total_cost_excl_vat=Decimal("380"),
                          total_cost_incl_vat=Decimal("448.40"), total_energy=Decimal("20"))  # fmt: skip
    CdrAuditFactory(cdr=original)
    for n, (excl, incl) in enumerate(credits):
        credit = CreditCdrFactory(credited_cdr=original, cdr_id=f"{original.cdr_id}-C{n}",
                                  carried_to=carried.get(f"c{n}"), total_cost_excl_vat=Decimal(excl),
                                  total_cost_incl_vat=Decimal(incl))  # fmt: skip
        CdrAuditFactory(cdr=credit, status=CdrAudit.Status.CREDIT)
    return original


def settled(partner: Partner, period_start: date = OCTOBER) -> tuple[Settlement, list[Any]]:
    (s,) = settlement_compute(partner=partner, period_start=period_start)
    (row,) = settlement_report_rows([s])
    return s, row


# --- 1. a voided charge keeps none of our fee ---------------------------------------------------------------------


@pytest.mark.we_collect
def test_a_charge_voided_by_a_credit_cdr_leaves_no_margin_vat_nor_charge_in_the_settlement(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    (s,) = settlement_compute(partner=first.partner, period_start=this_month())
    assert (s.charged_to_drivers, s.margin_excl_vat) == (BILL, FEE)
    assert revenue_today() == (BILL, FEE)

    credit = store(bap, network, credit_for(first, "CDR-1-C"))
    assert wallet(driver) == Decimal("1000")  # the ledger gave all of it back, our fee and its VAT too
    assert balance("revenue:fees") == 0 and balance(VAT) == 0
    # The credit note states and totals what the ledger refunded; its receipt row keeps no fee of ours.
    note = documents.issue_receipt(credit.receipt)
    assert note.total == -BILL
    assert payments.fee_given_back(credit.receipt) == (FEE, FEE_VAT)
    assert (credit.receipt.fee_excl_vat, credit.receipt.total_incl_vat) == (0, Decimal("-448.40"))
    assert sum(IssuedDocument.objects.values_list("total", flat=True)) == 0

    (s,) = settlement_compute(partner=first.partner, period_start=this_month())
    # 12.60 of margin, 14.87 charged and 2.27 of VAT had stayed: the credit's receipt carries no fee
    assert s.cpo_billed_incl_vat == 0
    assert s.margin_excl_vat == -balance("revenue:fees") == 0
    assert s.vat_collected == 0
    assert s.charged_to_drivers == 0
    assert_sheet_adds_up(s)
    assert revenue_today() == (0, 0)


@pytest.mark.we_collect
def test_partial_credits_that_void_a_charge_give_back_all_of_the_margin_in_the_settlement(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    for cdr_id, total in (("CDR-1-C1", {"excl_vat": -300, "incl_vat": -354}),
                          ("CDR-1-C2", {"excl_vat": -80, "incl_vat": -94.40})):  # fmt: skip
        store(bap, network, {**credit_for(first, cdr_id), "total_cost": total})
    assert balance("cpo:IN*CPA:payable") == 0 and balance("revenue:fees") == 0  # the ledger: voided
    s, row = settled(first.partner, this_month())
    assert (s.cpo_billed_excl_vat, s.energy_kwh, s.computed_excl_vat, row[12]) == (0, 0, 0, 0)
    assert (s.margin_excl_vat, s.vat_collected, s.charged_to_drivers) == (0, 0, 0)
    assert_sheet_adds_up(s)


# --- 2. a void split in several credit CDRs -----------------------------------------------------------------------


def test_two_partial_credits_that_void_a_charge_settle_as_one_voiding_credit() -> None:
    one, two = PartnerFactory(country_code="IN", party_id="CPA"), PartnerFactory(country_code="IN", party_id="CPB")
    PartnerTermsFactory(partner=one)
    PartnerTermsFactory(partner=two)
    voided(one, [("-380", "-448.40")])
    voided(two, [("-300", "-354"), ("-80", "-94.40")])  # mod_cdrs allows several credits of one CDR
    (by_one, one_row), (by_two, two_row) = settled(one), settled(two)
    assert (by_one.cpo_billed_excl_vat, by_one.computed_excl_vat, by_one.energy_kwh, one_row[12]) == (0, 0, 0, 0)
    # 380 of our price and 20 kWh had stayed for a charge that no longer exists: a difference of -380.00
    assert (by_two.cpo_billed_excl_vat, by_two.computed_excl_vat, by_two.energy_kwh, two_row[12]) == (0, 0, 0, 0)
    assert_sheet_adds_up(by_two)


def test_a_free_charge_voided_by_its_credit_cdr_takes_its_energy_off() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    PartnerTermsFactory(partner=partner)
    original = CdrFactory(partner=partner, currency="INR", total_cost_excl_vat=Decimal("0"),
                          total_cost_incl_vat=Decimal("0"), total_energy=Decimal("20"))  # fmt: skip
    CdrAuditFactory(cdr=original, computed_excl_vat=Decimal("0"))
    credit = CreditCdrFactory(credited_cdr=original, cdr_id="FREE-C", total_cost_excl_vat=Decimal("0"),
                              total_cost_incl_vat=Decimal("0"))  # fmt: skip
    CdrAuditFactory(cdr=credit, status=CdrAudit.Status.CREDIT)
    again = CreditCdrFactory(credited_cdr=original, cdr_id="FREE-C2", total_cost_excl_vat=Decimal("0"),
                             total_cost_incl_vat=Decimal("0"))  # fmt: skip
    CdrAuditFactory(cdr=again, status=CdrAudit.Status.CREDIT)

    # As the ledger takes it (payments._fee_given_back_in_all: left <= 0), voided by the first credit, once.
    assert list(voiding_credits(Cdr.objects.all())) == [credit]
    (s, _) = settled(partner)
    assert s.energy_kwh == 0
    assert_sheet_adds_up(s)


def test_a_void_is_taken_off_once_in_the_period_of_the_credit_that_completes_it() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    PartnerTermsFactory(partner=partner)
    voided(partner, [("-300", "-354"), ("-80", "-94.40"), ("-5", "-5.90")], c1=NOVEMBER, c2=NOVEMBER)
    october, october_row = settled(partner)
    assert (october.cpo_billed_excl_vat, october.computed_excl_vat, october.energy_kwh) == (80, 380, 20)
    assert october_row[12] == -300  # the price corrected by -300: not voided yet, still ours to reprice
    november, november_row = settled(partner, NOVEMBER)
    # -80 completes the void (its original's 380 and 20 kWh come off here, once); -5 beyond it takes nothing more
    assert (november.cpo_billed_excl_vat, november.computed_excl_vat, november.energy_kwh) == (-85, -380, -20)
    assert november_row[12] == 295
    assert_sheet_adds_up(october)
    assert_sheet_adds_up(november)


def test_a_price_correcting_credit_takes_nothing_off_and_its_sheet_line_adds_nothing() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    PartnerTermsFactory(partner=partner)
    voided(partner, [("-80", "-94.40")])
    s, row = settled(partner)
    assert (s.cpo_billed_excl_vat, s.computed_excl_vat, s.energy_kwh, row[12]) == (300, 380, 20, -80)
    assert_sheet_adds_up(s)


# --- 3. ledger_payable: what the ledger booked for the period's CDRs ----------------------------------------------


def test_the_ledger_payable_of_a_period_counts_a_cdr_booked_after_the_period_ended() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPR")
    PartnerTermsFactory(partner=partner, rounding="HALF_UP")
    cdr = CdrFactory(partner=partner, currency="INR", end_date_time=datetime(2026, 10, 31, 23, 50, tzinfo=UTC),
                     total_cost_excl_vat=Decimal("10"), total_cost_incl_vat=Decimal("11.80"))  # fmt: skip
    CdrAuditFactory(cdr=cdr)
    receipt = DriverReceiptFactory(cdr=cdr, cpo_vat=Decimal("1.80"))
    with time_machine.travel(datetime(2026, 11, 1, 0, 5, tzinfo=UTC), tick=False):  # received and booked 15' later
        payments.bill(receipt)
    with time_machine.travel(datetime(2026, 11, 3, tzinfo=UTC), tick=False):
        (october,) = settlement_compute(partner=partner, period_start=OCTOBER)
        october = settlement_close(settlement=october, user=None)
        statement = documents.issue_cpo_statement(october)
    with time_machine.travel(datetime(2026, 12, 3, tzinfo=UTC), tick=False):
        assert settlement_compute(partner=partner, period_start=NOVEMBER) == []  # no CDR of November

    booked = LedgerLine.objects.filter(account=accounts.cpo_payable("IN*CPR", "INR")).aggregate(t=Sum("amount_minor"))
    assert statement.total == -from_minor(booked["t"], "INR") == Decimal("11.80")
    assert october.ledger_payable == statement.total  # 0.00 by posting date, with the 11.80 in no period


# --- 4. the CDR sheet adds up to the summary ----------------------------------------------------------------------


def test_the_cdr_sheet_of_a_voided_charge_adds_up_to_the_summary() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    PartnerTermsFactory(partner=partner)
    original = voided(partner, [("-380", "-448.40")])
    s, _ = settled(partner)
    summary, lines = summary_and_sheet(s)
    assert (Decimal(summary["computed_excl_vat"]), Decimal(summary["energy_kwh"])) == (0, 0)
    by_id = {line["cdr_id"]: line for line in lines}

    def line(cdr_id: str) -> tuple[Decimal, Decimal]:
        return Decimal(by_id[cdr_id]["computed_excl_vat"] or "0"), Decimal(by_id[cdr_id]["energy_kwh"])

    assert line(original.cdr_id) == (380, 20)
    # the credit's line had repeated the original's 20 kWh and left the repricing blank: 380 and 40 kWh in all
    assert line(f"{original.cdr_id}-C0") == (-380, -20)
    assert_sheet_adds_up(s)
    _, sheet = settlement_dataset([s], include_cdrs=True).sheets()  # the XLSX's sheet of CDRs: the same lines
    assert sum(sheet["energy_kwh"]) == 0 and sum(x or 0 for x in sheet["computed_excl_vat"]) == 0
