"""The printable checks every OCPI request runs on its URL ids, token and request ids (str methods since the EVSE
PATCH's profile) accept exactly the characters the spec allows: U+0020–U+007E, no space in a token or an id
header."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emsp.middleware import request_ids
from ocpi.transport import is_printable_text, is_printable_token

# Every code point near the ASCII range, some far beyond it and the surrogates' neighbours.
TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FFF, exclude_categories=("Cs",)), max_size=40)


@given(TEXT)
def test_printable_text_is_u0020_to_u007e(value: str) -> None:
    assert is_printable_text(value) == all(32 <= ord(c) <= 126 for c in value)


@given(TEXT)
def test_a_token_is_printable_without_whitespace(value: str) -> None:
    assert is_printable_token(value) == all(33 <= ord(c) <= 126 for c in value)


@given(TEXT)
def test_a_request_id_is_echoed_only_when_printable_without_whitespace(value: str) -> None:
    request_id, _ = request_ids({"X-Request-ID": value})
    kept = value.strip()[:100]
    usable = bool(kept) and all(33 <= ord(c) <= 126 for c in kept)
    assert (request_id == kept) == usable
