"""Rows written in plain SQL as the ORM writes them: a row inserted unless its unique key is taken, in one statement
(no SELECT first, no savepoint around it); a row inserted or updated without the ORM's compiler."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.models import NOT_PROVIDED, Field, Model
from django.db.models.signals import post_save, pre_save

M = TypeVar("M", bound=Model)


def insert_if_absent(obj: Model, unique_fields: Sequence[str]) -> bool:
    """INSERT … ON CONFLICT (unique_fields) DO NOTHING RETURNING pk (PostgreSQL, SQLite ≥ 3.35). True and `obj`
    saved (its pk set) when the row was new; False, `obj` untouched, when a row with that key exists (one being
    written concurrently is waited for, as a unique index does). Fields' defaults, `auto_now` and their own
    preparation (encryption included) apply as in `save()`. Where `get_or_create` inside a transaction costs a
    SELECT, a SAVEPOINT, the INSERT and a RELEASE, this is one round trip when the row is usually new."""
    meta = obj._meta
    quote = connection.ops.quote_name
    conflict = f"ON CONFLICT ({', '.join(quote(meta.get_field(name).column) for name in unique_fields)}) DO NOTHING"
    row = _insert_row(obj, meta.db_table, meta.concrete_fields, meta.pk.column, conflict)
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = connection.alias
    return True


def insert(obj: M) -> M:
    """`obj` INSERTed as `Model.objects.create()` would write it, in plain SQL: one statement per table (a
    multi-table child's parents first), each column prepared by its field (defaults, `auto_now`, encryption).
    No ORM compiler; a model with save signal listeners or database-filled columns is saved by the ORM instead.
    A profile of on_search showed the ORM's create of the request's log row and its callback (two tables)
    costing 13 % of the worker's CPU; tests/emsp/test_inserts.py holds the rows to what create() writes."""
    model = type(obj)
    if not _plain(model) or pre_save.has_listeners(model) or post_save.has_listeners(model):
        obj.save(force_insert=True)  # what this can't do the ORM's way: listeners, database-side values
        return obj
    obj._prepare_related_fields_for_save(operation_name="save")  # an unsaved related object: ValueError
    if _one_parent(model) and connection.vendor == "postgresql":
        _insert_parent_and_child(obj, model)  # one statement: both rows or neither
    elif obj._meta.parents:  # the child's rows all or none, as create() writes them (nothing more inside a transaction)
        with transaction.atomic(using=connection.alias, savepoint=False):
            _insert_table(obj, type(obj))
    else:
        _insert_table(obj, type(obj))
    obj._state.adding = False
    obj._state.db = connection.alias
    return obj


def update(obj: Model) -> None:
    """`obj.save()` of a row that exists (loaded, or inserted): one UPDATE of every column but the key, each
    prepared by its field as save() prepares it (`auto_now`, encryption), the same text each time, so prepared
    once per connection. For rows a hot path rewrites whole: a session PATCH's save() was a sixth of its CPU
    (cProfile, bench/bench_ocpi_calls.py --kind session). A model with save signal listeners, a multi-table
    child or database-filled columns is saved by the ORM. Raises DatabaseError when no row has `obj`'s key (save()
    would insert one: callers hold the row locked)."""
    model = type(obj)
    meta = model._meta
    if meta.parents or not _plain(model) or pre_save.has_listeners(model) or post_save.has_listeners(model):
        obj.save()
        return
    obj._prepare_related_fields_for_save(operation_name="save")
    fields = _updated(model)
    db = connections[DEFAULT_DB_ALIAS]  # the connection itself: each attribute read through the proxy is a lookup
    values = [f.get_db_prep_save(f.pre_save(obj, add=False), db) for f in fields]
    with db.cursor() as cursor:
        cursor.execute(_update_sql(model, db.vendor), [*values, obj.pk])
        if cursor.rowcount != 1:
            raise DatabaseError(f"{meta.label} {obj.pk!r}: no row to update")


@functools.cache
def _updated(model: type[Model]) -> list[Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


@functools.cache
def _update_sql(model: type[Model], vendor: str) -> str:
    quote = connection.ops.quote_name
    columns = ", ".join(f"{quote(f.column)} = %s" for f in _updated(model))
    return f"UPDATE {quote(model._meta.db_table)} SET {columns} WHERE {quote(model._meta.pk.column)} = %s"  # noqa: S608


@functools.cache
def _plain(model: type[Model]) -> bool:
    """No column the database fills in itself (db_default, generated): RETURNING the key alone is enough."""
    return not any(f.db_default is not NOT_PROVIDED or f.generated for f in model._meta.concrete_fields)


def _insert_table(obj: Model, model: type[Model]) -> None:
    meta = model._meta
    for parent, link in meta.parents.items():  # parents first, as save() does: the child's key is theirs
        _insert_table(obj, parent)
        if link is not None:
            setattr(obj, link.attname, getattr(obj, parent._meta.pk.attname))
    row = _insert_row(obj, meta.db_table, meta.local_concrete_fields, meta.pk.column)
    assert row is not None  # RETURNING without ON CONFLICT: a row, or an error raised
    setattr(obj, meta.pk.attname, row[0])


@functools.cache
def _one_parent(model: type[Model]) -> bool:
    """A multi-table child of one parent that has none itself (BecknCallback of Delivery, say)."""
    parents = model._meta.parents
    return len(parents) == 1 and all(link is not None and not p._meta.parents for p, link in parents.items())


def _insert_parent_and_child(obj: Model, model: type[Model]) -> None:
    """A child of one parent in one statement on PostgreSQL: the parent's INSERT in a CTE, the child's naming its
    key. Where the two INSERTs took two round trips (and BEGIN and COMMIT around them out of a transaction), a
    profile of on_search showed each callback's two rows among its 13 statements."""
    ((parent, link),) = model._meta.parents.items()
    assert link is not None
    quote = connection.ops.quote_name
    parent_meta, meta = parent._meta, model._meta
    parent_fields = _written(obj, parent_meta.concrete_fields)
    child_fields = [f for f in meta.local_concrete_fields if f is not link]
    values = _prepared(obj, parent_fields) + _prepared(obj, child_fields)
    parent_key = quote(parent_meta.pk.column)
    from_parent = f"(SELECT {parent_key} FROM parent)"  # noqa: S608 - a column name from model metadata
    sql = (
        f"WITH parent AS (INSERT INTO {quote(parent_meta.db_table)} "  # noqa: S608 - names from model metadata
        f"({', '.join(quote(f.column) for f in parent_fields)}) VALUES ({', '.join(['%s'] * len(parent_fields))}) "
        f"RETURNING {parent_key}) "
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in [link, *child_fields])}) "
        f"VALUES ({', '.join([from_parent] + ['%s'] * len(child_fields))}) "
        f"RETURNING {quote(link.column)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        (key,) = cursor.fetchone()
    setattr(obj, parent_meta.pk.attname, key)
    setattr(obj, link.attname, key)


def _insert_row(obj: Model, table: str, columns: Sequence[Field], key: str, tail: str = "") -> tuple[Any, ...] | None:
    """INSERT these columns of `obj` (an unset primary key left to the database) … `tail` RETURNING `key`."""
    fields = _written(obj, columns)
    values = _prepared(obj, fields)
    quote = connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) {tail} RETURNING {quote(key)}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        return cursor.fetchone()


def _written(obj: Model, columns: Sequence[Field]) -> list[Field]:
    """The columns an INSERT of `obj` names: all but an unset primary key (the database gives that)."""
    return [f for f in columns if not f.primary_key or getattr(obj, f.attname) is not None]


def _prepared(obj: Model, fields: Sequence[Field]) -> list[Any]:
    """Each field's value as save() writes it: pre_save (defaults, auto_now), then the field's own preparation."""
    return [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]
