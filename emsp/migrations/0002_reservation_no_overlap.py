"""No two active reservations may overlap on one EVSE: a PostgreSQL exclusion constraint (btree_gist).

SQLite (the embedded development default) has no exclusion constraints; there the service layer's
overlap check under the database's single-writer lock is what holds.
"""

from __future__ import annotations

from django.db import migrations

ACTIVE = "('HELD', 'REQUESTED', 'RESERVED')"


def create(apps, schema_editor):  # noqa: ANN001
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
    schema_editor.execute(
        "ALTER TABLE emsp_reservation ADD CONSTRAINT reservation_no_overlap EXCLUDE USING gist "
        "(evse_id WITH =, tstzrange(start_at, expiry_at, '[)') WITH &&) "
        f"WHERE (status IN {ACTIVE})"
    )


def drop(apps, schema_editor):  # noqa: ANN001
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("ALTER TABLE emsp_reservation DROP CONSTRAINT IF EXISTS reservation_no_overlap")


class Migration(migrations.Migration):
    dependencies = [("emsp", "0001_initial")]
    operations = [migrations.RunPython(create, drop)]
