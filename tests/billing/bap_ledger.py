"""Ledger postings of a consumer app's charges, built with billing.services.ledger and the chart of accounts
directly (the real postings live in billing/services/postings.py; these tests don't depend on them)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import time_machine

from billing.models import BapAgreement, LedgerEntry
from billing.services import accounts
from billing.services.ledger import Leg, post

APP = "app.example.com"
OTHER_APP = "other.example.org"
CPO = "IN*CPA"


def d(text: str) -> Decimal:
    return Decimal(text)


def at(day: int, month: int = 10, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def _post(when: datetime, *, event: str, reference: str, legs: list[Leg]) -> LedgerEntry:
    with time_machine.travel(when, tick=False):
        return post(event=event, reference=reference, legs=legs)


def charge(
    when: datetime,
    *,
    reference: str,
    cpo: str,
    fee: str,
    vat: str,
    bap_id: str | None = None,
    driver_id: int | None = None,
    currency: str = "INR",
) -> Decimal:
    """The `charge` entry of a CDR: the bill (CPO cost incl. its VAT + our fee + VAT on it) debited to the app
    that collects it, or to the driver when we collect. Returns the bill."""
    total = d(cpo) + d(fee) + d(vat)
    debit = accounts.bap_receivable(bap_id, currency) if bap_id else accounts.driver_receivable(driver_id, currency)
    _post(
        when,
        event="charge",
        reference=reference,
        legs=[
            Leg(debit, total),
            Leg(accounts.cpo_payable(CPO, currency), -d(cpo)),
            Leg(accounts.revenue_fees(currency), -d(fee)),
            Leg(accounts.tax_payable(d("18"), currency), -d(vat)),
        ],
    )
    return total


def finder_fee(when: datetime, *, reference: str, bap_id: str, amount: str, collected_by_bap: bool) -> None:
    """The app's finder fee: kept out of what it owes us when it collected, else owed to it by us."""
    side = accounts.bap_receivable(bap_id, "INR") if collected_by_bap else accounts.bap_payable(bap_id, "INR")
    _post(
        when,
        event="finder_fee",
        reference=reference,
        legs=[Leg(accounts.finder_fees("INR"), d(amount)), Leg(side, -d(amount))],
    )


def credit(when: datetime, *, reference: str, bap_id: str, amount: str) -> None:
    """A credit CDR on a charge the app collected: the CPO bears it, the driver is owed it (refunds:pending),
    then the app refunds its driver and owes us that much less (as billing/services/postings.py posts it)."""
    pending = accounts.refunds_pending("INR")
    _post(
        when,
        event="credit",
        reference=reference,
        legs=[Leg(accounts.cpo_payable(CPO, "INR"), d(amount)), Leg(pending, -d(amount))],
    )
    _post(
        when,
        event="refund",
        reference=reference,
        legs=[Leg(pending, d(amount)), Leg(accounts.bap_receivable(bap_id, "INR"), -d(amount))],
    )


def bap_pays_us(when: datetime, *, bap_id: str, amount: str, reference: str) -> None:
    _post(
        when,
        event="remittance",
        reference=reference,
        legs=[Leg(accounts.bank("INR"), d(amount)), Leg(accounts.bap_receivable(bap_id, "INR"), -d(amount))],
    )


def we_pay_bap(when: datetime, *, bap_id: str, amount: str, reference: str) -> None:
    _post(
        when,
        event="settlement_payout",
        reference=reference,
        legs=[Leg(accounts.bap_payable(bap_id, "INR"), d(amount)), Leg(accounts.bank("INR"), -d(amount))],
    )


def october_of_app() -> BapAgreement:
    """October 2026 of APP (collects, 5% finder fee, P7D), every figure known by hand (INR):

    - 30 Sep (before): booking:1 collected by the app, 118.00, fee 5.90 → it owes us 112.10 (the opening).
    - booking:2 by the app 236.00 (fee 11.80); booking:3 by the app 59.00 (fee 2.95) then a credit of 9.00;
      booking:4 collected by us from driver 7, 177.00 (we owe the app 8.85).
    - The app pays September's 112.10; we pay it 3.00.
    - Outside: booking:5 at the first instant of November; booking:6 of another app; booking:7 of no app.

    Collected by the app 236 + 59 − 9 = 286.00, by us 177.00; finder fees 14.75 kept, 8.85 owed;
    net due 286.00 − 14.75 − 8.85 = 262.40; closing 112.10 + 262.40 − 112.10 + 3.00 = 265.40.
    """
    agreement = BapAgreement.objects.create(
        bap_id=APP, legal_name="Example Mobility Apps Pvt Ltd", collects=True, finder_fee_percent=d("5")
    )
    sep = at(30, month=9, hour=23, minute=59, second=59)
    charge(sep, reference="booking:1", cpo="94.40", fee="20.00", vat="3.60", bap_id=APP)
    finder_fee(sep, reference="booking:1", bap_id=APP, amount="5.90", collected_by_bap=True)

    charge(at(2), reference="booking:2", cpo="200.00", fee="30.00", vat="6.00", bap_id=APP)
    finder_fee(at(2), reference="booking:2", bap_id=APP, amount="11.80", collected_by_bap=True)
    charge(at(5), reference="booking:3", cpo="50.00", fee="7.50", vat="1.50", bap_id=APP)
    finder_fee(at(5), reference="booking:3", bap_id=APP, amount="2.95", collected_by_bap=True)
    credit(at(6), reference="booking:3", bap_id=APP, amount="9.00")
    charge(at(10), reference="booking:4", cpo="150.00", fee="22.50", vat="4.50", driver_id=7)
    finder_fee(at(10), reference="booking:4", bap_id=APP, amount="8.85", collected_by_bap=False)
    bap_pays_us(at(12), bap_id=APP, amount="112.10", reference="bap-payment:1")
    we_pay_bap(at(20), bap_id=APP, amount="3.00", reference="bap-payout:1")

    charge(at(1, month=11, hour=0), reference="booking:5", cpo="10.00", fee="1.00", vat="0.18", bap_id=APP)
    charge(at(3), reference="booking:6", cpo="40.00", fee="5.00", vat="0.90", bap_id=OTHER_APP)
    charge(at(4), reference="booking:7", cpo="70.00", fee="9.00", vat="1.62", driver_id=8)
    return agreement
