"""The OpenAPI schema of every endpoint builds without warnings and the docs are served without a CDN."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client


def test_the_schema_has_no_warnings_or_errors(tmp_path: Path) -> None:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    assert "/ocpi/emsp/2.2.1/tokens/{token_uid}/authorize" in text
    assert "ocpi_evse_patch" in text


@pytest.mark.django_db
def test_api_docs_load_their_assets_from_us(admin_client: Client) -> None:
    page = admin_client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn.jsdelivr" not in page and "unpkg.com" not in page
