"""Restriction semantics beyond the spec examples: local time incl. DST, splits inside periods, VAT, min/max."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from billing.pricing import ChargingPeriod, PriceResult, parse_tariff, price_cdr, price_periods

AMS = ZoneInfo("Europe/Amsterdam")
H = timedelta(hours=1)


def tariff(*elements: dict[str, Any], **extra: Any) -> Any:
    return parse_tariff({"id": "T", "currency": "EUR", "elements": list(elements), **extra})


def el(kind: str, price: str, restrictions: dict[str, Any] | None = None, vat: float | None = 10.0, step: int = 1):
    component: dict[str, Any] = {"type": kind, "price": Decimal(price), "step_size": step}
    if vat is not None:
        component["vat"] = vat
    element: dict[str, Any] = {"price_components": [component]}
    if restrictions is not None:
        element["restrictions"] = restrictions
    return element


def one_period(
    t: Any, start: datetime, length: timedelta, *, energy: str = "0", charging: bool = True, **dims: Any
) -> PriceResult:
    # Arithmetic on datetimes of one zone is wall-clock arithmetic in Python; UTC keeps it real time.
    start = start.astimezone(UTC)
    period = ChargingPeriod(
        start,
        start + length,
        energy=Decimal(energy),
        time=length if charging else timedelta(0),
        parking_time=timedelta(0) if charging else length,
        **dims,
    )
    return price_periods(t, [period], time_zone="Europe/Amsterdam", session_start=start)


def excl(result: PriceResult) -> Decimal:
    return result.total_cost.excl_vat


def test_it_splits_a_period_at_a_window_past_midnight() -> None:
    night = tariff(el("ENERGY", "0.10", {"start_time": "22:00", "end_time": "06:00"}), el("ENERGY", "0.30"))
    evening = one_period(night, datetime(2024, 5, 6, 21, 0, tzinfo=AMS), 2 * H, energy="2")
    assert excl(evening) == Decimal("0.40")  # 1 kWh at 0.30 before 22:00, 1 kWh at 0.10 after
    morning = one_period(night, datetime(2024, 5, 7, 5, 0, tzinfo=AMS), 2 * H, energy="2")
    assert excl(morning) == Decimal("0.40")  # 1 kWh night rate until 06:00, then day rate
    assert [p.costs[0].element_index for p in morning.periods] == [0, 1]


def test_it_treats_end_time_midnight_as_end_of_day() -> None:
    late = tariff(el("TIME", "6", {"start_time": "20:00", "end_time": "00:00"}), el("TIME", "1"))
    result = one_period(late, datetime(2024, 5, 6, 23, 30, tzinfo=AMS), H)
    assert excl(result) == Decimal("3.5")  # 23:30-24:00 at 6.00/h, 00:00-00:30 at 1.00/h


def test_it_lets_a_lone_end_time_run_from_midnight() -> None:
    early = tariff(el("TIME", "4", {"end_time": "08:00"}), el("TIME", "1"))
    assert excl(one_period(early, datetime(2024, 5, 6, 7, 0, tzinfo=AMS), 2 * H)) == Decimal(5)


def test_a_lone_start_time_ends_at_local_midnight_inside_a_period() -> None:
    """A lone start_time holds until the end of its day: a period from 21:00 to 02:00 is cut at 22:00 and at
    midnight (it had been cut at 22:00 only, the hours after midnight priced at the evening rate: 0.70, not
    1.10, and the same charge split by its CPO at midnight priced otherwise)."""
    evening = tariff(el("ENERGY", "0.10", {"start_time": "22:00"}), el("ENERGY", "0.30"))
    result = one_period(evening, datetime(2024, 5, 6, 21, 0, tzinfo=AMS), 5 * H, energy="5")
    assert excl(result) == Decimal("1.10")  # 1 kWh at 0.30, 2 at 0.10 until midnight, 2 at 0.30
    assert [p.costs[0].element_index for p in result.periods] == [1, 0, 1]


def test_a_lone_end_time_begins_at_local_midnight_inside_a_period() -> None:
    early = tariff(el("ENERGY", "0.10", {"end_time": "06:00"}), el("ENERGY", "0.30"))
    result = one_period(early, datetime(2024, 5, 6, 23, 0, tzinfo=AMS), 4 * H, energy="4")
    assert excl(result) == Decimal("0.60")  # 1 kWh at 0.30 before midnight, 3 at 0.10 after it


def test_dst_spring_forward_window_counts_real_hours() -> None:
    # 2024-03-31 Amsterdam: 02:00 CET -> 03:00 CEST. 00:00-05:00 local is 4 real hours; the
    # 01:00-04:00 window covers 01:00-02:00 CET and 03:00-04:00 CEST = 2 real hours.
    t = tariff(el("TIME", "2", {"start_time": "01:00", "end_time": "04:00"}), el("TIME", "1"))
    start = datetime(2024, 3, 31, 0, 0, tzinfo=AMS)
    end = datetime(2024, 3, 31, 5, 0, tzinfo=AMS)
    assert end.astimezone(UTC) - start.astimezone(UTC) == 4 * H
    result = one_period(t, start, end.astimezone(UTC) - start.astimezone(UTC))
    assert excl(result) == Decimal(6)  # 2 h x 2.00 + 2 h x 1.00 (a fixed +01:00 would give 7.00)


def test_dst_fall_back_window_matches_twice() -> None:
    # 2024-10-27 Amsterdam: 03:00 CEST -> 02:00 CET, so local 02:00-03:00 happens twice.
    t = tariff(el("TIME", "3", {"start_time": "02:00", "end_time": "03:00"}), el("TIME", "1"))
    start = datetime(2024, 10, 27, 0, 0, tzinfo=AMS)
    result = one_period(t, start, 6 * H)  # 22:00 UTC -> 04:00 UTC
    assert excl(result) == Decimal(10)  # 2 real hours in the window at 3.00 + 4 h at 1.00
    assert [p.costs[0].element_index for p in result.periods] == [1, 0, 0, 1]


def test_day_of_week_switches_at_local_midnight() -> None:
    sunday = tariff(el("ENERGY", "0.50", {"day_of_week": ["SUNDAY"]}), el("ENERGY", "0.30"))
    result = one_period(sunday, datetime(2024, 5, 5, 23, 0, tzinfo=AMS), 2 * H, energy="2")
    assert excl(result) == Decimal("0.80")


def test_start_and_end_date_are_local_and_end_exclusive() -> None:
    promo = tariff(el("ENERGY", "0.10", {"start_date": "2024-05-06", "end_date": "2024-05-07"}), el("ENERGY", "1"))
    result = one_period(promo, datetime(2024, 5, 6, 23, 0, tzinfo=AMS), 2 * H, energy="2")
    assert excl(result) == Decimal("1.10")


def test_it_splits_a_period_where_max_kwh_is_reached() -> None:
    first_kwh_free = tariff(el("ENERGY", "0", {"max_kwh": 1}), el("ENERGY", "0.20", {"min_kwh": 1}))
    start = datetime(2024, 5, 6, 10, 0, tzinfo=AMS)
    result = one_period(first_kwh_free, start, 3 * H, energy="3")
    assert excl(result) == Decimal("0.40")
    first, second = result.periods
    assert first.end_date_time == start + H  # 1 of 3 kWh -> a third of the period
    assert (first.costs[0].volume, second.costs[0].volume) == (Decimal(1), Decimal(2))


def test_min_kwh_counts_energy_of_earlier_periods() -> None:
    t = tariff(el("ENERGY", "1", {"min_kwh": 5}), el("ENERGY", "0"))
    start = datetime(2024, 5, 6, 10, 0, tzinfo=AMS)
    periods = [
        ChargingPeriod(start, start + H, energy=Decimal(4), time=H),
        ChargingPeriod(start + H, start + 2 * H, energy=Decimal(4), time=H),
    ]
    result = price_periods(t, periods, time_zone="Europe/Amsterdam", session_start=start)
    assert excl(result) == Decimal(3)  # kWh 5..8 of the session


def test_max_power_uses_the_periods_reported_power() -> None:
    t = tariff(el("ENERGY", "0.20", {"max_power": 16}), el("ENERGY", "0.50"))
    start = datetime(2024, 5, 6, 10, 0, tzinfo=AMS)
    slow = one_period(t, start, H, energy="10", max_power=Decimal(11))
    fast = one_period(t, start, H, energy="10", max_power=Decimal(16))  # max_power is exclusive
    assert (excl(slow), excl(fast)) == (Decimal(2), Decimal(5))


def test_max_power_falls_back_to_average_power() -> None:
    t = tariff(el("ENERGY", "0.20", {"max_power": 16}), el("ENERGY", "0.50"))
    start = datetime(2024, 5, 6, 10, 0, tzinfo=AMS)
    assert excl(one_period(t, start, H, energy="10")) == Decimal(2)  # 10 kW average


def test_unknown_current_does_not_match_and_warns() -> None:
    t = tariff(el("TIME", "1", {"max_current": 32}), el("TIME", "5"))
    result = one_period(t, datetime(2024, 5, 6, 10, 0, tzinfo=AMS), H)
    assert excl(result) == Decimal(5)
    assert "unverifiable_restriction:elements[0].restrictions.max_current" in result.warnings


def test_max_duration_splits_the_period_at_the_session_duration() -> None:
    t = tariff(el("TIME", "0", {"max_duration": 1800}), el("TIME", "2"))
    result = one_period(t, datetime(2024, 5, 6, 10, 0, tzinfo=AMS), H)
    assert excl(result) == Decimal(1)
    assert len(result.periods) == 2


def test_min_duration_applies_to_parking_after_a_long_session() -> None:
    t = tariff(el("PARKING_TIME", "0", {"max_duration": 7200}), el("PARKING_TIME", "12"))
    start = datetime(2024, 5, 6, 10, 0, tzinfo=AMS)
    periods = [
        ChargingPeriod(start, start + 90 * timedelta(minutes=1), energy=Decimal(30), time=timedelta(minutes=90)),
        ChargingPeriod(start + timedelta(minutes=90), start + 3 * H, parking_time=timedelta(minutes=90)),
    ]
    result = price_periods(t, periods, time_zone="Europe/Amsterdam", session_start=start)
    assert excl(result) == Decimal(12)  # parking after the 2nd hour: 60 min x 12.00/h


def test_expired_reservation_cdr_uses_reservation_expires_elements() -> None:
    t = {
        "id": "R",
        "currency": "EUR",
        "elements": [
            {"price_components": [{"type": "TIME", "price": 3, "vat": 20, "step_size": 60}],
             "restrictions": {"reservation": "RESERVATION"}},
            {"price_components": [{"type": "TIME", "price": 6, "vat": 20, "step_size": 60}],
             "restrictions": {"reservation": "RESERVATION_EXPIRES"}},
            {"price_components": [{"type": "FLAT", "price": 0.5, "vat": 20, "step_size": 1}]},
        ],
    }  # fmt: skip
    cdr = {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T10:30:00Z",
        "charging_periods": [
            {"start_date_time": "2024-05-06T10:00:00Z", "dimensions": [{"type": "RESERVATION_TIME", "volume": 0.5}]}
        ],
        "tariffs": [t],
    }
    result = price_cdr(cdr, time_zone="Europe/Amsterdam")
    # NOTE in ReservationRestrictionType: RESERVATION_EXPIRES prices the time even when listed
    # after the RESERVATION element; no session, so no start fee.
    assert result.total_cost == result.total_reservation_cost
    assert excl(result) == Decimal(3)
    assert result.total_fixed_cost is None


def test_reservation_followed_by_charging_uses_reservation_elements() -> None:
    t = tariff(
        el("TIME", "3", {"reservation": "RESERVATION"}, vat=20),
        el("TIME", "6", {"reservation": "RESERVATION_EXPIRES"}, vat=20),
        el("ENERGY", "0.25"),
    )
    start = datetime(2024, 5, 6, 10, 0, tzinfo=AMS)
    periods = [ChargingPeriod(start, start + H, energy=Decimal(10), time=H)]
    result = price_periods(
        t, periods, time_zone="Europe/Amsterdam", session_start=start, reservation_start=start - H / 2
    )
    assert result.total_reservation_cost is not None
    assert result.total_reservation_cost.excl_vat == Decimal("1.5")
    assert excl(result) == Decimal(4)


def test_vat_less_component_makes_incl_vat_unknown() -> None:
    t = tariff(
        {
            "price_components": [
                {"type": "FLAT", "price": 1, "step_size": 1},
                {"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1},
            ]
        }
    )
    start = datetime(2024, 5, 6, 10, 0, tzinfo=AMS)
    result = one_period(t, start, H, energy="10")
    assert result.total_energy_cost.incl_vat == Decimal("2.75")
    assert result.total_fixed_cost.incl_vat is None
    assert result.total_cost.incl_vat is None
    assert result.total_cost.excl_vat == Decimal("3.5")
    exempt = price_periods(
        t,
        [ChargingPeriod(start, start + H, energy=Decimal(10), time=H)],
        time_zone="Europe/Amsterdam",
        session_start=start,
        missing_vat="exempt",
    )
    assert exempt.total_cost.incl_vat == Decimal("3.75")


def test_zero_vat_is_not_missing_vat() -> None:
    t = tariff(el("ENERGY", "0.25", vat=0.0))
    result = one_period(t, datetime(2024, 5, 6, 10, 0, tzinfo=AMS), H, energy="4")
    assert result.total_cost.incl_vat == Decimal(1)


@pytest.mark.parametrize(
    ("energy", "expected"),
    [
        ("5", (Decimal("1.25"), Decimal("1.50"))),  # incl raised to min, excl already above its min
        ("3", (Decimal("1.00"), Decimal("1.50"))),  # both raised
        ("41", (Decimal("10"), Decimal("10.50"))),  # both capped (10.25 / 11.275)
        ("39", (Decimal("9.75"), Decimal("10.50"))),  # only incl capped (10.725)
    ],
)
def test_min_and_max_price_apply_to_excl_and_incl_independently(energy: str, expected: tuple[Decimal, Decimal]) -> None:
    t = tariff(
        el("ENERGY", "0.25", vat=10.0),
        min_price={"excl_vat": 1.00, "incl_vat": 1.50},
        max_price={"excl_vat": 10, "incl_vat": 10.50},
    )
    result = one_period(t, datetime(2024, 5, 6, 10, 0, tzinfo=AMS), H, energy=energy)
    assert (result.total_cost.excl_vat, result.total_cost.incl_vat) == expected


def test_step_size_zero_is_treated_as_one() -> None:
    t = tariff(el("ENERGY", "1", step=0))
    result = one_period(t, datetime(2024, 5, 6, 10, 0, tzinfo=AMS), H, energy="0.0005")
    assert excl(result) == Decimal("0.001")  # 0.5 Wh billed as 1 Wh


def test_no_matching_element_means_free_dimension() -> None:
    t = tariff(el("ENERGY", "1", {"day_of_week": ["SUNDAY"]}))
    result = one_period(t, datetime(2024, 5, 6, 10, 0, tzinfo=AMS), H, energy="5")
    assert result.total_energy_cost is None
    assert result.total_cost.excl_vat == 0
