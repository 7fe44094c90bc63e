"""A driver's data wherever their orders went: callbacks and requests about an order sent from another
transaction of the app, callbacks still to be sent at erasure, the support and payment details a request
carries, and ratings of the driver's orders."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import call_command

from beckn.keys import our_public_key_b64
from beckn.models import BecknCallback, BecknMessage
from beckn.privacy import redacted
from beckn.signing import parse_signature_header, verify_signature
from emsp import outbox
from emsp.models import Booking, Delivery, Driver
from tests.beckn.bap import BAP_URI
from tests.beckn.conformance import assert_valid
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db

EMAIL, PHONE = "asha@example.com", "+919845000000"
ACK = (200, {"message": {"ack": {"status": "ACK"}}})


@pytest.fixture
def driver(bap: Any) -> Driver:
    select(bap, item_of(bap))
    init(bap)
    confirm(bap)
    return Driver.objects.get(email=EMAIL)


def order_of(driver: Driver) -> str:
    return Booking.objects.get(driver=driver).order_id


def erase(driver: Driver) -> None:
    call_command("driver_erase", "--driver", str(driver.pk), "--yes")


def test_erasure_empties_the_callbacks_about_the_drivers_order_sent_in_another_transaction(
    bap: Any, driver: Driver
) -> None:
    bap.bap.transaction_id = "later-journey"
    bap("status", {"order_id": order_of(driver)})
    assert last(bap, "on_status")["message"]["order"]["billing"]["email"] == EMAIL  # the confirming journey's
    erase(driver)
    assert not BecknCallback.objects.filter(body__contains=EMAIL).exists()
    assert not BecknCallback.objects.filter(body__contains=PHONE).exists()


def test_stored_requests_carry_no_support_contact_nor_payer_account() -> None:
    support = {"support": {"ref_id": "ORD-1", "callback_phone": PHONE, "phone": PHONE, "email": EMAIL}}
    payment = {
        "status": "PAID",
        "params": {
            "amount": "100",
            "source_virtual_payment_address": "asha@okbank",
            "virtual_payment_address": "asha@upi",
            "source_bank_account_number": "1234567890",
            "bank_account_name": "Asha",
            "bank_code": "HDFC0000001",
        },
    }
    stored = orjson.loads(redacted(orjson.dumps({"message": {**support, "order": {"payments": [payment]}}}).decode()))
    kept = stored["message"]["support"]
    assert (kept["ref_id"], kept["callback_phone"], kept["phone"], kept["email"]) == ("ORD-1", *["[redacted]"] * 3)
    params = stored["message"]["order"]["payments"][0]["params"]
    assert {k for k, v in params.items() if v == "[redacted]"} == {
        "source_virtual_payment_address",
        "virtual_payment_address",
        "source_bank_account_number",
        "bank_account_name",
    }
    assert (params["amount"], params["bank_code"]) == ("100", "HDFC0000001")  # not the payer's: kept


def test_a_confirm_and_a_support_request_are_stored_without_the_drivers_contact_or_upi_id(bap: Any) -> None:
    select(bap, item_of(bap))
    init(bap)
    bap(
        "confirm",
        {
            "order": {
                "provider": {"id": "IN*CPA"},
                "payments": [{"status": "NOT-PAID", "params": {"source_virtual_payment_address": "asha@okbank"}}],
            }
        },
    )
    order_id = last(bap, "on_confirm")["message"]["order"]["id"]
    bap("support", {"support": {"ref_id": order_id, "callback_phone": PHONE, "email": EMAIL}})
    assert last(bap, "on_support")["message"]["support"]["url"].endswith(order_id)
    for action in ("confirm", "support"):
        body = BecknMessage.objects.get(action=action).body
        assert PHONE not in body and EMAIL not in body and "asha@okbank" not in body, action


def test_a_support_request_about_the_drivers_order_from_another_transaction_is_erased(bap: Any, driver: Driver) -> None:
    order_id = order_of(driver)
    bap.bap.transaction_id = "later-journey"
    bap("support", {"support": {"ref_id": order_id, "callback_phone": PHONE}})
    bap("status", {"order_id": order_id})
    bap("search", {"intent": {}})  # the app's other requests are not the driver's
    erase(driver)
    later = BecknMessage.objects.filter(transaction__transaction_id="later-journey")
    assert set(later.filter(action__in=("support", "status")).values_list("body", flat=True)) == {"[erased]"}
    assert later.get(action="search").body != "[erased]"


@pytest.mark.parametrize("asked_from", ["its own transaction", "another transaction"])
def test_a_callback_pending_at_erasure_goes_without_the_billing_still_correctly_signed(
    bap: Any, driver: Driver, peer: FakePeer, asked_from: str
) -> None:
    if asked_from == "another transaction":
        bap.bap.transaction_id = "later-journey"
    peer.route("POST", f"{BAP_URI}/on_status", (503, {"error": "busy"}))
    bap("status", {"order_id": order_of(driver)})
    pending = BecknCallback.objects.get(action="on_status")
    assert pending.status == Delivery.Status.PENDING and EMAIL in pending.body
    erase(driver)
    peer.route("POST", f"{BAP_URI}/on_status", ACK)
    BecknCallback.objects.update(next_attempt_at="2000-01-01T00:00:00Z")
    outbox.deliver_due()
    pending.refresh_from_db()
    assert pending.status == Delivery.Status.DELIVERED
    call = bap.bap.calls("on_status")[-1]
    assert EMAIL not in call["body"].decode() and PHONE not in call["body"].decode()
    assert call["json"]["message"]["order"]["id"] == order_of(driver)  # the order's status still goes
    assert "billing" not in call["json"]["message"]["order"]
    assert_valid("on_status", call["json"])
    header = parse_signature_header(call["headers"]["Authorization"])
    verify_signature(call["body"], header, our_public_key_b64(), now=int(time.time()), skew=5)
    assert not BecknCallback.objects.filter(body__contains=EMAIL).exists()


def test_the_export_lists_the_ratings_of_the_drivers_orders_sent_from_another_transaction(
    bap: Any, driver: Driver, tmp_path: Path
) -> None:
    order_id = order_of(driver)
    bap.bap.transaction_id = "later-journey"
    bap("rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": "4"}]})
    assert "error" not in last(bap, "on_rating")
    call_command("driver_export", "--driver", str(driver.pk), "--output", str(tmp_path / "asha.json"))
    ratings = orjson.loads((tmp_path / "asha.json").read_bytes())["beckn"]["ratings"]
    assert [(r["category"], r["ref_id"], r["value"]) for r in ratings] == [("Order", order_id, "4")]


def test_a_restamp_does_not_write_back_a_body_erased_while_it_was_being_sent(
    bap: Any, driver: Driver, peer: FakePeer
) -> None:
    """A callback that waited is stamped anew as it goes and the stamped body stored; read before an erasure
    and stored after it, that had brought the driver's billing back for the delivery retention."""
    from datetime import timedelta

    from django.utils import timezone

    from beckn import callbacks

    peer.route("POST", f"{BAP_URI}/on_status", (503, {"error": "busy"}))
    bap("status", {"order_id": order_of(driver)})
    BecknCallback.objects.filter(action="on_status").update(created_at=timezone.now() - timedelta(minutes=5))
    sending = BecknCallback.objects.get(action="on_status")  # the sender's copy, read before the erasure
    erase(driver)
    body = callbacks._body_to_send(sending)
    assert EMAIL in body.decode()  # this try goes as it was read
    assert not BecknCallback.objects.filter(body__contains=EMAIL).exists()  # but the erased body stays erased
