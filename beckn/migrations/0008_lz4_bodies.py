"""Large values written from now on compressed with lz4 on PostgreSQL (emsp/migration_ops.py says why)."""

from __future__ import annotations

from django.db import migrations

from emsp.migration_ops import CompressWithLz4


class Migration(migrations.Migration):
    dependencies = [("beckn", "0007_transaction_window")]
    operations = [
        CompressWithLz4("BecknMessage", ["body"]),
        CompressWithLz4("BecknCallback", ["body"]),
    ]
