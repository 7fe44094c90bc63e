"""Result objects of the tariff engine: exact totals, per-dimension and per-period breakdowns."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, DivisionByZero, InvalidOperation, Overflow, localcontext
from functools import cached_property
from typing import Any

from billing.money import round_money
from emsp.datetimes import format_datetime

from .tariff import ENERGY, EPOCH, FLAT, PARKING_TIME, TIME, US_PER_HOUR, ZERO, Price, PriceComponent, _fmt
from .taxes import TaxLine, tax_lines

__all__ = ["CATEGORIES", "DimensionCost", "PeriodCost", "PriceResult"]

# Exact arithmetic: 34 digits (IEEE decimal128) keeps a session's cost exact to far below a
# micro-cent; a caller's global decimal context must not change prices, hence a private context.
CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, DivisionByZero, Overflow])

RESERVATION_TIME, RESERVATION_FLAT = "RESERVATION_TIME", "RESERVATION_FLAT"
CATEGORIES = (FLAT, ENERGY, TIME, PARKING_TIME, RESERVATION_FLAT, RESERVATION_TIME)
IN_OCPI_UNITS = (ENERGY, FLAT, RESERVATION_FLAT)  # line volumes in kWh or 1; the others are microseconds


@dataclass(frozen=True, slots=True)
class DimensionCost:
    """Billed volume and cost of one dimension under one tariff element (OCPI units: kWh / h / 1)."""

    dimension: str
    element_index: int
    price: Decimal
    vat: Decimal | None
    step_size: int
    volume: Decimal
    step_added: Decimal
    cost: Price

    def to_dict(self) -> dict[str, Any]:
        return {
            "dimension": self.dimension,
            "element_index": self.element_index,
            "price": _fmt(self.price),
            "vat": None if self.vat is None else _fmt(self.vat),
            "step_size": self.step_size,
            "volume": _fmt(self.volume),
            "step_added": _fmt(self.step_added),
            "cost": self.cost.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class PeriodCost:
    """One priced sub-period (an input period split where a restriction boundary was crossed)."""

    start_date_time: datetime
    end_date_time: datetime
    costs: tuple[DimensionCost, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_date_time": format_datetime(self.start_date_time, "micros"),
            "end_date_time": format_datetime(self.end_date_time, "micros"),
            "costs": [c.to_dict() for c in self.costs],
        }


class _Line:
    """One dimension billed in one sub-period. `excl`/`incl` (its cost) are set by the engine when it totals
    the lines, after step_size; the result's breakdowns read them rather than pricing the line again."""

    __slots__ = ("added", "category", "component", "element", "excl", "incl", "segment", "volume")

    def __init__(self, category: str, element: int, component: PriceComponent, volume: Decimal, segment: int):
        self.category = category
        self.element = element
        self.component = component
        self.volume = volume  # kWh, microseconds, or 1 for FLAT
        self.segment = segment
        self.added = ZERO

    def in_units(self, volume: Decimal) -> Decimal:
        """A volume of this line (kWh, microseconds or 1) in OCPI units (kWh, hours, 1)."""
        if self.category in IN_OCPI_UNITS:
            return volume
        return volume / US_PER_HOUR

    def billed(self) -> Decimal:
        """Volume in OCPI units (kWh, hours, 1)."""
        return self.in_units(self.volume)


