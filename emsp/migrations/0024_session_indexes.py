# A charging session's row is rewritten on every PATCH its CPO sends (every minute or so while it charges), and
# its `last_updated` moves each time, so no update is in place: each one adds an entry to every index of the
# table. Four of its fifteen indexes nothing reads (bench/bench_ocpi_calls.py --kind session; docs/benchmarks.md):
#
# - the `varchar_pattern_ops` indexes Django adds beside a CharField's own (for LIKE 'prefix%', which no query
#   of ours asks: the console's search is a case-insensitive contains) on `ocpi_key`, `status` and
#   `authorization_reference`. Their own indexes stay: the key's unique constraint (now declared as a
#   UniqueConstraint, as emsp/0023 did for the location's) and the two B-trees, now declared in Meta (renamed:
#   Meta's names are at most 30 characters).
# - (partner, last_updated), which no query filters or orders by.

from django.db import migrations, models

LIKE_INDEXES = {
    "emsp_chargingsession_ocpi_key_abf9ea4f_like": "ocpi_key",
    "emsp_chargingsession_status_374dc7e6_like": "status",
    "emsp_chargingsession_authorization_reference_3ecf4759_like": "authorization_reference",
}
# The B-trees db_index=True made, renamed as Meta names them (at most 30 characters).
RENAMED = {
    "emsp_chargingsession_status_374dc7e6": ("session_status", "status"),
    "emsp_chargingsession_authorization_reference_3ecf4759": ("session_authorization_ref", "authorization_reference"),
}


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name in LIKE_INDEXES:
            schema_editor.execute(f"DROP INDEX IF EXISTS {name}")
        for old, (new, _) in RENAMED.items():
            schema_editor.execute(f"ALTER INDEX IF EXISTS {old} RENAME TO {new}")
    else:
        for old, (new, column) in RENAMED.items():
            schema_editor.execute(f"DROP INDEX IF EXISTS {old}")
            schema_editor.execute(f"CREATE INDEX {new} ON emsp_chargingsession ({column})")


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for name, column in LIKE_INDEXES.items():
            schema_editor.execute(
                f"CREATE INDEX IF NOT EXISTS {name} ON emsp_chargingsession ({column} varchar_pattern_ops)"
            )
        for old, (new, _) in RENAMED.items():
            schema_editor.execute(f"ALTER INDEX IF EXISTS {new} RENAME TO {old}")
    else:
        for old, (new, column) in RENAMED.items():
            schema_editor.execute(f"DROP INDEX IF EXISTS {new}")
            schema_editor.execute(f"CREATE INDEX {old} ON emsp_chargingsession ({column})")


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0023_ingest_indexes_fillfactor"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="chargingsession", name="session_partner_updated"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="chargingsession",
                    name="ocpi_key",
                    field=models.CharField(max_length=48),
                ),
                migrations.AddConstraint(
                    model_name="chargingsession",
                    constraint=models.UniqueConstraint(fields=("ocpi_key",), name="emsp_chargingsession_ocpi_key_key"),
                ),
                migrations.AlterField(
                    model_name="chargingsession",
                    name="status",
                    field=models.CharField(
                        choices=[
                            ("ACTIVE", "Active"),
                            ("COMPLETED", "Completed"),
                            ("INVALID", "Invalid"),
                            ("PENDING", "Pending"),
                            ("RESERVATION", "Reservation"),
                        ],
                        max_length=12,
                    ),
                ),
                migrations.AlterField(
                    model_name="chargingsession",
                    name="authorization_reference",
                    field=models.CharField(blank=True, max_length=36),
                ),
                migrations.AddIndex(
                    model_name="chargingsession",
                    index=models.Index(fields=["status"], name="session_status"),
                ),
                migrations.AddIndex(
                    model_name="chargingsession",
                    index=models.Index(fields=["authorization_reference"], name="session_authorization_ref"),
                ),
            ],
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
        ),
    ]
