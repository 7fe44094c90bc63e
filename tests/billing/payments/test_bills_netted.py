"""A new bill is taken out of what the driver's account holds in credit before any page asks for it (a review of
billing/services/payments.py): a CPO voided a charge with a credit CDR, the card refund failed (REFUND_FAILED) so
the whole 463.27 was credited to the driver's account, and the CPO's corrected CDR then billed 366.98 on a new
page while we held 463.27 of the driver's money. The corrected bill now asks nothing (96.29 stays in credit); a
bill above the credit asks the rest; what the driver's other payments still collect (a page asking, a hold billed
and not captured) is no credit to take; two bills of one driver take the credit once."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import transaction

from billing.models import Cdr, Payment, PaymentOperation
from billing.payments import gateway as port
from billing.services import accounts, payments, postings
from emsp.models import Partner
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm
from tests.beckn.test_payments_journey import assert_books_balance, balance, charge_and_cdr, start
from tests.billing.payments.test_review_fixes_3 import event, receivable
from tests.billing.provider_standin import Fake, authorised, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.billing.test_cdr_booking_links import authorised_charge, credit_for, pages_at_the_provider, store
from tests.billing.test_settlement_review_fixes import _run, needs_postgres
from tests.factories import DriverFactory


def asking() -> list[int]:
    """What the `balance` pages still ask (withdrawn or covered ones ask nothing)."""
    pending = Payment.objects.filter(purpose="balance", status=Payment.Status.PENDING).order_by("pk")
    return [p.billed_minor or 0 for p in pending]


def voided_and_refund_failed(bap: Any, network: Partner, fake: Fake, settings: Any) -> tuple[Payment, Cdr]:  # noqa: F811
    """A charge of 463.27 captured at the provider, voided by the CPO's credit CDR, its refund failed: the whole
    463.27 credited to the driver's account."""
    pages_at_the_provider(fake, settings)
    charge = authorised_charge(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)
    charge.refresh_from_db()
    first = Cdr.objects.get(cdr_id="CDR-1")
    store(bap, network, credit_for(first, "CDR-1-C"))
    refund = PaymentOperation.objects.get(kind=PaymentOperation.Kind.REFUND)
    failed = event(port.REFUND_FAILED, charge, event_id="evt_rf", amount=46327, refund_id=refund.provider_reference,
                   refund_key=refund.idempotency_key)  # fmt: skip
    payments.webhook_receive(failed)
    assert balance(f"driver:{charge.driver_id}:receivable") == Decimal("-463.27")
    return charge, first


@pytest.mark.we_collect
def test_a_corrected_bill_after_a_failed_refund_is_taken_from_the_account_credit(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    settings: Any,
) -> None:
    charge, first = voided_and_refund_failed(bap, network, fake, settings)
    checkouts = len([name for name, _ in fake.calls if name == "checkout"])

    store(bap, network, {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354}})

    assert asking() == []
    assert balance(f"driver:{charge.driver_id}:receivable") == Decimal("-96.29")  # still the driver's, in credit
    assert len([name for name, _ in fake.calls if name == "checkout"]) == checkouts  # no page opened
    covered = Payment.objects.get(purpose="balance")
    assert (covered.status, covered.billed_minor, covered.url) == (Payment.Status.RELEASED, 0, "")
    assert "account credit" in covered.failure
    assert_books_balance()

    with bap.capture(execute=True):  # the corrected CDR processed again: nothing more
        payments.bill(Cdr.objects.get(cdr_id="CDR-2").receipt)
    assert asking() == [] and Payment.objects.filter(purpose="balance").count() == 1


@pytest.mark.we_collect
def test_a_corrected_bill_above_the_account_credit_asks_the_rest(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    settings: Any,
) -> None:
    charge, first = voided_and_refund_failed(bap, network, fake, settings)

    store(bap, network, {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 500, "incl_vat": 590}})

    owed = balance(f"driver:{charge.driver_id}:receivable")
    assert owed > 0
    assert asking() == [int(owed * 100)]  # the page asks what the account does not cover: no more
    assert fake.calls[-1][0] == "checkout" and fake.calls[-1][1]["amount_minor"] == int(owed * 100)
    assert_books_balance()


