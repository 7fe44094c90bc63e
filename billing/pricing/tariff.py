"""OCPI 2.2.1 Tariff parsing and validation into a precompiled, immutable model for the engine."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from billing.money import MINOR_UNITS
from emsp.datetimes import NOT_RFC3339, OFFSET, DateTimeError, parse_text

from .errors import PricingError, TariffError

__all__ = [
    "DIMENSIONS",
    "TAX_INCLUDED",
    "Price",
    "PriceComponent",
    "Restrictions",
    "Tariff",
    "TariffElement",
    "merge_tariffs",
    "parse_tariff",
]

ZERO = Decimal(0)
US_PER_S = 1_000_000
DAY_US = 86_400 * US_PER_S
US_PER_HOUR = Decimal(3_600 * US_PER_S)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

ENERGY, FLAT, PARKING_TIME, TIME = "ENERGY", "FLAT", "PARKING_TIME", "TIME"
DIMENSIONS = (ENERGY, FLAT, PARKING_TIME, TIME)  # mod_tariffs TariffDimensionType
RESERVATION, RESERVATION_EXPIRES = "RESERVATION", "RESERVATION_EXPIRES"
TARIFF_TYPES = frozenset({"AD_HOC_PAYMENT", "PROFILE_CHEAP", "PROFILE_FAST", "PROFILE_GREEN", "REGULAR"})
# OCPI 2.3.0 mod_tariffs TaxIncluded. Absent (2.1.1, 2.2.1): prices are excl. VAT, which is what NO means.
TAX_YES, TAX_NO, TAX_NOT_APPLICABLE = "YES", "NO", "N/A"
TAX_INCLUDED = (TAX_YES, TAX_NO, TAX_NOT_APPLICABLE)
DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")

_TIME_RE = re.compile(r"([0-1][0-9]|2[0-3]):([0-5][0-9])")  # mod_tariffs TariffRestrictions.start_time
_DATE_RE = re.compile(r"([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
# A zero offset in every form fromisoformat reads ("+00", "-0000", "+00:00:00.5": it ignores that fraction).
_ZERO_OFFSET = re.compile(r"[+-]00(?::?00(?::?00(?:[.,]\d+)?)?)?$")

_TARIFF_FIELDS = frozenset(
    {
        "country_code", "party_id", "id", "currency", "type", "tariff_alt_text", "tariff_alt_url",
        "min_price", "max_price", "elements", "start_date_time", "end_date_time", "energy_mix",
        "last_updated", "tax_included", "preauthorize_amount",
    }
)  # fmt: skip
_RESTRICTION_FIELDS = frozenset(
    {
        "start_time", "end_time", "start_date", "end_date", "min_kwh", "max_kwh", "min_current",
        "max_current", "min_power", "max_power", "min_duration", "max_duration", "day_of_week",
        "reservation",
    }
)  # fmt: skip


# --------------------------------------------------------------------------- primitive parsing


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


_LIMIT = Decimal("1e15")  # far above any real price, volume or power; keeps arithmetic exact


def parse_number(value: Any, path: str, err: type[PricingError]) -> Decimal:
    """A JSON number as an exact Decimal (floats go through their shortest repr, never binary)."""
    if isinstance(value, bool):
        raise err(path, "must be a number, got a boolean")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise err(path, "must be a finite number")
        number = Decimal(repr(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise err(path, "must be a finite number")
        number = value
    else:
        raise err(path, f"must be a number, got {type(value).__name__}")
    if abs(number) >= _LIMIT:
        raise err(path, "is out of range")
    return number


def parse_nonnegative(value: Any, path: str, err: type[PricingError]) -> Decimal:
    number = parse_number(value, path, err)
    if number < 0:
        raise err(path, "must not be negative")
    return number


def _int(value: Any, path: str, err: type[PricingError]) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise err(path, "must be an integer")
    number = parse_number(value, path, err)
    if number != number.to_integral_value():
        raise err(path, "must be an integer")
    if number < 0:
        raise err(path, "must not be negative")
    return int(number)


def _enum(value: Any, path: str, err: type[PricingError], allowed: frozenset[str] | tuple[str, ...]) -> str:
    # Lenient only on case and surrounding spaces: partners do send "energy" / "MONDAY ".
    if not isinstance(value, str):
        raise err(path, f"must be one of {sorted(allowed)}")
    normalised = value.strip().upper()
    if normalised not in allowed:
        raise err(path, f"unknown value {value!r}; expected one of {sorted(allowed)}")
    return normalised


def parse_datetime(value: Any, path: str, err: type[PricingError], warnings: list[str] | None = None) -> datetime:
    """OCPI DateTime (types.asciidoc): RFC 3339 in UTC, `Z` or no suffix; fractions allowed. Read by the
    shared emsp.datetimes; stricter here: a string, with a time, in the years 1900-9000."""
    if not isinstance(value, str):
        raise err(path, "must be an RFC 3339 date-time string")
    try:
        moment, deviation = parse_text(value)
    except DateTimeError:
        raise err(path, f"not a valid date-time: {value!r}") from None
    if deviation == NOT_RFC3339:
        # A bare date names a day, not an instant: no session or validity bound can start "on a day".
        raise err(path, f"not a valid date-time: {value!r}")
    # Keeps every later datetime/offset computation inside datetime's range. With an offset, the year as
    # written (the offset can move the UTC one), so the message names what the sender sent.
    year = moment.year if deviation is None else int(value.lstrip()[:4])
    if not 1900 <= year <= 9000:
        raise err(path, f"year {year} is outside the supported range 1900-9000")
    # types.asciidoc: "All timestamps SHALL be in UTC" (no suffix means UTC). Only an offset that moves the
    # clock is flagged: "+00:00" names the same instant, so repricing it needs no second look.
    if deviation == OFFSET and warnings is not None and not _ZERO_OFFSET.search(value.rstrip()):
        warnings.append(f"non_utc_offset:{path}")
    return moment


def td_us(delta: timedelta) -> int:
    """A timedelta in whole microseconds (exact, unlike total_seconds())."""
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def to_us(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime."""
    delta = moment - EPOCH  # td_us inlined: called for every period of every CDR
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Price:
    """An amount before and after taxes (2.2.1 Price excl_vat/incl_vat; 2.3.0 before_taxes + taxes[]).

    Either side is None when the tariff does not say: incl_vat for a component without `vat` whose price is
    before taxes; excl_vat only for a 2.3.0 tariff with `tax_included` YES whose component gives no `vat`
    (its prices include taxes at rates it does not state, the spec's North American example).
    """

    excl_vat: Decimal | None
    incl_vat: Decimal | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "excl_vat": None if self.excl_vat is None else _fmt(self.excl_vat),
            "incl_vat": None if self.incl_vat is None else _fmt(self.incl_vat),
        }


