# The console's list of deliveries at tens of millions of rows (issue 14, retention), built without blocking
# the outbox's writes on PostgreSQL (emsp/migration_ops.py).

from django.db import migrations, models

from emsp.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("emsp", "0018_beat_heartbeat"),
    ]

    operations = [
        AddIndexOnline(
            model_name="delivery",
            index=models.Index(fields=["partner", "created_at"], name="delivery_partner_time"),
        ),
        AddIndexOnline(
            model_name="delivery",
            index=models.Index(fields=["status", "created_at"], name="delivery_status_time"),
        ),
    ]
