"""What the OCPI message log may keep: credentials tokens are never stored (anyone who can read the log
could otherwise act as us or as the partner)."""

from __future__ import annotations

import re

# "token": "<value>" anywhere in a credentials body (request or response, envelope or not).
_TOKEN = re.compile(rb'("token"\s*:\s*")([^"]*)(")')

# Bytes of a request or response body the message log keeps (both directions).
LOG_BODY_LIMIT = 8000


def log_body(body: bytes, module: str) -> str:
    if module == "credentials":
        body = _TOKEN.sub(lambda m: m.group(1) + b"[redacted]" + m.group(3), body)
    return storable(body[:LOG_BODY_LIMIT].decode("utf-8", "replace"))


def storable(text: str) -> str:
    """Text as a database column can hold it: PostgreSQL refuses NUL in text (a hostile body, URL or
    header must still leave its trace in the log)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text
