"""Currency minor units (ISO 4217) and the one place where money gets rounded for presentation.

OCPI leaves money rounding to law, contract and currency ([bf] mod_tariffs.asciidoc NOTE), so the
pricing engine computes exact Decimals and callers round here, with an explicit policy.
"""

from __future__ import annotations

from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
)

__all__ = [
    "AMOUNT_QUANTUM",
    "DEFAULT_POLICY",
    "MAX_AMOUNT",
    "MINOR_UNITS",
    "ROUNDING_POLICIES",
    "minor_units",
    "round_money",
    "stored_amount",
]

# The most one charge can plausibly cost, in the currency's units: the cap on a CDR's amounts
# (ocpi/normalize/sessions.py) and on a price we work out (billing/services/driver_pricing.py
# `implausible_amount`). A tariff's unit price (up to 10**6, ocpi/normalize/tariffs.py) times a charge's energy
# (up to 10**5 kWh) goes far beyond it, and beyond the money columns (numeric(14, 4): below 10**10).
MAX_AMOUNT = 10**8
# The decimals our money columns keep (billing.models: numeric(14, 4)).
AMOUNT_QUANTUM = Decimal("0.0001")


def stored_amount(value: float | Decimal) -> Decimal:
    """An amount as our money columns hold it: rounded to 4 decimals, half away from zero (as PostgreSQL rounds a
    numeric). Rounded by the CDR's normaliser and store (billing/services/records.py), not silently by the
    column."""
    return Decimal(str(value)).quantize(AMOUNT_QUANTUM, rounding=ROUND_HALF_UP)


DEFAULT_POLICY = "HALF_UP"

# Policy names as a contract or invoice would state them, mapped to decimal's rounding modes.
# DOWN/UP are towards/away from zero, so a credit CDR (negative amounts) rounds symmetrically.
ROUNDING_POLICIES: dict[str, str] = {
    "HALF_UP": ROUND_HALF_UP,
    "HALF_EVEN": ROUND_HALF_EVEN,
    "HALF_DOWN": ROUND_HALF_DOWN,
    "DOWN": ROUND_DOWN,
    "UP": ROUND_UP,
    "CEILING": ROUND_CEILING,
    "FLOOR": ROUND_FLOOR,
}

# ISO 4217 (list one, active codes) minor units for every currency whose exponent is not 2.
# Everything else that is a listed 3-letter code has 2; funds/metals without minor units are absent.
_NON_TWO: dict[str, int] = {
    # exponent 0
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    # exponent 3
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    # exponent 4
    "CLF": 4, "UYW": 4,
}  # fmt: skip

_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL "
    "MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK "
    "PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL THB "
    "TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL"
)

MINOR_UNITS: dict[str, int] = {**dict.fromkeys(_TWO.split(), 2), **_NON_TWO}

_QUANTUM: dict[int, Decimal] = {n: Decimal(1).scaleb(-n) for n in range(5)}


def minor_units(currency: str) -> int:
    """Number of decimals of the currency's minor unit (EUR 2, JPY 0, KWD 3)."""
    code = currency.strip().upper() if isinstance(currency, str) else currency
    try:
        return MINOR_UNITS[code]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ISO 4217 currency code: {currency!r}") from None


def round_money(amount: Decimal, currency: str, policy: str = DEFAULT_POLICY) -> Decimal:
    """Round an exact amount to the currency's minor unit with the named policy."""
    if not isinstance(amount, Decimal):
        # Floats would smuggle binary error into invoices; ints are exact and fine.
        if isinstance(amount, int) and not isinstance(amount, bool):
            amount = Decimal(amount)
        else:
            raise TypeError(f"amount must be Decimal, got {type(amount).__name__}")
    try:
        mode = ROUNDING_POLICIES[policy.strip().upper()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown rounding policy {policy!r}; use one of {sorted(ROUNDING_POLICIES)}") from None
    return amount.quantize(_QUANTUM[minor_units(currency)], rounding=mode)
