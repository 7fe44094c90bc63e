"""Shared fixtures: partners with known tokens, an OCPI test client, drivers and tokens, shared vectors."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from django.conf import settings
from django.db.models.signals import post_migrate
from django.test import Client
from django.test.client import ClientHandler

from emsp import ratelimit
from emsp.celery import app as celery_app
from emsp.models import Partner, hash_token
from ocpi.wsgi_lane import ocpi_middleware
from tests import factories
from tests.cposim.conftest import SimProcess
from tests.redis_db import redis_database_shifted

# Unit tests run Celery tasks inline; end-to-end tests run a real worker instead.
celery_app.conf.task_always_eager = True
celery_app.conf.task_eager_propagates = True

CPO_TOKEN = "cpo-token-for-us-0001"


def pytest_configure(config: pytest.Config) -> None:
    # The test process caches in memory even when REDIS_URL is set: tests travel in time (time-machine),
    # which Redis TTLs don't follow. End-to-end tests run real processes with their own settings.
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Under pytest-xdist each worker takes a Redis database of its own (REDIS_URL's + the worker's number), as
    # each gets a database of its own from pytest-django: one worker's clean-up (rate counters, message ids,
    # the latency queue) must not empty what another's test is counting.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if settings.REDIS_URL and worker.startswith("gw") and worker[2:].isdigit() and int(worker[2:]):
        shifted = redis_database_shifted(settings.REDIS_URL, int(worker[2:]))
        if celery_app.conf.broker_url == settings.REDIS_URL:
            celery_app.conf.broker_url = shifted
        settings.REDIS_URL = shifted


def shared_dir() -> Path:
    return Path(settings.SHARED_DIR)


@pytest.fixture
def rate_clock_held(monkeypatch: pytest.MonkeyPatch) -> float:
    """The rate limiter's clock (emsp/ratelimit.py) held mid-minute, for tests that compare two refusals:
    Retry-After counts the seconds left in the window, and two calls a few milliseconds apart could straddle a
    second or a minute and answer differently."""
    held = (time.time() // 60) * 60 + 30.25
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: held))
    return held


@pytest.fixture
def vectors() -> Path:
    path = Path(settings.VECTORS_DIR)
    if not path.is_dir():
        pytest.skip(f"shared vectors not found at {path} (set SHARED_DIR)")
    return path


@pytest.fixture
def spec_example(vectors: Path) -> Callable[[str], Any]:
    def load(name: str) -> Any:
        fixed = vectors / "ocpi" / "spec-2.2.1" / "release-2.2.1-bugfixes" / name
        path = fixed if fixed.exists() else vectors / "ocpi" / "spec-2.2.1" / name
        return orjson.loads(path.read_bytes())

    return load


@pytest.fixture
def partner(db: None) -> Partner:
    return factories.PartnerFactory(
        name="CPO A", country_code="IN", party_id="CPA", incoming_token_hash=hash_token(CPO_TOKEN)
    )


class OcpiClientHandler(ClientHandler):
    """The test client's handler with the middlewares gunicorn serves /ocpi/ with (ocpi/wsgi_lane.py): an OCPI view
    that came to need a session, a login or CSRF would fail here as it would in production."""

    def load_middleware(self, is_async: bool = False) -> None:
        with ocpi_middleware():
            super().load_middleware(is_async)


class OcpiTestClient:
    """Django's test client with an OCPI `Authorization: Token <base64>` header and JSON bodies, through the
    middlewares of the OCPI lane."""

    def __init__(self, token: str | None, *, encode: bool = True) -> None:
        self.client = Client()
        self.client.handler = OcpiClientHandler(enforce_csrf_checks=False)
        self.headers: dict[str, str] = {}
        if token is not None:
            value = base64.b64encode(token.encode()).decode() if encode else token
            self.headers["Authorization"] = f"Token {value}"

    def _call(self, method: str, path: str, body: Any = None, raw: bytes | None = None, **extra: Any) -> Any:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
        headers = {**self.headers, **extra.pop("headers", {})}
        return getattr(self.client, method)(path, data=data, content_type="application/json", headers=headers, **extra)

    def get(self, path: str, **extra: Any) -> Any:
        headers = {**self.headers, **extra.pop("headers", {})}
        return self.client.get(path, headers=headers, **extra)

    def put(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self._call("put", path, body, **extra)

    def patch(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self._call("patch", path, body, **extra)

    def post(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self._call("post", path, body, **extra)

    def delete(self, path: str, **extra: Any) -> Any:
        return self._call("delete", path, None, **extra)


@pytest.fixture
def ocpi(partner: Partner) -> OcpiTestClient:
    return OcpiTestClient(CPO_TOKEN)


@pytest.fixture
def anonymous() -> OcpiTestClient:
    return OcpiTestClient(None)


@pytest.fixture
def client_for(db: None) -> Callable[..., OcpiTestClient]:
    """An OCPI client for a (new or existing) connected partner owning country_code*party_id."""

    def make(country_code: str, party_id: str, token: str | None = None) -> OcpiTestClient:
        token = token or f"token-{country_code}-{party_id}".lower()
        partner = Partner.objects.filter(country_code=country_code, party_id=party_id).first()
        if partner is None:
            partner = factories.PartnerFactory(country_code=country_code, party_id=party_id)
        partner.incoming_token_hash = hash_token(token)
        partner.save()
        client = OcpiTestClient(token)
        client.partner = partner  # type: ignore[attr-defined]
        return client

    return make


@pytest.fixture
def peer(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Replace the outbound HTTP seam with a scripted partner."""
    from emsp import outbound
    from tests.fakes import FakePeer

    fake = FakePeer()
    monkeypatch.setattr(outbound, "send", fake.send)
    return fake


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> None:
    """Each test starts without cached lookups (rows from another test's database are gone)."""
    from django.core.cache import cache

    from beckn import callbacks, registry
    from billing.services import ledger
    from emsp.ratelimit import redis_client as _redis_client
    from emsp.services import freshness
    from ocpi.transport import forget_cached_tokens

    forget_cached_tokens()
    # A test sending worker_process_init (tests/test_queues.py) turns on the worker's process-wide account cache
    # in this test process; an account cached there names a row a later test's database no longer has.
    ledger._account_cache.set(None)
    freshness._push_noted.clear()
    registry.forget_trusted()
    callbacks.forget_quiet_hosts()
    cache.clear()
    client = _redis_client()
    if client is not None:  # message-id sightings and rate counters live in Redis when REDIS_URL is set
        for pattern in ("beckn:msg:*", "ratelimit:*"):
            for key in client.scan_iter(pattern, count=1000):
                client.delete(key)


