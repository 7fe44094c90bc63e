"""The tariff engine's public entry points: reprice a CDR, price periods, quote a planned charge, estimate a
running session. They check their arguments and build the period records that engine.price_core prices."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, tzinfo
from decimal import ROUND_CEILING, Decimal, DecimalException
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from billing.money import ROUNDING_POLICIES

from .engine import PriceResult, price_core
from .errors import CdrError
from .periods import (
    A_US,
    START,
    TARIFF_ID,
    ChargingPeriod,
    Record,
    parse_period_records,
    periods_from_ocpi,
    records_from_periods,
)
from .tariff import (
    US_PER_HOUR,
    ZERO,
    Tariff,
    merge_tariffs,
    parse_datetime,
    parse_nonnegative,
    parse_tariff,
    to_us,
)

__all__ = ["estimate_session", "price_cdr", "price_periods", "quote", "resolve_zone"]

_ZONES: dict[str, tzinfo | None] = {"UTC": None, "Etc/UTC": None, "Z": None}
# Bounds on one CDR, so no input costs more than a set time and memory: its span, the lead its first period
# may have on its start (periods aligned to the hour, ocpi-tariffs issue 228), and how many periods it has.
MAX_SPAN = timedelta(days=31)
PERIOD_LEEWAY = timedelta(hours=1)
MAX_PERIODS = 10_000
_MISSING_VAT = ("unknown", "exempt")


def resolve_zone(name: Any, path: str = "time_zone") -> tzinfo | None:
    """An IANA zone, cached (None stands for UTC, which needs no conversion at all)."""
    try:
        return _ZONES[name]
    except (KeyError, TypeError):
        pass
    if not isinstance(name, str) or not name.strip():
        raise CdrError(path, f"must be an IANA time zone name, got {name!r}")
    try:
        zone = ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise CdrError(path, f"unknown IANA time zone {name!r}") from None
    _ZONES[name] = zone
    return zone


def _aware(moment: Any, path: str) -> datetime:
    if not isinstance(moment, datetime):
        raise CdrError(path, "must be a datetime")
    if moment.tzinfo is None:
        raise CdrError(path, "must be timezone-aware")
    if not 1900 <= moment.year <= 9000:
        raise CdrError(path, "is outside the supported years 1900-9000")
    return moment


def _guarded(function: Callable[..., PriceResult]) -> Callable[..., PriceResult]:
    """Absurd magnitudes (a 10^9-hour parking, a year-9000 session) end as CdrError, not a crash."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> PriceResult:
        try:
            return function(*args, **kwargs)
        except (OverflowError, DecimalException) as error:
            raise CdrError("$", f"value out of range ({type(error).__name__})") from None

    return wrapper


def _check_options(rounding: str | None, missing_vat: str) -> None:
    if rounding is None and missing_vat == "unknown":
        return
    if missing_vat not in _MISSING_VAT:
        raise CdrError("missing_vat", f"must be one of {_MISSING_VAT}")
    if rounding is not None and (not isinstance(rounding, str) or rounding.strip().upper() not in ROUNDING_POLICIES):
        raise CdrError("rounding", f"unknown rounding policy {rounding!r}")


def _as_tariff(tariff: Tariff | dict[str, Any], path: str = "tariff") -> Tariff:
    if isinstance(tariff, Tariff):
        return tariff
    return parse_tariff(tariff, path="" if path == "tariff" else path)


