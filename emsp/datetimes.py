"""Date-times on the wire, read and written in one place: RFC 3339 in UTC as OCPI 2.2.1 (types §16.2
DateTime) and Beckn core 1.1.0 (`context.timestamp`, `created_at`) use them. A leaf: no Django, nothing of
ours, so the domain, billing's pure tariff engine and both protocol adapters share it."""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, date, datetime, time
from typing import Literal

# How a value deviated from the canonical form (None: it did not). The OCPI normaliser reports these.
OFFSET = "datetime_offset"  # an explicit offset, even "+00:00" ("+00:00 is not the same as UTC", types §16.2)
NOT_RFC3339 = "datetime_format"  # a date without a time, or an epoch number

Precision = Literal["auto", "seconds", "millis", "micros"]

_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z?")
_LONG_FRACTION = re.compile(r"\.(\d{7,})")


class DateTimeError(ValueError):
    """Not a date-time we can read."""


def format_datetime(moment: datetime, precision: Precision = "auto") -> str:
    """UTC with a `Z`. `auto` (OCPI's string(25)): seconds, plus `.mmm` only when the milliseconds are not
    zero; `millis` always `.mmm` (Beckn timestamps); `micros` the microseconds when not zero. Digits beyond
    the precision are truncated, never rounded into the future. A naive datetime is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    head = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    if precision == "seconds":
        return f"{head}Z"
    if precision == "micros":
        return f"{head}.{moment.microsecond:06d}Z" if moment.microsecond else f"{head}Z"
    millis = moment.microsecond // 1000
    if precision == "millis" or millis:
        return f"{head}.{millis:03d}Z"
    return f"{head}Z"


@functools.lru_cache(maxsize=16384)
def parse_text(text: str) -> tuple[datetime, str | None]:
    """(aware UTC datetime, deviation or None) of an RFC 3339 text, leniently: no designator means UTC
    (types §16.2), a space for the `T`, a lower-case `z`, more than six fraction digits, an offset (converted,
    reported as OFFSET) and a bare date (midnight UTC, reported as NOT_RFC3339). Raises DateTimeError."""
    s = text.strip()
    if s[-1:] == "Z" and s[10:11] == "T":
        # The common case, "…T…Z", straight through (the repricing hot path: most stamps are unique).
        try:
            return datetime.fromisoformat(s), None
        except ValueError:
            pass
    try:
        if _CANONICAL.fullmatch(s):
            return datetime.fromisoformat(s).replace(tzinfo=UTC), None
        if len(s) == 10 and s[4:5] == "-":
            return datetime.combine(date.fromisoformat(s), time(), UTC), NOT_RFC3339
        if len(s) > 10 and s[10] in " t":  # RFC 3339 §5.6 allows a lower-case t; partners send a space
            s = s[:10] + "T" + s[11:]
        if s.endswith("z"):
            s = s[:-1] + "Z"
        fraction = _LONG_FRACTION.search(s)
        if fraction:
            s = s[: fraction.start(1)] + fraction.group(1)[:6] + s[fraction.end(1) :]
        moment = datetime.fromisoformat(s)
    except (ValueError, OverflowError):
        raise DateTimeError(f"not a date-time: {text[:40]!r}") from None
    if "T" not in s:
        raise DateTimeError(f"not a date-time: {text[:40]!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC), None
    if s.endswith("Z"):
        return moment.astimezone(UTC), None
    try:
        return moment.astimezone(UTC), OFFSET
    except OverflowError:  # "0001-01-01T00:00:00+01:00" has no UTC equivalent
        raise DateTimeError(f"not a date-time: {text[:40]!r}") from None


def parse_datetime(value: object, *, epoch: bool = False) -> tuple[datetime, str | None]:
    """(aware UTC datetime, deviation or None) of a text (parse_text), an aware or naive datetime, or with
    `epoch` an epoch number in seconds (milliseconds when implausibly large; some non-OCPI back ends)."""
    if isinstance(value, str):
        return parse_text(value)
    if isinstance(value, datetime):
        return (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)), None
    if epoch and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC), NOT_RFC3339
        except (ValueError, OverflowError, OSError):
            pass
    raise DateTimeError(f"not a date-time: {value!r}"[:80])


def parse_utc(value: object) -> datetime:
    """The aware UTC datetime of a value parse_datetime reads (its deviation dropped)."""
    return parse_datetime(value)[0]