# --- unit: the credit is what the driver's other payments don't collect --------------------------------------------


def in_credit(driver: Any, amount: Decimal, reference: str) -> None:
    """`amount` credited to the driver's account (a credit whose refund the provider could not make)."""
    postings.credit(currency="INR", amount=amount, borne_by=accounts.cpo_payable("IN*CPA", "INR"),
                    reference=reference, key=f"{reference}:credit")  # fmt: skip
    postings.refund(currency="INR", amount=amount, paid_from=accounts.driver_receivable(driver.pk, "INR"),
                    reference=reference, key=f"{reference}:refund:account")  # fmt: skip


def billed_again(charge: Payment, cdr_pk: int, amount: Decimal) -> None:
    """A further bill of `amount` on the charge's driver (booked on their receivable), as a corrected CDR's."""
    charge_booked(charge.driver, amount, f"cdr:{cdr_pk}")
    payer = accounts.driver_receivable(charge.driver_id, "INR")
    receipt: Any = SimpleNamespace(cdr_id=cdr_pk)
    payments._bill_again(charge, receipt, payer, int(amount * 100))


def two_released_charges() -> tuple[Any, Payment, Payment]:
    """A driver with 100.00 in credit on their account, and two charge payments whose holds were released."""
    driver = DriverFactory(currency="INR")
    first, second = (authorised(driver, auth=8000) for _ in range(2))
    for each in (first, second):
        Payment.objects.filter(pk=each.pk).update(status=Payment.Status.RELEASED, captured_minor=0)
        each.refresh_from_db()
    in_credit(driver, Decimal("100.00"), "dispute:1")
    return driver, first, second


@pytest.mark.django_db
def test_two_bills_of_one_driver_take_the_credit_once(fake: Fake) -> None:
    driver, first, second = two_released_charges()

    billed_again(first, 11, Decimal("80.00"))
    billed_again(second, 12, Decimal("80.00"))
    billed_again(second, 12, Decimal("80.00"))  # processed again: nothing more

    assert asking() == [6000]  # 160.00 billed, 100.00 of it out of the credit
    assert receivable(driver.pk) == Decimal("60.00")


@pytest.mark.django_db
def test_a_bill_still_collected_elsewhere_is_no_credit_to_take(fake: Fake) -> None:
    driver = DriverFactory(currency="INR")
    in_credit(driver, Decimal("100.00"), "dispute:1")
    held = authorised(driver, auth=12000, billed=10000)  # billed, its capture to come: it takes 100.00 from the card
    charge_booked(driver, Decimal("100.00"), "cdr:10")
    other = authorised(driver, auth=8000)
    Payment.objects.filter(pk=other.pk).update(status=Payment.Status.RELEASED)
    other.refresh_from_db()

    billed_again(other, 11, Decimal("80.00"))  # the account's credit covers it

    assert asking() == []
    payments.payment_capture(held.pk)
    assert receivable(driver.pk) == Decimal("-20.00")  # 100.00 in credit, 80.00 of it taken by the new bill


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_bills_of_one_driver_at_once_take_the_credit_once(fake: Fake, settings: Any) -> None:
    pages_at_the_provider(fake, settings)  # the page opened after the commit
    driver, first, second = two_released_charges()
    reached, go = threading.Event(), threading.Event()

    def bill_and_wait() -> None:
        with transaction.atomic():
            billed_again(first, 11, Decimal("80.00"))
            reached.set()
            go.wait(10)  # holds the driver's row until the other bill is under way

    def bill() -> None:
        with transaction.atomic():
            billed_again(second, 12, Decimal("80.00"))

    one, out_one = _run(bill_and_wait)
    assert reached.wait(10)
    two, out_two = _run(bill)
    time.sleep(0.5)  # the second bill waits for the driver's row (read unlocked, it saw no first bill)
    go.set()
    for thread in (one, two):
        thread.join(20)
    assert "error" not in out_one and "error" not in out_two

    assert asking() == [6000]  # 160.00 billed, 100.00 of it out of the credit: not both out of it
    assert receivable(driver.pk) == Decimal("60.00")
    assert [kw["amount_minor"] for name, kw in fake.calls if name == "checkout"] == [6000]
