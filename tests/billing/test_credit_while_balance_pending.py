"""A credit that comes while a `balance` payment still asks the driver for a bill at the provider's page (a bill after
the hold was released, the rest above a hold) is taken off that bill: the page is withdrawn and the rest asked on a
new one, or nothing once the credit covers it. The old page can't be closed at the provider: paid all the same, it
takes only what is still owed (the rest of its hold released), or nothing if the new page was paid. It had gone to
the driver's account while the page asked for the whole bill: paid, then owed back by hand."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any
from unittest.mock import ANY

import pytest
from django.db import transaction

from billing.models import DriverReceipt, LedgerEntry, Payment, PaymentOperation
from billing.payments.gateway import AUTHORISED, FAILED, WebhookEvent
from billing.services import accounts, payments, postings
from billing.services.ledger import to_minor
from emsp.models import Booking, Partner
from emsp.services.sessions import session_put
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm, last
from tests.beckn.test_payments_journey import BILL, assert_books_balance, balance, start
from tests.billing.provider_standin import Fake, charge_booked
from tests.billing.provider_standin import fake as fake
from tests.billing.test_cdr_booking_links import (
    authorised_charge,
    cdr_of,
    credit_for,
    late_charge,
    lost_start_cancelled,
    not_paid,
    ordered,
    pages_at_the_provider,
    provider_says,
    session_of,
    store,
    wallet_driver,
)
from tests.billing.test_settlement_review_fixes import _run, _until, needs_postgres
from tests.factories import DriverFactory, PartnerFactory, stored_location
from tests.fakes import FakePeer

pytestmark = [pytest.mark.django_db, pytest.mark.we_collect]

# A credit CDR giving back 100 excl. (118 incl.) of CDR-LATE's 380 (448.40): with it 2.00 of our fee (5 + 2 % of
# 380 = 12.60, of 280 = 10.60) and its 18 % VAT (0.36).
PART = {"excl_vat": -100, "incl_vat": -118}
GIVEN_BACK = Decimal("120.36")
LEFT = BILL - GIVEN_BACK  # 342.91


@pytest.fixture
def asked(bap: Any, network: Partner, peer: FakePeer, fake: Fake, settings: Any) -> Payment:  # noqa: F811
    """A bill that came after the hold was released: a `balance` payment whose page asks for all of it."""
    pages_at_the_provider(fake, settings)
    authorised_charge(bap)
    booking = lost_start_cancelled(bap, peer, confirm(bap)["message"]["order"]["id"])
    late_charge(bap, network, booking)
    payment = Payment.objects.get(booking=booking, purpose="balance")
    assert (payment.status, payment.billed_minor, payment.requested_minor) == (Payment.Status.PENDING, 46327, 46327)
    return payment


def credited(bap: Any, network: Partner, total: dict[str, Any] | None = None) -> None:  # noqa: F811
    """The CPO's credit CDR for CDR-LATE: all of it, or `total`."""
    late = DriverReceipt.objects.get(cdr__cdr_id="CDR-LATE").cdr
    credit = credit_for(late, "CDR-LATE-C")
    store(bap, network, {**credit, "total_cost": total} if total else credit)


def replacement_of(payment: Payment) -> Payment:
    return Payment.objects.get(booking=payment.booking, purpose="balance", status=Payment.Status.PENDING)


def order_of(bap: Any, booking: Booking) -> dict[str, Any]:  # noqa: F811
    bap("status", {"order_id": booking.order_id})
    return last(bap, "on_status")["message"]["order"]


def pages(fake: Fake) -> list[int]:
    return [kw["amount_minor"] for name, kw in fake.calls if name == "checkout"]


