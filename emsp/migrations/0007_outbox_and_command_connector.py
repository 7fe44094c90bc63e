# The one outbox (Delivery, DeliveryAttempt): OCPI pushes and Beckn callbacks become its subclasses in the
# ocpi and beckn migrations that follow. Commands keep the connector they name (their body is rendered by
# the OCPI adapter when sent).

import uuid

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0006_roles"),
    ]

    operations = [
        migrations.AddField(
            model_name="command",
            name="connector_id",
            field=models.CharField(blank=True, help_text="START_SESSION / UNLOCK_CONNECTOR", max_length=36),
        ),
        migrations.AlterField(
            model_name="command",
            name="request",
            field=models.JSONField(default=dict, help_text="The request as sent to the CPO"),
        ),
        migrations.AlterField(
            model_name="command",
            name="uid",
            field=models.UUIDField(
                default=uuid.uuid4, editable=False, help_text="Our id for the CPO's answers.", unique=True
            ),
        ),
        migrations.CreateModel(
            name="Delivery",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "channel",
                    models.CharField(
                        choices=[("ocpi_push", "OCPI push to a CPO"), ("beckn_callback", "Beckn callback to a BAP")],
                        max_length=20,
                    ),
                ),
                ("target", models.CharField(help_text="Where it goes, for people reading the console.", max_length=500)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("PENDING", "Waiting to be sent"),
                            ("SENDING", "Being sent"),
                            ("DELIVERED", "Delivered"),
                            ("FAILED", "Failed for good"),
                        ],
                        default="PENDING",
                        max_length=10,
                    ),
                ),
                ("attempts", models.PositiveSmallIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "claimed_at",
                    models.DateTimeField(blank=True, help_text="When a worker took it for sending.", null=True),
                ),
                ("last_http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("delivered_at", models.DateTimeField(blank=True, null=True)),
                (
                    "partner",
                    models.ForeignKey(
                        blank=True,
                        help_text="OCPI only",
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="deliveries",
                        to="emsp.partner",
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "deliveries",
                "permissions": [("retry_delivery", "Can retry a delivery now")],
                "indexes": [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")],
            },
        ),
        migrations.CreateModel(
            name="DeliveryAttempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField(default=django.utils.timezone.now)),
                ("http_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                ("error", models.TextField(blank=True)),
                ("duration_ms", models.PositiveIntegerField(default=0)),
                (
                    "delivery",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="attempt_log", to="emsp.delivery"
                    ),
                ),
            ],
            options={"ordering": ["at", "pk"]},
        ),
    ]
