"""Charging periods: the engine's input, built from OCPI CDR/Session `charging_periods`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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


# CdrDimensionType -> (ChargingPeriod field, volume is hours). Other valid types are accepted and unused.
_FIELDS: dict[str, tuple[str, bool] | None] = dict.fromkeys(_DIMENSION_TYPES)
_FIELDS.update(
    {
        "ENERGY": ("energy", False),
        "MAX_POWER": ("max_power", False),
        "MIN_POWER": ("min_power", False),
        "POWER": ("power", False),
        "MAX_CURRENT": ("max_current", False),
        "MIN_CURRENT": ("min_current", False),
        "CURRENT": ("current", False),
        "TIME": ("time", True),
        "PARKING_TIME": ("parking_time", True),
        "RESERVATION_TIME": ("reservation_time", True),
    }
)


def _volume(value: Any) -> Decimal:
    kind = type(value)
    if kind is float and value == value and value not in (_INF, -_INF):
        number = Decimal(repr(value))
    elif kind is int:
        number = Decimal(value)
    else:
        number = parse_number(value, "", CdrError)
    if number < 0:
        raise CdrError("", "must not be negative")
    return number


_INF = float("inf")


def _start(raw: Any, path: str, sink: list[str]) -> datetime:
    value = raw.get("start_date_time")
    if type(value) is str:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is UTC:  # the common "...Z" form
            return parsed
    if value is None:
        raise CdrError(f"{path}.start_date_time", "is required")
    return parse_datetime(value, f"{path}.start_date_time", CdrError, sink)


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
    fields = _FIELDS
    for index, raw in enumerate(data):
        if type(raw) is not dict:
            raise CdrError(f"{path}[{index}]", "must be a ChargingPeriod object")
        period = ChargingPeriod(_start(raw, f"{path}[{index}]", sink))
        tariff_id = raw.get("tariff_id")
        if tariff_id is not None:
            if type(tariff_id) is not str:
                raise CdrError(f"{path}[{index}].tariff_id", "must be a string")
            period.tariff_id = tariff_id
        dimensions = raw.get("dimensions")
        if type(dimensions) is not list or not dimensions:
            raise CdrError(f"{path}[{index}].dimensions", "must be a non-empty list of CdrDimension")
        seen: set[str] = set()
        for d_index, dimension in enumerate(dimensions):
            if type(dimension) is not dict:
                raise CdrError(f"{path}[{index}].dimensions[{d_index}]", "must be a CdrDimension object")
            kind = dimension.get("type")
            if kind not in fields:
                normalised = kind.strip().upper() if isinstance(kind, str) else None
                if normalised not in fields:
                    raise CdrError(f"{path}[{index}].dimensions[{d_index}].type", f"unknown CdrDimensionType {kind!r}")
                kind = normalised
            if kind in seen:
                # Two volumes of one kind in a period leave it open which one was metered.
                raise CdrError(
                    f"{path}[{index}].dimensions[{d_index}].type", f"duplicate dimension {kind} in one period"
                )
            seen.add(kind)
            raw_volume = dimension.get("volume")
            if raw_volume is None:
                raise CdrError(f"{path}[{index}].dimensions[{d_index}].volume", "is required")
            target = fields[kind]
            try:
                volume = _volume(raw_volume)
            except CdrError as error:
                raise CdrError(f"{path}[{index}].dimensions[{d_index}].volume", error.message) from None
            if target is None:
                continue
            if target[1]:
                setattr(period, target[0], hours_to_timedelta(volume))
            else:
                setattr(period, target[0], volume)
        periods.append(period)
    if any(periods[i].start_date_time > periods[i + 1].start_date_time for i in range(len(periods) - 1)):
        sink.append("charging_periods_not_chronological")
        periods.sort(key=lambda p: p.start_date_time)
    for current, following in itertools.pairwise(periods):
        current.end_date_time = following.start_date_time
    if periods:
        last = periods[-1]
        if end < last.start_date_time:
            sink.append("periods_outside_start_end_date_time")
            last.end_date_time = last.start_date_time
        else:
            last.end_date_time = end
    return periods
