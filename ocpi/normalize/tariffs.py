"""Normalisation of OCPI 2.2.1 Tariffs (mod_tariffs §11.3): strict about anything that changes a price."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from typing import Any

from billing.pricing import TariffError, parse_tariff
from ocpi import enums
from ocpi.normalize.countries import read_currency, read_party
from ocpi.normalize.datetimes import read_datetime, read_last_updated
from ocpi.normalize.issues import Ctx, Issue, Rejected, collect, json_path
from ocpi.normalize.parts import energy_mix, hhmm
from ocpi.normalize.taxes import read_preauthorize_amount, read_tax_included
from ocpi.normalize.values import (
    canonical_fields,
    read_display_texts,
    read_enum,
    read_identifier,
    read_integer,
    read_number,
    read_price,
    read_text,
    snake_case,
    within,
)

TARIFF_FIELDS = frozenset(
    [
        "country_code",
        "party_id",
        "id",
        "currency",
        "type",
        "tariff_alt_text",
        "tariff_alt_url",
        "min_price",
        "max_price",
        "elements",
        "energy_mix",
        "start_date_time",
        "end_date_time",
        "last_updated",
        # OCPI 2.3.0, kept by our model (ocpi/normalize/taxes.py): billing.pricing reads tax_included.
        "tax_included",
        "preauthorize_amount",
    ]
)
ELEMENT_FIELDS = frozenset({"price_components", "restrictions"})
COMPONENT_FIELDS = frozenset({"type", "price", "vat", "step_size"})

# Plausible prices (in the tariff's currency, excl. VAT): per kWh, hour or session, and a session's bounds.
MAX_UNIT_PRICE = 10**6
MAX_TOTAL_PRICE = 10**8
# kWh, A, W, s: a restriction bound beyond this is no restriction a charger can meet (and int64-safe).
MAX_RESTRICTION = 10**12
MAX_STEP_SIZE = 10**6  # Wh or seconds: a MWh or 11 days per step
# Repricing costs about (sub-periods) x (elements), and every distinct start_time/end_time splits each day of a
# session: 4,000 one-minute windows made one CDR take 31 s (billing/pricing/engine.py SEGMENT_BUDGET). A day of
# five-minute prices (288 elements, 288 times of day) stays within both, and so does a week of quarter-hour
# prices (672 elements, one per day and quarter: 96 times of day), which dynamic-price CPOs publish.
MAX_ELEMENTS = 1_000
MAX_TIMES_OF_DAY = 288
RESTRICTION_FIELDS = frozenset(
    [
        "start_time",
        "end_time",
        "start_date",
        "end_date",
        "min_kwh",
        "max_kwh",
        "min_current",
        "max_current",
        "min_power",
        "max_power",
        "min_duration",
        "max_duration",
        "day_of_week",
        "reservation",
    ]
)
# TariffType, with "AD HOC" in any case and punctuation ("AD-HOC", "Ad_Hoc", "adhoc") read as AD_HOC_PAYMENT, the
# one ad hoc type there is (the table squashes what it is given: "AD-HOC-PAYMENT" and "Profile Green" read too).
_TARIFF_TYPE = enums.EnumTable(enums.TARIFF_TYPES, {"AD HOC": "AD_HOC_PAYMENT"})
_DATE = re.compile(r"(\d{4}-\d{2}-\d{2})(T.*)?")
# Restriction pairs whose window is [min, max) (mod_tariffs §11.4.6: start_date/min_* inclusive, end_date/max_*
# exclusive): a min at or above its max is a window no session ever falls in.
_WINDOW_PAIRS = (
    ("start_date", "end_date"),
    ("min_kwh", "max_kwh"),
    ("min_current", "max_current"),
    ("min_power", "max_power"),
    ("min_duration", "max_duration"),
)


def _component(raw: object, path: str, ctx: Ctx) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Rejected(path, "price component is not an object", code="invalid_price_component")
    raw = canonical_fields(raw, COMPONENT_FIELDS, "price_component", path, ctx)
    dim = read_enum(raw.get("type"), enums.TARIFF_DIMENSION_TYPE, json_path(path, "type"), ctx)
    if dim is None:
        raise Rejected(json_path(path, "type"), f"unknown dimension {raw.get('type')!r}", code="unknown_enum")
    amount = read_number(raw.get("price"), json_path(path, "price"), ctx)
    if amount is None:
        raise Rejected(json_path(path, "price"), f"price {raw.get('price')!r} is not a number", code="invalid_price")
    if not within(amount, 0, MAX_UNIT_PRICE):
        # A negative unit price would pay the driver to charge; an absurd one overflows every bill.
        raise Rejected(json_path(path, "price"), f"price {amount!r} is negative or absurd", code="implausible_value")
    out: dict[str, Any] = {"type": dim, "price": amount}
    if raw.get("vat") is not None:
        vat = read_number(raw["vat"], json_path(path, "vat"), ctx)
        if vat is None:
            # An absent vat means "no VAT applicable", not "unknown": dropping it would change the price.
            raise Rejected(json_path(path, "vat"), f"vat {raw['vat']!r} is not a number", code="invalid_price")
        if not within(vat, 0, 100):
            raise Rejected(json_path(path, "vat"), f"vat {vat!r} is not a percentage", code="implausible_value")
        out["vat"] = vat
    spath = json_path(path, "step_size")
    step = read_integer(raw.get("step_size"), spath, ctx)
    if step is None:
        if raw.get("step_size") is not None:
            raise Rejected(spath, f"step_size {raw['step_size']!r} is not an integer", code="invalid_step_size")
        step = 1
        ctx.fix(spath, "missing_step_size", "step_size missing; set to 1 ([bf] advises step_size 1)")
    elif step < 0:
        raise Rejected(spath, f"negative step_size {step}", code="invalid_step_size")
    elif step > MAX_STEP_SIZE:
        raise Rejected(spath, f"step_size {step} is beyond any billing unit", code="implausible_value")
    elif step == 0:
        # The spec's own tariff_5 example has FLAT step_size 0; billing per 0 units is meaningless, 1 is.
        step = 1
        ctx.fix(spath, "step_size_zero", "step_size 0 set to 1")
    out["step_size"] = step
    return out


def _restrictions(raw: object, path: str, ctx: Ctx) -> dict[str, Any] | None:
    """TariffRestrictions. Unknown or unusable restrictions reject the tariff: dropping one would widen (or
    narrow) where an element applies, i.e. silently change prices."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise Rejected(path, "restrictions is not an object", code="invalid_restriction")
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        target = key if key in RESTRICTION_FIELDS else snake_case(key)
        if target not in RESTRICTION_FIELDS:
            raise Rejected(json_path(path, key), f"unknown tariff restriction '{key}'", code="unknown_restriction")
        if target != key:
            if target in raw:
                continue
            ctx.once(
                "restrictions",
                key,
                json_path(path, key),
                "renamed_field",
                f"'{key}' read as '{target}'",
                fixed=True,
            )
        if value is not None:
            fields[target] = value
    out: dict[str, Any] = {}
    for key in ("start_time", "end_time"):
        if key in fields:
            t, changed = hhmm(fields[key])
            if t is None:
                raise Rejected(json_path(path, key), f"{key} {fields[key]!r} is not HH:MM", code="invalid_restriction")
            if changed:
                ctx.fix(json_path(path, key), "time_format", f"{key} {fields[key]!r} rendered as {t}")
            out[key] = t
    for key in ("start_date", "end_date"):
        if key in fields:
            m = _DATE.fullmatch(str(fields[key]).strip())
            if not m:
                raise Rejected(json_path(path, key), f"{key} {fields[key]!r} is not a date", code="invalid_restriction")
            if m.group(0) != fields[key]:
                ctx.fix(json_path(path, key), "date_format", f"{key} {fields[key]!r} reduced to {m.group(1)}")
            out[key] = m.group(1)
    for key in ("min_kwh", "max_kwh", "min_current", "max_current", "min_power", "max_power"):
        if key in fields:
            n = read_number(fields[key], json_path(path, key), ctx)
            if n is None:
                raise Rejected(
                    json_path(path, key), f"{key} {fields[key]!r} is not a number", code="invalid_restriction"
                )
            if not within(n, 0, MAX_RESTRICTION):
                raise Rejected(json_path(path, key), f"{key} {n!r} is negative or absurd", code="implausible_value")
            out[key] = n
    for key in ("min_duration", "max_duration"):
        if key in fields:
            n = read_integer(fields[key], json_path(path, key), ctx)
            if n is None:
                raise Rejected(
                    json_path(path, key), f"{key} {fields[key]!r} is not seconds", code="invalid_restriction"
                )
            if not within(n, 0, MAX_RESTRICTION):
                raise Rejected(json_path(path, key), f"{key} {n!r} is negative or absurd", code="implausible_value")
            out[key] = n
    if "day_of_week" in fields:
        days = fields["day_of_week"]
        dpath = json_path(path, "day_of_week")
        if isinstance(days, str):
            days = [days]
            ctx.fix(dpath, "type_coerced", "single day wrapped in a list")
        if not isinstance(days, list):
            raise Rejected(dpath, "day_of_week is not a list", code="invalid_restriction")
        out_days: list[str] = []
        for i, day in enumerate(days):
            canonical = read_enum(day, enums.DAY_OF_WEEK, f"{dpath}[{i}]", ctx)
            if canonical is None:
                raise Rejected(f"{dpath}[{i}]", f"unknown day {day!r}", code="invalid_restriction")
            if canonical not in out_days:
                out_days.append(canonical)
        out["day_of_week"] = out_days
    if "reservation" in fields:
        res = read_enum(fields["reservation"], enums.RESERVATION_RESTRICTION_TYPE, json_path(path, "reservation"), ctx)
        if res is None:
            raise Rejected(
                json_path(path, "reservation"), f"unknown {fields['reservation']!r}", code="invalid_restriction"
            )
        out["reservation"] = res
    return out or None


