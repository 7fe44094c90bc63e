"""The simulator's own, simple OCPI 2.2.1 tariff pricing (what the CPO bills in its Sessions and CDRs).

Per dimension the first TariffElement with a matching component and matching restrictions is used
(evaluated at each charging period's start, in the Location's local time); FLAT once per session;
step_size rounding on session totals ([bf] semantics); VAT per component (omitted = no VAT);
min_price/max_price on the totals. Money is returned exact; callers round for display.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

from .common import parse_dt

DIMENSIONS = ("ENERGY", "TIME", "PARKING_TIME")
WEEKDAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
CENT = Decimal("0.01")


def D(value: Any) -> Decimal:
    """Decimal from a JSON number without binary float noise."""
    return Decimal(str(value))


@dataclass
class Context:
    """What restrictions are evaluated against at the start of a charging period."""

    local: datetime
    kwh_so_far: float
    seconds_so_far: float
    power_kw: float | None = None
    current_a: float | None = None


@dataclass
class Amount:
    """A cost excl./incl. VAT."""

    excl: Decimal = Decimal(0)
    incl: Decimal = Decimal(0)

    def add(self, excl: Decimal, vat: Any) -> None:
        """Add a component cost with its VAT percentage (None = no VAT applicable)."""
        self.excl += excl
        self.incl += excl if vat is None else excl * (1 + D(vat) / 100)

    def price(self, factor: Decimal = Decimal(1)) -> dict[str, float]:
        """OCPI Price object, rounded to 2 decimals (half-up), optionally scaled."""
        return {
            "excl_vat": float((self.excl * factor).quantize(CENT, ROUND_HALF_UP)),
            "incl_vat": float((self.incl * factor).quantize(CENT, ROUND_HALF_UP)),
        }


@dataclass
class PriceResult:
    """Priced session: sub-totals per dimension, total, and the volumes priced."""

    fixed: Amount = field(default_factory=Amount)
    energy: Amount = field(default_factory=Amount)
    time: Amount = field(default_factory=Amount)
    parking: Amount = field(default_factory=Amount)
    total: Amount = field(default_factory=Amount)
    energy_kwh: float = 0.0
    time_h: float = 0.0
    parking_h: float = 0.0
    signatures: list[tuple] = field(default_factory=list)


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def restrictions_match(r: dict[str, Any] | None, ctx: Context) -> bool:
    """True when every restriction present holds for `ctx` (unknown measured values are not restricting)."""
    if not r:
        return True
    if r.get("reservation"):
        return False  # reservation elements never apply to a charging session
    tod = ctx.local.hour * 60 + ctx.local.minute + ctx.local.second / 60
    start = _minutes(r["start_time"]) if r.get("start_time") else None
    end = _minutes(r["end_time"]) if r.get("end_time") else None
    if end == 0:
        end = 24 * 60
    if start is not None and end is not None:
        inside = start <= tod < end if start < end else (tod >= start or tod < end)
        if not inside:
            return False
    elif (start is not None and tod < start) or (end is not None and tod >= end):
        return False
    day = ctx.local.date().isoformat()
    if r.get("start_date") and day < r["start_date"]:
        return False
    if r.get("end_date") and day >= r["end_date"]:
        return False
    if r.get("day_of_week") and WEEKDAYS[ctx.local.weekday()] not in [d.upper() for d in r["day_of_week"]]:
        return False
    checks = (
        ("min_kwh", ctx.kwh_so_far, True),
        ("max_kwh", ctx.kwh_so_far, False),
        ("min_duration", ctx.seconds_so_far, True),
        ("max_duration", ctx.seconds_so_far, False),
        ("min_power", ctx.power_kw, True),
        ("max_power", ctx.power_kw, False),
        ("min_current", ctx.current_a, True),
        ("max_current", ctx.current_a, False),
    )
    for key, value, is_min in checks:
        if r.get(key) is None or value is None:
            continue
        if is_min and value < float(r[key]):
            return False
        if not is_min and value >= float(r[key]):
            return False
    return True


def find_component(tariff: dict[str, Any], dim: str, ctx: Context) -> tuple[int, dict[str, Any]] | None:
    """First (element index, component) for `dim` whose element restrictions match."""
    for idx, element in enumerate(tariff.get("elements") or []):
        for comp in element.get("price_components") or []:
            if str(comp.get("type", "")).upper() == dim and restrictions_match(element.get("restrictions"), ctx):
                return idx, comp
    return None


def volumes(period: dict[str, Any]) -> dict[str, float]:
    """Dimension volumes of a charging period keyed by upper-case type."""
    out: dict[str, float] = {}
    for d in period.get("dimensions") or []:
        out[str(d["type"]).upper()] = out.get(str(d["type"]).upper(), 0.0) + float(d["volume"])
    return out


def contexts(periods: list[dict[str, Any]], session_start: datetime, tz: tzinfo) -> list[Context]:
    """Restriction context at the start of each period (energy and duration accumulated before it)."""
    out = []
    kwh = 0.0
    for p in periods:
        start = parse_dt(p["start_date_time"])
        vol = volumes(p)
        power = None
        if vol.get("ENERGY") and vol.get("TIME"):
            power = vol["ENERGY"] / vol["TIME"]
        out.append(
            Context(
                local=start.astimezone(tz),
                kwh_so_far=kwh,
                seconds_so_far=max(0.0, (start - session_start).total_seconds()),
                power_kw=power,
                current_a=vol.get("MAX_CURRENT") or vol.get("CURRENT"),
            )
        )
        kwh += vol.get("ENERGY", 0.0)
    return out


def signature(tariff: dict[str, Any], period: dict[str, Any], ctx: Context) -> tuple:
    """What determines a period's price: the element used per dimension present (for merging periods)."""
    vol = volumes(period)
    sig: list[tuple[str, int]] = []
    for dim in DIMENSIONS:
        if dim in vol:
            hit = find_component(tariff, dim, ctx)
            sig.append((dim, -1 if hit is None else hit[0]))
    return (period.get("tariff_id"), tuple(sig))


