# Finance reads the ledger, payments and their webhooks, retries provider calls and issues numbered documents
# (emsp/roles.py): the groups pick up the permissions of the models of 0006_payments.

from django.db import migrations

from emsp.migrations._roles import create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0007_ledger_faster_check"),
        ("emsp", "0015_wallet_limit"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
    ]
