"""`manage.py bap`: a signing BAP on the command line, against our BPP served over HTTP."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from billing.services import tariff_put
from emsp.models import Partner
from tests.beckn.bap import TARIFF
from tests.factories import stored_location

pytestmark = pytest.mark.django_db(transaction=True)


def test_bap_search_then_select_over_http(live_server: Any, settings: Any, partner: Partner, tmp_path: Any) -> None:
    settings.PUBLIC_BASE_URL = live_server.url
    settings.VAR_DIR = tmp_path
    tariff_put(partner, TARIFF)
    stored_location(partner)
    # tests/conftest.py runs Celery eagerly: the live server does the queued work inline.
    out = StringIO()
    call_command(
        "bap", "search", "--bpp", f"{live_server.url}/beckn", "--gps", "12.9716,77.5946", "--wait", "20", stdout=out
    )
    text = out.getvalue()
    assert "ACK" in text
    assert "on_search after" in text and "signature verified" in text
    assert "LOC1/" in text
    out = StringIO()
    call_command("bap", "select", "--bpp", f"{live_server.url}/beckn", "--kwh", "5", "--wait", "20", stdout=out)
    assert '"quote"' in out.getvalue()
