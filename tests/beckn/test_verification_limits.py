"""The edges of verifying a signed Beckn request: what unknown keys may cost us (registry lookups), a bap_uri
that is no URL, a registry answer of an odd shape, where the answer to a gateway's search goes, how long our own
signatures hold, and how strictly a signature header is read. Through the ACK (Django and the fast lane), the
outbound HTTP seam faked."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import orjson
import pytest
from django.test import Client

from beckn.bap_client import BapClient
from beckn.models import BecknSubscriber
from beckn.signing import (
    SignatureError,
    generate_keypair,
    load_private_key,
    parse_signature_header,
    sign_request,
    verify_signature,
)
from tests.beckn.test_ack_lane import SEARCH, assert_same, both, search_body, through_lane
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db

REGISTRY = "https://registry.example"
ACKED = {"message": {"ack": {"status": "ACK"}}}


def signed_by(key_b64: str, body: bytes, subscriber_id: str, unique_key_id: str = "k", *, ttl: int = 60) -> str:
    now = int(time.time())
    return sign_request(
        body, subscriber_id=subscriber_id, unique_key_id=unique_key_id, private_key=load_private_key(key_b64),
        created=now, expires=now + ttl,
    )  # fmt: skip


def post_search(body: bytes, headers: dict[str, str]) -> Any:
    return Client(raise_request_exception=False).post(
        "/beckn/search", body, content_type="application/json", headers=headers
    )


def lookups(peer: FakePeer) -> list[dict[str, Any]]:
    return [c for c in peer.calls if c["url"] == f"{REGISTRY}/lookup"]


# --- 1. Unknown keys have a budget of registry lookups ----------------------------------------------------


def test_it_asks_the_registry_about_no_more_unknown_keys_a_minute_than_the_budget(
    bap: Any, peer: FakePeer, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.BECKN_REGISTRY_URL = REGISTRY
    settings.BECKN_REGISTRY_LOOKUPS_PER_MINUTE = 5
    peer.route("POST", f"{REGISTRY}/lookup", (200, []))
    private, _ = generate_keypair()
    statuses = []
    with caplog.at_level(logging.INFO, logger="beckn.auth"):
        for i in range(20):  # a new made-up keyId each time: the per-keyId miss cache does not help
            subscriber = f"attacker-{i}.example"
            body = orjson.dumps({"context": bap.bap.context("search", bap_id=subscriber), "message": SEARCH})
            statuses.append(post_search(body, {"Authorization": signed_by(private, body, subscriber)}).status_code)

    assert statuses == [401] * 20
    assert len(lookups(peer)) == 5
    assert "lookup_budget_spent" in caplog.text and "BECKN_REGISTRY_LOOKUPS_PER_MINUTE" in caplog.text
    assert bap("search", SEARCH).status_code == 200  # a trusted BAP is not held up by the stream


def test_over_the_budget_a_key_the_registry_told_us_of_before_is_still_looked_up(
    bap: Any, peer: FakePeer, settings: Any
) -> None:
    settings.BECKN_REGISTRY_URL = REGISTRY
    settings.BECKN_REGISTRY_LOOKUPS_PER_MINUTE = 1
    private, public = generate_keypair()
    BecknSubscriber.objects.create(  # recorded from an earlier registry answer (not trusted), its cache gone
        subscriber_id="known-bap.example", unique_key_id="k", type="BAP", signing_public_key=public,
        subscriber_url="https://known-bap.example/beckn",
    )  # fmt: skip
    peer.route(
        "POST",
        f"{REGISTRY}/lookup",
        lambda call: (
            200,
            [{"subscriber_id": "known-bap.example", "ukId": "k", "signing_public_key": public, "type": "BAP",
              "subscriber_url": "https://known-bap.example/beckn"}]
            if call["json"]["subscriber_id"] == "known-bap.example"
            else [],
            {},
        ),
    )  # fmt: skip
    for i in range(3):  # the budget spent on made-up keys
        body = orjson.dumps({"context": bap.bap.context("search", bap_id=f"made-up-{i}.example"), "message": SEARCH})
        assert post_search(body, {"Authorization": signed_by(private, body, f"made-up-{i}.example")}).status_code == 401

    context = bap.bap.context("search", bap_id="known-bap.example", bap_uri="https://known-bap.example/beckn")
    body = orjson.dumps({"context": context, "message": SEARCH})
    with bap.capture(execute=True):
        answer = post_search(body, {"Authorization": signed_by(private, body, "known-bap.example")})

    assert answer.status_code == 200
    assert [c["json"]["subscriber_id"] for c in lookups(peer)] == ["made-up-0.example", "known-bap.example"]


# --- 2. A bap_uri that is no URL ---------------------------------------------------------------------------


def test_a_signed_request_whose_bap_uri_is_no_url_is_a_400_nack_the_same_on_both_paths(bap: Any) -> None:
    django, lane = both(bap, "search", lambda test_bap: search_body(test_bap, bap_uri="http://[bap.test.example/beckn"))

    assert_same(django, lane)
    assert lane.status_code == 400
    assert orjson.loads(lane.content)["error"]["code"] == "30000"
    assert orjson.loads(lane.content)["error"]["paths"] == "context.bap_uri"


def test_a_failure_in_our_code_answers_the_same_nack_on_both_paths(bap: Any, settings: Any) -> None:
    settings.BECKN_RATE_LIMIT_PER_MINUTE = None  # a broken setting: answering raises, on either path
    test_bap = bap.bap
    body = search_body(test_bap)
    django = post_search(body, {"Authorization": test_bap.sign(body)})
    body = search_body(test_bap)
    lane = through_lane("POST", "/beckn/search", body, {"Authorization": test_bap.sign(body)})

    assert (lane.status_code, django.status_code) == (500, 500)
    assert orjson.loads(lane.content) == orjson.loads(django.content)


# --- 3. A registry answer of an odd shape ------------------------------------------------------------------


@pytest.mark.parametrize("extended_attributes", ["?", ["domains"], 7])
def test_a_registry_entry_with_odd_extended_attributes_is_read_without_a_server_error(
    bap: Any, peer: FakePeer, settings: Any, extended_attributes: Any
) -> None:
    settings.BECKN_REGISTRY_URL = REGISTRY
    private, public = generate_keypair()
    other, _ = generate_keypair()
    entry = {
        "subscriber_id": "odd.example", "key_id": "k", "signing_public_key": public, "type": "BAP",
        "url": "https://odd.example/beckn", "extended_attributes": extended_attributes,
    }  # fmt: skip
    peer.route("POST", f"{REGISTRY}/lookup", (200, [entry]))
    context = bap.bap.context("search", bap_id="odd.example", bap_uri="https://odd.example/beckn")
    body = orjson.dumps({"context": context, "message": SEARCH})

    assert post_search(body, {"Authorization": signed_by(other, body, "odd.example")}).status_code == 401
    with bap.capture(execute=True):
        assert post_search(body, {"Authorization": signed_by(private, body, "odd.example")}).status_code == 200


# --- 4. The answer to a search a gateway forwarded ---------------------------------------------------------


def test_the_answer_to_a_forwarded_search_goes_to_the_url_of_the_gateway_key_that_signed(
    bap: Any, peer: FakePeer
) -> None:
    BecknSubscriber.objects.create(  # an old key of the same gateway, unsubscribed, at another URL
        subscriber_id="bg.example", unique_key_id="old", type="", signing_public_key="x" * 44,
        subscriber_url="https://old-bg.example/beckn", status="UNSUBSCRIBED", trusted=False,
    )  # fmt: skip
    private, public = generate_keypair()
    BecknSubscriber.objects.create(
        subscriber_id="bg.example", unique_key_id="k2", type="BG", signing_public_key=public,
        subscriber_url="https://bg.example/beckn", trusted=True,
    )  # fmt: skip
    for host in ("https://old-bg.example/beckn", "https://bg.example/beckn"):
        peer.route("POST", f"{host}/on_search", (200, ACKED))
    test_bap = bap.bap
    body = search_body(test_bap)
    with bap.capture(execute=True):
        answer = test_bap.post(
            "search", {}, raw=body, headers={"X-Gateway-Authorization": signed_by(private, body, "bg.example", "k2")}
        )

    assert answer.status_code == 200
    assert [c["url"] for c in peer.calls if c["url"].endswith("/on_search")] == ["https://bg.example/beckn/on_search"]


def test_a_forwarded_search_we_fail_to_answer_is_told_to_the_gateway_that_signed(
    bap: Any, peer: FakePeer, settings: Any
) -> None:
    """The catch-all's error callback goes where the answer would have gone."""
    private, public = generate_keypair()
    BecknSubscriber.objects.create(
        subscriber_id="bg.example", unique_key_id="k2", type="BG", signing_public_key=public,
        subscriber_url="https://bg.example/beckn", trusted=True,
    )  # fmt: skip
    peer.route("POST", "https://bg.example/beckn/on_search", (200, ACKED))
    from django.db import connection

    from emsp.models import WatchedEvse

    with connection.cursor() as cursor:  # a broken database: the search's watch on what it showed fails
        cursor.execute(f"DROP TABLE {WatchedEvse._meta.db_table}")
    test_bap = bap.bap
    body = orjson.dumps({"context": test_bap.context("search"), "message": SEARCH})
    with bap.capture(execute=True):
        test_bap.post(
            "search", {}, raw=body, headers={"X-Gateway-Authorization": signed_by(private, body, "bg.example", "k2")}
        )

    (answer,) = [c for c in peer.calls if c["url"].endswith("/on_search")]
    assert answer["url"] == "https://bg.example/beckn/on_search"
    assert answer["json"]["error"]["code"] == "40000"


