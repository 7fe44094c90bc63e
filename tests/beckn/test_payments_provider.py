"""We collect through a payment provider, in one process against the sandbox provider as a real process
(`python -m paysim` on 127.0.0.1): the providers' own SDKs make every call over HTTP; paysim's signed webhooks
are handed to our webhook endpoint as they arrived. Razorpay collects INR by default; Stripe is selected by
setting PAYMENT_GATEWAYS. Each test ends with the ledger balanced and each party's balance what the bill says."""

from __future__ import annotations

import copy
import io
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.test import Client

from billing.models import Cdr, Dispute, LedgerEntry, Payment, PaymentOperation, ProviderWebhook
from billing.services import accounts, disputes, payments, postings
from billing.services.reconciliation import reconcile_payout_file
from billing.services.records import cdr_store
from emsp.models import Booking
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.beckn.test_payments_journey import BILL, CPO_INCL, assert_books_balance, balance, charge_and_cdr, start
from tests.paysim.conftest import RAZORPAY_SECRET, STRIPE_SECRET, Receiver, pay
from tests.paysim.conftest import paysim as paysim
from tests.paysim.conftest import receiver as receiver

pytestmark = [pytest.mark.django_db, pytest.mark.we_collect]

HOLD = Decimal("555.93")  # the quote 463.268 plus 20 %, rounded up


@pytest.fixture(params=["razorpay", "stripe"])
def provider(request: pytest.FixtureRequest, paysim: str, settings: Any) -> str:
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    providers["stripe"]["options"] |= {"api_base": f"{paysim}/stripe", "webhook_secret": STRIPE_SECRET}
    providers["razorpay"]["options"] |= {"api_base": f"{paysim}/razorpay/v1", "webhook_secret": RAZORPAY_SECRET}
    settings.PAYMENT_PROVIDERS = providers
    settings.PAYMENT_GATEWAYS = {"*": request.param}
    return request.param


def hand_over(receiver: tuple[Receiver, str], provider: str, kind: str, seen: set[int]) -> Any:
    """The next webhook of `kind` paysim delivered, posted to our endpoint with its own headers and bytes."""
    state, _ = receiver
    before = seen_before(state)
    names = {
        ("stripe", "authorised"): "payment_intent.amount_capturable_updated",
        ("razorpay", "authorised"): "payment.authorized",
        ("stripe", "failed"): "payment_intent.payment_failed",
        ("razorpay", "failed"): "payment.failed",
    }
    wanted = names[(provider, kind)]

    def match(delivery: Any) -> bool:
        if id(delivery) in before:
            return False  # an earlier test's
        payload = delivery.payload
        name = payload.get("type") if provider == "stripe" else payload.get("event")
        return delivery.provider == provider and name == wanted and id(delivery) not in seen

    delivery = state.wait_for(match)
    seen.add(id(delivery))  # handed over once
    return post_webhook(provider, delivery.body, delivery.headers)


_BEFORE: dict[int, set[int]] = {}


@pytest.fixture(autouse=True)
def _earlier_deliveries(receiver: tuple[Receiver, str]) -> None:
    """paysim and its receiver live for the module: a test hands over only the webhooks of its own payments."""
    state, _ = receiver
    with state.lock:
        _BEFORE[id(state)] = {id(d) for d in state.deliveries}


def seen_before(state: Receiver) -> set[int]:
    return _BEFORE.get(id(state), set())


def post_webhook(provider: str, body: bytes, headers: dict[str, str]) -> Any:
    keep = {k: v for k, v in headers.items() if k.lower().startswith(("stripe-", "x-razorpay"))}
    return Client().post(f"/payments/webhooks/{provider}", data=body, content_type="application/json", headers=keep)