def _empty_window(restrictions: dict[str, Any]) -> tuple[str, str] | None:
    """The first (min, max) restriction pair whose min is at or above its max (an empty [min, max)), if any.
    Dates that are no calendar day ("2025-02-30") are left to the pricing engine, which refuses them: only a
    readable window counts as empty."""
    for low, high in _WINDOW_PAIRS:
        if low not in restrictions or high not in restrictions:
            continue
        if low == "start_date":
            try:
                lo, hi = date.fromisoformat(restrictions[low]), date.fromisoformat(restrictions[high])
            except ValueError:
                continue
            if lo >= hi:
                return low, high
        elif Decimal(str(restrictions[low])) >= Decimal(str(restrictions[high])):
            return low, high
    return None


def _elements(raw: object, path: str, ctx: Ctx) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise Rejected(path, "tariff without elements", code="missing_elements")
    if len(raw) > MAX_ELEMENTS:
        raise Rejected(path, f"{len(raw)} tariff elements; at most {MAX_ELEMENTS} are priced", code="too_many_elements")
    out = []
    for i, element in enumerate(raw):
        epath = f"{path}[{i}]"
        if not isinstance(element, dict):
            raise Rejected(epath, "tariff element is not an object", code="invalid_element")
        element = canonical_fields(element, ELEMENT_FIELDS, "tariff_element", epath, ctx)
        comps = element.get("price_components")
        if not isinstance(comps, list) or not comps:
            # Matches no dimension, so it can never price anything: dropping it changes no total.
            ctx.drop(epath, "empty_tariff_element", "tariff element without price_components dropped")
            continue
        entry: dict[str, Any] = {
            "price_components": [_component(c, f"{epath}.price_components[{j}]", ctx) for j, c in enumerate(comps)]
        }
        rpath = json_path(epath, "restrictions")
        restrictions = _restrictions(element.get("restrictions"), rpath, ctx)
        empty = _empty_window(restrictions) if restrictions else None
        if empty is not None:
            # mod_tariffs: the first element whose restrictions all match prices a period; this one never matches,
            # so dropping it changes no price (refusing the whole tariff left the connector unpriceable).
            low, high = empty
            ctx.drop(
                json_path(rpath, high),
                "empty_restriction_window",
                f"{low} {restrictions[low]!r} is beyond {high} {restrictions[high]!r}: never applies, dropped",
            )
            continue
        if restrictions:
            entry["restrictions"] = restrictions
        out.append(entry)
    if not out:
        raise Rejected(path, "tariff without usable elements", code="missing_elements")
    times = {r[key] for e in out if (r := e.get("restrictions")) for key in ("start_time", "end_time") if key in r}
    if len(times) > MAX_TIMES_OF_DAY:
        raise Rejected(
            path,
            f"{len(times)} distinct start_time/end_time values; at most {MAX_TIMES_OF_DAY} are priced",
            code="too_many_elements",
        )
    return out


