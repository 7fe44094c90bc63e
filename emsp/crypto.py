"""Secrets and personal data at rest, encrypted with keys from the environment (FIELD_ENCRYPTION_KEYS):
MultiFernet (cryptography), so the first key encrypts, every listed key decrypts, and keys rotate by putting a
new one first and running `manage.py rotate_encryption_keys`. Without keys (development only) one key is
derived from SECRET_KEY. Model fields here encrypt on the way to the database and decrypt on the way back:
what the database holds is never usable without the keys."""

from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "enc1:"  # marks a value we encrypted (rows written before encryption existed hold plain text)


@lru_cache(maxsize=1)
def _keys() -> MultiFernet:
    configured = [key.strip() for key in settings.FIELD_ENCRYPTION_KEYS if key.strip()]
    if not configured:
        if settings.PRODUCTION:
            raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is required in production (manage.py encryption_key)")
        digest = hashlib.sha256(f"field-encryption:{settings.SECRET_KEY}".encode()).digest()
        configured = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key) for key in configured])
    except ValueError as exc:
        raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS: {exc} (each key: 32 bytes, url-safe base64)") from exc


def forget_keys() -> None:
    """Read FIELD_ENCRYPTION_KEYS again (tests, key rotation in a running process)."""
    _keys.cache_clear()


def new_key() -> str:
    return Fernet.generate_key().decode()


def encrypt(text: str) -> str:
    return PREFIX + _keys().encrypt(text.encode()).decode()


def decrypt(value: str) -> str:
    if not value.startswith(PREFIX):
        return value  # written before encryption: still readable, encrypted at its next save
    try:
        return _keys().decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise ImproperlyConfigured("a value cannot be decrypted with FIELD_ENCRYPTION_KEYS (a key missing?)") from exc


def reencrypt(value: str) -> str:
    """The value under the first (current) key."""
    if not value:
        return value
    if not value.startswith(PREFIX):
        return encrypt(value)
    return PREFIX + _keys().rotate(value[len(PREFIX) :].encode()).decode()


class EncryptedTextField(models.TextField):
    """A text column holding only ciphertext; "" stays "" (nothing to hide, and queries for blank work)."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return value if not value else decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        return value if not value else encrypt(value)


class EncryptedJSONField(models.TextField):
    """A JSON value (dict or list) stored as ciphertext of its JSON text."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if not value:
            return {}
        return orjson.loads(decrypt(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            return orjson.loads(value) if value else {}
        return value

    def get_prep_value(self, value: Any) -> Any:
        if value in (None, {}, []):
            return ""
        return encrypt(orjson.dumps(value).decode())

    def value_to_string(self, obj: Any) -> str:
        return orjson.dumps(self.value_from_object(obj)).decode()
