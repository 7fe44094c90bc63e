# Callbacks become rows of the one outbox (emsp.Delivery) and their attempts DeliveryAttempt rows: the old
# tables' rows are copied, keeping their state, attempts and times, and the old tables are dropped.

import django.db.models.deletion
from django.db import migrations, models


def copy_callbacks(apps, schema_editor):
    legacy = apps.get_model("beckn", "LegacyBecknCallback")
    legacy_attempt = apps.get_model("beckn", "LegacyBecknCallbackAttempt")
    callback = apps.get_model("beckn", "BecknCallback")
    attempt = apps.get_model("emsp", "DeliveryAttempt")
    for old in legacy.objects.order_by("pk").iterator():
        new = callback.objects.create(
            channel="beckn_callback",
            target=old.url[:500],
            status=old.status,
            attempts=old.attempts,
            next_attempt_at=old.next_attempt_at,
            last_http_status=old.last_http_status,
            last_error=old.last_error,
            created_at=old.created_at,
            delivered_at=old.delivered_at,
            transaction_id=old.transaction_id,
            request_id=old.request_id,
            action=old.action,
            url=old.url,
            message_id=old.message_id,
            solicited=old.solicited,
            body=old.body,
        )
        attempt.objects.bulk_create(
            attempt(delivery_id=new.pk, at=a.at, http_status=a.http_status, error=a.error, duration_ms=a.duration_ms)
            for a in legacy_attempt.objects.filter(callback_id=old.pk).order_by("pk")
        )


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0007_outbox_and_command_connector"),
        ("beckn", "0002_journeys_and_outbox"),
    ]

    operations = [
        migrations.RenameModel("BecknCallback", "LegacyBecknCallback"),
        migrations.RenameModel("BecknCallbackAttempt", "LegacyBecknCallbackAttempt"),
        migrations.AlterField(
            model_name="legacybeckncallback",
            name="transaction",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                to="beckn.beckntransaction",
            ),
        ),
        migrations.AlterField(
            model_name="legacybeckncallback",
            name="request",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+",
                to="beckn.becknmessage",
            ),
        ),
        migrations.AlterField(
            model_name="legacybeckncallbackattempt",
            name="callback",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="beckn.legacybeckncallback"
            ),
        ),
        migrations.CreateModel(
            name="BecknCallback",
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
                ("action", models.CharField(max_length=16)),
                ("url", models.URLField(max_length=500)),
                ("message_id", models.CharField(max_length=255)),
                ("solicited", models.BooleanField(default=True)),
                ("body", models.TextField(help_text="The exact JSON sent (and signed)")),
                (
                    "request",
                    models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                        related_name="callbacks", to="beckn.becknmessage",
                    ),
                ),
                (
                    "transaction",
                    models.ForeignKey(
                        blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                        related_name="callbacks", to="beckn.beckntransaction",
                    ),
                ),
            ],
            bases=("emsp.delivery",),
        ),
        migrations.RunPython(copy_callbacks, migrations.RunPython.noop),
        migrations.DeleteModel("LegacyBecknCallbackAttempt"),
        migrations.DeleteModel("LegacyBecknCallback"),
    ]
