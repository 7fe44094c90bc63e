"""`manage.py settlement_payment --party driver:<id>`: finance paid a driver what their account holds in credit (a
refund the provider could not make, listed on the exceptions queue's "Owed on drivers' accounts") and books it once
per bank reference: the driver's receivable back to zero, our bank credited, the driver off the queue. Without it
the driver stayed listed for ever (paid again on every visit) and the books never showed the money leaving."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from billing import finance
from billing.models import LedgerEntry, Payment
from billing.services import accounts, ledger
from tests.billing.payments.test_driver_credits_queue import exceptions_page
from tests.billing.payments.test_review_fixes_2 import captured_at, credit_refunded, post_signed, refund_event
from tests.billing.payments.test_review_fixes_2 import signed_providers as signed_providers
from tests.billing.test_finance_console import VIEW, login, row_of, section
from tests.factories import DriverFactory

pytestmark = pytest.mark.django_db


def pay(driver_id: int | str, paid: str, *, currency: str = "INR", reference: str = "UTR-9") -> str:
    out = io.StringIO()
    call_command(
        "settlement_payment", "--party", f"driver:{driver_id}", "--paid", paid, "--currency", currency,
        "--reference", reference, stdout=out,
    )  # fmt: skip
    return out.getvalue()


@pytest.fixture
def owed(signed_providers: None) -> Payment:
    """A charge of 463.27 captured at Razorpay, refunded in full for a dispute, the refund failed: 463.27 owed to
    the driver on their account (the reviewer's scenario)."""
    charge = captured_at("razorpay")
    refund = credit_refunded(charge, Decimal("463.27"), "dispute:9")
    failed = refund_event("razorpay", charge, name="refund.failed", amount=46327, key=refund.idempotency_key)
    assert post_signed("razorpay", failed).json()["outcome"] == "refund failed: 463.27 credited to the driver's account"
    assert [(c.driver_id, c.amount) for c in finance.driver_credits()] == [(charge.driver_id, Decimal("463.27"))]
    return charge


def receivable(charge: Payment) -> Decimal:
    return ledger.balance(accounts.driver_receivable(charge.driver_id, "INR"))


def payouts() -> int:
    return LedgerEntry.objects.filter(event="settlement_payout").count()


def test_paying_the_driver_what_they_are_owed_books_it_once_and_takes_them_off_the_queue(owed: Payment) -> None:
    bank = ledger.balance(accounts.bank("INR"))

    out = pay(owed.driver_id, "463.27")

    assert f"driver {owed.driver_id} INR: owed 0.00" in out
    assert finance.exceptions().driver_credits == []
    assert receivable(owed) == 0
    assert ledger.balance(accounts.bank("INR")) == bank - Decimal("463.27")
    entry = LedgerEntry.objects.get(event="settlement_payout")
    assert (entry.reference, entry.idempotency_key) == (
        f"driver:{owed.driver_id}",
        f"settlement-payment:driver:{owed.driver_id}:UTR-9",
    )
    assert sum(ledger.trial_balance("INR").values()) == 0
    assert "None." in section(exceptions_page(login(*VIEW)), "exceptions-driver-credits")

    again = pay(owed.driver_id, "463.27")  # the same bank reference run again: nothing more

    assert "UTR-9: booked before, nothing posted now" in again
    assert payouts() == 1
    assert receivable(owed) == 0
    assert ledger.balance(accounts.bank("INR")) == bank - Decimal("463.27")


def test_a_part_paid_leaves_the_rest_listed_and_the_rest_can_be_paid_later(owed: Payment) -> None:
    pay(owed.driver_id, "400.00", reference="UTR-1")

    assert [(c.driver_id, c.amount) for c in finance.driver_credits()] == [(owed.driver_id, Decimal("63.27"))]
    assert receivable(owed) == Decimal("-63.27")
    with pytest.raises(CommandError, match=r"owed 63\.27 INR"):
        pay(owed.driver_id, "463.27", reference="UTR-2")  # the whole of it again: more than is left

    pay(owed.driver_id, "63.27", reference="UTR-2")

    assert finance.driver_credits() == []
    assert (receivable(owed), payouts()) == (0, 2)
    assert sum(ledger.trial_balance("INR").values()) == 0


def test_the_exceptions_page_names_the_command_for_the_listed_driver(owed: Payment) -> None:
    page = section(exceptions_page(login(*VIEW)), "exceptions-driver-credits")

    row = row_of(page, f'id="driver-credit-{owed.driver_id}-INR"')
    assert (
        f"manage.py settlement_payment --party driver:{owed.driver_id} --paid 463.27 --currency INR --reference …"
        in row
    )
    assert "manage.py settlement_payment --party driver:&lt;id&gt;" in page  # the help line


@pytest.mark.parametrize(
    ("paid", "currency", "message"),
    [
        ("463.28", "INR", r"owed 463\.27 INR .*463\.28 INR is more"),
        ("1000", "INR", r"owed 463\.27 INR"),
        ("100", "EUR", r"no account in EUR: theirs is in INR"),
        ("0", "INR", "positive"),
        ("-5", "INR", "positive"),
        ("NaN", "INR", "positive"),
        ("1.001", "INR", "decimals"),
    ],
)
def test_it_refuses_more_than_is_owed_another_currency_and_odd_amounts(
    owed: Payment, paid: str, currency: str, message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        pay(owed.driver_id, paid, currency=currency)

    assert payouts() == 0
    assert receivable(owed) == Decimal("-463.27")


def test_a_reference_booked_before_for_another_amount_is_refused(owed: Payment) -> None:
    pay(owed.driver_id, "100.00")

    with pytest.raises(CommandError, match=r"booked before for 100\.00 INR, not 200\.00 INR"):
        pay(owed.driver_id, "200.00")

    assert payouts() == 1
    assert receivable(owed) == Decimal("-363.27")


@pytest.mark.parametrize("who", ["999999", "abc", "12345678901234567890", "", "١٢"])
def test_it_refuses_an_unknown_driver(who: str) -> None:
    with pytest.raises(CommandError, match=r"no driver|--party is"):
        pay(who, "10")

    assert payouts() == 0


def test_it_refuses_a_driver_owed_nothing() -> None:
    from tests.billing.provider_standin import charge_booked

    owing = DriverFactory(currency="INR")
    charge_booked(owing, Decimal("120.00"), "cdr:1")  # a bill on their receivable: they owe us
    never = DriverFactory(currency="INR")  # no account at all

    with pytest.raises(CommandError, match="not in credit"):
        pay(owing.pk, "10")
    with pytest.raises(CommandError, match=f"driver {never.pk} has no account in INR: nothing is owed"):
        pay(never.pk, "10")
    with pytest.raises(CommandError, match="is paid"):
        call_command("settlement_payment", party=f"driver:{owing.pk}", received="10", currency="INR", reference="X")

    assert payouts() == 0
    assert ledger.balance(accounts.driver_receivable(owing.pk, "INR")) == Decimal("120.00")
