"""Authenticating incoming Beckn requests: Authorization and X-Gateway-Authorization on the raw body, keyId vs
bap_id, the validity window with frozen time, keys from trusted rows and the registry, and the 401 challenge."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import time_machine
from django.core.cache import cache
from django.test import RequestFactory, override_settings

from beckn.auth import BecknAuthError, VerifiedSender, verify_beckn_request
from beckn.models import BecknSubscriber
from beckn.signing import generate_keypair, load_private_key, sign_request

BAP = "example-bap.com"
BAP_KEY_ID = "ae3ea24b-cfec-495e-81f8-044aaef164ac"
BG = "example-bg.com"
BG_KEY_ID = "dfb974ea-9113-4089-9a2d-77552b50624e"
CREATED = 1641287875  # BECKN-006 Step 1
EXPIRES = 1641291475
BG_CREATED = 1641287885  # Step 3
REGISTRY = "https://registry.example.com"
CHALLENGE = 'Signature realm="bpp.example.com",headers="(created) (expires) digest"'

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _settings() -> Iterator[None]:
    with override_settings(
        BECKN_SUBSCRIBER_ID="bpp.example.com", BECKN_REGISTRY_URL="", BECKN_SIGNATURE_SKEW_SECONDS=5
    ):
        yield


@pytest.fixture
def trusted_bap(bap_keys: dict[str, str]) -> BecknSubscriber:
    return BecknSubscriber.objects.create(
        subscriber_id=BAP,
        unique_key_id=BAP_KEY_ID,
        type="BAP",
        signing_public_key=bap_keys["signing_public_key_b64"],
        trusted=True,
    )


@pytest.fixture
def trusted_bg(bg_keys: dict[str, str]) -> BecknSubscriber:
    return BecknSubscriber.objects.create(
        subscriber_id=BG,
        unique_key_id=BG_KEY_ID,
        type="BG",
        signing_public_key=bg_keys["signing_public_key_b64"],
        trusted=True,
    )


@pytest.fixture
def upstream(signing_vectors: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": signing_vectors["vector_1_bap_search_upstream"]["authorization_header"]}


@pytest.fixture
def gateway_header(signing_vectors: dict[str, Any]) -> str:
    return signing_vectors["vector_2_bg_x_gateway_authorization"]["x_gateway_authorization_header_computed_here"]


def refused(body: bytes, headers: dict[str, str], *, bap_id: str | None = BAP, now: int | None = CREATED) -> Any:
    with pytest.raises(BecknAuthError) as failure:
        verify_beckn_request(body, headers, bap_id=bap_id, now=now)
    return failure.value


def test_it_accepts_the_upstream_request(trusted_bap: Any, search_body: bytes, upstream: dict[str, str]) -> None:
    sender = verify_beckn_request(search_body, upstream, bap_id=BAP, now=CREATED)

    assert sender == VerifiedSender(subscriber_id=BAP, unique_key_id=BAP_KEY_ID, gateway_id=None)


def test_it_verifies_the_raw_bytes_of_a_django_request(
    trusted_bap: Any, search_body: bytes, upstream: dict[str, str]
) -> None:
    request = RequestFactory().post(
        "/beckn/search", data=search_body, content_type="application/json", HTTP_AUTHORIZATION=upstream["Authorization"]
    )

    sender = verify_beckn_request(request.body, request.headers, bap_id=BAP, now=CREATED)

    assert sender.subscriber_id == BAP


def test_it_reads_header_names_case_insensitively(
    trusted_bap: Any, search_body: bytes, upstream: dict[str, str]
) -> None:
    assert verify_beckn_request(search_body, {"authorization": upstream["Authorization"]}, bap_id=BAP, now=CREATED)


def test_it_refuses_an_unsigned_request_with_the_challenge(trusted_bap: Any, search_body: bytes) -> None:
    error = refused(search_body, {})

    assert (error.reason, error.header_name, error.header_value) == ("missing", "WWW-Authenticate", CHALLENGE)
    assert error.signature_header == "Authorization"


def test_it_refuses_a_tampered_body(trusted_bap: Any, search_body: bytes, upstream: dict[str, str]) -> None:
    error = refused(search_body.replace(b"Kochi", b"Kochy"), upstream)

    assert (error.reason, error.header_name) == ("bad_signature", "WWW-Authenticate")


def test_it_refuses_the_same_json_with_other_bytes(
    trusted_bap: Any, search_body: bytes, upstream: dict[str, str]
) -> None:
    assert refused(search_body + b"\n", upstream).reason == "bad_signature"


def test_it_refuses_a_key_id_that_is_not_the_bap_id(
    trusted_bap: Any, search_body: bytes, upstream: dict[str, str]
) -> None:
    error = refused(search_body, upstream, bap_id="bap.stayhalo.in")

    assert (error.reason, error.header_name, error.header_value) == (
        "subscriber_mismatch",
        "WWW-Authenticate",
        CHALLENGE,
    )


def test_it_refuses_an_unknown_key(search_body: bytes, upstream: dict[str, str]) -> None:
    assert refused(search_body, upstream).reason == "unknown_key"


def test_it_refuses_a_key_id_whose_algorithm_differs(
    trusted_bap: Any, search_body: bytes, upstream: dict[str, str]
) -> None:
    header = upstream["Authorization"].replace('algorithm="ed25519"', 'algorithm="rsa-sha256"')

    assert refused(search_body, {"Authorization": header}).reason == "algorithm_mismatch"


def test_it_refuses_a_malformed_header(trusted_bap: Any, search_body: bytes) -> None:
    assert refused(search_body, {"Authorization": "Signature keyId=nope"}).reason == "malformed"


@pytest.mark.parametrize(
    ("clock", "reason"),
    [
        (CREATED - 5, None),  # created may lead our clock by the skew
        (CREATED - 6, "not_yet_valid"),
        (EXPIRES, None),
        (EXPIRES + 1, "expired"),
    ],
)
def test_it_applies_the_skew_to_created_and_none_to_expires(
    trusted_bap: Any, search_body: bytes, upstream: dict[str, str], clock: int, reason: str | None
) -> None:
    with time_machine.travel(clock, tick=False):
        if reason is None:
            assert verify_beckn_request(search_body, upstream, bap_id=BAP).subscriber_id == BAP
        else:
            assert refused(search_body, upstream, now=None).reason == reason


@override_settings(BECKN_SIGNATURE_SKEW_SECONDS=0)
def test_the_skew_is_configurable(trusted_bap: Any, search_body: bytes, upstream: dict[str, str]) -> None:
    assert refused(search_body, upstream, now=CREATED - 1).reason == "not_yet_valid"


def test_it_accepts_a_request_forwarded_by_a_gateway(
    trusted_bap: Any, trusted_bg: Any, search_body: bytes, upstream: dict[str, str], gateway_header: str
) -> None:
    headers = {**upstream, "X-Gateway-Authorization": gateway_header}

    sender = verify_beckn_request(search_body, headers, bap_id=BAP, now=BG_CREATED)

    assert sender == VerifiedSender(subscriber_id=BAP, unique_key_id=BAP_KEY_ID, gateway_id=BG)


def test_it_refuses_a_bad_gateway_signature_with_proxy_authenticate(
    trusted_bap: Any,
    trusted_bg: Any,
    search_body: bytes,
    upstream: dict[str, str],
    gateway_header: str,
    signing_vectors: dict[str, Any],
) -> None:
    vector = signing_vectors["vector_2_bg_x_gateway_authorization"]
    wrong = gateway_header.replace(
        vector["signature_b64_computed_here"], vector["upstream_signature_value_is_wrong"][:88]
    )

    error = refused(search_body, {**upstream, "X-Gateway-Authorization": wrong}, now=BG_CREATED)

    assert (error.reason, error.header_name, error.header_value) == ("bad_signature", "Proxy-Authenticate", CHALLENGE)
    assert error.signature_header == "X-Gateway-Authorization"


def test_it_refuses_a_gateway_signature_from_a_subscriber_that_is_not_a_gateway(
    trusted_bap: Any, trusted_bg: Any, search_body: bytes, upstream: dict[str, str], gateway_header: str
) -> None:
    BecknSubscriber.objects.filter(pk=trusted_bg.pk).update(type="BAP")

    error = refused(search_body, {**upstream, "X-Gateway-Authorization": gateway_header}, now=BG_CREATED)

    assert (error.reason, error.header_name) == ("not_a_gateway", "Proxy-Authenticate")


def test_it_refuses_an_unknown_gateway(
    trusted_bap: Any, search_body: bytes, upstream: dict[str, str], gateway_header: str
) -> None:
    error = refused(search_body, {**upstream, "X-Gateway-Authorization": gateway_header}, now=BG_CREATED)

    assert (error.reason, error.header_name) == ("unknown_key", "Proxy-Authenticate")


def test_a_gateway_signature_does_not_replace_the_senders(
    trusted_bg: Any, search_body: bytes, gateway_header: str
) -> None:
    error = refused(search_body, {"X-Gateway-Authorization": gateway_header}, now=BG_CREATED)

    assert (error.reason, error.header_name) == ("missing", "WWW-Authenticate")


@pytest.mark.parametrize("key_form", ["signing_private_key_b64_libsodium64", "ed25519_seed_b64_32"])
def test_it_accepts_signatures_made_with_either_key_form(
    trusted_bap: Any, search_body: bytes, bap_keys: dict[str, str], key_form: str
) -> None:
    header = sign_request(
        search_body,
        subscriber_id=BAP,
        unique_key_id=BAP_KEY_ID,
        private_key=load_private_key(bap_keys[key_form]),
        created=CREATED,
        expires=CREATED + 30,
    )

    assert verify_beckn_request(search_body, {"Authorization": header}, bap_id=BAP, now=CREATED)


@override_settings(BECKN_REGISTRY_URL=REGISTRY)
def test_it_verifies_with_a_key_from_the_registry(
    peer: Any, search_body: bytes, upstream: dict[str, str], bap_keys: dict[str, str]
) -> None:
    entry = {"subscriber_id": BAP, "ukId": BAP_KEY_ID, "signing_public_key": bap_keys["signing_public_key_b64"]}
    peer.route("POST", f"{REGISTRY}/lookup", (200, [entry]))

    assert verify_beckn_request(search_body, upstream, bap_id=BAP, now=CREATED).subscriber_id == BAP
    assert verify_beckn_request(search_body, upstream, bap_id=BAP, now=CREATED).subscriber_id == BAP
    assert len(peer.calls) == 1


@override_settings(BECKN_REGISTRY_URL=REGISTRY)
def test_it_looks_the_key_up_again_when_the_cached_one_fails(peer: Any, search_body: bytes) -> None:
    """The BAP rotated its key under the same keyId: the cached key fails, a fresh lookup finds the new one."""
    old_private, old_public = generate_keypair()
    new_private, new_public = generate_keypair()
    answers = iter([old_public, new_public])
    peer.route(
        "POST",
        f"{REGISTRY}/lookup",
        lambda call: (200, [{"subscriber_id": BAP, "ukId": "k1", "signing_public_key": next(answers)}], {}),
    )

    def signed_with(private: str, now: int) -> dict[str, str]:
        key = load_private_key(private)
        return {
            "Authorization": sign_request(
                search_body, subscriber_id=BAP, unique_key_id="k1", private_key=key, created=now, expires=now + 300
            )
        }

    with time_machine.travel(1_700_000_000, tick=False) as clock:
        assert verify_beckn_request(search_body, signed_with(old_private, 1_700_000_000), bap_id=BAP)
        clock.shift(60)
        assert verify_beckn_request(search_body, signed_with(new_private, 1_700_000_060), bap_id=BAP)

    assert len(peer.calls) == 2


@override_settings(BECKN_REGISTRY_URL=REGISTRY)
def test_it_looks_an_unknown_key_up_again_once(
    peer: Any, search_body: bytes, upstream: dict[str, str], bap_keys: dict[str, str]
) -> None:
    """A miss is cached briefly; a request signed by a subscriber registered since then gets a fresh lookup."""
    entry = {"subscriber_id": BAP, "ukId": BAP_KEY_ID, "signing_public_key": bap_keys["signing_public_key_b64"]}
    answers = iter([[], [entry]])
    peer.route("POST", f"{REGISTRY}/lookup", lambda call: (200, next(answers), {}))

    with time_machine.travel(CREATED, tick=False) as clock:
        assert refused(search_body, upstream, now=None).reason == "unknown_key"
        clock.shift(15)
        assert verify_beckn_request(search_body, upstream, bap_id=BAP, now=CREATED)

    assert len(peer.calls) == 2


@override_settings(BECKN_REGISTRY_URL=REGISTRY)
def test_a_bad_signature_with_an_unchanged_key_is_refused(
    peer: Any, search_body: bytes, upstream: dict[str, str], bap_keys: dict[str, str]
) -> None:
    entry = {"subscriber_id": BAP, "ukId": BAP_KEY_ID, "signing_public_key": bap_keys["signing_public_key_b64"]}
    peer.route("POST", f"{REGISTRY}/lookup", (200, [entry]))

    assert refused(search_body + b" ", upstream).reason == "bad_signature"
    assert len(peer.calls) == 1  # the refresh came within the minimum interval: the answer was fresh already


@override_settings(BECKN_REGISTRY_URL=REGISTRY)
def test_a_gateway_must_be_a_bg_in_the_registry(
    peer: Any, trusted_bap: Any, search_body: bytes, upstream: dict[str, str], gateway_header: str, bg_keys: dict
) -> None:
    entry = {"subscriber_id": BG, "ukId": BG_KEY_ID, "signing_public_key": bg_keys["signing_public_key_b64"]}
    peer.route("POST", f"{REGISTRY}/lookup", (200, [{**entry, "type": "BG"}]))
    headers = {**upstream, "X-Gateway-Authorization": gateway_header}

    assert verify_beckn_request(search_body, headers, bap_id=BAP, now=BG_CREATED).gateway_id == BG

    peer.route("POST", f"{REGISTRY}/lookup", (200, [{**entry, "type": "BPP"}]))
    cache.clear()
    assert refused(search_body, headers, now=BG_CREATED).reason == "not_a_gateway"
