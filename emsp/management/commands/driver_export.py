"""Everything we hold about one driver, as JSON (a data subject's access and portability request)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from django.core.management.base import BaseCommand, CommandError, CommandParser

from emsp import privacy
from emsp.models import Driver


def find_driver(options: dict[str, Any]) -> Driver:
    if options["driver"]:
        driver = Driver.objects.filter(pk=options["driver"]).first()
    else:
        accounts = Driver.objects.filter(email__iexact=options["email"] or "", app_id=options["app"] or "")
        if accounts.count() > 1:
            raise CommandError("several accounts match: name one with --driver")
        driver = accounts.first()
    if driver is None:
        raise CommandError("no such driver (--driver ID, or --email with --app for an app's account)")
    return driver


class Command(BaseCommand):
    help = "Export one driver's personal data (account, tokens, bookings, sessions, receipts, journeys) as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--driver", type=int, help="The driver's id.")
        parser.add_argument("--email", help="The driver's email …")
        parser.add_argument("--app", default="", help="… and the consumer app (bap_id) the account is of.")
        parser.add_argument("--output", type=Path, help="Write to this file instead of standard output.")

    def handle(self, *args: Any, **options: Any) -> None:
        data = orjson.dumps(privacy.driver_export(find_driver(options)), option=orjson.OPT_INDENT_2)
        if options["output"]:
            options["output"].write_bytes(data)
            self.stderr.write(f"written to {options['output']}")
        else:
            self.stdout.write(data.decode())
