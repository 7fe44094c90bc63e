"""Beckn fixtures: the BECKN-006 signing vectors, their keys, and a clean registry cache per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.cache import cache

from billing.models import PartnerTerms
from billing.services import tariff_put
from emsp.models import Partner
from tests.beckn.bap import CPO_BASE, TARIFF, FakeBap
from tests.factories import stored_location
from tests.fakes import FakePeer, envelope


@pytest.fixture(autouse=True)
def _fresh_registry_cache() -> None:
    """Registry answers are cached in Django's cache; one test's lookups must not answer another's."""
    cache.clear()


@pytest.fixture
def signing_dir(vectors: Path) -> Path:
    return vectors / "beckn" / "signing"


@pytest.fixture
def signing_vectors(signing_dir: Path) -> dict[str, Any]:
    return orjson.loads((signing_dir / "beckn006-vectors.json").read_bytes())


@pytest.fixture
def search_body(signing_dir: Path) -> bytes:
    """The exact 496 bytes BECKN-006 Step 1 signs."""
    return (signing_dir / "beckn006-search-body.json").read_bytes()


@pytest.fixture
def bap_keys(signing_vectors: dict[str, Any]) -> dict[str, str]:
    return signing_vectors["keys"]["bap"]


@pytest.fixture
def bg_keys(signing_vectors: dict[str, Any]) -> dict[str, str]:
    return signing_vectors["keys"]["bg"]


@pytest.fixture
def network(partner: Partner) -> Partner:
    tariff_put(partner, TARIFF)
    PartnerTerms.objects.create(partner=partner, fee_flat=Decimal("5"), fee_percent=Decimal("2"))
    stored_location(partner, location_id="NEAR", evses=2)
    stored_location(partner, location_id="FAR", evses=1, latitude=12.990000, longitude=77.600000)
    stored_location(partner, location_id="AWAY", evses=1, latitude=13.500000, longitude=77.600000)
    return partner


@pytest.fixture
def bap(peer: FakePeer, network: Partner, django_capture_on_commit_callbacks: Any) -> Iterator[Callable[..., Any]]:
    """post(action, message, **context) → the HTTP response, with every queued job run."""
    test_bap = FakeBap(peer)
    for name in ("RESERVE_NOW", "START_SESSION", "STOP_SESSION", "CANCEL_RESERVATION"):
        peer.route("POST", f"{CPO_BASE}/commands/{name}", (200, envelope({"result": "ACCEPTED", "timeout": 30})))

    def post(endpoint: str, message: dict[str, Any], **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return test_bap.post(endpoint, message, **kwargs)

    post.bap = test_bap  # type: ignore[attr-defined]
    post.capture = django_capture_on_commit_callbacks  # type: ignore[attr-defined]
    yield post
