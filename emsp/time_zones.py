"""IANA time zone names as partners and staff write them: one reading for the OCPI normaliser and the console."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


def _is_zone(name: str) -> bool:
    if not name or name.startswith(("/", ".")) or ".." in name or "\x00" in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@functools.cache
def _zones_by_lower() -> dict[str, str]:
    return {z.lower(): z for z in available_timezones()}


@functools.lru_cache(maxsize=1024)
def iana_zone(name: str) -> str | None:
    """The valid IANA name for what was written ("Asia/Kuala Lumpur" -> "Asia/Kuala_Lumpur", "europe/berlin" ->
    "Europe/Berlin"), else None."""
    s = name.strip()
    if _is_zone(s):
        return s
    candidate = s.replace(" ", "_")
    if _is_zone(candidate):
        return candidate
    return _zones_by_lower().get(candidate.lower())
