# CDRs are audited and receipted once: a claim (claimed_at) and a mark of completion (processed_at). CDRs
# received before this are taken as processed when they have an audit.

import django.db.models
from django.db import migrations, models


def mark_processed(apps, schema_editor):
    cdr = apps.get_model("billing", "Cdr")
    cdr.objects.filter(audit__isnull=False).update(processed_at=django.db.models.F("received_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_audit_disputes_settlement"),
    ]

    operations = [
        migrations.AddField(model_name="cdr", name="claimed_at", field=models.DateTimeField(blank=True, null=True)),
        migrations.AddField(model_name="cdr", name="processed_at", field=models.DateTimeField(blank=True, null=True)),
        migrations.AddIndex(
            model_name="cdr",
            index=models.Index(
                condition=models.Q(("processed_at__isnull", True)), fields=["received_at"], name="cdr_unprocessed"
            ),
        ),
        migrations.RunPython(mark_processed, migrations.RunPython.noop),
    ]
