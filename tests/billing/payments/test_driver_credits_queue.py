"""The exceptions queue shows what we owe drivers on their accounts: a refund the provider could not make (Stripe's
or Razorpay's refund.failed after we booked it paid) is credited to the driver's account, and nothing pays it back
by itself, so finance must see it (billing/finance.py `driver_credits`, the console's exceptions page)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from billing import finance
from tests.billing.payments.test_review_fixes_2 import captured_at, credit_refunded, post_signed, refund_event
from tests.billing.payments.test_review_fixes_2 import signed_providers as signed_providers
from tests.billing.test_finance_console import VIEW, login, row_of, section
from tests.factories import DriverFactory

pytestmark = pytest.mark.django_db


def exceptions_page(client: Client) -> str:
    response = client.get(reverse("admin:billing_payment_exceptions"))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.usefixtures("signed_providers")
@pytest.mark.parametrize("provider", ["stripe", "razorpay"])
def test_a_refund_that_failed_at_the_provider_is_on_the_exceptions_queue_as_owed_to_the_driver(provider: str) -> None:
    charge = captured_at(provider)
    refund = credit_refunded(charge, Decimal("463.27"), "dispute:9")
    assert finance.exceptions().driver_credit_count == 0  # refunded: nothing owed

    failed = refund_event(provider, charge, name="refund.failed", amount=46327, key=refund.idempotency_key)
    assert post_signed(provider, failed).json()["outcome"] == "refund failed: 463.27 credited to the driver's account"

    found = finance.exceptions()
    assert [(c.driver_id, c.currency, c.amount) for c in found.driver_credits] == [
        (charge.driver_id, "INR", Decimal("463.27"))
    ]
    assert found.driver_credits_by_currency == {"INR": Decimal("463.27")}
    assert found.total >= 1
    page = section(exceptions_page(login(*VIEW)), "exceptions-driver-credits")
    row = row_of(page, f'id="driver-credit-{charge.driver_id}-INR"')
    assert ">463.27</td>" in row
    assert reverse("admin:emsp_driver_change", args=[charge.driver_id]) in row
    assert 'id="driver-credits-INR">463.27 INR<' in page


def test_a_driver_who_owes_us_or_is_square_is_not_listed() -> None:
    from billing.services import accounts, postings
    from tests.billing.provider_standin import charge_booked

    owing = DriverFactory(currency="INR")
    charge_booked(owing, Decimal("120.00"), "cdr:1")  # a bill on their receivable: they owe us
    square = DriverFactory(currency="INR")
    postings.refund(currency="INR", amount=Decimal("5.00"), reference="dispute:1", key="k1",
                    paid_from=accounts.driver_receivable(square.pk, "INR"))  # fmt: skip
    charge_booked(square, Decimal("5.00"), "cdr:2")  # then billed as much

    assert finance.exceptions().driver_credits == []
    assert "None." in section(exceptions_page(login(*VIEW)), "exceptions-driver-credits")
