"""Large values written from now on compressed with lz4 on PostgreSQL (emsp/migration_ops.py says why)."""

from __future__ import annotations

from django.db import migrations

from emsp.migration_ops import CompressWithLz4


class Migration(migrations.Migration):
    dependencies = [("emsp", "0020_evse_nearest")]
    operations = [
        CompressWithLz4("Location", ["data"]),
        CompressWithLz4("Evse", ["data"]),
        CompressWithLz4("ChargingSession", ["data"]),
    ]