def checkout_id(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def book_and_authorise(bap: Any, paysim: str, receiver: Any, provider: str, seen: set[int]) -> tuple[str, Any]:
    select(bap, item_of(bap))
    offered = init(bap)["message"]["order"]["payments"][0]
    assert (offered["collected_by"], offered["type"]) == ("BPP", "PRE-ORDER")
    assert offered["params"]["amount"] == str(HOLD) and offered["url"].startswith(paysim)
    order_id = confirm(bap)["message"]["order"]["id"]  # the charger is held while the driver pays
    refused = start(bap, order_id)
    assert refused["error"]["code"] == "40004" and offered["url"] in refused["error"]["message"]
    pay(paysim, checkout_id(offered["url"]))
    answer = hand_over(receiver, provider, "authorised", seen)
    assert answer.status_code == 200 and answer.json()["outcome"] == "authorised", answer.content
    return order_id, answer


def test_the_driver_authorises_on_the_hosted_page_and_the_bill_is_captured(
    bap: Any,
    network: Any,
    paysim: str,
    receiver: Any,
    provider: str,
) -> None:
    seen: set[int] = set()
    order_id, _ = book_and_authorise(bap, paysim, receiver, provider, seen)
    payment = Payment.objects.get(booking__order_id=order_id)
    assert (payment.status, payment.authorised_minor) == (Payment.Status.AUTHORISED, 55593)
    assert balance(f"holds:{provider}") == HOLD
    assert "error" not in start(bap, order_id)

    charge_and_cdr(bap, network, order_id)
    payment.refresh_from_db()
    assert (payment.status, payment.billed_minor, payment.captured_minor) == (Payment.Status.CAPTURED, 46327, 46327)
    capture = PaymentOperation.objects.get(payment=payment, kind="capture")
    assert capture.status == PaymentOperation.Status.SUCCEEDED and capture.idempotency_key == f"{payment.key}:capture"
    paid = last(bap, "on_update")["message"]["order"]["payments"][0]
    assert (paid["status"], paid["params"]["amount"]) == ("PAID", str(BILL))
    assert balance(f"clearing:{provider}") == BILL
    assert balance(f"driver:{payment.driver_id}:receivable") == 0
    assert balance(f"holds:{provider}") == balance(f"holds:{provider}:authorised") == 0
    assert balance("cpo:IN*CPA:payable") == -CPO_INCL
    assert_books_balance()
    # The provider's payout file (paysim's, in that provider's report format) agrees with us on this payment:
    # our parser and paysim's writer were written apart. (Earlier tests' payments are in the file too.)
    payout = requests.get(f"{paysim}/paysim/payouts/{provider}.csv", timeout=10)
    run = reconcile_payout_file(provider=provider, path_or_file=io.BytesIO(payout.content))
    ours = [m for m in run.mismatches if m.get("payment_id") == payment.provider_payment_id]
    assert ours == [] and run.rows >= 1
    assert all(m["kind"] == "not_ours" for m in run.mismatches), run.mismatches[:3]


def test_a_replayed_or_forged_webhook_changes_nothing(
    bap: Any,
    network: Any,
    paysim: str,
    receiver: Any,
    provider: str,
) -> None:
    seen: set[int] = set()
    book_and_authorise(bap, paysim, receiver, provider, seen)
    state, _ = receiver
    delivery = next(d for d in state.deliveries if id(d) in seen)
    replay = post_webhook(provider, delivery.body, delivery.headers)
    assert replay.status_code == 200 and replay.json()["status"] == "duplicate"
    forged = post_webhook(provider, delivery.body.replace(b"55593", b"99999"), delivery.headers)
    assert forged.status_code == 400
    unsigned = post_webhook(provider, delivery.body, {})
    assert unsigned.status_code == 400
    hostile = post_webhook(provider, b'{"id": "evt_\x00", "type": "x"}', delivery.headers)
    assert hostile.status_code == 400
    assert LedgerEntry.objects.filter(event="authorisation").count() == 1
    assert ProviderWebhook.objects.filter(provider=provider).count() == 1
    assert Client().post("/payments/webhooks/paypal", data=b"{}", content_type="application/json").status_code == 404


def test_a_bill_above_the_hold_is_captured_up_to_it_and_the_rest_asked_for(
    bap: Any,
    network: Any,
    paysim: str,
    receiver: Any,
    provider: str,
    monkeypatch: Any,
) -> None:
    seen: set[int] = set()
    order_id, _ = book_and_authorise(bap, paysim, receiver, provider, seen)
    start(bap, order_id)
    import tests.beckn.test_payments_journey as journey

    original = journey.cdr_store

    def bigger(partner: Any, cdr: dict[str, Any]) -> Any:  # the driver charged far more than quoted
        return original(partner, {**cdr, "total_cost": {"excl_vat": 600, "incl_vat": 708}, "total_energy": 40})

    monkeypatch.setattr(journey, "cdr_store", bigger)
    charge_and_cdr(bap, network, order_id)
    charge = Payment.objects.get(booking__order_id=order_id, purpose="charge")
    rest = Payment.objects.get(booking__order_id=order_id, purpose="balance")
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 55593)  # never above the hold
    assert rest.billed_minor == charge.billed_minor - 55593 and rest.url.startswith(paysim)
    order = last(bap, "on_update")["message"]["order"]
    assert [p["status"] for p in order["payments"]] == ["PAID", "NOT-PAID"] and order["payments"][1]["url"] == rest.url
    assert order["payments"][0]["params"]["amount"] == str(HOLD)  # what the first payment took, not the bill
    driver = f"driver:{charge.driver_id}:receivable"
    assert balance(driver) == Decimal(rest.billed_minor) / 100  # what is still owed
    pay(paysim, checkout_id(rest.url))
    with bap.capture(execute=True):  # the capture the webhook queues
        assert hand_over(receiver, provider, "authorised", seen).status_code == 200
    rest.refresh_from_db()
    assert (rest.status, rest.captured_minor) == (Payment.Status.CAPTURED, rest.billed_minor)
    assert balance(driver) == 0
    assert_books_balance()
    # A credit above what the first payment took is refunded over both payments of the booking.
    credit = Decimal("600.00")
    with bap.capture(execute=True):
        postings.credit(
            currency="INR", amount=credit, borne_by=accounts.cpo_payable("IN*CPA", "INR"),
            reference="dispute:77", key="dispute:77:credit",
        )  # fmt: skip
        payments.refund_due(payment=charge, amount=credit, reference="dispute:77", driver_id=charge.driver_id)
    refunds = PaymentOperation.objects.filter(kind="refund").order_by("payment_id")
    assert [(o.payment_id, o.amount_minor, o.status) for o in refunds] == [
        (charge.pk, 55593, "SUCCEEDED"),
        (rest.pk, 60000 - 55593, "SUCCEEDED"),
    ]
    assert balance("refunds:pending") == 0
    assert_books_balance()