def _fmt(value: Decimal) -> str:
    # Exact results can be non-terminating (1 s of a 1.90/h tariff); 12 places is far below any
    # currency's minor unit and keeps JSON stable. Money rounding proper lives in billing.money.
    if value.as_tuple().exponent < -12:
        value = value.quantize(_FMT_QUANTUM)
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


_FMT_QUANTUM = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class PriceComponent:
    type: str
    price: Decimal
    vat: Decimal | None
    step_size: int
    vat_factor: Decimal | None
    # step_size 0 appears in the spec's own free-of-charge example; a step of 0 units would divide
    # by zero, and "billed in blocks of 0" can only mean "no blocks", i.e. the base unit.
    step: int


@dataclass(frozen=True, slots=True)
class Restrictions:
    start_time: str | None = None
    end_time: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    min_kwh: Decimal | None = None
    max_kwh: Decimal | None = None
    min_current: Decimal | None = None
    max_current: Decimal | None = None
    min_power: Decimal | None = None
    max_power: Decimal | None = None
    min_duration: int | None = None
    max_duration: int | None = None
    day_of_week: tuple[str, ...] = ()
    reservation: str | None = None
    # compiled forms (microseconds of local day, local day numbers since 1970-01-01, weekday ints)
    start_us: int | None = None
    end_us: int | None = None
    start_day: int | None = None
    end_day: int | None = None
    weekdays: frozenset[int] | None = None
    min_duration_us: int | None = None
    max_duration_us: int | None = None
    needs_local: bool = False
    has_session_limits: bool = False
    has_instant_limits: bool = False
    # Set only in merge_tariffs: the (casefolded) Tariff.id a charging period must name for the element to apply.
    tariff_key: str | None = None


@dataclass(frozen=True, slots=True, eq=False)
class TariffElement:
    index: int
    price_components: tuple[PriceComponent, ...]
    restrictions: Restrictions | None
    by_type: dict[str, PriceComponent]


