"""Charging periods: the engine's input, built from OCPI CDR/Session `charging_periods`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from .errors import CdrError
from .tariff import ZERO, parse_datetime, parse_number

__all__ = ["ChargingPeriod", "hours_to_timedelta", "periods_from_ocpi"]

_TD0 = timedelta(0)
_US_PER_HOUR = Decimal(3_600_000_000)

# mod_cdrs CdrDimensionType (2.2.1). Volumes in kWh, hours, A, kW or percent.
_DIMENSION_TYPES = (
    "CURRENT", "ENERGY", "ENERGY_EXPORT", "ENERGY_IMPORT", "MAX_CURRENT", "MIN_CURRENT", "MAX_POWER",
    "MIN_POWER", "PARKING_TIME", "POWER", "RESERVATION_TIME", "STATE_OF_CHARGE", "TIME",
)  # fmt: skip
_KNOWN = frozenset(_DIMENSION_TYPES)


@dataclass(slots=True)
class ChargingPeriod:
    """One OCPI ChargingPeriod: a start, an optional end, and its dimension volumes.

    Times are timedeltas so that 5 minutes is exactly 5 minutes (OCPI's hours with 4 decimals
    cannot say 1/12 h); energy is in kWh, power in kW, current in A.
    """

    start_date_time: datetime
    end_date_time: datetime | None = None
    energy: Decimal = ZERO
    time: timedelta = _TD0
    parking_time: timedelta = _TD0
    reservation_time: timedelta = _TD0
    max_power: Decimal | None = None
    min_power: Decimal | None = None
    power: Decimal | None = None
    max_current: Decimal | None = None
    min_current: Decimal | None = None
    current: Decimal | None = None
    tariff_id: str | None = None


def hours_to_timedelta(hours: Decimal) -> timedelta:
    """Exact for up to 9 decimals of hours (OCPI sends 4); finer digits round to the microsecond."""
    return timedelta(microseconds=int((hours * _US_PER_HOUR).to_integral_value(ROUND_HALF_EVEN)))


_SETTERS: dict[str, str] = {
    "ENERGY": "energy",
    "MAX_POWER": "max_power",
    "MIN_POWER": "min_power",
    "POWER": "power",
    "MAX_CURRENT": "max_current",
    "MIN_CURRENT": "min_current",
    "CURRENT": "current",
}
_TIMES: dict[str, str] = {"TIME": "time", "PARKING_TIME": "parking_time", "RESERVATION_TIME": "reservation_time"}


def periods_from_ocpi(
    data: list[dict[str, Any]],
    end: datetime,
    *,
    path: str = "charging_periods",
    warnings: list[str] | None = None,
) -> list[ChargingPeriod]:
    """Build ChargingPeriods; each ends where the next starts and the last ends at `end`."""
    if not isinstance(data, list):
        raise CdrError(path, "must be a list of ChargingPeriod")
    if end.tzinfo is None:
        raise CdrError("end", "must be timezone-aware")
    sink: list[str] = warnings if warnings is not None else []
    periods: list[ChargingPeriod] = []
    for index, raw in enumerate(data):
        item_path = f"{path}[{index}]"
        if not isinstance(raw, dict):
            raise CdrError(item_path, "must be a ChargingPeriod object")
        if raw.get("start_date_time") is None:
            raise CdrError(f"{item_path}.start_date_time", "is required")
        start = parse_datetime(raw["start_date_time"], f"{item_path}.start_date_time", CdrError, sink)
        period = ChargingPeriod(start)
        tariff_id = raw.get("tariff_id")
        if tariff_id is not None:
            if not isinstance(tariff_id, str):
                raise CdrError(f"{item_path}.tariff_id", "must be a string")
            period.tariff_id = tariff_id
        dimensions = raw.get("dimensions")
        if not isinstance(dimensions, list) or not dimensions:
            raise CdrError(f"{item_path}.dimensions", "must be a non-empty list of CdrDimension")
        seen: set[str] = set()
        for d_index, dimension in enumerate(dimensions):
            d_path = f"{item_path}.dimensions[{d_index}]"
            if not isinstance(dimension, dict):
                raise CdrError(d_path, "must be a CdrDimension object")
            kind = dimension.get("type")
            if not isinstance(kind, str) or kind.strip().upper() not in _KNOWN:
                raise CdrError(f"{d_path}.type", f"unknown CdrDimensionType {kind!r}")
            kind = kind.strip().upper()
            if kind in seen:
                # Two volumes of one kind in a period leave it open which one was metered.
                raise CdrError(f"{d_path}.type", f"duplicate dimension {kind} in one period")
            seen.add(kind)
            if dimension.get("volume") is None:
                raise CdrError(f"{d_path}.volume", "is required")
            volume = parse_number(dimension["volume"], f"{d_path}.volume", CdrError)
            if volume < 0:
                raise CdrError(f"{d_path}.volume", "must not be negative")
            if kind in _TIMES:
                setattr(period, _TIMES[kind], hours_to_timedelta(volume))
            elif kind in _SETTERS:
                setattr(period, _SETTERS[kind], volume)
        periods.append(period)
    if any(periods[i].start_date_time > periods[i + 1].start_date_time for i in range(len(periods) - 1)):
        sink.append("charging_periods_not_chronological")
        periods.sort(key=lambda p: p.start_date_time)
    for current, following in zip(periods, periods[1:], strict=False):
        current.end_date_time = following.start_date_time
    if periods:
        last = periods[-1]
        if end < last.start_date_time:
            sink.append("periods_outside_start_end_date_time")
            last.end_date_time = last.start_date_time
        else:
            last.end_date_time = end
    return periods
