"""Partial credit CDRs that together void a charge give back all of our fee, its VAT and the app's finder fee
(docs/payments.md: "a voided charge leaves nothing booked"), through the Beckn journey with a prepaid wallet.

CDR-1: the CPO's 380.00 excl. / 448.40 incl.; our fee 5 + 2 % = 12.60 and its VAT 2.27: the driver paid 463.27.
Each credit gave back the fee on its own, against the original alone (`left = original + this credit`): our flat
5.00 went back only when a single credit voided everything, so two credits of -300 and -80 gave back all 448.40
of the CPO's part and left revenue:fees at -5.00 and VAT at -0.90, the driver short 5.90."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing.models import BapAgreement, Cdr, DriverReceipt
from billing.services import payments
from emsp.models import Partner
from tests.beckn.bap import BAP_ID
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_payments_journey import BILL, assert_books_balance, balance
from tests.billing.test_cdr_booking_links import charged, credit_for, store, wallet, wallet_driver

pytestmark = [pytest.mark.django_db, pytest.mark.we_collect]

VAT = "tax:VAT-18:payable"
C1 = {"excl_vat": -300, "incl_vat": -354}
C2 = {"excl_vat": -80, "incl_vat": -94.40}


def credit(bap: Any, network: Partner, first: Cdr, cdr_id: str, total: dict[str, Any]) -> Cdr:  # noqa: F811
    return store(bap, network, {**credit_for(first, cdr_id), "total_cost": total})


def assert_nothing_booked_of_the_charge(driver: Any) -> None:
    assert wallet(driver) == Decimal("1000")  # all of the 463.27 back
    assert balance("revenue:fees") == 0
    assert balance(VAT) == 0
    assert balance("cpo:IN*CPA:payable") == 0
    assert balance("refunds:pending") == 0
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert_books_balance()


@pytest.mark.parametrize("order", [("C1", "C2"), ("C2", "C1")], ids=["larger-first", "smaller-first"])
def test_two_partial_credits_that_void_the_charge_give_back_all_of_our_fee(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    order: tuple[str, str],
) -> None:
    driver = wallet_driver()
    charged(bap, network)
    assert wallet(driver) == Decimal("1000") - BILL
    assert (balance("revenue:fees"), balance(VAT)) == (Decimal("-12.60"), Decimal("-2.27"))
    first = Cdr.objects.get(cdr_id="CDR-1")
    totals = {"C1": C1, "C2": C2}
    for name in order:
        credit(bap, network, first, f"CDR-1-{name}", totals[name])
    assert_nothing_booked_of_the_charge(driver)
    # Each credit note states what the ledger gave back with it: together, all of our fee and its VAT.
    notes = [payments.fee_given_back(r) for r in DriverReceipt.objects.filter(cdr__credit=True)]
    assert sum((fee for fee, _ in notes), Decimal(0)) == Decimal("12.60")
    assert sum((vat for _, vat in notes), Decimal(0)) == Decimal("2.27")


def test_the_credit_that_voids_the_charge_gives_back_the_flat_part(bap: Any, network: Partner) -> None:  # noqa: F811
    """The last credit gives back our fee on what the earlier ones left (80.00: 6.60 and 1.19 of VAT), to 0."""
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    credit(bap, network, first, "CDR-1-C1", C1)
    last = credit(bap, network, first, "CDR-1-C2", C2)
    assert payments.fee_given_back(last.receipt) == (Decimal("6.60"), Decimal("1.19"))
    assert wallet(driver) == Decimal("1000")


def test_a_single_partial_credit_gives_back_what_it_did_before(bap: Any, network: Partner) -> None:  # noqa: F811
    """A regression guard: one credit of -300 leaves our fee on the CPO's lowered 80.00 (5 + 1.60, and 1.19 of
    VAT), giving back 6.00 and 1.08 with the CPO's 354.00."""
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    made = credit(bap, network, first, "CDR-1-C1", C1)
    assert payments.fee_given_back(made.receipt) == (Decimal("6.00"), Decimal("1.08"))
    assert wallet(driver) == Decimal("1000") - BILL + Decimal("361.08")
    assert (balance("revenue:fees"), balance(VAT)) == (Decimal("-6.60"), Decimal("-1.19"))
    assert balance("refunds:pending") == 0
    assert_books_balance()


def test_two_partial_credits_leaving_a_charge_leave_our_fee_on_what_is_left(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    """-300 then -40: the CPO's price is 40.00, our fee on it 5.80 with 1.04 of VAT; the rest went back."""
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    credit(bap, network, first, "CDR-1-C1", C1)
    credit(bap, network, first, "CDR-1-C2", {"excl_vat": -40, "incl_vat": -47.20})
    assert (balance("revenue:fees"), balance(VAT)) == (Decimal("-5.80"), Decimal("-1.04"))
    assert wallet(driver) == Decimal("1000") - (Decimal("47.20") + Decimal("5.80") + Decimal("1.04"))
    assert_books_balance()


def test_the_app_s_finder_fee_is_taken_back_whole_when_partial_credits_void_the_charge(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    BapAgreement.objects.create(bap_id=BAP_ID, collects=False, finder_fee_percent=Decimal("3"))
    driver = wallet_driver()
    charged(bap, network)
    assert balance("expense:finder-fees") == Decimal("13.90")  # 3 % of 463.27
    first = Cdr.objects.get(cdr_id="CDR-1")
    credit(bap, network, first, "CDR-1-C1", C1)
    assert balance("expense:finder-fees") == Decimal("13.90") - Decimal("10.83")  # 361.08 of 463.27 given back
    credit(bap, network, first, "CDR-1-C2", C2)
    assert balance("expense:finder-fees") == 0
    assert balance(f"bap:{BAP_ID}:payable") == 0
    assert_nothing_booked_of_the_charge(driver)
