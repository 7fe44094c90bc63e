"""Bookkeeping that need not wait for the disk: PostgreSQL's asynchronous commit for one statement's transaction.

A statement alone in its transaction (autocommit) ending in `RETURNING set_config('synchronous_commit', 'off',
true)` commits without waiting for its WAL to reach the disk; the setting ends with that transaction. A killed
Django process loses nothing it has committed (an OCPI request's log row is written after its answer is sent:
killed in between, that row is lost); a PostgreSQL crash may lose the last ~0.6 s of such commits
(3 × wal_writer_delay). Use it only where that loss repeats work rather than losing it: a log row, an outbox
claim or settlement (the row is sent again: at-least-once). Inside a transaction the statement commits with it,
as that transaction does, so nothing is added there; elsewhere than PostgreSQL neither.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import QuerySet
from django.db.models.sql import UpdateQuery

ASYNC_COMMIT = " RETURNING set_config('synchronous_commit', 'off', true)"


def async_commit_suffix() -> str:
    """What to append to a statement (one without RETURNING of its own) for an asynchronous commit."""
    return ASYNC_COMMIT if connection.vendor == "postgresql" and connection.get_autocommit() else ""


def update_sql(queryset: QuerySet[Any], values: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """The UPDATE that `queryset.update(**values)` would run, as SQL and parameters (F() expressions included)."""
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    return query.get_compiler(queryset.db).as_sql()


def update_committing_async(queryset: QuerySet[Any], values: dict[str, Any]) -> int:
    """`queryset.update(**values)`, committed asynchronously when alone in its transaction. Returns the row count."""
    suffix = async_commit_suffix()
    if not suffix:
        return queryset.update(**values)
    sql, params = update_sql(queryset, values)
    with connection.cursor() as cursor:
        cursor.execute(sql + suffix, params)
        return cursor.rowcount