def test_a_credit_while_the_balance_page_is_open_asks_only_what_is_left_on_a_new_page(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    asked: Payment,
) -> None:
    driver = f"driver:{asked.driver_id}:receivable"

    credited(bap, network, PART)

    assert balance(driver) == LEFT  # the credit is off what the driver owes
    asked.refresh_from_db()
    assert (asked.status, asked.billed_minor, asked.url) == (Payment.Status.RELEASED, 0, "")  # withdrawn
    assert "cdr:" in asked.failure
    rest = replacement_of(asked)
    assert (rest.billed_minor, rest.requested_minor) == (to_minor(LEFT, "INR"), 34291) and rest.url
    assert pages(fake)[-2:] == [46327, 34291]  # the bill's page, then the rest's
    order = order_of(bap, asked.booking)
    assert not_paid(order) == LEFT  # the old page is no longer shown, nor its amount
    assert [p.get("url") for p in order["payments"] if p.get("url")] == [rest.url]
    assert balance("refunds:pending") == 0
    assert_books_balance()

    # The driver pays the new page: what is owed is taken, and nothing more.
    provider_says(bap, rest, "evt_rest", AUTHORISED, payment_id="pi_3")
    rest.refresh_from_db()
    assert (rest.status, rest.captured_minor) == (Payment.Status.CAPTURED, 34291)
    assert balance(driver) == 0
    assert balance("holds:fake") == 0
    assert_books_balance()


def test_a_credit_covering_the_whole_balance_cancels_it_and_asks_nothing(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    asked: Payment,
) -> None:
    calls = len(fake.calls)

    credited(bap, network)

    asked.refresh_from_db()
    assert (asked.status, asked.billed_minor, asked.url) == (Payment.Status.RELEASED, 0, "")
    assert Payment.objects.filter(purpose="balance").count() == 1  # no page for nothing
    assert fake.calls[calls:] == [("expire_checkout", {"checkout_id": "cs_3", "idempotency_key": ANY})]  # its page
    assert balance(f"driver:{asked.driver_id}:receivable") == 0
    assert not_paid(order_of(bap, asked.booking)) == 0
    assert balance("refunds:pending") == 0
    assert_books_balance()


def test_the_old_page_paid_after_the_credit_takes_only_what_is_left_and_the_new_page_then_nothing(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    asked: Payment,
) -> None:
    """The driver was paying the old page when the credit came: its webhook arrives after. It takes what is owed,
    the rest of its hold released at the capture; the new page, paid too, is released."""
    driver = f"driver:{asked.driver_id}:receivable"
    credited(bap, network, PART)
    rest = replacement_of(asked)

    assert provider_says(bap, asked, "evt_old", AUTHORISED, payment_id="pi_2", amount_minor=46327) == "authorised"

    asked.refresh_from_db()
    assert (asked.status, asked.captured_minor, asked.billed_minor) == (Payment.Status.CAPTURED, 34291, 34291)
    assert [kw["amount_minor"] for name, kw in fake.calls if name == "capture"] == [34291]
    rest.refresh_from_db()
    assert (rest.status, rest.billed_minor, rest.url) == (Payment.Status.RELEASED, 0, "")  # withdrawn in turn
    assert balance(driver) == 0
    assert not_paid(order_of(bap, asked.booking)) == 0

    provider_says(bap, rest, "evt_new", AUTHORISED, payment_id="pi_3", amount_minor=34291)
    rest.refresh_from_db()
    assert (rest.status, rest.captured_minor) == (Payment.Status.RELEASED, 0)
    assert [kw["payment_id"] for name, kw in fake.calls if name == "release"][-1] == "pi_3"
    assert balance(driver) == 0
    assert balance("holds:fake") == 0
    assert_books_balance()


def test_the_old_page_paid_after_the_new_one_is_released(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    asked: Payment,
) -> None:
    credited(bap, network, PART)
    rest = replacement_of(asked)
    provider_says(bap, rest, "evt_new", AUTHORISED, payment_id="pi_3")

    provider_says(bap, asked, "evt_old", AUTHORISED, payment_id="pi_2", amount_minor=46327)

    asked.refresh_from_db()
    rest.refresh_from_db()
    assert (asked.status, asked.captured_minor) == (Payment.Status.RELEASED, 0)
    assert (rest.status, rest.captured_minor) == (Payment.Status.CAPTURED, 34291)
    assert [kw["amount_minor"] for name, kw in fake.calls if name == "capture"] == [34291]  # taken once
    assert balance(f"driver:{asked.driver_id}:receivable") == 0
    assert balance("holds:fake") == 0
    assert_books_balance()


