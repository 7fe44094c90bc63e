"""A stand-in payment provider behind the gateway port (billing/payments/gateway.py), for the unit tests of the
payment flow: it answers as a provider would, records every call, and fails where a test asks it to. The port is
the seam to the outside; the real adapters are tested against recorded provider responses
(tests/billing/payments/) and against paysim as a process (tests/paysim/, tests/beckn/test_payments_provider.py)."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from billing.models import Payment
from billing.payments.gateway import PAGE_CLOSED, CheckoutExpiry, GatewayError, GatewayResult, WebhookEvent
from billing.services import accounts, ledger, postings


class Fake:
    name = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.event: WebhookEvent | None = None
        self.fail_capture = False
        self.fail_release = False
        self.expire_errors: list[GatewayError] = []  # raised by the next expire_checkout calls, one each
        self.expired_as = PAGE_CLOSED  # what expire_checkout answers (PAGE_PAID: the driver paid first…)

    def capture(self, **kw: Any) -> GatewayResult:
        self.calls.append(("capture", kw))
        if self.fail_capture:
            raise GatewayError("connection reset", retryable=True)
        return GatewayResult(reference="cap", amount_minor=kw["amount_minor"], status="captured")

    def release(self, **kw: Any) -> GatewayResult:
        self.calls.append(("release", kw))
        if self.fail_release:
            raise GatewayError("timeout (the provider did cancel)", retryable=True)
        return GatewayResult(reference="rel", amount_minor=0, status="canceled")

    def refund(self, **kw: Any) -> GatewayResult:
        self.calls.append(("refund", kw))
        return GatewayResult(reference="rf", amount_minor=kw["amount_minor"], status="succeeded")

    def expire_checkout(self, **kw: Any) -> CheckoutExpiry:
        self.calls.append(("expire_checkout", kw))
        if self.expire_errors:
            raise self.expire_errors.pop(0)
        status = {"closed": "expired", "already_closed": "expired", "paid": "complete"}[self.expired_as]
        return CheckoutExpiry(checkout_id=kw["checkout_id"], outcome=self.expired_as, status=status)

    def verify_webhook(self, **kw: Any) -> WebhookEvent:
        assert self.event is not None
        return self.event


FAKE = Fake()


def fake_gateway() -> Fake:
    """The adapter factory the settings name (PAYMENT_PROVIDERS["fake"]): the current test's stand-in."""
    return FAKE


@pytest.fixture
def fake(settings: Any) -> Fake:
    """A fresh stand-in, registered as the provider "fake"."""
    global FAKE
    FAKE = Fake()
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["fake"] = {"adapter": f"{__name__}.fake_gateway"}
    settings.PAYMENT_PROVIDERS = providers
    return FAKE


def authorised(driver: Any, *, auth: int = 12000, billed: int | None = None) -> Payment:
    """A payment at the stand-in, authorised (its hold booked) and, with `billed`, billed."""
    p = Payment.objects.create(
        driver=driver,
        provider="fake",
        currency="INR",
        status=Payment.Status.AUTHORISED,
        authorised_minor=auth,
        billed_minor=billed,
        provider_payment_id="pi_1",
    )
    postings.authorisation(p, auth)
    return p


def charge_booked(driver: Any, amount: Decimal, key: str) -> None:
    """A bill of `amount` on the driver's receivable, owed to CPO IN*CPA (what a CDR would book)."""
    ledger.post(
        event="charge",
        legs=[
            ledger.Leg(accounts.driver_receivable(driver.pk, "INR"), amount),
            ledger.Leg(accounts.cpo_payable("IN*CPA", "INR"), -amount),
        ],
        idempotency_key=key,
    )
