"""Case-insensitive keys (emsp/models/keys.py `ci_key`, on every OCPI request and ingested object) are what the
straightforward definition gives, for one part and several."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from emsp.models import ci_key


@given(st.lists(st.text(max_size=12), min_size=1, max_size=4))
def test_a_key_is_its_parts_stripped_upper_cased_and_starred(parts: list[str]) -> None:
    assert ci_key(*parts) == "*".join(p.strip().upper() for p in parts)
