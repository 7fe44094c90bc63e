"""An app's settlement when a CPO voids a charge with a credit CDR: whoever collected it, the void nets the
charge to nothing, as the ledger does; and an agreed settlement window is at most a year, refused as a form
error when longer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import BapAgreement, Cdr
from billing.services import payments
from billing.services.bap_settlement import BapSettlement, BapSettlementError, add_duration, bap_settlement_compute
from billing.services.records import cdr_store
from emsp.models import Driver, Partner
from tests.beckn.bap import BAP_ID
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm, init, item_of, select
from tests.beckn.test_payments_journey import BILL, charge_and_cdr, start

pytestmark = pytest.mark.django_db

ZERO = Decimal("0")


def charged(bap: Any, network: Partner, *, voided: bool) -> None:  # noqa: F811
    """An order charged through the Beckn journey (CDR-1, 463.27 INR incl. VAT and our fee), and, if `voided`,
    the CPO's credit CDR voiding it (mod_cdrs)."""
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    charge_and_cdr(bap, network, order_id)
    if voided:
        first = Cdr.objects.get(cdr_id="CDR-1")
        stamp = first.data["end_date_time"]
        credit = {**first.data, "id": "CDR-1-C", "credit": True, "credit_reference_id": "CDR-1",
                  "total_cost": {"excl_vat": -380, "incl_vat": -448.40}, "last_updated": stamp}  # fmt: skip
        with bap.capture(execute=True):
            cdr_store(network, credit)


def settlement() -> BapSettlement:
    today = timezone.localdate()
    return bap_settlement_compute(
        bap_id=BAP_ID, currency="INR", period_start=today - timedelta(days=1), period_end=today + timedelta(days=2)
    )


def wallet_driver() -> None:
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")


@pytest.mark.we_collect
def test_a_voided_charge_we_collected_nets_to_nothing(bap: Any, network: Partner) -> None:  # noqa: F811
    BapAgreement.objects.create(bap_id=BAP_ID, collects=False, finder_fee_percent=Decimal("2"))
    wallet_driver()
    charged(bap, network, voided=True)
    s = settlement()
    assert (s.collected_by_us, s.credits, s.billed_incl_vat) == (ZERO, -BILL, ZERO)
    assert (s.finder_fees_owed, s.net_due, s.charge_count) == (ZERO, ZERO, 1)
    assert sum(line.billed for line in s.lines) == s.billed_incl_vat
    assert sum(line.credits for line in s.lines) == s.credits


@pytest.mark.we_collect
def test_a_charge_we_collected_is_counted_whole_until_voided(bap: Any, network: Partner) -> None:  # noqa: F811
    BapAgreement.objects.create(bap_id=BAP_ID, collects=False, finder_fee_percent=Decimal("2"))
    wallet_driver()
    charged(bap, network, voided=False)
    s = settlement()
    assert (s.collected_by_us, s.credits, s.finder_fees_owed) == (BILL, ZERO, Decimal("9.27"))
    assert s.net_due == Decimal("-9.27")  # we owe the app its finder fee


def test_a_voided_charge_the_app_collected_nets_to_nothing(bap: Any, network: Partner) -> None:  # noqa: F811
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True, finder_fee_percent=Decimal("2"))
    charged(bap, network, voided=True)
    s = settlement()
    assert (s.collected_by_bap, s.collected_by_us, s.credits) == (ZERO, ZERO, -BILL)
    assert (s.finder_fees_retained, s.net_due) == (ZERO, ZERO)


# --- the agreed window ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["P8000Y", "P36500Y", "P7999Y12M", "P2Y", "P13M", "P1Y2D", "P367D"])
def test_a_window_longer_than_a_year_is_refused(window: str) -> None:
    with pytest.raises(BapSettlementError, match="window"):
        add_duration(datetime(2026, 1, 31, tzinfo=UTC), window)


@pytest.mark.parametrize("window", ["P1Y", "P12M", "P366D", "P52W"])
def test_a_window_of_a_year_is_accepted(window: str) -> None:
    assert add_duration(datetime(2027, 3, 1, tzinfo=UTC), window) <= datetime(2028, 3, 2, tzinfo=UTC)


def test_the_apps_terms_form_refuses_a_window_of_thousands_of_years(login: Callable[[str], Client]) -> None:
    admin = login("admin")
    url = reverse("admin:billing_bapagreement_add")
    terms = {"bap_id": "app.example", "legal_name": "", "settlement_basis": "delivery", "finder_fee_percent": "1"}
    refused = admin.post(url, {**terms, "settlement_window": "P8000Y"})
    assert refused.status_code == 200
    assert "settlement_window" in refused.context["adminform"].form.errors
    assert not BapAgreement.objects.exists()