# --- 5. Our signatures last as long as the message's ttl ---------------------------------------------------


def test_our_callback_signature_expires_with_the_callbacks_ttl(bap: Any) -> None:
    bap("search", SEARCH)
    (call,) = bap.bap.calls("on_search")
    header = parse_signature_header(call["headers"]["Authorization"])

    assert call["json"]["context"]["ttl"] == "PT30S"
    assert header.expires - header.created == 30


def test_the_bap_clients_request_signature_expires_with_the_requests_ttl(peer: FakePeer) -> None:
    peer.route("POST", "https://bpp.example/beckn/search", (200, ACKED))
    client = BapClient(bpp_url="https://bpp.example/beckn")
    try:
        client.send("search", SEARCH)
    finally:
        client.close()
    (call,) = peer.requests_to("/beckn/search")
    header = parse_signature_header(call["headers"]["Authorization"])

    assert call["json"]["context"]["ttl"] == "PT30S"
    assert header.expires - header.created == 30


# --- 6. The signature header, read strictly ----------------------------------------------------------------


@pytest.fixture
def good_header(search_body: bytes, bap_keys: dict[str, str]) -> tuple[str, int]:
    now = int(time.time())
    key = load_private_key(bap_keys["ed25519_seed_b64_32"])
    header = sign_request(search_body, subscriber_id="s", unique_key_id="k", private_key=key, created=now, expires=now)
    return header, now


