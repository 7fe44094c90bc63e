"""Database expressions the ORM lacks."""

from __future__ import annotations

from typing import Any

import orjson
from django.db.models import Expression, F, JSONField


class JsonMerge(Expression):
    """`column` with the keys of `patch` set (a shallow merge done by the database, so concurrent PATCHes
    of different fields don't overwrite each other): `||` on PostgreSQL, json_patch() on SQLite."""

    output_field = JSONField()

    def __init__(self, column: str, patch: dict[str, Any]) -> None:
        super().__init__()
        self.column = F(column)
        self.patch = orjson.dumps(patch).decode()

    def resolve_expression(self, *args: Any, **kwargs: Any) -> JsonMerge:
        clone = self.copy()
        clone.column = self.column.resolve_expression(*args, **kwargs)
        return clone

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        column_sql, params = compiler.compile(self.column)
        return f"json_patch({column_sql}, %s)", [*params, self.patch]

    def as_postgresql(self, compiler: Any, connection: Any) -> tuple[str, list[Any]]:
        column_sql, params = compiler.compile(self.column)
        return f"({column_sql} || %s::jsonb)", [*params, self.patch]
