# The admin, ops and finance groups (emsp/roles.py); `manage.py setup_roles` does the same at any time.

from django.contrib.auth.management import create_permissions
from django.db import migrations


def create_roles(apps, schema_editor):
    from emsp.roles import roles_setup

    # Permissions are created by a post_migrate signal, i.e. after every migration: on a fresh database
    # they do not exist yet here, so create those of every model in the state this migration runs on.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_setup(apps=apps, strict=False)


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
