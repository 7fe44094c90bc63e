"""A credit decided while a charge payment's bill is not captured yet is never asked of the driver again (a review of
billing/services/payments.py): (1) one that comes after the provider reported the hold gone (RELEASED) and before
the capture task found it so is taken off the `balance` page the capture opens (the payment, not refundable, had
been passed over and the credit booked to the account apart: the page asked 463.27 for 363.27 owed); (2) the part
of a credit above the hold of a bill above it is taken off the rest the capture asks, captured or lapsed (capped at
the hold, it had gone to the account while the rest page asked the whole 20.00); (3) captured, the credit covers the
rest above the hold first and only what is left of it is refunded, as a credit after the capture does (the capture
had refunded 30.00 out of what it took and still asked the 20.00 on a rest page). Whatever the order and however
often the tasks run, the pages ask what the driver's receivable says they owe, and the books balance."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.models import Payment, PaymentOperation
from billing.payments import gateway as port
from billing.services import payments
from emsp.models import Booking
from tests.billing.payments.test_review_fixes_3 import assert_books_balance, credit_decided, event, lapsing, receivable
from tests.billing.provider_standin import Fake, authorised, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.factories import DriverFactory, PartnerFactory, stored_location

BILL = Decimal("100.00")


def pages() -> list[int]:
    """What the booking's `balance` pages ask (withdrawn ones ask nothing)."""
    asking = Payment.objects.filter(purpose="balance", status=Payment.Status.PENDING).order_by("pk")
    return [p.billed_minor or 0 for p in asking]


def above_its_hold() -> Payment:
    """A booking's charge payment: a hold of 80.00 and a bill of 100.00 on it, not captured yet."""
    driver = DriverFactory(currency="INR")
    evse = stored_location(PartnerFactory(country_code="IN", party_id="CPA")).evses.first()
    booking = Booking.objects.create(order_id="ORD-1", evse=evse, connector_id="1", driver=driver)
    charge = authorised(driver, auth=8000, billed=10000)
    Payment.objects.filter(pk=charge.pk).update(booking=booking)
    charge.refresh_from_db()
    charge_booked(driver, BILL, "cdr:1")
    return charge


def kept(charge: Payment) -> int:
    """What the driver's money at the provider came to on the charge payment: taken, less given back."""
    charge.refresh_from_db()
    return charge.captured_minor - charge.refunded_minor


def assert_asked_what_is_owed(charge: Payment, credit: Decimal) -> None:
    """The pages ask what the receivable says, and the driver pays the bill less the credit in all."""
    assert receivable(charge.driver_id) == Decimal(sum(pages())) / 100
    assert kept(charge) + sum(pages()) == int((BILL - credit) * 100)
    assert_books_balance()


# --- the reviewer's cases ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_credit_after_the_hold_was_reported_gone_is_taken_off_the_bill_the_capture_asks(fake: Fake) -> None:
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=55593, billed=46327)
    charge_booked(driver, Decimal("463.27"), "cdr:1")
    payments.webhook_receive(event(port.RELEASED, charge, event_id="evt_rel", amount=55593))
    credit_decided(charge, Decimal("100.00"), "cdr:2")
    assert receivable(driver.pk) == Decimal("363.27")  # credited to the account at once: nothing to refund

    payments.payment_capture(charge.pk)

    assert [p.billed_minor for p in Payment.objects.filter(purpose="balance")] == [36327]
    assert receivable(driver.pk) == Decimal("363.27")
    assert_books_balance()
    assert [name for name, _ in fake.calls] == []  # nothing asked of the provider


@pytest.mark.django_db
def test_a_credit_voiding_a_bill_above_its_hold_asks_no_rest_when_the_hold_lapsed(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=8000, billed=10000)
    charge_booked(driver, Decimal("100.00"), "cdr:1")
    credit_decided(charge, Decimal("100.00"), "cdr:2")
    lapsing(fake, monkeypatch)

    payments.payment_capture(charge.pk)

    assert receivable(driver.pk) == Decimal("0.00")
    assert [p.billed_minor for p in Payment.objects.filter(purpose="balance")] == []
    assert_books_balance()


@pytest.mark.django_db
def test_a_credit_voiding_a_bill_above_its_hold_asks_no_rest_when_captured(fake: Fake) -> None:
    driver = DriverFactory(currency="INR")
    charge = authorised(driver, auth=8000, billed=10000)
    charge_booked(driver, Decimal("100.00"), "cdr:1")
    key = credit_decided(charge, Decimal("100.00"), "cdr:2")

    payments.payment_capture(charge.pk)
    payments.payment_refund(key)

    assert receivable(driver.pk) == Decimal("0.00")
    assert [p.billed_minor for p in Payment.objects.filter(purpose="balance")] == []
    assert kept(charge) == 0  # the hold taken and given back
    assert [(name, kw["amount_minor"]) for name, kw in fake.calls] == [("capture", 8000), ("refund", 8000)]
    assert_books_balance()


