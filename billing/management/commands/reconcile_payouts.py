"""`manage.py reconcile_payouts --provider stripe|razorpay FILE [--since YYYY-MM-DD] [--until YYYY-MM-DD]
[--show 20]`: reconcile a provider's payout file against our payments, the ledger and the bills
(billing/services/reconciliation.py), store the run, print the summary and the first mismatches.
Exit status 0 when everything agrees, 1 when there are mismatches, 2 when the file or the arguments are unusable."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services.reconciliation import PROVIDERS, ReconciliationError, reconcile_payout_file

EXIT_MISMATCHES = 1
EXIT_BAD_INPUT = 2


def day(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise CommandError(f"{text!r} is not a date (YYYY-MM-DD)", returncode=EXIT_BAD_INPUT) from None


class Command(BaseCommand):
    help = "Reconcile a payment provider's payout file against our payments, the ledger and the bills."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the payout file (CSV) as the provider exports it")
        parser.add_argument("--provider", required=True, choices=PROVIDERS)
        parser.add_argument("--since", help="our payments created from this day (UTC) must be in the file")
        parser.add_argument("--until", help="…and before this day (default: every captured payment)")
        parser.add_argument("--show", type=int, default=20, help="mismatches to print (default 20)")

    def handle(self, *args: Any, **options: Any) -> None:
        since = day(options["since"]) if options["since"] else None
        until = day(options["until"]) if options["until"] else None
        try:
            run = reconcile_payout_file(
                provider=options["provider"], path_or_file=options["file"], since=since, until=until
            )
        except ReconciliationError as exc:
            raise CommandError(str(exc), returncode=EXIT_BAD_INPUT) from None
        outcome = run.outcome  # type: ignore[attr-defined]
        self.stdout.write(
            f"{run.provider} {run.file_name}: {run.rows:,} rows, {outcome.payments_in_file:,} payments in the file, "
            f"{outcome.payments_expected:,} expected of ours, {run.matched:,} matched, "
            f"{run.mismatch_count:,} mismatches, {outcome.skipped_rows:,} rows not a payment's; {run.seconds:.1f} s "
            f"(run #{run.pk})"
        )
        for (payout, currency), totals in sorted(outcome.payouts.items()):
            self.stdout.write(
                f"  payout {payout or '(none)'} {currency}: {totals.rows:,} rows, gross {totals.gross:,}, "
                f"fee {totals.fee:,}, net {totals.net:,} (minor units)"
            )
        if run.mismatch_count:
            kinds = Counter(m["kind"] for m in run.mismatches)
            stored = "" if run.mismatch_count == len(run.mismatches) else f" (of the first {len(run.mismatches):,})"
            self.stdout.write("by kind" + stored + ": " + ", ".join(f"{k} {n:,}" for k, n in kinds.most_common()))
            for found in run.mismatches[: options["show"]]:
                where = " ".join(f"{k}={found[k]}" for k in ("payment_id", "payment", "line") if k in found)
                self.stdout.write(f"  {found['kind']}: {where}: {found['reason']}")
            raise CommandError(f"{run.mismatch_count:,} mismatches", returncode=EXIT_MISMATCHES)
