"""Keys and secrets of the domain: case-insensitive OCPI ids, token hashes, new ids and tokens."""

from __future__ import annotations

import hashlib
import secrets
import uuid


def ci_key(*parts: str) -> str:
    """The case-insensitive key of an OCPI CiString id (or a `*`-joined tuple of them)."""
    if len(parts) == 1:  # most keys (an EVSE uid, a token uid): no join at all
        return parts[0].strip().upper()
    return "*".join([p.strip().upper() for p in parts])  # a list: join() would build one from a generator


def hash_token(token: str) -> str:
    """Tokens we only verify are stored as SHA-256: they are random and long, so a fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_reservation_id() -> str:
    return str(uuid.uuid4())


def new_credentials_token() -> str:
    # OCPI credentials token: string(64) of printable non-whitespace ASCII; urlsafe base64 qualifies.
    return secrets.token_urlsafe(48)[:64]
