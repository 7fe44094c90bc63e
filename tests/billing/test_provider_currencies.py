"""Stripe is sent its own API amounts, not ISO 4217 minor units (ours): an ISK amount is hundredths of a króna at
Stripe, and comes back in whole krónur from its answers and webhooks; a currency Stripe can't charge exactly in
every amount (MGA in whole ariary, the three-decimal dinars in tens of fils) is refused at checkout, before the
driver authorises anything. Driven through Stripe's SDK against paysim as a real process."""

from __future__ import annotations

import pytest
import requests

from billing.payments import gateway as port
from billing.payments.stripe_gateway import StripeGateway, exact_at_stripe, from_stripe_amount, to_stripe_amount
from tests.paysim.conftest import Receiver, pay
from tests.paysim.conftest import paysim as paysim
from tests.paysim.conftest import receiver as receiver
from tests.paysim.conftest import stripe as stripe
from tests.paysim.test_paysim import checkout, payout_rows, reference, verified


def test_an_isk_payment_goes_to_stripe_in_its_two_decimal_amounts_and_comes_back_in_kronur(
    paysim: str, stripe: StripeGateway, receiver: tuple[Receiver, str]
) -> None:
    hooks, ref = receiver[0], reference()
    page = checkout(stripe, 6000, "ISK", ref)  # 6000 kr
    shown = requests.get(page.url, timeout=10).text
    assert "<h1 id='amount'>ISK 6000.00</h1>" in shown  # not 60.00 kr

    payment_id = pay(paysim, page.checkout_id)["payment_id"]
    authorised = verified(stripe, hooks, "stripe", "payment_intent.amount_capturable_updated", payment_id)
    assert (authorised.type, authorised.amount_minor, authorised.currency) == (port.AUTHORISED, 6000, "ISK")

    captured = stripe.capture(payment_id=payment_id, amount_minor=5000, currency="ISK", idempotency_key=f"cap:{ref}")
    assert captured.amount_minor == 5000
    event = verified(stripe, hooks, "stripe", "payment_intent.succeeded", payment_id)
    assert (event.type, event.amount_minor) == (port.CAPTURED, 5000)

    refund = stripe.refund(payment_id=payment_id, amount_minor=1000, currency="ISK", idempotency_key=f"ref:{ref}")
    assert refund.amount_minor == 1000
    event = verified(stripe, hooks, "stripe", "refund.created", payment_id)
    assert (event.type, event.amount_minor) == (port.REFUNDED, 1000)

    rows = [r for r in payout_rows(paysim, "stripe") if r["payment_intent_id"] == payment_id]
    assert [r["gross"] for r in rows] == ["5000.00", "-1000.00"]  # krónur, in Stripe's two-decimal report


@pytest.mark.parametrize("currency", ["MGA", "BHD", "JOD", "KWD", "OMR", "TND"])
def test_a_currency_stripe_cannot_charge_exactly_is_refused_at_checkout(
    stripe: StripeGateway, currency: str, paysim: str
) -> None:
    with pytest.raises(port.GatewayError) as refused:
        checkout(stripe, 14820, currency, reference())

    assert refused.value.retryable is False  # the same checkout would be refused again
    assert refused.value.code == "currency_not_exact"
    assert currency in str(refused.value)


@pytest.mark.parametrize("currency", ["EUR", "JPY", "INR", "USD", "ISK", "HUF", "XPF"])
def test_currencies_stripe_charges_to_the_minor_unit_are_taken(currency: str) -> None:
    assert exact_at_stripe(currency)


@pytest.mark.parametrize(
    ("amount", "currency", "at_stripe"),
    [(5000, "EUR", 5000), (5000, "JPY", 5000), (5000, "ISK", 500000), (120000, "MGA", 1200), (1480, "KWD", 1480)],
)
def test_amounts_are_converted_both_ways_exactly(amount: int, currency: str, at_stripe: int) -> None:
    assert to_stripe_amount(amount, currency) == at_stripe
    assert from_stripe_amount(at_stripe, currency) == amount


@pytest.mark.parametrize(("amount", "currency"), [(1481, "KWD"), (120050, "MGA")])
def test_an_amount_stripe_cannot_carry_is_refused_not_rounded(amount: int, currency: str) -> None:
    with pytest.raises(port.GatewayError) as refused:
        to_stripe_amount(amount, currency)
    assert refused.value.retryable is False


def test_an_isk_amount_from_stripe_that_is_not_whole_kronur_is_not_read_as_one() -> None:
    with pytest.raises(ValueError):
        from_stripe_amount(550, "ISK")


def test_a_capture_of_an_amount_stripe_cannot_carry_is_refused_before_any_call(stripe: StripeGateway) -> None:
    with pytest.raises(port.GatewayError) as refused:
        stripe.capture(payment_id="pi_none", amount_minor=1481, currency="KWD", idempotency_key="k")
    assert (refused.value.retryable, refused.value.code) == (False, "amount_not_exact")
