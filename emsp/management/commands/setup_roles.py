"""`manage.py setup_roles`: create or update the admin, ops and finance groups (safe to run any time)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.management import create_permissions
from django.core.management.base import BaseCommand, CommandError

from emsp.roles import RoleSetupError, roles_setup


class Command(BaseCommand):
    help = "Create or update the staff groups (admin, ops, finance) with exactly the permissions in emsp/roles.py."

    def handle(self, *args: Any, **options: Any) -> None:
        from django.apps import apps

        # Permissions are normally created after `migrate`; make sure they exist for a command run right after.
        for app_config in apps.get_app_configs():
            create_permissions(app_config, verbosity=0)
        try:
            counts = roles_setup()
        except RoleSetupError as exc:
            raise CommandError(str(exc)) from exc
        for group, count in counts.items():
            self.stdout.write(f"group {group}: {count} permissions")
