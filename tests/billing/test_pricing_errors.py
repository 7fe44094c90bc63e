"""Malformed tariffs and CDRs raise TariffError / CdrError naming the offending field."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.pricing import (
    CdrError,
    ChargingPeriod,
    PricingError,
    TariffError,
    parse_tariff,
    price_cdr,
    price_periods,
    quote,
)

GOOD: dict[str, Any] = {
    "country_code": "NL",
    "party_id": "ABC",
    "id": "T1",
    "currency": "EUR",
    "elements": [
        {
            "price_components": [
                {"type": "FLAT", "price": 0.5, "vat": 21.0, "step_size": 1},
                {"type": "ENERGY", "price": 0.25, "vat": 21.0, "step_size": 1},
            ],
            "restrictions": {"start_time": "07:00", "end_time": "23:00"},
        }
    ],
    "last_updated": "2024-01-01T00:00:00Z",
}
CDR: dict[str, Any] = {
    "start_date_time": "2024-05-06T10:00:00Z",
    "end_date_time": "2024-05-06T11:00:00Z",
    "currency": "EUR",
    "charging_periods": [{"start_date_time": "2024-05-06T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 10}]}],
    "tariffs": [GOOD],
}


def mutate(base: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(base)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["elements"], KeyError, "elements"),
        (["elements"], [], "elements"),
        (["elements", 0, "price_components"], [], "elements[0].price_components"),
        (["elements", 0, "price_components", 1, "price"], "0.25", "elements[0].price_components[1].price"),
        (["elements", 0, "price_components", 1, "price"], float("nan"), "elements[0].price_components[1].price"),
        (["elements", 0, "price_components", 1, "price"], True, "elements[0].price_components[1].price"),
        (["elements", 0, "price_components", 1, "price"], KeyError, "elements[0].price_components[1].price"),
        (["elements", 0, "price_components", 1, "type"], "ENERGIE", "elements[0].price_components[1].type"),
        (["elements", 0, "price_components", 1, "vat"], -1, "elements[0].price_components[1].vat"),
        (["elements", 0, "price_components", 0, "step_size"], 1.5, "elements[0].price_components[0].step_size"),
        (["elements", 0, "price_components", 0, "step_size"], -60, "elements[0].price_components[0].step_size"),
        (["elements", 0, "price_components", 0, "step_size"], "60", "elements[0].price_components[0].step_size"),
        (["elements", 0, "restrictions", "start_time"], "25:00", "elements[0].restrictions.start_time"),
        (["elements", 0, "restrictions", "end_time"], "7:00", "elements[0].restrictions.end_time"),
        (["elements", 0, "restrictions", "start_date"], "2024-02-30", "elements[0].restrictions.start_date"),
        (["elements", 0, "restrictions", "day_of_week"], ["MON"], "elements[0].restrictions.day_of_week[0]"),
        (["elements", 0, "restrictions", "day_of_week"], "MONDAY", "elements[0].restrictions.day_of_week"),
        (["elements", 0, "restrictions", "reservation"], "RESERVED", "elements[0].restrictions.reservation"),
        (["elements", 0, "restrictions", "max_kwh"], -5, "elements[0].restrictions.max_kwh"),
        (["elements", 0, "restrictions", "min_duration"], 1.5, "elements[0].restrictions.min_duration"),
        (["elements", 0, "restrictions", "dayOfWeek"], ["MONDAY"], "elements[0].restrictions.dayOfWeek"),
        (["elements", 0, "restrictions"], "weekdays", "elements[0].restrictions"),
        (["elements", 0], "FLAT", "elements[0]"),
        (["currency"], "EURO", "currency"),
        (["currency"], KeyError, "currency"),
        (["type"], "CHEAP", "type"),
        (["min_price"], {"incl_vat": 1}, "min_price.excl_vat"),
        (["max_price"], {"excl_vat": "10"}, "max_price.excl_vat"),
        (["start_date_time"], "yesterday", "start_date_time"),
    ],
)
def test_malformed_tariff_names_the_field(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(TariffError) as caught:
        parse_tariff(mutate(GOOD, path, value))
    assert caught.value.path == field
    assert str(caught.value).startswith(f"{field}: ")


def test_min_kwh_above_max_kwh_is_refused() -> None:
    data = mutate(GOOD, ["elements", 0, "restrictions"], {"min_kwh": 10, "max_kwh": 5})
    with pytest.raises(TariffError, match=r"elements\[0\]\.restrictions\.max_kwh"):
        parse_tariff(data)


def test_min_price_above_max_price_is_refused() -> None:
    data = {**GOOD, "min_price": {"excl_vat": 5}, "max_price": {"excl_vat": 4}}
    with pytest.raises(TariffError, match=r"min_price\.excl_vat"):
        parse_tariff(data)


def test_a_tariff_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TariffError):
        parse_tariff(["not", "a", "tariff"])  # type: ignore[arg-type]


def test_enum_case_and_spaces_are_tolerated() -> None:
    data = mutate(GOOD, ["elements", 0, "price_components", 1, "type"], " energy ")
    data = mutate(data, ["elements", 0, "restrictions", "day_of_week"], ["monday ", "Tuesday"])
    tariff = parse_tariff(data)
    assert tariff.elements[0].price_components[1].type == "ENERGY"
    assert tariff.elements[0].restrictions is not None
    assert tariff.elements[0].restrictions.day_of_week == ("MONDAY", "TUESDAY")


def test_errors_are_value_errors() -> None:
    assert issubclass(TariffError, PricingError)
    assert issubclass(CdrError, PricingError)
    assert issubclass(PricingError, ValueError)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["charging_periods"], KeyError, "charging_periods"),
        (["charging_periods"], [], "charging_periods"),
        (["start_date_time"], KeyError, "start_date_time"),
        (["end_date_time"], "2024-05-06T09:00:00Z", "end_date_time"),
        (["start_date_time"], "06-05-2024 10:00", "start_date_time"),
        (["charging_periods", 0, "start_date_time"], 1715000000, "charging_periods[0].start_date_time"),
        (["charging_periods", 0, "dimensions"], [], "charging_periods[0].dimensions"),
        (["charging_periods", 0, "dimensions", 0, "type"], "KWH", "charging_periods[0].dimensions[0].type"),
        (["charging_periods", 0, "dimensions", 0, "volume"], -1, "charging_periods[0].dimensions[0].volume"),
        (["charging_periods", 0, "dimensions", 0, "volume"], "10", "charging_periods[0].dimensions[0].volume"),
        (["charging_periods", 0, "dimensions", 0, "volume"], KeyError, "charging_periods[0].dimensions[0].volume"),
        (["charging_periods", 0, "tariff_id"], "OTHER", "charging_periods[0].tariff_id"),
        (["tariffs"], [], "tariffs"),
        (
            ["tariffs", 0, "elements", 0, "price_components", 0, "price"],
            None,
            "tariffs[0].elements[0].price_components[0].price",
        ),
        (["cdr_location"], {"time_zone": "Mars/Olympus"}, "cdr_location.time_zone"),
    ],
)
def test_malformed_cdr_names_the_field(path: list[Any], value: Any, field: str) -> None:
    with pytest.raises(PricingError) as caught:
        price_cdr(mutate(CDR, path, value))
    assert caught.value.path == field


def test_duplicate_dimension_in_a_period_is_refused() -> None:
    cdr = mutate(CDR, ["charging_periods", 0, "dimensions"], [{"type": "ENERGY", "volume": 1}] * 2)
    with pytest.raises(CdrError, match=r"charging_periods\[0\]\.dimensions\[1\]\.type"):
        price_cdr(cdr)


def test_unknown_time_zone_argument_is_refused() -> None:
    with pytest.raises(CdrError, match="time_zone"):
        price_cdr(CDR, time_zone="Europe/Atlantis")


def test_unknown_rounding_policy_is_refused() -> None:
    with pytest.raises(CdrError, match="rounding"):
        price_cdr(CDR, rounding="BANKERS")


def test_naive_datetimes_are_refused() -> None:
    start = datetime(2024, 5, 6, 10, 0)
    with pytest.raises(CdrError, match="session_start"):
        price_periods(parse_tariff(GOOD), [ChargingPeriod(start)], time_zone="UTC", session_start=start)


def test_quote_needs_an_end_condition() -> None:
    with pytest.raises(CdrError, match="energy_kwh"):
        quote(GOOD, start=datetime(2024, 5, 6, 10, 0, tzinfo=UTC), time_zone="UTC", power_kw=Decimal(11))


def test_cdr_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(CdrError):
        price_cdr("cdr.json")  # type: ignore[arg-type]


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [path, *(leaf for key, value in data.items() for leaf in _leaves(value, (*path, key)))]
    if isinstance(data, list):
        return [path, *(leaf for i, value in enumerate(data) for leaf in _leaves(value, (*path, i)))]
    return [path]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["2024-05-06T10:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "24:00", "FLAT"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_corruption_raises_a_pricing_error_or_prices(data: st.DataObject) -> None:
    # "Never a crash with some other exception": corrupt one node of a valid CDR (tariff embedded).
    leaves = [p for p in _leaves(CDR) if p]
    path = data.draw(st.sampled_from(leaves))
    value = data.draw(json_values)
    corrupted = mutate(CDR, list(path), value)
    try:
        result = price_cdr(corrupted, time_zone="Europe/Amsterdam")
    except PricingError:
        return
    assert result.total_cost.excl_vat.is_finite()
    json.dumps(result.to_dict(rounding="HALF_UP"))
