"""Validate Beckn payloads against the official core 1.1.0 OpenAPI (read in place from ../shared)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.conf import settings
from openapi_schema_validator import OAS30Validator

SPEC = Path(settings.VECTORS_DIR) / "beckn" / "core-1.1.0" / "openapi" / "transaction.yaml"


@cache
def _spec() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"official Beckn core 1.1.0 OpenAPI not found at {SPEC}")
    return yaml.safe_load(SPEC.read_text())


def errors(action: str, body: dict[str, Any]) -> list[str]:
    """Every schema violation of `body` as the request body of POST /{action} (on_* callbacks included)."""
    spec = _spec()
    schema = spec["paths"][f"/{action}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # The schema's $refs point into #/components: carry the components along so they resolve locally.
    validator = OAS30Validator({**schema, "components": spec["components"]})
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]


def assert_valid(action: str, body: dict[str, Any]) -> None:
    found = errors(action, body)
    assert not found, f"{action} is not valid core 1.1.0:\n" + "\n".join(found[:20])
