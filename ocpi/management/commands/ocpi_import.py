"""Import an OCPI locations (or tariffs) file through the same lenient ingest as the pull sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from emsp.models import Partner
from emsp.services.partners import PartyTaken, partner_party_grant
from ocpi.normalize import Normalizer, Rejected, normalize_location, normalize_tariff, unwrap_list_payload
from ocpi.sync import IngestCounts, ingest_page

PAGE = 500
# The normalisers ocpi.sync.ingest_page runs for each module: the parties granted are the ones it will store under.
NORMALIZERS: dict[str, Normalizer] = {"locations": normalize_location, "tariffs": normalize_tariff}


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
        # it — unless another connection holds one. The party is the one the normaliser reads (alpha-3 "AUT" is
        # AT, camelCase countryCode/partyId are read, a missing one is the partner's), so what is granted is what
        # ingest_page stores under; an object the normaliser refuses (a 4-character party id among them) grants
        # nothing and is rejected, counted, by ingest_page below.
        for cc, pid in sorted(_parties(objects, options["module"], partner)):
            if not partner.owns(cc, pid):
                try:
                    partner_party_grant(partner=partner, country_code=cc, party_id=pid, by="ocpi_import")
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


def _parties(objects: list[Any], module: str, partner: Partner) -> set[tuple[str, str]]:
    """The (country_code, party_id) of each object the module's normaliser accepts, as it cleans them."""
    normalize = NORMALIZERS[module]
    parties: set[tuple[str, str]] = set()
    for raw in objects:
        if not isinstance(raw, dict):
            continue
        try:
            clean, _ = normalize(raw, country_code=partner.country_code, party_id=partner.party_id)
        except Rejected:
            continue  # refused whole: ingest_page records why; its party is not one to grant
        parties.add((clean["country_code"], clean["party_id"]))
    return parties
