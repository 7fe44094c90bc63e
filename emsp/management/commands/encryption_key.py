"""Print a new key for FIELD_ENCRYPTION_KEYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from emsp import crypto


class Command(BaseCommand):
    help = "Print a new Fernet key for FIELD_ENCRYPTION_KEYS (put it first to make it the key that encrypts)."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(crypto.new_key())
