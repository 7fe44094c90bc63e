"""Validate Beckn payloads against the official core 1.1.0 OpenAPI, and against the core 1.1.0 JSON schemas
Beckn-ONIX adapters check callbacks with (stricter: `message` and its object required on every on_*), both read
in place from ../shared."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from django.conf import settings
from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource

SPEC = Path(settings.VECTORS_DIR) / "beckn" / "core-1.1.0" / "openapi" / "transaction.yaml"
ONIX = Path(settings.VECTORS_DIR) / "beckn" / "core-1.1.0" / "onix-jsonschema"


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


@cache
def _onix_validator(action: str) -> Draft202012Validator | None:
    path = ONIX / f"{action}.json"
    if not path.exists():
        return None
    resources = [(p.name, Resource.from_contents(orjson.loads(p.read_bytes()))) for p in ONIX.glob("*.json")]
    return Draft202012Validator(orjson.loads(path.read_bytes()), registry=Registry().with_resources(resources))


def onix_errors(action: str, body: dict[str, Any]) -> list[str]:
    """Every violation of `body` against Beckn-ONIX's core 1.1.0 schema of `action` (none where ONIX has none)."""
    validator = _onix_validator(action)
    if validator is None:
        return []
    return [f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]


def assert_valid(action: str, body: dict[str, Any]) -> None:
    found = errors(action, body)
    assert not found, f"{action} is not valid core 1.1.0:\n" + "\n".join(found[:20])
    found = onix_errors(action, body)
    assert not found, f"{action} would be refused by a Beckn-ONIX adapter:\n" + "\n".join(found[:20])
