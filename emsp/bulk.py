"""Fast bulk writes for the catalogue ingest: on PostgreSQL rows are binary-COPYed into a temporary table
and merged with one INSERT … ON CONFLICT … RETURNING; elsewhere (SQLite) Django's bulk_create does the job.

Rows are plain tuples in `columns` order (building model instances per row cost more than the database
work, bench/bench_ingest.py). JSON columns take Python dicts/lists.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connection, models, transaction
from psycopg.types.json import Jsonb, set_json_dumps


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


set_json_dumps(_dumps)

_COPY_TYPE_NAMES = {"timestamp with time zone": "timestamptz", "double precision": "float8"}


def relax_durability() -> None:
    """Inside a bulk-ingest transaction: don't wait for the WAL flush at commit. A crash can lose the last
    moments of a pull, never corrupt it, and pulls are the recovery path anyway (OCPI transport §Pull)."""
    if connection.vendor == "postgresql" and connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = off")


def _column_types(model: type[models.Model], columns: Sequence[str]) -> list[str]:
    return list(_types_of(model, tuple(columns), connection.vendor))


@functools.cache
def _types_of(model: type[models.Model], columns: tuple[str, ...], vendor: str) -> tuple[str, ...]:
    # Worked out once per model and columns: a location PUT's profile showed each field's db_type() asked again
    # on every upsert (a sixth of its CPU).
    fields = {f.column: f for f in model._meta.concrete_fields}
    return tuple(fields[c].db_type(connection) or "text" for c in columns)


def _copy_type(db_type: str) -> str:
    base = re.sub(r"\(.*\)", "", db_type).strip()
    return _COPY_TYPE_NAMES.get(base, base)


def upsert(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str],
    update: Sequence[str],
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert rows; on a conflict on `conflict` columns overwrite the `update` columns. Returns the
    `returning` columns of every written row (in no particular order).

    On PostgreSQL the rows are written in the order of their `conflict` key, whatever order they came in: each
    locks its row (or, new, its key in the unique index) until the commit, so two upserts of the same keys
    listed in other orders (two pulled pages, a page and a PUT) had each held a row the other waited for, a
    deadlock; in one order the second waits for the first."""
    if not rows:
        return []
    if connection.vendor != "postgresql":
        return _bulk_create(model, columns, rows, conflict=conflict, update=update, returning=returning)
    table = model._meta.db_table
    temp = f"tmp_{table}"
    types = _column_types(model, columns)
    # One transaction: the temporary table empties itself at commit.
    with transaction.atomic(), connection.cursor() as cursor:
        _empty_temp_table(cursor, temp, columns, types)
        _copy(cursor, temp, columns, types, rows)
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {temp} "  # noqa: S608 - names come from model metadata
            f"ORDER BY {', '.join(conflict)} ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {assignments}"
        )
        if returning:
            sql += f" RETURNING {', '.join(returning)}"
        cursor.execute(sql)
        return cursor.fetchall() if returning else []


def _empty_temp_table(cursor: Any, temp: str, columns: Sequence[str], types: list[str]) -> None:
    """The connection's temporary table `temp`, made on its first use, and empty: it empties itself at each
    commit, and the DELETE clears what an earlier upsert of the same transaction left. Both statements in one
    round trip. Timing the statements of a location PUT (bench/bench_ocpi_calls.py --kind location) showed a
    `TRUNCATE` here costing 330 µs (a new file for the table and a catalogue update, each time) and
    `CREATE TEMP TABLE IF NOT EXISTS` 100 µs on its own round trip, for each of its two tables."""
    definition = ", ".join(f"{c} {t}" for c, t in zip(columns, types, strict=True))
    sql = f"CREATE TEMP TABLE IF NOT EXISTS {temp} ({definition}) ON COMMIT DELETE ROWS; DELETE FROM {temp}"  # noqa: S608 - names from model metadata
    cursor.execute(sql)


