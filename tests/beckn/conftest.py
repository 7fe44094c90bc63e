"""Beckn fixtures: the BECKN-006 signing vectors, their keys, and a clean registry cache per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.cache import cache


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
