"""Erase one driver's personal data (a data subject's erasure request), keeping what tax law needs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emsp import privacy
from emsp.management.commands.driver_export import find_driver


class Command(BaseCommand):
    help = (
        "Pseudonymise a driver: contact and billing details, stored messages naming them, tokens invalidated "
        "(and pushed to every CPO); CDRs, receipts and settlements are kept on the nameless account."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--driver", type=int, help="The driver's id.")
        parser.add_argument("--email", help="The driver's email …")
        parser.add_argument("--app", default="", help="… and the consumer app (bap_id) the account is of.")
        parser.add_argument("--yes", action="store_true", help="Really erase (it cannot be undone).")

    def handle(self, *args: Any, **options: Any) -> None:
        driver = find_driver(options)
        if driver.erased_at is not None:
            raise CommandError(f"driver {driver.pk} was erased on {driver.erased_at:%Y-%m-%d}")
        if not options["yes"]:
            raise CommandError(f"this erases driver {driver.pk} ({driver.email or driver.phone}): add --yes")
        counts = privacy.driver_erase(driver)
        self.stdout.write(f"driver {driver.pk} erased: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
