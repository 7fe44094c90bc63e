"""A row inserted unless its unique key is taken, in one statement: no SELECT first, no savepoint around it."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connection
from django.db.models import Model


def insert_if_absent(obj: Model, unique_fields: Sequence[str]) -> bool:
    """INSERT … ON CONFLICT (unique_fields) DO NOTHING RETURNING pk (PostgreSQL, SQLite ≥ 3.35). True and `obj`
    saved (its pk set) when the row was new; False, `obj` untouched, when a row with that key exists (one being
    written concurrently is waited for, as a unique index does). Fields' defaults, `auto_now` and their own
    preparation (encryption included) apply as in `save()`. Where `get_or_create` inside a transaction costs a
    SELECT, a SAVEPOINT, the INSERT and a RELEASE, this is one round trip when the row is usually new."""
    meta = obj._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key or getattr(obj, f.attname) is not None]
    values = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({', '.join(quote(meta.get_field(name).column) for name in unique_fields)}) DO NOTHING "
        f"RETURNING {quote(meta.pk.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = connection.alias
    return True
