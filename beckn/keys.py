"""Our own Beckn identity: the signing key from BECKN_SIGNING_PRIVATE_KEY (or a kept development key),
the headers we sign our callbacks with, and the registry entry we ask the network to publish."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from beckn.signing import KeyFormatError, generate_keypair, load_private_key, public_key_b64, sign_request
from emsp import crypto
from emsp.datetimes import format_datetime

log = logging.getLogger(__name__)

DEV_KEY_FILE = "beckn-dev-signing-key"
REGISTRY_VALIDITY = timedelta(days=365)  # valid_until we propose; the registry may shorten it


def our_private_key() -> Ed25519PrivateKey:
    """BECKN_SIGNING_PRIVATE_KEY (32-byte seed or 64-byte libsodium form, base64). Unset outside production:
    a development key generated once and kept in var/ so restarts (and web/worker processes) share it."""
    configured = settings.BECKN_SIGNING_PRIVATE_KEY.strip()
    if configured:
        return _configured_key(configured)
    if settings.PRODUCTION:
        raise ImproperlyConfigured(
            "BECKN_SIGNING_PRIVATE_KEY is required in production (make one with `python manage.py beckn_keygen`)"
        )
    return _development_key(str(Path(settings.VAR_DIR) / DEV_KEY_FILE))


@lru_cache(maxsize=4)
def _configured_key(value: str) -> Ed25519PrivateKey:
    # The key may be given encrypted with FIELD_ENCRYPTION_KEYS (`beckn_keygen --encrypted`): then the
    # environment holding it is not enough to sign as us.
    try:
        return load_private_key(crypto.decrypt(value))
    except KeyFormatError as exc:
        raise ImproperlyConfigured(f"BECKN_SIGNING_PRIVATE_KEY: {exc}") from exc


@lru_cache(maxsize=4)
def _development_key(path: str) -> Ed25519PrivateKey:
    target = Path(path)
    if not target.exists():
        private, _ = generate_keypair()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written to a 0600 temp file then hard-linked into place: link() fails if another process (worker,
        # beat) got there first, and then everyone uses that one.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".beckn-key-")
        try:
            os.write(fd, crypto.encrypt(private).encode() + b"\n")  # at rest only with the keys
            os.close(fd)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, target)
        finally:
            os.unlink(tmp)
    try:
        key = load_private_key(crypto.decrypt(target.read_text().strip()))
    except KeyFormatError as exc:
        raise ImproperlyConfigured(f"{target}: {exc} (delete it to make a new development key)") from exc
    log.warning(
        "BECKN_SIGNING_PRIVATE_KEY is not set: signing with the development key in %s (public key %s). "
        "Set a real key before joining a network.",
        target,
        public_key_b64(key),
    )
    return key


def our_public_key_b64() -> str:
    return public_key_b64(our_private_key())


def sign_outgoing(body: bytes, *, ttl_seconds: int) -> str:
    """The `Authorization` header value for a request or callback we send with exactly these bytes.

    created = now, expires = now + ttl_seconds, where ttl_seconds is the message's own context.ttl: BECKN-006
    "The difference between the created and the expires field should be equal to the TTL of the request". No
    default on purpose: a fixed one (it was 300 s) outlived our 30 s callbacks' ttl tenfold."""
    created = int(time.time())
    return sign_request(
        body,
        subscriber_id=settings.BECKN_SUBSCRIBER_ID,
        unique_key_id=settings.BECKN_UNIQUE_KEY_ID,
        private_key=our_private_key(),
        created=created,
        expires=created + ttl_seconds,
    )


def registry_entry() -> dict[str, Any]:
    """What we ask the registry to publish about us, with the field names of both dialects: core 1.1.0
    Subscription (`url`, `key_id`, `domain`) and Succinct/ONIX (`subscriber_url`, `ukId`, `unique_key_id`,
    `pub_key_id`, `domains`)."""
    now = datetime.now(tz=UTC).replace(microsecond=0)
    domains = list(settings.BECKN_DOMAINS)
    key_id = settings.BECKN_UNIQUE_KEY_ID
    return {
        "subscriber_id": settings.BECKN_SUBSCRIBER_ID,
        "subscriber_url": settings.BECKN_SUBSCRIBER_URL,
        "url": settings.BECKN_SUBSCRIBER_URL,
        "type": "BPP",
        "domain": domains[0] if domains else "",
        "domains": domains,
        "unique_key_id": key_id,
        "ukId": key_id,
        "key_id": key_id,
        "pub_key_id": key_id,
        "signing_public_key": our_public_key_b64(),
        "valid_from": _rfc3339(now),
        "valid_until": _rfc3339(now + REGISTRY_VALIDITY),
    }


def _rfc3339(moment: datetime) -> str:
    return format_datetime(moment, "millis")
