"""Register with a CPO that gave us its versions URL and a Token A, then run the first full pull."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emsp.models import Partner
from ocpi.credentials import RegistrationError, register_with_partner
from ocpi.sync import sync_partner


class Command(BaseCommand):
    help = "Register with a CPO over OCPI 2.2.1 (credentials handshake as the initiating party) and pull its data."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--versions-url", required=True, help="The CPO's OCPI versions URL.")
        parser.add_argument("--token-a", required=True, help="The Token A the CPO gave us.")
        parser.add_argument("--partner", default="", help="CC*PID of an existing partner row to use.")
        parser.add_argument("--name", default="", help="Display name for a new partner.")
        parser.add_argument(
            "--party", default="", help="CC*PID the CPO must answer as (refused otherwise); see also --partner."
        )
        parser.add_argument("--no-sync", action="store_true", help="Skip the first full pull.")

    def handle(self, *args: Any, **options: Any) -> None:
        partner = None
        if options["partner"]:
            country_code, _, party_id = options["partner"].partition("*")
            partner = Partner.objects.filter(country_code=country_code.upper(), party_id=party_id.upper()).first()
            if partner is None:
                raise CommandError(f"no partner {options['partner']}")
        try:
            partner = register_with_partner(
                versions_url=options["versions_url"],
                token_a=options["token_a"],
                partner=partner,
                name=options["name"],
                party=options["party"],
            )
        except RegistrationError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Registered with {partner} (OCPI {partner.version})"))
        for endpoint in partner.endpoints:
            self.stdout.write(f"  {endpoint['identifier']:<16} {endpoint['role']:<9} {endpoint['url']}")
        if options["no_sync"]:
            return
        for run in sync_partner(partner, full=True):
            self.stdout.write(
                f"  pulled {run.module:<10} {run.outcome:<7} pages={run.pages} received={run.received} "
                f"stored={run.stored} normalised={run.normalised} rejected={run.rejected} {run.error}"
            )
