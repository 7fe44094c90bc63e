"""A 2.1.1 CPO reading back what we hold of its locations and sessions (GET on our receivers under
/ocpi/emsp/2.1.1/): the answer is in 2.1.1's shape (mod_locations and mod_sessions of release-2.1.1-bugfixes),
never our 2.2.1 copy. What 2.1.1 can't say is left out, or is an error naming it. tests/interop checks the same
answers with an independent library's 2.1.1 models."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest

from emsp.models import ChargingSession, Location, Partner
from emsp.services.catalogue import locations_store
from ocpi.versions import v211
from tests.conftest import OcpiTestClient
from tests.factories import ocpi_location
from tests.ocpi.test_versions_receivers import V211

pytestmark = pytest.mark.django_db

V221_LOCATION_FIELDS = {"country_code", "party_id", "publish", "publish_allowed_to", "state", "parking_type"}
V221_CONNECTOR_FIELDS = {"max_voltage", "max_amperage", "max_electric_power", "tariff_ids"}


def stored_location(partner: Partner, **changes: Any) -> dict[str, Any]:
    """A 2.2.1 location of the CPO's with values 2.1.1 lacks, stored as a 2.2.1 PUT would store it."""
    body = ocpi_location("IN", "CPA", "LOC1", evses=2, tariff_ids=["T1", "T2"], latitude=12.97, longitude=77.5945)
    body.update(parking_type="ALONG_MOTORWAY", state="Karnataka", facilities=["WIFI", "TRAM_STOP"], **changes)
    first, second = body["evses"]
    first["capabilities"] = ["RESERVABLE", "PED_TERMINAL"]
    first["connectors"][0].update(
        standard="IEC_62196_T2", format="SOCKET", power_type="AC_2_PHASE", max_voltage=230, max_amperage=32
    )
    first["connectors"].append({**copy.deepcopy(first["connectors"][0]), "id": "2", "standard": "GBT_DC"})
    second["connectors"][0]["standard"] = "NEMA_5_20"  # no 2.1.1 ConnectorType: this EVSE can't be said
    locations_store(partner, [body])
    return body


def test_a_location_is_read_back_in_2_1_1(ocpi: OcpiTestClient, partner: Partner) -> None:
    stored_location(partner)
    answer = ocpi.get("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1").json()
    assert answer["status_code"] == 1000
    location = answer["data"]
    assert not V221_LOCATION_FIELDS & set(location)
    assert location["type"] == "OTHER"  # ALONG_MOTORWAY has no 2.1.1 LocationType
    assert location["coordinates"] == {"latitude": "12.970000", "longitude": "77.594500"}
    assert location["facilities"] == ["WIFI"]
    (evse,) = location["evses"]  # the NEMA-only EVSE is left out
    assert evse["capabilities"] == ["RESERVABLE"]
    (connector,) = evse["connectors"]  # the GB/T connector is left out
    assert not V221_CONNECTOR_FIELDS & set(connector)
    assert (connector["voltage"], connector["amperage"], connector["tariff_id"]) == (230, 32, "T1")
    assert connector["power_type"] == "AC_1_PHASE"


def test_an_evse_and_a_connector_are_read_back_in_2_1_1(ocpi: OcpiTestClient, partner: Partner) -> None:
    stored_location(partner)
    evse = ocpi.get("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/LOC1-E1").json()["data"]
    assert [c["id"] for c in evse["connectors"]] == ["1"]
    connector = ocpi.get("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/LOC1-E1/1").json()["data"]
    assert set(connector) == {
        "id",
        "standard",
        "format",
        "power_type",
        "voltage",
        "amperage",
        "tariff_id",
        "last_updated",
    }
    # 2.2.1 reads the same objects unchanged.
    assert "max_voltage" in ocpi.get("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/LOC1-E1/1").json()["data"]


@pytest.mark.parametrize("path", ["LOC1/LOC1-E1/2", "LOC1/LOC1-E2"])
def test_what_2_1_1_cannot_say_is_an_error_naming_it(ocpi: OcpiTestClient, partner: Partner, path: str) -> None:
    stored_location(partner)
    answer = ocpi.get(f"/ocpi/emsp/2.1.1/locations/IN/CPA/{path}").json()
    assert answer["status_code"] == 3000
    assert "OCPI 2.1.1 has no connector type" in answer["status_message"]
    assert "data" not in answer


def test_a_2_1_1_location_comes_back_as_it_was_put(ocpi: OcpiTestClient, partner: Partner) -> None:
    sent = V211["location"]
    assert ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", sent).json()["status_code"] == 1000
    read = ocpi.get("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1").json()["data"]
    assert read["type"] == sent["type"]
    for ours, theirs in zip(read["evses"], sent["evses"], strict=True):
        assert [(c["id"], c["voltage"], c["amperage"], c["tariff_id"]) for c in ours["connectors"]] == [
            (c["id"], c["voltage"], c["amperage"], c["tariff_id"]) for c in theirs["connectors"]
        ]


# --- sessions ------------------------------------------------------------------------------------------------


@pytest.fixture
def bengaluru(partner: Partner) -> Location:
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC1", tariff_ids=["T1"])])
    return Location.objects.get(partner=partner, location_id="LOC1")


