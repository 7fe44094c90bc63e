# The admin, ops and finance groups (emsp/roles.py); `manage.py setup_roles` does the same at any time.

from django.db import migrations

from emsp.migrations._roles import create_roles


class Migration(migrations.Migration):

    dependencies = [
        ('auth', '0012_alter_user_first_name_max_length'),
        ('contenttypes', '0002_remove_content_type_name'),
        ('emsp', '0005_bookings'),
        ('billing', '0002_audit_disputes_settlement'),
        ('ocpi', '0001_initial'),
    ]

    operations = [
        migrations.RunPython(create_roles, migrations.RunPython.noop),
    ]
