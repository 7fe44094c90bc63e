"""A hold the provider let lapse before the capture, against paysim as a real process through the providers' own
SDKs: Razorpay refunds an authorisation itself when the account's manual-capture timeout passes (the payment is
then `refunded` with `captured: false`), Stripe cancels a PaymentIntent not captured within its 7 days (status
`canceled`). Nothing was taken: the capture is not booked, the hold is released in our books, and the bill is
asked for again with a balance payment and its page (docs/payments.md, *A hold released after it was billed*).
Razorpay's capture had read `refunded` as captured: the bill booked as taken (clearing debited, the driver owing
nothing) though the driver paid nothing, and never asked for."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import requests

from billing.models import Payment, PaymentOperation
from tests.beckn.test_actions import last
from tests.beckn.test_payments_journey import BILL, assert_books_balance, balance, charge_and_cdr, start
from tests.beckn.test_payments_provider import _earlier_deliveries as _earlier_deliveries
from tests.beckn.test_payments_provider import (
    book_and_authorise,
    checkout_id,
    hand_over,
    post_webhook,
)
from tests.beckn.test_payments_provider import provider as provider
from tests.paysim.conftest import pay
from tests.paysim.conftest import paysim as paysim
from tests.paysim.conftest import receiver as receiver

pytestmark = [pytest.mark.django_db, pytest.mark.we_collect]

# What the provider says of the lapse itself, after it: Stripe's cancel, Razorpay's refund of the uncaptured payment.
LAPSE_EVENT = {"stripe": "payment_intent.canceled", "razorpay": "refund.processed"}


def test_a_hold_that_lapsed_at_the_provider_before_the_capture_is_not_booked_captured_and_its_bill_is_asked_again(
    bap: Any,
    network: Any,
    paysim: str,
    receiver: Any,
    provider: str,
) -> None:
    seen: set[int] = set()
    order_id, _ = book_and_authorise(bap, paysim, receiver, provider, seen)
    assert "error" not in start(bap, order_id)
    charge = Payment.objects.get(booking__order_id=order_id, purpose="charge")
    # The provider's capture window passes (paysim: Razorpay auto-refunds, Stripe cancels); its webhook is not read
    # before the CDR comes.
    lapsed = requests.post(f"{paysim}/paysim/expire/{charge.provider_payment_id}", timeout=10)
    assert lapsed.status_code == 200, lapsed.text

    charge_and_cdr(bap, network, order_id)  # the capture runs at once

    charge.refresh_from_db()
    assert (charge.status, charge.captured_minor, charge.billed_minor) == (Payment.Status.RELEASED, 0, None)
    capture = PaymentOperation.objects.get(payment=charge, kind="capture")
    assert capture.status == PaymentOperation.Status.FAILED and "lapsed" in capture.error
    collected = Payment.objects.get(booking__order_id=order_id, purpose="balance")
    assert (collected.status, collected.billed_minor) == (Payment.Status.PENDING, 46327)
    assert collected.url.startswith(paysim)
    assert balance(f"clearing:{provider}") == 0  # nothing was taken
    assert balance(f"driver:{charge.driver_id}:receivable") == BILL  # still owed, and asked for
    assert balance(f"holds:{provider}") == balance(f"holds:{provider}:authorised") == 0
    assert_books_balance()
    order = last(bap, "on_update")["message"]["order"]
    owed = [p for p in order["payments"] if p["status"] == "NOT-PAID"]
    assert sum(Decimal(p["params"]["amount"]) for p in owed) == BILL
    assert collected.url in [p.get("url") for p in owed]

    # The provider's own word on the lapse, read after: noted, nothing asked twice.
    state, _ = receiver
    delivery = state.event(provider, LAPSE_EVENT[provider], charge.provider_payment_id)
    answer = post_webhook(provider, delivery.body, delivery.headers)
    assert answer.status_code == 200 and answer.json()["outcome"] == "noted (released)", answer.content
    assert Payment.objects.filter(booking__order_id=order_id, purpose="balance").count() == 1

    # The driver pays the new page: the bill is taken there.
    pay(paysim, checkout_id(collected.url))
    with bap.capture(execute=True):  # the capture the webhook queues
        assert hand_over(receiver, provider, "authorised", seen).status_code == 200
    collected.refresh_from_db()
    assert (collected.status, collected.captured_minor) == (Payment.Status.CAPTURED, 46327)
    assert balance(f"driver:{charge.driver_id}:receivable") == 0
    assert balance(f"clearing:{provider}") == BILL
    assert_books_balance()