class PriceResult:
    """Exact Decimal totals of one priced session; `to_dict()` gives JSON-ready strings."""

    def __init__(
        self,
        *,
        currency: str,
        tariff_id: str | None,
        tax_included: str | None,
        time_zone: str,
        totals: dict[str, Price | None],
        total_cost: Price,
        total_energy: Decimal,
        total_time: Decimal,
        total_parking_time: Decimal,
        total_reservation_time: Decimal,
        min_price_applied: bool,
        max_price_applied: bool,
        warnings: list[str],
        lines: list[_Line],
        segments: list[tuple[int, int]],
        rounding: str | None,
        missing_vat: str,
    ) -> None:
        self.currency = currency
        self.tariff_id = tariff_id
        self.tax_included = tax_included
        self.time_zone = time_zone
        self.total_cost = total_cost
        self.total_fixed_cost = totals[FLAT]
        self.total_energy_cost = totals[ENERGY]
        self.total_time_cost = totals[TIME]
        self.total_parking_cost = totals[PARKING_TIME]
        self.total_reservation_cost = totals["RESERVATION"]
        self.total_energy = total_energy
        self.total_time = total_time
        self.total_parking_time = total_parking_time
        self.total_reservation_time = total_reservation_time
        self.min_price_applied = min_price_applied
        self.max_price_applied = max_price_applied
        self.warnings = warnings
        self.rounding = rounding
        self.missing_vat = missing_vat
        self._lines = lines
        self._segments = segments

    def __repr__(self) -> str:
        return f"<PriceResult {self.currency} {self.total_cost.excl_vat}/{self.total_cost.incl_vat}>"

    @cached_property
    def _line_costs(self) -> list[DimensionCost]:
        """Each line's billed volume, step extra and cost; `periods` places them, `breakdown` sums them."""
        with localcontext(CONTEXT):
            costs = []
            for line in self._lines:
                comp = line.component
                volume = line.billed()
                costs.append(
                    DimensionCost(
                        line.category,
                        line.element,
                        comp.price,
                        comp.vat,
                        comp.step_size,
                        volume,
                        line.in_units(line.added),
                        Price(line.excl, line.incl),
                    )
                )
            return costs

    @cached_property
    def breakdown(self) -> dict[str, list[DimensionCost]]:
        """Per dimension, per tariff element (in order of first use): billed volume and cost."""
        with localcontext(CONTEXT):
            groups: dict[tuple[str, int], list[DimensionCost]] = {}
            for cost in self._line_costs:
                groups.setdefault((cost.dimension, cost.element_index), []).append(cost)
            out: dict[str, list[DimensionCost]] = {c: [] for c in CATEGORIES}
            for (category, element), costs in groups.items():
                first = costs[0]
                excls = [c.cost.excl_vat for c in costs]
                excl = None if None in excls else sum(excls, ZERO)
                incls = [c.cost.incl_vat for c in costs]
                incl = None if None in incls else sum(incls, ZERO)
                out[category].append(
                    DimensionCost(
                        category,
                        element,
                        first.price,
                        first.vat,
                        first.step_size,
                        sum((c.volume for c in costs), ZERO),
                        sum((c.step_added for c in costs), ZERO),
                        Price(excl, incl),
                    )
                )
            return {k: v for k, v in out.items() if v}

    @cached_property
    def taxes(self) -> list[TaxLine] | None:
        """Taxes per rate (a 2.3.0 Price's `taxes[]`); [] when none apply, None when the tariff leaves the
        amount before or after taxes unknown."""
        with localcontext(CONTEXT):
            limited = self.min_price_applied or self.max_price_applied
            return tax_lines(self._lines, self.total_cost, limited=limited, tax_included=self.tax_included)

    @cached_property
    def periods(self) -> list[PeriodCost]:
        """Every priced sub-period with the dimension costs billed in it (step extras included)."""
        per_segment: list[list[DimensionCost]] = [[] for _ in self._segments]
        for line, cost in zip(self._lines, self._line_costs, strict=True):
            per_segment[line.segment].append(cost)
        return [
            PeriodCost(_from_us(a), _from_us(b), tuple(costs))
            for (a, b), costs in zip(self._segments, per_segment, strict=True)
        ]

    def to_dict(self, rounding: str | None = None, *, max_periods: int | None = None) -> dict[str, Any]:
        """JSON-ready view. Money is exact unless a rounding policy is set (here or at pricing time). With
        `max_periods`, a result of more sub-periods lists none of them (`periods_omitted` counts them): the
        totals and per-element breakdown still explain it, at a size that can be stored."""
        policy = rounding or self.rounding
        omitted = max_periods is not None and len(self._segments) > max_periods

        def money(price: Price | None) -> dict[str, str | None] | None:
            if price is None:
                return None
            if policy is None:
                return price.to_dict()
            excl, incl = price.excl_vat, price.incl_vat
            # Rounded amounts keep the currency's minor unit digits ("5.00"), like an invoice.
            return {
                "excl_vat": None if excl is None else str(round_money(excl, self.currency, policy)),
                "incl_vat": None if incl is None else str(round_money(incl, self.currency, policy)),
            }

        return {
            "currency": self.currency,
            "tariff_id": self.tariff_id,
            "tax_included": self.tax_included,
            "time_zone": self.time_zone,
            "rounding": policy,
            "total_cost": money(self.total_cost),
            "total_fixed_cost": money(self.total_fixed_cost),
            "total_energy_cost": money(self.total_energy_cost),
            "total_time_cost": money(self.total_time_cost),
            "total_parking_cost": money(self.total_parking_cost),
            "total_reservation_cost": money(self.total_reservation_cost),
            "total_energy": _fmt(self.total_energy),
            "total_time": _fmt(self.total_time),
            "total_parking_time": _fmt(self.total_parking_time),
            "total_reservation_time": _fmt(self.total_reservation_time),
            "taxes": None if self.taxes is None else [t.to_dict() for t in self.taxes],
            "min_price_applied": self.min_price_applied,
            "max_price_applied": self.max_price_applied,
            "breakdown": {k: [c.to_dict() for c in v] for k, v in self.breakdown.items()},
            "periods": [] if omitted else [p.to_dict() for p in self.periods],
            **({"periods_omitted": len(self._segments)} if omitted else {}),
            "warnings": list(self.warnings),
        }


def _from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)
