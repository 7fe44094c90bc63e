"""What the OCPI message log may keep: credentials tokens are never stored (anyone who can read the log
could otherwise act as us or as the partner)."""

from __future__ import annotations

import re

from emsp.text import storable

# "token": "<value>" anywhere in a credentials body (request or response, envelope or not).
_TOKEN = re.compile(rb'("token"\s*:\s*")([^"]*)(")')

# Bytes of a request or response body the message log keeps (both directions).
LOG_BODY_LIMIT = 8000


def log_body(body: bytes, module: str) -> str:
    if module == "credentials":
        body = _TOKEN.sub(lambda m: m.group(1) + b"[redacted]" + m.group(3), body)
    return storable(body[:LOG_BODY_LIMIT].decode("utf-8", "replace"))


# A "token": "<value>" pair in text (the pattern above works on whole bodies in bytes): in JSON's
# double quotes or a Python repr's single ones, escapes inside the value skipped over, and also a value the text
# cuts off (an excerpt ends in the middle of it).
_TOKEN_IN_TEXT = re.compile(
    r"""(?P<head>(?P<q>["'])token(?P=q)\s*:\s*(?P<v>["']))(?:(?!(?P=v))[^\\]|\\.)*(?:(?P=v)|\\?$)""",
    re.IGNORECASE,
)


def redact_tokens(text: str) -> str:
    """`text` with the value of every "token" pair replaced, as log_body does to the message log's bodies:
    for the error texts and excerpts of credentials calls, which quote a reply (its token C) or a status."""
    return _TOKEN_IN_TEXT.sub(lambda m: m.group("head") + "[redacted]" + m.group("v"), text)
