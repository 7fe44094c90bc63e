"""Property tests of the tariff engine over generated tariffs and sessions (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.pricing import ChargingPeriod, PriceResult, parse_tariff, price_periods

QUARTER = timedelta(minutes=15)
TINY = Decimal("1e-20")  # sums in a different order may differ in the 34th digit of non-terminating costs
ZONES = ("Europe/Amsterdam", "UTC", "America/New_York", "Australia/Lord_Howe")
DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
STEPS = {"ENERGY": (1, 100, 500), "TIME": (1, 60, 300, 900), "PARKING_TIME": (1, 60, 300, 900), "FLAT": (0, 1)}

money = st.decimals(min_value=0, max_value=5, places=2)
hhmm = st.builds(lambda h, m: f"{h:02d}:{m:02d}", st.integers(0, 23), st.sampled_from((0, 15, 30, 45)))


@st.composite
def restrictions(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.booleans()):
        return None
    r: dict[str, Any] = {}
    if draw(st.booleans()):
        r["start_time"] = draw(hhmm)
    if draw(st.booleans()):
        r["end_time"] = draw(hhmm)
    if draw(st.booleans()):
        r["day_of_week"] = draw(st.lists(st.sampled_from(DAYS), min_size=1, max_size=7, unique=True))
    if draw(st.booleans()):
        r["max_kwh"] = draw(st.integers(1, 60))
    if draw(st.booleans()):
        r["min_kwh"] = draw(st.integers(0, r.get("max_kwh", 60)))
    if draw(st.booleans()):
        r["max_duration"] = draw(st.integers(1, 6)) * 1800
    if draw(st.booleans()):
        r["min_duration"] = draw(st.integers(0, r.get("max_duration", 10800) // 1800)) * 1800
    if draw(st.booleans()):
        r["max_power"] = draw(st.sampled_from((11, 22, 50)))
    return r


@st.composite
def tariffs(draw: st.DrawFn) -> dict[str, Any]:
    elements = []
    for _ in range(draw(st.integers(1, 3))):
        kinds = draw(st.lists(st.sampled_from(tuple(STEPS)), min_size=1, max_size=4, unique=True))
        components = []
        for kind in kinds:
            component: dict[str, Any] = {
                "type": kind,
                "price": draw(money),
                "step_size": draw(st.sampled_from(STEPS[kind])),
            }
            vat = draw(st.one_of(st.none(), st.sampled_from((0, 6, 10, 21))))
            if vat is not None:
                component["vat"] = vat
            components.append(component)
        element: dict[str, Any] = {"price_components": components}
        restriction = draw(restrictions())
        if restriction is not None:
            element["restrictions"] = restriction
        elements.append(element)
    data: dict[str, Any] = {"id": "P", "currency": "EUR", "elements": elements}
    low = draw(st.one_of(st.none(), money))
    high = draw(st.one_of(st.none(), st.decimals(min_value=5, max_value=80, places=2)))
    # Price pairs with incl >= excl, as any real VAT-inclusive amount is.
    if low is not None:
        data["min_price"] = {"excl_vat": low, "incl_vat": low * Decimal("1.21")}
    if high is not None:
        data["max_price"] = {"excl_vat": high, "incl_vat": high * Decimal("1.21")}
    return data


# Volumes are whole multiples of every step (15 min, 0.5 kWh) so that growth is not blurred by the
# spec's own step rules: with a coarse step a longer session *can* cost less, e.g. 29 min rounded
# to 30 min at 1.20/h vs 29 min + 1 free minute under a new element with a 1-second step.
@st.composite
def period_specs(draw: st.DrawFn) -> tuple[bool, int, int, int]:
    charging = draw(st.booleans())
    return charging, draw(st.integers(1, 8)), draw(st.integers(0, 30)), draw(st.sampled_from((7, 11, 22, 50, 150)))


def build(start: datetime, specs: list[tuple[bool, int, int, int]]) -> list[ChargingPeriod]:
    periods = []
    moment = start
    for charging, quarters, half_kwh, power in specs:
        length = quarters * QUARTER
        if charging:
            period = ChargingPeriod(
                moment, moment + length, energy=Decimal(half_kwh) / 2, time=length, max_power=Decimal(power)
            )
        else:
            period = ChargingPeriod(moment, moment + length, parking_time=length)
        periods.append(period)
        moment += length
    return periods


def price(tariff: dict[str, Any], zone: str, start: datetime, specs: list[tuple[bool, int, int, int]]) -> PriceResult:
    return price_periods(parse_tariff(tariff), build(start, specs), time_zone=zone, session_start=start)


starts = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2025, 12, 31), timezones=st.just(UTC))
sessions = st.lists(period_specs(), min_size=1, max_size=4)
common = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@common
@given(tariffs(), st.sampled_from(ZONES), starts, sessions, period_specs())
def test_total_never_falls_when_the_session_grows(
    tariff: dict[str, Any], zone: str, start: datetime, specs: list[Any], extra: tuple[bool, int, int, int]
) -> None:
    # Growth is appended (more energy or time at the end): the spec makes power-based elements
    # legitimately cheaper when the *same* period delivers more energy (higher power).
    before = price(tariff, zone, start, specs).total_cost
    after = price(tariff, zone, start, [*specs, extra]).total_cost
    assert after.excl_vat >= before.excl_vat
    if before.incl_vat is not None and after.incl_vat is not None:
        assert after.incl_vat >= before.incl_vat


@common
@given(tariffs(), st.sampled_from(ZONES), starts, sessions)
def test_total_stays_within_min_and_max_price(
    tariff: dict[str, Any], zone: str, start: datetime, specs: list[Any]
) -> None:
    total = price(tariff, zone, start, specs).total_cost
    low, high = tariff.get("min_price"), tariff.get("max_price")
    if low is not None:
        assert total.excl_vat >= low["excl_vat"]
        if total.incl_vat is not None:
            assert total.incl_vat >= low["incl_vat"]
    if high is not None:
        assert total.excl_vat <= high["excl_vat"]
        if total.incl_vat is not None:
            assert total.incl_vat <= high["incl_vat"]


@common
@given(tariffs(), st.sampled_from(ZONES), starts, sessions)
def test_incl_vat_is_never_below_excl_vat(tariff: dict[str, Any], zone: str, start: datetime, specs: list[Any]) -> None:
    result = price(tariff, zone, start, specs)
    for price_ in (result.total_cost, result.total_energy_cost, result.total_time_cost, result.total_fixed_cost):
        if price_ is not None and price_.incl_vat is not None:
            assert price_.incl_vat >= price_.excl_vat


@common
@given(tariffs(), st.sampled_from(ZONES), starts, sessions)
def test_breakdown_adds_up_to_the_dimension_totals(
    tariff: dict[str, Any], zone: str, start: datetime, specs: list[Any]
) -> None:
    result = price(tariff, zone, start, specs)
    for dimension, attr in (("ENERGY", "total_energy_cost"), ("TIME", "total_time_cost")):
        total = getattr(result, attr)
        lines = result.breakdown.get(dimension, [])
        assert (total is None) == (not lines)
        if total is not None:
            assert abs(sum(c.cost.excl_vat for c in lines) - total.excl_vat) < TINY
    per_period = sum(c.cost.excl_vat for p in result.periods for c in p.costs)
    raw = sum(c.cost.excl_vat for lines in result.breakdown.values() for c in lines)
    assert abs(per_period - raw) < TINY
