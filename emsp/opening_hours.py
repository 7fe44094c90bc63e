"""Is a location open at a moment? OCPI 2.2.1 `Hours` (mod_locations §8.4.14) read leniently and evaluated in
the location's time zone. Pure: no Django, no ORM (the catalogue's search filters and its rendering share it).

Rules (mod_locations `Hours`, `RegularHours`, `ExceptionalPeriod`):
- `twentyfourseven` true: open, except in an exceptional closing;
- otherwise `regular_hours`: weekday 1 = Monday … 7 = Sunday, `period_begin`/`period_end` local "HH:MM"; an end
  at or before the begin runs past midnight into the next day ("22:00"–"06:00"; "24:00" is the end of the day);
- `exceptional_openings` (UTC) are open in addition to the regular hours; `exceptional_closings` (UTC) overrule
  both ("Overwriting regular_hours and exceptional_openings");
- no usable hours: unknown (None) — OCPI does not say a location without `opening_times` is closed, and most
  CPOs leave it out for sites that are always accessible.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from emsp.datetimes import DateTimeError, parse_utc

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
DAY = 24 * 60
_HHMM = re.compile(r"^\s*(\d{1,2}):(\d{2})(?::\d{2})?\s*$")
_TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class Period:
    """One regular opening: minutes after local midnight of `weekday`; `end` > DAY runs into the next day."""

    weekday: int
    begin: int
    end: int

    @property
    def label(self) -> str:
        return f"{_hhmm(self.begin)}-{_hhmm(self.end - DAY if self.end > DAY else self.end)}"


@dataclass(frozen=True)
class Hours:
    """`twentyfourseven`: True, False (regular hours rule) or None (nothing usable stated)."""

    twentyfourseven: bool | None
    regular: tuple[Period, ...]
    openings: tuple[tuple[datetime, datetime], ...]
    closings: tuple[tuple[datetime, datetime], ...]
    zone: ZoneInfo

    @property
    def known(self) -> bool:
        return self.twentyfourseven is not None or bool(self.openings or self.closings)


def zone_of(name: Any) -> ZoneInfo:
    """The IANA zone, forgiving "Asia/Kuala Lumpur"; UTC when unusable (the normaliser already repaired what it
    could on ingest)."""
    if isinstance(name, str) and name.strip() and ".." not in name and not name.startswith(("/", ".")):
        for candidate in (name.strip(), name.strip().replace(" ", "_")):
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                continue
    return ZoneInfo("UTC")


def _minutes(value: Any, *, end: bool) -> int | None:
    match = _HHMM.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    if hours == 24 and minutes == 0:
        return DAY if end else 0
    if hours > 23 or minutes > 59:
        return None
    return hours * 60 + minutes


def _hhmm(minutes: int) -> str:
    return "24:00" if minutes == DAY else f"{minutes // 60:02d}:{minutes % 60:02d}"


def _weekday(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and float(value).is_integer():
        day = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        day = int(value.strip())
    else:
        return None
    return day if 1 <= day <= 7 else None


def _periods(value: Any) -> tuple[tuple[datetime, datetime], ...]:
    out = []
    for item in value if isinstance(value, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            begin = parse_utc(str(item.get("period_begin")))
            end = parse_utc(str(item.get("period_end")))
        except (DateTimeError, ValueError, IndexError):
            continue
        if begin < end:
            out.append((begin, end))
    return tuple(out)


def read_hours(value: Any, time_zone: Any) -> Hours:
    """OCPI `opening_times` as stored (normally normalised, but never trusted): unusable parts are skipped."""
    zone = zone_of(time_zone)
    if not isinstance(value, dict):
        return Hours(None, (), (), (), zone)
    regular = []
    for item in value.get("regular_hours") if isinstance(value.get("regular_hours"), list) else []:
        if not isinstance(item, dict):
            continue
        weekday = _weekday(item.get("weekday"))
        begin = _minutes(item.get("period_begin"), end=False)
        end = _minutes(item.get("period_end"), end=True)
        if weekday is None or begin is None or end is None:
            continue
        regular.append(Period(weekday, begin, end if end > begin else end + DAY))
    flag = value.get("twentyfourseven")
    if isinstance(flag, str):
        flag = flag.strip().lower() in _TRUE
    twentyfourseven: bool | None
    if flag is True:
        twentyfourseven = True
    elif regular:
        twentyfourseven = False
    else:
        twentyfourseven = None  # not 24/7 and no usable regular hours: nothing we can rely on
    return Hours(
        twentyfourseven,
        tuple(sorted(regular, key=lambda p: (p.weekday, p.begin))),
        _periods(value.get("exceptional_openings")),
        _periods(value.get("exceptional_closings")),
        zone,
    )


def _in(periods: tuple[tuple[datetime, datetime], ...], moment: datetime) -> bool:
    return any(begin <= moment < end for begin, end in periods)


def _regular_open(hours: Hours, local: datetime) -> bool:
    minute = local.hour * 60 + local.minute
    today = local.isoweekday()
    yesterday = 7 if today == 1 else today - 1
    for period in hours.regular:
        if period.weekday == today and period.begin <= minute < period.end:
            return True
        if period.weekday == yesterday and period.end > DAY and minute < period.end - DAY:
            return True
    return False


def is_open(hours: Hours, moment: datetime) -> bool | None:
    """Open at `moment` (aware); None when the hours say nothing usable."""
    moment = moment.astimezone(UTC)
    if _in(hours.closings, moment):
        return False
    if _in(hours.openings, moment):
        return True
    if hours.twentyfourseven is None:
        return None
    if hours.twentyfourseven:
        return True
    return _regular_open(hours, moment.astimezone(hours.zone))


def _local(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    return datetime.combine(day + timedelta(days=minutes // DAY), time(0), tzinfo=zone) + timedelta(
        minutes=minutes % DAY
    )


@lru_cache(maxsize=4096)
def _transitions(zone: ZoneInfo, first: date, days: int) -> tuple[datetime, ...]:
    """The instants (UTC, to the second) within `days` from `first` (UTC midnight) at which the zone's offset
    changes: read at every day's start, each change found by bisection. None in most zones and weeks, so one
    reading a day; kept by zone and day, as every search renders the next change of each site it lists."""
    found: list[datetime] = []
    low = int(datetime.combine(first, time(0), tzinfo=UTC).timestamp())
    end = low + days * 86_400
    offset = datetime.fromtimestamp(low, UTC).astimezone(zone).utcoffset()
    while low < end:
        high = low + 86_400
        if datetime.fromtimestamp(high, UTC).astimezone(zone).utcoffset() != offset:
            left, right = low, high
            while right - left > 1:  # the second the offset changes
                middle = (left + right) // 2
                if datetime.fromtimestamp(middle, UTC).astimezone(zone).utcoffset() == offset:
                    left = middle
                else:
                    right = middle
            found.append(datetime.fromtimestamp(right, UTC))
            offset = datetime.fromtimestamp(right, UTC).astimezone(zone).utcoffset()
            high = right
        low = high
    return tuple(found)


def next_change(hours: Hours, moment: datetime, *, horizon: timedelta = timedelta(days=8)) -> datetime | None:
    """When `is_open` next changes after `moment` (within `horizon`), as an aware UTC datetime; None if never
    (24/7 without exceptions) or unknown. Day by day: the regular hours usually settle it within two days."""
    state = is_open(hours, moment)
    if state is None:
        return None
    moment = moment.astimezone(UTC)
    limit = moment + horizon
    pending = {b for period in hours.openings + hours.closings for b in period if moment < b <= limit}
    # Where the clocks change within the horizon, a wall time may be skipped (the change happens when they jump)
    # or come twice (the state changes again at its second reading and when they go back): both readings of
    # every boundary and the changes' own instants are candidates then; `first_change` keeps the real ones.
    changes = _transitions(hours.zone, moment.date() - timedelta(days=2), horizon.days + 5)
    pending.update(c for c in changes if moment < c <= limit)

    def first_change(candidates: set[datetime]) -> datetime | None:
        for candidate in sorted(candidates):
            if is_open(hours, candidate) != state:
                return candidate
        return None

    if hours.twentyfourseven is False:
        first = moment.astimezone(hours.zone).date() - timedelta(days=1)
        for offset in range(horizon.days + 3):
            day = first + timedelta(days=offset)
            for period in hours.regular:
                if period.weekday == day.isoweekday():
                    for minutes in (period.begin, period.end):
                        local = _local(day, minutes, hours.zone)
                        readings = (local, local.replace(fold=1)) if changes else (local,)
                        for reading in readings:
                            candidate = reading.astimezone(UTC)
                            if moment < candidate <= limit:
                                pending.add(candidate)
            # Boundaries of this day and later ones all fall at or after its start: those before it are complete.
            settled = {c for c in pending if c < _local(day, 0, hours.zone)}
            found = first_change(settled)
            if found is not None:
                return found
            pending -= settled
    return first_change(pending)


def day_periods(hours: Hours, weekday: int) -> list[str]:
    """The regular periods starting on an ISO weekday, "HH:MM-HH:MM" (local)."""
    return [p.label for p in hours.regular if p.weekday == weekday]


def week_summary(hours: Hours) -> str:
    """ "Mon 08:00-20:00; Tue …; Sun closed" from the regular hours ("" when 24/7 or unknown)."""
    if hours.twentyfourseven is not False:
        return ""
    days = []
    for weekday in range(1, 8):
        periods = day_periods(hours, weekday)
        days.append(f"{WEEKDAYS[weekday - 1]} {', '.join(periods) if periods else 'closed'}")
    return "; ".join(days)


def upcoming(periods: tuple[tuple[datetime, datetime], ...], moment: datetime) -> list[tuple[datetime, datetime]]:
    """The exceptional periods not yet over at `moment`, soonest first."""
    return sorted(p for p in periods if p[1] > moment)
