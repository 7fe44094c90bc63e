"""What the roles migrations run: the groups of emsp/roles.py, with every permission that exists in the
state the migration runs on."""

from django.contrib.auth.management import create_permissions


def create_roles(apps, schema_editor):
    from emsp.roles import roles_setup

    # Permissions are created by a post_migrate signal, i.e. after every migration: on a fresh database
    # they do not exist yet here, so create those of every model in the state this migration runs on.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    roles_setup(apps=apps, strict=False)
