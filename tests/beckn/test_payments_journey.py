"""A booking's money through the Beckn journey, in one process: the payment terms offered at select and init,
what an app that collects reports, a prepaid wallet held at confirm and debited by the bill, and the ledger
after the CDR — balanced, each party's balance what the bill says. (Collection through a provider's hosted page
runs against the sandbox provider: tests/beckn/test_payments_provider.py and the e2e journey.)"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from billing.models import BapAgreement, Cdr, IssuedDocument, LedgerAccount, LedgerEntry, Payment
from billing.services import ledger, payments
from billing.services.records import cdr_store
from emsp.models import Booking, Command, Driver, Partner
from emsp.services.commands import command_result_received
from emsp.services.sessions import session_put
from tests.beckn.bap import BAP_ID
from tests.beckn.test_actions import confirm, init, item_of, last, select

pytestmark = pytest.mark.django_db

# 20 kWh at 18 INR + 20 INR flat, VAT 18 % (tests/beckn/bap.py TARIFF): the CPO's 380.00 excl., 448.40 incl.;
# our fee 5 + 2 % = 12.60 and its VAT 2.268: the driver pays 463.268 → 463.27.
BILL = Decimal("463.27")
CPO_INCL = Decimal("448.40")
FEE = Decimal("12.60")
FEE_VAT = Decimal("2.27")


def tag_values(payment: dict[str, Any], group: str) -> dict[str, str]:
    for tags in payment.get("tags", []):
        if tags["descriptor"]["code"] == group:
            return {tag["descriptor"]["code"]: tag["value"] for tag in tags["list"]}
    raise AssertionError(f"no {group} tags in {payment}")


def start(bap: Any, order_id: str) -> dict[str, Any]:
    booking = Booking.objects.get(order_id=order_id)
    reserve = Command.objects.filter(booking=booking, type="RESERVE_NOW").first()
    if reserve is not None:
        command_result_received(reserve, {"result": "ACCEPTED"})
    order = {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    return last(bap, "on_update")


def charge_and_cdr(bap: Any, partner: Partner, order_id: str, *, cdr_id: str = "CDR-1") -> Booking:
    """The CPO's side of the charge: the session the START created, then its CDR (processed inline)."""
    booking = Booking.objects.get(order_id=order_id)
    start_command = Command.objects.get(booking=booking, type="START_SESSION")
    now = timezone.now().replace(microsecond=0)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    session = {
        "country_code": "IN", "party_id": "CPA", "id": f"S-{cdr_id}", "start_date_time": stamp, "kwh": 20,
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                      "contract_id": booking.token.contract_id},
        "auth_method": "COMMAND", "authorization_reference": start_command.authorization_reference,
        "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
        "currency": "INR", "status": "COMPLETED", "last_updated": stamp,
    }  # fmt: skip
    session_put(partner, session)
    cdr = {
        "country_code": "IN", "party_id": "CPA", "id": cdr_id, "session_id": session["id"],
        "start_date_time": stamp, "end_date_time": stamp, "currency": "INR",
        "cdr_token": session["cdr_token"], "auth_method": "COMMAND",
        "cdr_location": {"id": booking.evse.location.location_id, "evse_uid": booking.evse.uid,
                         "connector_id": "1"},
        "total_cost": {"excl_vat": 380, "incl_vat": 448.40}, "total_energy": 20, "total_time": 1,
        "charging_periods": [], "last_updated": stamp,
    }  # fmt: skip
    with bap.capture(execute=True):
        cdr_store(partner, cdr)
    booking.refresh_from_db()
    return booking


def balance(code: str) -> Decimal:
    account = LedgerAccount.objects.filter(code=code, currency="INR").first()
    return Decimal("0") if account is None else ledger.balance(account)


def assert_books_balance() -> None:
    assert sum(ledger.trial_balance("INR").values()) == 0


# --- terms ---------------------------------------------------------------------------------------------


def test_select_offers_terms_and_init_gives_the_app_its_collection(bap: Any) -> None:
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True, finder_fee_percent=Decimal("3"), settlement_window="P2D")
    offered = select(bap, item_of(bap))["message"]["order"]["payments"][0]
    assert (offered["collected_by"], offered["type"], offered["status"]) == ("BAP", "POST-FULFILLMENT", "NOT-PAID")
    assert tag_values(offered, "BUYER_FINDER_FEES") == {
        "BUYER_FINDER_FEES_TYPE": "percent",
        "BUYER_FINDER_FEES_PERCENTAGE": "3",
    }
    assert tag_values(offered, "SETTLEMENT_TERMS")["SETTLEMENT_WINDOW"] == "P2D"
    payment = init(bap)["message"]["order"]["payments"][0]  # validated against core 1.1.0 by `last`
    assert payment["collected_by"] == "BAP" and "url" not in payment
    assert payment["params"] == {"amount": str(BILL), "currency": "INR"}


