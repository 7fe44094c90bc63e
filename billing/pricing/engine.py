"""Pricing core: split periods where restrictions change, pick elements per dimension, then apply
step_size, VAT and min/max price."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, tzinfo
from decimal import (
    ROUND_HALF_EVEN,
    Decimal,
    localcontext,
)
from typing import Any

from .errors import CdrError
from .periods import (
    A_US,
    B_US,
    CURRENT,
    ENERGY_KWH,
    MAX_CURRENT,
    MAX_POWER,
    MIN_CURRENT,
    MIN_POWER,
    PARKING_US,
    POWER,
    RESERVATION_US,
    TARIFF_ID,
    TIME_US,
    Record,
)
from .result import (
    CONTEXT,
    IN_OCPI_UNITS,
    RESERVATION_FLAT,
    RESERVATION_TIME,
    PriceResult,
    _Line,
)
from .tariff import (
    DAY_US,
    ENERGY,
    EPOCH,
    FLAT,
    PARKING_TIME,
    TAX_NO,
    TAX_YES,
    TIME,
    US_PER_HOUR,
    ZERO,
    Price,
    PriceComponent,
    Restrictions,
    Tariff,
    TariffElement,
    td_us,
    to_us,
)

__all__ = ["price_core"]

_WH_PER_KWH = Decimal(1000)
_ONE = Decimal(1)
_WEEK_US = 7 * DAY_US
_ENERGY_QUANTUM = Decimal("1e-9")  # kWh, i.e. micro-Wh
_WHOLE = (ZERO, _ONE)
_NO_PIECES: list[tuple[int, int, int]] = []
# The work of pricing is about (sub-periods) x (elements tried in each): a 30-day CDR under a tariff of 4,000
# one-minute windows took 31 s and gave a 15 MB breakdown. Beyond this budget the session is not priced (an error
# naming the periods: an audit then goes to staff, a quote says no price is known); real tariffs stay far below it.
SEGMENT_BUDGET = 4_000_000
MAX_SEGMENTS = 200_000
Candidates = tuple[tuple[TariffElement, PriceComponent], ...]


# --------------------------------------------------------------------------- restriction matching


def _matches(r: Restrictions, ctx: list[Any], element: TariffElement, warnings: set[str]) -> bool:
    """All restrictions of an element hold at this moment (mod_tariffs TariffRestrictions: logical AND)."""
    if r.tariff_key is not None and r.tariff_key != ctx[8]:
        return False  # merged tariffs (tariff.merge_tariffs): the period names another tariff
    if r.needs_local:
        sod = ctx[0]
        start, end = r.start_us, r.end_us
        if start is not None and end is not None:
            if start < end:
                if not start <= sod < end:
                    return False
            elif start > end and end <= sod < start:  # window past midnight, e.g. 22:00-06:00
                return False
            # start == end: a whole-day window
        elif start is not None:
            if sod < start:
                return False
        elif end is not None and sod >= end:
            # A lone end_time: valid from the start of the day (ocpi/ocpi#502 leaves this open).
            return False
        day = ctx[1]
        if r.start_day is not None and day < r.start_day:
            return False
        if r.end_day is not None and day >= r.end_day:  # end_date is exclusive
            return False
        if r.weekdays is not None and (day + 3) % 7 not in r.weekdays:  # 1970-01-01 was a Thursday
            return False
    # Session-so-far values: min inclusive, max exclusive (mod_tariffs min/max_kwh, min/max_duration).
    if r.has_session_limits:
        if r.min_kwh is not None and ctx[3] < r.min_kwh:
            return False
        if r.max_kwh is not None and ctx[3] >= r.max_kwh:
            return False
        if r.min_duration_us is not None and ctx[2] < r.min_duration_us:
            return False
        if r.max_duration_us is not None and ctx[2] >= r.max_duration_us:
            return False
    # Instantaneous values of the (sub-)period. Unknown means "cannot be shown to hold": the element
    # is not applied and a warning says so, rather than pricing on a guess.
    if r.has_instant_limits:
        bound = r.min_power
        if bound is not None and (ctx[5] is None or ctx[5] < bound):
            return _unknown(ctx[5], element, "min_power", warnings)
        bound = r.max_power
        if bound is not None and (ctx[4] is None or ctx[4] >= bound):
            return _unknown(ctx[4], element, "max_power", warnings)
        bound = r.min_current
        if bound is not None and (ctx[7] is None or ctx[7] < bound):
            return _unknown(ctx[7], element, "min_current", warnings)
        bound = r.max_current
        if bound is not None and (ctx[6] is None or ctx[6] >= bound):
            return _unknown(ctx[6], element, "max_current", warnings)
    return True


def _unknown(value: Decimal | None, element: TariffElement, name: str, warnings: set[str]) -> bool:
    """A failed instantaneous restriction; when the value was unknown, say so (always False)."""
    if value is None:
        warnings.add(f"unverifiable_restriction:elements[{element.index}].restrictions.{name}")
    return False


def _bill(
    lines: list[_Line],
    category: str,
    cands: Candidates,
    ctx: list[Any],
    warnings: set[str],
    volume: Decimal,
    segment: int,
) -> bool:
    """Bill `volume` with the component of the first element (in list order) whose restrictions match
    (mod_tariffs Tariff object: per dimension); False when none does."""
    for element, component in cands:
        r = element.restrictions
        if r is None or _matches(r, ctx, element, warnings):
            lines.append(_Line(category, element.index, component, volume, segment))
            return True
    return False


# --------------------------------------------------------------------------- time zones


# Per zone: UTC day number -> the offset if it holds all that day, or None on a transition day.
# Shared by all calls (a zone's rules don't change while the process runs); bounded.
_DAY_OFFSETS: dict[tzinfo, dict[int, int | None]] = {}
_DAY_CACHE_LIMIT = 50_000


def _raw_offset(zone: tzinfo, us: int) -> int:
    offset = (EPOCH + timedelta(microseconds=us)).astimezone(zone).utcoffset()
    return 0 if offset is None else td_us(offset)


class _Offsets:
    """UTC offsets of a zone at instants, with DST transitions located by bisection."""

    __slots__ = ("days", "zone")

    def __init__(self, zone: tzinfo | None) -> None:
        self.zone = zone
        if zone is not None:
            days = _DAY_OFFSETS.get(zone)
            if days is None or len(days) > _DAY_CACHE_LIMIT:
                days = _DAY_OFFSETS[zone] = {}
            self.days = days

    def at(self, us: int) -> int:
        zone = self.zone
        if zone is None:
            return 0
        day = us // DAY_US
        days = self.days
        if day in days:
            offset = days[day]
        else:
            # No zone switches twice within one UTC day, so equal offsets at both ends of the
            # day mean the offset holds throughout it.
            first = _raw_offset(zone, day * DAY_US)
            offset = first if first == _raw_offset(zone, day * DAY_US + DAY_US - 1) else None
            days[day] = offset
        return _raw_offset(zone, us) if offset is None else offset

    def pieces(self, a: int, b: int) -> list[tuple[int, int, int]]:
        """[a, b) cut into stretches of constant offset: (start, end, offset)."""
        first = self.at(a)
        if self.zone is None or b - a <= 1:
            return [(a, b, first)]
        last = self.at(b - 1)
        if first == last and b - a <= _WEEK_US:
            return [(a, b, first)]
        # Sample weekly (zones like Africa/Casablanca switch twice within about a month) and bisect.
        samples = [*range(a, b - 1, _WEEK_US), b - 1]
        cuts: list[int] = []
        for lo, hi in itertools.pairwise(samples):
            o_lo = self.at(lo)
            if self.at(hi) == o_lo:
                continue
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self.at(mid) == o_lo:
                    lo = mid
                else:
                    hi = mid
            cuts.append(hi)
        bounds = [a, *cuts, b]
        return [(p, q, self.at(p)) for p, q in itertools.pairwise(bounds)]


# --------------------------------------------------------------------------- core


def price_core(
    tariff: Tariff,
    periods: list[Record],
    *,
    zone: tzinfo | None,
    time_zone: str,
    session_start: datetime,
    session_end: datetime | None,
    warnings: list[str],
    rounding: str | None = None,
    missing_vat: str = "unknown",
) -> PriceResult:
    """Price engine records with one tariff (the entry point of every public pricing function)."""
    if not tariff.valid_at(session_start):
        warnings.append("tariff_not_valid_at_session_start")
    with localcontext(CONTEXT):
        return _price(tariff, periods, zone, time_zone, session_start, session_end, warnings, rounding, missing_vat)


def _price(
    tariff: Tariff,
    periods: list[Record],
    zone: tzinfo | None,
    time_zone: str,
    session_start: datetime,
    session_end: datetime | None,
    warnings: list[str],
    rounding: str | None,
    missing_vat: str,
) -> PriceResult:
    soft: set[str] = set()
    offsets = _Offsets(zone)
    ss = to_us(session_start)
    needs_local = tariff.needs_local
    boundaries = tariff.local_boundaries
    durations = tariff.duration_thresholds_us
    kwhs = tariff.kwh_thresholds
    charging = tariff.charging
    uses_power, uses_current = tariff.uses_power, tariff.uses_current
    c_energy, c_time, c_parking, c_flat = (
        charging[ENERGY],
        charging[TIME],
        charging[PARKING_TIME],
        charging[FLAT],
    )

    # A reservation-only period belongs to the reservation, not the charging session. When nothing
    # but reservation time exists, the reservation expired (ReservationRestrictionType).
    def is_reservation_only(r: Record) -> bool:
        return bool(r[RESERVATION_US]) and not (r[ENERGY_KWH] or r[TIME_US] or r[PARKING_US])

    has_charging = any(not is_reservation_only(p) for p in periods)
    reservation = tariff.reserved if has_charging else tariff.expired
    r_time, r_flat = reservation[TIME], reservation[FLAT]

    lines: list[_Line] = []
    segments: list[tuple[int, int]] = []
    max_segments = min(MAX_SEGMENTS, SEGMENT_BUDGET // max(len(tariff.elements), 1))
    flat_done = False
    r_flat_done = False
    cum_energy = ZERO
    total_energy = ZERO
    total_parking_us = 0
    total_reservation_us = 0
    end_us = ss
    first_us: int | None = None

    for period in periods:
        a = period[A_US]
        t_us = period[TIME_US]
        p_us = period[PARKING_US]
        r_us = period[RESERVATION_US]
        energy = period[ENERGY_KWH]
        b = period[B_US]
        if b is None:
            b = a + max(t_us + p_us, r_us)
        if b < a:
            b = a
        if first_us is None:
            first_us = a
        end_us = max(end_us, b)
        total_energy += energy
        total_parking_us += p_us
        total_reservation_us += r_us
        span = b - a
        reservation_only = is_reservation_only(period)
        named = period[TARIFF_ID]
        tariff_key = named.casefold() if named else None

        # ---- where must this period be split? (mod_tariffs TariffRestrictions: elements switch mid-session)
        times: list[int] = []  # instants where a time-of-day, date, DST or duration boundary falls
        pieces = offsets.pieces(a, b) if needs_local else _NO_PIECES
        if span > 0:
            if needs_local:
                for p, q, off in pieces:
                    if p != a:
                        times.append(p)  # DST transition
                    lp, lq = p + off, q + off
                    for day in range(lp // DAY_US, (lq - 1) // DAY_US + 1):
                        base = day * DAY_US
                        for sod in boundaries:
                            c = base + sod
                            if lp < c < lq:
                                times.append(c - off)
            for d in durations:
                c = ss + d
                if a < c < b:
                    times.append(c)
        cuts: list[tuple[Decimal, int]] | None = None
        if times:
            dspan = Decimal(span)
            cuts = [(Decimal(c - a) / dspan, c) for c in times]
        if kwhs and energy > 0:
            top = cum_energy + energy
            for k in kwhs:
                if cum_energy < k < top:
                    f = (k - cum_energy) / energy
                    if cuts is None:
                        cuts = []
                    cuts.append((f, a + int(span * f)))

        if cuts:
            cuts.sort()
            fractions = [ZERO]
            instants = [a]
            for f, c in cuts:
                if ZERO < f < _ONE and f != fractions[-1]:
                    fractions.append(f)
                    instants.append(c)
            fractions.append(_ONE)
            instants.append(b)
        else:
            fractions = _WHOLE
            instants = [a, b]

        # Instantaneous values for power/current restrictions (mod_tariffs: "NOT the minimum
        # power over the entire Charging Session"): the period's own MAX_/MIN_ values, else its
        # average POWER/CURRENT, else for power the energy divided by the charging time.
        if uses_power:
            p_max = _first(period[MAX_POWER], period[POWER], period[MIN_POWER])
            p_min = _first(period[MIN_POWER], period[POWER], period[MAX_POWER])
            if p_max is None:
                if energy:
                    hours = Decimal(t_us or span) / US_PER_HOUR
                    p_max = p_min = energy / hours if hours else None
                else:
                    p_max = p_min = ZERO
        else:
            p_max = p_min = None
        if uses_current:
            c_max = _first(period[MAX_CURRENT], period[CURRENT], period[MIN_CURRENT])
            c_min = _first(period[MIN_CURRENT], period[CURRENT], period[MAX_CURRENT])
        else:
            c_max = c_min = None

        # Volumes are split in proportion to wall-clock time (the CDR says nothing finer). Cumulative
        # amounts are rounded to whole microseconds / micro-Wh so the pieces add up exactly to the
        # period's volume - a 1e-30 excess would otherwise cost a whole extra step_size block.
        n = len(fractions) - 1
        if n == 1:
            e_cum = [ZERO, energy]
            t_cum = [0, t_us]
            p_cum = [0, p_us]
            r_cum = [0, r_us]
        else:
            inner = fractions[1:-1]
            e_cum = [ZERO, *((energy * f).quantize(_ENERGY_QUANTUM) for f in inner), energy]
            t_cum = [0, *(_scale(t_us, f) for f in inner), t_us]
            p_cum = [0, *(_scale(p_us, f) for f in inner), p_us]
            r_cum = [0, *(_scale(r_us, f) for f in inner), r_us]

        if len(segments) + n > max_segments:
            raise CdrError(
                "charging_periods",
                f"more than {max_segments} sub-periods to price with {len(tariff.elements)} tariff elements",
            )
        piece_index = 0
        for i in range(n):
            start = instants[i]
            seg_index = len(segments)
            segments.append((start, instants[i + 1]))
            if needs_local:
                while piece_index + 1 < len(pieces) and pieces[piece_index + 1][0] <= start:
                    piece_index += 1
                local = start + pieces[piece_index][2]
                day = local // DAY_US
                sod = local - day * DAY_US
            else:
                day = sod = 0
            e_before = cum_energy + e_cum[i]
            ctx = [sod, day, start - ss, e_before, p_max, p_min, c_max, c_min, tariff_key]

            if not reservation_only:
                seg_energy = e_cum[i + 1] - e_cum[i]
                if seg_energy > 0 and c_energy:
                    _bill(lines, ENERGY, c_energy, ctx, soft, seg_energy, seg_index)
                seg_time = t_cum[i + 1] - t_cum[i]
                if seg_time and c_time:
                    _bill(lines, TIME, c_time, ctx, soft, Decimal(seg_time), seg_index)
                seg_parking = p_cum[i + 1] - p_cum[i]
                if seg_parking and c_parking:
                    _bill(lines, PARKING_TIME, c_parking, ctx, soft, Decimal(seg_parking), seg_index)
                # FLAT: once per charging session, the first time a FLAT element matches.
                if not flat_done and c_flat:
                    flat_done = _bill(lines, FLAT, c_flat, ctx, soft, _ONE, seg_index)
            seg_reserved = r_cum[i + 1] - r_cum[i]
            if seg_reserved:
                if r_time:
                    _bill(lines, RESERVATION_TIME, r_time, ctx, soft, Decimal(seg_reserved), seg_index)
                # Reservation FLAT: once per reservation. Billed in addition to a charging FLAT - the
                # spec's own tariff_16 example totals 8.75 = 2.00 reservation fee + 0.50 start fee +
                # 1.25 reservation time + 5.00 energy. "One component per dimension at a time" still
                # holds: reservation and charging elements are never active at the same moment.
                if not r_flat_done and r_flat:
                    r_flat_done = _bill(lines, RESERVATION_FLAT, r_flat, ctx, soft, _ONE, seg_index)
        cum_energy += energy

    _apply_step_sizes(lines)

    # ---- totals per dimension (exact), then min/max price on excl and incl independently
    exempt = missing_vat == "exempt"
    mode = tariff.tax_included
    sums: dict[str, list[Any]] = {}
    for line in lines:
        # Each line's cost, kept on the line for the result's breakdowns (line.billed() inlined: hot path).
        comp = line.component
        volume = line.volume if line.category in IN_OCPI_UNITS else line.volume / US_PER_HOUR
        stated = comp.price * volume
        factor = comp.vat_factor
        if mode is None or mode == TAX_NO:
            # 2.1.1, 2.2.1 and TaxIncluded NO: the price is before taxes, `vat` adds to it.
            excl = stated
            incl = stated * factor if factor is not None else (stated if exempt else None)
        elif mode == TAX_YES:
            # TaxIncluded YES: the price includes the taxes; `vat` says how much of it they are.
            incl = stated
            excl = stated / factor if factor is not None else (stated if exempt else None)
        else:  # TaxIncluded N/A: no taxes apply
            excl = incl = stated
        line.excl = excl
        line.incl = incl
        key = "RESERVATION" if line.category in (RESERVATION_FLAT, RESERVATION_TIME) else line.category
        acc = sums.get(key)
        if acc is None:
            sums[key] = [excl, incl]
        else:
            acc[0] = None if acc[0] is None or excl is None else acc[0] + excl
            acc[1] = None if acc[1] is None or incl is None else acc[1] + incl
    totals: dict[str, Price | None] = {k: None for k in (FLAT, ENERGY, TIME, PARKING_TIME, "RESERVATION")}
    excl_total: Decimal | None = ZERO
    incl_total: Decimal | None = ZERO
    for key, (excl, incl) in sums.items():
        totals[key] = Price(excl, incl)
        excl_total = None if excl_total is None or excl is None else excl_total + excl
        incl_total = None if incl_total is None or incl is None else incl_total + incl
    if incl_total is None and not exempt:
        # PriceComponent.vat: "If omitted, no VAT is applicable. Not providing a VAT is different
        # from 0% VAT" - so the amount incl. VAT is not derivable from the tariff (tag 2.2.1's
        # first-hour-free example: "As no VAT information is given, it is not possible to calculate
        # total costs including VAT").
        soft.add("vat_unknown:total_cost.incl_vat")
    if excl_total is None and not exempt:
        # 2.3.0 TaxIncluded YES without `vat`: the taxes inside the prices are not stated (North American
        # example: "All taxes that are due are included in that C$5.25 amount").
        soft.add("tax_rate_unknown:total_cost.excl_vat")
    min_applied = max_applied = False
    low, high = tariff.min_price, tariff.max_price
    priced_excl, priced_incl = excl_total, incl_total
    # The limit that set the total excl. VAT without stating its incl. VAT side (Price.incl_vat is optional).
    excl_only_limit = None
    if low is not None:
        if excl_total is not None and excl_total < low.excl_vat:
            excl_total, min_applied = low.excl_vat, True
            if low.incl_vat is None:
                excl_only_limit = "min_price"
        if incl_total is not None and low.incl_vat is not None and incl_total < low.incl_vat:
            incl_total, min_applied = low.incl_vat, True
    if high is not None:
        if excl_total is not None and excl_total > high.excl_vat:
            excl_total, max_applied = high.excl_vat, True
            if high.incl_vat is None:
                excl_only_limit = "max_price"
        if incl_total is not None and high.incl_vat is not None and incl_total > high.incl_vat:
            incl_total, max_applied = high.incl_vat, True
    if excl_only_limit is not None and priced_incl is not None:
        # mod_tariffs min_price/max_price bound excl. and incl. VAT each by its own side; a limit without incl_vat
        # bounds only the excl. side, yet the session's VAT follows its price: the incl. total moves by the same
        # ratio (0.50 excl. for a 0.30 + 10 % session is 0.55 incl., not the unlimited 0.33).
        assert priced_excl is not None and excl_total is not None  # the excl. side was limited, so it is known
        if priced_excl:
            incl_total = priced_incl * excl_total / priced_excl
        else:
            # A free session raised to min_price: at which rates its VAT falls is not derivable.
            incl_total = None
            soft.add(f"vat_unknown:{excl_only_limit}.incl_vat")
        if incl_total is not None and low is not None and low.incl_vat is not None:
            incl_total = max(incl_total, low.incl_vat)
        if incl_total is not None and high is not None and high.incl_vat is not None:
            incl_total = min(incl_total, high.incl_vat)

    start_us = min(ss, first_us) if first_us is not None else ss
    if session_end is not None:
        end_us = max(to_us(session_end), start_us)
    all_warnings = warnings
    if tariff.warnings or soft or len(warnings) > 1:
        all_warnings = list(dict.fromkeys([*tariff.warnings, *warnings, *sorted(soft)]))
    return PriceResult(
        currency=tariff.currency,
        tariff_id=tariff.id,
        tax_included=mode,
        time_zone=time_zone,
        totals=totals,
        total_cost=Price(excl_total, incl_total),
        total_energy=total_energy,
        total_time=Decimal(end_us - start_us) / US_PER_HOUR,
        total_parking_time=Decimal(total_parking_us) / US_PER_HOUR,
        total_reservation_time=Decimal(total_reservation_us) / US_PER_HOUR,
        min_price_applied=min_applied,
        max_price_applied=max_applied,
        warnings=all_warnings,
        lines=lines,
        segments=segments,
        rounding=rounding,
        missing_vat=missing_vat,
    )


def _scale(us: int, fraction: Decimal) -> int:
    return int((us * fraction).to_integral_value(ROUND_HALF_EVEN))


def _first(*values: Decimal | None) -> Decimal | None:
    for value in values:
        if value is not None:
            return value
    return None


def _apply_step_sizes(lines: list[_Line]) -> None:
    """step_size per mod_cdrs [bf]: once per session on totals, extra added to the last period.

    - ENERGY: total billed energy rounded up to the step of the last ENERGY component used.
    - TIME and PARKING_TIME together: when a PARKING_TIME component was used, the parking total is
      rounded with the last parking component's step and charging time is not rounded at all
      (tariff_14 example #1: 0.55, #3: 0.73 per ocpi/ocpi#546); otherwise the TIME total is rounded
      with the last TIME component's step (tariff_14 example #2: 35 -> 45 min).
    - Reservation TIME is its own quantity (tariff_16: 13 -> 15 min with the reservation step).
    Switching elements of one dimension never rounds in between (CDRtext: 4.3 + 1.1 -> 5.5 kWh).
    """
    last: dict[str, _Line] = {}
    totals: dict[str, Decimal] = {}
    for line in lines:
        category = line.category
        if category in (FLAT, RESERVATION_FLAT):
            continue
        last[category] = line
        totals[category] = totals.get(category, ZERO) + line.volume
    if not last:
        return
    targets = [ENERGY, RESERVATION_TIME, PARKING_TIME if PARKING_TIME in last else TIME]
    for category in targets:
        line = last.get(category)
        if line is None:
            continue
        total = totals[category]
        if total <= 0:
            continue
        if category == ENERGY:
            step = Decimal(line.component.step) / _WH_PER_KWH  # step multiplier: 1 Wh
        else:
            step = Decimal(line.component.step * 1_000_000)  # step multiplier: 1 second (in µs)
        remainder = total % step
        if remainder:
            extra = step - remainder
            line.volume += extra
            line.added = extra