@_guarded
def price_periods(
    tariff: Tariff,
    periods: list[ChargingPeriod],
    *,
    time_zone: str,
    session_start: datetime,
    session_end: datetime | None = None,
    reservation_start: datetime | None = None,
    rounding: str | None = None,
    missing_vat: str = "unknown",
    _warnings: list[str] | None = None,
) -> PriceResult:
    """Price charging periods with one tariff; restrictions are evaluated in `time_zone` local time.

    `reservation_start` adds the reservation (reservation_start .. session_start) priced by the
    tariff's RESERVATION elements, unless the periods already carry RESERVATION_TIME.
    """
    _check_options(rounding, missing_vat)
    tariff = _as_tariff(tariff)
    zone = resolve_zone(time_zone)
    session_start = _aware(session_start, "session_start")
    if session_end is not None:
        session_end = _aware(session_end, "session_end")
        if session_end < session_start:
            raise CdrError("session_end", "is before session_start")
    warnings = _warnings if _warnings is not None else []
    items = list(periods)
    for index, period in enumerate(items):
        if not isinstance(period, ChargingPeriod):
            raise CdrError(f"periods[{index}]", "must be a ChargingPeriod")
        _aware(period.start_date_time, f"periods[{index}].start_date_time")
    if reservation_start is not None:
        reservation_start = _aware(reservation_start, "reservation_start")
        if reservation_start > session_start:
            raise CdrError("reservation_start", "is after session_start")
        if any(p.reservation_time for p in items):
            warnings.append("reservation_start_ignored:periods_carry_reservation_time")
        elif reservation_start < session_start:
            items.insert(
                0,
                ChargingPeriod(reservation_start, session_start, reservation_time=session_start - reservation_start),
            )
    if not items:
        raise CdrError("periods", "at least one charging period is required")
    records = records_from_periods(items)
    return price_core(
        tariff,
        records,
        zone=zone,
        time_zone=time_zone,
        session_start=session_start,
        session_end=session_end,
        warnings=warnings,
        rounding=rounding,
        missing_vat=missing_vat,
    )


@_guarded
def price_cdr(
    cdr: dict[str, Any],
    *,
    tariffs: Sequence[dict[str, Any] | Tariff] | None = None,
    time_zone: str | None = None,
    rounding: str | None = None,
    missing_vat: str = "unknown",
) -> PriceResult:
    """Reprice a CDR from its own `tariffs` (or the given ones) and its `charging_periods`.

    Tariff: the one named by `charging_periods[].tariff_id`, else the first valid at session start.
    Time zone: the argument, else the non-standard `cdr_location.time_zone`, else UTC with a warning
    (CdrLocation has no time_zone in 2.2.1; ocpi/ocpi#517).
    """
    if not isinstance(cdr, dict):
        raise CdrError("$", "CDR must be a JSON object")
    _check_options(rounding, missing_vat)
    warnings: list[str] = []
    for key in ("start_date_time", "end_date_time"):
        if cdr.get(key) is None:
            raise CdrError(key, "is required")
    start = parse_datetime(cdr["start_date_time"], "start_date_time", CdrError, warnings)
    end = parse_datetime(cdr["end_date_time"], "end_date_time", CdrError, warnings)
    if end < start:
        raise CdrError("end_date_time", "is before start_date_time")
    if end - start > MAX_SPAN:
        raise CdrError("end_date_time", f"a charge longer than {MAX_SPAN.days} days is not priced")
    raw_periods = cdr.get("charging_periods")
    if not isinstance(raw_periods, list) or not raw_periods:
        raise CdrError("charging_periods", "must be a non-empty list of ChargingPeriod")
    if len(raw_periods) > MAX_PERIODS:
        raise CdrError("charging_periods", f"more than {MAX_PERIODS} periods are not priced")
    periods = parse_period_records(raw_periods, end, warnings=warnings)
    if periods[0][START] < start - PERIOD_LEEWAY:
        # The work of pricing grows with the time the periods cover: it stays bounded by the CDR's own span.
        raise CdrError("charging_periods[0].start_date_time", "starts long before the CDR's start_date_time")

    if time_zone is None:
        location = cdr.get("cdr_location")
        zone_name = location.get("time_zone") if isinstance(location, dict) else None
        if zone_name is not None:
            zone = resolve_zone(zone_name, "cdr_location.time_zone")
            time_zone = zone_name
        else:
            warnings.append("time_zone_unknown_assumed_utc")
            time_zone = "UTC"
            zone = None
    else:
        zone = resolve_zone(time_zone)

    source_path = "tariffs"
    if tariffs is None:
        tariffs = cdr.get("tariffs")
        if tariffs is not None and not isinstance(tariffs, list):
            raise CdrError("tariffs", "must be a list of Tariff")
    if not tariffs:
        raise CdrError("tariffs", "no tariff to price with (CDR carries none and none were given)")
    parsed = [_as_tariff(t, f"{source_path}[{i}]") for i, t in enumerate(tariffs)]
    tariff = _choose_tariff(parsed, periods, start, warnings)

    currency = cdr.get("currency")
    if isinstance(currency, str) and currency.strip().upper() != tariff.currency:
        warnings.append(f"currency_mismatch:cdr={currency}:tariff={tariff.currency}")

    session_start = start
    if periods[0][A_US] < to_us(start):
        # Codeberg ocpi-tariffs issue 228: periods starting before the CDR. The session cannot have
        # started after energy flowed, so durations count from the first period.
        warnings.append("periods_outside_start_end_date_time")
        session_start = periods[0][START]
    return price_core(
        tariff,
        periods,
        zone=zone,
        time_zone=time_zone,
        session_start=session_start,
        session_end=end,
        warnings=warnings,
        rounding=rounding,
        missing_vat=missing_vat,
    )


