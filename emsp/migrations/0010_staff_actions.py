# The audit trail of staff actions (emsp.StaffAction), and the groups of emsp/roles.py again: the admin group
# picks up the new model's permissions, and ops the permission to pull a partner now (emsp.pull_partner).

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

from emsp.migrations._roles import create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0009_partner_parties"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="StaffAction",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("username", models.CharField(blank=True, help_text="Kept when the user is deleted.", max_length=150)),
                ("verb", models.CharField(db_index=True, max_length=40)),
                ("object_type", models.CharField(help_text="app_label.model, e.g. emsp.partner", max_length=100)),
                ("object_id", models.CharField(max_length=64)),
                ("object_repr", models.CharField(max_length=200, verbose_name="object")),
                ("details", models.JSONField(blank=True, default=dict)),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-at", "-pk"],
                "indexes": [models.Index(fields=["object_type", "object_id"], name="staffaction_object")],
            },
        ),
        migrations.RunPython(create_roles, migrations.RunPython.noop),
    ]