def test_an_app_that_asks_to_collect_without_an_agreement_gets_our_terms_back(bap: Any, settings: Any) -> None:
    settings.PAYMENT_DEFAULT_BAP_COLLECTS = False
    select(bap, item_of(bap))
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")
    bap(
        "init",
        {
            "order": {
                "provider": {"id": "IN*CPA"},
                "billing": {"name": "Asha", "email": "asha@example.com"},
                "payments": [{"collected_by": "BAP", "type": "ON-FULFILLMENT"}],
            }
        },
    )
    answer = last(bap, "on_init")
    assert "error" not in answer, answer["error"]
    payment = answer["message"]["order"]["payments"][0]
    assert payment["collected_by"] == "BPP"  # overwritten, as core 1.1.0 Payment lets the BPP do
    assert tag_values(payment, "PAYMENT_STATE")["METHOD"] == "wallet"


# --- the app collects ------------------------------------------------------------------------------------


def test_the_app_collects_the_bill_and_owes_it_less_its_finder_fee(bap: Any, network: Partner) -> None:
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True, finder_fee_percent=Decimal("2"))
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    booking = charge_and_cdr(bap, network, order_id)
    assert booking.state == Booking.State.SETTLED
    settled = last(bap, "on_update")["message"]["order"]
    assert settled["quote"]["price"] == {"currency": "INR", "value": str(BILL)}
    assert settled["payments"][0]["params"]["amount"] == str(BILL)
    assert settled["payments"][0]["status"] == "NOT-PAID"

    finder_fee = Decimal("9.27")  # 2 % of 463.27 = 9.2654
    assert balance(f"bap:{BAP_ID}:receivable") == BILL - finder_fee
    assert balance("expense:finder-fees") == finder_fee
    assert balance("cpo:IN*CPA:payable") == -CPO_INCL
    assert balance("revenue:fees") == -FEE
    assert balance("tax:VAT-18:payable") == -FEE_VAT
    assert_books_balance()

    # The app reports what it took: the bill, with its transaction id; any other amount is refused.
    paid = {"id": order_id, "payments": [{"status": "PAID", "params": {"amount": "463.00", "currency": "INR",
                                                                     "transaction_id": "UPI-1"}}]}  # fmt: skip
    bap("update", {"update_target": "order.payments", "order": paid})
    refused = last(bap, "on_update")
    assert refused["error"]["code"] == "50002" and "463.27" in refused["error"]["message"]
    paid["payments"][0]["params"]["amount"] = str(BILL)
    bap("update", {"update_target": "order.payments", "order": paid})
    reported = last(bap, "on_update")["message"]["order"]["payments"][0]
    assert (reported["status"], reported["params"]["transaction_id"]) == ("PAID", "UPI-1")
    assert Payment.objects.get(booking=booking).status == Payment.Status.COLLECTED_BY_BAP
    assert balance(f"bap:{BAP_ID}:receivable") == BILL - finder_fee  # owed to us until the app settles


def test_a_credit_cdr_voiding_the_charge_gives_back_our_fee_and_the_apps_finder_fee(bap: Any, network: Partner) -> None:
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True, finder_fee_percent=Decimal("2"))
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)
    stamp = Cdr.objects.get(cdr_id="CDR-1").data["end_date_time"]
    void = {**Cdr.objects.get(cdr_id="CDR-1").data, "id": "CDR-1-C", "credit": True, "credit_reference_id": "CDR-1",
            "total_cost": {"excl_vat": -380, "incl_vat": -448.40}, "last_updated": stamp}  # fmt: skip
    with bap.capture(execute=True):
        cdr_store(network, void)
    # mod_cdrs: the credit voids the charge; nothing of it stays anywhere (a corrected CDR would bring its own).
    for code in ("revenue:fees", "tax:VAT-18:payable", "expense:finder-fees", "cpo:IN*CPA:payable",
                 f"bap:{BAP_ID}:receivable", "refunds:pending"):  # fmt: skip
        assert balance(code) == 0, code
    assert_books_balance()


def test_an_app_reporting_a_payment_with_control_characters_or_absurd_amounts_is_refused(bap: Any) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    for params in (
        {"amount": "1e400", "currency": "INR", "transaction_id": "X"},
        {"amount": "12", "currency": "INR", "transaction_id": "UPI\x00-1"},
        {"amount": "NaN", "currency": "INR", "transaction_id": "X"},
    ):
        order = {"id": order_id, "payments": [{"status": "PAID", "params": params}]}
        bap("update", {"update_target": "order.payments", "order": order})
        assert last(bap, "on_update")["error"]["code"] in ("30000", "50002")
    assert Payment.objects.get(booking__order_id=order_id).status == Payment.Status.PENDING


