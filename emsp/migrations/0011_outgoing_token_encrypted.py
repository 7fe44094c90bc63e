# The token we send partners is encrypted at rest (emsp/crypto.py): existing rows are encrypted here.

import emsp.crypto
from django.db import migrations


def encrypt_tokens(apps, schema_editor):
    partner_model = apps.get_model("emsp", "Partner")
    for partner in partner_model.objects.exclude(outgoing_token="").only("pk", "outgoing_token"):
        partner.save(update_fields=["outgoing_token"])  # read as plain text, written encrypted


class Migration(migrations.Migration):

    dependencies = [
        ('emsp', '0010_staff_actions'),
    ]

    operations = [
        migrations.AlterField(
            model_name='partner',
            name='outgoing_token',
            field=emsp.crypto.EncryptedTextField(blank=True),
        ),
        migrations.RunPython(encrypt_tokens, migrations.RunPython.noop),
    ]
