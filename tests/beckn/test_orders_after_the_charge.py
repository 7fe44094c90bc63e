"""An order after its charge or its end: the bill it stands at after a credit CDR and a corrected one, what an
app may still report or start on an ended order, an order that a later order of the same transaction followed,
ratings as stored, update targets named together, and the live figures as they are shown."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from beckn.bap_client import is_final_bill
from beckn.models import BecknRating, BecknTransaction
from beckn.privacy import _export
from billing.models import Cdr, Payment
from billing.services import payments
from billing.services.records import cdr_store
from emsp.models import Booking, Command, Driver, Location, Partner
from emsp.services.sessions import session_put
from tests.beckn.bap import BAP_ID
from tests.beckn.conformance import assert_valid
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.beckn.test_payments_journey import BILL, charge_and_cdr, start

pytestmark = pytest.mark.django_db

CORRECTED = "366.98"  # the corrected CDR's 354.00 incl. VAT, our fee 5 + 2 % = 12.08 and 18 % VAT on it


def order(bap: Any) -> str:
    select(bap, item_of(bap))
    init(bap)
    return confirm(bap)["message"]["order"]["id"]


def wallet_driver() -> Driver:
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")
    return driver


def void(bap: Any, network: Partner) -> None:
    """The CPO voids CDR-1 with a credit CDR (mod_cdrs)."""
    first = Cdr.objects.get(cdr_id="CDR-1")
    stamp = first.data["end_date_time"]
    credit = {**first.data, "id": "CDR-1-C", "credit": True, "credit_reference_id": "CDR-1",
              "total_cost": {"excl_vat": -380, "incl_vat": -448.40}, "last_updated": stamp}  # fmt: skip
    with bap.capture(execute=True):
        cdr_store(network, credit)


def correct(bap: Any, network: Partner) -> None:
    """...and sends the corrected CDR."""
    first = Cdr.objects.get(cdr_id="CDR-1")
    corrected = {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354},
                 "last_updated": first.data["end_date_time"]}  # fmt: skip
    with bap.capture(execute=True):
        cdr_store(network, corrected)


def status(bap: Any, order_id: str) -> dict[str, Any]:
    bap("status", {"order_id": order_id})
    body = last(bap, "on_status")
    assert "error" not in body, body.get("error")
    assert_valid("on_status", body)
    return body


def update(bap: Any, target: str, order: dict[str, Any]) -> dict[str, Any]:
    bap("update", {"update_target": target, "order": order})
    return last(bap, "on_update")


START = {"fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}


# --- the bill after a credit CDR ------------------------------------------------------------------------


@pytest.mark.parametrize("collects", [True, False])
def test_it_bills_the_corrected_cdr_after_a_credit_cdr_voided_the_first(
    bap: Any, network: Partner, collects: bool, settings: Any
) -> None:
    settings.PAYMENT_DEFAULT_BAP_COLLECTS = collects
    if not collects:
        wallet_driver()
    order_id = order(bap)
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)
    void(bap, network)
    correct(bap, network)
    body = status(bap, order_id)
    bill = body["message"]["order"]["quote"]
    assert bill["price"] == {"currency": "INR", "value": CORRECTED}
    assert sum(Decimal(line["price"]["value"]) for line in bill["breakup"]) == Decimal(CORRECTED)
    assert is_final_bill(body)
    amounts = [p["params"]["amount"] for p in body["message"]["order"]["payments"]]
    if collects:  # the app collects the bill the order stands at
        assert amounts == [CORRECTED]
    else:  # the first charge (taken, then given back) and the corrected bill's own payment
        assert amounts == [str(BILL), CORRECTED]
    unsolicited = bap.bap.callbacks("on_update")[-1]["message"]["order"]["quote"]["price"]["value"]
    assert unsolicited == CORRECTED  # the update that told the app of the corrected CDR


def test_a_charge_voided_by_a_credit_cdr_stands_at_a_final_bill_of_zero(bap: Any, network: Partner) -> None:
    order_id = order(bap)
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)
    void(bap, network)
    body = status(bap, order_id)
    placed = body["message"]["order"]
    assert placed["quote"]["price"] == {"currency": "INR", "value": "0.00"}
    assert all(Decimal(line["price"]["value"]) == 0 for line in placed["quote"]["breakup"])
    assert is_final_bill(body)
    assert placed["payments"][0]["params"]["amount"] == "0.00"  # the app has nothing left to collect
    assert status(bap, order_id)["message"]["order"]["quote"]["id"] == placed["quote"]["id"]  # stable


# --- what an ended order still takes ---------------------------------------------------------------------


def test_an_app_cannot_report_a_payment_for_a_cancelled_order(bap: Any) -> None:
    order_id = order(bap)
    bap("cancel", {"order_id": order_id})
    paid = {"id": order_id, "payments": [{"status": "PAID", "params": {"amount": str(BILL), "currency": "INR",
                                                                     "transaction_id": "UPI-1"}}]}  # fmt: skip
    refused = update(bap, "order.payments", paid)
    assert refused["error"]["code"] == "50002" and "cancelled" in refused["error"]["message"]
    assert Payment.objects.get(booking__order_id=order_id).status != Payment.Status.COLLECTED_BY_BAP
    assert Booking.objects.get(order_id=order_id).payment_status == "NOT-PAID"


@pytest.mark.we_collect
def test_a_start_on_a_cancelled_order_is_refused_as_not_updatable(bap: Any) -> None:
    wallet_driver()
    order_id = order(bap)
    bap("cancel", {"order_id": order_id})
    refused = update(bap, "order.fulfillments[0].state", {"id": order_id, **START})
    assert refused["error"]["code"] == "50002"  # not 40004: the payment was never the matter


@pytest.mark.we_collect
def test_a_start_on_a_settled_order_is_refused_as_not_updatable(bap: Any, network: Partner) -> None:
    wallet_driver()
    order_id = order(bap)
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)
    refused = update(bap, "order.fulfillments[0].state", {"id": order_id, **START})
    assert refused["error"]["code"] == "50002"
    assert Command.objects.filter(booking__order_id=order_id, type="START_SESSION").count() == 1


# --- several orders in one transaction -------------------------------------------------------------------


def test_a_cancelled_order_stays_the_apps_after_it_confirms_another_in_the_transaction(bap: Any) -> None:
    item = item_of(bap)
    first = order(bap)
    bap("cancel", {"order_id": first})
    select(bap, item)
    init(bap)
    second = confirm(bap)["message"]["order"]["id"]
    assert second != first
    assert status(bap, first)["message"]["order"]["status"] == "CANCELLED"
    bap("track", {"order_id": first})
    assert "error" not in last(bap, "on_track")
    bap("rating", {"ratings": [{"rating_category": "Order", "id": first, "value": "4"}]})
    assert "error" not in last(bap, "on_rating")
    journey = BecknTransaction.objects.get(bap_id=BAP_ID)
    exported = _export(journey.driver)["journeys"]
    assert [j["order_ids"] for j in exported] == [[first, second]]
    assert exported[0]["order_id"] == second


def test_news_of_the_first_order_still_reaches_the_app_after_it_confirmed_another(bap: Any) -> None:
    """beckn/events.py finds an order's journey by the app and transaction it was confirmed in, not by the journey's
    current booking: a refund of the cancelled first order is told to the app."""
    from emsp import events as domain_events

    item = item_of(bap)
    first = order(bap)
    bap("cancel", {"order_id": first})
    select(bap, item)
    init(bap)
    confirm(bap)
    bap.bap.peer.calls.clear()
    with bap.capture(execute=True):
        domain_events.publish(domain_events.BookingPaymentChanged(Booking.objects.get(order_id=first), "REFUNDED"))
    assert last(bap, "on_update")["message"]["order"]["id"] == first


def test_another_app_still_cannot_find_the_order(bap: Any, peer: Any) -> None:
    from tests.beckn.bap import FakeBap

    order_id = order(bap)
    other = FakeBap(peer, bap_id="other.example", bap_uri="https://other.example/beckn")
    with bap.capture(execute=True):
        other.post("status", {"order_id": order_id})
    assert other.callbacks("on_status")[-1]["error"]["code"] == "30010"


# --- ratings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [(0, "0"), ("0", "0"), (4, "4"), (4.5, "4.5"), ("4.50", "4.5"), ("5", "5"), (5.0, "5"), (-0.0, "0")],
)
def test_a_rating_is_stored_as_a_plain_number(bap: Any, value: Any, stored: str) -> None:
    order_id = order(bap)
    bap("rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": value}]})
    assert "error" not in last(bap, "on_rating")
    assert list(BecknRating.objects.values_list("value", flat=True)) == [stored]


@pytest.mark.parametrize("value", ["٥", "0_4", " 4", "+4e0", "-0", "1e-999999", "6", "-1", "NaN", True, "", None])
def test_a_rating_that_is_no_plain_number_from_0_to_5_is_refused(bap: Any, value: Any) -> None:
    order_id = order(bap)
    bap("rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": value}]})
    assert last(bap, "on_rating")["error"]["code"] == "30015"
    assert not BecknRating.objects.exists()


# --- update targets -------------------------------------------------------------------------------------------


def test_every_target_of_an_update_is_applied(bap: Any) -> None:
    order_id = order(bap)
    paid = {"status": "PAID", "params": {"amount": str(BILL), "currency": "INR", "transaction_id": "UPI-1"}}
    answer = update(bap, "fulfillment,payment", {"id": order_id, **START, "payments": [paid]})
    assert "error" not in answer, answer.get("error")
    booking = Booking.objects.get(order_id=order_id)
    assert booking.state in (Booking.State.STARTING, Booking.State.CHARGING)
    assert Payment.objects.get(booking=booking).status == Payment.Status.COLLECTED_BY_BAP


@pytest.mark.parametrize("target", ["fulfillment,billing", "item", "fulfillment,", "order.paymentsX"])
def test_an_update_naming_a_target_we_do_not_update_is_refused_whole(bap: Any, target: str) -> None:
    order_id = order(bap)
    refused = update(bap, target, {"id": order_id, **START})
    assert refused["error"]["code"] == "30012"
    assert Booking.objects.get(order_id=order_id).state == Booking.State.CONFIRMED


# --- live figures -------------------------------------------------------------------------------------------


def test_energy_delivered_is_written_without_an_exponent(bap: Any, network: Partner) -> None:
    order_id = order(bap)
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    command = Command.objects.get(booking=booking, type="START_SESSION")
    stamp = timezone.now().replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    session = {
        "country_code": "IN", "party_id": "CPA", "id": "S-1", "start_date_time": stamp, "kwh": 20,
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                      "contract_id": booking.token.contract_id},
        "auth_method": "COMMAND", "authorization_reference": command.authorization_reference,
        "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
        "currency": "INR", "status": "ACTIVE", "last_updated": stamp,
    }  # fmt: skip
    with bap.capture(execute=True):
        session_put(network, session)
    fulfillment = status(bap, order_id)["message"]["order"]["fulfillments"][0]
    details = {tag["descriptor"]["code"]: tag["value"] for tag in fulfillment["tags"][0]["list"]}
    assert details["energy-delivered"] == "20kWh"


def test_the_upgrade_gives_each_earlier_order_back_to_its_app_and_journey(bap: Any) -> None:
    """emsp/0025 backfills Booking.app_id: from the journey's link, else from the order's payment (its journey)."""
    from importlib import import_module

    from django.apps import apps

    item = item_of(bap)
    first = order(bap)
    bap("cancel", {"order_id": first})
    select(bap, item)
    init(bap)
    second = confirm(bap)["message"]["order"]["id"]
    Booking.objects.update(app_id="", app_transaction_id="")  # as before the upgrade
    import_module("emsp.migrations.0025_booking_app").backfill(apps, None)
    journey = BecknTransaction.objects.get(bap_id=BAP_ID)
    assert set(Booking.objects.values_list("order_id", "app_id", "app_transaction_id")) == {
        (first, BAP_ID, journey.transaction_id),
        (second, BAP_ID, journey.transaction_id),
    }


def test_an_order_asked_after_from_another_transaction_carries_its_own_billing(bap: Any) -> None:
    """An app may ask after an order from another of its transactions (another driver's journey, say): the
    order's billing is the one it was confirmed with, not that transaction's."""
    first = order(bap)
    bap.bap.transaction_id = "txn-of-another-driver"
    item_of(bap)
    select(bap, last(bap, "on_search")["message"]["catalog"]["providers"][0]["items"][1]["id"])  # a free charger
    bap("init", {"order": {"provider": {"id": "IN*CPA"}, "billing": {"name": "Ravi", "email": "ravi@example.com"}}})
    assert last(bap, "on_init")["message"]["order"]["billing"]["name"] == "Ravi"
    billing = status(bap, first)["message"]["order"]["billing"]
    assert (billing["name"], billing["email"]) == ("Asha", "asha@example.com")


@pytest.mark.parametrize("hidden_by", ["suspended", "withdrawn"])
def test_the_charger_of_an_order_can_be_rated_after_it_was_hidden(bap: Any, hidden_by: str) -> None:
    """Search and select no longer show a suspended operator's or a withdrawn location's chargers; a driver who
    charged there still rates the item."""
    item = item_of(bap)
    select(bap, item)
    init(bap)
    confirm(bap)
    if hidden_by == "suspended":
        Partner.objects.update(state=Partner.State.SUSPENDED)
    else:
        Location.objects.update(withdrawn_at=timezone.now())
    bap("rating", {"ratings": [{"rating_category": "Item", "id": item, "value": "5"}]})
    assert "error" not in last(bap, "on_rating")
    bap("rating", {"ratings": [{"rating_category": "Item", "id": "NOPE/NOPE/1", "value": "5"}]})
    assert last(bap, "on_rating")["error"]["code"] == "30014"