def session_221(**changes: Any) -> dict[str, Any]:
    return {
        "country_code": "IN",
        "party_id": "CPA",
        "id": "S1",
        "start_date_time": "2026-01-02T10:00:00Z",
        "kwh": 4.5,
        "cdr_token": {
            "country_code": "IN",
            "party_id": "EMS",
            "uid": "RFID1",
            "type": "RFID",
            "contract_id": "IN-EMS-C1",
        },
        "auth_method": "COMMAND",
        "authorization_reference": "AUTH-1",
        "location_id": "LOC1",
        "evse_uid": "LOC1-E2",
        "connector_id": "1",
        "currency": "EUR",
        "charging_periods": [
            {
                "start_date_time": "2026-01-02T10:00:00Z",
                "dimensions": [{"type": "ENERGY", "volume": 4.5}, {"type": "STATE_OF_CHARGE", "volume": 60}],
                "tariff_id": "T1",
            },
            {"start_date_time": "2026-01-02T10:30:00Z", "dimensions": [{"type": "POWER", "volume": 7.2}]},
        ],
        "total_cost": {"excl_vat": 2.25, "incl_vat": 2.72},
        "status": "ACTIVE",
        "last_updated": "2026-01-02T10:40:00Z",
        **changes,
    }


def test_a_session_is_read_back_in_2_1_1_with_its_location(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    assert ocpi.put("/ocpi/emsp/2.2.1/sessions/IN/CPA/S1", session_221()).json()["status_code"] == 1000
    answer = ocpi.get("/ocpi/emsp/2.1.1/sessions/IN/CPA/S1").json()
    assert answer["status_code"] == 1000, answer
    session = answer["data"]
    assert set(session) == {
        "id", "start_datetime", "kwh", "auth_id", "auth_method", "location", "currency", "charging_periods",
        "total_cost", "status", "last_updated",
    }  # fmt: skip
    assert (session["auth_id"], session["auth_method"], session["status"]) == ("IN-EMS-C1", "AUTH_REQUEST", "ACTIVE")
    assert Decimal(str(session["total_cost"])) == Decimal("2.25")  # 2.1.1: a number, excluding VAT
    # Only 2.1.1's dimensions; the period left with none is left out; no tariff_id.
    assert session["charging_periods"] == [
        {"start_date_time": "2026-01-02T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 4.5}]}
    ]
    location = session["location"]
    assert (location["id"], location["type"]) == ("LOC1", "UNKNOWN")
    (evse,) = location["evses"]
    assert evse["uid"] == "LOC1-E2"
    assert [c["id"] for c in evse["connectors"]] == ["1"]


def test_a_reservation_session_reads_as_pending_in_2_1_1(
    ocpi: OcpiTestClient, partner: Partner, bengaluru: Location
) -> None:
    ocpi.put("/ocpi/emsp/2.2.1/sessions/IN/CPA/S1", session_221(status="RESERVATION", kwh=0, charging_periods=[]))
    assert ocpi.get("/ocpi/emsp/2.1.1/sessions/IN/CPA/S1").json()["data"]["status"] == "PENDING"


def test_a_session_at_a_location_we_do_not_hold_is_2003(ocpi: OcpiTestClient, partner: Partner) -> None:
    assert ocpi.put("/ocpi/emsp/2.2.1/sessions/IN/CPA/S1", session_221()).json()["status_code"] == 1000
    assert ChargingSession.objects.filter(session_id="S1").exists()
    answer = ocpi.get("/ocpi/emsp/2.1.1/sessions/IN/CPA/S1").json()
    assert answer["status_code"] == 2003
    assert "LOC1/LOC1-E2/1" in answer["status_message"]
    # 2.2.1 reads it as it is.
    assert ocpi.get("/ocpi/emsp/2.2.1/sessions/IN/CPA/S1").json()["data"]["location_id"] == "LOC1"


def test_a_2_1_1_cdr_keeps_only_2_1_1_dimensions() -> None:
    periods = session_221()["charging_periods"]
    assert v211.charging_periods_out(periods) == [
        {"start_date_time": "2026-01-02T10:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 4.5}]}
    ]


def test_a_2_1_1_location_of_iec_60309_sockets_comes_back_whole(ocpi: OcpiTestClient, partner: Partner) -> None:
    """mod_locations 2.1.1 ConnectorType has the four IEC 60309 values, spelt as 2.2.1 spells them."""
    sent = copy.deepcopy(V211["location"])
    for evse in sent["evses"]:
        for connector in evse["connectors"]:
            connector["standard"] = "IEC_60309_2_three_32"
    assert ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1", sent).json()["status_code"] == 1000
    read = ocpi.get("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1").json()["data"]
    assert [c["standard"] for e in read["evses"] for c in e["connectors"]] == ["IEC_60309_2_three_32"] * 3
    assert ocpi.get("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1/3257/1").json()["status_code"] == 1000


def test_a_location_stored_without_a_postal_code_reads_back_with_an_empty_one(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    body = ocpi_location("IN", "CPA", "LOC1", tariff_ids=["T1"])
    del body["postal_code"]
    locations_store(partner, [body])
    assert ocpi.get("/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1").json()["data"]["postal_code"] == ""
