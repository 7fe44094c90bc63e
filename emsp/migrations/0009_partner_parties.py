# The parties a connection may act for become rows we grant (PartnerParty), no longer the roles a partner
# sent in its credentials. Every partner holds its own party; parties it claimed beyond that become
# REQUESTED rows that staff confirm in the console (until then the partner cannot act for them).

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def parties_from_partners(apps, schema_editor):
    partner_model = apps.get_model("emsp", "Partner")
    party_model = apps.get_model("emsp", "PartnerParty")
    for partner in partner_model.objects.order_by("pk"):
        party_model.objects.create(
            partner=partner, country_code=partner.country_code, party_id=partner.party_id, status="GRANTED", own=True
        )
        claimed = set()
        for role in partner.credentials_roles or []:
            if isinstance(role, dict) and role.get("country_code") and role.get("party_id"):
                claimed.add((str(role["country_code"]).strip().upper()[:2], str(role["party_id"]).strip().upper()[:3]))
        claimed.discard((partner.country_code, partner.party_id))
        for country_code, party_id in sorted(claimed):
            party_model.objects.create(
                partner=partner, country_code=country_code, party_id=party_id, status="REQUESTED", own=False
            )


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0008_roles_for_the_outbox"),
    ]

    operations = [
        migrations.AlterField(
            model_name="partner",
            name="credentials_roles",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="CredentialsRoles the partner sent, as a record only: what it may act for is its parties.",
            ),
        ),
        migrations.CreateModel(
            name="PartnerParty",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("country_code", models.CharField(max_length=2)),
                ("party_id", models.CharField(max_length=3)),
                (
                    "status",
                    models.CharField(
                        choices=[("GRANTED", "Granted"), ("REQUESTED", "Claimed by the partner, waiting for staff")],
                        default="GRANTED",
                        max_length=10,
                    ),
                ),
                ("own", models.BooleanField(default=False, help_text="The partner's own party (set with the partner).")),
                ("granted_by", models.CharField(blank=True, max_length=150)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "partner",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="parties", to="emsp.partner"
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "partner parties",
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("status", "GRANTED")),
                        fields=("country_code", "party_id"),
                        name="party_granted_to_one_connection",
                    ),
                    models.UniqueConstraint(
                        fields=("partner", "country_code", "party_id"), name="party_once_per_partner"
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("own", True)), fields=("partner",), name="partner_one_own_party"
                    ),
                ],
            },
        ),
        migrations.RunPython(parties_from_partners, migrations.RunPython.noop),
    ]
