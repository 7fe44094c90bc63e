"""A hold the driver authorised at init's page with no order confirmed on it, against paysim as a real process
through the providers' own SDKs. on_init gives the app the hosted page, so a driver may pay before confirming; a
confirm then refused (the charger out of order, the quote expired) or never sent had left the payment AUTHORISED
with no booking for good: no cancel, bill or sweep of operations looks at it, and the driver's money stayed held
until the provider let it lapse (7 days at Stripe). It is released once no order can be confirmed with it any more
(the beat's billing.tasks.release_unbooked_holds; at once when it was authorised after its quote expired), never
while a confirm could still bind it; and a confirm that comes after is refused with a Beckn error, not booked."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from billing import tasks as billing_tasks
from billing.models import Payment, PaymentOperation, Quote
from billing.services import payments
from billing.services.driver_pricing import QUOTE_TTL
from emsp.models import Booking, Driver, Evse
from tests.beckn.test_actions import confirm, init, item_of, select
from tests.beckn.test_payments_journey import assert_books_balance, balance, start
from tests.beckn.test_payments_provider import _earlier_deliveries as _earlier_deliveries
from tests.beckn.test_payments_provider import checkout_id, hand_over
from tests.beckn.test_payments_provider import provider as provider
from tests.billing.test_settlement_review_fixes import _run, needs_postgres
from tests.paysim.conftest import pay
from tests.paysim.conftest import paysim as paysim
from tests.paysim.conftest import receiver as receiver

pytestmark = [pytest.mark.django_db, pytest.mark.we_collect]


@pytest.fixture
def sweep(django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[[], int]:
    """The beat's task as a worker runs it, with the release it queues after its commit run too."""

    def run() -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return billing_tasks.release_unbooked_holds.apply().get()

    return run


def paid_before_confirming(bap: Any, paysim: str, receiver: Any, provider: str) -> Payment:
    """select, init, and the driver pays init's page at once: the provider's webhook says AUTHORISED."""
    select(bap, item_of(bap))
    offered = init(bap)["message"]["order"]["payments"][0]
    pay(paysim, checkout_id(offered["url"]))
    with bap.capture(execute=True):
        answer = hand_over(receiver, provider, "authorised", set())
    assert answer.status_code == 200 and answer.json()["outcome"] == "authorised", answer.content
    payment = Payment.objects.get()
    assert (payment.status, payment.booking_id) == (Payment.Status.AUTHORISED, None)
    return payment


def quotes_expired(ago: timedelta = timedelta(minutes=2)) -> None:
    """Time runs out for the journey's quote, held QUOTE_TTL from its init (its payment made then), `ago`."""
    now = timezone.now()
    Payment.objects.update(created_at=now - QUOTE_TTL - ago)
    Quote.objects.update(valid_until=now - ago)


def assert_released(payment: Payment, provider: str) -> None:
    payment.refresh_from_db()
    assert payment.status == Payment.Status.RELEASED and payment.booking_id is None
    release = PaymentOperation.objects.get(payment=payment, kind="release")
    assert (release.idempotency_key, release.status) == (f"{payment.key}:release", PaymentOperation.Status.SUCCEEDED)
    assert "no order was confirmed with it" in payment.failure
    assert balance(f"holds:{provider}") == balance(f"holds:{provider}:authorised") == 0
    assert_books_balance()


def test_a_hold_paid_before_a_refused_confirm_is_released_once_its_quote_expired(
    bap: Any, network: Any, paysim: str, receiver: Any, provider: str, sweep: Callable[[], int]
) -> None:
    payment = paid_before_confirming(bap, paysim, receiver, provider)
    Evse.objects.update(status=Evse.Status.OUTOFORDER)  # the CPO marked the charger out of order
    assert "error" in confirm(bap)
    assert not Booking.objects.exists()

    assert sweep() == 0  # the quote still holds: the app may confirm another way, or once the charger is back
    assert not PaymentOperation.objects.exists()

    quotes_expired()
    assert sweep() == 1
    assert_released(payment, provider)
    assert sweep() == 0  # run again (a redelivery, the next beat): released once
    assert PaymentOperation.objects.count() == 1


