"""SyncRun.unlisted: what a full pull paged on by offset without X-Total-Count did not list and kept
(ocpi/sync.py, `_missed_twice`). On PostgreSQL the column keeps a database default of '{}', so processes of the
release before, still running while this one rolls out, go on inserting runs (docs/operations.md, Upgrades)."""

from django.db import migrations, models


def keep_a_database_default(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE ocpi_syncrun ALTER COLUMN unlisted SET DEFAULT '{}'::jsonb")


class Migration(migrations.Migration):
    dependencies = [
        ("ocpi", "0011_sync_run_partner_time"),
    ]

    operations = [
        migrations.AddField(
            model_name="syncrun",
            name="unlisted",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RunPython(keep_a_database_default, migrations.RunPython.noop),
    ]
