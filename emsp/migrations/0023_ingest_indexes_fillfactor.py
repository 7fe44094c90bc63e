# The catalogue's tables made cheaper to write (issue 15, point 4; docs/benchmarks.md): three indexes nothing reads
# dropped, and room left in each page so a re-pulled location or EVSE is updated in place (a HOT update: no new
# entry in any index, the GiST point index included). A pull rewrites a page's rows in one transaction and can't
# count on pruning to make that room; a status PATCH, committed on its own, mostly could already.
#
# - The location's `ocpi_key` stays unique through the same PostgreSQL constraint, now declared as a
#   UniqueConstraint; `unique=True` had also made Django add a `varchar_pattern_ops` index for LIKE queries.
# - The connector's `standard` loses its two indexes (a filter on it is checked per EVSE).
# - fillfactor 50 on locations and EVSEs: room for every row of a page to be rewritten at once, as a pull does
#   (at 80 only a quarter of a re-pull's rows were updated in place). It applies to pages written from now on;
#   `VACUUM FULL` (or pg_repack) brings existing rows to it (docs/operations.md, "Upgrades and migrations").

from django.db import migrations, models

LIKE_INDEX = "emsp_location_ocpi_key_ad7c7403_like"
TABLES = ("emsp_location", "emsp_evse")


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX IF EXISTS {LIKE_INDEX}")
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = 50)")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {LIKE_INDEX} ON emsp_location (ocpi_key varchar_pattern_ops)")
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0022_location_id_any_case"),
    ]

    operations = [
        migrations.AlterField(
            model_name="connector",
            name="standard",
            field=models.CharField(max_length=32),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="location",
                    name="ocpi_key",
                    field=models.CharField(help_text="CC*PID*ID upper-cased.", max_length=48),
                ),
                migrations.AddConstraint(
                    model_name="location",
                    constraint=models.UniqueConstraint(fields=("ocpi_key",), name="emsp_location_ocpi_key_key"),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
        ),
    ]