# --- prepaid wallets ------------------------------------------------------------------------------------


@pytest.mark.we_collect
def test_a_prepaid_wallet_is_held_at_confirm_and_debited_by_the_bill(bap: Any, network: Partner) -> None:
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")  # the same top-up once
    select(bap, item_of(bap))
    on_init = init(bap)["message"]["order"]["payments"][0]
    assert tag_values(on_init, "PAYMENT_STATE")["METHOD"] == "wallet"
    assert on_init["params"]["amount"] == "555.93"  # the quote plus the 20 % margin, rounded up
    order_id = confirm(bap)["message"]["order"]["id"]
    payment = Payment.objects.get(booking__order_id=order_id)
    assert (payment.status, payment.authorised_minor) == (Payment.Status.AUTHORISED, 55593)
    assert balance("holds:wallet") == Decimal("555.93")
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)

    driver.refresh_from_db()
    assert driver.wallet_balance == Decimal("1000") - BILL == -balance(f"driver:{driver.pk}:wallet")
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("holds:wallet") == balance("holds:wallet:authorised") == 0  # the hold released
    assert balance("cpo:IN*CPA:payable") == -CPO_INCL
    assert_books_balance()
    paid = last(bap, "on_update")["message"]["order"]["payments"][0]
    assert (paid["status"], tag_values(paid, "PAYMENT_STATE")["CAPTURED"]) == ("PAID", str(BILL))
    receipt = IssuedDocument.objects.get(kind=IssuedDocument.Kind.RECEIPT)  # numbered, issued after commit
    assert receipt.party == f"driver:{driver.pk}" and receipt.total == BILL


@pytest.mark.we_collect
def test_a_corrected_cdr_after_a_credit_cdr_is_taken_from_the_wallet(bap: Any, network: Partner) -> None:
    """mod_cdrs: a CPO corrects a CDR by voiding it with a credit CDR and sending a new one. The charge payment has
    done its work by then: the new bill gets its own payment, taken from the wallet."""
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)
    first = Cdr.objects.get(cdr_id="CDR-1")
    stamp = first.data["end_date_time"]
    void = {**first.data, "id": "CDR-1-C", "credit": True, "credit_reference_id": "CDR-1",
            "total_cost": {"excl_vat": -380, "incl_vat": -448.40}, "last_updated": stamp}  # fmt: skip
    corrected = {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354}, "last_updated": stamp}
    with bap.capture(execute=True):
        cdr_store(network, void)
    driver.refresh_from_db()
    assert driver.wallet_balance == Decimal("1000")  # the voided bill came back whole, our fee with it
    with bap.capture(execute=True):
        cdr_store(network, corrected)
    second = Decimal("366.98")  # 354 + our fee 5 + 6.00 and 18 % VAT on it (1.98)
    driver.refresh_from_db()
    assert driver.wallet_balance == Decimal("1000") - second
    balance_payment = Payment.objects.get(booking__order_id=order_id, purpose="balance")
    assert (balance_payment.status, balance_payment.captured_minor) == (Payment.Status.CAPTURED, 36698)
    assert Payment.objects.get(booking__order_id=order_id, purpose="charge").billed_minor == 46327  # its own bill
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("revenue:fees") == Decimal("-11.00")  # one fee, the corrected charge's
    assert_books_balance()


@pytest.mark.we_collect
def test_a_wallet_that_cannot_cover_the_hold_is_refused_at_confirm(bap: Any) -> None:
    driver = Driver.objects.create(
        app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"), wallet_limit=Decimal("-50")
    )
    payments.wallet_top_up(driver=driver, amount=Decimal("500"), key="top-up-1")  # 550 with the limit: < 555.93
    select(bap, item_of(bap))
    init(bap)
    refused = confirm(bap)
    assert refused["error"]["code"] == "40004" and "555.93" in refused["error"]["message"]
    assert not Booking.objects.exists()
    assert not LedgerEntry.objects.filter(event="authorisation").exists()


@pytest.mark.we_collect
def test_a_cancel_before_charging_releases_the_wallet_hold(bap: Any) -> None:
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    bap("cancel", {"order_id": order_id, "cancellation_reason_id": "0"})
    cancelled = last(bap, "on_cancel")["message"]["order"]
    assert tag_values(cancelled["payments"][0], "PAYMENT_STATE")["STATE"] == "RELEASED"
    assert balance("holds:wallet") == 0
    driver.refresh_from_db()
    assert driver.wallet_balance == Decimal("1000")
    assert_books_balance()