@dataclass(frozen=True, slots=True, eq=False)
class Tariff:
    """A validated Tariff plus lookup tables precomputed once (the engine's hot path reads only these)."""

    id: str | None
    currency: str
    type: str | None
    # None (2.1.1, 2.2.1) prices like NO: component prices are before taxes, `vat` adds to them.
    tax_included: str | None
    elements: tuple[TariffElement, ...]
    min_price: Price | None
    max_price: Price | None
    start_date_time: datetime | None
    end_date_time: datetime | None
    country_code: str | None
    party_id: str | None
    warnings: tuple[str, ...]
    # per dimension: elements that carry it, in list order (mod_tariffs "first element ... used")
    charging: dict[str, tuple[tuple[TariffElement, PriceComponent], ...]]
    reserved: dict[str, tuple[tuple[TariffElement, PriceComponent], ...]]
    expired: dict[str, tuple[tuple[TariffElement, PriceComponent], ...]]
    local_boundaries: tuple[int, ...]
    needs_local: bool
    duration_thresholds_us: tuple[int, ...]
    kwh_thresholds: tuple[Decimal, ...]
    uses_power: bool
    uses_current: bool

    def valid_at(self, moment: datetime) -> bool:
        """Tariff.start_date_time (incl.) / end_date_time: the validity window, in UTC."""
        if self.start_date_time is not None and moment < self.start_date_time:
            return False
        return not (self.end_date_time is not None and moment > self.end_date_time)


# --------------------------------------------------------------------------- parsing


def _parse_price(value: Any, path: str) -> Price:
    if not isinstance(value, dict):
        raise TariffError(path, "must be a Price object with excl_vat")
    if "excl_vat" not in value or value["excl_vat"] is None:
        raise TariffError(_join(path, "excl_vat"), "is required")
    excl = parse_nonnegative(value["excl_vat"], _join(path, "excl_vat"), TariffError)
    incl_raw = value.get("incl_vat")
    incl = None if incl_raw is None else parse_nonnegative(incl_raw, _join(path, "incl_vat"), TariffError)
    return Price(excl, incl)


def _parse_time(value: Any, path: str) -> tuple[str, int]:
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value.strip()):
        raise TariffError(path, f"must be HH:MM (24h, leading zeros), got {value!r}")
    text = value.strip()
    return text, (int(text[:2]) * 3600 + int(text[3:]) * 60) * US_PER_S


def _parse_date(value: Any, path: str) -> tuple[str, int]:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value.strip()):
        raise TariffError(path, f"must be YYYY-MM-DD, got {value!r}")
    text = value.strip()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise TariffError(path, f"not a calendar date: {value!r}") from None
    return text, day.toordinal() - _EPOCH_ORDINAL


def _parse_restrictions(value: Any, path: str) -> Restrictions | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TariffError(path, "must be a TariffRestrictions object")
    for key in value:
        if key not in _RESTRICTION_FIELDS:
            # An unknown restriction (e.g. camelCase `dayOfWeek`) would be silently ignored and the
            # element applied at the wrong moments - a wrong price. Refuse instead of guessing.
            raise TariffError(_join(path, str(key)), "unexpected field in restrictions")
    fields: dict[str, Any] = {}

    def get(key: str) -> Any:
        return value.get(key)

    if get("start_time") is not None:
        fields["start_time"], fields["start_us"] = _parse_time(get("start_time"), _join(path, "start_time"))
    if get("end_time") is not None:
        fields["end_time"], end_us = _parse_time(get("end_time"), _join(path, "end_time"))
        # mod_tariffs: end_time "00:00" is the end of the day (tariff_14 "20:00"-"00:00").
        fields["end_us"] = end_us or DAY_US
    if get("start_date") is not None:
        fields["start_date"], fields["start_day"] = _parse_date(get("start_date"), _join(path, "start_date"))
    if get("end_date") is not None:
        fields["end_date"], fields["end_day"] = _parse_date(get("end_date"), _join(path, "end_date"))
    for key in ("min_kwh", "max_kwh", "min_current", "max_current", "min_power", "max_power"):
        if get(key) is not None:
            fields[key] = parse_nonnegative(get(key), _join(path, key), TariffError)
    for key in ("min_duration", "max_duration"):
        if get(key) is not None:
            seconds = _int(get(key), _join(path, key), TariffError)
            fields[key] = seconds
            fields[f"{key}_us"] = seconds * US_PER_S
    days = get("day_of_week")
    if days is not None:
        if not isinstance(days, list):
            raise TariffError(_join(path, "day_of_week"), "must be a list of DayOfWeek")
        parsed = tuple(_enum(d, _join(_join(path, "day_of_week"), i), TariffError, DAYS) for i, d in enumerate(days))
        if parsed:
            fields["day_of_week"] = parsed
            fields["weekdays"] = frozenset(DAYS.index(d) for d in parsed)
    if get("reservation") is not None:
        fields["reservation"] = _enum(
            get("reservation"), _join(path, "reservation"), TariffError, (RESERVATION, RESERVATION_EXPIRES)
        )
    for low, high in (
        ("min_kwh", "max_kwh"),
        ("min_current", "max_current"),
        ("min_power", "max_power"),
        ("min_duration", "max_duration"),
        ("start_day", "end_day"),
    ):
        if fields.get(low) is not None and fields.get(high) is not None and fields[low] > fields[high]:
            raise TariffError(_join(path, high.replace("_day", "_date")), f"is before {low.replace('_day', '_date')}")
    fields["needs_local"] = any(
        fields.get(k) is not None for k in ("start_us", "end_us", "start_day", "end_day", "weekdays")
    )
    fields["has_session_limits"] = any(
        fields.get(k) is not None for k in ("min_kwh", "max_kwh", "min_duration_us", "max_duration_us")
    )
    fields["has_instant_limits"] = any(
        fields.get(k) is not None for k in ("min_power", "max_power", "min_current", "max_current")
    )
    return Restrictions(**fields)


