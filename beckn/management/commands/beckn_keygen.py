"""Make a new Beckn signing key pair (Ed25519) for BECKN_SIGNING_PRIVATE_KEY and the registry."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from beckn.signing import generate_keypair, load_private_key, seed_b64
from emsp import crypto


class Command(BaseCommand):
    help = (
        "Print a new BECKN_SIGNING_PRIVATE_KEY (64-byte libsodium form seed‖public, base64) and its public key. "
        "Keep the private key secret; register the public key with the Beckn registry."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--encrypted",
            action="store_true",
            help="Print the private key encrypted with FIELD_ENCRYPTION_KEYS (enc1:…): the key is then no secret "
            "on its own wherever the environment is stored.",
        )
        parser.add_argument(
            "--seed32",
            action="store_true",
            help="Print the private key as the 32-byte seed (the form beckn-onix expects); we accept both.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        private, public = generate_keypair()
        if options["seed32"]:
            private = seed_b64(load_private_key(private))
        if options["encrypted"]:
            private = crypto.encrypt(private)
        self.stdout.write(f"BECKN_SIGNING_PRIVATE_KEY={private}")
        self.stdout.write(f"signing_public_key={public}")
