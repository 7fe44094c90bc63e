"""billing.money: ISO 4217 minor units and the explicit rounding policies used at presentation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.money import minor_units, round_money


@pytest.mark.parametrize(
    ("amount", "policy", "expected"),
    [
        ("5.625", "HALF_UP", "5.63"),
        ("5.625", "HALF_EVEN", "5.62"),
        ("5.635", "HALF_EVEN", "5.64"),
        ("1.8370", "DOWN", "1.83"),
        ("2.2227942", "HALF_UP", "2.22"),
        ("1.831", "UP", "1.84"),
        ("-0.125", "HALF_UP", "-0.13"),  # credit CDRs round symmetrically
        ("-0.125", "FLOOR", "-0.13"),
        ("0.125", "half_up", "0.13"),  # policy names are case-insensitive
    ],
)
def test_it_rounds_with_the_named_policy(amount: str, policy: str, expected: str) -> None:
    assert str(round_money(Decimal(amount), "EUR", policy)) == expected


@pytest.mark.parametrize(("currency", "digits"), [("EUR", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("gbp", 2)])
def test_it_knows_minor_units(currency: str, digits: int) -> None:
    assert minor_units(currency) == digits


def test_it_rounds_yen_to_whole_units() -> None:
    assert round_money(Decimal("1234.5"), "JPY") == Decimal(1235)


def test_it_refuses_unknown_currencies_and_policies_and_floats() -> None:
    with pytest.raises(ValueError, match="currency"):
        round_money(Decimal(1), "EURO")
    with pytest.raises(ValueError, match="policy"):
        round_money(Decimal(1), "EUR", "BANKERS")
    with pytest.raises(TypeError):
        round_money(0.1, "EUR")  # type: ignore[arg-type]
