"""Quotes from OCPI 2.3.0 tariffs (mod_tariffs 2.3.0 TaxIncluded): prices that include taxes are split back into
the amount before taxes, on which our fee is set; a tariff that includes taxes at rates it does not state
cannot be quoted (its price before taxes is unknown, and we never guess a price)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing.models import PartnerTerms, Tariff
from billing.services import tariff_put
from billing.services.driver_pricing import NoTariff, quote_charge
from emsp.models import Partner
from tests.factories import stored_location

pytestmark = pytest.mark.django_db

ARRIVAL = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)


def tariff(tax_included: str, vat: float | None) -> dict[str, Any]:
    component: dict[str, Any] = {"type": "ENERGY", "price": 21.24, "step_size": 1}
    if vat is not None:
        component["vat"] = vat
    return {
        "country_code": "IN",
        "party_id": "CPA",
        "id": "T1",
        "currency": "INR",
        "elements": [{"price_components": [component]}],
        "tax_included": tax_included,
        "last_updated": "2026-01-01T00:00:00Z",
    }


def evse_with(partner: Partner, data: dict[str, Any]) -> Any:
    tariff_put(partner, data)
    PartnerTerms.objects.create(partner=partner, fee_flat=Decimal("10"), fee_percent=Decimal("5"))
    return stored_location(partner).evses.order_by("uid").first()


def test_a_price_including_18_percent_gst_is_quoted_on_its_amount_before_taxes(partner: Partner) -> None:
    evse = evse_with(partner, tariff("YES", 18))
    assert Tariff.objects.get().tax_included == "YES"
    quote = quote_charge(evse=evse, connector=evse.connectors.get(), arrival=ARRIVAL, energy_kwh=Decimal("20"))
    # 21.24 per kWh including 18 % is 18.00 before it: 20 kWh = 360 + 64.80.
    assert (quote.cpo_cost_excl_vat, quote.cpo_cost_incl_vat) == (Decimal("360"), Decimal("424.80"))
    assert quote.fee_excl_vat == Decimal("28")  # 10 flat + 5 % of 360
    line = quote.breakdown["lines"][0]
    assert (line["unit_price_excl_vat"], line["price_excl_vat"], line["price_incl_vat"]) == ("18", "360.00", "424.80")


def test_a_tariff_including_taxes_at_unstated_rates_is_not_quoted(partner: Partner) -> None:
    evse = evse_with(partner, tariff("YES", None))
    with pytest.raises(NoTariff, match="rates it does not state"):
        quote_charge(evse=evse, connector=evse.connectors.get(), arrival=ARRIVAL, energy_kwh=Decimal("20"))


def test_a_tariff_without_taxes_is_quoted_with_none(partner: Partner) -> None:
    evse = evse_with(partner, tariff("N/A", None))
    quote = quote_charge(evse=evse, connector=evse.connectors.get(), arrival=ARRIVAL, energy_kwh=Decimal("20"))
    assert (quote.cpo_cost_excl_vat, quote.cpo_cost_incl_vat) == (Decimal("424.80"), Decimal("424.80"))
