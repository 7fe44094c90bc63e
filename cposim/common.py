"""Small shared helpers: OCPI DateTime formatting/parsing, JSON, token encoding, time zones.

Nothing here may import from the eMSP apps; the simulator is a separate peer.
"""

from __future__ import annotations

import base64
import binascii
import copy
import secrets
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

import orjson

_log_lock = threading.Lock()


def utcnow() -> datetime:
    """Current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(dt: datetime, *, ms: bool = False) -> str:
    """Format an aware datetime as an OCPI DateTime (UTC, `Z`), optionally with milliseconds."""
    dt = dt.astimezone(UTC)
    if ms:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_dt(value: str) -> datetime:
    """Parse an OCPI DateTime (`Z`, no designator, or an offset) into an aware UTC datetime."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1]
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def dumps(obj: Any) -> bytes:
    """Serialise to JSON bytes."""
    return orjson.dumps(obj)


def loads(raw: bytes | str) -> Any:
    """Parse JSON bytes/str."""
    return orjson.loads(raw)


def clone(obj: Any) -> Any:
    """Deep copy of a JSON-like structure."""
    return copy.deepcopy(obj)


def new_token() -> str:
    """A fresh credentials token: printable ASCII, no whitespace, well under 64 characters."""
    return secrets.token_urlsafe(24)


def encode_token(token: str, encoding: str) -> str:
    """Value of the Authorization header for `token` (`base64` per OCPI 2.2.1, or `raw`)."""
    if encoding == "raw":
        return f"Token {token}"
    return "Token " + base64.b64encode(token.encode("utf-8")).decode("ascii")


def token_candidates(header: str | None) -> list[str]:
    """Possible plain tokens in an Authorization header: the Base64-decoded value and the raw value."""
    if not header:
        return []
    parts = header.strip().split(None, 1)
    if len(parts) != 2 or parts[0].lower() != "token":
        return []
    raw = parts[1].strip()
    out = []
    try:
        decoded = base64.b64decode(raw, validate=True).decode("utf-8").strip()
        if decoded and all(33 <= ord(c) <= 126 for c in decoded):
            out.append(decoded)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    out.append(raw)
    return out


_IST = timezone(timedelta(hours=5, minutes=30), "IST")


def get_tz(name: str | None) -> tzinfo:
    """IANA zone by name; without tzdata: fixed IST for Indian zones, else UTC."""
    if not name:
        return UTC
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    except Exception:
        if "Kolkata" in name or "Calcutta" in name:
            return _IST
        return UTC


def log(msg: str) -> None:
    """One line to stderr (thread-safe)."""
    with _log_lock:
        sys.stderr.write(f"{iso(utcnow(), ms=True)} cposim {msg}\n")
        sys.stderr.flush()


def ci(value: Any) -> str:
    """Case-insensitive key for a CiString."""
    return str(value).upper()


def display_text(text: str, language: str = "en") -> list[dict[str, str]]:
    """A DisplayText list with one entry."""
    return [{"language": language, "text": text}]