def test_a_hold_is_not_released_while_its_order_can_still_be_confirmed(
    bap: Any, network: Any, paysim: str, receiver: Any, provider: str, sweep: Callable[[], int]
) -> None:
    payment = paid_before_confirming(bap, paysim, receiver, provider)
    Quote.objects.update(valid_until=timezone.now() + timedelta(seconds=30))  # about to expire, not yet
    assert sweep() == 0
    order_id = confirm(bap)["message"]["order"]["id"]  # confirmed just in time, on the hold
    payment.refresh_from_db()
    assert (payment.status, payment.booking.order_id) == (Payment.Status.AUTHORISED, order_id)

    quotes_expired()  # the quote is booked: its expiry no longer matters
    assert sweep() == 0
    payment.refresh_from_db()
    assert payment.status == Payment.Status.AUTHORISED and not PaymentOperation.objects.exists()
    assert "error" not in start(bap, order_id)


def test_a_quote_expired_less_than_the_margin_ago_keeps_the_hold(
    bap: Any, network: Any, paysim: str, receiver: Any, provider: str, sweep: Callable[[], int]
) -> None:
    """A confirm that checked its quote just before it expired may still be under way."""
    paid_before_confirming(bap, paysim, receiver, provider)
    quotes_expired(ago=payments.UNBOOKED_HOLD_MARGIN - timedelta(seconds=10))
    assert sweep() == 0
    quotes_expired(ago=payments.UNBOOKED_HOLD_MARGIN + timedelta(seconds=10))
    assert sweep() == 1


def test_a_hold_whose_confirm_never_came_is_released(
    bap: Any, network: Any, paysim: str, receiver: Any, provider: str, sweep: Callable[[], int]
) -> None:
    payment = paid_before_confirming(bap, paysim, receiver, provider)  # the app never confirms
    quotes_expired()
    assert sweep() == 1
    assert_released(payment, provider)


def test_an_authorisation_after_the_quote_expired_is_released_at_once_and_a_new_init_asks_again(
    bap: Any, network: Any, paysim: str, receiver: Any, provider: str
) -> None:
    select(bap, item_of(bap))
    offered = init(bap)["message"]["order"]["payments"][0]
    quotes_expired()
    pay(paysim, checkout_id(offered["url"]))  # the driver pays after the quote expired
    with bap.capture(execute=True):
        answer = hand_over(receiver, provider, "authorised", set())
    assert answer.status_code == 200 and answer.json()["outcome"].startswith("authorised; released"), answer.content
    payment = Payment.objects.get()
    assert_released(payment, provider)

    # The app starts over: a new quote and init give a page of their own, not the released one; confirm books it.
    select(bap, item_of(bap))
    again = init(bap)["message"]["order"]["payments"][0]
    assert again["url"] != offered["url"] and again["url"].startswith(paysim)
    order_id = confirm(bap)["message"]["order"]["id"]
    fresh = Payment.objects.get(booking__order_id=order_id)
    assert fresh.pk != payment.pk and fresh.status == Payment.Status.PENDING


def test_a_confirm_after_the_release_is_refused_with_a_beckn_error(
    bap: Any, network: Any, paysim: str, receiver: Any, provider: str, sweep: Callable[[], int]
) -> None:
    payment = paid_before_confirming(bap, paysim, receiver, provider)
    quotes_expired()
    assert sweep() == 1
    # The app selects again (a new quote for the journey) and confirms without a new init: the journey's payment
    # is the released one.
    select(bap, item_of(bap))
    answer = confirm(bap)
    assert answer["error"]["code"] == "40004" and "init the order again" in answer["error"]["message"]
    assert not Booking.objects.exists()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.RELEASED


