"""Erasure reaches every copy of a driver's personal data, and the export lists everything kept about them: the
visual number of every token (not only those still valid) and its copies in our token pushes and commands, and
the payer details payment providers put in their webhook events."""

from __future__ import annotations

import pytest

from billing.models import Payment, ProviderWebhook
from billing.payments import gateway as gateways
from billing.services.payments import webhook_receive
from emsp import privacy
from emsp.models import Command
from emsp.services.tokens import token_issue
from ocpi.models import PushDelivery
from tests.factories import DriverFactory, PartnerFactory, TokenFactory

pytestmark = pytest.mark.django_db

NAME_ON_CARD = "ASHA RAO 4111-2222"


def test_erasure_removes_the_visual_number_of_every_token_and_its_copies() -> None:
    partner = PartnerFactory()
    driver = DriverFactory(name="Asha Rao", email="asha@example.com")
    old = TokenFactory(driver=driver, visual_number="ASHA RAO 4111-1111", valid=False)
    live = token_issue(driver=driver, visual_number=NAME_ON_CARD)
    PushDelivery.objects.update(status="DELIVERED")
    Command.objects.create(
        partner=partner, type=Command.Type.START_SESSION, token=live, request={"token": {"visual_number": NAME_ON_CARD}}
    )

    privacy.driver_erase(driver)
    old.refresh_from_db()
    live.refresh_from_db()
    assert (old.visual_number, live.visual_number) == ("", "")
    assert not PushDelivery.objects.filter(payload__visual_number=NAME_ON_CARD).exists()
    assert not [c for c in Command.objects.all() if "visual_number" in c.request.get("token", {})]
    assert "ASHA RAO" not in str(privacy.driver_export(driver))
    # Every token, already invalid ones too, is sent again without it (a CPO keeps what we pushed before).
    latest = {p.payload["uid"]: p.payload for p in PushDelivery.objects.order_by("pk")}
    assert {uid: ("visual_number" in body, body["valid"]) for uid, body in latest.items()} == {
        old.uid: (False, False),
        live.uid: (False, False),
    }


def test_a_webhook_event_is_kept_without_the_payers_details() -> None:
    driver = DriverFactory(email="asha@example.com", phone="+919845000000")
    entity = {
        "id": "pay_1",
        "email": "asha@example.com",
        "contact": "+919845000000",
        "vpa": "asha@okbank",
        "amount": 1000,
        "currency": "INR",
    }
    event = gateways.WebhookEvent(
        provider="razorpay",
        event_id="evt_1",
        type=gateways.IGNORED,
        provider_type="payment.authorized",
        raw={"entity": "event", "payload": {"payment": {"entity": entity}}},
        payment_id="pay_1",
    )
    webhook_receive(event)
    stored = ProviderWebhook.objects.get().payload["payload"]["payment"]["entity"]
    assert stored == {**entity, "email": "[redacted]", "contact": "[redacted]", "vpa": "[redacted]"}
    assert driver.email not in str(ProviderWebhook.objects.get().payload)


def test_the_export_lists_the_drivers_payments() -> None:
    driver = DriverFactory()
    Payment.objects.create(driver=driver, provider="wallet", currency="INR", requested_minor=50000)
    (payment,) = privacy.driver_export(driver)["billing"]["payments"]
    assert (payment["provider"], payment["currency"], payment["requested_minor"]) == ("wallet", "INR", 50000)


def test_feedback_a_driver_wrote_is_exported_and_its_comment_erased() -> None:
    from beckn.models import BecknTransaction, DriverFeedback
    from emsp.models import Booking
    from tests.factories import stored_location

    driver = DriverFactory()
    evse = stored_location(PartnerFactory()).evses.first()
    booking = Booking.objects.create(
        evse=evse, connector_id="1", order_id="ORD-1", app_id="bap.example", app_transaction_id="T-1"
    )
    BecknTransaction.objects.create(bap_id="bap.example", transaction_id="T-1", driver=driver, booking=booking)
    DriverFeedback.objects.create(order_id="ORD-1", rating=2, comment="Asha here, call me on +91 98450 00000")
    DriverFeedback.objects.create(order_id="ORD-OTHER", rating=5, comment="someone else")

    (feedback,) = privacy.driver_export(driver)["beckn"]["feedback"]
    assert (feedback["order_id"], feedback["rating"]) == ("ORD-1", 2)
    privacy.driver_erase(driver)
    assert dict(DriverFeedback.objects.values_list("order_id", "comment")) == {"ORD-1": "", "ORD-OTHER": "someone else"}
