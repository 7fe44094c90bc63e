"""`python manage.py cpo_simulator --port P [options]`: thin wrapper around the stand-alone simulator."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cposim.cli import run
from cposim.config import add_arguments, config_from_options


class Command(BaseCommand):
    """Run the OCPI 2.2.1 CPO simulator (same options as `python -m cposim`)."""

    help = "Run the OCPI 2.2.1 CPO simulator on 127.0.0.1 (test and demo peer of the eMSP)."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        """Same options as the stand-alone CLI."""
        add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        """Build the config and run until SIGTERM/SIGINT."""
        try:
            cfg = config_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        run(cfg)