def test_the_old_page_paid_after_a_credit_covered_its_bill_is_released(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    asked: Payment,
) -> None:
    credited(bap, network)

    provider_says(bap, asked, "evt_old", AUTHORISED, payment_id="pi_2", amount_minor=46327)

    asked.refresh_from_db()
    assert (asked.status, asked.captured_minor) == (Payment.Status.RELEASED, 0)
    assert not [name for name, _ in fake.calls if name == "capture"]
    assert balance(f"driver:{asked.driver_id}:receivable") == 0
    assert balance("holds:fake") == 0
    assert_books_balance()


def test_a_credit_after_the_balance_page_failed_lowers_its_bill_where_it_is(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    asked: Payment,
) -> None:
    """A declined card: the page failed, and the driver may still try it again. No new page is opened; the bill is
    lowered, so the page paid after takes only what is owed."""
    provider_says(bap, asked, "evt_declined", FAILED, payment_id="pi_2")
    checkouts = len(pages(fake))

    credited(bap, network, PART)

    asked.refresh_from_db()
    assert (asked.status, asked.billed_minor) == (Payment.Status.FAILED, 34291)
    assert Payment.objects.filter(purpose="balance").count() == 1 and len(pages(fake)) == checkouts
    provider_says(bap, asked, "evt_retried", AUTHORISED, payment_id="pi_2", amount_minor=46327)
    asked.refresh_from_db()
    assert (asked.status, asked.captured_minor) == (Payment.Status.CAPTURED, 34291)
    assert balance(f"driver:{asked.driver_id}:receivable") == 0
    assert balance("holds:fake") == 0
    assert_books_balance()


def test_a_credit_processed_again_lowers_the_balance_once(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    asked: Payment,
) -> None:
    credited(bap, network, PART)

    with bap.capture(execute=True):
        payments.bill(DriverReceipt.objects.get(cdr__cdr_id="CDR-LATE-C"))

    rest = replacement_of(asked)
    assert rest.billed_minor == 34291
    assert Payment.objects.filter(purpose="balance").count() == 2
    assert balance(f"driver:{asked.driver_id}:receivable") == LEFT
    assert_books_balance()


