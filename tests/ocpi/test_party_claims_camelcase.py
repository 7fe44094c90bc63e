"""An object's party is the one its normalised body names: a camelCase `countryCode`/`partyId` (renamed by the
normaliser, ocpi/normalize/values.py::canonical_fields) must pass the same check against the URL and the caller's
parties as the snake_case keys, in every receiver; a hub still sends the objects of every party it holds; and a
CommandResult's odd `message` reads as none instead of losing the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Cdr, Tariff
from billing.services import records
from emsp.models import ChargingSession, Command, Location, Partner
from emsp.services.catalogue import locations_store
from emsp.services.partners import partner_party_grant
from ocpi.models import DataQualityIssue
from tests.conftest import OcpiTestClient
from tests.factories import ocpi_location

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1"
Client = Callable[..., OcpiTestClient]
Example = Callable[[str], Any]


def camel_party(obj: dict[str, Any], country_code: str, party_id: str) -> dict[str, Any]:
    """The object with its party under the camelCase names only."""
    out = {k: v for k, v in obj.items() if k not in ("country_code", "party_id")}
    out.update(countryCode=country_code, partyId=party_id)
    return out


# -- sessions -------------------------------------------------------------------------------------------------


def test_camelcase_party_overwrites_another_partners_session(client_for: Client, spec_example: Example) -> None:
    bec = client_for("BE", "BEC")
    oth = client_for("NL", "OTH")
    s = spec_example("session_example_2_short_finished.json")
    theirs = {**s, "country_code": "NL", "party_id": "OTH", "kwh": 15}
    assert oth.put(f"{BASE}/sessions/NL/OTH/{s['id']}", theirs).status_code == 201
    evil = camel_party(s, "NL", "OTH")
    evil.update(kwh=40, last_updated="2026-01-01T00:00:00Z")
    r = bec.put(f"{BASE}/sessions/BE/BEC/{s['id']}", evil)
    assert r.json()["status_code"] == 2001
    assert "country_code in the body" in r.json()["status_message"]
    row = ChargingSession.objects.get()
    assert (row.party_id, row.kwh) == ("OTH", 15)


def test_a_session_patch_naming_another_party_in_camelcase_is_refused(
    client_for: Client, spec_example: Example
) -> None:
    bec = client_for("BE", "BEC")
    client_for("NL", "OTH")
    s = spec_example("session_example_2_short_finished.json")
    assert bec.put(f"{BASE}/sessions/BE/BEC/{s['id']}", s).status_code == 201
    patch = {"countryCode": "NL", "partyId": "OTH", "kwh": 50, "last_updated": "2026-01-01T00:00:00Z"}
    r = bec.patch(f"{BASE}/sessions/BE/BEC/{s['id']}", patch)
    assert r.json()["status_code"] == 2001
    assert float(ChargingSession.objects.get().kwh) == pytest.approx(41.12)


# -- CDRs -----------------------------------------------------------------------------------------------------


def test_camelcase_party_preempts_another_partners_cdr(client_for: Client, spec_example: Example) -> None:
    bec = client_for("BE", "BEC")
    oth = client_for("NL", "OTH")
    c = spec_example("cdr_example.json")
    r1 = bec.post(f"{BASE}/cdrs", camel_party(c, "NL", "OTH"))
    assert (r1.status_code, r1.json()["status_code"]) == (404, 2000)
    assert not Cdr.objects.exists()
    theirs = {**c, "country_code": "NL", "party_id": "OTH", "total_cost": {"excl_vat": 9.0, "incl_vat": 10.0}}
    r2 = oth.post(f"{BASE}/cdrs", theirs)
    assert r2.json()["status_code"] == 1000
    assert Cdr.objects.get().partner_id == oth.partner.pk  # type: ignore[attr-defined]


def test_a_cdr_with_an_alpha3_country_of_the_callers_party_is_stored_under_alpha2(
    client_for: Client, spec_example: Example
) -> None:
    bec = client_for("BE", "BEC")
    r = bec.post(f"{BASE}/cdrs", {**spec_example("cdr_example.json"), "country_code": "BEL"})
    assert (r.status_code, r.json()["status_code"]) == (201, 1000)
    assert (Cdr.objects.get().country_code, Cdr.objects.get().party_id) == ("BE", "BEC")


# -- tariffs --------------------------------------------------------------------------------------------------


def test_tariff_put_camelcase_party(client_for: Client, spec_example: Example) -> None:
    bec = client_for("BE", "BEC")
    client_for("NL", "OTH")
    t = camel_party(spec_example("tariff_8_simple_025kwh.json"), "FR", "ZZZ")
    r = bec.put(f"{BASE}/tariffs/BE/BEC/{t['id']}", t)
    assert r.json()["status_code"] == 2001
    assert not Tariff.objects.exists()


def test_tariff_put_refuses_a_party_no_connection_holds(client_for: Client, spec_example: Example) -> None:
    bec = client_for("BE", "BEC")
    tariff = {**spec_example("tariff_8_simple_025kwh.json"), "country_code": "FR", "party_id": "ZZZ"}
    with pytest.raises(records.PartyNotHeld):
        records.tariff_put(bec.partner, tariff)  # type: ignore[attr-defined]
    assert not Tariff.objects.exists()


# -- locations ------------------------------------------------------------------------------------------------


def test_a_location_put_naming_an_unheld_party_in_camelcase_is_refused(client_for: Client) -> None:
    bec = client_for("BE", "BEC")
    body = camel_party(ocpi_location("BE", "BEC", "LOC1"), "FR", "ZZZ")
    r = bec.put(f"{BASE}/locations/BE/BEC/LOC1", body)
    assert r.json()["status_code"] == 2001
    assert not Location.objects.exists()


def test_a_location_patch_naming_another_party_in_camelcase_is_refused(client_for: Client) -> None:
    bec = client_for("BE", "BEC")
    client_for("NL", "OTH")
    locations_store(bec.partner, [ocpi_location("BE", "BEC", "LOC1")])  # type: ignore[attr-defined]
    patch = {"countryCode": "NL", "partyId": "OTH", "name": "Moved", "last_updated": "2026-02-01T00:00:00Z"}
    r = bec.patch(f"{BASE}/locations/BE/BEC/LOC1", patch)
    assert r.json()["status_code"] == 2001
    location = Location.objects.get()
    assert (location.country_code, location.party_id, location.data["name"]) == ("BE", "BEC", "Station LOC1")


# -- hubs: any party the hub holds, in either spelling ----------------------------------------------------------


@pytest.fixture
def hub(client_for: Client) -> OcpiTestClient:
    """NL*HUB with IN*CPA granted behind it."""
    client = client_for("NL", "HUB")
    partner: Partner = client.partner  # type: ignore[attr-defined]
    partner_party_grant(partner=partner, country_code="IN", party_id="CPA", by="staff")
    client.partner = Partner.objects.get(pk=partner.pk)  # type: ignore[attr-defined]
    return client


def test_a_hub_puts_a_session_of_a_party_it_holds_in_camelcase(hub: OcpiTestClient, spec_example: Example) -> None:
    s = camel_party(spec_example("session_example_2_short_finished.json"), "IN", "CPA")
    r = hub.put(f"{BASE}/sessions/IN/CPA/{s['id']}", s)
    assert (r.status_code, r.json()["status_code"]) == (201, 1000)
    assert (ChargingSession.objects.get().country_code, ChargingSession.objects.get().party_id) == ("IN", "CPA")


def test_a_hub_posts_a_cdr_of_a_party_it_holds_in_camelcase(hub: OcpiTestClient, spec_example: Example) -> None:
    r = hub.post(f"{BASE}/cdrs", camel_party(spec_example("cdr_example.json"), "IN", "CPA"))
    assert (r.status_code, r.json()["status_code"]) == (201, 1000)
    assert (Cdr.objects.get().country_code, Cdr.objects.get().party_id) == ("IN", "CPA")


def test_a_hub_puts_a_tariff_of_a_party_it_holds_in_camelcase(hub: OcpiTestClient, spec_example: Example) -> None:
    t = camel_party(spec_example("tariff_8_simple_025kwh.json"), "IN", "CPA")
    r = hub.put(f"{BASE}/tariffs/IN/CPA/{t['id']}", t)
    assert (r.status_code, r.json()["status_code"]) == (201, 1000)
    assert Tariff.objects.get().party_id == "CPA"


# -- CommandResult ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["Charging started", 5], ids=["string", "number"])
def test_command_result_message_string(client_for: Client, message: Any) -> None:
    bec = client_for("BE", "BEC")
    cmd = Command.objects.create(partner=bec.partner, type="START_SESSION", status=Command.Status.ACCEPTED)  # type: ignore[attr-defined]
    r = bec.post(f"{BASE}/commands/START_SESSION/{cmd.uid}", {"result": "ACCEPTED", "message": message})
    cmd.refresh_from_db()
    assert (r.json()["status_code"], cmd.status) == (1000, "SUCCEEDED")
    assert "message" not in (cmd.result or {})
    finding = DataQualityIssue.objects.get(module="commands")
    found = (finding.object_id, finding.path, finding.code, finding.fixed)
    assert found == (str(cmd.uid), "message", "invalid_type", False)
