"""Public API behaviour: quote(), estimate_session(), price_cdr() options and the result's to_dict()."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from billing.pricing import (
    ChargingPeriod,
    estimate_session,
    parse_tariff,
    periods_from_ocpi,
    price_cdr,
    price_periods,
    quote,
)
from tests.billing.conftest import SPEC_DIR, load_json

AMS = ZoneInfo("Europe/Amsterdam")
H = timedelta(hours=1)
SIMPLE = {
    "id": "S",
    "currency": "EUR",
    "elements": [
        {
            "price_components": [
                {"type": "FLAT", "price": 0.5, "vat": 20, "step_size": 1},
                {"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1},
                {"type": "PARKING_TIME", "price": 2, "vat": 20, "step_size": 900},
            ]
        }
    ],
}
DAY_NIGHT = {
    "id": "DN",
    "currency": "EUR",
    "elements": [
        {
            "price_components": [{"type": "ENERGY", "price": 0.40, "vat": 21, "step_size": 1}],
            "restrictions": {"start_time": "07:00", "end_time": "22:00"},
        },
        {"price_components": [{"type": "ENERGY", "price": 0.20, "vat": 21, "step_size": 1}]},
    ],
}


def utc(local: datetime) -> datetime:
    return local.astimezone(UTC)


def test_quote_stops_at_the_requested_energy() -> None:
    start = utc(datetime(2024, 5, 6, 10, 0, tzinfo=AMS))
    result = quote(SIMPLE, start=start, time_zone="Europe/Amsterdam", power_kw=Decimal(11), energy_kwh=Decimal(22))
    assert result.total_cost.excl_vat == Decimal("6.00")  # 0.50 + 22 x 0.25
    assert result.total_time == 2


def test_quote_stops_at_the_duration_when_that_comes_first() -> None:
    start = utc(datetime(2024, 5, 6, 10, 0, tzinfo=AMS))
    result = quote(
        SIMPLE, start=start, time_zone="Europe/Amsterdam", power_kw=Decimal(11), energy_kwh=Decimal(50), duration=H
    )
    assert result.total_energy == 11


def test_quote_splits_at_a_time_of_day_boundary() -> None:
    start = utc(datetime(2024, 5, 6, 21, 0, tzinfo=AMS))
    result = quote(DAY_NIGHT, start=start, time_zone="Europe/Amsterdam", power_kw=Decimal(10), duration=2 * H)
    assert result.total_cost.excl_vat == Decimal("6.00")  # 10 kWh at 0.40 until 22:00, 10 kWh at 0.20
    assert [c.element_index for c in result.breakdown["ENERGY"]] == [0, 1]


def test_quote_adds_parking_with_its_step() -> None:
    start = utc(datetime(2024, 5, 6, 10, 0, tzinfo=AMS))
    result = quote(
        SIMPLE,
        start=start,
        time_zone="Europe/Amsterdam",
        power_kw=Decimal(20),
        energy_kwh=Decimal(20),
        parking=timedelta(minutes=40),
    )
    assert result.total_cost.excl_vat == Decimal("7.00")  # the spec's tariff_10 example
    assert result.total_cost.incl_vat == Decimal("7.90")


def test_quote_prices_a_reservation_before_the_charge(spec_tariff: Any) -> None:
    start = utc(datetime(2024, 5, 6, 10, 0, tzinfo=AMS))
    result = quote(
        spec_tariff("tariff_16_reservation_2_euro_fee_5_euro_per_hour.json"),
        start=start,
        time_zone="Europe/Amsterdam",
        power_kw=Decimal(20),
        energy_kwh=Decimal(20),
        reservation=timedelta(minutes=13),
    )
    assert result.total_cost.excl_vat == Decimal("8.75")


def test_quote_of_an_unused_reservation_is_an_expired_reservation(spec_tariff: Any) -> None:
    start = utc(datetime(2024, 5, 6, 10, 0, tzinfo=AMS))
    result = quote(
        spec_tariff("tariff_17_reservation_with_expire_fee.json"),
        start=start,
        time_zone="Europe/Amsterdam",
        power_kw=Decimal(11),
        energy_kwh=Decimal(0),
        reservation=H,
    )
    assert result.total_cost.excl_vat == Decimal("6.00")
    assert result.total_fixed_cost is None


def test_estimate_extrapolates_an_active_session_until_now() -> None:
    session = {
        "id": "S1",
        "start_date_time": "2024-05-06T08:00:00Z",
        "kwh": 5,
        "status": "ACTIVE",
        "charging_periods": [
            {
                "start_date_time": "2024-05-06T08:00:00Z",
                "dimensions": [{"type": "ENERGY", "volume": 5}, {"type": "TIME", "volume": 0.25}],
            }
        ],
    }
    tariff = {
        "id": "T",
        "currency": "EUR",
        "elements": [{"price_components": [{"type": "TIME", "price": 4, "vat": 21, "step_size": 60}]}],
    }
    now = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    result = estimate_session(session, tariff, time_zone="Europe/Amsterdam", now=now)
    assert result.total_time_cost.excl_vat == Decimal(4)  # the whole hour so far
    assert "estimate_extrapolated_time" in result.warnings


def test_estimate_of_a_session_without_periods_uses_kwh_and_elapsed_time() -> None:
    session = {"start_date_time": "2024-05-06T08:00:00Z", "kwh": 8, "status": "ACTIVE"}
    now = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
    result = estimate_session(session, parse_tariff(SIMPLE), time_zone="UTC", now=now)
    assert result.total_cost.excl_vat == Decimal("2.50")
    assert "estimate_without_charging_periods" in result.warnings


def test_estimate_of_a_completed_session_ends_at_its_end() -> None:
    session = {
        "start_date_time": "2024-05-06T08:00:00Z",
        "end_date_time": "2024-05-06T08:30:00Z",
        "status": "COMPLETED",
        "charging_periods": [
            {"start_date_time": "2024-05-06T08:00:00Z", "dimensions": [{"type": "PARKING_TIME", "volume": 0.5}]}
        ],
    }
    now = datetime(2024, 5, 7, 9, 0, tzinfo=UTC)
    result = estimate_session(session, SIMPLE, time_zone="UTC", now=now)
    assert result.total_parking_cost.excl_vat == Decimal(1)
    assert result.total_time == Decimal("0.5")


def test_cdr_time_zone_comes_from_cdr_location_when_not_given() -> None:
    cdr = {
        "start_date_time": "2024-05-06T19:30:00Z",  # 21:30 CEST
        "end_date_time": "2024-05-06T20:30:00Z",
        "cdr_location": {"time_zone": "Europe/Amsterdam"},
        "charging_periods": [
            {"start_date_time": "2024-05-06T19:30:00Z", "dimensions": [{"type": "ENERGY", "volume": 2}]}
        ],
        "tariffs": [DAY_NIGHT],
    }
    result = price_cdr(cdr)
    assert result.time_zone == "Europe/Amsterdam"
    assert result.total_cost.excl_vat == Decimal("0.60")
    assert price_cdr(cdr, time_zone="UTC").total_cost.excl_vat == Decimal("0.80")


def test_cdr_tariff_is_picked_by_the_periods_tariff_id() -> None:
    other = {**SIMPLE, "id": "OTHER"}
    cdr = {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T11:00:00Z",
        "charging_periods": [
            {
                "start_date_time": "2024-05-06T10:00:00Z",
                "dimensions": [{"type": "ENERGY", "volume": 10}],
                "tariff_id": "dn",  # Tariff.id is a CiString
            }
        ],
        "tariffs": [other, DAY_NIGHT],
    }
    assert price_cdr(cdr, time_zone="UTC").tariff_id == "DN"


def test_cdr_tariff_defaults_to_the_first_valid_at_session_start() -> None:
    expired = {**SIMPLE, "id": "OLD", "end_date_time": "2024-01-01T00:00:00Z"}
    cdr = {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T11:00:00Z",
        "charging_periods": [
            {"start_date_time": "2024-05-06T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 10}]}
        ],
    }
    result = price_cdr(cdr, tariffs=[expired, DAY_NIGHT], time_zone="UTC")
    assert result.tariff_id == "DN"
    only_expired = price_cdr(cdr, tariffs=[expired], time_zone="UTC")
    assert "tariff_not_valid_at_session_start" in only_expired.warnings


def test_to_dict_is_json_ready_and_exact() -> None:
    start = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)
    periods = [ChargingPeriod(start, start + H, energy=Decimal("20.45"), time=H)]
    t3 = {
        "id": "13",
        "currency": "EUR",
        "elements": [
            {
                "price_components": [
                    {"type": "FLAT", "price": 0.50, "vat": 20.0, "step_size": 1},
                    {"type": "ENERGY", "price": 0.25, "vat": 10.0, "step_size": 100},
                ]
            }
        ],
    }
    result = price_periods(parse_tariff(t3), periods, time_zone="UTC", session_start=start)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["total_cost"] == {"excl_vat": "5.625", "incl_vat": "6.2375"}
    assert data["total_energy_cost"] == {"excl_vat": "5.125", "incl_vat": "5.6375"}
    assert data["total_time_cost"] is None
    energy = data["breakdown"]["ENERGY"][0]
    assert (energy["volume"], energy["step_added"], energy["element_index"]) == ("20.5", "0.05", 0)
    assert data["periods"][0]["start_date_time"] == "2024-05-06T10:00:00Z"
    rounded = result.to_dict(rounding="HALF_UP")
    assert rounded["total_cost"] == {"excl_vat": "5.63", "incl_vat": "6.24"}  # the spec's figures
    assert result.to_dict(rounding="HALF_EVEN")["total_cost"]["excl_vat"] == "5.62"


def test_rounding_chosen_at_pricing_time_shows_in_to_dict() -> None:
    cdr = load_json(SPEC_DIR / "release-2.2.1-bugfixes" / "cdr_example.json")
    result = price_cdr(cdr, time_zone="Europe/Brussels", rounding="DOWN")
    assert result.to_dict()["total_cost"] == {"excl_vat": "4.00", "incl_vat": "4.40"}
    assert result.total_cost.excl_vat == 4  # the attributes stay exact


def test_periods_from_ocpi_chains_ends_and_converts_hours_exactly() -> None:
    end = datetime(2024, 5, 6, 11, 0, tzinfo=UTC)
    periods = periods_from_ocpi(
        [
            {"start_date_time": "2024-05-06T10:00:00Z", "dimensions": [{"type": "TIME", "volume": 0.0834}]},
            {"start_date_time": "2024-05-06T10:05:00Z", "dimensions": [{"type": "PARKING_TIME", "volume": 0.9}]},
        ],
        end,
    )
    assert periods[0].end_date_time == periods[1].start_date_time
    assert periods[1].end_date_time == end
    assert periods[0].time == timedelta(seconds=300, microseconds=240000)


def test_unsorted_periods_are_sorted_and_flagged() -> None:
    warnings: list[str] = []
    periods = periods_from_ocpi(
        [
            {"start_date_time": "2024-05-06T10:30:00Z", "dimensions": [{"type": "ENERGY", "volume": 1}]},
            {"start_date_time": "2024-05-06T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 2}]},
        ],
        datetime(2024, 5, 6, 11, 0, tzinfo=UTC),
        warnings=warnings,
    )
    assert [p.energy for p in periods] == [2, 1]
    assert warnings == ["charging_periods_not_chronological"]