def price_session(
    tariff: dict[str, Any] | None,
    periods: list[dict[str, Any]],
    session_start: datetime,
    tz: tzinfo,
    *,
    include_flat: bool = True,
) -> PriceResult:
    """Price a list of charging periods with one tariff."""
    res = PriceResult()
    ctxs = contexts(periods, session_start, tz)
    last_comp: dict[str, tuple[dict[str, Any], Amount]] = {}
    totals = {dim: Decimal(0) for dim in DIMENSIONS}
    for period, ctx in zip(periods, ctxs, strict=True):
        vol = volumes(period)
        res.energy_kwh += vol.get("ENERGY", 0.0)
        res.time_h += vol.get("TIME", 0.0)
        res.parking_h += vol.get("PARKING_TIME", 0.0)
        if tariff is None:
            continue
        res.signatures.append(signature(tariff, period, ctx))
        for dim, bucket in (("ENERGY", res.energy), ("TIME", res.time), ("PARKING_TIME", res.parking)):
            if dim not in vol:
                continue
            totals[dim] += D(vol[dim])
            hit = find_component(tariff, dim, ctx)
            if hit is None:
                continue
            comp = hit[1]
            bucket.add(D(comp["price"]) * D(vol[dim]), comp.get("vat"))
            last_comp[dim] = (comp, bucket)
    if tariff is None:
        return res
    _apply_step_sizes(totals, last_comp)
    if include_flat:
        first = ctxs[0] if ctxs else Context(local=session_start.astimezone(tz), kwh_so_far=0.0, seconds_so_far=0.0)
        hit = find_component(tariff, "FLAT", first)
        if hit is not None:
            res.fixed.add(D(hit[1]["price"]), hit[1].get("vat"))
    for part in (res.fixed, res.energy, res.time, res.parking):
        res.total.excl += part.excl
        res.total.incl += part.incl
    _apply_min_max(tariff, res.total)
    return res