def test_parameter_names_are_matched_whatever_their_case(
    good_header: tuple[str, int], search_body: bytes, bap_keys: dict[str, str]
) -> None:
    header, now = good_header
    shouted = header.replace("keyId=", "KEYID=").replace("created=", "Created=").replace("signature=", "SIGNATURE=")

    parsed = parse_signature_header(shouted)
    verify_signature(search_body, parsed, bap_keys["signing_public_key_b64"], now=now, skew=5)
    assert parsed.key_id == "s|k|ed25519"


@pytest.mark.parametrize(
    "repeated",
    [',keyid="evil.example|k|ed25519"', ',KEYID="s|k|ed25519"', ',Created="1"', ',Signature="AA=="'],
)
def test_a_parameter_named_twice_in_any_case_is_a_malformed_header(good_header: tuple[str, int], repeated: str) -> None:
    header, _ = good_header

    with pytest.raises(SignatureError) as failure:
        parse_signature_header(header + repeated)
    assert failure.value.reason == "malformed"


@pytest.mark.parametrize("written", ["{:_}", "+{}", " {}", "٠{}", "{}٠", "{}.0", "0x{:x}", "1{:012d}"])
def test_created_and_expires_must_be_plain_ascii_digits(good_header: tuple[str, int], written: str) -> None:
    header, now = good_header
    odd = header.replace(f'created="{now}"', f'created="{written.format(now)}"')

    with pytest.raises(SignatureError) as failure:
        parse_signature_header(odd)
    assert failure.value.reason == "malformed"


def test_a_request_with_a_second_keyid_is_refused_401(bap: Any) -> None:
    test_bap = bap.bap
    body = search_body(test_bap)
    header = test_bap.sign(body) + ',keyid="evil.example|k|ed25519"'

    answer = post_search(body, {"Authorization": header})
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == "Invalid signature: malformed"


@pytest.mark.parametrize("where", ["context.location", "message", "context", ""])
def test_a_body_nested_deeper_than_we_write_is_a_400_nack_on_both_paths(bap: Any, where: str) -> None:
    """orjson reads 1024 levels and writes 255: a location 300 deep was a 500, a message 300 deep a 503 (the queue
    failed on it) that the app would retry for ever."""
    deep: Any = {}
    for _ in range(300):
        deep = {"a": deep}
    context = bap.bap.context("search")
    message: Any = {"intent": {}}
    document: dict[str, Any] = {"context": context, "message": message}
    if where == "context.location":
        context["location"] = deep
    elif where == "message":
        message["intent"]["tags"] = [deep]
    elif where == "context":
        context["extra"] = deep  # echoed in the callback's context
    else:
        document["elsewhere"] = deep  # kept in the request's log row
    body = json.dumps(document).encode()  # orjson won't write it either
    headers = {"Authorization": bap.bap.sign(body)}
    lane = through_lane("POST", "/beckn/search", body, headers)
    django = Client().post("/beckn/search", body, content_type="application/json", headers=headers)
    for response in (lane, django):
        assert response.status_code == 400
        error = orjson.loads(response.content)["error"]
        assert (error["code"], error["paths"]) == ("30000", where)
