# The message log's request and correlation ids keep one B-tree index each. `db_index=True` had also given each
# a `varchar_pattern_ops` index on PostgreSQL (for LIKE), which the console's exact-match search never uses and
# every logged request paid for (two of the table's ten indexes). PostgreSQL: the unused indexes are dropped
# and the used ones renamed, both without blocking the log's writes and without rebuilding anything; other
# databases (SQLite in development and tests) rebuild the two small indexes under their new names.

from typing import Any

from django.db import migrations, models

COLUMNS = ("request_id", "correlation_id")


def _swap(apps: Any, schema_editor: Any, forwards: bool) -> None:
    model = apps.get_model("ocpi", "OcpiMessage")
    table = model._meta.db_table
    quote = schema_editor.quote_name
    for column in COLUMNS:
        # Django's generated names of the field's index and of its LIKE index, and the declared name.
        generated = schema_editor._create_index_name(table, [column])
        like = schema_editor._create_index_name(table, [column], suffix="_like")
        declared = f"ocpimessage_{column}"
        if schema_editor.connection.vendor == "postgresql":
            if forwards:
                schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(like)}")
                schema_editor.execute(f"ALTER INDEX IF EXISTS {quote(generated)} RENAME TO {declared}")
            else:
                schema_editor.execute(f"ALTER INDEX IF EXISTS {declared} RENAME TO {quote(generated)}")
                schema_editor.execute(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(like)} "
                    f"ON {quote(table)} ({quote(column)} varchar_pattern_ops)"
                )
        else:
            old, new = (generated, declared) if forwards else (declared, generated)
            schema_editor.execute(f"DROP INDEX IF EXISTS {quote(old)}")
            schema_editor.execute(f"CREATE INDEX {quote(new)} ON {quote(table)} ({quote(column)})")


def forwards(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, forwards=True)


def backwards(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, forwards=False)


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY runs outside a transaction

    dependencies = [
        ("ocpi", "0007_retention_indexes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="ocpimessage",
                    name="request_id",
                    field=models.CharField(blank=True, max_length=100),
                ),
                migrations.AlterField(
                    model_name="ocpimessage",
                    name="correlation_id",
                    field=models.CharField(blank=True, max_length=100),
                ),
                migrations.AddIndex(
                    model_name="ocpimessage",
                    index=models.Index(fields=["request_id"], name="ocpimessage_request_id"),
                ),
                migrations.AddIndex(
                    model_name="ocpimessage",
                    index=models.Index(fields=["correlation_id"], name="ocpimessage_correlation_id"),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards)],
        ),
    ]