def _choose_tariff(tariffs: list[Tariff], periods: list[Record], start: datetime, warnings: list[str]) -> Tariff:
    named = [p[TARIFF_ID] for p in periods if p[TARIFF_ID]]
    if named:
        wanted = named[0].casefold()  # Tariff.id is a CiString
        if len({n.casefold() for n in named}) > 1:
            switched = _switched_tariffs(tariffs, periods, warnings)
            if switched is not None:
                return switched
            # Tariffs that can't be priced as one (another currency, one the CDR does not carry): priced with
            # the first one and flagged for review.
            warnings.append("multiple_tariffs_priced_with_first")
        for tariff in tariffs:
            if tariff.id is not None and tariff.id.casefold() == wanted:
                return tariff
        index = next(i for i, p in enumerate(periods) if p[TARIFF_ID])
        raise CdrError(f"charging_periods[{index}].tariff_id", f"no tariff with id {named[0]!r}")
    valid = [tariff for tariff in tariffs if tariff.valid_at(start)]
    for tariff in valid:
        # mod_tariffs TariffType: AD_HOC_PAYMENT and PROFILE_* tariffs apply to ad hoc payers or to a charging
        # profile the driver chose; a CDR that names none of them in its periods was, as quotes assume
        # (billing/services/driver_pricing.py), billed with the regular (untyped) one, whatever the list order.
        if tariff.type in (None, "REGULAR"):
            return tariff
    if valid:
        return valid[0]
    return tariffs[0]  # price_core adds tariff_not_valid_at_session_start


def _switched_tariffs(tariffs: list[Tariff], periods: list[Record], warnings: list[str]) -> Tariff | None:
    """A session that switched tariffs (a profile change, mod_cdrs step_size NOTE), each period priced with the
    tariff it names (tariff.merge_tariffs); None when a named tariff is missing or they can't be merged."""
    by_key = {t.id.casefold(): t for t in reversed(tariffs) if t.id is not None}
    order = list(dict.fromkeys(p[TARIFF_ID].casefold() for p in periods if p[TARIFF_ID]))
    if any(key not in by_key for key in order):
        return None
    merged = merge_tariffs([by_key[key] for key in order])
    if merged is None:
        return None
    # ChargingPeriod.tariff_id absent: "no Tariff is relevant during this period". Between periods that name
    # tariffs that is more likely an omission than a free stretch: priced with the tariff named before it (the
    # first one for leading periods), and flagged.
    current = next(p[TARIFF_ID] for p in periods if p[TARIFF_ID])
    for period in periods:
        if period[TARIFF_ID]:
            current = period[TARIFF_ID]
        else:
            period[TARIFF_ID] = current
            if "period_without_tariff_id" not in warnings:
                warnings.append("period_without_tariff_id")
    return merged


