"""Locations receiver: PUT/PATCH/GET at location, EVSE and connector level on the literal spec paths."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from emsp.models import Connector, Evse, Location
from ocpi.models import DataQualityIssue
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1/locations"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def location(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("location_example.json")


def put_location(client: OcpiTestClient, location: dict[str, Any]) -> Any:
    return client.put(f"{BASE}/{location['country_code']}/{location['party_id']}/{location['id']}", location)


def test_it_creates_a_location_with_201_and_replaces_it_with_200(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    first = put_location(bec, location)
    second = put_location(bec, location)
    assert (first.status_code, first.json()["status_code"]) == (201, 1000)
    assert (second.status_code, second.json()["status_code"]) == (200, 1000)
    stored = Location.objects.get()
    assert stored.location_id == "LOC1"
    assert stored.evses.count() == len(location["evses"])
    assert Connector.objects.filter(evse__location=stored).count() == sum(
        len(e["connectors"]) for e in location["evses"]
    )


def test_get_returns_the_stored_location_with_evses_and_connectors(
    bec: OcpiTestClient, location: dict[str, Any]
) -> None:
    put_location(bec, location)
    data = bec.get(f"{BASE}/BE/BEC/LOC1").json()["data"]
    assert data["id"] == "LOC1"
    assert [e["uid"] for e in data["evses"]] == [e["uid"] for e in location["evses"]]
    assert data["evses"][0]["connectors"][0]["id"] == location["evses"][0]["connectors"][0]["id"]


def test_get_of_an_unknown_location_is_404(bec: OcpiTestClient) -> None:
    assert bec.get(f"{BASE}/BE/BEC/NOPE").status_code == 404


def test_every_official_location_example_goes_through_the_receiver(
    bec: OcpiTestClient, spec_example: Callable[[str], Any], vectors: Any
) -> None:
    names = sorted(p.name for p in (vectors / "ocpi" / "spec-2.2.1").glob("location_example*.json"))
    assert len(names) >= 5
    # The examples come from several parties: staff grant this partner all of them, as to a hub.
    from emsp.services.partners import partner_party_grant

    partner = bec.partner  # type: ignore[attr-defined]
    for party in {(spec_example(n)["country_code"], spec_example(n)["party_id"]) for n in names}:
        if not partner.owns(*party):
            partner_party_grant(partner=partner, country_code=party[0], party_id=party[1], by="test")
    for name in names:
        example = spec_example(name)
        response = put_location(bec, example)
        assert response.json()["status_code"] == 1000, (name, response.json())
        assert response.status_code in (200, 201)
    assert Location.objects.count() == len({spec_example(n)["id"] for n in names})


def test_patch_of_evse_status_updates_it_and_the_locations_last_updated(
    bec: OcpiTestClient, location: dict[str, Any], spec_example: Callable[[str], Any]
) -> None:
    put_location(bec, location)
    uid = location["evses"][0]["uid"]
    patch = {"status": "CHARGING", "last_updated": "2026-06-01T10:00:00Z"}
    response = bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", patch)
    assert response.json()["status_code"] == 1000
    evse = Evse.objects.get(uid=uid)
    assert evse.status == "CHARGING"
    assert evse.location.last_updated.isoformat().startswith("2026-06-01T10:00:00")


def test_patch_without_last_updated_is_2001_and_changes_nothing(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    put_location(bec, location)
    uid = location["evses"][0]["uid"]
    before = Evse.objects.get(uid=uid).status
    response = bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", {"status": "OUTOFORDER"})
    assert (response.status_code, response.json()["status_code"]) == (200, 2001)
    assert Evse.objects.get(uid=uid).status == before


def test_an_update_older_than_what_we_hold_is_ignored(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    put_location(bec, location)
    uid = location["evses"][0]["uid"]
    bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", {"status": "CHARGING", "last_updated": "2026-06-01T10:00:00Z"})
    response = bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", {"status": "AVAILABLE", "last_updated": "2026-05-31T10:00:00Z"})
    assert response.json()["status_code"] == 1000
    assert Evse.objects.get(uid=uid).status == "CHARGING"
    older = copy.deepcopy(location)
    older["name"] = "Old name"
    older["last_updated"] = "2011-01-01T00:00:00Z"
    put_location(bec, older)
    assert Location.objects.get().name == location["name"]


def test_put_of_an_evse_adds_it_and_bumps_the_location(
    bec: OcpiTestClient, location: dict[str, Any], spec_example: Callable[[str], Any]
) -> None:
    put_location(bec, location)
    evse = spec_example("location_put_example_add_evse.json")
    evse["uid"] = "3258"  # the example's own uid already exists in location_example.json
    evse["last_updated"] = "2026-07-01T00:00:00Z"
    response = bec.put(f"{BASE}/BE/BEC/LOC1/{evse['uid']}", evse)
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    stored = Location.objects.get()
    assert stored.evses.count() == len(location["evses"]) + 1
    assert stored.last_updated.year == 2026 and stored.last_updated.month == 7


def test_patch_of_a_connector_updates_tariffs_and_both_parents(
    bec: OcpiTestClient, location: dict[str, Any], spec_example: Callable[[str], Any]
) -> None:
    put_location(bec, location)
    evse = location["evses"][0]
    connector_id = evse["connectors"][0]["id"]
    patch = {**spec_example("location_patch_example_tariff.json"), "last_updated": "2026-08-02T00:00:00Z"}
    response = bec.patch(f"{BASE}/BE/BEC/LOC1/{evse['uid']}/{connector_id}", patch)
    assert response.json()["status_code"] == 1000
    connector = Connector.objects.get(evse__uid=evse["uid"], connector_id=connector_id)
    assert connector.tariff_ids == ["15"]
    assert connector.evse.last_updated.month == 8
    assert connector.evse.location.last_updated.month == 8


def test_removed_status_hides_the_evse(
    bec: OcpiTestClient, location: dict[str, Any], spec_example: Callable[[str], Any]
) -> None:
    put_location(bec, location)
    uid = location["evses"][0]["uid"]
    patch = {
        **spec_example("location_patch_example_remove_evse.json"),
        "last_updated": "2026-06-01T00:00:00Z",
    }
    bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", patch)
    assert not Evse.objects.visible().filter(uid=uid).exists()
    assert Evse.objects.filter(uid=uid, status="REMOVED").exists()


def test_ids_are_case_insensitive_and_stored_as_received(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    location = {**location, "id": "loc-mixed-Case"}
    put_location(bec, location)
    uid = location["evses"][0]["uid"]
    response = bec.patch(
        f"{BASE}/be/bec/LOC-MIXED-CASE/{uid.lower()}",
        {"status": "BLOCKED", "last_updated": "2026-06-01T00:00:00Z"},
    )
    assert response.json()["status_code"] == 1000
    stored = Location.objects.get()
    assert stored.location_id == "loc-mixed-Case"
    assert stored.evses.get(uid=uid).status == "BLOCKED"


def test_an_id_in_the_body_that_differs_from_the_url_is_2001(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    response = bec.put(f"{BASE}/BE/BEC/OTHER", location)
    assert response.json()["status_code"] == 2001
    assert not Location.objects.exists()


def test_a_partner_cannot_write_under_another_party(
    client_for: Callable[..., OcpiTestClient], location: dict[str, Any]
) -> None:
    intruder = client_for("IN", "XYZ")
    response = put_location(intruder, location)
    assert response.status_code == 404
    assert not Location.objects.exists()


def test_a_partner_cannot_read_another_partys_location(
    bec: OcpiTestClient, client_for: Callable[..., OcpiTestClient], location: dict[str, Any]
) -> None:
    put_location(bec, location)
    intruder = client_for("IN", "XYZ")
    assert intruder.get(f"{BASE}/BE/BEC/LOC1").status_code == 404
    uid = location["evses"][0]["uid"]
    patch = intruder.patch(
        f"{BASE}/BE/BEC/LOC1/{uid}", {"status": "OUTOFORDER", "last_updated": "2026-06-01T00:00:00Z"}
    )
    assert patch.status_code == 404
    assert Evse.objects.get(uid=uid).status != "OUTOFORDER"


def test_wrong_types_are_2001_and_nothing_is_stored(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    broken = {**location, "coordinates": {"latitude": "north", "longitude": []}}
    response = put_location(bec, broken)
    assert (response.status_code, response.json()["status_code"]) == (200, 2001)
    assert not Location.objects.exists()
    assert not Evse.objects.exists()


def test_a_body_that_is_not_an_object_is_2001(bec: OcpiTestClient) -> None:
    response = bec.put(f"{BASE}/BE/BEC/LOC1", [1, 2, 3])
    assert response.json()["status_code"] == 2001


def test_patch_of_an_unknown_evse_is_404(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    put_location(bec, location)
    response = bec.patch(f"{BASE}/BE/BEC/LOC1/NOPE", {"status": "AVAILABLE", "last_updated": "2026-06-01T00:00:00Z"})
    assert response.status_code == 404


def test_quirky_values_are_normalised_and_recorded(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    quirky = copy.deepcopy(location)
    quirky["evses"][0]["status"] = "charging "
    quirky["evses"][0]["connectors"][0]["max_electric_power"] = 22
    response = put_location(bec, quirky)
    assert response.json()["status_code"] == 1000
    evse = Evse.objects.get(uid=quirky["evses"][0]["uid"])
    assert evse.status == "CHARGING"
    assert evse.connectors.first().max_electric_power == 22000
    assert DataQualityIssue.objects.filter(module="locations").exists()


def test_an_overlong_location_id_is_2001_and_not_stored(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    long_id = "L" * 40  # 39 is the most any version allows (2.1.1)
    response = bec.put(f"{BASE}/BE/BEC/{long_id}", {**location, "id": long_id})
    assert response.json()["status_code"] == 2001
    assert not Location.objects.exists()


def test_an_overlong_evse_uid_drops_that_evse_only(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    broken = copy.deepcopy(location)
    broken["evses"][0]["uid"] = "E" * 40
    assert put_location(bec, broken).json()["status_code"] == 1000
    assert Evse.objects.count() == len(location["evses"]) - 1


def test_an_object_stamped_in_the_future_is_taken_at_its_receive_time_and_cannot_freeze_the_evse(
    bec: OcpiTestClient, location: dict[str, Any]
) -> None:
    put_location(bec, location)
    uid = location["evses"][0]["uid"]
    frozen = copy.deepcopy(location)
    frozen["last_updated"] = "9999-12-31T23:59:59Z"
    before = timezone.now()
    assert put_location(bec, frozen).json()["status_code"] == 1000  # kept, stamped when received
    assert Location.objects.get(location_id="LOC1").last_updated <= timezone.now()
    assert Location.objects.get(location_id="LOC1").last_updated >= before - timedelta(seconds=1)
    future = bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", {"status": "OUTOFORDER", "last_updated": "9999-01-01T00:00:00Z"})
    assert (future.json()["status_code"], "future" in future.json()["status_message"]) == (2001, True)
    correct = bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", {"status": "CHARGING", "last_updated": "2026-06-01T00:00:00Z"})
    assert correct.json()["status_code"] == 1000
    assert Evse.objects.get(uid=uid).status == "CHARGING"


@pytest.mark.parametrize(
    ("level", "body_ids"),
    [
        ("location", {"id": "LOC2"}),
        ("location", {"party_id": "XYZ"}),
        ("location", {"country_code": "NL"}),
        ("evse", {"uid": "ANOTHER-EVSE"}),
        ("connector", {"id": "99"}),
    ],
)
def test_a_patch_naming_another_object_is_2001_and_changes_nothing(
    bec: OcpiTestClient, location: dict[str, Any], level: str, body_ids: dict[str, str]
) -> None:
    put_location(bec, location)
    evse = location["evses"][0]
    url = {
        "location": f"{BASE}/BE/BEC/LOC1",
        "evse": f"{BASE}/BE/BEC/LOC1/{evse['uid']}",
        "connector": f"{BASE}/BE/BEC/LOC1/{evse['uid']}/{evse['connectors'][0]['id']}",
    }[level]
    before = (Location.objects.get().data, Evse.objects.get(uid=evse["uid"]).status)
    change = {"status": "OUTOFORDER"} if level == "evse" else {"name": "Moved"} if level == "location" else {}
    response = bec.patch(url, {**body_ids, **change, "last_updated": "2026-06-01T10:00:00Z"})
    assert (response.status_code, response.json()["status_code"]) == (200, 2001)
    assert (Location.objects.get().data, Evse.objects.get(uid=evse["uid"]).status) == before


def test_an_evse_patch_repeating_its_own_uid_is_applied(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    put_location(bec, location)
    uid = location["evses"][0]["uid"]
    response = bec.patch(f"{BASE}/BE/BEC/LOC1/{uid}", {"uid": uid.lower(), "status": "CHARGING",
                                                       "last_updated": "2026-06-01T10:00:00Z"})  # fmt: skip
    assert response.json()["status_code"] == 1000
    assert Evse.objects.get(uid=uid).status == "CHARGING"


@pytest.mark.parametrize("encoded", ["A%2FB", "A%2fB"])
def test_an_id_holding_an_encoded_slash_is_2001_not_another_object(
    bec: OcpiTestClient, location: dict[str, Any], encoded: str
) -> None:
    """WSGI decodes `A%2FB` to `A/B` before routing: without the raw path (gunicorn's RAW_URI) the PUT of
    location `A/B` was routed as a PUT of EVSE `B` at location `A`, and stored the location's body as an EVSE."""
    put_location(bec, {**location, "id": "A"})
    before = sorted(Evse.objects.values_list("uid", flat=True))
    url = f"{BASE}/BE/BEC/{encoded}"
    response = bec.put(url, {**location, "id": "A/B"}, RAW_URI=url)
    assert (response.status_code, response.json()["status_code"]) == (200, 2001)
    assert sorted(Evse.objects.values_list("uid", flat=True)) == before
    assert Location.objects.count() == 1
    # Without the raw path (a server that gives none) the request is routed as before.
    assert bec.put(f"{BASE}/BE/BEC/LOC1", location, RAW_URI=f"{BASE}/BE/BEC/LOC1?x=%2F").json()["status_code"] == 1000


# --- a PATCH that lists children (mod_locations: fields not named are unchanged) ---------------------------------


def test_an_evse_patch_listing_connectors_patches_those_it_holds_and_adds_new_ones(
    bec: OcpiTestClient, location: dict[str, Any]
) -> None:
    put_location(bec, location)
    patch = {
        "connectors": [
            {"id": "1", "tariff_ids": ["NEW"]},  # a connector we hold: only its tariffs change
            {"id": "3", "standard": "IEC_62196_T2_COMBO", "format": "CABLE", "power_type": "DC", "max_voltage": 400,
             "max_amperage": 125, "max_electric_power": 50000, "last_updated": "2026-06-01T10:00:00Z"},
        ],
        "last_updated": "2026-06-01T10:00:00Z",
    }  # fmt: skip
    response = bec.patch(f"{BASE}/BE/BEC/LOC1/3256", patch)
    assert response.json()["status_code"] == 1000
    connectors = {c["id"]: c for c in bec.get(f"{BASE}/BE/BEC/LOC1/3256").json()["data"]["connectors"]}
    assert connectors["1"]["tariff_ids"] == ["NEW"]
    assert connectors["1"]["standard"] == "IEC_62196_T2"  # unchanged
    assert connectors["2"]["tariff_ids"] == ["13"]  # not listed: unchanged
    assert connectors["3"]["standard"] == "IEC_62196_T2_COMBO"
    assert Evse.objects.get(uid="3256").max_power_w == 50000


def test_a_location_patch_listing_an_evse_removed_applies_it(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    put_location(bec, location)
    patch = {"evses": [{"uid": "3256", "status": "REMOVED", "last_updated": "2026-06-01T10:00:00Z"}],
             "last_updated": "2026-06-01T10:00:00Z"}  # fmt: skip
    response = bec.patch(f"{BASE}/BE/BEC/LOC1", patch)
    assert response.json()["status_code"] == 1000
    assert Evse.objects.get(uid="3256").status == "REMOVED"
    assert Evse.objects.get(uid="3257").status == "RESERVED"  # not listed: unchanged
    assert Connector.objects.filter(evse__uid="3256").count() == 2  # the EVSE patched, not replaced


def test_a_patch_whose_listed_child_is_refused_changes_nothing(bec: OcpiTestClient, location: dict[str, Any]) -> None:
    put_location(bec, location)
    before = Location.objects.get().last_updated
    patch = {"name": "Renamed", "evses": [{"uid": "3256", "status": "CHARGING", "last_updated": "not a date"}],
             "last_updated": "2026-06-01T10:00:00Z"}  # fmt: skip
    response = bec.patch(f"{BASE}/BE/BEC/LOC1", patch)
    assert response.json()["status_code"] == 2001
    stored = Location.objects.get()
    assert stored.name != "Renamed"
    assert stored.last_updated == before
    assert Evse.objects.get(uid="3256").status == "AVAILABLE"


def test_an_evse_kept_without_a_valid_connector_is_not_answered_by_get(
    bec: OcpiTestClient, location: dict[str, Any]
) -> None:
    broken = copy.deepcopy(location)
    for connector in broken["evses"][1]["connectors"]:
        connector["standard"] = "FOO_BAR"  # no such ConnectorType: each connector dropped with a finding
    assert put_location(bec, broken).json()["status_code"] == 1000
    assert Evse.objects.get(uid="3257").connectors.count() == 0  # kept: its status still counts
    data = bec.get(f"{BASE}/BE/BEC/LOC1").json()["data"]
    assert [e["uid"] for e in data["evses"]] == ["3256"]  # EVSE.connectors is 1..*
    assert all(e["connectors"] for e in data["evses"])
    response = bec.get(f"{BASE}/BE/BEC/LOC1/3257")
    assert (response.status_code, response.json()["status_code"]) == (404, 2000)
