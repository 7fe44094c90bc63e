"""`manage.py settlement_report --party cpo:IN*CPA|bap:<bap_id> --period 2026-10 [--format csv|xlsx] [--output FILE]
[--details]`: compute a CPO's (or a consumer app's) settlement for a month (or a range of months) and export it.
`--partner IN*CPA` and `--all-partners` work as before; `--party bap:*` reports every app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import BapAgreement, LedgerAccount, Settlement
from billing.services.bap_settlement import (
    BapSettlement,
    BapSettlementError,
    bap_lines_csv,
    bap_settlement_csv,
    bap_settlement_xlsx,
    bap_settlements_compute,
)
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
ALL_BAPS = "*"


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


def find_bap(text: str) -> str:
    """A consumer app's bap_id, known from its agreement or its ledger accounts; `*` for every app."""
    bap_id = text.strip()
    if bap_id == ALL_BAPS:
        return bap_id
    known = (
        BapAgreement.objects.filter(bap_id=bap_id).exists()
        or LedgerAccount.objects.filter(code__in=[f"bap:{bap_id}:receivable", f"bap:{bap_id}:payable"]).exists()
    )
    if not bap_id or not known:
        raise CommandError(
            f"no BAP {bap_id!r} (no agreement and no ledger account; give its Beckn bap_id)",
            returncode=EXIT_BAD_INPUT,
        )
    return bap_id


class Command(BaseCommand):
    help = (
        "Compute the settlement of a CPO (or of every CPO) or of a consumer app (BAP) for a month and export it: "
        "CSV on stdout by default, XLSX with --output. --details adds one row per CDR (per charge for an app)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument(
            "--party",
            help="cpo:CC*PID (e.g. cpo:IN*CPA), bap:<bap_id> (bap:* for every app), or as --partner",
        )
        who.add_argument("--partner", help="CC*PID (e.g. IN*CPA), partner id or name")
        who.add_argument("--all-partners", action="store_true", help="every partner with CDRs in the period")
        parser.add_argument("--period", required=True, help="YYYY-MM, or YYYY-MM..YYYY-MM for several months")
        parser.add_argument("--format", choices=["csv", "xlsx"], help="default: from --output's suffix, else csv")
        parser.add_argument("--output", help="file to write (required for xlsx and for CSV --details)")
        parser.add_argument(
            "--details",
            action="store_true",
            help="per-CDR (per-charge) rows: a second sheet in XLSX; with CSV a second file next to --output "
            "(-cdrs.csv, -lines.csv for an app)",
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

        partner_text = options["partner"]
        party = (options["party"] or "").strip()
        kind, colon, rest = party.partition(":")
        if colon and kind.lower() == "bap":
            bap_id = find_bap(rest)
            self._bap(None if bap_id == ALL_BAPS else bap_id, months, fmt, output, options["details"])
            return
        if party:
            partner_text = rest if colon and kind.lower() == "cpo" else party
        partners = [find_partner(partner_text)] if partner_text else None

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

    def _bap(self, bap_id: str | None, months: list[Any], fmt: str, output: Path | None, details: bool) -> None:
        """A consumer app's settlement (billing/services/bap_settlement.py), from the ledger."""
        settlements: list[BapSettlement] = []
        try:
            for period_start, period_end in months:
                settlements += bap_settlements_compute(period_start=period_start, period_end=period_end, bap_id=bap_id)
        except BapSettlementError as error:
            raise CommandError(str(error), returncode=EXIT_BAD_INPUT) from None
        if fmt == "xlsx":
            assert output is not None
            self._write(output, bap_settlement_xlsx(settlements, include_lines=details))
        elif output is None:
            self.stdout.write(bap_settlement_csv(settlements), ending="")
        else:
            self._write(output, bap_settlement_csv(settlements).encode())
            if details:
                lines = output.with_name(f"{output.stem}-lines.csv")
                self._write(lines, bap_lines_csv(settlements).encode())
                self.stderr.write(f"per-charge rows written to {lines}")
        if output is not None:
            self.stderr.write(f"{len(settlements)} BAP settlement row(s) written to {output}")

    def _open(self, path: Path) -> Any:
        try:
            return path.open("wb")
        except OSError as error:
            raise CommandError(f"cannot write {path}: {error.strerror}", returncode=EXIT_BAD_INPUT) from None

    def _write(self, path: Path, content: bytes) -> None:
        with self._open(path) as handle:
            handle.write(content)
