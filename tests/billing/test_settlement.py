"""Settlement figures, reconciliation state and closing, on a hand-built month of CDRs."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from billing.models import CdrAudit, Dispute, Settlement
from billing.services.settlement import (
    SettlementError,
    next_month,
    parse_period,
    settlement_close,
    settlement_compute,
    settlements_compute,
)
from tests.billing.factories import (
    CdrAuditFactory,
    CdrFactory,
    DisputeFactory,
    SettlementFactory,
    at,
    settlement_scenario,
)
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

OCTOBER = date(2026, 10, 1)


@pytest.fixture
def scenario() -> dict[str, Any]:
    return settlement_scenario()


def by_currency(settlements: list[Settlement]) -> dict[str, Settlement]:
    return {s.currency: s for s in settlements}


def test_it_computes_every_figure_of_a_month_per_currency(scenario: dict[str, Any]) -> None:
    rows = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))

    assert set(rows) == {"EUR", "INR"}
    eur = rows["EUR"]
    assert (eur.period_start, eur.period_end) == (date(2026, 10, 1), date(2026, 11, 1))
    assert eur.cdr_count == 7
    assert eur.energy_kwh == Decimal("73.0000")
    assert eur.cpo_billed_excl_vat == Decimal("35.0000")
    assert eur.cpo_billed_incl_vat == Decimal("40.1300")
    assert eur.computed_excl_vat == Decimal("34.5000")
    assert eur.disputed_excl_vat == Decimal("2.5000")
    assert eur.open_disputes == 2
    assert eur.charged_to_drivers == Decimal("29.6100")
    assert eur.margin_excl_vat == Decimal("2.9000")
    assert eur.vat_collected == Decimal("4.7020")
    assert eur.state == Settlement.State.OPEN
    assert eur.computed_at is not None

    inr = rows["INR"]
    assert inr.cdr_count == 2
    assert inr.energy_kwh == Decimal("18.5000")
    assert inr.cpo_billed_excl_vat == Decimal("150.0000")
    assert inr.cpo_billed_incl_vat == Decimal("177.0000")
    assert inr.computed_excl_vat == Decimal("145.0000")
    assert inr.disputed_excl_vat == Decimal("0")
    assert inr.open_disputes == 0
    assert inr.charged_to_drivers == Decimal("129.8000")
    assert inr.margin_excl_vat == Decimal("10.0000")
    assert inr.vat_collected == Decimal("19.8000")
    assert inr.state == Settlement.State.RECONCILED


def test_it_stores_one_row_per_currency_and_recomputes_in_place(scenario: dict[str, Any]) -> None:
    first = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))
    CdrFactory(partner=scenario["partner"], cdr_id="EUR-LATE", total_cost_excl_vat=Decimal("2.5"))

    again = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))

    assert Settlement.objects.count() == 2
    assert again["EUR"].pk == first["EUR"].pk
    assert again["EUR"].cdr_count == 8
    assert again["EUR"].cpo_billed_excl_vat == Decimal("37.5000")


def test_it_counts_a_voiding_credit_against_its_original(db: None) -> None:
    from tests.billing.factories import CreditCdrFactory

    original = CdrFactory(total_cost_excl_vat=Decimal("7"), total_energy=Decimal("10"))
    CdrAuditFactory(cdr=original)
    credit = CreditCdrFactory(credited_cdr=original)
    CdrAuditFactory(cdr=credit, status=CdrAudit.Status.CREDIT)

    (row,) = settlement_compute(partner=original.partner, period_start=OCTOBER)

    assert row.cdr_count == 2
    assert (row.cpo_billed_excl_vat, row.computed_excl_vat, row.energy_kwh) == (0, 0, 0)
    assert row.state == Settlement.State.RECONCILED


def test_it_leaves_cdrs_outside_the_period_out(scenario: dict[str, Any]) -> None:
    september = by_currency(settlement_compute(partner=scenario["partner"], period_start=date(2026, 9, 1)))
    november = by_currency(settlement_compute(partner=scenario["partner"], period_start=date(2026, 11, 1)))

    assert september["EUR"].cdr_count == 1
    assert september["EUR"].cpo_billed_excl_vat == Decimal("1000.0000")
    assert november["EUR"].cdr_count == 1
    assert november["EUR"].open_disputes == 1


def test_it_computes_a_custom_period(scenario: dict[str, Any]) -> None:
    (eur,) = [
        s
        for s in settlement_compute(
            partner=scenario["partner"], period_start=date(2026, 10, 1), period_end=date(2026, 10, 2)
        )
        if s.currency == "EUR"
    ]

    assert eur.cdr_count == 1  # only EUR-1, which ended at midnight on the 1st
    assert eur.period_end == date(2026, 10, 2)


def test_it_reconciles_once_the_open_disputes_are_resolved(scenario: dict[str, Any]) -> None:
    Dispute.objects.filter(cdr__in=[scenario["c2"], scenario["c3"]]).update(state=Dispute.State.ACCEPTED)

    rows = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))

    assert rows["EUR"].state == Settlement.State.RECONCILED
    assert rows["EUR"].open_disputes == 0
    assert rows["EUR"].disputed_excl_vat == 0


def test_it_stays_open_while_a_cdr_needs_review(db: None) -> None:
    review = CdrFactory()
    CdrAuditFactory(cdr=review, status=CdrAudit.Status.REVIEW)

    (row,) = settlement_compute(partner=review.partner, period_start=OCTOBER)

    assert row.open_disputes == 0
    assert row.state == Settlement.State.OPEN


def test_it_stays_open_while_a_cdr_is_not_audited(db: None) -> None:
    matched = CdrFactory()
    CdrAuditFactory(cdr=matched)
    CdrFactory(partner=matched.partner)

    (row,) = settlement_compute(partner=matched.partner, period_start=OCTOBER)

    assert row.state == Settlement.State.OPEN


def test_it_reconciles_a_mismatch_whose_dispute_was_accepted(db: None) -> None:
    cdr = CdrFactory(total_cost_excl_vat=Decimal("12"))
    CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("10"))
    DisputeFactory(cdr=cdr, state=Dispute.State.ACCEPTED)

    (row,) = settlement_compute(partner=cdr.partner, period_start=OCTOBER)

    assert row.state == Settlement.State.RECONCILED
    assert row.cpo_billed_excl_vat - row.computed_excl_vat == Decimal("2")


def test_it_does_not_rewrite_a_closed_period(scenario: dict[str, Any]) -> None:
    rows = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))
    Settlement.objects.filter(pk=rows["INR"].pk).update(state=Settlement.State.CLOSED)
    CdrFactory(partner=scenario["partner"], currency="INR", cdr_id="INR-LATE")

    again = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))

    assert again["INR"].state == Settlement.State.CLOSED
    assert again["INR"].cdr_count == 2


def test_it_removes_an_open_row_of_a_currency_without_cdrs(db: None) -> None:
    cdr = CdrFactory()
    SettlementFactory(partner=cdr.partner, currency="USD")

    rows = settlement_compute(partner=cdr.partner, period_start=OCTOBER)

    assert [s.currency for s in rows] == ["EUR"]


def test_it_computes_every_partner_with_cdrs_in_the_period(scenario: dict[str, Any]) -> None:
    PartnerFactory(name="Idle CPO")

    rows = settlements_compute(period_start=OCTOBER)

    assert sorted((s.partner.party_id, s.currency) for s in rows) == [("CPA", "EUR"), ("CPA", "INR"), ("CPB", "EUR")]


def test_it_computes_all_partners_at_once_with_the_same_figures(scenario: dict[str, Any]) -> None:
    figures = ["cdr_count", "energy_kwh", "cpo_billed_excl_vat", "computed_excl_vat", "disputed_excl_vat", "state"]
    alone = [[getattr(s, f) for f in figures] for s in settlement_compute(partner=scenario["partner"],
                                                                           period_start=OCTOBER)]  # fmt: skip

    together = [[getattr(s, f) for f in figures] for s in settlements_compute(period_start=OCTOBER)
                if s.partner == scenario["partner"]]  # fmt: skip

    assert together == alone


def test_it_removes_stale_rows_of_a_partner_without_cdrs_when_computing_all(db: None) -> None:
    stale = SettlementFactory(currency="USD")

    assert settlements_compute(period_start=OCTOBER) == []
    assert not Settlement.objects.filter(pk=stale.pk).exists()


def test_it_closes_a_reconciled_period_with_who_and_when(scenario: dict[str, Any]) -> None:
    user = get_user_model().objects.create_user("finance")
    inr = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))["INR"]

    closed = settlement_close(settlement=inr, user=user)

    assert closed.state == Settlement.State.CLOSED
    assert closed.closed_by == user
    assert closed.closed_at is not None


def test_it_refuses_to_close_a_period_that_is_not_reconciled(scenario: dict[str, Any]) -> None:
    eur = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))["EUR"]

    with pytest.raises(SettlementError, match="2 open dispute"):
        settlement_close(settlement=eur, user=None)

    eur.refresh_from_db()
    assert eur.state == Settlement.State.OPEN
    assert eur.closed_at is None


def test_it_refuses_to_close_a_stale_reconciled_row(db: None) -> None:
    """A row computed as reconciled is recomputed first: a CDR that arrived since keeps the period open."""
    cdr = CdrFactory()
    CdrAuditFactory(cdr=cdr)
    (row,) = settlement_compute(partner=cdr.partner, period_start=OCTOBER)
    assert row.state == Settlement.State.RECONCILED
    CdrFactory(partner=cdr.partner, end_date_time=at(20))

    with pytest.raises(SettlementError, match="not reconciled"):
        settlement_close(settlement=row, user=None)


def test_it_refuses_to_close_twice(scenario: dict[str, Any]) -> None:
    inr = by_currency(settlement_compute(partner=scenario["partner"], period_start=OCTOBER))["INR"]
    settlement_close(settlement=inr, user=None)

    with pytest.raises(SettlementError, match="already closed"):
        settlement_close(settlement=inr, user=None)


@pytest.mark.parametrize(
    ("text", "months"),
    [
        ("2026-10", [(date(2026, 10, 1), date(2026, 11, 1))]),
        ("2026-12", [(date(2026, 12, 1), date(2027, 1, 1))]),
        ("2026-11..2027-01", [(date(2026, 11, 1), date(2026, 12, 1)), (date(2026, 12, 1), date(2027, 1, 1)),
                              (date(2027, 1, 1), date(2027, 2, 1))]),
    ],
)  # fmt: skip
def test_it_parses_periods(text: str, months: list[tuple[date, date]]) -> None:
    assert parse_period(text) == months


@pytest.mark.parametrize("text", ["2026-13", "October", "2026-10-01", "2026-10..2026-09", ""])
def test_it_refuses_malformed_periods(text: str) -> None:
    with pytest.raises(ValueError, match="period"):
        parse_period(text)


def test_next_month_wraps_the_year() -> None:
    assert next_month(date(2026, 12, 1)) == date(2027, 1, 1)


# --- a CDR that arrives after its period was closed ------------------------------------------------------------


@pytest.mark.parametrize("credit", [False, True])
def test_a_cdr_arriving_for_a_closed_period_is_settled_in_the_first_open_one(spec_example: Any, credit: bool) -> None:
    from billing.services.records import cdr_store

    partner = PartnerFactory(country_code="BE", party_id="BEC")
    original = {**spec_example("cdr_example.json"), "end_date_time": "2026-10-31T23:30:00Z"}
    before = cdr_store(partner, original).cdr
    assert before.carried_to is None  # October open: settled in October
    for start, end in ((OCTOBER, date(2026, 11, 1)), (date(2026, 11, 1), date(2026, 12, 1))):
        SettlementFactory(partner=partner, period_start=start, period_end=end, state=Settlement.State.CLOSED)
    late = {**original, "id": "LATE-1"}
    if credit:  # a credit CDR repeats its original's end: always in the closed month
        total = original["total_cost"]
        late.update(credit=True, credit_reference_id=original["id"],
                    total_cost={"excl_vat": -total["excl_vat"], "incl_vat": -total["incl_vat"]})  # fmt: skip

    stored = cdr_store(partner, late).cdr

    assert stored.carried_to == date(2026, 12, 1)  # October and November are closed
    (december,) = settlement_compute(partner=partner, period_start=date(2026, 12, 1))
    assert december.cdr_count == 1
    assert december.cpo_billed_excl_vat == Decimal(str(late["total_cost"]["excl_vat"]))
