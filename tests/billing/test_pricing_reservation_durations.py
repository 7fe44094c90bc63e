"""A CDR that opens with a reservation: two origins for min/max_duration.

mod_cdrs: a CDR's start_date_time is "the start of the reservation" when there was one; mod_tariffs: a reservation
"ends when the driver starts charging", and min/max_duration restrict "the duration ... the Charging Session MUST
last". So reservation-only periods measure their durations from the CDR's start (the reservation's own start) and
charging periods from the first period that is not reservation-only. The tariff is still chosen, and its validity
checked, at the CDR's start.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.pricing import estimate_session, price_cdr, quote

H = timedelta(hours=1)


def _tariff(elements: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"country_code": "BE", "party_id": "BEC", "id": "T", "currency": "EUR", "elements": elements} | extra


def _element(kind: str, price: float, **restrictions: Any) -> dict[str, Any]:
    element: dict[str, Any] = {"price_components": [{"type": kind, "price": price, "vat": 10, "step_size": 1}]}
    if restrictions:
        element["restrictions"] = restrictions
    return element


# Reservation free; the first half hour of charging free, energy at 0.25 after it.
FREE_FIRST_HALF_HOUR = _tariff(
    [
        _element("TIME", 0, reservation="RESERVATION"),
        _element("ENERGY", 0, max_duration=1800),
        _element("ENERGY", 0.25),
    ]
)
# The first 15 minutes of a reservation free, then 6.00/h; energy at 0.25.
RES_FIRST_15_FREE = _tariff(
    [
        _element("TIME", 0, reservation="RESERVATION", max_duration=900),
        _element("TIME", 6, reservation="RESERVATION"),
        _element("ENERGY", 0.25),
    ]
)
# Energy at 0.40 once the charging session has lasted half an hour, 0.20 before it.
DEARER_AFTER_HALF_HOUR = _tariff(
    [
        _element("TIME", 0, reservation="RESERVATION"),
        _element("ENERGY", 0.40, min_duration=1800),
        _element("ENERGY", 0.20),
    ]
)
# Both clocks at once: the reservation's first 15 minutes free, and energy dearer after half an hour of charging.
RESERVATION_AND_DURATIONS = _tariff([*RES_FIRST_15_FREE["elements"][:2], *DEARER_AFTER_HALF_HOUR["elements"][1:]])
# A tariff change at 10:15: the CDR starts (its reservation starts) under OLD, charging starts under NEW.
OLD = _tariff([_element("ENERGY", 0.25)], id="OLD", end_date_time="2024-05-06T10:15:00Z")
NEW = _tariff([_element("ENERGY", 0.30)], id="NEW", start_date_time="2024-05-06T10:15:00Z")


def period(start: str, **dims: float) -> dict[str, Any]:
    return {"start_date_time": start, "dimensions": [{"type": k, "volume": v} for k, v in dims.items()]}


def reserved_30_then_charged(tariff: dict[str, Any]) -> dict[str, Any]:
    """Reserved 10:00-10:30 (the CDR's start is the reservation's, mod_cdrs), then 10 kWh over an hour."""
    return {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T11:30:00Z",
        "currency": "EUR",
        "charging_periods": [
            period("2024-05-06T10:00:00Z", RESERVATION_TIME=0.5),
            period("2024-05-06T10:30:00Z", ENERGY=10, TIME=1),
        ],
        "tariffs": [tariff],
    }


def reserved_30_expired(tariff: dict[str, Any]) -> dict[str, Any]:
    return {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T10:30:00Z",
        "currency": "EUR",
        "charging_periods": [period("2024-05-06T10:00:00Z", RESERVATION_TIME=0.5)],
        "tariffs": [tariff],
    }


def test_a_cdrs_reservation_does_not_use_up_a_free_first_half_hour_of_charging() -> None:
    result = price_cdr(reserved_30_then_charged(FREE_FIRST_HALF_HOUR), time_zone="UTC")
    assert result.total_cost.excl_vat == Decimal("1.25")  # 5 kWh free, 5 kWh at 0.25 (was 2.50)
    planned = quote(
        FREE_FIRST_HALF_HOUR,
        start=datetime(2024, 5, 6, 10, 30, tzinfo=UTC),
        time_zone="UTC",
        power_kw=Decimal(10),
        duration=H,
        reservation=H / 2,
    )
    assert result.total_cost == planned.total_cost
    assert result.total_time == Decimal("1.5")  # total_time still covers the reservation
    assert "tariff_not_valid_at_session_start" not in result.warnings


def test_a_cdrs_reservation_does_not_count_toward_min_duration() -> None:
    result = price_cdr(reserved_30_then_charged(DEARER_AFTER_HALF_HOUR), time_zone="UTC")
    assert result.total_cost.excl_vat == Decimal("3.00")  # 5 kWh at 0.20, 5 kWh at 0.40 (was 10 x 0.40)


def test_a_reservation_elements_durations_count_from_the_reservations_start_when_used() -> None:
    # 15 minutes free, 15 minutes at 6.00/h: the reservation's own clock starts at the CDR's start.
    result = price_cdr(reserved_30_then_charged(RES_FIRST_15_FREE), time_zone="UTC")
    assert result.total_reservation_cost is not None
    assert result.total_reservation_cost.excl_vat == Decimal("1.50")
    assert result.total_energy_cost is not None
    assert result.total_energy_cost.excl_vat == Decimal("2.50")


def test_a_reservation_elements_durations_count_from_the_reservations_start_when_expired() -> None:
    result = price_cdr(reserved_30_expired(RES_FIRST_15_FREE), time_zone="UTC")
    assert result.total_reservation_cost is not None
    assert result.total_reservation_cost.excl_vat == Decimal("1.50")


def test_the_tariff_is_chosen_and_checked_at_the_same_instant() -> None:
    cdr = reserved_30_then_charged(OLD) | {"tariffs": [OLD, NEW]}
    result = price_cdr(cdr, time_zone="UTC")
    assert result.tariff_id == "OLD"  # valid when the CDR (its reservation) started
    assert "tariff_not_valid_at_session_start" not in result.warnings
    assert result.total_cost.excl_vat == Decimal("2.50")


def test_a_cdr_without_a_reservation_is_priced_from_its_start() -> None:
    cdr = reserved_30_then_charged(FREE_FIRST_HALF_HOUR)
    cdr["start_date_time"] = "2024-05-06T10:30:00Z"
    cdr["charging_periods"] = cdr["charging_periods"][1:]
    assert price_cdr(cdr, time_zone="UTC").total_cost.excl_vat == Decimal("1.25")


def test_a_reservation_only_period_in_the_middle_prices_as_before() -> None:
    # Only a CDR that OPENS with the reservation moves the charging origin; a reservation-only period between
    # charging periods (an odd CDR) keeps every duration counted from the CDR's start. Pinned from the engine
    # before the change.
    cdr = {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T11:30:00Z",
        "currency": "EUR",
        "charging_periods": [
            period("2024-05-06T10:00:00Z", ENERGY=5, TIME=0.25),
            period("2024-05-06T10:15:00Z", RESERVATION_TIME=0.5),
            period("2024-05-06T10:45:00Z", ENERGY=10, TIME=0.75),
        ],
        "tariffs": [RESERVATION_AND_DURATIONS],
    }
    result = price_cdr(cdr, time_zone="UTC")
    assert result.total_cost.excl_vat == Decimal("8.00")
    assert result.total_reservation_cost is not None
    assert result.total_reservation_cost.excl_vat == Decimal("3.00")  # 10:15-10:45, all past the first 15 minutes


def test_an_estimate_of_a_session_that_opens_with_a_reservation_agrees_with_price_cdr() -> None:
    cdr = reserved_30_then_charged(FREE_FIRST_HALF_HOUR)
    session = {
        "start_date_time": cdr["start_date_time"],
        "end_date_time": cdr["end_date_time"],
        "status": "COMPLETED",
        "charging_periods": cdr["charging_periods"],
    }
    now = datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
    result = estimate_session(session, FREE_FIRST_HALF_HOUR, time_zone="UTC", now=now)
    assert result.total_cost.excl_vat == Decimal("1.25")


def test_an_estimate_extends_a_running_reservation_as_reservation_time() -> None:
    # A session still in its reservation: the time since the last reported volume is reservation time, billed
    # by the (free) reservation element, not charging TIME at 6.00/h.
    tariff = _tariff([_element("TIME", 0, reservation="RESERVATION"), _element("TIME", 6)])
    session = {
        "start_date_time": "2024-05-06T10:00:00Z",
        "status": "RESERVATION",
        "charging_periods": [period("2024-05-06T10:00:00Z", RESERVATION_TIME=0.25)],
    }
    now = datetime(2024, 5, 6, 10, 30, tzinfo=UTC)
    result = estimate_session(session, tariff, time_zone="UTC", now=now)
    assert result.total_cost.excl_vat == Decimal(0)
    assert result.total_time_cost is None or result.total_time_cost.excl_vat == Decimal(0)
    assert "estimate_extrapolated_time" in result.warnings
