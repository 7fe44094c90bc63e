"""A partner acts only for the parties we granted it: claiming another's party at registration or at
rotation gets it nothing — for every module and verb — and a party belongs to one connection only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError

from billing.models import Cdr, Tariff
from emsp.models import ChargingSession, Connector, Evse, Location, Partner, PartnerParty
from emsp.services.partners import PartyTaken, partner_party_grant
from ocpi.credentials import RegistrationError, register_with_partner
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory, ocpi_location
from tests.fakes import FakePeer, envelope
from tests.ocpi.test_credentials import CPO, script_cpo

pytestmark = pytest.mark.django_db

VICTIM = ("BE", "BEC")
LOC = "/ocpi/emsp/2.2.1/locations/BE/BEC"


def credentials(*parties: tuple[str, str], token: str = "attacker-token-b") -> dict[str, Any]:  # noqa: S107
    return {
        "token": token,
        "url": f"{CPO}/versions",
        "roles": [
            {"role": "CPO", "country_code": cc, "party_id": pid, "business_details": {"name": f"{cc}*{pid}"}}
            for cc, pid in parties
        ],
    }


@pytest.fixture
def victim_data(client_for: Callable[..., OcpiTestClient], spec_example: Callable[[str], Any]) -> Partner:
    victim = client_for(*VICTIM)
    assert victim.put(f"{LOC}/LOC1", ocpi_location(*VICTIM, "LOC1")).json()["status_code"] == 1000
    tariff = {**spec_example("tariff_1_simple_2hour.json"), "country_code": "BE", "party_id": "BEC", "id": "T1"}
    assert victim.put("/ocpi/emsp/2.2.1/tariffs/BE/BEC/T1", tariff).json()["status_code"] == 1000
    session = spec_example("session_example_2_short_finished.json")
    assert victim.put(f"/ocpi/emsp/2.2.1/sessions/BE/BEC/{session['id']}", session).json()["status_code"] == 1000
    assert victim.post("/ocpi/emsp/2.2.1/cdrs", spec_example("cdr_example.json")).json()["status_code"] == 1000
    return victim.partner  # type: ignore[attr-defined]


def snapshot() -> list[Any]:
    return [
        sorted(map(str, model.objects.values_list("pk", "last_updated", "data")))
        for model in (Location, Evse, Connector, Tariff, ChargingSession, Cdr)
    ]


@pytest.fixture
def attacker(peer: FakePeer, db: None) -> tuple[Partner, str]:
    partner = PartnerFactory(country_code="IN", party_id="ATK", state=Partner.State.NEW, outgoing_token="")
    token_a = partner.issue_token_a()
    partner.save()
    script_cpo(peer)
    return partner, token_a


@pytest.mark.parametrize("claimed", [[("IN", "ATK"), VICTIM], [VICTIM], [VICTIM, ("IN", "ATK")]])
def test_registering_as_another_party_is_refused_with_2001(
    attacker: tuple[Partner, str], victim_data: Partner, claimed: list[tuple[str, str]]
) -> None:
    partner, token_a = attacker
    response = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", credentials(*claimed))
    assert response.json()["status_code"] == 2001
    assert "BE*BEC" in response.json()["status_message"]
    partner.refresh_from_db()
    assert partner.state != Partner.State.CONNECTED
    assert partner.party_keys() == {"IN*ATK"}
    # The claim is kept for staff to see, and grants nothing.
    assert PartnerParty.objects.filter(partner=partner, country_code="BE", status="REQUESTED").exists()


@pytest.fixture
def connected_attacker(attacker: tuple[Partner, str], victim_data: Partner) -> OcpiTestClient:
    _, token_a = attacker
    answer = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", credentials(("IN", "ATK")))
    assert answer.json()["status_code"] == 1000
    return OcpiTestClient(answer.json()["data"]["token"])


def test_rotating_credentials_cannot_claim_a_further_party(
    connected_attacker: OcpiTestClient, attacker: tuple[Partner, str]
) -> None:
    response = connected_attacker.put("/ocpi/2.2.1/credentials", credentials(("IN", "ATK"), VICTIM, token="b2"))
    assert response.json()["status_code"] == 2001
    partner = Partner.objects.get(pk=attacker[0].pk)
    assert partner.party_keys() == {"IN*ATK"}
    assert partner.outgoing_token == "attacker-token-b"  # nothing of the refused PUT was taken


def test_for_every_module_and_verb_the_attacker_gets_nothing_of_the_victims(
    connected_attacker: OcpiTestClient, spec_example: Callable[[str], Any]
) -> None:
    client = connected_attacker
    before = snapshot()
    location = ocpi_location(*VICTIM, "LOC1", last_updated="2026-06-01T00:00:00Z")
    evse = location["evses"][0]  # type: ignore[index]
    connector = evse["connectors"][0]
    session = {**spec_example("session_example_2_short_finished.json"), "last_updated": "2026-06-01T00:00:00Z"}
    tariff = {**spec_example("tariff_1_simple_2hour.json"), "country_code": "BE", "party_id": "BEC", "id": "T1"}
    cdr = {**spec_example("cdr_example.json"), "id": "STOLEN-1"}
    stamp = {"last_updated": "2026-06-01T00:00:00Z"}
    patch = {"status": "OUTOFORDER", **stamp}
    calls = [
        ("get", f"{LOC}/LOC1", None),
        ("put", f"{LOC}/LOC1", location),
        ("patch", f"{LOC}/LOC1", {"name": "mine", "last_updated": "2026-06-01T00:00:00Z"}),
        ("get", f"{LOC}/LOC1/{evse['uid']}", None),
        ("put", f"{LOC}/LOC1/{evse['uid']}", evse),
        ("patch", f"{LOC}/LOC1/{evse['uid']}", patch),
        ("get", f"{LOC}/LOC1/{evse['uid']}/1", None),
        ("put", f"{LOC}/LOC1/{evse['uid']}/1", connector),
        ("patch", f"{LOC}/LOC1/{evse['uid']}/1", {"max_voltage": 1, "last_updated": "2026-06-01T00:00:00Z"}),
        ("get", f"/ocpi/emsp/2.2.1/sessions/BE/BEC/{session['id']}", None),
        ("put", f"/ocpi/emsp/2.2.1/sessions/BE/BEC/{session['id']}", session),
        ("patch", f"/ocpi/emsp/2.2.1/sessions/BE/BEC/{session['id']}", {"kwh": 1, **stamp}),
        ("get", "/ocpi/emsp/2.2.1/tariffs/BE/BEC/T1", None),
        ("put", "/ocpi/emsp/2.2.1/tariffs/BE/BEC/T1", {**tariff, "last_updated": "2026-06-01T00:00:00Z"}),
        ("delete", "/ocpi/emsp/2.2.1/tariffs/BE/BEC/T1", None),
        ("get", "/ocpi/emsp/2.2.1/cdrs/BE/BEC/12345", None),
        ("post", "/ocpi/emsp/2.2.1/cdrs", cdr),
    ]  # fmt: skip
    for method, path, body in calls:
        response = getattr(client, method)(path, body) if body is not None else getattr(client, method)(path)
        answer = response.json()
        assert answer["status_code"] != 1000, (method, path, answer)
        assert "data" not in answer or answer["data"] in (None, [], {}), (method, path, answer)
    assert snapshot() == before


def test_a_cpo_we_register_with_cannot_answer_as_a_connected_partys_connection(
    peer: FakePeer, victim_data: Partner
) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope(credentials(VICTIM, token="evil-c"))))
    before = Partner.objects.get(pk=victim_data.pk)
    with pytest.raises(RegistrationError, match="BE\\*BEC"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-evil")
    after = Partner.objects.get(pk=victim_data.pk)
    assert (after.incoming_token_hash, after.outgoing_token) == (before.incoming_token_hash, before.outgoing_token)
    assert not Partner.objects.filter(country_code="ZZ").exists()  # the attempt left nothing behind


def test_a_cpo_must_answer_as_the_party_staff_expected(peer: FakePeer, db: None) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope(credentials(("IN", "CPA"), token="c"))))
    with pytest.raises(RegistrationError, match="expected IN\\*CPB"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a", party="IN*CPB")
    assert not Partner.objects.exists()


def test_further_parties_a_cpo_names_wait_for_staff(peer: FakePeer, db: None) -> None:
    script_cpo(peer)
    for module in ("locations", "tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{CPO}/2.2.1/{module}", (200, envelope([])))
    answer = credentials(("IN", "CPA"), ("IN", "HUB"), token="c")
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope(answer)))
    partner = register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a")
    assert partner.party_keys() == {"IN*CPA"}
    assert PartnerParty.objects.get(partner=partner, party_id="HUB").status == PartnerParty.Status.REQUESTED
    partner_party_grant(partner=partner, country_code="IN", party_id="HUB", by="staff")
    assert Partner.objects.get(pk=partner.pk).party_keys() == {"IN*CPA", "IN*HUB"}


def test_a_party_is_granted_to_one_connection_only(victim_data: Partner) -> None:
    hub = PartnerFactory(country_code="NL", party_id="HUB")
    with pytest.raises(PartyTaken):
        partner_party_grant(partner=hub, country_code="BE", party_id="BEC", by="staff")
    with pytest.raises(IntegrityError):  # the database itself refuses it
        PartnerParty.objects.create(partner=hub, country_code="BE", party_id="BEC", status="GRANTED")


def _change_form(partner: Partner, rows: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": partner.name,
        "country_code": partner.country_code,
        "party_id": partner.party_id,
        "role": partner.role,
        "sync_interval_minutes": 60,
        "full_sync_interval_hours": 24,
        "parties-TOTAL_FORMS": len(rows),
        "parties-INITIAL_FORMS": sum(1 for r in rows if r.get("id")),
        "parties-MIN_NUM_FORMS": 0,
        "parties-MAX_NUM_FORMS": 1000,
    }
    for i, row in enumerate(rows):
        for key, value in row.items():
            data[f"parties-{i}-{key}"] = value
        data[f"parties-{i}-partner"] = partner.pk
    return data


def test_staff_grant_a_requested_party_in_the_console_and_a_taken_one_is_a_form_error(
    admin_client: Any, victim_data: Partner
) -> None:
    from django.urls import reverse

    hub = PartnerFactory(country_code="NL", party_id="HUB", outgoing_token_base64=True)
    requested = PartnerParty.objects.create(partner=hub, country_code="IN", party_id="NEW", status="REQUESTED")
    url = reverse("admin:emsp_partner_change", args=[hub.pk])
    row = {"id": requested.pk, "country_code": "IN", "party_id": "NEW", "status": "GRANTED"}
    response = admin_client.post(url, _change_form(hub, [row]))
    assert response.status_code == 302, response.content.decode()[:2000]
    requested.refresh_from_db()
    assert (requested.status, requested.granted_by) == ("GRANTED", "admin")
    taken = {"country_code": "BE", "party_id": "BEC", "status": "GRANTED"}
    response = admin_client.post(url, _change_form(hub, [row, taken]))
    assert response.status_code == 200
    assert "is granted to" in response.content.decode()
    assert Partner.objects.get(pk=hub.pk).party_keys() == {"NL*HUB", "IN*NEW"}