def tariff(raw: object, prefix: str, ctx: Ctx, cc: str | None, pid: str | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Rejected(prefix, "tariff is not an object", code="invalid_tariff")
    raw = canonical_fields(raw, TARIFF_FIELDS, "tariff", prefix, ctx)
    get = raw.get
    out: dict[str, Any] = {}
    read_party(raw, out, prefix, ctx, cc, pid)
    tid = read_identifier(get("id"), json_path(prefix, "id"), ctx)
    if not tid:
        raise Rejected(json_path(prefix, "id"), "tariff without id", code="missing_tariff_id")
    out["id"] = tid
    cur = read_currency(get("currency"), json_path(prefix, "currency"), ctx)
    if cur is None:
        raise Rejected(
            json_path(prefix, "currency"), f"currency {get('currency')!r} is not ISO 4217", code="invalid_currency"
        )
    out["currency"] = cur
    if isinstance(get("type"), str) and not get("type").strip():
        # Blank: how many serialisers write no value; an untyped tariff, as an absent type is.
        ctx.drop(json_path(prefix, "type"), "unknown_enum", "type '' read as absent")
    elif get("type") is not None:
        ttype = read_enum(get("type"), _TARIFF_TYPE, json_path(prefix, "type"), ctx)
        if ttype is None:
            # Refused, as an unknown restriction is (`_restrictions`): dropped, an ad hoc or profile tariff read
            # as untyped, and an untyped tariff is the regular one we quote drivers (beckn/catalogue.py).
            shown = get("type")[:40] if isinstance(get("type"), str) else get("type")
            raise Rejected(json_path(prefix, "type"), f"tariff type {shown!r:.60} unknown", code="invalid_tariff_type")
        out["type"] = ttype
    if get("tariff_alt_text") is not None:
        alt = read_display_texts(get("tariff_alt_text"), json_path(prefix, "tariff_alt_text"), ctx)
        if alt:
            out["tariff_alt_text"] = alt
    url = read_text(get("tariff_alt_url"), json_path(prefix, "tariff_alt_url"), ctx, 255)
    if url:
        out["tariff_alt_url"] = url
    for key in ("min_price", "max_price"):
        if get(key) is not None:
            p = read_price(get(key), json_path(prefix, key), ctx)
            if p is None:
                raise Rejected(json_path(prefix, key), f"{key} {get(key)!r} is not a Price", code="invalid_price")
            for part, value in p.items():
                if not within(value, 0, MAX_TOTAL_PRICE):
                    raise Rejected(
                        json_path(prefix, f"{key}.{part}"),
                        f"{key} {value!r} is negative or absurd",
                        code="implausible_value",
                    )
            out[key] = p
    out["elements"] = _elements(get("elements"), json_path(prefix, "elements"), ctx)
    if get("tax_included") is not None:
        out["tax_included"] = read_tax_included(get("tax_included"), json_path(prefix, "tax_included"), ctx)
    if get("preauthorize_amount") is not None:
        amount = read_preauthorize_amount(get("preauthorize_amount"), json_path(prefix, "preauthorize_amount"), ctx)
        if amount is not None:
            out["preauthorize_amount"] = amount
    if get("energy_mix") is not None:
        mix = energy_mix(get("energy_mix"), json_path(prefix, "energy_mix"), ctx)
        if mix is not None:
            out["energy_mix"] = mix
    for key in ("start_date_time", "end_date_time"):
        if get(key) is not None:
            out[key] = read_datetime(get(key), json_path(prefix, key), ctx)[1]
    lu = read_last_updated(raw, prefix, ctx, None, partial=False)
    if lu is not None:
        out["last_updated"] = lu[1]
    return out


def normalize_tariff(
    raw: dict, *, country_code: str | None = None, party_id: str | None = None
) -> tuple[dict, list[Issue]]:
    """A full Tariff (PUT body, GET page entry, CDR.tariffs[]) -> (2.2.1-shaped dict, issues) or Rejected.

    Prices, VAT and restriction bounds stay the JSON numbers received (see ``values.read_number``).
    A tariff the pricing engine refuses ("2025-02-30", min_price above max_price, a currency without minor units
    such as XTS) is rejected here, with the engine's path: stored, it would be a connector that can't be quoted.
    An element whose restriction window is empty (an end_date before its start_date, min_kwh above max_kwh) can
    never apply, so it is dropped with a finding instead; the tariff is refused only when no element is left.
    """
    return collect(lambda ctx: _priceable(tariff(raw, "", ctx, country_code, party_id)))


def _priceable(clean: dict[str, Any]) -> dict[str, Any]:
    # Rejected, not dropped: every such field (a bound, a limit, the currency) changes where or what a price is.
    try:
        parse_tariff(clean)
    except TariffError as exc:
        raise Rejected(exc.path, f"the tariff can't be priced: {exc.message}", code="unpriceable_tariff") from None
    return clean
