"""Redis databases of the test runs: each run, and each pytest-xdist worker, on a database of its own."""

from __future__ import annotations


def redis_database_shifted(url: str, by: int) -> str:
    """A Redis URL naming the database `by` after the one `url` names (of Redis's 16)."""
    base, _, db = url.rpartition("/") if url.count("/") >= 3 else (url, "", "0")
    return f"{base}/{(int(db.split('?')[0] or 0) + by) % 16}"
