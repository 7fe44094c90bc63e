"""Large values written from now on compressed with lz4 on PostgreSQL (emsp/migration_ops.py says why)."""

from __future__ import annotations

from django.db import migrations

from emsp.migration_ops import CompressWithLz4


class Migration(migrations.Migration):
    dependencies = [("billing", "0010_tariff_generation")]
    operations = [
        CompressWithLz4("Cdr", ["data"]),
        CompressWithLz4("Tariff", ["data"]),
        CompressWithLz4("Quote", ["tariff_snapshot"]),
    ]
