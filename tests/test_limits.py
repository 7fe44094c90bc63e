"""Limits: the per-caller rate limiter (sliding window; Django's cache, and the real Redis), OCPI's 429 with
Retry-After per partner, and the staff login lockout (django-axes)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from emsp import ratelimit
from emsp.ratelimit import rate_limit_hit, retry_after_seconds
from ocpi import transport
from ocpi.models import OcpiMessage
from tests.conftest import OcpiTestClient

TOKENS_URL = "/ocpi/emsp/2.2.1/tokens"
REDIS_TEST_URL = "redis://127.0.0.1:6379/11"  # a database of its own: others use 0 and the benchmarks 5/6


def a_key() -> str:
    """A key no other test (or earlier run, when counters live in Redis) has counted."""
    return f"test:{uuid.uuid4().hex}"


@pytest.fixture
def fresh_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """No counts or logged refusals left by an earlier test (partner ids repeat across tests on SQLite)."""
    client = ratelimit.redis_client()
    if client is not None:
        for key in client.scan_iter(f"{ratelimit.KEY_PREFIX}*", count=1000):
            client.delete(key)
    monkeypatch.setattr(transport, "_refusals_logged", {})


# -- the limiter ------------------------------------------------------------------------------------


def test_requests_up_to_the_limit_pass_and_the_next_one_waits_for_the_window() -> None:
    key = a_key()
    verdicts = [rate_limit_hit(key, 10, now=6000.0) for _ in range(11)]
    assert all(v.allowed for v in verdicts[:10])
    assert not verdicts[10].allowed
    # With nothing sent meanwhile, 11 requests this minute weigh 10 (the limit) 10.9 s into the next one.
    assert verdicts[10].retry_after == 71


def test_last_minute_counts_by_the_share_of_it_still_in_the_window() -> None:
    key = a_key()
    for _ in range(10):
        assert rate_limit_hit(key, 10, now=6005.0).allowed
    # Half-way through the next minute, last minute's 10 weigh 5: five more fit, the sixth does not.
    verdicts = [rate_limit_hit(key, 10, now=6090.0) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert verdicts[5].retry_after == 12
    assert rate_limit_hit(key, 10, now=6090.0 + 12).allowed  # Retry-After is honest


def test_a_refused_caller_is_not_let_in_before_its_retry_after() -> None:
    key = a_key()
    for _ in range(10):
        rate_limit_hit(key, 10, now=6005.0)
    for _ in range(5):
        rate_limit_hit(key, 10, now=6090.0)
    refused = rate_limit_hit(key, 10, now=6090.0)
    assert not refused.allowed
    assert not rate_limit_hit(key, 10, now=6090.0 + refused.retry_after - 1).allowed


@pytest.mark.parametrize(
    ("current", "previous", "limit", "elapsed", "expected"),
    [
        (11, 0, 10, 0.0, 71),  # next minute, once this minute's weight is low enough
        (6, 10, 10, 30.0, 12),  # still this minute, once enough of the last has slid out
        (9, 0, 10, 59.5, 1),  # the minute turns within the second: at least 1
        (2, 0, 1, 10.0, 110),  # a limit of one a minute: this minute's two must slide out entirely
    ],
)
def test_retry_after_is_the_time_until_one_more_request_fits(
    current: int, previous: int, limit: int, elapsed: float, expected: int
) -> None:
    assert retry_after_seconds(current, previous, limit, elapsed) == expected


def test_zero_disables_the_limit_and_counts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_counting(*args: Any) -> tuple[int, int]:
        raise AssertionError("counted")

    monkeypatch.setattr(ratelimit, "_count", no_counting)
    assert all(rate_limit_hit(a_key(), 0).allowed for _ in range(100))


def test_counting_touches_no_database(db: None, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        rate_limit_hit(a_key(), 5)


def test_an_unavailable_counter_store_lets_requests_through(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> tuple[int, int]:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(ratelimit, "_count", broken)
    assert rate_limit_hit(a_key(), 1).allowed


# -- the limiter on the real Redis (shared by every web process) -----------------------------------


@pytest.fixture
def real_redis(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Any]:
    """The limiter on Redis at 127.0.0.1:6379, database 11 (flushed before and after); skipped without it."""
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    client.flushdb()
    settings.REDIS_URL = REDIS_TEST_URL
    monkeypatch.setattr(ratelimit, "_redis", None)
    yield client
    client.flushdb()
    client.close()


def test_on_redis_the_window_is_shared_and_counters_expire(real_redis: Any) -> None:
    for _ in range(10):
        assert rate_limit_hit("shared", 10, now=6005.0).allowed
    # Another process (here, another client of the same Redis) sees the same counts.
    assert int(real_redis.get(f"{ratelimit.KEY_PREFIX}shared:100")) == 10
    assert 0 < real_redis.ttl(f"{ratelimit.KEY_PREFIX}shared:100") <= 2 * ratelimit.WINDOW_SECONDS
    verdicts = [rate_limit_hit("shared", 10, now=6090.0) for _ in range(6)]
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert verdicts[5].retry_after == 12


def test_on_redis_one_request_costs_one_round_trip(real_redis: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis.client

    calls: list[str] = []
    real_execute = redis.client.Pipeline.execute
    real_command = redis.Redis.execute_command

    def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("pipeline")
        return real_execute(self, *args, **kwargs)

    def command(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        return real_command(self, *args, **kwargs)

    rate_limit_hit("trips", 10)  # the client connects on first use
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(redis.Redis, "execute_command", command)
    rate_limit_hit("trips", 10)
    assert calls == ["pipeline"]


# -- OCPI: per partner, HTTP 429 with Retry-After ----------------------------------------------------


def test_a_partner_over_its_limit_gets_429_with_retry_after_and_an_ocpi_envelope(
    ocpi: OcpiTestClient, settings: Any, fresh_limits: None
) -> None:
    settings.OCPI_RATE_LIMIT_PER_MINUTE = 3
    assert [ocpi.get(TOKENS_URL).status_code for _ in range(3)] == [200, 200, 200]
    refused = ocpi.get(TOKENS_URL)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    body = refused.json()
    assert body["status_code"] == 2000
    assert "Too many requests" in body["status_message"] and "3 a minute" in body["status_message"]
    assert "data" not in body


def test_one_partner_over_its_limit_leaves_the_others_alone(
    ocpi: OcpiTestClient, client_for: Callable[..., OcpiTestClient], settings: Any, fresh_limits: None
) -> None:
    settings.OCPI_RATE_LIMIT_PER_MINUTE = 2
    other = client_for("NL", "OTH")
    for _ in range(3):
        ocpi.get(TOKENS_URL)
    assert ocpi.get(TOKENS_URL).status_code == 429
    assert other.get(TOKENS_URL).status_code == 200


def test_unknown_tokens_do_not_spend_a_partners_allowance(
    ocpi: OcpiTestClient, settings: Any, fresh_limits: None
) -> None:
    settings.OCPI_RATE_LIMIT_PER_MINUTE = 2
    stranger = OcpiTestClient("not-a-token-of-anyone")
    assert [stranger.get(TOKENS_URL).status_code for _ in range(5)] == [401] * 5
    assert [ocpi.get(TOKENS_URL).status_code for _ in range(2)] == [200, 200]


def test_a_flood_of_refused_requests_writes_one_log_row_per_minute(
    ocpi: OcpiTestClient, settings: Any, fresh_limits: None
) -> None:
    settings.OCPI_RATE_LIMIT_PER_MINUTE = 1
    for _ in range(6):
        ocpi.get(TOKENS_URL)
    logged = list(OcpiMessage.objects.order_by("pk").values_list("http_status", flat=True))
    assert logged == [200, 429]


def test_a_limit_of_zero_lets_a_partner_send_without_limit(
    ocpi: OcpiTestClient, settings: Any, fresh_limits: None
) -> None:
    settings.OCPI_RATE_LIMIT_PER_MINUTE = 0
    assert {ocpi.get(TOKENS_URL).status_code for _ in range(20)} == {200}


# -- staff login: django-axes --------------------------------------------------------------------------

LOGIN = "/admin/login/?next=/admin/"


def login(username: str, password: str, address: str = "203.0.113.7") -> Any:
    return Client(REMOTE_ADDR=address).post(LOGIN, {"username": username, "password": password})


def logged_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


@pytest.fixture
def staff(db: None) -> tuple[User, User]:
    return (
        User.objects.create_user("asha", password="right-pw-123456", is_staff=True),
        User.objects.create_user("ravi", password="right-pw-654321", is_staff=True),
    )


def test_five_wrong_passwords_lock_the_login_even_with_the_right_one_after(
    staff: tuple[User, User], settings: Any
) -> None:
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(5):
        assert not logged_in(login("asha", "wrong"))
    refused = login("asha", "right-pw-123456")
    assert not logged_in(refused)
    assert refused.status_code == 429


def test_four_wrong_passwords_do_not_lock_the_login(staff: tuple[User, User]) -> None:
    for _ in range(4):
        login("asha", "wrong")
    assert logged_in(login("asha", "right-pw-123456"))


def test_a_locked_out_login_does_not_lock_out_a_colleague_at_the_same_address(staff: tuple[User, User]) -> None:
    for _ in range(5):
        login("asha", "wrong")
    assert logged_in(login("ravi", "right-pw-654321"))


def test_the_lockout_is_per_username_and_address(staff: tuple[User, User]) -> None:
    for _ in range(5):
        login("asha", "wrong", address="203.0.113.7")
    assert not logged_in(login("asha", "right-pw-123456", address="203.0.113.7"))
    assert logged_in(login("asha", "right-pw-123456", address="198.51.100.20"))
