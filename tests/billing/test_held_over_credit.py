"""Credit CDRs of a CDR held for review (it billed nobody): two that together give back more than it billed are an
over-credit for staff, never a withdrawal; a withdrawal is credits of its currency that net it exactly to nothing,
excl. and incl. VAT, and only then does its settlement count the pair as matching."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from billing.documents import cpo_net_payable
from billing.models import Cdr, CdrAudit, DriverReceipt, Settlement
from billing.services.settlement import SettlementError, in_review, settlement_close, settlement_compute
from emsp.models import Partner
from tests.billing.dispute_factories import ocpi_cdr
from tests.billing.test_cdr_booking_links import credit_for
from tests.billing.test_finance_review_fixes import (
    OCTOBER,
    dsp,
    ledger_payable,
    processed,
    processed_with_session,
)
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_superuser("finance", "finance@example.com", "pw-123456-x")


def held_inr(partner: Partner) -> Cdr:
    """CDR-X, 5.00 / 5.50 INR, held as currency_differs (its session in EUR): it billed nobody."""
    TokenFactory(uid="TOKEN-DISPUTE-1")
    obj = {**ocpi_cdr(partner, "CDR-X", total=(5.0, 5.5), energy_cost=(5.0, 5.5)), "currency": "INR"}
    wrong = processed_with_session(partner, obj)
    assert "currency_differs" in wrong.audit.flags and not DriverReceipt.objects.filter(cdr=wrong).exists()
    return Cdr.objects.get(pk=wrong.pk)


def credit(original: Cdr, credit_id: str, excl: float, incl: float) -> dict[str, Any]:
    return {**credit_for(original, credit_id), "total_cost": {"excl_vat": excl, "incl_vat": incl}}


def flags_of(cdr_id: str) -> list[str]:
    return list(CdrAudit.objects.get(cdr__cdr_id=cdr_id).flags)


def inr_october(partner: Partner) -> Settlement:
    (settlement,) = [s for s in settlement_compute(partner=partner, period_start=OCTOBER) if s.currency == "INR"]
    return settlement


def test_two_credits_giving_back_more_than_the_held_cdr(user: User) -> None:
    """−4.00 and −4.00 on a held 5.00: the second is over_credit. Before, only credits with a receipt counted (a
    held original's never have one) and `total + given_back <= 0` passed as a withdrawal: all three were noted
    withdrawn_by_credit and counted as matching."""
    partner = dsp()
    wrong = held_inr(partner)
    processed(partner, credit(wrong, "CDR-X-C1", -4.0, -4.4))

    second = processed(partner, credit(wrong, "CDR-X-C2", -4.0, -4.4))

    assert "over_credit" in second.audit.flags
    assert second.audit.status == CdrAudit.Status.REVIEW
    for cdr_id in ("CDR-X", "CDR-X-C1", "CDR-X-C2"):
        assert "withdrawn_by_credit" not in flags_of(cdr_id)


def test_an_over_credited_held_cdr_keeps_its_period_in_review(user: User) -> None:
    """Before, October reconciled and closed with a CPO net payable of −3.30 (5.50 − 4.40 − 4.40) while the
    ledger's payable was 0. Now the three stay in review: the period is not closed as matching."""
    partner = dsp()
    wrong = held_inr(partner)
    processed(partner, credit(wrong, "CDR-X-C1", -4.0, -4.4))
    processed(partner, credit(wrong, "CDR-X-C2", -4.0, -4.4))

    settlement = inr_october(partner)

    assert ledger_payable("IN*DSP", "INR") == 0
    assert settlement.state == Settlement.State.OPEN
    assert sorted(c.cdr_id for c in in_review(settlement)) == ["CDR-X", "CDR-X-C1", "CDR-X-C2"]
    with pytest.raises(SettlementError, match="not reconciled"):
        settlement_close(settlement=settlement, user=user)
    settlement.refresh_from_db()
    assert settlement.state == Settlement.State.OPEN


def test_credits_that_came_before_the_held_cdr_and_give_back_more_are_over_credits(user: User) -> None:
    """Both credits stored and processed before their original (held as unknown_original), audited again once it
    comes: each counts the other (both over_credit, as neither came first). Before, neither had a receipt, so
    neither counted, and the pair withdrew it."""
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    obj = {**ocpi_cdr(partner, "CDR-X", total=(5.0, 5.5), energy_cost=(5.0, 5.5)), "currency": "INR"}
    for credit_id in ("CDR-X-C1", "CDR-X-C2"):
        early_credit = {**obj, "id": credit_id, "credit": True, "credit_reference_id": "CDR-X"}
        early = processed(partner, {**early_credit, "total_cost": {"excl_vat": -4.0, "incl_vat": -4.4}})
        assert "unknown_original" in early.audit.flags

    processed_with_session(partner, obj)

    assert "over_credit" in flags_of("CDR-X-C1") and "over_credit" in flags_of("CDR-X-C2")
    for cdr_id in ("CDR-X", "CDR-X-C1", "CDR-X-C2"):
        assert "withdrawn_by_credit" not in flags_of(cdr_id)
    assert sorted(c.cdr_id for c in in_review(inr_october(partner))) == ["CDR-X", "CDR-X-C1", "CDR-X-C2"]


def test_a_credit_that_nets_the_held_cdr_excl_vat_only_does_not_withdraw_it(user: User) -> None:
    """−5.00 excl. but −5.00 incl. VAT on 5.00 / 5.50: 0.50 with VAT is left. Before, only the amount without VAT
    was weighed: the pair was withdrawn and the statement stated 0.50 the ledger never booked."""
    partner = dsp()
    wrong = held_inr(partner)

    part = processed(partner, credit(wrong, "CDR-X-C", -5.0, -5.0))

    assert "withdrawn_by_credit" not in part.audit.flags
    assert "withdrawn_by_credit" not in flags_of("CDR-X")
    settlement = inr_october(partner)
    assert settlement.state == Settlement.State.OPEN
    assert sorted(c.cdr_id for c in in_review(settlement)) == ["CDR-X", "CDR-X-C"]


def test_two_credits_that_net_the_held_cdr_exactly_withdraw_it(user: User) -> None:
    """−2.00 then −3.00 (−2.20, −3.30 with VAT): the first leaves part (both in review), the second nets the CDR to
    nothing and the three are withdrawn; October closes with nothing owed, as the ledger says."""
    partner = dsp()
    wrong = held_inr(partner)
    first = processed(partner, credit(wrong, "CDR-X-C1", -2.0, -2.2))
    assert "withdrawn_by_credit" not in first.audit.flags

    second = processed(partner, credit(wrong, "CDR-X-C2", -3.0, -3.3))

    assert "over_credit" not in second.audit.flags
    for cdr_id in ("CDR-X", "CDR-X-C1", "CDR-X-C2"):
        assert "withdrawn_by_credit" in flags_of(cdr_id)
    settlement = inr_october(partner)
    assert settlement.state == Settlement.State.RECONCILED
    closed = settlement_close(settlement=settlement, user=user)
    assert cpo_net_payable(closed) == ledger_payable("IN*DSP", "INR") == 0


def test_a_later_cdr_of_a_charge_whose_held_cdr_was_over_credited_is_a_second_bill(user: User) -> None:
    """An over-credited held CDR is not withdrawn: the charge's next CDR is held as its second bill, for staff to
    look at all of them. Before, `total + given_back <= 0` took it for withdrawn, and the next CDR was billed."""
    partner = dsp()
    wrong = held_inr(partner)
    processed(partner, credit(wrong, "CDR-X-C1", -4.0, -4.4))
    processed(partner, credit(wrong, "CDR-X-C2", -4.0, -4.4))
    corrected = {**ocpi_cdr(partner, "CDR-Y", total=(5.0, 5.5), energy_cost=(5.0, 5.5)), "session_id": "S-CDR-X"}

    again = processed(partner, corrected)

    assert "duplicate_session_cdr" in again.audit.flags
    assert not DriverReceipt.objects.filter(cdr=again).exists()
