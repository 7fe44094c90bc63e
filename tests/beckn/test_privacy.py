"""People's data: stored request bodies carry no billing or contact details; a driver's data is exported as
JSON and erased on request (money records kept, pseudonymised); each class of data goes after its retention."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from beckn.models import BecknMessage, BecknTransaction
from billing.models import DriverReceipt, Quote
from emsp import privacy
from emsp.models import Delivery, Driver
from ocpi.models import OcpiMessage, PushDelivery
from tests.beckn.test_actions import confirm, init, item_of, select
from tests.billing.factories import CdrFactory, DriverReceiptFactory

pytestmark = pytest.mark.django_db

EMAIL, PHONE = "asha@example.com", "+919845000000"


@pytest.fixture
def driver(bap: Any) -> Driver:
    select(bap, item_of(bap))
    init(bap)
    confirm(bap)
    driver = Driver.objects.get(email=EMAIL)
    DriverReceiptFactory(driver=driver, cdr=CdrFactory(token_uid=driver.tokens.first().uid))
    return driver


def test_stored_requests_carry_no_billing_or_contact_details(driver: Driver) -> None:
    init_body = BecknMessage.objects.get(action="init").body
    assert EMAIL not in init_body and PHONE not in init_body
    assert orjson.loads(init_body)["message"]["order"]["billing"] == "[redacted]"
    assert BecknTransaction.objects.get(driver=driver).billing["email"] == EMAIL  # kept once, encrypted


def test_a_drivers_data_is_exported_as_json(driver: Driver, tmp_path: Path) -> None:
    call_command("driver_export", "--driver", str(driver.pk), "--output", str(tmp_path / "asha.json"))
    data = orjson.loads((tmp_path / "asha.json").read_bytes())
    assert data["domain"]["driver"]["email"] == EMAIL
    assert data["domain"]["tokens"][0]["type"] == "APP_USER"
    assert data["domain"]["bookings"][0]["state"] == "CONFIRMED"
    assert data["beckn"]["journeys"][0]["billing"]["phone"] == PHONE
    assert len(data["billing"]["receipts"]) == 1


def test_erasure_needs_a_yes(driver: Driver) -> None:
    with pytest.raises(CommandError, match="--yes"):
        call_command("driver_erase", "--driver", str(driver.pk))
    assert Driver.objects.get(pk=driver.pk).email == EMAIL


def test_erasure_pseudonymises_and_keeps_the_money_records(driver: Driver) -> None:
    token = driver.tokens.first()
    OcpiMessage.objects.create(direction="OUT", method="PUT", url="x", request_body=f'{{"uid": "{token.uid}"}}')
    receipt = DriverReceipt.objects.get(driver=driver)
    call_command("driver_erase", "--driver", str(driver.pk), "--yes")
    erased = Driver.objects.get(pk=driver.pk)
    assert (erased.email, erased.phone, erased.erased_at is not None) == ("", "", True)
    assert EMAIL not in orjson.dumps(privacy.driver_export(erased)).decode()
    assert BecknTransaction.objects.get(driver=driver).billing == {}
    assert all(m.body == "[erased]" for m in BecknMessage.objects.filter(transaction__driver=driver))
    assert not OcpiMessage.objects.filter(request_body__contains=token.uid).exists()
    token.refresh_from_db()
    assert not token.valid
    assert PushDelivery.objects.filter(payload__uid=token.uid, payload__valid=False).exists()  # CPOs are told
    kept = DriverReceipt.objects.get(pk=receipt.pk)
    assert (kept.driver_id, kept.total_incl_vat) == (driver.pk, receipt.total_incl_vat)


def test_each_class_of_data_goes_after_its_retention(driver: Driver, settings: Any) -> None:
    now = timezone.now()
    old, recent = now - timedelta(days=400), now - timedelta(days=1)
    for at in (old, recent):
        OcpiMessage.objects.create(direction="IN", method="GET", url="x", created_at=at)
    BecknMessage.objects.update(received_at=old)
    Quote.objects.filter(accepted_at__isnull=True).update(created_at=old)
    Delivery.objects.update(status=Delivery.Status.DELIVERED, created_at=old, delivered_at=old)  # settled as long ago
    counts = privacy.purge_expired(now)
    assert counts["ocpi.ocpi_messages"] == 1
    assert not OcpiMessage.objects.filter(created_at__lt=now - timedelta(days=30)).exists()
    assert OcpiMessage.objects.filter(created_at=recent).exists()
    assert counts["beckn.beckn_messages"] >= 4 and not BecknMessage.objects.exists()
    assert not Delivery.objects.exists()
    assert not Quote.objects.filter(accepted_at__isnull=True).exists()
    assert DriverReceipt.objects.filter(driver=driver).exists()  # tax records stay their 8 years
