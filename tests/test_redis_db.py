"""The test runs' Redis databases (tests/redis_db.py): shifted, the rest of the URL kept, never wrapped."""

from __future__ import annotations

import pytest

from tests.redis_db import redis_database_shifted


@pytest.mark.parametrize(
    ("url", "by", "shifted"),
    [
        ("redis://127.0.0.1:6379/5", 8, "redis://127.0.0.1:6379/13"),
        ("redis://127.0.0.1:6379", 1, "redis://127.0.0.1:6379/1"),
        ("redis://h:1/2?socket_timeout=5", 1, "redis://h:1/3?socket_timeout=5"),
        ("rediss://user:secret@h:6380/0", 8, "rediss://user:secret@h:6380/8"),
        ("unix:///run/redis.sock?db=3", 2, "unix:///run/redis.sock?db=5"),
    ],
)
def test_the_database_moves_and_the_rest_stays(url: str, by: int, shifted: str) -> None:
    assert redis_database_shifted(url, by) == shifted


def test_past_the_last_database_it_refuses_instead_of_wrapping() -> None:
    with pytest.raises(ValueError, match="choose a lower database in REDIS_URL"):
        redis_database_shifted("redis://127.0.0.1:6379/11", 8)
