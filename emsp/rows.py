"""Model instances from rows a plain SQL statement returned, as the ORM would build them (its field converters
applied: SQLite hands datetimes back as text), without a RawQuerySet.

On the real-time authorization's path `Model.objects.raw()` cost more CPU than the statement it ran: each call
maps the cursor's column names to fields and looks up every field's converters again. Here both are worked out
once per model and connection."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)

Converter = Callable[[Any, Any, Any], Any]
# Per model and per connection's operations object (one per thread's connection): a backend's converters are
# bound to its connection (SQLite's read the connection's time zone).
_converters: dict[tuple[type[Model], Any], list[tuple[int, list[Converter], Any]]] = {}
_attnames: dict[type[Model], list[str]] = {}


def select_columns(model: type[Model], alias: str) -> str:
    """The model's concrete columns, qualified by `alias`, in the order `model_from_row` reads them."""
    return _select_columns(model, alias, connection.vendor)


@functools.cache
def _select_columns(model: type[Model], alias: str, vendor: str) -> str:
    # Made once per model, alias and database: a session PATCH's profile showed the list built on each call.
    return ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


def model_from_row(model: type[M], row: Sequence[Any]) -> M:
    """An instance of `model` from the first len(concrete_fields) values of `row` (selected by `select_columns`)."""
    fields = model._meta.concrete_fields
    values = list(row[: len(fields)])
    for index, converters, expression in _field_converters(model):
        value = values[index]
        for converter in converters:
            value = converter(value, expression, connection)
        values[index] = value
    attnames = _attnames.get(model)
    if attnames is None:
        attnames = _attnames[model] = [f.attname for f in fields]
    return model.from_db(connection.alias, attnames, values)


def _field_converters(model: type[Model]) -> list[tuple[int, list[Converter], Any]]:
    key = (model, connection.ops)
    found = _converters.get(key)
    if found is None:
        found = []
        field: Field[Any, Any]
        for index, field in enumerate(model._meta.concrete_fields):
            expression = field.get_col(model._meta.db_table)
            converters = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
            if converters:
                found.append((index, converters, expression))
        _converters[key] = found
    return found


def first_where(model: type[M], where: str, params: Sequence[Any], order: str = "") -> M | None:
    """`model.objects.filter(…).first()` for a model without a default ordering, in plain SQL: the first row by
    `order` (SQL, e.g. "t.expiry_at"), then by primary key, where `where` (SQL over the table as `t`, parameters
    as %s) holds, built as the ORM builds it. For the small lookups of a Beckn request (its journey, connector and
    holds, the CPO's breaker and terms, the app's agreement), each of which the ORM compiled anew on every call:
    about 0.3 ms of CPU each in on_select's profile."""
    if model._meta.ordering:
        raise TypeError(f"{model._meta.label} has a default ordering: first() would follow it")
    key = connection.ops.quote_name(model._meta.pk.column)
    found = all_where(model, where, params, f"ORDER BY {order + ', ' if order else ''}t.{key} LIMIT 1")
    return found[0] if found else None


def all_where(model: type[M], where: str, params: Sequence[Any], tail: str = "") -> list[M]:
    """`model.objects.filter(…)` in plain SQL (`where` over the table as `t`; `tail`: ORDER BY, LIMIT), each row
    built as the ORM builds it."""
    table = connection.ops.quote_name(model._meta.db_table)
    sql = f"SELECT {select_columns(model, 't')} FROM {table} t WHERE {where} {tail}"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [model_from_row(model, row) for row in cursor.fetchall()]
