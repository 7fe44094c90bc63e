"""Secrets at rest: the token we send partners, drivers' billing details and our Beckn signing key are
encrypted with keys from the environment; the database holds nothing usable without them, and keys rotate."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from beckn.models import BecknTransaction
from emsp import crypto
from emsp.models import Partner

pytestmark = pytest.mark.django_db

KEY_A, KEY_B = crypto.new_key(), crypto.new_key()


@pytest.fixture(autouse=True)
def _keys(settings: Any) -> Iterator[None]:
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    crypto.forget_keys()
    yield
    crypto.forget_keys()


def raw(table: str, column: str) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table}")  # noqa: S608 - fixed names
        return [row[0] for row in cursor.fetchall()]


def everything_stored() -> str:
    """Every text a database dump of our tables would show."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            if table.startswith(("emsp_", "ocpi_", "beckn_", "billing_")):
                cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - names from introspection
                chunks += [str(value) for row in cursor.fetchall() for value in row]
    return "\n".join(chunks)


def test_the_database_holds_no_usable_partner_token(partner: Partner) -> None:
    partner.outgoing_token = "token-c-we-present-to-the-cpo"
    partner.save()
    assert raw("emsp_partner", "outgoing_token")[0].startswith(crypto.PREFIX)
    assert "token-c-we-present-to-the-cpo" not in everything_stored()
    assert Partner.objects.get(pk=partner.pk).outgoing_token == "token-c-we-present-to-the-cpo"


def test_billing_and_contact_details_are_stored_encrypted(db: None) -> None:
    txn = BecknTransaction.objects.create(
        bap_id="bap.example", transaction_id="t-1", bap_uri="https://bap.example/beckn",
        callback_uri="https://bap.example/beckn", domain="ev-charging:beckn",
        billing={"name": "Asha Rao", "email": "asha@example.com", "phone": "+919845000000"},
    )  # fmt: skip
    stored = everything_stored()
    assert "asha@example.com" not in stored and "Asha Rao" not in stored
    assert BecknTransaction.objects.get(pk=txn.pk).billing["email"] == "asha@example.com"


def test_keys_rotate_and_the_old_key_can_then_be_dropped(partner: Partner, settings: Any) -> None:
    partner.outgoing_token = "rotating-token"
    partner.save()
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B, KEY_A]  # the new key first: it encrypts, both decrypt
    call_command("rotate_encryption_keys", stdout=None)
    settings.FIELD_ENCRYPTION_KEYS = [KEY_B]
    crypto.forget_keys()
    assert Partner.objects.get(pk=partner.pk).outgoing_token == "rotating-token"
    settings.FIELD_ENCRYPTION_KEYS = [KEY_A]
    crypto.forget_keys()
    with pytest.raises(ImproperlyConfigured):
        Partner.objects.get(pk=partner.pk)


def test_rows_from_before_encryption_are_read_and_encrypted_on_their_next_save(partner: Partner) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE emsp_partner SET outgoing_token = %s WHERE id = %s", ["legacy-plain", partner.pk])
    legacy = Partner.objects.get(pk=partner.pk)
    assert legacy.outgoing_token == "legacy-plain"
    legacy.save()
    assert raw("emsp_partner", "outgoing_token")[0].startswith(crypto.PREFIX)


def test_our_beckn_signing_key_may_be_given_encrypted(settings: Any) -> None:
    from beckn import keys
    from beckn.signing import generate_keypair

    private, public = generate_keypair()
    settings.BECKN_SIGNING_PRIVATE_KEY = crypto.encrypt(private)
    keys._configured_key.cache_clear()
    try:
        assert keys.our_public_key_b64() == public
    finally:
        keys._configured_key.cache_clear()
