"""Migration operations for the big tables (the message logs, the stored OCPI objects and Beckn bodies): indexes
added without blocking writes, large values compressed with lz4."""

from __future__ import annotations

from typing import Any

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db.migrations.operations import AddIndex
from django.db.migrations.operations.base import Operation


class AddIndexOnline(AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL — a log of tens of millions of rows stays writable while it is
    indexed (minutes) — and a plain CREATE INDEX elsewhere (SQLite in development and tests). The migration
    must set `atomic = False`. A concurrent build that fails leaves an INVALID index: drop it and migrate again
    (docs/operations.md, "Retention")."""

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)


def lz4_available(connection: Any) -> bool:
    """Whether this PostgreSQL server compresses with lz4 (PostgreSQL 14 and later, built with it: Debian's is)."""
    if connection.vendor != "postgresql" or connection.pg_version < 140000:
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
    return bool(row and row[0])


class CompressWithLz4(Operation):
    """Large text and JSON columns compressed with lz4 instead of PostgreSQL's default pglz, for the values
    written from now on (nothing is rewritten; a column's older values stay readable as they are).

    Why: an on_search callback's body is about 48 kB of JSON, written once a search. Its INSERT cost the database
    0.38 ms of CPU, most of it pglz; the same 500 bodies took 112 ms to store with pglz and 13 ms with lz4, at the
    same size (docs/benchmarks.md). lz4 also reads back faster. Where the server has no lz4 (built without it,
    or older than 14), and on SQLite, this does nothing."""

    reversible = True

    def __init__(self, model_name: str, fields: list[str]) -> None:
        self.model_name, self.fields = model_name, fields

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        return self.__class__.__qualname__, [], {"model_name": self.model_name, "fields": self.fields}

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass  # storage only: the models don't change

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        self._compress(app_label, schema_editor, to_state, "lz4")

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        self._compress(app_label, schema_editor, to_state, "default")

    def _compress(self, app_label: str, schema_editor: Any, state: Any, method: str) -> None:
        if not lz4_available(schema_editor.connection):
            return
        model = state.apps.get_model(app_label, self.model_name)
        quote = schema_editor.quote_name
        for name in self.fields:
            field = model._meta.get_field(name)
            table = field.model._meta.db_table
            schema_editor.execute(
                f"ALTER TABLE {quote(table)} ALTER COLUMN {quote(field.column)} SET COMPRESSION {method}"
            )

    def describe(self) -> str:
        return f"Compress {self.model_name}'s {', '.join(self.fields)} with lz4 (PostgreSQL)"
