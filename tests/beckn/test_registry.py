"""Public keys of Beckn subscribers: trusted rows, the registry's /lookup in both response shapes, caching,
refresh after a failure, unusable entries and registry errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse

from beckn import registry
from beckn.models import BecknSubscriber
from emsp import outbound

REGISTRY = "https://registry.example.com/subscribers"
LOOKUP = f"{REGISTRY}/lookup"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = "awGPjRK6i/Vg/lWr+0xObclVxlwZXvTjWYtlu6NeOHk="
OTHER_KEY = "7YRZXVeIJ0/Va56vYgzT1Uirg6mnq3FY0MBZY9DJft0="

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _registry() -> Iterator[None]:
    with override_settings(BECKN_REGISTRY_URL=f"{REGISTRY}/"):
        yield


@pytest.fixture
def clock() -> Iterator[time_machine.Coordinates]:
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def core_entry(**overrides: Any) -> dict[str, Any]:
    """A core 1.1.0 registry.yaml Subscription."""
    entry = {
        "subscriber_id": "bap.example.com",
        "url": "https://bap.example.com/beckn",
        "type": "BAP",
        "domain": "ev-charging:beckn",
        "key_id": "k1",
        "signing_public_key": KEY,
        "encr_public_key": "MCowBQYDK2VuAyEA",
        "valid_from": "2026-01-01T00:00:00.000Z",
        "valid_until": "2027-01-01T00:00:00.000Z",
        "status": "SUBSCRIBED",
        "created": "2026-01-01T00:00:00.000Z",
        "updated": "2026-01-01T00:00:00.000Z",
    }
    return {**entry, **overrides}


def succinct_entry(**overrides: Any) -> dict[str, Any]:
    """What Succinct/beckn-one registries answer: subscriber_url, ukId, no status."""
    entry = {
        "subscriber_id": "bap.example.com",
        "subscriber_url": "https://bap.example.com/beckn",
        "type": "BAP",
        "domain": "ev-charging:beckn",
        "ukId": "k1",
        "pub_key_id": "k1",
        "signing_public_key": KEY,
        "valid_from": "2026-01-01T00:00:00Z",
        "valid_until": "2027-01-01T00:00:00Z",
        "city": "std:080",
        "country": "IND",
    }
    return {**entry, **overrides}


def test_it_reads_the_core_1_1_0_subscription_shape(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry()]))

    assert registry.public_key("bap.example.com", "k1") == KEY

    assert peer.calls[0]["json"]["subscriber_id"] == "bap.example.com"
    assert peer.calls[0]["json"]["key_id"] == "k1"
    assert peer.calls[0]["json"]["ukId"] == "k1"


def test_it_reads_the_succinct_shape(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [succinct_entry()]))

    key = registry.lookup("bap.example.com", "k1")

    assert key == registry.SubscriberKey(
        "bap.example.com", "k1", KEY, "BAP", trusted=False, subscriber_url="https://bap.example.com/beckn"
    )


def test_it_records_the_entry_for_the_console(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [succinct_entry()]))

    registry.public_key("bap.example.com", "k1")

    row = BecknSubscriber.objects.get(subscriber_id="bap.example.com", unique_key_id="k1")
    assert (row.trusted, row.type, row.status, row.signing_public_key) == (False, "BAP", "SUBSCRIBED", KEY)
    assert row.subscriber_url == "https://bap.example.com/beckn"
    assert row.domains == ["ev-charging:beckn"]
    assert row.valid_until == datetime(2027, 1, 1, tzinfo=UTC)
    assert row.last_lookup_at == NOW


def test_it_skips_entries_of_other_subscribers_and_keys(peer: Any, clock: Any) -> None:
    peer.route(
        "POST",
        LOOKUP,
        (
            200,
            [
                core_entry(subscriber_id="other.example.com", signing_public_key=OTHER_KEY),
                core_entry(key_id="k0", signing_public_key=OTHER_KEY),
                core_entry(),
            ],
        ),
    )

    assert registry.public_key("bap.example.com", "k1") == KEY


def test_it_answers_from_the_cache(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry()]))
    registry.public_key("bap.example.com", "k1")

    clock.shift(299)
    assert registry.public_key("bap.example.com", "k1") == KEY

    assert len(peer.calls) == 1


def test_it_asks_again_after_five_minutes(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry()]))
    registry.public_key("bap.example.com", "k1")

    clock.shift(301)
    registry.public_key("bap.example.com", "k1")

    assert len(peer.calls) == 2


def test_it_caches_no_longer_than_the_key_is_valid(peer: Any, clock: Any) -> None:
    valid_until = (NOW + timedelta(seconds=60)).isoformat()
    peer.route("POST", LOOKUP, (200, [core_entry(valid_until=valid_until)]))
    assert registry.public_key("bap.example.com", "k1") == KEY

    clock.shift(61)

    assert registry.public_key("bap.example.com", "k1") is None
    assert len(peer.calls) == 2


def test_it_refreshes_a_cached_key_on_request(peer: Any, clock: Any) -> None:
    answers = iter([[core_entry()], [core_entry(signing_public_key=OTHER_KEY)]])
    peer.route("POST", LOOKUP, lambda call: (200, next(answers), {}))
    registry.public_key("bap.example.com", "k1")

    clock.shift(registry.REFRESH_MIN_INTERVAL_SECONDS + 1)

    assert registry.public_key("bap.example.com", "k1") == KEY
    assert registry.public_key("bap.example.com", "k1", refresh=True) == OTHER_KEY
    assert registry.public_key("bap.example.com", "k1") == OTHER_KEY
    assert len(peer.calls) == 2


def test_it_does_not_refresh_an_answer_it_just_got(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry()]))
    registry.public_key("bap.example.com", "k1")

    registry.public_key("bap.example.com", "k1", refresh=True)

    assert len(peer.calls) == 1


def test_it_caches_a_miss_briefly_and_refresh_asks_again(peer: Any, clock: Any) -> None:
    answers = iter([[], [core_entry()]])
    peer.route("POST", LOOKUP, lambda call: (200, next(answers), {}))
    assert registry.public_key("bap.example.com", "k1") is None
    assert registry.public_key("bap.example.com", "k1") is None
    assert len(peer.calls) == 1

    clock.shift(registry.REFRESH_MIN_INTERVAL_SECONDS + 1)

    assert registry.public_key("bap.example.com", "k1", refresh=True) == KEY
    assert len(peer.calls) == 2


@pytest.mark.parametrize("status", ["EXPIRED", "UNSUBSCRIBED", "INVALID_SSL", "INITIATED", "UNDER_SUBSCRIPTION"])
def test_it_refuses_keys_that_are_not_subscribed(peer: Any, clock: Any, status: str) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry(status=status)]))

    assert registry.public_key("bap.example.com", "k1") is None
    assert BecknSubscriber.objects.get(subscriber_id="bap.example.com").status == status


@pytest.mark.parametrize(
    "overrides",
    [
        {"valid_from": "2026-03-01T12:00:01Z"},  # not yet valid
        {"valid_until": "2026-03-01T12:00:00Z"},  # valid_until is exclusive
        {"valid_until": "next year"},
        {"signing_public_key": "bm90IGEga2V5"},
        {"signing_public_key": ""},
    ],
)
def test_it_refuses_keys_outside_their_validity_or_not_ed25519(peer: Any, clock: Any, overrides: dict) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry(**overrides)]))

    assert registry.public_key("bap.example.com", "k1") is None


def test_it_accepts_a_key_valid_from_now(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry(valid_from=NOW.isoformat(), valid_until=None)]))

    assert registry.public_key("bap.example.com", "k1") == KEY


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"error": "down"}),
        (404, []),
        (200, b"<html>not json</html>"),
        (200, "a string"),
    ],
)
def test_it_answers_none_when_the_registry_fails_and_asks_again_next_time(
    peer: Any, clock: Any, answer: tuple[int, Any]
) -> None:
    peer.route("POST", LOOKUP, answer)

    assert registry.public_key("bap.example.com", "k1") is None
    assert registry.public_key("bap.example.com", "k1") is None

    assert len(peer.calls) == 2


def test_it_answers_none_when_the_registry_cannot_be_reached(monkeypatch: pytest.MonkeyPatch, clock: Any) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise outbound.OutboundError("ConnectTimeout")

    monkeypatch.setattr(outbound, "send", unreachable)

    assert registry.public_key("bap.example.com", "k1") is None


def test_it_uses_a_trusted_subscriber_without_asking_the_registry(peer: Any, clock: Any) -> None:
    BecknSubscriber.objects.create(
        subscriber_id="bap.example.com", unique_key_id="k1", type="BAP", signing_public_key=KEY, trusted=True
    )

    assert registry.lookup("bap.example.com", "k1") == registry.SubscriberKey(
        "bap.example.com", "k1", KEY, "BAP", trusted=True
    )
    assert peer.calls == []


def test_a_blocked_trusted_subscriber_wins_over_the_registry(peer: Any, clock: Any) -> None:
    BecknSubscriber.objects.create(
        subscriber_id="bap.example.com",
        unique_key_id="k1",
        signing_public_key=KEY,
        trusted=True,
        status=BecknSubscriber.Status.UNSUBSCRIBED,
    )
    peer.route("POST", LOOKUP, (200, [core_entry()]))

    assert registry.public_key("bap.example.com", "k1") is None
    assert peer.calls == []


def test_an_expired_trusted_subscriber_is_not_used(peer: Any, clock: Any) -> None:
    BecknSubscriber.objects.create(
        subscriber_id="bap.example.com",
        unique_key_id="k1",
        signing_public_key=KEY,
        trusted=True,
        valid_until=NOW,
    )

    assert registry.public_key("bap.example.com", "k1") is None


def test_registry_rows_are_not_trusted_on_the_next_lookup(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry()]))
    registry.public_key("bap.example.com", "k1")
    peer.routes.clear()  # the registry forgets the key; our untrusted row must not stand in for it

    clock.shift(301)

    assert registry.public_key("bap.example.com", "k1") is None


def test_a_key_id_without_unique_key_id_needs_exactly_one_key(peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry(), core_entry(key_id="k2", signing_public_key=OTHER_KEY)]))

    assert registry.public_key("bap.example.com", "") is None
    assert peer.calls[0]["json"] == {"subscriber_id": "bap.example.com"}


@override_settings(BECKN_REGISTRY_URL="")
def test_without_a_registry_only_trusted_subscribers_count(peer: Any, clock: Any) -> None:
    assert registry.public_key("bap.example.com", "k1") is None
    assert peer.calls == []


# --- staff console -------------------------------------------------------------------------------------


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x"))
    return client


def console_form(**overrides: str) -> dict[str, str]:
    form = {
        "subscriber_id": "bap.example.com",
        "unique_key_id": "k1",
        "type": "BAP",
        "signing_public_key": KEY,
        "trusted": "on",
        "status": "SUBSCRIBED",
        "subscriber_url": "",
        "domains": "[]",
    }
    return {**form, **overrides}


def test_staff_add_a_trusted_subscriber_whose_key_is_then_used(staff: Client, peer: Any) -> None:
    add_page = staff.get(reverse("admin:beckn_becknsubscriber_add")).content.decode()
    assert re.search(r'<input type="checkbox" name="trusted"[^>]* checked>', add_page)

    response = staff.post(reverse("admin:beckn_becknsubscriber_add"), console_form(signing_public_key=f" {KEY}\n"))

    assert response.status_code == 302
    assert BecknSubscriber.objects.get().signing_public_key == KEY
    assert registry.lookup("bap.example.com", "k1") == registry.SubscriberKey(
        "bap.example.com", "k1", KEY, "BAP", trusted=True
    )
    assert peer.calls == []


@pytest.mark.parametrize(
    "key",
    [
        "lP3sHA+9gileOkXYJXh4Jg8tK0gEEMbf9yCPnFpbldhrAY+NErqL9WD+Vav7TE5tyVXGXBle9ONZi2W7o144eQ==",  # a private key
        "awGPjRK6i/Vg/lWr+0xObclVxlwZXvTjWYtlu6NeOH",  # truncated
        "not base64 at all!",
        "a" * 64,  # hex-looking, 48 bytes
    ],
)
def test_staff_get_a_clear_error_for_a_key_that_is_not_an_ed25519_public_key(staff: Client, key: str) -> None:
    response = staff.post(reverse("admin:beckn_becknsubscriber_add"), console_form(signing_public_key=key))

    assert response.status_code == 200
    assert "Ed25519 signing public key: 32 bytes in base64" in response.content.decode()
    assert not BecknSubscriber.objects.exists()


def test_staff_cannot_put_a_bar_in_a_key_id(staff: Client) -> None:
    response = staff.post(reverse("admin:beckn_becknsubscriber_add"), console_form(subscriber_id="a|b"))

    assert "cannot contain" in response.content.decode()


def test_the_console_lists_registry_and_trusted_subscribers(staff: Client, peer: Any, clock: Any) -> None:
    peer.route("POST", LOOKUP, (200, [core_entry()]))
    registry.public_key("bap.example.com", "k1")
    row = BecknSubscriber.objects.get()

    assert "bap.example.com" in staff.get(reverse("admin:beckn_becknsubscriber_changelist")).content.decode()
    assert staff.get(reverse("admin:beckn_becknsubscriber_change", args=[row.pk])).status_code == 200


def test_a_refresh_right_after_reading_trusted_rows_reuses_them(
    monkeypatch: pytest.MonkeyPatch, django_assert_num_queries: Any
) -> None:
    # A stream of bad signatures asks for a refresh on every request: it must not cost a query each.
    BecknSubscriber.objects.create(
        subscriber_id="bap.example.com", unique_key_id="k1", type="BAP", signing_public_key=KEY, trusted=True
    )
    now = [1000.0]
    monkeypatch.setattr(registry.time, "monotonic", lambda: now[0])
    registry.forget_trusted()
    with django_assert_num_queries(1):
        registry.lookup("bap.example.com", "k1")
        now[0] += 0.5
        registry.lookup("bap.example.com", "k1", refresh=True)
    now[0] += registry.TRUSTED_REFRESH_MIN_SECONDS
    with django_assert_num_queries(1):  # older than the minimum: a refresh reads the rows again
        registry.lookup("bap.example.com", "k1", refresh=True)
