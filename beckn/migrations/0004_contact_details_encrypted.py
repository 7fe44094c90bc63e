# A journey's billing and contact details are encrypted at rest (emsp/crypto.py): existing rows here.

import emsp.crypto
from django.db import migrations


def encrypt_details(apps, schema_editor):
    transaction_model = apps.get_model("beckn", "BecknTransaction")
    for txn in transaction_model.objects.only("pk", "billing", "customer").iterator():
        txn.save(update_fields=["billing", "customer"])  # read as JSON text, written encrypted


class Migration(migrations.Migration):

    dependencies = [
        ('beckn', '0003_callbacks_in_the_outbox'),
    ]

    operations = [
        migrations.AlterField(
            model_name='beckntransaction',
            name='billing',
            field=emsp.crypto.EncryptedJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name='beckntransaction',
            name='customer',
            field=emsp.crypto.EncryptedJSONField(blank=True, default=dict),
        ),
        migrations.RunPython(encrypt_details, migrations.RunPython.noop),
    ]
