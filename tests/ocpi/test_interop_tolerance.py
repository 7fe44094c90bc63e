"""What an independent implementation (extrawest-ocpi, tests/interop/) sends that we tolerate, checked here
without it: pushes to our endpoint URL with the object path glued on without a slash, and CDRs whose
cdr_location has no evse_uid (docs/interop.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Cdr
from emsp.models import ChargingSession, Evse, Location
from ocpi.models import DataQualityIssue
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

EMSP = "/ocpi/emsp/2.2.1"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


def test_a_push_glued_to_our_endpoint_url_reaches_the_receiver(
    bec: OcpiTestClient, spec_example: Callable[[str], Any]
) -> None:
    location = spec_example("location_example.json")
    put = bec.put(f"{EMSP}/locationsBE/BEC/{location['id']}", location)
    assert (put.status_code, put.json()["status_code"]) == (201, 1000)
    assert Location.objects.filter(location_id=location["id"]).exists()

    evse = location["evses"][0]["uid"]
    changes = {"status": "CHARGING", "last_updated": "2026-12-01T10:00:00Z"}
    patch = bec.patch(f"{EMSP}/locationsBE/BEC/{location['id']}/{evse}", changes)
    assert patch.json()["status_code"] == 1000
    assert Evse.objects.get(uid=evse).status == "CHARGING"

    session = spec_example("session_example_2_short_finished.json")
    put = bec.put(f"{EMSP}/sessionsBE/BEC/{session['id']}", session)
    assert (put.status_code, put.json()["status_code"]) == (201, 1000)
    assert ChargingSession.objects.filter(session_id=session["id"]).exists()


def test_a_glued_url_is_still_held_to_the_callers_party(
    bec: OcpiTestClient, spec_example: Callable[[str], Any]
) -> None:
    location = {**spec_example("location_example.json"), "country_code": "NL", "party_id": "TNM"}
    put = bec.put(f"{EMSP}/locationsNL/TNM/{location['id']}", location)
    assert put.status_code == 404
    assert not Location.objects.exists()


def test_a_cdr_without_evse_uid_is_kept_and_the_gap_recorded(
    bec: OcpiTestClient, spec_example: Callable[[str], Any]
) -> None:
    cdr = spec_example("cdr_example.json")
    cdr["cdr_location"] = {k: v for k, v in cdr["cdr_location"].items() if k != "evse_uid"}
    post = bec.post(f"{EMSP}/cdrs", cdr)
    assert (post.status_code, post.json()["status_code"]) == (201, 1000)
    stored = Cdr.objects.get()
    assert stored.evse_uid == ""
    issue = DataQualityIssue.objects.get(module="cdrs", code="missing_evse_uid")
    assert issue.path == "cdr_location.evse_uid" and issue.fixed is False
