"""`manage.py settlement_report --partner IN*CPA --period 2026-10 [--format csv|xlsx] [--output FILE] [--details]`:
compute a CPO's settlement for a month (or a range of months) and export it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import Settlement
from billing.services.settlement import (
    SettlementError,
    parse_period,
    settlement_cdrs_csv,
    settlement_csv,
    settlement_xlsx,
    settlements_compute,
)
from emsp.models import Partner

# CommandError's exit status for bad input, as argparse uses for usage errors.
EXIT_BAD_INPUT = 2


def find_partner(text: str) -> Partner:
    """A partner by CC*PID, by id, or by its name (case-insensitive)."""
    text = text.strip()
    country_code, star, party_id = text.partition("*")
    if star:
        found = Partner.objects.filter(country_code=country_code.strip().upper(), party_id=party_id.strip().upper())
    elif text.isdigit():
        found = Partner.objects.filter(pk=int(text))
    else:
        found = Partner.objects.filter(name__iexact=text)
    partners = list(found[:2])
    if not partners:
        raise CommandError(f"no partner {text!r} (give CC*PID, an id or a name)", returncode=EXIT_BAD_INPUT)
    if len(partners) > 1:
        raise CommandError(f"more than one partner is named {text!r}; give CC*PID", returncode=EXIT_BAD_INPUT)
    return partners[0]


class Command(BaseCommand):
    help = (
        "Compute the settlement of a CPO (or of every CPO) for a month and export it: CSV on stdout by default, "
        "XLSX with --output. --details adds one row per CDR."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--partner", help="CC*PID (e.g. IN*CPA), partner id or name")
        who.add_argument("--all-partners", action="store_true", help="every partner with CDRs in the period")
        parser.add_argument("--period", required=True, help="YYYY-MM, or YYYY-MM..YYYY-MM for several months")
        parser.add_argument("--format", choices=["csv", "xlsx"], help="default: from --output's suffix, else csv")
        parser.add_argument("--output", help="file to write (required for xlsx and for CSV --details)")
        parser.add_argument(
            "--details",
            action="store_true",
            help="per-CDR rows: a second sheet in XLSX; with CSV a second file next to --output (-cdrs.csv)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            months = parse_period(options["period"])
        except ValueError as error:
            raise CommandError(str(error), returncode=EXIT_BAD_INPUT) from None
        output = Path(options["output"]) if options["output"] else None
        fmt = options["format"] or ("xlsx" if output is not None and output.suffix.lower() == ".xlsx" else "csv")
        if output is None and (fmt == "xlsx" or options["details"]):
            what = "XLSX" if fmt == "xlsx" else "--details"
            raise CommandError(f"{what} needs --output FILE", returncode=EXIT_BAD_INPUT)
        partners = [find_partner(options["partner"])] if options["partner"] else None

        settlements: list[Settlement] = []
        for period_start, period_end in months:
            settlements += settlements_compute(period_start=period_start, period_end=period_end, partners=partners)

        try:
            if fmt == "xlsx":
                assert output is not None
                self._write(output, settlement_xlsx(settlements, include_cdrs=options["details"]))
            elif output is None:
                self.stdout.write(settlement_csv(settlements), ending="")
            else:
                self._write(output, settlement_csv(settlements).encode())
                if options["details"]:
                    details = output.with_name(f"{output.stem}-cdrs.csv")
                    with self._open(details) as handle:
                        for piece in settlement_cdrs_csv(settlements):
                            handle.write(piece.encode())
                    self.stderr.write(f"per-CDR rows written to {details}")
        except SettlementError as error:
            raise CommandError(str(error), returncode=EXIT_BAD_INPUT) from None
        if output is not None:
            self.stderr.write(f"{len(settlements)} settlement row(s) written to {output}")

    def _open(self, path: Path) -> Any:
        try:
            return path.open("wb")
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror}", returncode=EXIT_BAD_INPUT) from None

    def _write(self, path: Path, content: bytes) -> None:
        with self._open(path) as handle:
            handle.write(content)