def _parse_component(value: Any, path: str, warnings: list[str]) -> PriceComponent:
    if not isinstance(value, dict):
        raise TariffError(path, "must be a PriceComponent object")
    if value.get("type") is None:
        raise TariffError(_join(path, "type"), "is required")
    kind = _enum(value["type"], _join(path, "type"), TariffError, DIMENSIONS)
    if value.get("price") is None:
        raise TariffError(_join(path, "price"), "is required")
    price = parse_number(value["price"], _join(path, "price"), TariffError)
    if price < 0:
        # Not forbidden by the spec (a discount?), but unusual enough to surface.
        warnings.append(f"negative_price:{_join(path, 'price')}")
    vat_raw = value.get("vat")
    vat = None if vat_raw is None else parse_nonnegative(vat_raw, _join(path, "vat"), TariffError)
    if value.get("step_size") is None:
        # Card. 1 in the spec, but [bf] itself says "use step_size = 1"; pricing with the neutral
        # step is the only value that cannot overcharge. Flagged rather than refused.
        warnings.append(f"missing_step_size:{path}")
        step_size = 1
    else:
        step_size = _int(value["step_size"], _join(path, "step_size"), TariffError)
    for key in value:
        if key not in ("type", "price", "vat", "step_size"):
            warnings.append(f"unexpected_field:{_join(path, str(key))}")
    factor = None if vat is None else 1 + vat / 100
    return PriceComponent(kind, price, vat, step_size, factor, step_size or 1)


