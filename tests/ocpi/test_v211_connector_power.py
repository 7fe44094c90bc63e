"""A PATCH of what our derived power comes from, and a 2.1.1 location `type` PATCHed to one 2.2.1 lacks.

A 2.1.1 Connector has no power (mod_locations 2.1.1 §3.3: power_type, voltage, amperage): ours is derived from
them (ocpi/normalize/evses.py), so a PATCH of one of them must derive it again, as a PUT would. The objects are the
2.1.1 spec's example (tests/ocpi/spec_examples/), addressed to the CPO's party IN*CPA."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from emsp.models import Connector, Evse, Location, Partner
from emsp.services import catalogue
from ocpi import enums
from ocpi.normalize import normalize_connector
from tests.conftest import OcpiTestClient
from tests.factories import ocpi_location

pytestmark = pytest.mark.django_db

V211: dict[str, Any] = json.loads((Path(__file__).parent / "spec_examples" / "ocpi-2.1.1.json").read_text())
LOCATION_211 = "/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1"
LOCATION_221 = "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1"
CONNECTOR_221 = f"{LOCATION_221}/LOC1-E1/1"
TS = "2026-08-02T00:00:00Z"


def stored(uid: str, connector_id: str) -> tuple[Evse, Connector]:
    evse = Evse.objects.get(location__location_id="LOC1", uid=uid)
    return evse, evse.connectors.get(connector_id=connector_id)


def put_211(ocpi: OcpiTestClient) -> None:
    assert ocpi.put(LOCATION_211, copy.deepcopy(V211["location"])).json()["status_code"] == 1000
    evse, connector = stored("3256", "1")  # AC_3_PHASE, 220 V, 16 A: 220 x 16 x 3 derived
    assert (connector.data["max_electric_power"], evse.max_power_w) == (10_560, 10_560)


# --- (A) a 2.1.1 connector PATCH derives the power again ------------------------------------------------------


@pytest.mark.parametrize(
    ("patch", "power"),
    [
        ({"amperage": 32}, 21_120),  # 220 V x 32 A x 3
        ({"voltage": 230}, 11_040),  # 230 V x 16 A x 3
        ({"voltage": 400}, 11_085),  # line-to-line: 400 V x 16 A x sqrt 3, as a PUT reads it
        ({"power_type": "AC_1_PHASE"}, 3_520),  # 220 V x 16 A
        ({"amperage": 0}, None),  # amperage unknown: no power to derive, as a PUT of it would hold none
    ],
)
def test_it_derives_a_2_1_1_connectors_power_again_when_a_patch_changes_what_it_comes_from(
    ocpi: OcpiTestClient, partner: Partner, patch: dict[str, Any], power: int | None
) -> None:
    put_211(ocpi)
    assert ocpi.patch(f"{LOCATION_211}/3256/1", patch).json()["status_code"] == 1000
    evse, connector = stored("3256", "1")
    assert (connector.data.get("max_electric_power"), connector.max_electric_power) == (power, power)
    # The EVSE's power is its connectors' greatest, as after a PUT: connector 2 still gives 10 560 W.
    assert evse.max_power_w == max(power or 0, 10_560)


def test_it_derives_the_power_of_a_connector_patched_in_an_evse_patch(ocpi: OcpiTestClient, partner: Partner) -> None:
    put_211(ocpi)
    body = {"connectors": [{"id": "2", "amperage": 32}]}
    assert ocpi.patch(f"{LOCATION_211}/3256", body).json()["status_code"] == 1000
    evse, connector = stored("3256", "2")
    assert (connector.max_electric_power, evse.max_power_w) == (21_120, 21_120)


def test_it_derives_the_power_of_a_connector_listed_in_a_location_patch(ocpi: OcpiTestClient, partner: Partner) -> None:
    put_211(ocpi)
    body = {"evses": [{"uid": "3257", "connectors": [{"id": "1", "voltage": 230, "amperage": 32}]}]}
    assert ocpi.patch(LOCATION_211, body).json()["status_code"] == 1000
    evse, connector = stored("3257", "1")
    assert (connector.max_electric_power, evse.max_power_w) == (22_080, 22_080)


def test_it_leaves_the_power_alone_when_a_patch_changes_nothing_it_comes_from(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    put_211(ocpi)
    assert ocpi.patch(f"{LOCATION_211}/3256/1", V211["connector_patch"]).json()["status_code"] == 1000
    _evse, connector = stored("3256", "1")
    assert (connector.max_electric_power, connector.data["tariff_ids"]) == (10_560, ["15"])


# --- 2.2.1: a power the CPO sent is its own -------------------------------------------------------------------


def put_221(ocpi: OcpiTestClient, **connector: Any) -> None:
    body = ocpi_location(evses=1)
    body["evses"][0]["connectors"][0].update(connector)  # DC 500 V 120 A, 60 000 W sent
    body["evses"][0]["connectors"][0] = {k: v for k, v in body["evses"][0]["connectors"][0].items() if v is not None}
    assert ocpi.put(LOCATION_221, body).json()["status_code"] == 1000


def test_it_keeps_a_power_the_cpo_sent_when_a_2_2_1_patch_changes_only_the_voltage(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    put_221(ocpi)
    assert ocpi.patch(CONNECTOR_221, {"max_voltage": 920, "last_updated": TS}).json()["status_code"] == 1000
    evse, connector = stored("LOC1-E1", "1")
    assert (connector.max_voltage, connector.max_electric_power, evse.max_power_w) == (920, 60_000, 60_000)


def test_it_takes_the_power_a_2_2_1_patch_sends(ocpi: OcpiTestClient, partner: Partner) -> None:
    put_221(ocpi, power_type="AC_3_PHASE", max_voltage=230, max_amperage=16, max_electric_power=None)
    patch = {"max_amperage": 32, "max_electric_power": 22_000, "last_updated": TS}
    assert ocpi.patch(CONNECTOR_221, patch).json()["status_code"] == 1000
    evse, connector = stored("LOC1-E1", "1")
    assert (connector.max_electric_power, evse.max_power_w) == (22_000, 22_000)


def test_a_2_2_1_patch_naming_no_power_keeps_even_one_we_derived(ocpi: OcpiTestClient, partner: Partner) -> None:
    """Nothing records which powers we derived: a 2.2.1 PATCH leaves what it omits (one of 2.1.1 can't say any)."""
    put_221(ocpi, power_type="AC_3_PHASE", max_voltage=230, max_amperage=16, max_electric_power=None)
    assert stored("LOC1-E1", "1")[1].max_electric_power == 11_040  # derived at the PUT
    assert ocpi.patch(CONNECTOR_221, {"max_amperage": 32, "last_updated": TS}).json()["status_code"] == 1000
    assert stored("LOC1-E1", "1")[1].max_electric_power == 11_040


def test_a_2_2_1_patch_nulling_the_power_leaves_it(ocpi: OcpiTestClient, partner: Partner) -> None:
    """max_electric_power is required in 2.2.1: a null is dropped with a finding (it had cleared the power, and the
    connector read back without it); only the 2.1.1 mapping has the power derived again."""
    put_221(ocpi, power_type="AC_3_PHASE", max_voltage=230, max_amperage=16, max_electric_power=None)
    patch = {"max_amperage": 32, "max_electric_power": None, "last_updated": TS}
    assert ocpi.patch(CONNECTOR_221, patch).json()["status_code"] == 1000
    evse, connector = stored("LOC1-E1", "1")
    assert (connector.max_electric_power, evse.max_power_w) == (11_040, 11_040)
    read = ocpi.get(CONNECTOR_221).json()["data"]
    assert read["max_electric_power"] == 11_040


def test_a_patch_giving_a_connector_without_power_its_voltage_derives_one(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    put_221(ocpi, max_voltage=0, max_electric_power=None)  # DC, 120 A, voltage unknown: no power to derive
    assert stored("LOC1-E1", "1")[1].max_electric_power is None
    assert ocpi.patch(CONNECTOR_221, {"max_voltage": 400, "last_updated": TS}).json()["status_code"] == 1000
    evse, connector = stored("LOC1-E1", "1")
    assert (connector.max_electric_power, evse.max_power_w) == (48_000, 48_000)


def test_its_derivation_is_the_normalizers() -> None:
    """emsp may not import ocpi (pyproject's layers): the catalogue holds its own V x A x phases, which must
    give what the normalizer derives at a PUT."""
    for power_type, voltage, amperage in itertools.product(enums.POWER_TYPES, (110, 230, 250, 251, 400, 920), (6, 32)):
        raw = {"id": "1", "standard": "IEC_62196_T2", "format": "SOCKET", "power_type": power_type}
        clean, _ = normalize_connector({**raw, "max_voltage": voltage, "max_amperage": amperage, "last_updated": TS})
        assert catalogue._derived_power_w(clean) == clean["max_electric_power"], (power_type, voltage, amperage)


# --- (B) a 2.1.1 location PATCH of `type` ---------------------------------------------------------------------


@pytest.mark.parametrize("location_type", ["OTHER", "UNKNOWN"])
def test_a_2_1_1_patch_to_a_type_without_a_parking_type_clears_ours(
    ocpi: OcpiTestClient, partner: Partner, location_type: str
) -> None:
    put_211(ocpi)
    assert Location.objects.get(location_id="LOC1").data["parking_type"] == "ON_STREET"
    assert ocpi.patch(LOCATION_211, {"type": location_type}).json()["status_code"] == 1000
    location = Location.objects.get(location_id="LOC1")
    assert "parking_type" not in location.data and location.data["name"] == "Gent Zuid"
    assert ocpi.get(LOCATION_211).json()["data"]["type"] == "UNKNOWN"  # none to read back (docs/ocpi-versions.md)


def test_a_2_1_1_patch_of_type_to_a_parking_type_sets_it(ocpi: OcpiTestClient, partner: Partner) -> None:
    put_211(ocpi)
    assert ocpi.patch(LOCATION_211, {"type": "PARKING_LOT"}).json()["status_code"] == 1000
    assert Location.objects.get(location_id="LOC1").data["parking_type"] == "PARKING_LOT"


def test_a_location_patch_without_type_keeps_the_parking_type(ocpi: OcpiTestClient, partner: Partner) -> None:
    put_211(ocpi)
    assert ocpi.patch(LOCATION_211, {"name": "Gent Noord"}).json()["status_code"] == 1000
    assert Location.objects.get(location_id="LOC1").data["parking_type"] == "ON_STREET"
