"""A credit CDR held for review gave nothing back (audit.HELD: the ledger took nothing off the CPO's payable, the
driver was refunded nothing): the settlement neither takes its original's energy and repricing off nor nets its
amounts into what the CPO billed, and its CDR line adds nothing; a non-held credit after it still voids the
original, and credits that withdrew a held original still net it to nothing."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest

from billing.models import Cdr, CdrAudit, Settlement
from billing.services.audit import cdr_process
from billing.services.settlement import settlement_cdrs_csv, settlement_compute
from emsp.models import Partner
from tests.billing.test_audit_review_fixes import cpo, credit_body, processed_original, store  # noqa: F401
from tests.billing.test_finance_review_fixes import dsp, ledger_payable, processed
from tests.billing.test_held_over_credit import credit, held_inr, inr_october
from tests.billing.test_settlement_voids_and_ledger import assert_sheet_adds_up
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db

OCTOBER = date(2026, 10, 1)


def credited(partner: Partner, cdr_id: str, *, uid: str | None = None) -> Cdr:
    """A −5.00 / −5.50 credit CDR of ORIG, processed; naming `uid` (another driver's token) it is held."""
    body = credit_body(partner, "ORIG", cdr_id, 5.0, 5.5)
    if uid is not None:
        body["cdr_token"] = {**body["cdr_token"], "uid": uid}
    cdr = store(partner, body)
    cdr_process(cdr.pk)
    return cdr


def october(partner: Partner) -> Settlement:
    (s,) = settlement_compute(partner=partner, period_start=OCTOBER)
    return s


def figures(s: Settlement) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    return s.energy_kwh, s.computed_excl_vat, s.cpo_billed_excl_vat, s.cpo_billed_incl_vat


@pytest.mark.parametrize("held", [False, True])
def test_settlement_figures_with_a_held_voiding_credit(cpo: Partner, held: bool) -> None:  # noqa: F811
    """A −5.00 / −5.50 credit of a 5.00 / 5.50 charge of 20 kWh. Refunded, it voids the charge. Held (another
    driver's token), it had voided it all the same: 0 kWh, the CPO billed 0, while the ledger still owed the CPO
    5.50 and the payer still owed it to us."""
    processed_original(cpo, total=(5.0, 5.5), energy_cost=(5.0, 5.5))
    other = TokenFactory(uid="TOKEN-OTHER-DRIVER") if held else None
    refund = credited(cpo, "ORIG-C", uid=other.uid if other else None)
    audit = CdrAudit.objects.get(cdr=refund)
    assert ("token_differs" in audit.flags) is held

    s = october(cpo)

    if held:
        assert figures(s) == (Decimal("20"), Decimal("5"), Decimal("5"), Decimal("5.5"))
        assert s.cpo_billed_incl_vat == s.ledger_payable  # what the CPO billed is what the ledger owes it
        assert s.state == Settlement.State.OPEN  # the held credit keeps the period in review
    else:
        assert figures(s) == (0, 0, 0, 0)
        assert s.ledger_payable == 0


def test_the_cdr_sheet_line_of_a_held_credit_adds_nothing(cpo: Partner) -> None:  # noqa: F811
    processed_original(cpo, total=(5.0, 5.5), energy_cost=(5.0, 5.5))
    credited(cpo, "ORIG-C", uid=TokenFactory(uid="TOKEN-OTHER-DRIVER").uid)
    s = october(cpo)

    lines = {line["cdr_id"]: line for line in csv.DictReader(io.StringIO("".join(settlement_cdrs_csv([s]))))}

    held = lines["ORIG-C"]
    assert held["audit_status"] == CdrAudit.Status.REVIEW
    assert Decimal(held["energy_kwh"]) == 0 and held["computed_excl_vat"] == ""
    assert Decimal(held["cpo_billed_excl_vat"]) == Decimal(held["cpo_billed_incl_vat"]) == 0
    assert_sheet_adds_up(s)


def test_a_refunded_credit_after_a_held_one_voids_the_original(cpo: Partner) -> None:  # noqa: F811
    """The CPO's credit naming the wrong driver is held; its corrected credit (the payer's token) is refunded and
    voids the charge. Counting the held one, the corrected credit voided nothing (the charge taken for voided
    before it) and the CPO billed −5.00 in all while the ledger owed it 0."""
    processed_original(cpo, total=(5.0, 5.5), energy_cost=(5.0, 5.5))
    wrong = credited(cpo, "ORIG-C1", uid=TokenFactory(uid="TOKEN-OTHER-DRIVER").uid)
    assert "token_differs" in CdrAudit.objects.get(cdr=wrong).flags
    refund = credited(cpo, "ORIG-C2")
    assert CdrAudit.objects.get(cdr=refund).status == CdrAudit.Status.CREDIT

    s = october(cpo)

    assert figures(s) == (0, 0, 0, 0)
    assert s.cpo_billed_incl_vat == s.ledger_payable == 0
    assert_sheet_adds_up(s)


def test_credits_that_withdraw_a_held_cdr_still_net_it_to_nothing() -> None:
    """Held credits that withdrew a held CDR that billed nobody (withdrawn_by_credit) settle it between the CPO and
    us: the pair counts as before, nothing billed, no energy, nothing owed."""
    partner = dsp()
    wrong = held_inr(partner)
    processed(partner, credit(wrong, "CDR-X-C", -5.0, -5.5))
    assert "withdrawn_by_credit" in CdrAudit.objects.get(cdr__cdr_id="CDR-X-C").flags

    s = inr_october(partner)

    assert figures(s) == (0, 0, 0, 0)
    assert s.state == Settlement.State.RECONCILED
    assert ledger_payable("IN*DSP", "INR") == s.ledger_payable == 0
    assert_sheet_adds_up(s)