def _roles_after_a_flush(sender: Any, **kwargs: Any) -> None:
    """A transactional test's teardown flushes every table, the groups the roles migration made included, and
    sends post_migrate (which brings back permissions and content types, not the groups). Under xdist's work
    stealing a worker can run ordinary tests after a transactional one, and `login` found no group: they are
    made again here, once every app has its permissions (the last app's signal)."""
    from django.apps import apps

    if sender.label == list(apps.get_app_configs())[-1].label:
        from emsp.roles import roles_setup

        roles_setup(strict=False)


post_migrate.connect(_roles_after_a_flush, dispatch_uid="tests-roles-after-a-flush")


@pytest.fixture
def login(db: None) -> Callable[[str], Client]:
    """A client logged in as a staff member of one group (the groups come from the emsp roles migration)."""
    from django.contrib.auth.models import Group, User

    def make(group: str) -> Client:
        user = User.objects.create_user(f"{group}-user", password="pw-123456-x", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        client = Client()
        client.force_login(user)
        client.user = user  # type: ignore[attr-defined]
        return client

    return make


@pytest.fixture(autouse=True)
def _apps_collect_unless_asked(request: pytest.FixtureRequest, settings: Any) -> None:
    """Tests about other things than payments run with the apps collecting from their drivers (a product
    setting, PAYMENT_DEFAULT_BAP_COLLECTS); tests marked `we_collect`, and every end-to-end run, have us collect
    through the sandbox provider (paysim), as the platform does by default."""
    settings.PAYMENT_DEFAULT_BAP_COLLECTS = request.node.get_closest_marker("we_collect") is None


@pytest.fixture
def live_queue() -> Iterator[Any]:
    """Tasks published for real to this test Redis's latency list (the suite runs them eagerly), emptied before
    and after; skips without REDIS_URL."""
    from emsp import queue_push
    from emsp.ratelimit import redis_client

    if not settings.REDIS_URL:
        pytest.skip("needs Redis (set REDIS_URL)")
    client = redis_client()
    client.delete(settings.LATENCY_QUEUE, "push-test:key")
    celery_app.conf.task_always_eager = False  # (monkeypatch can't undo a Celery setting)
    queue_push.pushable.cache_clear()
    try:
        yield client
    finally:
        celery_app.conf.task_always_eager = True
        queue_push.pushable.cache_clear()
        client.delete(settings.LATENCY_QUEUE, "push-test:key")


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start CPO simulator processes (`python -m cposim`); all are stopped at teardown."""
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(list(args), tmp_path / f"sim{len(started)}.log")
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
