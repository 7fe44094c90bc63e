# One pull per partner at a time, with a lease a stopped worker cannot hold for ever.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0009_partner_parties"),
        ("ocpi", "0002_pushdelivery_in_the_outbox"),
    ]

    operations = [
        migrations.CreateModel(
            name="SyncLease",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("holder", models.CharField(max_length=64)),
                ("held_until", models.DateTimeField()),
                (
                    "partner",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE, related_name="sync_lease", to="emsp.partner"
                    ),
                ),
            ],
        ),
    ]
