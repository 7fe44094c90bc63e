"""Exact OCPI tariff engine (pure Python, no Django): parse tariffs, price CDRs, quote, estimate.

Spec basis: ocpi/ocpi branch release-2.2.1-bugfixes, mod_tariffs.asciidoc and mod_cdrs.asciidoc; 2.1.1 and 2.3.0
tariffs arrive in the same shape (ocpi/versions/tariffs.py), a 2.3.0 one with its `tax_included`.
"""

from __future__ import annotations

# Interpretations (each is also commented where it is applied):
# - Element selection: per dimension, the first element in list order whose restrictions all hold
#   at that moment, in the location's local time (zoneinfo, DST-aware). Periods are split wherever
#   a time-of-day/date/weekday boundary, a DST transition, a min/max_duration or a min/max_kwh
#   threshold falls inside them; volumes are divided in proportion to wall-clock time.
# - step_size ([bf] mod_cdrs): once per session on totals - ENERGY with the last ENERGY component's
#   step; TIME/PARKING_TIME: the parking total with the last PARKING_TIME step when a parking
#   component was used (charging time then unrounded), else the TIME total; reservation time on
#   its own. The extra goes to the last period using that component. step_size 0 counts as 1.
# - FLAT: once per charging session (first element whose FLAT matches) plus once per reservation
#   (tariff_16's 8.75 bills both the 2.00 reservation fee and the 0.50 start fee).
# - VAT: a component without `vat` has no known amount incl. VAT ("not providing a VAT is different
#   from 0% VAT"), so incl_vat totals it touches are None; missing_vat="exempt" treats it as 0 %.
# - min_price/max_price clamp excl. and incl. VAT independently; dimension sub-totals stay raw. A limit without
#   incl_vat moves the incl. total by the ratio its excl. side moved (unknown when the session was free).
# - A CDR whose periods name several tariffs (ChargingPeriod.tariff_id) prices each period with its tariff, as one
#   merged tariff (tariff.merge_tariffs); a CDR naming none is priced with the first regular (untyped) tariff valid
#   at its start.
# - tax_included (2.3.0 TaxIncluded): absent or NO, prices are before taxes and `vat` adds to them; YES, prices
#   include the taxes and `vat` says how much of them (no `vat`: the amount excl. taxes is unknown); N/A, no
#   taxes at all. The result's `taxes` lists the tax per rate, as a 2.3.0 Price's `taxes[]`.
# - Power/current restrictions use the period's MAX_/MIN_ values, else POWER/CURRENT, else (power
#   only) energy / charging time; unknown values make the restriction fail, with a warning.
# - Money is exact Decimal; rounding only at presentation via billing.money.round_money.
from .calculate import estimate_session, price_cdr, price_periods, quote, resolve_zone
from .errors import CdrError, PricingError, TariffError
from .periods import ChargingPeriod, hours_to_timedelta, periods_from_ocpi
from .result import DimensionCost, PeriodCost, PriceResult
from .tariff import Price, PriceComponent, Restrictions, Tariff, TariffElement, parse_tariff
from .taxes import TaxLine

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
    "TaxLine",
    "estimate_session",
    "hours_to_timedelta",
    "parse_tariff",
    "periods_from_ocpi",
    "price_cdr",
    "price_periods",
    "quote",
    "resolve_zone",
]
