"""Our Beckn identity: the signing key (configured or a kept development key), signing our callbacks, the
registry entry, and the `beckn_keygen` / `beckn_identity` commands."""

from __future__ import annotations

import base64
import json
import logging
import stat
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from beckn import keys
from beckn.signing import load_private_key, parse_signature_header, public_key_b64, verify_signature
from emsp import crypto


@pytest.fixture(autouse=True)
def _identity(tmp_path: Path) -> Iterator[None]:
    with override_settings(
        BECKN_SUBSCRIBER_ID="bpp.example.com",
        BECKN_SUBSCRIBER_URL="https://bpp.example.com/beckn",
        BECKN_UNIQUE_KEY_ID="bpp-k1",
        BECKN_DOMAINS=["ev-charging:beckn", "uei:ev-charging"],
        BECKN_SIGNING_PRIVATE_KEY="",
        VAR_DIR=tmp_path,
        PRODUCTION=False,
    ):
        yield


def run(command: str, *args: str) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


def test_keygen_prints_a_64_byte_key_and_its_public_key() -> None:
    lines = dict(line.split("=", 1) for line in run("beckn_keygen").splitlines())

    private = lines["BECKN_SIGNING_PRIVATE_KEY"]
    assert len(base64.b64decode(private)) == 64
    assert public_key_b64(load_private_key(private)) == lines["signing_public_key"]


def test_keygen_prints_the_32_byte_seed_on_request() -> None:
    lines = dict(line.split("=", 1) for line in run("beckn_keygen", "--seed32").splitlines())

    private = lines["BECKN_SIGNING_PRIVATE_KEY"]
    assert len(base64.b64decode(private)) == 32
    assert public_key_b64(load_private_key(private)) == lines["signing_public_key"]


def test_keygen_makes_a_new_key_each_time() -> None:
    assert run("beckn_keygen") != run("beckn_keygen")


@pytest.mark.parametrize("key_form", ["signing_private_key_b64_libsodium64", "ed25519_seed_b64_32"])
def test_identity_prints_our_registry_entry(bap_keys: dict[str, str], key_form: str) -> None:
    with (
        override_settings(BECKN_SIGNING_PRIVATE_KEY=bap_keys[key_form]),
        time_machine.travel("2026-03-01T12:00:00Z", tick=False),
    ):
        entry = json.loads(run("beckn_identity"))

    assert entry == {
        "subscriber_id": "bpp.example.com",
        "subscriber_url": "https://bpp.example.com/beckn",
        "url": "https://bpp.example.com/beckn",
        "type": "BPP",
        "domain": "ev-charging:beckn",
        "domains": ["ev-charging:beckn", "uei:ev-charging"],
        "unique_key_id": "bpp-k1",
        "ukId": "bpp-k1",
        "key_id": "bpp-k1",
        "pub_key_id": "bpp-k1",
        "signing_public_key": bap_keys["signing_public_key_b64"],
        "valid_from": "2026-03-01T12:00:00.000Z",
        "valid_until": "2027-03-01T12:00:00.000Z",
    }


def test_without_a_configured_key_it_keeps_a_development_key(tmp_path: Path, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="beckn.keys"):
        first = keys.our_public_key_b64()
    key_file = tmp_path / keys.DEV_KEY_FILE
    keys._development_key.cache_clear()  # a restart

    assert keys.our_public_key_b64() == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    stored = key_file.read_text().strip()
    assert stored.startswith(crypto.PREFIX)  # at rest only with the keys from the environment
    assert public_key_b64(load_private_key(crypto.decrypt(stored))) == first
    assert "BECKN_SIGNING_PRIVATE_KEY is not set" in caplog.text
    assert list(tmp_path.iterdir()) == [key_file]  # no temp files left behind


def test_in_production_a_missing_key_is_a_configuration_error() -> None:
    with override_settings(PRODUCTION=True), pytest.raises(ImproperlyConfigured, match="BECKN_SIGNING_PRIVATE_KEY"):
        keys.our_private_key()


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"x" * 40).decode()])
def test_a_bad_configured_key_is_a_configuration_error(value: str) -> None:
    with override_settings(BECKN_SIGNING_PRIVATE_KEY=value), pytest.raises(ImproperlyConfigured):
        keys.our_private_key()


@pytest.mark.parametrize("ttl", [300, 30])
def test_sign_outgoing_signs_the_exact_bytes_from_now_for_the_ttl(bap_keys: dict[str, str], ttl: int) -> None:
    body = b'{"context":{"action":"on_search","bpp_id":"bpp.example.com"},"message":{}}'
    with (
        override_settings(BECKN_SIGNING_PRIVATE_KEY=bap_keys["ed25519_seed_b64_32"]),
        time_machine.travel(1_700_000_000, tick=False),
    ):
        value = keys.sign_outgoing(body, ttl_seconds=ttl)

    header = parse_signature_header(value)
    assert header.key_id == "bpp.example.com|bpp-k1|ed25519"
    assert (header.created, header.expires) == (1_700_000_000, 1_700_000_000 + ttl)
    verify_signature(body, header, bap_keys["signing_public_key_b64"], now=1_700_000_000, skew=0)
