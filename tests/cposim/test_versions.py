"""The simulator's 2.1.1 and 2.3.0 wire (cposim/versions.py): its objects in each version's shape, checked
against the specs' example field sets, and read back by our eMSP's mappings (ocpi/versions) to what the
simulator holds — the two sides were written apart, so a round trip that holds is evidence for both."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from cposim import versions as sim
from cposim.catalogue import synthetic_locations, tariff_profile
from cposim.config import SimConfig
from ocpi import versions as ours
from ocpi.normalize import normalize_location, normalize_session
from ocpi.versions import Context

EXAMPLES = Path(__file__).resolve().parents[1] / "ocpi" / "spec_examples"
V211: dict[str, Any] = json.loads((EXAMPLES / "ocpi-2.1.1.json").read_text())

CFG = SimConfig(locations=3, cities=["Bengaluru"])
TARIFFS = tariff_profile("a", CFG)
LOCATION = synthetic_locations(CFG, TARIFFS)[0]
SESSION = {
    "country_code": "IN",
    "party_id": "CPA",
    "id": "S1",
    "start_date_time": "2026-11-30T10:00:00.000Z",
    "end_date_time": "2026-11-30T10:30:00.000Z",
    "kwh": 5.5,
    "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": "APP1", "type": "APP_USER", "contract_id": "C-42"},
    "auth_method": "COMMAND",
    "authorization_reference": "AUTH-1",
    "location_id": LOCATION["id"],
    "evse_uid": LOCATION["evses"][0]["uid"],
    "connector_id": LOCATION["evses"][0]["connectors"][0]["id"],
    "currency": "INR",
    "charging_periods": [
        {"start_date_time": "2026-11-30T10:00:00.000Z", "dimensions": [{"type": "ENERGY", "volume": 5.5}]}
    ],
    "total_cost": {"excl_vat": 110.0, "incl_vat": 129.8},
    "status": "COMPLETED",
    "last_updated": "2026-11-30T10:30:01Z",
}


def test_a_2_1_1_location_has_only_2_1_1_fields() -> None:
    out = sim.location_out("2.1.1", LOCATION)
    assert set(out) <= set(V211["location"]) | {
        "time_zone",
        "opening_times",
        "charging_when_closed",
        "facilities",
        "directions",
        "images",
    }
    connector = out["evses"][0]["connectors"][0]
    assert set(connector) <= set(V211["location"]["evses"][0]["connectors"][0]) | {"terms_and_conditions"}


def test_our_emsp_reads_the_simulators_2_1_1_location_as_the_simulator_holds_it() -> None:
    wire = sim.location_out("2.1.1", LOCATION)
    back, _ = normalize_location(ours.upgrade("2.1.1", "location", wire, Context(owner=("IN", "CPA"))))
    held, _ = normalize_location(LOCATION)
    for key in ("id", "country_code", "party_id", "coordinates", "publish"):
        assert back[key] == held[key], key
    theirs = [
        (c["standard"], c["max_voltage"], c["max_amperage"], c["tariff_ids"][:1])
        for e in held["evses"]
        for c in e["connectors"]
    ]
    mine = [
        (c["standard"], c["max_voltage"], c["max_amperage"], c["tariff_ids"])
        for e in back["evses"]
        for c in e["connectors"]
    ]
    assert mine == theirs


def test_our_emsp_reads_the_simulators_2_3_0_location_without_its_parking() -> None:
    wire = sim.location_out("2.3.0", LOCATION)
    assert wire["parking_places"] and wire["evses"][0]["parking"]
    back, issues = normalize_location(ours.upgrade("2.3.0", "location", wire))
    assert "unknown_field" not in {i.code for i in issues}
    assert len(back["evses"]) == len(LOCATION["evses"])


@pytest.mark.parametrize("version", ["2.1.1", "2.3.0"])
def test_our_emsp_reads_the_simulators_session_back(version: str) -> None:
    wire = sim.session_out(version, SESSION, LOCATION)
    if version == "2.1.1":
        assert set(wire) <= set(V211["session_finished"])
    ctx = Context(
        owner=("IN", "CPA"),
        emsp=("IN", "EMS"),
        token_for={"C-42": ("APP1", "APP_USER")}.get,
        authorization_reference_for=lambda session: "AUTH-1",
    )
    back, _ = normalize_session(ours.upgrade(version, "session", wire, ctx))
    for key in ("id", "location_id", "evse_uid", "connector_id", "status", "authorization_reference", "cdr_token"):
        assert back[key] == SESSION[key], key
    assert Decimal(str(back["total_cost"]["excl_vat"])) == Decimal("110.0")
    incl = back["total_cost"].get("incl_vat")
    assert (Decimal(str(incl)) if incl is not None else None) == (Decimal("129.8") if version == "2.3.0" else None)


def test_a_2_1_1_tariff_has_no_vat_and_no_2_2_fields() -> None:
    out = sim.tariff_out("2.1.1", TARIFFS[0])
    assert set(out) <= {"id", "currency", "tariff_alt_text", "tariff_alt_url", "elements", "energy_mix", "last_updated"}
    assert all("vat" not in c for e in out["elements"] for c in e["price_components"])


def test_the_simulator_reads_a_2_1_1_token_and_command() -> None:
    token = sim.token_in("2.1.1", V211["token"], "NL", "TNM")
    assert (token["contract_id"], token["country_code"], token["party_id"]) == ("DE8ACC12E46L89", "NL", "TNM")
    body = sim.command_in("2.1.1", {"response_url": "u", "token": V211["token"], "reservation_id": 7}, ("NL", "TNM"))
    assert body["reservation_id"] == "7" and body["token"]["contract_id"] == "DE8ACC12E46L89"


def test_the_simulator_answers_2_1_1_commands_with_command_response_types() -> None:
    assert sim.command_result_out("2.1.1", {"result": "EVSE_OCCUPIED", "message": []}) == {"result": "REJECTED"}
    assert sim.command_response_out("2.1.1", {"result": "ACCEPTED", "timeout": 30}) == {"result": "ACCEPTED"}
    assert ours.upgrade("2.1.1", "command_result", sim.command_result_out("2.1.1", {"result": "ACCEPTED"})) == {
        "result": "ACCEPTED"
    }


def test_the_simulators_2_1_1_credentials_have_one_party() -> None:
    ours_211 = {
        "token": "t",
        "url": "u",
        "roles": [{"role": "CPO", "party_id": "CPA", "country_code": "IN", "business_details": {"name": "A"}}],
    }
    out = sim.credentials_out("2.1.1", ours_211)
    assert set(out) == set(V211["credentials"])
    assert ours.upgrade("2.1.1", "credentials", out)["roles"][0]["party_id"] == "CPA"
    assert sim.credentials_in("2.1.1", out)["roles"][0]["party_id"] == "CPA"
