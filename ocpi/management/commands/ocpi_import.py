"""Import an OCPI locations (or tariffs) file through the same lenient ingest as the pull sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from emsp.models import Partner
from emsp.services.partners import PartyTaken, partner_party_grant
from ocpi.normalize import unwrap_list_payload
from ocpi.sync import IngestCounts, ingest_page

PAGE = 500


class Command(BaseCommand):
    help = "Import OCPI objects from FILE for PARTNER (CC*PID, created if missing), with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--partner", required=True, help="CC*PID of the partner the data belongs to")
        parser.add_argument("--module", default="locations", choices=["locations", "tariffs"])
        parser.add_argument("--name", default="", help="Name for a new partner")

    def handle(self, *args: Any, **options: Any) -> None:
        country_code, _, party_id = options["partner"].partition("*")
        if len(country_code) != 2 or not 1 <= len(party_id) <= 3:
            raise CommandError("--partner must look like CC*PID")
        try:
            payload = orjson.loads(options["file"].read_bytes().removeprefix(b"\xef\xbb\xbf"))  # some feeds carry a BOM
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CommandError(f"cannot read {options['file']}: {exc}") from exc
        objects = unwrap_list_payload(payload)
        partner, _ = Partner.objects.get_or_create(
            country_code=country_code.upper(),
            party_id=party_id.upper(),
            defaults={"name": options["name"] or f"{country_code.upper()}*{party_id.upper()} (imported)"},
        )
        # A file from a hub mixes parties: whoever runs this command grants the partner every party found in
        # it (a missing country_code or party_id is filled from the partner, as the normaliser does) —
        # unless another connection holds one.
        parties = {
            (
                str(o.get("country_code") or partner.country_code).strip().upper(),
                str(o.get("party_id") or partner.party_id).strip().upper(),
            )
            for o in objects
            if isinstance(o, dict)
        }
        for cc, pid in sorted(parties):
            if cc and pid and not partner.owns(cc, pid):
                try:
                    partner_party_grant(partner=partner, country_code=cc[:2], party_id=pid[:3], by="ocpi_import")
                except PartyTaken as exc:
                    raise CommandError(f"{exc}: import it as that partner") from exc
        totals = IngestCounts()
        with tqdm(total=len(objects), unit=options["module"][:-1], disable=options["verbosity"] == 0) as bar:
            for start in range(0, len(objects), PAGE):
                page = objects[start : start + PAGE]
                totals.add(ingest_page(partner, options["module"], page))
                bar.update(len(page))
        self.stdout.write(
            f"{options['file'].name}: received={totals.received} accepted={totals.accepted} "
            f"normalised={totals.normalised} rejected={totals.rejected} stored={totals.stored}"
        )
