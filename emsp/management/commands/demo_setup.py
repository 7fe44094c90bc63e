"""Demo data for a newcomer: a staff login and a driver with tokens. Safe to run twice."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from emsp.models import Driver, Token
from emsp.services.tokens import token_issue

DEMO_DRIVER_EMAIL = "asha.driver@example.com"


class Command(BaseCommand):
    help = "Create the demo staff user (credentials printed) and a demo driver with an RFID and an app token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="", help="Default: a random one, printed.")

    def handle(self, *args: Any, **options: Any) -> None:
        from emsp.roles import roles_setup

        roles_setup()  # the admin, ops and finance groups, with every app's permissions
        user_model = get_user_model()
        user = user_model.objects.filter(username=options["username"]).first()
        if user is None:
            password = options["password"] or secrets.token_urlsafe(9)
            user_model.objects.create_superuser(options["username"], "admin@example.com", password)
            self.stdout.write(f"staff login: {options['username']} / {password}")
        else:
            if options["password"]:
                user.set_password(options["password"])
                user.save()
            self.stdout.write(f"staff login: {options['username']} (exists; password unchanged unless --password)")
        driver, _ = Driver.objects.get_or_create(
            email=DEMO_DRIVER_EMAIL, defaults={"name": "Asha (demo driver)", "phone": "+91 98450 00000"}
        )
        for token_type, uid in ((Token.Type.RFID, "DEMO-RFID-0001"), (Token.Type.APP_USER, "DEMO-APP-0001")):
            if not Token.objects.filter(uid=uid, type=token_type).exists():
                token_issue(driver=driver, token_type=token_type, uid=uid, visual_number=uid)
        self.stdout.write(
            f"demo driver: {driver.name} with tokens {', '.join(driver.tokens.values_list('uid', flat=True))}"
        )
