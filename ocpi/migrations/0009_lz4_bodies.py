"""Large values written from now on compressed with lz4 on PostgreSQL (emsp/migration_ops.py says why)."""

from __future__ import annotations

from django.db import migrations

from emsp.migration_ops import CompressWithLz4


class Migration(migrations.Migration):
    dependencies = [("ocpi", "0008_message_id_indexes")]
    operations = [
        CompressWithLz4("OcpiMessage", ["request_body", "response_body"]),
        CompressWithLz4("PushDelivery", ["payload"]),
    ]
