"""The simulator reproduces each quirk of extrawest-ocpi (docs/interop.md) as a fault mode, so our own e2e tests
meet them without the peer: glued push URLs, no request ids, a commands receiver left out of the version
details, refusals as HTTP 200 + 3000, optional fields as null, CDR locations without evse_uid."""

from __future__ import annotations

import requests

from cposim.quirks import null_optionals, render, without_cdr_evse_uid

from .conftest import FakeEmsp, auth, ocpi, pick_evse

QUIRKS = "glued_push_urls,no_request_ids,no_commands_endpoint,status_in_200,null_optionals"


def test_each_quirk_shows_on_the_wire(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim("--locations", "4", "--fault", QUIRKS)
    token = fake_emsp.register_with_sim(sim)

    details = ocpi(sim, "GET", "", token).json()["data"]
    assert "commands" not in {e["identifier"] for e in details["endpoints"]}
    assert {e["identifier"] for e in details["endpoints"]} >= {"locations", "tariffs", "tokens", "credentials"}

    listed = ocpi(sim, "GET", "/locations", token)
    assert "X-Request-ID" not in listed.headers and "X-Correlation-ID" not in listed.headers
    location = listed.json()["data"][0]
    assert [k for k in ("state", "suboperator", "owner", "directions", "images") if location.get(k, "") is None]
    evse = location["evses"][0]
    assert [k for k in ("floor_level", "physical_reference", "directions", "images") if evse.get(k, "") is None]

    refused = requests.get(sim.url("/ocpi/2.2.1/locations"), headers=auth("not-a-token"), timeout=5)
    assert refused.status_code == 200 and refused.json()["status_code"] == 3000 and refused.json()["data"] == []

    loc_id, evse_uid = pick_evse(sim)
    sim.ctl("evse_status", {"location_id": loc_id, "evse_uid": evse_uid, "status": "BLOCKED"})
    patch = fake_emsp.wait_for("PATCH", f"/locationsIN/CPA/{loc_id}/{evse_uid}")
    assert "X-Request-ID" not in {k.title() for k in patch.headers}
    assert patch.body["status"] == "BLOCKED"


def test_the_modes_render_only_what_they_name() -> None:
    cdr = {"id": "C1", "cdr_location": {"id": "L1", "evse_uid": "E1", "evse_id": "IN*CPA*E1"}}
    assert without_cdr_evse_uid([cdr])[0]["cdr_location"] == {"id": "L1", "evse_id": "IN*CPA*E1"}
    assert render(cdr, {}) is cdr
    assert render(cdr, {"cdr_without_evse_uid": True})["cdr_location"].keys() == {"id", "evse_id"}
    connector = {"id": "1", "max_electric_power": 22000}
    assert null_optionals(connector) == {**connector, "terms_and_conditions": None}
    assert null_optionals({"id": "T1", "elements": []}) == {"id": "T1", "elements": []}


def test_a_status_schedule_sent_as_one_object_is_read_as_a_list_of_one() -> None:
    """`status_schedule_object` (extrawest-ocpi's 2.1.1 EVSE model): our normalizer reads the object as a list
    of one, with an `object_for_list` finding, where it had dropped it without a word."""
    from ocpi.normalize.locations import normalize_location
    from tests.factories import ocpi_location

    location = ocpi_location("IN", "CPA", "L1", evses=2)
    sent = render(location, {"status_schedule_object": True})
    assert render(location, {}) is location
    assert sent["evses"][0]["status_schedule"] == {"period_begin": "2026-01-01T00:00:00Z", "status": "AVAILABLE"}
    clean, issues = normalize_location(sent)
    assert clean["evses"][0]["status_schedule"] == [{"period_begin": "2026-01-01T00:00:00Z", "status": "AVAILABLE"}]
    assert {(i.code, i.fixed) for i in issues} == {("object_for_list", True)}
    _, issues = normalize_location({**location, "evses": [{**location["evses"][0], "status_schedule": "soon"}]})
    assert [(i.code, i.fixed) for i in issues] == [("invalid_type", False)]
