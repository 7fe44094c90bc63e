"""Charging periods: the engine's input, built from OCPI CDR/Session `charging_periods`."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from emsp.datetimes import DateTimeError, parse_text

from .errors import CdrError
from .tariff import EPOCH, US_PER_HOUR, ZERO, parse_datetime, parse_number, td_us, to_us

__all__ = ["ChargingPeriod", "hours_to_timedelta", "periods_from_ocpi"]

_TD0 = timedelta(0)

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


# Internal period record (a list, for speed): the engine reads these, never ChargingPeriod.
START, A_US, B_US, ENERGY_KWH, TIME_US, PARKING_US, RESERVATION_US = 0, 1, 2, 3, 4, 5, 6
MAX_POWER, MIN_POWER, POWER, MAX_CURRENT, MIN_CURRENT, CURRENT, TARIFF_ID = 7, 8, 9, 10, 11, 12, 13
Record = list[Any]

# CdrDimensionType -> (record slot, volume is hours). Other valid types are accepted and unused.
_FIELDS: dict[str, tuple[int, bool] | None] = dict.fromkeys(_DIMENSION_TYPES)
_FIELDS.update(
    {
        "ENERGY": (ENERGY_KWH, False),
        "MAX_POWER": (MAX_POWER, False),
        "MIN_POWER": (MIN_POWER, False),
        "POWER": (POWER, False),
        "MAX_CURRENT": (MAX_CURRENT, False),
        "MIN_CURRENT": (MIN_CURRENT, False),
        "CURRENT": (CURRENT, False),
        "TIME": (TIME_US, True),
        "PARKING_TIME": (PARKING_US, True),
        "RESERVATION_TIME": (RESERVATION_US, True),
    }
)
_INF = float("inf")
# OCPI numbers are bounded in practice; this keeps absurd input out of timedelta/Decimal overflow.
_MAX_VOLUME = Decimal("1e9")


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
    if number > _MAX_VOLUME:
        raise CdrError("", "is out of range")
    return number


def _start(raw: Any, path: str, sink: list[str]) -> datetime:
    value = raw.get("start_date_time")
    if type(value) is str:
        # The common canonical form, straight from the shared (cached) reader; anything else, or an error,
        # goes through parse_datetime for its checks, warnings and message.
        try:
            moment, deviation = parse_text(value)
        except DateTimeError:
            pass
        else:
            if deviation is None and 1900 <= moment.year <= 9000:
                return moment
    if value is None:
        raise CdrError(f"{path}.start_date_time", "is required")
    return parse_datetime(value, f"{path}.start_date_time", CdrError, sink)


def parse_period_records(
    data: list[dict[str, Any]], end: datetime, *, path: str = "charging_periods", warnings: list[str]
) -> list[Record]:
    """OCPI charging_periods -> engine records, chained (each ends where the next starts)."""
    if not isinstance(data, list):
        raise CdrError(path, "must be a list of ChargingPeriod")
    if end.tzinfo is None:
        raise CdrError("end", "must be timezone-aware")
    records: list[Record] = []
    fields = _FIELDS
    for index, raw in enumerate(data):
        if type(raw) is not dict:
            raise CdrError(f"{path}[{index}]", "must be a ChargingPeriod object")
        start = _start(raw, f"{path}[{index}]", warnings)
        record: Record = [start, to_us(start), None, ZERO, 0, 0, 0, None, None, None, None, None, None, None]
        tariff_id = raw.get("tariff_id")
        if tariff_id is not None:
            if type(tariff_id) is not str:
                raise CdrError(f"{path}[{index}].tariff_id", "must be a string")
            record[TARIFF_ID] = tariff_id
        dimensions = raw.get("dimensions")
        if type(dimensions) is not list or not dimensions:
            raise CdrError(f"{path}[{index}].dimensions", "must be a non-empty list of CdrDimension")
        seen: set[str] = set()
        for d_index, dimension in enumerate(dimensions):
            if type(dimension) is not dict:
                raise CdrError(f"{path}[{index}].dimensions[{d_index}]", "must be a CdrDimension object")
            kind = dimension.get("type")
            if type(kind) is not str or kind not in fields:
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
            try:
                volume = _volume(raw_volume)
            except CdrError as error:
                raise CdrError(f"{path}[{index}].dimensions[{d_index}].volume", error.message) from None
            target = fields[kind]
            if target is None:
                continue
            record[target[0]] = hours_to_us(volume) if target[1] else volume
        records.append(record)
    if any(records[i][A_US] > records[i + 1][A_US] for i in range(len(records) - 1)):
        warnings.append("charging_periods_not_chronological")
        records.sort(key=lambda r: r[A_US])
    for current, following in itertools.pairwise(records):
        current[B_US] = following[A_US]
    if records:
        last = records[-1]
        end_us = to_us(end)
        if end_us < last[A_US]:
            warnings.append("periods_outside_start_end_date_time")
            last[B_US] = last[A_US]
        else:
            last[B_US] = end_us
    return records


def hours_to_us(hours: Decimal) -> int:
    """Exact for up to 9 decimals of hours (OCPI sends 4); finer digits round to the microsecond."""
    return int((hours * US_PER_HOUR).to_integral_value(ROUND_HALF_EVEN))


def hours_to_timedelta(hours: Decimal) -> timedelta:
    return timedelta(microseconds=hours_to_us(hours))


def periods_from_ocpi(
    data: list[dict[str, Any]],
    end: datetime,
    *,
    path: str = "charging_periods",
    warnings: list[str] | None = None,
) -> list[ChargingPeriod]:
    """Build ChargingPeriods; each ends where the next starts and the last ends at `end`."""
    records = parse_period_records(data, end, path=path, warnings=warnings if warnings is not None else [])
    periods = []
    for r in records:
        periods.append(
            ChargingPeriod(
                r[START],
                EPOCH + timedelta(microseconds=r[B_US]),
                energy=r[ENERGY_KWH],
                time=timedelta(microseconds=r[TIME_US]),
                parking_time=timedelta(microseconds=r[PARKING_US]),
                reservation_time=timedelta(microseconds=r[RESERVATION_US]),
                max_power=r[MAX_POWER],
                min_power=r[MIN_POWER],
                power=r[POWER],
                max_current=r[MAX_CURRENT],
                min_current=r[MIN_CURRENT],
                current=r[CURRENT],
                tariff_id=r[TARIFF_ID],
            )
        )
    return periods


def records_from_periods(periods: list[ChargingPeriod]) -> list[Record]:
    """ChargingPeriods (already validated) -> engine records; a missing end is left as None."""
    return [
        [
            p.start_date_time,
            to_us(p.start_date_time),
            None if p.end_date_time is None else to_us(p.end_date_time),
            p.energy,
            td_us(p.time),
            td_us(p.parking_time),
            td_us(p.reservation_time),
            p.max_power,
            p.min_power,
            p.power,
            p.max_current,
            p.min_current,
            p.current,
            p.tariff_id,
        ]
        for p in periods
    ]