@_guarded
def quote(
    tariff: Tariff | dict[str, Any],
    *,
    start: datetime,
    time_zone: str,
    power_kw: Decimal,
    energy_kwh: Decimal | None = None,
    duration: timedelta | None = None,
    parking: timedelta = timedelta(0),
    reservation: timedelta | None = None,
    rounding: str | None = None,
    missing_vat: str = "unknown",
) -> PriceResult:
    """Price a planned constant-power charge: it stops at `energy_kwh` or after `duration`
    (whichever comes first), then `parking` follows; `reservation` is the time reserved before start."""
    tariff = _as_tariff(tariff)
    start = _aware(start, "start")
    power = parse_nonnegative(power_kw, "power_kw", CdrError)
    if energy_kwh is None and duration is None:
        raise CdrError("energy_kwh", "give energy_kwh or duration (or both)")
    for name, value in (("duration", duration), ("parking", parking), ("reservation", reservation)):
        if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
            raise CdrError(name, "must be a non-negative timedelta")
    candidates: list[tuple[int, Decimal]] = []
    if duration is not None:
        us = duration // timedelta(microseconds=1)
        candidates.append((us, power * Decimal(us) / US_PER_HOUR))
    if energy_kwh is not None:
        energy = parse_nonnegative(energy_kwh, "energy_kwh", CdrError)
        if energy > 0 and power == 0:
            if duration is None:
                raise CdrError("power_kw", "must be positive to charge energy_kwh")
        elif power > 0:
            us = int((energy / power * US_PER_HOUR).to_integral_value(ROUND_CEILING))
            candidates.append((us, energy))
        else:
            candidates.append((0, ZERO))
    charge_us, energy = min(candidates, key=lambda c: c[0])
    charge = timedelta(microseconds=charge_us)
    periods: list[ChargingPeriod] = []
    if charge_us:
        periods.append(
            ChargingPeriod(start, start + charge, energy=energy, time=charge, max_power=power, min_power=power)
        )
    if parking:
        periods.append(ChargingPeriod(start + charge, start + charge + parking, parking_time=parking))
    reservation_start = start - reservation if reservation else None
    if not periods and reservation_start is None:
        periods.append(ChargingPeriod(start, start))
    return price_periods(
        tariff,
        periods,
        time_zone=time_zone,
        session_start=start,
        session_end=start + charge + parking,
        reservation_start=reservation_start,
        rounding=rounding,
        missing_vat=missing_vat,
    )


@_guarded
def estimate_session(
    session: dict[str, Any],
    tariff: Tariff | dict[str, Any],
    *,
    time_zone: str,
    now: datetime,
    rounding: str | None = None,
    missing_vat: str = "unknown",
) -> PriceResult:
    """Running cost of an OCPI Session: its charging_periods, the last one running until `now`.

    For an ACTIVE session the time after the last reported volume is extrapolated into the last
    period (as PARKING_TIME when that period is a parking period, else TIME); energy is not
    extrapolated. Warned as `estimate_extrapolated_time`.
    """
    if not isinstance(session, dict):
        raise CdrError("$", "Session must be a JSON object")
    tariff = _as_tariff(tariff)
    now = _aware(now, "now")
    warnings: list[str] = []
    if session.get("start_date_time") is None:
        raise CdrError("start_date_time", "is required")
    start = parse_datetime(session["start_date_time"], "start_date_time", CdrError, warnings)
    status = session.get("status")
    status = status.strip().upper() if isinstance(status, str) else None
    ongoing = status in (None, "ACTIVE", "PENDING", "RESERVATION")
    end = now
    if not ongoing and session.get("end_date_time") is not None:
        end = parse_datetime(session["end_date_time"], "end_date_time", CdrError, warnings)
    if end < start:
        raise CdrError("now" if ongoing else "end_date_time", "is before start_date_time")
    if end - start > MAX_SPAN:
        raise CdrError("start_date_time", f"a session running longer than {MAX_SPAN.days} days is not estimated")
    raw = session.get("charging_periods") or []
    if len(raw) > MAX_PERIODS:
        raise CdrError("charging_periods", f"more than {MAX_PERIODS} periods are not estimated")
    periods = periods_from_ocpi(raw, end, warnings=warnings)
    if not periods:
        kwh = session.get("kwh")
        energy = ZERO if kwh is None else parse_nonnegative(kwh, "kwh", CdrError)
        periods = [ChargingPeriod(start, end, energy=energy, time=end - start)]
        warnings.append("estimate_without_charging_periods")
    elif ongoing:
        last = periods[-1]
        elapsed = (last.end_date_time or end) - last.start_date_time
        reported = last.time + last.parking_time
        if elapsed > reported:
            gap = elapsed - reported
            if last.parking_time and not last.time and not last.energy:
                last.parking_time += gap
            else:
                last.time += gap
            warnings.append("estimate_extrapolated_time")
    session_start = min(start, periods[0].start_date_time)
    return price_periods(
        tariff,
        periods,
        time_zone=time_zone,
        session_start=session_start,
        session_end=end,
        rounding=rounding,
        missing_vat=missing_vat,
        _warnings=warnings,
    )