def parse_tariff(data: dict[str, Any], *, path: str = "") -> Tariff:
    """Validate an OCPI 2.2.1 Tariff object and precompile it; raises TariffError naming the field."""
    if not isinstance(data, dict):
        raise TariffError(path, "tariff must be a JSON object")
    warnings: list[str] = []
    for key in data:
        if key not in _TARIFF_FIELDS:
            warnings.append(f"unexpected_field:{_join(path, str(key))}")

    tariff_id = data.get("id")
    if tariff_id is not None and not isinstance(tariff_id, str):
        raise TariffError(_join(path, "id"), "must be a string")
    currency_raw = data.get("currency")
    if currency_raw is None:
        raise TariffError(_join(path, "currency"), "is required")
    if not isinstance(currency_raw, str) or not _CURRENCY_RE.fullmatch(currency_raw.strip().upper()):
        raise TariffError(_join(path, "currency"), f"must be an ISO 4217 code, got {currency_raw!r}")
    currency = currency_raw.strip().upper()
    if currency not in MINOR_UNITS:
        # A code we can't round for would fail at presentation: refuse it here, with its path.
        raise TariffError(_join(path, "currency"), f"is not an ISO 4217 currency code: {currency_raw!r}")
    if currency != currency_raw:
        warnings.append(f"currency_invalid_case:{_join(path, 'currency')}")
    tariff_type = None
    if data.get("type") is not None:
        tariff_type = _enum(data["type"], _join(path, "type"), TariffError, TARIFF_TYPES)
    for key in ("country_code", "party_id"):
        if data.get(key) is None:
            warnings.append(f"missing_field:{_join(path, key)}")
        elif not isinstance(data[key], str):
            raise TariffError(_join(path, key), "must be a string")
    tax_included = None
    if data.get("tax_included") is not None:
        # 2.3.0: whether component prices (and nothing else: PriceLimit states both sides) include taxes.
        tax_included = _enum(data["tax_included"], _join(path, "tax_included"), TariffError, TAX_INCLUDED)
    if data.get("preauthorize_amount") is not None:
        # 2.3.0, for payment terminals; not a price of the session, but a garbled one is a garbled tariff.
        parse_nonnegative(data["preauthorize_amount"], _join(path, "preauthorize_amount"), TariffError)

    min_price = None if data.get("min_price") is None else _parse_price(data["min_price"], _join(path, "min_price"))
    max_price = None if data.get("max_price") is None else _parse_price(data["max_price"], _join(path, "max_price"))
    if min_price and max_price:
        if min_price.excl_vat > max_price.excl_vat:
            raise TariffError(_join(path, "min_price.excl_vat"), "exceeds max_price.excl_vat")
        if (
            min_price.incl_vat is not None
            and max_price.incl_vat is not None
            and min_price.incl_vat > max_price.incl_vat
        ):
            raise TariffError(_join(path, "min_price.incl_vat"), "exceeds max_price.incl_vat")
    start = None
    end = None
    if data.get("start_date_time") is not None:
        start = parse_datetime(data["start_date_time"], _join(path, "start_date_time"), TariffError, warnings)
    if data.get("end_date_time") is not None:
        end = parse_datetime(data["end_date_time"], _join(path, "end_date_time"), TariffError, warnings)

    raw_elements = data.get("elements")
    elements_path = _join(path, "elements")
    if not isinstance(raw_elements, list) or not raw_elements:
        raise TariffError(elements_path, "must be a non-empty list of TariffElement")
    elements: list[TariffElement] = []
    for index, raw in enumerate(raw_elements):
        element_path = _join(elements_path, index)
        if not isinstance(raw, dict):
            raise TariffError(element_path, "must be a TariffElement object")
        for key in raw:
            if key not in ("price_components", "restrictions"):
                warnings.append(f"unexpected_field:{_join(element_path, str(key))}")
        components_raw = raw.get("price_components")
        components_path = _join(element_path, "price_components")
        if not isinstance(components_raw, list) or not components_raw:
            raise TariffError(components_path, "must be a non-empty list of PriceComponent")
        components = tuple(
            _parse_component(c, _join(components_path, i), warnings) for i, c in enumerate(components_raw)
        )
        restrictions = _parse_restrictions(raw.get("restrictions"), _join(element_path, "restrictions"))
        if tax_included == TAX_NOT_APPLICABLE:
            for i, component in enumerate(components):
                if component.vat:
                    # TaxIncluded N/A: "No taxes are applicable to this Tariff" outranks a component's rate.
                    warnings.append(f"vat_ignored_no_taxes_applicable:{_join(_join(components_path, i), 'vat')}")
        by_type: dict[str, PriceComponent] = {}
        for i, component in enumerate(components):
            if component.type in by_type:
                # Only one component per dimension can be active (mod_tariffs Tariff object); a
                # second one in the same element can never be selected.
                warnings.append(f"duplicate_dimension_ignored:{_join(components_path, i)}")
                continue
            by_type[component.type] = component
        if restrictions is not None and restrictions.reservation is not None:
            for kind in by_type:
                if kind not in (FLAT, TIME):
                    # TariffRestrictions.reservation: "A reservation can only have FLAT and TIME".
                    warnings.append(f"reservation_dimension_ignored:{_join(element_path, kind)}")
        elements.append(TariffElement(index, components, restrictions, by_type))
    return _compile(
        tariff_id,
        currency,
        tariff_type,
        tax_included,
        tuple(elements),
        min_price,
        max_price,
        start,
        end,
        data.get("country_code"),
        data.get("party_id"),
        tuple(warnings),
    )