def test_a_confirm_while_the_release_is_queued_is_refused_and_init_opens_a_new_payment(
    bap: Any, network: Any, paysim: str, receiver: Any, provider: str
) -> None:
    """The sweep decided the release and committed; its provider call has not run yet (the payment still
    AUTHORISED). A confirm meanwhile must not book the hold that is going."""
    payment = paid_before_confirming(bap, paysim, receiver, provider)
    quotes_expired()
    assert payments.unbooked_holds_release() == [payment.pk]  # its task not run (nothing is committed here)
    payment.refresh_from_db()
    assert payment.status == Payment.Status.AUTHORISED
    Quote.objects.update(valid_until=timezone.now() + timedelta(minutes=5))  # a confirm that checked it in time
    answer = confirm(bap)
    assert answer["error"]["code"] == "40004" and "being released" in answer["error"]["message"]
    assert not Booking.objects.exists()
    assert payments.unbooked_holds_release() == []  # decided once
    again = init(bap)["message"]["order"]["payments"][0]
    assert Payment.objects.count() == 2 and again["url"] != payment.url


# --- the sweep alone, and two at once -------------------------------------------------------------------


def held_without_order(driver: Driver | None = None, provider: str = "stripe") -> Payment:
    return Payment.objects.create(
        driver=driver,
        bap_id="app.example",
        journey="app.example|T-1",
        provider=provider,
        currency="INR",
        status=Payment.Status.AUTHORISED,
        requested_minor=55593,
        authorised_minor=55593,
        provider_payment_id="pi_1",
    )


def test_the_sweep_leaves_balance_payments_an_app_s_payments_and_decided_releases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queued: list[tuple[str, tuple[Any, ...]]] = []
    monkeypatch.setattr(payments, "run_after_commit", lambda task, *args: queued.append((task, args)))
    held = held_without_order()
    Payment.objects.create(provider="stripe", currency="INR", purpose="balance", status="AUTHORISED")
    Payment.objects.create(provider="bap", currency="INR", collected_by="BAP", status="AUTHORISED")
    assert payments.unbooked_holds_release() == [held.pk]
    assert queued == [("billing.tasks.release_payment", (held.pk,))]
    assert payments.unbooked_holds_release() == []
    assert PaymentOperation.objects.get().idempotency_key == f"{held.key}:release"


def test_a_driver_s_valid_quote_keeps_the_hold(monkeypatch: pytest.MonkeyPatch, network: Any) -> None:
    monkeypatch.setattr(payments, "run_after_commit", lambda task, *args: None)
    driver = Driver.objects.create(app_id="app.example", name="Asha", email="asha@example.com")
    held = held_without_order(driver)
    quote = Quote.objects.create(
        driver=driver,
        evse=Evse.objects.first(),
        connector_id="1",
        currency="INR",
        arrival_at=timezone.now(),
        cpo_cost_excl_vat=Decimal("380"),
        fee_excl_vat=Decimal("12.60"),
        fee_vat=Decimal("2.27"),
        valid_until=timezone.now() + timedelta(minutes=10),
    )
    assert payments.unbooked_holds_release() == []
    Quote.objects.filter(pk=quote.pk).update(accepted_at=timezone.now())  # booked by another order
    assert payments.unbooked_holds_release() == [held.pk]


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_sweep_skips_a_hold_another_sweep_is_releasing_and_it_is_released_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(payments, "run_after_commit", lambda task, *args: None)
    held = held_without_order()
    locked, done = threading.Event(), threading.Event()

    def first() -> list[int]:
        with transaction.atomic():  # another sweep holds the payment's row
            list(Payment.objects.select_for_update().filter(pk=held.pk))
            locked.set()
            done.wait(10)
        return []

    thread, _ = _run(first)
    assert locked.wait(10)
    try:
        assert payments.unbooked_holds_release() == []  # skipped, not waited for
    finally:
        done.set()
        thread.join(10)
    assert payments.unbooked_holds_release() == [held.pk]
    assert payments.unbooked_holds_release() == []
    assert PaymentOperation.objects.filter(payment=held).count() == 1
    connection.close()
