"""Tariffs of OCPI 2.1.1 and 2.3.0 on our one tariff (2.2.1-shaped, plus 2.3.0's tax fields), and back. Pure.

2.1.1 (release-2.1.1-bugfixes mod_tariffs.md) has no `country_code`/`party_id` (the owner is the connection's
party), no `type`, no `min_price`/`max_price`, no `start_date_time`/`end_date_time`, no `vat` on a price
component (its prices are excl. VAT, so the amount incl. VAT is never known), no `reservation`,
`min_current`/`max_current` restrictions; its EnvironmentalImpact says `source` where 2.2 says `category`.
2.3.0 (release-2.3.0-bugfixes) adds `tax_included` (YES/NO/N/A: whether component prices include taxes),
`preauthorize_amount`, and makes `min_price`/`max_price` a PriceLimit {before_taxes, after_taxes?}. Our tariff
keeps `tax_included` and `preauthorize_amount` (EXTRA_FIELDS, checked by ocpi/normalize/taxes.py);
billing.pricing reads `tax_included`. docs/ocpi-versions.md "Tariffs and CDRs" is the full account.
"""

from __future__ import annotations

from typing import Any

from ocpi.versions.common import Context, each, renamed, without
from ocpi.versions.v211 import _energy_mix

# Our tariff's fields beyond 2.2.1 (mod_tariffs 2.3.0 Tariff object).
EXTRA_FIELDS = ("tax_included", "preauthorize_amount")
VERSIONS = ("2.1.1", "2.2.1", "2.3.0")

_V211_FIELDS = ("id", "currency", "tariff_alt_text", "tariff_alt_url", "elements", "energy_mix", "last_updated")
_V211_RESTRICTIONS = frozenset(
    {
        "start_time", "end_time", "start_date", "end_date", "min_kwh", "max_kwh", "min_power", "max_power",
        "min_duration", "max_duration", "day_of_week",
    }
)  # fmt: skip


def check_version(version: str) -> None:
    if version not in VERSIONS:
        raise ValueError(f"OCPI version {version!r} is not one of {VERSIONS}")


# --- in ------------------------------------------------------------------------------------------------------


def price_limit(value: Any) -> Any:
    """2.3.0 PriceLimit {before_taxes, after_taxes?} as a 2.2.1 Price {excl_vat, incl_vat?}; a 2.2.1-shaped
    Price, or anything else, passes through (the normalizer judges it)."""
    if not isinstance(value, dict) or "excl_vat" in value or "before_taxes" not in value:
        return value
    out = {"excl_vat": value["before_taxes"]}
    if value.get("after_taxes") is not None:
        out["incl_vat"] = value["after_taxes"]
    return out


def upgrade_tariff(raw: Any, version: str, ctx: Context | None = None) -> Any:
    """A Tariff as a partner speaking `version` sent it (PUT body, pulled page entry, CDR.tariffs[]), in the
    shape ocpi.normalize.normalize_tariff takes. A 2.3.0 tariff without `tax_included` (card. 1, yet the
    spec's own cdr_example omits it) prices as 2.2.1 does: before taxes, i.e. NO."""
    check_version(version)
    if version == "2.2.1" or not isinstance(raw, dict):
        return raw
    out = dict(raw)
    if version == "2.3.0":
        for key in ("min_price", "max_price"):
            if key in out:
                out[key] = price_limit(out[key])
        return out
    country_code, party_id = (ctx or Context()).owner
    if country_code and party_id:
        out.setdefault("country_code", country_code)
        out.setdefault("party_id", party_id)
    if "energy_mix" in out:
        out["energy_mix"] = _energy_mix(out["energy_mix"])
    return out


# --- out -----------------------------------------------------------------------------------------------------


def downgrade_tariff(obj: dict[str, Any], version: str) -> dict[str, Any]:
    """One of our stored tariffs as a partner speaking `version` reads it (the GET of our Tariffs receiver)."""
    check_version(version)
    if version == "2.2.1":
        return without(obj, *EXTRA_FIELDS)
    if version == "2.3.0":
        out = dict(obj)
        for key in ("min_price", "max_price"):
            if isinstance(out.get(key), dict):
                limit = {"before_taxes": out[key]["excl_vat"]}
                if out[key].get("incl_vat") is not None:
                    limit["after_taxes"] = out[key]["incl_vat"]
                out[key] = limit
        # A 2.1.1/2.2.1 tariff's prices are excl. VAT, which is what NO says.
        out.setdefault("tax_included", "NO")
        return out
    out = {k: obj[k] for k in _V211_FIELDS if k in obj}
    if "elements" in out:
        out["elements"] = [e for e in (_v211_element(e) for e in out["elements"]) if e is not None]
    if isinstance(out.get("energy_mix"), dict) and "environ_impact" in out["energy_mix"]:
        mix = out["energy_mix"]
        out["energy_mix"] = {**mix, "environ_impact": each(mix["environ_impact"], _v211_impact)}
    return out


def _v211_impact(impact: dict[str, Any]) -> dict[str, Any]:
    return renamed(impact, {"category": "source"})


def _v211_element(element: dict[str, Any]) -> dict[str, Any] | None:
    """2.1.1 TariffElement: components without `vat`. Restrictions 2.1.1 can't state (reservation, current)
    would have a 2.1.1 reader apply the element where it doesn't apply: such elements are left out."""
    restrictions = element.get("restrictions") or {}
    if any(value is not None and key not in _V211_RESTRICTIONS for key, value in restrictions.items()):
        return None
    out: dict[str, Any] = {"price_components": [without(c, "vat") for c in element.get("price_components") or []]}
    if restrictions:
        out["restrictions"] = restrictions
    return out


def _upgrade_v211(obj: dict[str, Any], ctx: Context | None = None) -> Any:
    return upgrade_tariff(obj, "2.1.1", ctx)


def _upgrade_v230(obj: dict[str, Any], ctx: Context | None = None) -> Any:
    return upgrade_tariff(obj, "2.3.0", ctx)


# For ocpi.versions' registries (kind "tariff"), per version.
UPGRADES = {"2.1.1": {"tariff": _upgrade_v211}, "2.3.0": {"tariff": _upgrade_v230}}
DOWNGRADES = {
    "2.1.1": {"tariff": lambda obj: downgrade_tariff(obj, "2.1.1")},
    "2.3.0": {"tariff": lambda obj: downgrade_tariff(obj, "2.3.0")},
}