@pytest.mark.parametrize("total", [PART, None], ids=["part", "all"])
def test_a_credit_while_the_rest_above_the_hold_is_asked_lowers_the_rest_before_refunding_the_hold(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    settings: Any,
    total: dict[str, Any] | None,
) -> None:
    """The driver paid the hold and is asked the rest: the credit is taken off the rest first (it had been refunded
    to the card while the page asked for all the rest); only what goes beyond the rest is refunded over the hold."""
    pages_at_the_provider(fake, settings)
    charge = authorised_charge(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    first = store(bap, network, cdr_of(booking, "CDR-1", session_id="S-1", excl=600, incl=708))
    charge.refresh_from_db()
    asked = Payment.objects.get(booking=booking, purpose="balance")
    assert (charge.status, asked.status) == (Payment.Status.CAPTURED, Payment.Status.PENDING)
    assert charge.captured_minor + asked.billed_minor == 72806  # 708 + our fee 17.00 and its VAT 3.06
    driver = f"driver:{charge.driver_id}:receivable"

    credit = credit_for(first, "CDR-1-C")
    store(bap, network, {**credit, "total_cost": total} if total else credit)

    asked.refresh_from_db()
    assert (asked.status, asked.billed_minor) == (Payment.Status.RELEASED, 0)
    refunds = [(o.payment_id, o.amount_minor) for o in PaymentOperation.objects.filter(kind="refund")]
    if total:  # 120.36 given back: less than the rest (172.13)
        assert replacement_of(asked).billed_minor == 17213 - 12036
        assert refunds == []
        assert balance(driver) == Decimal("51.77")
    else:  # all of it: the rest asks nothing, the hold is refunded
        assert Payment.objects.filter(booking=booking, purpose="balance").count() == 1
        assert refunds == [(charge.pk, 55593)]
        assert balance(driver) == 0
    assert balance("refunds:pending") == 0
    assert_books_balance()


def test_a_wallets_balance_payment_is_not_lowered(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    peer: FakePeer,
) -> None:
    """A credit on a wallet is credited to the wallet, as before: no page asks a wallet driver anything."""
    wallet_driver()
    booking = lost_start_cancelled(bap, peer, ordered(bap))
    late_charge(bap, network, booking)
    taken = Payment.objects.get(booking=booking, purpose="balance")
    Payment.objects.filter(pk=taken.pk).update(status=Payment.Status.PENDING)  # as if the wallet had been empty

    credited(bap, network, PART)

    taken.refresh_from_db()
    assert (taken.status, taken.billed_minor) == (Payment.Status.PENDING, 46327)
    assert Payment.objects.filter(purpose="balance").count() == 1
    assert LedgerEntry.objects.filter(idempotency_key__startswith="cdr:", idempotency_key__endswith=":refund").exists()


# --- the old page paid at the very moment the credit comes (PostgreSQL: two transactions at once) ----------------


def asked_at_the_provider(fake: Fake, settings: Any) -> tuple[Payment, Payment]:
    """A booking whose charge payment's hold was released, and a `balance` payment whose page asks 100.00 of the
    driver (owed on their receivable)."""
    pages_at_the_provider(fake, settings)
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    evse = stored_location(partner).evses.first()
    booking = Booking.objects.create(order_id="ORD-1", evse=evse, connector_id="1", state=Booking.State.CANCELLED)
    driver = DriverFactory(currency="INR")
    fields = {"driver": driver, "booking": booking, "provider": "fake", "currency": "INR"}
    charge = Payment.objects.create(**fields, status=Payment.Status.RELEASED)
    asked = Payment.objects.create(
        **fields, purpose="balance", billed_minor=10000, requested_minor=10000, checkout_id="cs_1", url="https://p/1"
    )
    charge_booked(driver, Decimal("100"), "c1")
    return charge, asked


def credit_of_40(charge: Payment) -> None:
    with transaction.atomic():
        postings.credit(currency="INR", amount=Decimal("40"), borne_by=accounts.dispute_expense("INR"),
                        reference="dispute:1", key="dispute:1:credit")  # fmt: skip
        payments.refund_due(payment=charge, amount=Decimal("40"), reference="dispute:1", driver_id=charge.driver_id)


def old_page_paid(asked: Payment) -> str:
    return payments.webhook_receive(
        WebhookEvent(
            provider="fake", event_id="evt_old", type=AUTHORISED, provider_type="authorised",
            reference=payments.reference_of(asked), payment_id="pi_2", amount_minor=10000, currency="INR",
        )
    )  # fmt: skip


def held_after(monkeypatch: pytest.MonkeyPatch, name: str) -> threading.Event:
    """payments.<name> holds its transaction open after it ran, until another transaction waits on a row lock (or
    5 s): the event says it got there."""
    reached, real = threading.Event(), getattr(payments, name)

    def then_hold(*args: Any) -> Any:
        result = real(*args)
        reached.set()
        _until(threading.Event())
        return result

    monkeypatch.setattr(payments, name, then_hold)
    return reached


def at_once(first: Any, second: Any, reached: threading.Event) -> None:
    one, one_out = _run(first)
    assert reached.wait(10)
    other, other_out = _run(second)
    for thread in (one, other):
        thread.join(20)
    assert "error" not in one_out and "error" not in other_out, (one_out, other_out)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_the_old_page_paid_while_the_credit_lowers_it_takes_what_is_left(
    monkeypatch: pytest.MonkeyPatch,
    fake: Fake,
    settings: Any,
) -> None:
    """The credit has withdrawn the page and not committed when its webhook comes: the webhook waits for the
    payment's row, then takes over the new page's bill (60.00), and the new page asks nothing."""
    charge, asked = asked_at_the_provider(fake, settings)
    reached = held_after(monkeypatch, "_balance_lowered")

    at_once(lambda: credit_of_40(charge), lambda: old_page_paid(asked), reached)

    asked.refresh_from_db()
    assert (asked.status, asked.captured_minor) == (Payment.Status.CAPTURED, 6000)
    rest = Payment.objects.get(booking=asked.booking, purpose="balance", pk__gt=asked.pk)
    assert (rest.status, rest.billed_minor) == (Payment.Status.RELEASED, 0)
    assert balance(f"driver:{asked.driver_id}:receivable") == 0
    assert balance("holds:fake") == 0
    assert_books_balance()


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_credit_while_the_old_page_is_being_authorised_is_refunded_over_it(
    monkeypatch: pytest.MonkeyPatch,
    fake: Fake,
    settings: Any,
) -> None:
    """The page's authorisation has not committed when the credit comes: the credit waits for the payment's row,
    finds it authorised, and refunds over it (after its capture) instead of lowering a page already paid."""
    charge, asked = asked_at_the_provider(fake, settings)
    reached = held_after(monkeypatch, "_queue_capture")

    at_once(lambda: old_page_paid(asked), lambda: credit_of_40(charge), reached)

    asked.refresh_from_db()
    assert (asked.billed_minor, asked.captured_minor) == (10000, 10000)
    assert Payment.objects.filter(purpose="balance").count() == 1  # not lowered: it was paid
    assert PaymentOperation.objects.get(payment=asked, kind="refund").amount_minor == 4000
    assert balance(f"driver:{asked.driver_id}:receivable") == 0
    assert_books_balance()


def credit_of(charge: Payment, amount: str, reference: str) -> None:
    with transaction.atomic():
        postings.credit(currency="INR", amount=Decimal(amount), borne_by=accounts.dispute_expense("INR"),
                        reference=reference, key=f"{reference}:credit")  # fmt: skip
        payments.refund_due(payment=charge, amount=Decimal(amount), reference=reference, driver_id=charge.driver_id)


def still_asked() -> int:
    return sum(p.billed_minor or 0 for p in Payment.objects.filter(purpose="balance", status=Payment.Status.PENDING))


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_credits_at_once_each_lower_the_page(monkeypatch: pytest.MonkeyPatch, fake: Fake, settings: Any) -> None:
    """A credit CDR and a dispute's credit of one booking at the same moment: the second waits for the first and
    lowers the page it opened (it had not seen it, and booked its credit to the account while the page asked it)."""
    charge, _asked = asked_at_the_provider(fake, settings)
    for account in (accounts.dispute_expense, accounts.refunds_pending):
        account("INR")  # the ledger's accounts exist, as on a running platform
    accounts.driver_receivable(charge.driver_id, "INR")
    reached = held_after(monkeypatch, "_balance_lowered")

    at_once(lambda: credit_of(charge, "40", "dispute:1"), lambda: credit_of(charge, "30", "dispute:2"), reached)

    assert balance(f"driver:{charge.driver_id}:receivable") == Decimal("30.00")
    assert still_asked() == 3000
    assert_books_balance()


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_credit_while_a_lapsed_holds_bill_gets_its_page_lowers_that_page(
    monkeypatch: pytest.MonkeyPatch, fake: Fake, settings: Any
) -> None:
    """The charge's hold lapsed before its capture, and its bill is being asked with a page of its own when the
    credit comes: the credit waits for the page and lowers it (it had asked the whole bill)."""
    charge, asked = asked_at_the_provider(fake, settings)
    asked.delete()  # no page yet: the capture finds the hold lapsed and makes it
    Payment.objects.filter(pk=charge.pk).update(billed_minor=10000, authorised_minor=10000)
    PaymentOperation.objects.create(
        payment=charge, kind=PaymentOperation.Kind.CAPTURE, amount_minor=10000, idempotency_key=f"{charge.key}:capture"
    )
    reached = held_after(monkeypatch, "_collect_after_lapse")

    at_once(lambda: payments.payment_capture(charge.pk), lambda: credit_of(charge, "40", "dispute:1"), reached)

    assert balance(f"driver:{charge.driver_id}:receivable") == Decimal("60.00")
    assert still_asked() == 6000
    assert_books_balance()


def test_a_failed_page_a_credit_covers_is_withdrawn_not_shown_to_pay_for_nothing(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    asked: Payment,
) -> None:
    provider_says(bap, asked, "evt_declined", FAILED, payment_id="pi_2")

    credited(bap, network)  # the whole late charge

    asked.refresh_from_db()
    assert (asked.status, asked.billed_minor, asked.url) == (Payment.Status.RELEASED, 0, "")
    shown = [(p["status"], p["params"]["amount"], p.get("url")) for p in order_of(bap, asked.booking)["payments"]]
    assert not [s for s in shown if s[2]], shown
    assert balance(f"driver:{asked.driver_id}:receivable") == 0
    assert_books_balance()
