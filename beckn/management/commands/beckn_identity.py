"""Print our Beckn registry entry (subscriber id, key id, public key, URL, type, domains) as JSON."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from beckn.keys import registry_entry


class Command(BaseCommand):
    help = "Print the registry entry for this BPP as JSON: give it to the network's registry to subscribe."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(registry_entry(), indent=2))