def test_a_cancel_before_charging_releases_the_authorisation(
    bap: Any,
    network: Any,
    paysim: str,
    receiver: Any,
    provider: str,
) -> None:
    seen: set[int] = set()
    order_id, _ = book_and_authorise(bap, paysim, receiver, provider, seen)
    with bap.capture(execute=True):
        bap("cancel", {"order_id": order_id, "cancellation_reason_id": "0"})
    payment = Payment.objects.get(booking__order_id=order_id)
    assert payment.status == Payment.Status.RELEASED
    assert PaymentOperation.objects.get(payment=payment, kind="release").status == PaymentOperation.Status.SUCCEEDED
    assert balance(f"holds:{provider}") == 0
    assert_books_balance()


def test_a_dispute_credit_is_refunded_through_the_provider_and_borne_by_the_cpo(
    bap: Any,
    network: Any,
    paysim: str,
    receiver: Any,
    provider: str,
    django_user_model: Any,
) -> None:
    seen: set[int] = set()
    order_id, _ = book_and_authorise(bap, paysim, receiver, provider, seen)
    start(bap, order_id)
    booking = charge_and_cdr(bap, network, order_id)
    cdr = Cdr.objects.get(charging_session__booking=booking)
    dispute = Dispute.objects.create(
        cdr=cdr, partner=network, currency="INR", cpo_amount=Decimal("380"), our_amount=Decimal("370"),
        difference=Decimal("10"),
    )  # fmt: skip
    staff = django_user_model.objects.create_user("finance", password="pw-123456-x", is_staff=True)
    with bap.capture(execute=True):
        disputes.dispute_resolve_with_credit(dispute=dispute, user=staff, amount=Decimal("10"))
    refund = Decimal("11.80")  # 10 excl. VAT with the CDR's 18 %
    payment = Payment.objects.get(booking=booking, purpose="charge")
    assert (payment.status, payment.refunded_minor) == (Payment.Status.PARTIALLY_REFUNDED, 1180)
    assert balance("refunds:pending") == 0  # decided and paid back
    assert balance(f"clearing:{provider}") == BILL - refund
    assert balance("cpo:IN*CPA:payable") == -(CPO_INCL - refund)  # the CPO's settlement folds the credit in
    assert_books_balance()

    # The CPO then sends its credit CDR for the same 10: the driver was refunded already, the CPO's payable
    # already lowered; only our fee's part (2 % of 10, with its VAT) goes back now.
    void = {**cdr.data, "id": f"{cdr.cdr_id}-C", "credit": True, "credit_reference_id": cdr.cdr_id,
            "total_cost": {"excl_vat": -10, "incl_vat": -11.80}}  # fmt: skip
    with bap.capture(execute=True):
        cdr_store(network, void)
    payment.refresh_from_db()
    assert payment.refunded_minor == 1180 + 24  # 0.20 + 0.04 of VAT
    assert balance("cpo:IN*CPA:payable") == -(CPO_INCL - refund)
    assert balance("refunds:pending") == 0
    assert_books_balance()


def test_a_declined_payment_fails_and_the_order_cannot_start(
    bap: Any,
    network: Any,
    paysim: str,
    receiver: Any,
    provider: str,
) -> None:
    seen: set[int] = set()
    select(bap, item_of(bap))
    offered = init(bap)["message"]["order"]["payments"][0]
    order_id = confirm(bap)["message"]["order"]["id"]
    pay(paysim, checkout_id(offered["url"]), outcome="decline")
    assert hand_over(receiver, provider, "failed", seen).json()["outcome"] == "failed"
    assert Payment.objects.get(booking__order_id=order_id).status == Payment.Status.FAILED
    assert start(bap, order_id)["error"]["code"] == "40004"
    assert Booking.objects.get(order_id=order_id).state == Booking.State.CONFIRMED
    assert not LedgerEntry.objects.exists()


def test_a_provider_refusing_the_checkout_is_told_as_a_refusal_not_as_a_retry(
    bap: Any, network: Any, paysim: str, provider: str, settings: Any
) -> None:
    """A refusal the same call won't get past (here a key the provider doesn't know; or a currency it can't
    charge exactly) is no "please retry shortly": the app hears the provider can't take it."""
    providers = copy.deepcopy(settings.PAYMENT_PROVIDERS)
    key = "api_key" if provider == "stripe" else "key_id"
    providers[provider]["options"][key] = "not-a-key-of-ours"
    settings.PAYMENT_PROVIDERS = providers
    select(bap, item_of(bap))
    answer = init(bap)
    assert answer["error"]["paths"] == "message.order.payments"
    assert "can't be taken by our payment provider" in answer["error"]["message"]
    assert not Payment.objects.exists()
