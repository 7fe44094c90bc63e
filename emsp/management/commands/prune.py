"""`manage.py prune [--dry-run] [--kind K ...]`: delete what is past its retention now, as the hourly beat task
does (emsp/privacy.py purge_expired; settings RETENTION_DAYS, PRUNE_BATCH_SIZE, PRUNE_MAX_ROWS_PER_RUN), and
print per table how many rows went — or, with --dry-run, would go."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emsp import privacy


class Command(BaseCommand):
    help = "Delete rows past their retention (settings.RETENTION_DAYS), in batches; --dry-run only counts them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would go, delete nothing.")
        parser.add_argument(
            "--kind",
            action="append",
            dest="kinds",
            metavar="KIND",
            help="Only this retention class (repeatable): " + ", ".join(privacy.retention_kinds()),
        )
        parser.add_argument("--batch-size", type=int, help="Rows per batch (default PRUNE_BATCH_SIZE).")
        parser.add_argument("--max-rows", type=int, help="Rows per kind this run (default PRUNE_MAX_ROWS_PER_RUN).")

    def handle(self, *args: Any, **options: Any) -> None:
        kinds = options["kinds"]
        unknown = sorted(set(kinds or ()) - set(privacy.retention_kinds()))
        if unknown:
            raise CommandError(f"unknown kind {', '.join(unknown)}; known: {', '.join(privacy.retention_kinds())}")
        for name, value in (("--batch-size", options["batch_size"]), ("--max-rows", options["max_rows"])):
            if value is not None and value < 1:
                raise CommandError(f"{name} must be at least 1")
        dry_run = options["dry_run"]
        started = time.monotonic()
        counts = privacy.purge_expired(
            kinds=kinds, dry_run=dry_run, batch_size=options["batch_size"], max_rows=options["max_rows"]
        )
        verb = "would go" if dry_run else "deleted"
        width = max((len(k) for k in counts), default=0)
        for key, count in sorted(counts.items()):
            self.stdout.write(f"{key:<{width}}  {count:>12,} {verb}")
        total = sum(counts.values())
        self.stdout.write(
            f"{'total':<{width}}  {total:>12,} {verb} in {time.monotonic() - started:.1f} s"
            + (" (dry run: nothing deleted)" if dry_run else "")
        )