# --- part of a bill above its hold given back before the capture ---------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("credit", "refunded"),
    [(Decimal("20.00"), []), (Decimal("30.00"), [1000]), (Decimal("90.00"), [7000]), (Decimal("100.00"), [8000])],
    ids=["the-rest", "within-the-hold", "beyond-the-hold", "all"],
)
def test_a_credit_before_the_capture_of_a_bill_above_its_hold_covers_the_rest_first(
    fake: Fake, credit: Decimal, refunded: list[int]
) -> None:
    charge = above_its_hold()
    key = credit_decided(charge, credit, "cdr:2")

    payments.payment_capture(charge.pk)
    payments.payment_refund(key)  # its run, queued by the capture

    assert pages() == []  # the credit cancels the 20.00 above the hold first, as it does after the capture
    assert [kw["amount_minor"] for name, kw in fake.calls if name == "refund"] == refunded
    assert_asked_what_is_owed(charge, credit)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("credit", "asked"),
    [(Decimal("30.00"), [7000]), (Decimal("90.00"), [1000]), (Decimal("100.00"), [])],
    ids=["within-the-hold", "beyond-the-hold", "all"],
)
@pytest.mark.parametrize("refund_first", [False, True], ids=["capture-first", "refund-first"])
def test_a_credit_before_a_capture_finding_the_hold_lapsed_leaves_the_bill_asked_as_owed(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, credit: Decimal, asked: list[int], refund_first: bool
) -> None:
    charge = above_its_hold()
    key = credit_decided(charge, credit, "cdr:2")
    payments.webhook_receive(event(port.RELEASED, charge, event_id="evt_rel", amount=8000))
    if refund_first:  # the beat's sweep runs the waiting refund before the capture task
        payments.payment_refund(key)

    payments.payment_capture(charge.pk)
    payments.payment_refund(key)

    assert pages() == asked
    assert_asked_what_is_owed(charge, credit)
    assert fake.calls == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("credit", "asked"),
    [(Decimal("30.00"), [7000]), (Decimal("100.00"), []), (Decimal("120.00"), [])],
    ids=["part", "all", "more-than-the-bill"],
)
def test_a_credit_after_a_hold_under_its_bill_was_reported_gone_is_taken_off_the_bill(
    fake: Fake, credit: Decimal, asked: list[int]
) -> None:
    charge = above_its_hold()
    payments.webhook_receive(event(port.RELEASED, charge, event_id="evt_rel", amount=8000))
    credit_decided(charge, credit, "cdr:2")

    payments.payment_capture(charge.pk)

    assert pages() == asked
    over = max(Decimal(0), credit - BILL)  # beyond the bill: the driver's account in credit, paid back by finance
    assert receivable(charge.driver_id) == Decimal(sum(asked)) / 100 - over
    assert_books_balance()


# --- the tasks run twice (acks_late) -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("hold", ["captured", "lapsed", "reported-gone"])
def test_the_capture_and_refund_run_again_change_nothing(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, hold: str
) -> None:
    charge = above_its_hold()
    gone = event(port.RELEASED, charge, event_id="evt_rel", amount=8000)
    if hold == "reported-gone":
        payments.webhook_receive(gone)
    key = credit_decided(charge, Decimal("90.00"), "cdr:2")
    if hold == "lapsed":
        lapsing(fake, monkeypatch)

    for _ in range(2):
        payments.payment_capture(charge.pk)
        payments.payment_refund(key)
    if hold != "reported-gone":
        payments.webhook_receive(gone)  # the provider's own word, after the capture: only noted
    with pytest.raises(payments.ReplayedWebhook):
        payments.webhook_receive(gone)
    for operation in PaymentOperation.objects.filter(status=PaymentOperation.Status.FAILED):
        payments.operation_retry(operation=operation)  # staff retry the capture that found the hold lapsed
    payments.payment_capture(charge.pk)

    # Captured, the credit covers the 20.00 above the hold and 70.00 is refunded; gone, the bill is asked less it.
    assert pages() == ([] if hold == "captured" else [1000])
    assert Payment.objects.filter(purpose="balance").count() == (0 if hold == "captured" else 1)
    assert_asked_what_is_owed(charge, Decimal("90.00"))
    refunds = [kw["amount_minor"] for name, kw in fake.calls if name == "refund"]
    assert refunds == ([7000] if hold == "captured" else [])


# --- the other order: captured (or found lapsed) first, then the credit --------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("credit", [Decimal("30.00"), Decimal("90.00"), Decimal("100.00")])
@pytest.mark.parametrize("hold", ["captured", "lapsed"])
def test_a_credit_after_the_capture_of_a_bill_above_its_hold_leaves_what_is_owed_asked(
    fake: Fake, monkeypatch: pytest.MonkeyPatch, credit: Decimal, hold: str
) -> None:
    charge = above_its_hold()
    if hold == "lapsed":
        lapsing(fake, monkeypatch)
    payments.payment_capture(charge.pk)
    assert pages() == ([2000] if hold == "captured" else [10000])

    key = credit_decided(charge, credit, "cdr:2")
    if PaymentOperation.objects.filter(idempotency_key=key).exists():  # what the rest page could not take
        payments.payment_refund(key)

    assert_asked_what_is_owed(charge, credit)


# --- the same credit before or after the capture -------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("credit", [Decimal("20.00"), Decimal("30.00"), Decimal("90.00")])
@pytest.mark.parametrize("when", ["after", "before"])
def test_a_credit_before_or_after_the_capture_asks_and_refunds_the_same(fake: Fake, credit: Decimal, when: str) -> None:
    charge = above_its_hold()
    if when == "after":
        payments.payment_capture(charge.pk)
    key = credit_decided(charge, credit, "cdr:2")
    if when == "before":
        payments.payment_capture(charge.pk)
    for _ in range(2):  # the tasks run twice (acks_late, the beat's sweep): nothing changes
        if PaymentOperation.objects.filter(idempotency_key=key).exists():
            payments.payment_refund(key)
        payments.payment_capture(charge.pk)

    refunded = [kw["amount_minor"] for name, kw in fake.calls if name == "refund"]
    assert pages() == [p for p in [2000 - int(credit * 100)] if p > 0]
    assert refunded == ([int(credit * 100) - 2000] if credit > Decimal("20.00") else [])
    assert_asked_what_is_owed(charge, credit)