def _apply_step_sizes(totals: dict[str, Decimal], last: dict[str, tuple[dict[str, Any], Amount]]) -> None:
    """Round session totals up to the last component's step_size (ENERGY in Wh; TIME/PARKING in s)."""

    def bump(dim: str, unit: Decimal) -> None:
        comp, bucket = last[dim]
        # step_size 1 still bills whole Wh / whole seconds ("amounts less than the step_size are rounded up",
        # mod_tariffs PriceComponent); 0 is read as 1.
        step = max(1, int(comp.get("step_size") or 0))
        units = totals[dim] * unit
        rounded = (units / step).to_integral_value(ROUND_CEILING) * step
        extra = (rounded - units) / unit
        if extra > 0:
            bucket.add(D(comp["price"]) * extra, comp.get("vat"))

    if "ENERGY" in last:
        bump("ENERGY", Decimal(1000))
    if "PARKING_TIME" in last:
        bump("PARKING_TIME", Decimal(3600))
    elif "TIME" in last:
        bump("TIME", Decimal(3600))


def _apply_min_max(tariff: dict[str, Any], total: Amount) -> None:
    lo, hi = tariff.get("min_price"), tariff.get("max_price")
    if lo:
        total.excl = max(total.excl, D(lo["excl_vat"]))
        if lo.get("incl_vat") is not None:
            total.incl = max(total.incl, D(lo["incl_vat"]))
    if hi:
        total.excl = min(total.excl, D(hi["excl_vat"]))
        if hi.get("incl_vat") is not None:
            total.incl = min(total.incl, D(hi["incl_vat"]))


def time_boundaries(tariff: dict[str, Any] | None, t0: datetime, t1: datetime, tz: tzinfo) -> list[datetime]:
    """Instants in (t0, t1) where a time-of-day/day-of-week restriction of the tariff may switch elements."""
    if not tariff:
        return []
    marks: set[int] = set()
    for element in tariff.get("elements") or []:
        r = element.get("restrictions") or {}
        for key in ("start_time", "end_time"):
            if r.get(key):
                marks.add(_minutes(r[key]) % (24 * 60))
        if r.get("day_of_week") or r.get("start_date") or r.get("end_date"):
            marks.add(0)
    if not marks:
        return []
    out = []
    local0 = t0.astimezone(tz)
    day = local0.replace(hour=0, minute=0, second=0, microsecond=0)
    while day.astimezone(t0.tzinfo) < t1:
        for m in sorted(marks):
            instant = (day + timedelta(minutes=m)).astimezone(t0.tzinfo)
            if t0 < instant < t1:
                out.append(instant)
        day = day + timedelta(days=1)
    return sorted(set(out))


def merge_periods(
    tariff: dict[str, Any] | None, periods: list[dict[str, Any]], session_start: datetime, tz: tzinfo
) -> list[dict[str, Any]]:
    """Merge consecutive charging periods that are priced identically (for a compact CDR)."""
    if not periods:
        return []
    ctxs = contexts(periods, session_start, tz)
    merged: list[dict[str, Any]] = []
    last_sig = None
    for period, ctx in zip(periods, ctxs, strict=True):
        sig = signature(tariff, period, ctx) if tariff else (period.get("tariff_id"), ())
        dims = volumes(period)
        if merged and sig == last_sig and set(dims) == set(volumes(merged[-1])):
            current = {d["type"]: d for d in merged[-1]["dimensions"]}
            for dim, vol in dims.items():
                current[dim]["volume"] = round(current[dim]["volume"] + vol, 6)
        else:
            merged.append(
                {
                    "start_date_time": period["start_date_time"],
                    "dimensions": [{"type": k, "volume": round(v, 6)} for k, v in dims.items()],
                    **({"tariff_id": period["tariff_id"]} if period.get("tariff_id") else {}),
                }
            )
        last_sig = sig
    return merged
