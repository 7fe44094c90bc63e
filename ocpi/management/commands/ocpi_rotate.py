"""Rotate the credentials tokens with a connected partner (we start it: PUT on its credentials endpoint)."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emsp.models import Partner
from emsp.services.staff import staff_action_record
from ocpi.credentials import RotationError, rotate_credentials


class Command(BaseCommand):
    help = (
        "Rotate credentials with PARTNER (CC*PID): PUT a new token for it to its credentials endpoint and take "
        "the new token it answers with. The old tokens stay until it answers with valid credentials."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("partner", help="CC*PID, e.g. IN*CPA")

    def handle(self, *args: Any, **options: Any) -> None:
        country_code, _, party_id = options["partner"].partition("*")
        partner = Partner.objects.filter(country_code=country_code.upper(), party_id=party_id.upper()).first()
        if partner is None:
            raise CommandError(f"no partner {options['partner']}")
        started_by = f"manage.py ocpi_rotate ({getpass.getuser()})"
        try:
            rotation = rotate_credentials(partner, started_by=started_by)
        except RotationError as exc:
            self._record(partner, started_by, "FAILED", str(exc))
            raise CommandError(str(exc)) from exc
        self._record(partner, started_by, rotation.outcome)
        self.stdout.write(self.style.SUCCESS(f"Credentials rotated with {partner} (OCPI {partner.version})"))

    @staticmethod
    def _record(partner: Partner, started_by: str, outcome: str, error: str = "") -> None:
        details = {"version": partner.version, "outcome": outcome, "via": started_by}
        if error:
            details["error"] = error[:500]
        staff_action_record(user=None, verb="rotate_credentials", obj=partner, details=details)
