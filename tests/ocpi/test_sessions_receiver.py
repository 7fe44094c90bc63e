"""Sessions receiver: PUT replaces (periods included), PATCH appends charging periods."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from emsp.models import ChargingSession
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1/sessions"


@pytest.fixture
def session(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("session_example_2_short_finished.json")


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


def test_put_creates_with_201_and_keeps_the_periods(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    response = bec.put(f"{BASE}/BE/BEC/{session['id']}", session)
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    stored = ChargingSession.objects.get()
    assert stored.status == session["status"]
    assert stored.kwh == Decimal(str(session["kwh"]))
    assert len(stored.data["charging_periods"]) == len(session["charging_periods"])


def test_every_official_session_example_is_accepted(
    client_for: Callable[..., OcpiTestClient], spec_example: Callable[[str], Any]
) -> None:
    for name in ("session_example_1_simple_start.json", "session_example_2_short_finished.json"):
        example = spec_example(name)
        client = client_for(example["country_code"], example["party_id"])
        response = client.put(f"{BASE}/{example['country_code']}/{example['party_id']}/{example['id']}", example)
        assert response.json()["status_code"] == 1000, response.json()
    assert ChargingSession.objects.count() == 2


def test_patch_appends_charging_periods(
    bec: OcpiTestClient, session: dict[str, Any], spec_example: Callable[[str], Any]
) -> None:
    bec.put(f"{BASE}/BE/BEC/{session['id']}", session)
    patch = {
        **spec_example("session_patch_example_charging_period.json"),
        "last_updated": "2026-06-01T00:00:00Z",
    }
    # The example's period (2019) lies outside the example session (2015), and is dropped as a PUT drops one:
    # here it starts within the session.
    patch["charging_periods"] = [{**p, "start_date_time": "2015-06-29T23:50:00Z"} for p in patch["charging_periods"]]
    response = bec.patch(f"{BASE}/BE/BEC/{session['id']}", patch)
    assert response.json()["status_code"] == 1000
    stored = ChargingSession.objects.get()
    assert len(stored.data["charging_periods"]) == len(session["charging_periods"]) + 1
    assert stored.kwh == Decimal("15")
    assert stored.total_cost_excl_vat == Decimal("0.8")


def test_put_replaces_the_whole_session_including_periods(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    bec.put(f"{BASE}/BE/BEC/{session['id']}", session)
    replaced = {**session, "charging_periods": [], "last_updated": "2026-06-01T00:00:00Z"}
    bec.put(f"{BASE}/BE/BEC/{session['id']}", replaced)
    assert ChargingSession.objects.get().data["charging_periods"] == []


def test_patch_of_an_unknown_session_is_404(bec: OcpiTestClient) -> None:
    response = bec.patch(f"{BASE}/BE/BEC/NOPE", {"kwh": 1, "last_updated": "2026-06-01T00:00:00Z"})
    assert response.status_code == 404


def test_a_session_with_wrong_types_is_2001_and_not_stored(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    response = bec.put(f"{BASE}/BE/BEC/{session['id']}", {**session, "kwh": "lots", "start_date_time": 12})
    assert response.json()["status_code"] == 2001
    assert not ChargingSession.objects.exists()


def test_another_party_cannot_put_or_read_the_session(
    bec: OcpiTestClient, client_for: Callable[..., OcpiTestClient], session: dict[str, Any]
) -> None:
    bec.put(f"{BASE}/BE/BEC/{session['id']}", session)
    intruder = client_for("NL", "XXX")
    assert intruder.get(f"{BASE}/BE/BEC/{session['id']}").status_code == 404
    assert intruder.put(f"{BASE}/BE/BEC/{session['id']}", {**session, "kwh": 99}).status_code == 404
    assert ChargingSession.objects.get().kwh == Decimal(str(session["kwh"]))


@pytest.mark.parametrize(("field", "value"), [("id", "ANOTHER-SESSION"), ("party_id", "XYZ"), ("country_code", "NL")])
def test_a_patch_naming_another_session_is_2001_and_changes_nothing(
    bec: OcpiTestClient, session: dict[str, Any], field: str, value: str
) -> None:
    bec.put(f"{BASE}/BE/BEC/{session['id']}", session)
    before = ChargingSession.objects.get().data
    patch = {field: value, "status": "INVALID", "last_updated": "2026-06-01T00:00:00Z"}
    response = bec.patch(f"{BASE}/BE/BEC/{session['id']}", patch)
    assert (response.status_code, response.json()["status_code"]) == (200, 2001)
    assert field in response.json()["status_message"]
    assert ChargingSession.objects.get().data == before


def test_a_patch_repeating_its_own_ids_is_applied(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    """Some CPOs send the whole object as a PATCH: its ids, in any case, are the URL's."""
    bec.put(f"{BASE}/BE/BEC/{session['id']}", session)
    patch = {"id": session["id"].lower(), "country_code": "be", "party_id": "BEC", "kwh": 21,
             "last_updated": "2026-06-01T00:00:00Z"}  # fmt: skip
    response = bec.patch(f"{BASE}/BE/BEC/{session['id']}", patch)
    assert response.json()["status_code"] == 1000
    assert ChargingSession.objects.get().kwh == Decimal("21")