def insert(model: type[models.Model], columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    """Plain insert of many rows (also the child rows of a multi-table model, which bulk_create refuses)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        if model._meta.parents:
            _executemany(model, columns, rows)
        else:
            _bulk_create(model, columns, rows)
        return
    with connection.cursor() as cursor:
        _copy(cursor, model._meta.db_table, columns, _column_types(model, columns), rows)


def _copy(cursor: Any, table: str, columns: Sequence[str], types: list[str], rows: Sequence[tuple[Any, ...]]) -> None:
    json_positions = [i for i, t in enumerate(types) if t == "jsonb"]
    raw = cursor.cursor  # psycopg's own cursor under Django's wrapper
    with raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([_copy_type(t) for t in types])
        for row in rows:
            if json_positions:
                values = list(row)
                for i in json_positions:
                    values[i] = Jsonb(values[i])
                copy.write_row(values)
            else:
                copy.write_row(row)


def _executemany(model: type[models.Model], columns: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> None:
    fields = {f.column: f for f in model._meta.concrete_fields}
    json_positions = [i for i, c in enumerate(columns) if isinstance(fields[c], models.JSONField)]
    sql = (
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "  # noqa: S608 - names from model metadata
        f"VALUES ({', '.join(['%s'] * len(columns))})"
    )
    values = []
    for row in rows:
        row_values = list(row)
        for i in json_positions:
            row_values[i] = orjson.dumps(row_values[i]).decode()
        values.append(row_values)
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)


def _bulk_create(
    model: type[models.Model],
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    by_column = {f.column: f.attname for f in model._meta.concrete_fields}
    names = {f.column: f.name for f in model._meta.concrete_fields}
    attnames = [by_column[c] for c in columns]
    objects = [model(**dict(zip(attnames, row, strict=True))) for row in rows]
    if conflict:
        model.objects.bulk_create(
            objects,
            update_conflicts=True,
            unique_fields=[names[c] for c in conflict],
            update_fields=[names[c] for c in update],
            batch_size=500,
        )
    else:
        model.objects.bulk_create(objects, batch_size=500)
    if not returning:
        return []
    positions = [list(columns).index(c) for c in conflict]
    wanted = {tuple(row[i] for i in positions) for row in rows}
    first = [by_column[conflict[0]]]
    found = model.objects.filter(**{f"{first[0]}__in": {key[0] for key in wanted}}).values_list(
        *[by_column[c] for c in returning], *[by_column[c] for c in conflict]
    )
    return [tuple(r[: len(returning)]) for r in found if tuple(r[len(returning) :]) in wanted]


def values_in(
    model: type[models.Model], column: str, values: Sequence[Any], fields: Sequence[str], *, locked: bool = False
) -> list[tuple[Any, ...]]:
    """`SELECT fields WHERE column IN values` for long lists: one array parameter on PostgreSQL instead of
    thousands of placeholders (Django's `__in` spent longer building them than the query took). `locked`: the
    rows locked FOR NO KEY UPDATE until the transaction ends, in the order of `column` (the order `upsert`
    writes them in, so two batches queue rather than deadlock); SQLite's writers take turns, a plain read there."""
    if not values:
        return []
    if connection.vendor != "postgresql":
        return list(model.objects.filter(**{f"{column}__in": values}).values_list(*fields))
    lock = f" ORDER BY {column} FOR NO KEY UPDATE" if locked else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {', '.join(fields)} FROM {model._meta.db_table} WHERE {column} = ANY(%s){lock}",  # noqa: S608 - names from model metadata
            [list(values)],
        )
        return cursor.fetchall()


def delete_in(model: type[models.Model], column: str, values: Sequence[Any]) -> None:
    """`DELETE WHERE column IN values` for rows nothing else refers to (no cascades, no signals)."""
    if not values:
        return
    if connection.vendor != "postgresql":
        model.objects.filter(**{f"{column}__in": values})._raw_delete(model.objects.db)  # type: ignore[attr-defined]
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE {column} = ANY(%s)", [list(values)])  # noqa: S608
