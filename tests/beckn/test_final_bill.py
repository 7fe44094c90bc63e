"""What a BAP is asked to pay: the quote and its payment agree; the final bill, once the CDR is in, uses the
quote's line titles and its lines add up."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from openapi_schema_validator import OAS30Validator

from beckn.rendering import final_quote_block as _final_quote
from beckn.rendering import payments_block as _payments
from beckn.rendering import quote_block as _quote_block
from billing.models import Quote
from tests.billing.factories import CdrFactory, DriverReceiptFactory

pytestmark = pytest.mark.django_db


def lines(quote: dict) -> dict[str, str]:
    return {line["title"]: line["price"]["value"] for line in quote["breakup"]}


def adds_up(quote: dict) -> bool:
    return sum(Decimal(line["price"]["value"]) for line in quote["breakup"]) == Decimal(quote["price"]["value"])


def component_receipt(**components: dict) -> object:
    cdr = CdrFactory(currency="INR", total_cost_excl_vat=Decimal("33.8000"), total_cost_incl_vat=Decimal("39.8840"))
    return DriverReceiptFactory(
        cdr=cdr,
        cpo_vat=Decimal("6.0840"),
        fee_excl_vat=Decimal("2.0000"),
        fee_vat=Decimal("0.3600"),
        total_incl_vat=Decimal("42.24"),
        breakdown={"cpo": components},
    )


def test_the_cdr_components_become_the_quote_lines_and_add_up_to_the_price() -> None:
    receipt = component_receipt(
        fixed_cost={"excl_vat": 30, "incl_vat": 35.4},
        energy_cost={"excl_vat": 3.8, "incl_vat": "4.4840"},
        time_cost=None,
    )
    quote = _final_quote(receipt)
    assert quote["price"] == {"currency": "INR", "value": "42.24"}
    assert lines(quote) == {
        "session-fee": "35.40",
        "energy-cost": "4.48",
        "service-charge": "2.36",
    }
    assert adds_up(quote)


def test_components_that_do_not_add_up_to_the_cpo_total_give_one_charging_line() -> None:
    receipt = component_receipt(energy_cost={"excl_vat": 3.8, "incl_vat": 4.484})  # the flat fee is missing
    quote = _final_quote(receipt)
    assert lines(quote) == {"charging-cost": "39.88", "service-charge": "2.36"}
    assert adds_up(quote)


def test_cents_lost_to_rounding_each_line_are_shown() -> None:
    receipt = component_receipt()
    receipt.total_incl_vat = Decimal("42.25")  # rounded up by the partner terms' policy
    quote = _final_quote(receipt)
    assert lines(quote)["rounding"] == "0.01"
    assert adds_up(quote)


def test_the_final_bill_is_valid_beckn() -> None:
    from tests.beckn.conformance import _spec

    quote = _final_quote(component_receipt(energy_cost={"excl_vat": 33.8, "incl_vat": 39.884}))
    spec = _spec()
    validator = OAS30Validator({**spec["components"]["schemas"]["Quotation"], "components": spec["components"]})
    assert not [e.message for e in validator.iter_errors(quote)]


def test_a_quote_without_vat_figures_asks_for_the_price_it_shows_with_our_fee_vat_as_the_bill_does() -> None:
    now = timezone.now()
    quote = Quote(
        pk=7,
        currency="INR",
        arrival_at=now,
        cpo_cost_excl_vat=Decimal("100"),
        fee_excl_vat=Decimal("5"),
        fee_vat=Decimal("0.90"),
        total_incl_vat=None,  # the CPO's tariff gives no VAT: incl. VAT unknown
        valid_until=now + timedelta(minutes=5),
    )
    # The final bill of such a charge counts the CPO's price as it is plus our fee and its VAT
    # (billing/services/driver_pricing.py::receipt_for_cdr): the quote asks for the same, 100 + 5 + 0.90.
    assert _payments(quote)[0]["params"]["amount"] == _quote_block(quote)["price"]["value"] == "105.90"
