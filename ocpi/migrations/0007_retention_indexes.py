# The console's filters on the message log at tens of millions of rows (issue 14, retention), built without
# blocking the log's writes on PostgreSQL (emsp/migration_ops.py).

from django.db import migrations, models

from emsp.migration_ops import AddIndexOnline

FAILED = models.Q(
    ("http_status__gte", 300),
    ("http_status__isnull", True),
    ("ocpi_status__gte", 2000),
    models.Q(("error", ""), _negated=True),
    _connector="OR",
)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("ocpi", "0006_hub_client_info"),
    ]

    operations = [
        AddIndexOnline(
            model_name="ocpimessage",
            index=models.Index(fields=["partner", "created_at"], name="ocpimessage_partner_time"),
        ),
        AddIndexOnline(
            model_name="ocpimessage",
            index=models.Index(fields=["module", "created_at"], name="ocpimessage_module_time"),
        ),
        AddIndexOnline(
            model_name="ocpimessage",
            index=models.Index(condition=FAILED, fields=["created_at"], name="ocpimessage_failed_time"),
        ),
        AddIndexOnline(
            model_name="ocpimessage",
            index=models.Index(condition=FAILED, fields=["partner", "created_at"], name="ocpimessage_partner_failed"),
        ),
    ]