def merge_tariffs(tariffs: list[Tariff]) -> Tariff | None:
    """Tariffs a session switched between (ChargingPeriod.tariff_id: "the Tariff that is relevant for this Charging
    Period"), as one tariff whose elements apply only in the periods naming their tariff; None when they can't be
    one (other currencies or tax modes, or a tariff without id).

    Everything else is priced as for one tariff, as mod_cdrs asks: "The step_size is not taken into account when
    switching between two Tariffs" (once per session, with the last component used, as between elements); FLAT
    once per session. Element indexes are positions in the merged list. min_price/max_price apply when the
    tariffs agree on them; else none applies, with a warning (the spec does not say which would).
    """
    first = tariffs[0]
    if any(t.id is None or t.currency != first.currency or t.tax_included != first.tax_included for t in tariffs):
        return None
    elements: list[TariffElement] = []
    for tariff in tariffs:
        key = tariff.id.casefold() if tariff.id is not None else None
        for element in tariff.elements:
            r = element.restrictions
            tagged = Restrictions(tariff_key=key) if r is None else replace(r, tariff_key=key)
            elements.append(TariffElement(len(elements), element.price_components, tagged, element.by_type))
    warnings = [w for t in tariffs for w in t.warnings]
    min_price, max_price = first.min_price, first.max_price
    if any(t.min_price != min_price or t.max_price != max_price for t in tariffs):
        warnings.append("price_limits_of_switched_tariffs_ignored")
        min_price = max_price = None
    return _compile(
        first.id,
        first.currency,
        first.type,
        first.tax_included,
        tuple(elements),
        min_price,
        max_price,
        first.start_date_time,
        first.end_date_time,
        first.country_code,
        first.party_id,
        tuple(warnings),
    )


def _compile(
    tariff_id: str | None,
    currency: str,
    tariff_type: str | None,
    tax_included: str | None,
    elements: tuple[TariffElement, ...],
    min_price: Price | None,
    max_price: Price | None,
    start: datetime | None,
    end: datetime | None,
    country_code: str | None,
    party_id: str | None,
    warnings: tuple[str, ...],
) -> Tariff:
    charging: dict[str, list[tuple[TariffElement, PriceComponent]]] = {d: [] for d in DIMENSIONS}
    reserved: dict[str, list[tuple[TariffElement, PriceComponent]]] = {FLAT: [], TIME: []}
    expires: dict[str, list[tuple[TariffElement, PriceComponent]]] = {FLAT: [], TIME: []}
    boundaries: set[int] = set()
    durations: set[int] = set()
    kwhs: set[Decimal] = set()
    needs_local = uses_power = uses_current = False
    for element in elements:
        r = element.restrictions
        mode = r.reservation if r is not None else None
        for kind, component in element.by_type.items():
            if mode is None:
                charging[kind].append((element, component))
            elif kind in (FLAT, TIME):
                (reserved if mode == RESERVATION else expires)[kind].append((element, component))
        if r is None:
            continue
        if r.needs_local:
            needs_local = True
            for value in (r.start_us, r.end_us):
                if value is not None:
                    boundaries.add(value % DAY_US)
            if (
                r.start_day is not None
                or r.end_day is not None
                or r.weekdays is not None
                or (r.start_us is None) != (r.end_us is None)
            ):
                # Dates and weekdays change at local midnight, and a lone start_time holds until the end of the
                # day (a lone end_time from its start): a period over midnight is cut there as well.
                boundaries.add(0)
        for value in (r.min_duration_us, r.max_duration_us):
            if value is not None:
                durations.add(value)
        for value in (r.min_kwh, r.max_kwh):
            if value is not None:
                kwhs.add(value)
        uses_power = uses_power or r.min_power is not None or r.max_power is not None
        uses_current = uses_current or r.min_current is not None or r.max_current is not None
    # Reservation NOTE (mod_tariffs ReservationRestrictionType): for an expired reservation the
    # RESERVATION_EXPIRES element prices the time when both exist, whatever their list order; an
    # expired reservation is still a reservation, so RESERVATION elements are the fallback (T17).
    expired = {kind: tuple(expires[kind] + reserved[kind]) for kind in (FLAT, TIME)}
    return Tariff(
        id=tariff_id,
        currency=currency,
        type=tariff_type,
        tax_included=tax_included,
        elements=elements,
        min_price=min_price,
        max_price=max_price,
        start_date_time=start,
        end_date_time=end,
        country_code=country_code,
        party_id=party_id,
        warnings=warnings,
        charging={k: tuple(v) for k, v in charging.items()},
        reserved={k: tuple(v) for k, v in reserved.items()},
        expired=expired,
        local_boundaries=tuple(sorted(boundaries)),
        needs_local=needs_local,
        duration_thresholds_us=tuple(sorted(durations)),
        kwh_thresholds=tuple(sorted(kwhs)),
        uses_power=uses_power,
        uses_current=uses_current,
    )
