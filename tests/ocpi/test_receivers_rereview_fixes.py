"""A re-review of 5aaf449 (OCPI receivers check the party an object is stored under): a PATCH takes the alpha-3
country its PUT takes, a NUL in a CommandResult's only-shown message drops the message and not the result, and the
findings of an object refused (2001, or 404 for one we don't hold) are not recorded: the refusal is the answer."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler

from billing.models import Tariff
from emsp.models import ChargingSession, Command, Evse, Location, Partner, PartnerParty, hash_token
from emsp.services.catalogue import locations_store
from emsp.services.partners import partner_party_grant
from ocpi.models import DataQualityIssue
from ocpi.wsgi_lane import OcpiLane
from tests.conftest import CPO_TOKEN, OcpiTestClient
from tests.factories import ocpi_location, stored_location
from tests.wsgi_calls import call_wsgi

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1"
TS = "2026-11-01T00:00:00Z"

Client = Callable[..., OcpiTestClient]


def findings() -> list[tuple[str, str, str]]:
    return sorted(DataQualityIssue.objects.values_list("module", "object_id", "code"))


def a_session(spec_example: Callable[[str], Any], country_code: str = "IN") -> dict[str, Any]:
    return {**spec_example("session_example_2_short_finished.json"), "country_code": country_code, "party_id": "CPA"}


# --- 2. a PATCH takes the alpha-3 country its PUT takes ----------------------------------------------------------


def test_a_session_patch_with_an_alpha3_country_is_taken_as_its_put_is(client_for: Client, spec_example: Any) -> None:
    cpa = client_for("IN", "CPA")
    s = a_session(spec_example, "IND")
    assert cpa.put(f"{BASE}/sessions/IN/CPA/{s['id']}", s).json()["status_code"] == 1000
    r = cpa.patch(f"{BASE}/sessions/IN/CPA/{s['id']}", {"country_code": "IND", "kwh": 3, "last_updated": TS})
    assert r.json()["status_code"] == 1000
    assert ChargingSession.objects.get().kwh == 3


def test_a_location_patch_with_an_alpha3_country_is_taken_in_either_spelling(client_for: Client) -> None:
    cpa = client_for("IN", "CPA")
    put = cpa.put(f"{BASE}/locations/IN/CPA/L1", {**ocpi_location("IN", "CPA", "L1"), "country_code": "IND"})
    camel = cpa.patch(f"{BASE}/locations/IN/CPA/L1", {"countryCode": "IND", "name": "a", "last_updated": TS})
    snake = cpa.patch(f"{BASE}/locations/IN/CPA/L1", {"country_code": "IND", "name": "b", "last_updated": TS})
    answers = [r.json()["status_code"] for r in (put, camel, snake)]
    assert answers == [1000, 1000, 1000]
    assert Location.objects.get().name == "b"


@pytest.mark.parametrize("field", ["country_code", "countryCode"])
def test_a_patch_naming_another_country_is_still_refused(client_for: Client, spec_example: Any, field: str) -> None:
    cpa = client_for("IN", "CPA")
    s = a_session(spec_example)
    cpa.put(f"{BASE}/sessions/IN/CPA/{s['id']}", s)
    locations_store(cpa.partner, [ocpi_location("IN", "CPA", "L1")])  # type: ignore[attr-defined]
    session = cpa.patch(f"{BASE}/sessions/IN/CPA/{s['id']}", {field: "BEL", "kwh": 3, "last_updated": TS})
    location = cpa.patch(f"{BASE}/locations/IN/CPA/L1", {field: "BEL", "name": "x", "last_updated": TS})
    assert [r.json()["status_code"] for r in (session, location)] == [2001, 2001]
    assert ChargingSession.objects.get().kwh != 3 and Location.objects.get().name != "x"


# --- 3. a NUL in a CommandResult's message drops the message, not the result -------------------------------------


def nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


def a_command(client: OcpiTestClient) -> Command:
    return Command.objects.create(partner=client.partner, type="START_SESSION", status=Command.Status.ACCEPTED)  # type: ignore[attr-defined]


def test_a_nul_in_a_command_results_message_drops_the_message_and_applies_the_result(client_for: Client) -> None:
    bec = client_for("BE", "BEC")
    cmd = a_command(bec)
    message = [{"language": "en", "text": "started\u0000"}]
    r = bec.post(f"{BASE}/commands/START_SESSION/{cmd.uid}", {"result": "ACCEPTED", "message": message})
    cmd.refresh_from_db()
    assert (r.json()["status_code"], cmd.status) == (1000, "SUCCEEDED")
    assert "message" not in cmd.result
    assert findings() == [("commands", str(cmd.uid), "control_characters")]


def test_a_nul_in_a_message_field_name_drops_it_too(client_for: Client) -> None:
    bec = client_for("BE", "BEC")
    cmd = a_command(bec)
    r = bec.post(f"{BASE}/commands/START_SESSION/{cmd.uid}", [{"result": "ACCEPTED", "message": [{"te\u0000xt": 1}]}])
    cmd.refresh_from_db()
    assert (r.json()["status_code"], cmd.status) == (1000, "SUCCEEDED")


@pytest.mark.parametrize(
    "body",
    [
        {"result": "ACCEPTED\u0000", "message": [{"language": "en", "text": "started"}]},  # the result itself
        {"result": "ACCEPTED", "message\u0000": "x"},  # a field named with a NUL is no message
        {"result": "ACCEPTED", "message": "ok", "extra": "a\u0000"},  # anywhere else
        {"result": "ACCEPTED", "message": [{"text": "\u0000"}], "other": {"x": "\u0000"}},
        {"result": "ACCEPTED", "message": [{"text": "a\u0000"}, {"text": nested(40)}]},
    ],
    ids=["result", "field-name", "elsewhere", "also-elsewhere", "too-deep-under-message"],
)
def test_a_nul_anywhere_but_the_message_and_depth_anywhere_are_still_refused(
    client_for: Client, body: dict[str, Any]
) -> None:
    bec = client_for("BE", "BEC")
    cmd = a_command(bec)
    r = bec.post(f"{BASE}/commands/START_SESSION/{cmd.uid}", body)
    cmd.refresh_from_db()
    assert (r.json()["status_code"], cmd.status) == (2001, "ACCEPTED")
    assert findings() == []


def test_elsewhere_a_nul_in_a_message_is_still_refused(client_for: Client, spec_example: Any) -> None:
    # Only the CommandResult drops a field for a NUL: a session's is refused whole, as before.
    cpa = client_for("IN", "CPA")
    s = {**a_session(spec_example), "message": "a\u0000"}
    assert cpa.put(f"{BASE}/sessions/IN/CPA/{s['id']}", s).json()["status_code"] == 2001


# --- 4. the findings of a refused object are not recorded ---------------------------------------------------------


def test_a_patch_of_a_location_we_dont_hold_records_no_finding(client_for: Client) -> None:
    r = client_for("IN", "CPA").patch(
        f"{BASE}/locations/IN/CPA/NOPE", {"name": "x", "bogus_field": 1, "last_updated": TS}
    )
    assert r.status_code == 404 and findings() == []


def test_an_evse_patch_refused_for_its_listed_connector_records_no_finding(client_for: Client) -> None:
    cpa = client_for("IN", "CPA")
    loc = ocpi_location("IN", "CPA", "LOC1")
    locations_store(cpa.partner, [loc])  # type: ignore[attr-defined]
    uid = loc["evses"][0]["uid"]  # type: ignore[index]
    body = {"status": "CHARGING", "bogus_field": 1, "last_updated": TS, "connectors": [{"id": "NEW"}]}
    r = cpa.patch(f"{BASE}/locations/IN/CPA/LOC1/{uid}", body)
    assert r.json()["status_code"] == 2001 and Evse.objects.get(uid=uid).status == "AVAILABLE"
    assert findings() == []


def test_a_location_patch_taken_with_its_children_records_their_findings(client_for: Client) -> None:
    # The other side of the one above: what is taken keeps its findings, the parent's and the children's.
    cpa = client_for("IN", "CPA")
    loc = ocpi_location("IN", "CPA", "LOC1")
    locations_store(cpa.partner, [loc])  # type: ignore[attr-defined]
    uid = loc["evses"][0]["uid"]  # type: ignore[index]
    body = {"name": "x", "bogus_field": 1, "last_updated": TS, "evses": [{"uid": uid, "status": "CHARGING", "odd": 1}]}
    assert cpa.patch(f"{BASE}/locations/IN/CPA/LOC1", body).json()["status_code"] == 1000
    assert {("locations", "LOC1", "unknown_field"), ("locations", f"LOC1/{uid}", "unknown_field")} <= set(findings())


def test_a_session_patch_refused_records_no_finding(client_for: Client, spec_example: Any) -> None:
    cpa = client_for("IN", "CPA")
    s = a_session(spec_example)
    assert cpa.put(f"{BASE}/sessions/IN/CPA/{s['id']}", s).status_code == 201
    DataQualityIssue.objects.all().delete()
    body = {"end_date_time": "2015-06-29T20:00:00Z", "bogus_field": 1, "last_updated": TS}
    r = cpa.patch(f"{BASE}/sessions/IN/CPA/{s['id']}", body)
    assert r.json()["status_code"] == 2001 and findings() == []
    taken = cpa.patch(f"{BASE}/sessions/IN/CPA/{s['id']}", {"kwh": 3, "bogus_field": 1, "last_updated": TS})
    assert taken.json()["status_code"] == 1000 and findings() == [("sessions", s["id"], "unknown_field")]


def test_a_tariff_refused_for_a_party_no_longer_held_records_no_finding(client_for: Client, spec_example: Any) -> None:
    hub = client_for("NL", "HUB")
    partner_party_grant(partner=hub.partner, country_code="IN", party_id="CPA", by="staff")  # type: ignore[attr-defined]
    t = {**spec_example("tariff_8_simple_025kwh.json"), "country_code": "IN", "party_id": "CPA"}
    assert hub.put(f"{BASE}/tariffs/IN/CPA/{t['id']}", t).status_code == 201
    Tariff.objects.all().delete()
    DataQualityIssue.objects.all().delete()
    # Taken back from the hub after its parties were read (cached for seconds): the store refuses it.
    PartnerParty.objects.filter(country_code="IN", party_id="CPA").delete()
    r = hub.put(f"{BASE}/tariffs/IN/CPA/{t['id']}", {**t, "bogus_field": 1})
    assert r.status_code == 404 and findings() == []


def test_a_cdr_refused_as_changed_records_only_the_refusal(client_for: Client, spec_example: Any) -> None:
    cpa = client_for("BE", "BEC")
    cdr = spec_example("cdr_example.json")
    assert cpa.post(f"{BASE}/cdrs", cdr).status_code == 201
    DataQualityIssue.objects.all().delete()
    changed = {**cdr, "total_energy": 99, "bogus_field": 1}
    r = cpa.post(f"{BASE}/cdrs", changed)
    assert r.json()["status_code"] == 2001
    assert findings() == [("cdrs", cdr["id"], "cdr_changed")]


# --- the EVSE PATCH's direct route (ocpi/wsgi_lane.py) records as the whole stack does ---------------------------


AUTH = {"Authorization": "Token " + base64.b64encode(CPO_TOKEN.encode()).decode()}


@pytest.mark.parametrize(("evse_uid", "taken"), [("LOC1-E1", True), ("NOPE", False)])
def test_the_direct_evse_patch_records_findings_as_the_whole_stack_does(
    partner: Partner, evse_uid: str, taken: bool
) -> None:
    assert partner.incoming_token_hash == hash_token(CPO_TOKEN)
    stored_location(partner, location_id="LOC1", evses=1)
    whole = WSGIHandler()
    body = orjson.dumps({"status": "CHARGING", "bogus_field": 1, "last_updated": TS})
    seen = []
    for app in (whole, OcpiLane(whole)):
        DataQualityIssue.objects.all().delete()
        status, _, _ = call_wsgi(app, "PATCH", f"{BASE}/locations/IN/CPA/LOC1/{evse_uid}", body, AUTH)
        seen.append((status, findings()))
    expected = [("locations", f"LOC1/{evse_uid}", "unknown_field")] if taken else []
    assert seen[0] == seen[1] and seen[0][1] == expected
