"""OCPI DateTime fields (types.asciidoc §16.2) read into issues and Rejected; parsing and formatting are the
leaf ``emsp.datetimes``."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from typing import Any

from emsp.datetimes import NOT_RFC3339, OFFSET, DateTimeError, format_datetime, parse_datetime, parse_text
from ocpi.normalize.issues import Ctx, Issue, Rejected, json_path

# Strict out: "2026-11-25T10:00:00Z", or "...:00.123Z" when the milliseconds are non-zero. Sub-millisecond
# digits are truncated (never rounded into the future); string(25) has no room for more. A naive datetime is
# taken as UTC, like a received DateTime without designator.
format_ocpi_datetime = format_datetime

# Lenient in (the leaf's parse_text): no designator = UTC (types.asciidoc: "absence of the timezone designator
# implies a UTC timestamp"); a space separator, 7+ fraction digits and a lower-case "z" are read silently;
# "+00:00 is not the same as UTC" (types.asciidoc), so any explicit offset, even zero, is a deviation; a bare
# date and (parse_datetime with epoch) epoch numbers from non-OCPI back ends are read as UTC, also reported.
_DT_MESSAGES = {
    OFFSET: "DateTime with a UTC offset converted to UTC 'Z'",
    NOT_RFC3339: "non-RFC 3339 DateTime (date only or epoch number) read as UTC",
}


# Plausible, not just parseable: nothing we hold happened before 2010 (before OCPI) or lies past 2100, and
# what already happened (a session's start, a CDR's end, any last_updated) is not in the future beyond the
# clock skew we allow a partner (OCPI_MAX_CLOCK_SKEW_SECONDS, set at start-up by OcpiConfig.ready()). A stamp
# from year 9999 would otherwise freeze an object against every later, correct update.
EARLIEST_EVENT = datetime(2010, 1, 1, tzinfo=UTC)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
future_skew = timedelta(minutes=5)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def implausible(moment: datetime, *, event: bool) -> str | None:
    """Why a date-time can't be true (None when it can). `event`: something that has already happened."""
    if moment >= LATEST:
        return f"{format_datetime(moment)} is in the future, past 2099"
    if moment < (EARLIEST_EVENT if event else EARLIEST):
        return f"{format_datetime(moment)} is before {(EARLIEST_EVENT if event else EARLIEST).year}"
    if event and moment > _utcnow() + future_skew:
        return f"{format_datetime(moment)} is in the future"
    return None


@functools.lru_cache(maxsize=16384)
def _read_text(text: str) -> tuple[datetime, str, str | None]:
    """parse_text with the canonical text alongside: feeds repeat their stamps, so both are computed once."""
    dt, deviation = parse_text(text)
    return dt, format_datetime(dt), deviation


def _read(value: object, path: str) -> tuple[datetime, str, str | None]:
    """(aware UTC datetime, canonical text, deviation code or None) of a DateTime; raises Rejected."""
    try:
        if isinstance(value, str):
            return _read_text(value)
        dt, deviation = parse_datetime(value, epoch=True)
    except DateTimeError:
        shown = value[:40] if isinstance(value, str) else value
        raise Rejected(path, f"not a DateTime: {shown!r}", code="invalid_datetime") from None
    return dt, format_datetime(dt), deviation


def parse_ocpi_datetime(value: object, path: str, *, issues: list[Issue] | None = None) -> datetime:
    """Aware UTC datetime from an OCPI DateTime; offsets are converted (and reported into ``issues``)."""
    dt, _text, code = _read(value, path)
    if code is not None and issues is not None:
        issues.append(Issue(path, code, _DT_MESSAGES[code], True))
    return dt


def read_datetime(value: object, path: str, ctx: Ctx, *, event: bool = False) -> tuple[datetime, str]:
    """(aware UTC datetime, canonical OCPI text) of a DateTime field, deviations reported; raises Rejected,
    also for an implausible one (`event`: a moment that has already happened)."""
    dt, text, code = _read(value, path)
    why = implausible(dt, event=event)
    if why is not None:
        raise Rejected(path, why, code="implausible_datetime")
    if code is not None:
        ctx.fix(path, code, _DT_MESSAGES[code])
    return dt, text


class Unstamped(dict[str, Any]):
    """A PATCH body whose version lets it come without ``last_updated`` (OCPI 2.1.1; 2.2 made it required),
    marked so by its version mapping (ocpi/versions/v211.py). Its normalizer lets it through without one, and
    the store reads a PATCH without one as the CPO's newest word: applied over whatever we hold, the stored
    stamp kept (emsp/services/catalogue.py, sessions.py). Only the CPO's clock orders its objects: ours, put on
    such a PATCH, had lost the CPO's later PUT when its clock was behind ours, and its PATCHes when ahead.
    A type, not a field: nothing parsed from a request body is one, so a 2.2.1 PATCH without it is refused."""


def read_last_updated(
    raw: dict[str, Any],
    prefix: str,
    ctx: Ctx,
    fallback: datetime | None,
    *,
    partial: bool,
    fallback_source: str = "its parent/children",
    clamp_future: bool = False,
) -> tuple[datetime, str] | None:
    """``last_updated`` of a full object, or of a PATCH body (``partial``: required, garbage raises).

    Decision: a full object is not rejected for a missing or unreadable ``last_updated`` (the official tariff
    PUT example has none). The stamp then comes from ``fallback`` (parent/children: mod_locations keeps the
    newest child stamp on the parent) or the receive time, with an issue. PATCHes are rejected, because there
    the stamp orders partial updates (ocpi/ocpi#355 -> OCPI 2001), and so is an object stamped in the future,
    unless ``clamp_future`` (locations, EVSEs, connectors): it is then stamped with the receive time.
    Returns None for a PATCH without it.
    """
    path = json_path(prefix, "last_updated")
    value = raw.get("last_updated")
    code = "missing_last_updated"
    if value is not None:
        try:
            return read_datetime(value, path, ctx, event=True)
        except Rejected as exc:
            # A stamp in the future would freeze the object against every later, correct update, so it is never
            # kept: a child takes its parent's stamp, a location (EVSE, connector) the receive time, which every
            # later update passes; a CPO clock an hour ahead (or local time sent as UTC) had lost whole
            # locations. Other objects carrying one are refused. One before 2010 is a placeholder (.NET's
            # 0001-01-01 in real feeds): read as missing.
            future = exc.code == "implausible_datetime" and "future" in exc.reason
            if partial or (future and not prefix and not clamp_future):
                raise ctx.reject(path, exc.reason, exc.code) from None
            reason = exc.reason
            if exc.code == "implausible_datetime":
                code = "implausible_last_updated"
            if future and not prefix:
                fallback = None
    elif partial:
        return None
    else:
        reason = "missing"
    dt = fallback or _utcnow()
    source = f"taken from {fallback_source}" if fallback else "set to the receive time"
    ctx.fix(path, code, f"last_updated {reason}; {source}")
    return dt, format_datetime(dt)
