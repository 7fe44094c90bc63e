"""The taxes in a priced session, per rate: what a 2.3.0 Price lists as `taxes[]` (types.asciidoc TaxAmount)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .tariff import TAX_NOT_APPLICABLE, ZERO, Price, _fmt

if TYPE_CHECKING:
    from .result import _Line

__all__ = ["TaxLine", "tax_lines"]


@dataclass(frozen=True, slots=True)
class TaxLine:
    """The tax at one rate: `percentage` from the components' `vat` (None when min/max price set the total, so
    no single rate applies), `base` the amount before taxes it is levied on, `amount` the tax itself."""

    percentage: Decimal | None
    base: Decimal
    amount: Decimal

    def to_dict(self) -> dict[str, Any]:
        return {
            "percentage": None if self.percentage is None else _fmt(self.percentage),
            "base": _fmt(self.base),
            "amount": _fmt(self.amount),
        }


def tax_lines(lines: list[_Line], total: Price, *, limited: bool, tax_included: str | None) -> list[TaxLine] | None:
    """Taxes per rate, highest rate first; None when the tariff leaves either side of the total unknown.

    When min_price or max_price set the total, excl. and incl. are limited independently (2.3.0 PriceLimit
    NOTE: "they both apply"), so the taxes are the difference between them, at no single rate.
    """
    if total.excl_vat is None or total.incl_vat is None:
        return None
    if tax_included == TAX_NOT_APPLICABLE:
        return []
    if limited:
        amount = total.incl_vat - total.excl_vat
        return [TaxLine(None, total.excl_vat, amount)] if amount else []
    rates: dict[Decimal, list[Decimal]] = {}
    for line in lines:
        rate = line.component.vat
        if rate is None:  # priced as exempt (missing_vat="exempt"): no tax line
            continue
        excl, incl = line.excl, line.incl
        assert excl is not None and incl is not None  # both sides are known: the totals are
        acc = rates.setdefault(rate, [ZERO, ZERO])
        acc[0] += excl
        acc[1] += incl - excl
    return [TaxLine(rate, base, amount) for rate, (base, amount) in sorted(rates.items(), reverse=True)]
