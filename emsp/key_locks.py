"""Keys held until the transaction ends: PostgreSQL transaction advisory locks on the hash of each key, for rows
that don't exist yet and so can't be locked (a session, a driver's account, an app's rating about to be made).
Elsewhere nothing: SQLite's one writer serialises the transactions."""

from __future__ import annotations

from django.db import connection


def keys_locked(*keys: str) -> None:
    """Hold each key until the transaction ends, waiting for a transaction that holds one. Taken in sorted order,
    in one statement (its calls are evaluated left to right), so two transactions asking for overlapping keys
    queue rather than deadlock."""
    if not keys or connection.vendor != "postgresql":
        return
    ordered = sorted(set(keys))
    locks = ", ".join(["pg_advisory_xact_lock(hashtextextended(%s, 0))"] * len(ordered))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {locks}", ordered)
