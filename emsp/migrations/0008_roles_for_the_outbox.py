# Ops may read the outbox and send a stuck delivery again (emsp/roles.py): the groups pick up the new
# permissions of Delivery and DeliveryAttempt.

from django.db import migrations

from emsp.migrations._roles import create_roles


class Migration(migrations.Migration):
    dependencies = [
        ("emsp", "0007_outbox_and_command_connector"),
        ("ocpi", "0002_pushdelivery_in_the_outbox"),
        ("beckn", "0003_callbacks_in_the_outbox"),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
    ]
