"""Every real CPO feed imports through `manage.py ocpi_import` without a crash; counts are reported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.core.management import call_command

from emsp.models import Evse, Location, Partner
from ocpi.models import DataQualityIssue
from tests.conftest import shared_dir

pytestmark = pytest.mark.django_db

FEEDS = shared_dir() / "data" / "ocm" / "ocpi-feeds"
feed_files = sorted(FEEDS.glob("*.json")) if FEEDS.is_dir() else []


@pytest.mark.skipif(not feed_files, reason=f"real CPO feeds not found at {FEEDS}")
@pytest.mark.parametrize("path", feed_files, ids=[p.stem for p in feed_files])
def test_each_real_feed_imports_without_a_crash(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    party = re.sub(r"[^A-Z]", "", path.stem.rsplit("-", 1)[-1].rsplit("_", 1)[-1].upper())[:3] or "OCM"
    call_command("ocpi_import", str(path), "--partner", f"ZZ*{party}", verbosity=0)
    out = capsys.readouterr().out
    counts = dict(re.findall(r"(\w+)=(\d+)", out))
    received, accepted, rejected = int(counts["received"]), int(counts["accepted"]), int(counts["rejected"])
    print(f"{path.name}: {out.strip()}")  # the per-feed report (pytest -s shows it)
    assert received > 0
    assert accepted + rejected == received
    assert accepted >= received * 0.8, f"{path.name}: too many rejected ({rejected}/{received})"
    partner = Partner.objects.get(party_id=party)
    assert Location.objects.filter(partner=partner).count() == int(counts["stored"]) > 0
    assert Evse.objects.filter(location__partner=partner).exists()
    if int(counts["normalised"]) or rejected:
        assert DataQualityIssue.objects.filter(partner=partner).exists()


@pytest.mark.skipif(not feed_files, reason=f"real CPO feeds not found at {FEEDS}")
def test_importing_a_feed_twice_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    path = FEEDS / "ocpi_2_2_1_locations-ezvolt.json"
    call_command("ocpi_import", str(path), "--partner", "ZZ*EZV", verbosity=0)
    first = (Location.objects.count(), Evse.objects.count())
    call_command("ocpi_import", str(path), "--partner", "ZZ*EZV", verbosity=0)
    assert (Location.objects.count(), Evse.objects.count()) == first
