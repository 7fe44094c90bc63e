# Pushes become rows of the one outbox (emsp.Delivery): the old table's rows are copied into it, keeping their
# state, attempts and times, and the old table is dropped.

import django.db.models.deletion
from django.db import migrations, models


def copy_pushes(apps, schema_editor):
    legacy = apps.get_model("ocpi", "LegacyPushDelivery")
    push_delivery = apps.get_model("ocpi", "PushDelivery")
    for old in legacy.objects.order_by("pk").iterator():
        push_delivery.objects.create(
            channel="ocpi_push",
            partner_id=old.partner_id,
            target=f"{old.module} {old.method} {old.path}"[:500],
            status=old.status,
            attempts=old.attempts,
            next_attempt_at=old.next_attempt_at,
            last_error=old.last_error,
            created_at=old.created_at,
            delivered_at=old.delivered_at,
            module=old.module,
            method=old.method,
            path=old.path,
            payload=old.payload,
        )


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0007_outbox_and_command_connector"),
        ("ocpi", "0001_initial"),
    ]

    operations = [
        migrations.RenameModel("PushDelivery", "LegacyPushDelivery"),
        migrations.AlterField(
            model_name="legacypushdelivery",
            name="partner",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="emsp.partner"),
        ),
        migrations.CreateModel(
            name="PushDelivery",
            fields=[
                (
                    "delivery_ptr",
                    models.OneToOneField(
                        auto_created=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        parent_link=True,
                        primary_key=True,
                        serialize=False,
                        to="emsp.delivery",
                    ),
                ),
                ("module", models.CharField(max_length=16)),
                ("method", models.CharField(max_length=8)),
                ("path", models.CharField(help_text="Appended to the partner's module URL.", max_length=200)),
                ("payload", models.JSONField()),
            ],
            options={"verbose_name_plural": "push deliveries"},
            bases=("emsp.delivery",),
        ),
        migrations.RunPython(copy_pushes, migrations.RunPython.noop),
        migrations.DeleteModel("LegacyPushDelivery"),
    ]
