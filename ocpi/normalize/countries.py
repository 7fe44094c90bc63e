"""Countries (ISO 3166), currencies (ISO 4217) and the party (country_code, party_id) of OCPI objects."""

from __future__ import annotations

import functools
from typing import Any

from ocpi import enums
from ocpi.normalize.issues import Ctx, json_path


@functools.cache
def _country_tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(alpha-3 -> alpha-2, alpha-2 -> alpha-3, casefolded name -> alpha-3)."""
    import pycountry  # imported lazily: only needed when a partner sends something other than alpha-3

    alpha3 = {c.alpha_3: c.alpha_2 for c in pycountry.countries}
    alpha2 = {c.alpha_2: c.alpha_3 for c in pycountry.countries}
    names: dict[str, str] = {}
    for c in pycountry.countries:
        for attr in ("name", "official_name", "common_name"):
            n = getattr(c, attr, None)
            if n:
                names[n.casefold()] = c.alpha_3
    for n, a3 in enums.COUNTRY_NAME_SYNONYMS.items():
        names[n.casefold()] = a3
    return alpha3, alpha2, names


@functools.lru_cache(maxsize=1024)
def country_alpha3(value: str) -> tuple[str | None, str | None]:
    """(ISO 3166-1 alpha-3 or None, issue code or None) for an alpha-3, alpha-2 or country name."""
    s = value.strip()
    alpha3, alpha2, names = _country_tables()
    up = s.upper()
    if s in alpha3:
        return s, None
    if up in alpha3:
        return up, "enum_case"
    if len(s) == 2 and up in alpha2:
        return alpha2[up], "country_alpha2"
    hit = names.get(s.casefold())
    if hit:
        return hit, "country_name"
    return None, None


def country_alpha2(value: str) -> str | None:
    """ISO alpha-2 for an alpha-2 or alpha-3 code (country_code is alpha-2; "gbr" is a real mistake)."""
    s = value.strip().upper()
    alpha3, alpha2, _names = _country_tables()
    if len(s) == 2 and s in alpha2:
        return s
    return alpha3.get(s)


@functools.cache
def _currencies() -> frozenset[str]:
    import pycountry

    return frozenset(c.alpha_3 for c in pycountry.currencies)


def read_currency(value: object, path: str, ctx: Ctx) -> str | None:
    """ISO 4217 alpha-3, upper-case; symbols like "€"/"₹" mapped; unknown -> None."""
    if not isinstance(value, str):
        return None
    s = value.strip().upper()
    s = enums.CURRENCY_SYNONYMS.get(s, s)
    if s not in _currencies():
        return None
    if s != value:
        ctx.fix(path, "enum_case", f"currency {value!r} normalised to {s!r}")
    return s


def read_party(
    raw: dict[str, Any], out: dict[str, Any], prefix: str, ctx: Ctx, cc: str | None, pid: str | None
) -> None:
    """Read country_code / party_id into ``out`` as upper-cased codes; when missing, from the partner's roles.

    Decision: these are code values (ISO 3166 alpha-2 + party code), not object ids, so unlike ids they
    are upper-cased (BitzArt OCPI.Net#19: lower-case country codes get rejected downstream).
    """
    path = json_path(prefix, "country_code")
    value = raw.get("country_code")
    code = value.strip() if isinstance(value, str) else None
    if code:
        a2 = country_alpha2(code)
        if a2 is None:
            if len(code) != 2 or not code.isalpha():
                raise ctx.reject(path, f"country_code {value!r} is not an ISO 3166 country", "invalid_country_code")
            a2 = code.upper()
        if a2 != value:
            # Tariff lint vectors (ocpi-tariffs "misspelled_field") send alpha-3 "gbr" where alpha-2 is due.
            code = "country_code_alpha3" if len(code) == 3 else "enum_case"
            ctx.fix(path, code, f"country_code {value!r} normalised to {a2!r}")
        out["country_code"] = a2
    elif cc:
        out["country_code"] = cc.strip().upper()
        ctx.fix(path, "missing_country_code", "country_code missing; taken from the partner's credentials")
    else:
        raise ctx.reject(path, "country_code missing and no partner country_code known", "missing_country_code")

    path = json_path(prefix, "party_id")
    value = raw.get("party_id")
    p = value.strip() if isinstance(value, str) else None
    if p and not (len(p) <= 3 and p.isascii() and p.isalnum()):
        raise ctx.reject(path, f"party_id {value[:20]!r} is not a CiString(3) party id", "invalid_party_id")
    if p:
        if p.upper() != value:
            ctx.fix(path, "enum_case", f"party_id {value!r} normalised to {p.upper()!r}")
        out["party_id"] = p.upper()
    elif pid:
        out["party_id"] = pid.strip().upper()
        ctx.fix(path, "missing_party_id", "party_id missing; taken from the partner's credentials")
    else:
        raise ctx.reject(path, "party_id missing and no partner party_id known", "missing_party_id")
