"""Third-party CDR vectors (tandemdrive ocpi-tariffs 0.6.1, Hamza-nabil ocpi-tariffs-py) repriced.

tandemdrive's harness prices each CDR with the sibling tariff.json in UTC and compares every stated
total rounded to 4 decimals; we do the same and document each place where a vector contradicts the
spec ([bf] text), asserting the spec's value there.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from billing.money import round_money
from billing.pricing import ChargingPeriod, PriceResult, parse_tariff, price_cdr, price_periods
from tests.billing.conftest import CASES_DIR, load_json

TANDEM = CASES_DIR / "tandemdrive-ocpi-tariffs"
HAMZA = CASES_DIR / "hamza-nabil-ocpi-tariffs-py"
FOUR = Decimal("0.0001")

TANDEM_CASES = [
    "025kwh_min_price/cdr1.json",
    "025kwh_min_price/cdr2_less_than_2kWh.json",
    "025kwh_start/cdr1.json",
    "simple_025kwh/cdr1.json",
    "simple_3hour_5parking/cdr1.json",
    "step_size/cdr1.json",
    "step_size_energy/cdr1.json",
    "grace_period_parking_time/cdr.json",
    "multiple_flat_fees/cdr.json",
]
MONEY = ("total_cost", "total_energy_cost", "total_time_cost", "total_parking_cost", "total_fixed_cost")
VOLUMES = ("total_energy", "total_time", "total_parking_time")


def four(value: Decimal) -> Decimal:
    return value.quantize(FOUR, rounding=ROUND_HALF_UP)


def price_tandem(relative: str, **options: Any) -> tuple[dict[str, Any], PriceResult]:
    cdr = load_json(TANDEM / relative)
    tariff = load_json((TANDEM / relative).parent / "tariff.json")
    return cdr, price_cdr(cdr, tariffs=[tariff], time_zone="UTC", **options)


def stated(cdr: dict[str, Any], field: str) -> tuple[Decimal, Decimal | None] | None:
    value = cdr.get(field)
    if value is None:
        return None
    return Decimal(str(value["excl_vat"])), Decimal(str(value["incl_vat"]))


def ours(result: PriceResult, field: str) -> tuple[Decimal, Decimal | None] | None:
    price = getattr(result, field)
    if price is None:
        return None
    return four(price.excl_vat), None if price.incl_vat is None else four(price.incl_vat)


def test_the_vector_list_is_complete() -> None:
    if not TANDEM.exists():
        pytest.skip(f"{TANDEM} not available (shared/ not mounted)")
    found = sorted(str(p.relative_to(TANDEM)) for p in TANDEM.glob("*/cdr*.json"))
    assert found == sorted(TANDEM_CASES)


@pytest.mark.parametrize(
    "relative",
    [
        "025kwh_min_price/cdr1.json",
        "025kwh_start/cdr1.json",
        "simple_025kwh/cdr1.json",
        "simple_3hour_5parking/cdr1.json",
        "grace_period_parking_time/cdr.json",
        "multiple_flat_fees/cdr.json",
    ],
)
def test_tandemdrive_vector_totals_match(relative: str) -> None:
    cdr, result = price_tandem(relative)
    for field in MONEY:
        if field in cdr:
            assert ours(result, field) == stated(cdr, field), field
    for field in VOLUMES:
        if field in cdr:
            assert four(getattr(result, field)) == Decimal(str(cdr[field])), field


def test_tandemdrive_min_price_vector_is_overruled_by_the_spec() -> None:
    # The vector expects 0.30 / 0.33: tandemdrive 0.6.1 parses min_price but never applies it.
    # mod_tariffs (tariff_12 example): "if less than 2 kWh is charged, 0.50 euro (excl. VAT) or
    # 0.55 euro (incl. VAT) will be billed". The energy sub-total itself stays 0.30 / 0.33.
    cdr, result = price_tandem("025kwh_min_price/cdr2_less_than_2kWh.json")
    assert stated(cdr, "total_cost") == (Decimal("0.3"), Decimal("0.33"))
    assert ours(result, "total_cost") == (Decimal("0.5000"), Decimal("0.5500"))
    assert result.min_price_applied
    assert ours(result, "total_energy_cost") == stated(cdr, "total_energy_cost")
    assert four(result.total_energy) == Decimal("1.2")


def test_tandemdrive_step_size_vector_hour_artefact() -> None:
    # tariff_14 example #1 ([bf]: 0.55). The vector writes 5 minutes as 0.0834 h (4 decimals,
    # rounded up), so its TIME cost is 0.0834 x 1.20 + 0.0834 x 2.40 = 0.30024 and it expects
    # 0.5502. We bill the stated volumes exactly, so the CDR as given reproduces that number ...
    cdr, result = price_tandem("step_size/cdr1.json")
    assert four(result.total_cost.excl_vat) == Decimal("0.5502")
    assert four(result.total_parking_cost.excl_vat) == Decimal("0.25")
    assert four(result.total_parking_time) == Decimal(str(cdr["total_parking_time"]))
    assert four(result.total_time) == Decimal(str(cdr["total_time"]))
    # ... and the same periods with the 5 minutes stated exactly give the spec's 0.55.
    start = datetime.fromisoformat("2022-01-13T16:55:00+00:00")
    five, two = timedelta(minutes=5), timedelta(minutes=2)
    periods = [
        ChargingPeriod(start, start + five, time=five),
        ChargingPeriod(start + five, start + 2 * five, time=five),
        ChargingPeriod(start + 2 * five, start + 2 * five + two, parking_time=two),
    ]
    tariff = parse_tariff(load_json(TANDEM / "step_size" / "tariff.json"))
    exact = price_periods(tariff, periods, time_zone="UTC", session_start=start)
    assert exact.total_cost.excl_vat == Decimal("0.55")


@pytest.mark.parametrize("relative", ["step_size/cdr1.json", "step_size_energy/cdr1.json"])
def test_tandemdrive_vat_less_vectors(relative: str) -> None:
    # These tariffs give no `vat`. PriceComponent.vat: "If omitted, no VAT is applicable. Not
    # providing a VAT is different from 0% VAT"; tag 2.2.1's tariff_7 example concludes "it is not
    # possible to calculate total costs including VAT". tandemdrive treats it as 0 % (incl = excl).
    # Default: incl_vat unknown (None) with a warning; missing_vat="exempt" reproduces the vector.
    cdr, result = price_tandem(relative)
    assert result.total_cost.incl_vat is None
    assert "vat_unknown:total_cost.incl_vat" in result.warnings
    _, exempt = price_tandem(relative, missing_vat="exempt")
    expected = stated(cdr, "total_cost")
    assert expected is not None
    assert four(exempt.total_cost.incl_vat) == four(expected[1])  # type: ignore[arg-type]


def test_tandemdrive_step_size_energy_rounds_the_session_total_once() -> None:
    # 5 + 2 + 5 kWh = 12 kWh, rounded once with the last component's 5000 Wh step -> 15 kWh x 2.00
    # (tandemdrive#79: maintainer confirms step applies once to the session total).
    cdr, result = price_tandem("step_size_energy/cdr1.json")
    assert result.total_energy_cost.excl_vat == Decimal("30")
    assert Decimal(str(cdr["total_energy_cost"]["excl_vat"])) == Decimal("30")
    assert [c.step_added for c in result.breakdown["ENERGY"]] == [Decimal(0), Decimal(3)]


def test_codeberg_issue_228_real_cdr() -> None:
    # A Dutch CDR with 24 hourly ENERGY elements per day. Restrictions are local time and
    # CdrLocation has no time_zone in 2.2.1, so the zone is given: Europe/Amsterdam (CEST, +02:00).
    cdr = load_json(HAMZA / "codeberg_issue_228" / "cdr.json")
    result = price_cdr(cdr, time_zone="Europe/Amsterdam")
    # 7.293 kWh 14:00-15:00 local x 0.22 + 0.969 kWh from 15:00 x 0.24
    assert result.total_cost.excl_vat == Decimal("1.83702")
    assert result.total_cost.incl_vat == Decimal("2.2227942")
    # The Codeberg reference output 1.84 / 2.22 is our exact amount rounded half-up to cents ...
    assert round_money(result.total_cost.excl_vat, "EUR") == Decimal("1.84")
    assert round_money(result.total_cost.incl_vat, "EUR") == Decimal("2.22")
    # ... while the CPO's own CDR says 1.83 / 2.21 (it truncates, then derives incl from the rounded
    # excl). OCPI leaves money rounding to contracts; SOURCES.md documents this as a cent-level
    # dispute, so the CPO figure is only checked to within 2 cents, as the Python suite does.
    cpo = stated(cdr, "total_cost")
    assert cpo is not None
    assert abs(result.total_cost.excl_vat - cpo[0]) < Decimal("0.02")
    assert abs(result.total_cost.incl_vat - cpo[1]) < Decimal("0.02")  # type: ignore[operator]
    # Periods start 20 min before the CDR: flagged, and the session is measured from the first one.
    assert "periods_outside_start_end_date_time" in result.warnings
    assert four(result.total_time) == Decimal("1.0919")


def test_codeberg_issue_228_in_utc_would_pick_other_hours() -> None:
    cdr = load_json(HAMZA / "codeberg_issue_228" / "cdr.json")
    result = price_cdr(cdr)  # no zone known: UTC, flagged
    assert "time_zone_unknown_assumed_utc" in result.warnings
    assert result.total_cost.excl_vat == Decimal("7.293") * Decimal("0.23") + Decimal("0.969") * Decimal("0.21")


def test_step_size_with_local_offsets_matches_the_utc_vector() -> None:
    # The Python port's variant with +01:00 offsets; OCPI DateTime should be UTC, so it is
    # converted and flagged. 16:55+01:00 is 16:55 local in Amsterdam in January.
    cdr = load_json(HAMZA / "step_size_local_offset" / "cdr1.json")
    tariff = load_json(TANDEM / "step_size" / "tariff.json")
    result = price_cdr(cdr, tariffs=[tariff], time_zone="Europe/Amsterdam")
    assert four(result.total_cost.excl_vat) == Decimal(str(cdr["total_cost"]["excl_vat"]))
    assert any(w.startswith("non_utc_offset:") for w in result.warnings)


def test_misspelled_restriction_field_is_refused() -> None:
    # Lint vector: `dayOfWeek` is not a 2.2.1 field; ignoring it would apply the weekday price on
    # weekends too, so parsing fails naming the field.
    from billing.pricing import TariffError

    data = load_json(HAMZA / "misspelled_field" / "tariff.json")
    with pytest.raises(TariffError) as caught:
        parse_tariff(data)
    assert caught.value.path == "elements[0].restrictions.dayOfWeek"


def test_lowercase_currency_is_accepted_with_a_warning() -> None:
    data = load_json(HAMZA / "misspelled_field" / "tariff.json")
    for element in data["elements"]:
        element["restrictions"]["day_of_week"] = element["restrictions"].pop("dayOfWeek")
    tariff = parse_tariff(data)
    assert tariff.currency == "GBP"
    assert "currency_invalid_case:currency" in tariff.warnings


def test_missing_country_code_is_a_warning_not_an_error() -> None:
    tariff = parse_tariff(load_json(TANDEM / "grace_period_parking_time" / "tariff.json"))
    assert "missing_field:country_code" in tariff.warnings


def test_every_tariff_only_vector_parses() -> None:
    if not TANDEM.exists():
        pytest.skip(f"{TANDEM} not available (shared/ not mounted)")
    paths: list[Path] = sorted(TANDEM.glob("*/tariff.json"))
    assert len(paths) == 24
    for path in paths:
        assert parse_tariff(load_json(path)).elements, path
