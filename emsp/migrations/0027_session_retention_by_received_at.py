# Retention ages a charging session by when we last stored a change of it (`received_at`, our clock), no longer by
# the CPO's `last_updated`, which can be years old when the session reaches us (emsp/privacy.py). The index moves
# with it: one on `received_at`, built without blocking the table's writes on PostgreSQL (emsp/migration_ops.py),
# takes the place of `last_updated`'s, which nothing else reads (emsp/0024) — a PATCH still writes as many index
# entries as before. Existing rows need no backfill: `received_at` has been set on every stored change since the
# table was made. The old index goes after the new one is built (CONCURRENTLY on PostgreSQL: a DROP INDEX would
# wait for the table's running transactions while holding back every write behind it).

from django.db import migrations, models

from emsp.migration_ops import AddIndexOnline

TABLE = "emsp_chargingsession"


def _last_updated_indexes(schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, TABLE)
    return [
        name
        for name, info in constraints.items()
        if info["index"] and not info["unique"] and not info["primary_key"] and info["columns"] == ["last_updated"]
    ]


def drop_last_updated_index(apps, schema_editor):
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    for name in _last_updated_indexes(schema_editor):
        schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {schema_editor.quote_name(name)}")


def add_last_updated_index(apps, schema_editor):
    if _last_updated_indexes(schema_editor):
        return
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    name = schema_editor.quote_name(schema_editor._create_index_name(TABLE, ["last_updated"]))  # db_index=True's
    schema_editor.execute(f"CREATE INDEX{concurrently} IF NOT EXISTS {name} ON {TABLE} (last_updated)")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("emsp", "0026_token_expires_at"),
    ]

    operations = [
        AddIndexOnline(
            model_name="chargingsession",
            index=models.Index(fields=["received_at"], name="session_received"),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="chargingsession",
                    name="last_updated",
                    field=models.DateTimeField(),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_last_updated_index, add_last_updated_index, elidable=False),
            ],
        ),
    ]
