"""Exact OCPI 2.2.1 tariff engine (pure Python, no Django): parse tariffs, price CDRs, quote, estimate.

Spec basis: ocpi/ocpi branch release-2.2.1-bugfixes, mod_tariffs.asciidoc and mod_cdrs.asciidoc.
"""

from __future__ import annotations

from .api import estimate_session, price_cdr, price_periods, quote, resolve_zone
from .engine import DimensionCost, PeriodCost, PriceResult
from .errors import CdrError, PricingError, TariffError
from .periods import ChargingPeriod, hours_to_timedelta, periods_from_ocpi
from .tariff import Price, PriceComponent, Restrictions, Tariff, TariffElement, parse_tariff

__all__ = [
    "CdrError",
    "ChargingPeriod",
    "DimensionCost",
    "PeriodCost",
    "Price",
    "PriceComponent",
    "PriceResult",
    "PricingError",
    "Restrictions",
    "Tariff",
    "TariffElement",
    "TariffError",
    "estimate_session",
    "hours_to_timedelta",
    "parse_tariff",
    "periods_from_ocpi",
    "price_cdr",
    "price_periods",
    "quote",
    "resolve_zone",
]
