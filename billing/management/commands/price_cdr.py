"""`manage.py price_cdr CDR.json [--tariff T.json] [--time-zone ZONE]`: reprice a CDR file, print JSON."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.money import ROUNDING_POLICIES
from billing.pricing import PricingError, Tariff, parse_tariff, price_cdr

# CommandError's exit status for bad input (argparse uses 2 for usage errors as well).
EXIT_BAD_INPUT = 2


def _load(path: str, what: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CommandError(f"cannot read {what} file {path}: {error.strerror}", returncode=EXIT_BAD_INPUT) from None
    try:
        # parse_float keeps every number exact from the start (no binary float in between).
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as error:
        raise CommandError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})",
            returncode=EXIT_BAD_INPUT,
        ) from None
    # Accept a whole OCPI response (`{"data": ..., "status_code": 1000}`) as well as the bare object.
    if isinstance(data, dict) and "status_code" in data and "data" in data:
        data = data["data"]
    return data


class Command(BaseCommand):
    help = "Reprice an OCPI 2.2.1 CDR with its own (or the given) tariffs and print the totals as JSON."
    requires_system_checks: list[str] = []  # pure computation: no database, no app checks
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("cdr", help="CDR JSON file (OCPI 2.2.1 CDR object)")
        parser.add_argument(
            "--tariff",
            action="append",
            default=[],
            help="Tariff JSON file (object or list); repeatable. Default: the CDR's own `tariffs`.",
        )
        parser.add_argument(
            "--time-zone",
            help="IANA zone of the location (default: cdr_location.time_zone, else UTC with a warning)",
        )
        parser.add_argument(
            "--rounding",
            choices=sorted(ROUNDING_POLICIES),
            help="round money to the currency's minor unit with this policy (default: exact amounts)",
        )
        parser.add_argument(
            "--missing-vat",
            choices=("unknown", "exempt"),
            default="unknown",
            help="how to treat a price component without `vat` (default: incl. VAT unknown)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cdr = _load(options["cdr"], "CDR")
        tariffs: list[Tariff] | None = None
        if options["tariff"]:
            tariffs = []
            for path in options["tariff"]:
                data = _load(path, "tariff")
                for index, item in enumerate(data if isinstance(data, list) else [data]):
                    prefix = f"[{index}]" if isinstance(data, list) else ""
                    try:
                        tariffs.append(parse_tariff(item, path=prefix))
                    except PricingError as error:
                        raise CommandError(f"{path}: {error}", returncode=EXIT_BAD_INPUT) from None
        try:
            result = price_cdr(
                cdr,
                tariffs=tariffs,
                time_zone=options["time_zone"],
                rounding=options["rounding"],
                missing_vat=options["missing_vat"],
            )
        except PricingError as error:
            raise CommandError(f"{options['cdr']}: {error}", returncode=EXIT_BAD_INPUT) from None
        self.stdout.write(json.dumps(result.to_dict(), indent=2))
