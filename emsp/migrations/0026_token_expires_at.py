# Tokens past their expiry are pushed once by a sweep each minute (emsp/services/tokens.py::tokens_expired_push);
# the index holds only tokens that have an expiry, built without blocking token writes on PostgreSQL
# (emsp/migration_ops.py).

from django.db import migrations, models

from emsp.migration_ops import AddIndexOnline


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("emsp", "0025_booking_app"),
    ]

    operations = [
        AddIndexOnline(
            model_name="token",
            index=models.Index(
                condition=models.Q(expires_at__isnull=False), fields=["expires_at"], name="token_expires_at"
            ),
        ),
    ]
