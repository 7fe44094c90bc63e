"""Issue a Token A for a partner that will register with us (credentials handshake, receiving side)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emsp.models import Partner
from ocpi.credentials import versions_url


class Command(BaseCommand):
    help = "Issue a new Token A for PARTNER (CC*PID); prints it with our versions URL. Old Token A stops working."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("partner", help="CC*PID, e.g. IN*CPA")
        parser.add_argument("--create", metavar="NAME", help="Create the partner with this name if missing.")

    def handle(self, *args: Any, **options: Any) -> None:
        country_code, _, party_id = options["partner"].partition("*")
        if len(country_code) != 2 or not 1 <= len(party_id) <= 3:
            raise CommandError("PARTNER must look like CC*PID, e.g. IN*CPA")
        partner = Partner.objects.filter(country_code=country_code.upper(), party_id=party_id.upper()).first()
        if partner is None:
            if not options["create"]:
                raise CommandError(f"no partner {options['partner']} (use --create NAME)")
            partner = Partner.objects.create(name=options["create"], country_code=country_code, party_id=party_id)
        token = partner.issue_token_a()
        partner.save()
        self.stdout.write(f"partner:      {partner}")
        self.stdout.write(f"versions URL: {versions_url()}")
        self.stdout.write(f"token A:      {token}")
