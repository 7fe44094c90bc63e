"""Hubs (transport §"Message Routing", mod_hub_client_info): one connection fronting several CPO parties.
What we send through a hub is addressed per party (or to the hub: GET All, broadcast token pushes); what a
hub routes to us is taken for the party it names, and only for parties we granted; HubClientInfo is received
at its spec path, pulled from the hub's sender, and shown on the health page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings

from billing.models import Cdr
from emsp.models import ChargingSession, Command, Evse, Location, Partner, PartnerParty, hash_token
from emsp.services import commands
from emsp.services.catalogue import locations_store
from emsp.services.partners import partner_party_grant
from emsp.services.tokens import token_issue
from ocpi.credentials import RegistrationError, register_with_partner
from ocpi.models import HubClientInfo, PushDelivery
from ocpi.sync import sync_module, sync_partner
from tests.conftest import OcpiTestClient
from tests.factories import DriverFactory, PartnerFactory, TokenFactory, ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

HUB = "http://127.0.0.1:9998/ocpi/hub/2.2.1"
HUB_TOKEN = "token-the-hub-sends-us"
LOCATIONS = "/ocpi/emsp/2.2.1/locations"
CLIENT_INFO = "/ocpi/emsp/2.2.1/hubclientinfo"
MODULES = [
    ("credentials", "RECEIVER"),
    ("locations", "SENDER"),
    ("tariffs", "SENDER"),
    ("sessions", "SENDER"),
    ("cdrs", "SENDER"),
    ("tokens", "RECEIVER"),
    ("commands", "RECEIVER"),
    ("hubclientinfo", "SENDER"),
]


@pytest.fixture
def hub(db: None) -> Partner:
    """The hub NL*HUB: IN*CPA and IN*CPB granted behind it; DE*ABC not."""
    partner = PartnerFactory(
        name="Roaming hub",
        country_code="NL",
        party_id="HUB",
        role=Partner.Role.HUB,
        incoming_token_hash=hash_token(HUB_TOKEN),
        endpoints=[{"identifier": m, "role": r, "url": f"{HUB}/{m}"} for m, r in MODULES],
    )
    for party_id in ("CPA", "CPB"):
        partner_party_grant(partner=partner, country_code="IN", party_id=party_id, by="staff")
    return Partner.objects.get(pk=partner.pk)


def from_party(country_code: str, party_id: str) -> dict[str, str]:
    return {"OCPI-from-country-code": country_code, "OCPI-from-party-id": party_id}


def routing(call: dict[str, Any]) -> tuple[str | None, ...]:
    headers = call["headers"]
    return tuple(headers.get(f"OCPI-{way}-{part}") for way in ("from", "to") for part in ("country-code", "party-id"))


def client_info(country_code: str, party_id: str, status: str = "CONNECTED", **extra: Any) -> dict[str, Any]:
    """A ClientInfo object (mod_hub_client_info §"ClientInfo Object")."""
    return {
        "party_id": party_id,
        "country_code": country_code,
        "role": "CPO",
        "status": status,
        "last_updated": "2026-06-01T10:00:00Z",
        **extra,
    }


def evse_of(partner: Partner, country_code: str, party_id: str, location_id: str) -> Evse:
    locations_store(partner, [ocpi_location(country_code, party_id, location_id)])
    return Evse.objects.filter(location__location_id=location_id).order_by("uid").first()  # type: ignore[return-value]


# -- what we send through a hub ---------------------------------------------------------------------------------


def test_a_command_for_an_evse_of_the_second_party_is_addressed_to_that_party(peer: FakePeer, hub: Partner) -> None:
    peer.route("POST", f"{HUB}/commands/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    evse_of(hub, "IN", "CPA", "LOC-A")
    evse = evse_of(hub, "IN", "CPB", "LOC-B")

    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))

    assert command.status == Command.Status.ACCEPTED
    [call] = peer.calls
    assert call["url"] == f"{HUB}/commands/START_SESSION"  # through the hub's own endpoint
    assert routing(call) == ("IN", "EMS", "IN", "CPB")
    assert call["json"]["location_id"] == "LOC-B"


def test_a_stop_goes_to_the_party_of_the_session(peer: FakePeer, hub: Partner, client_for: Callable[..., Any]) -> None:
    peer.route("POST", f"{HUB}/commands/STOP_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    session = {
        "country_code": "IN",
        "party_id": "CPA",
        "id": "S1",
        "start_date_time": "2026-06-01T10:00:00Z",
        "kwh": 1,
        "cdr_token": {"uid": "T1", "type": "RFID", "contract_id": "C1", "country_code": "IN", "party_id": "EMS"},
        "auth_method": "COMMAND",
        "location_id": "LOC-A",
        "evse_uid": "LOC-A-E1",
        "connector_id": "1",
        "currency": "INR",
        "status": "ACTIVE",
        "last_updated": "2026-06-01T10:00:00Z",
    }
    evse_of(hub, "IN", "CPA", "LOC-A")
    hub_client = OcpiTestClient(HUB_TOKEN)
    put = hub_client.put("/ocpi/emsp/2.2.1/sessions/IN/CPA/S1", session, headers=from_party("IN", "CPA"))
    assert put.json()["status_code"] == 1000, put.json()
    stop = commands.command_stop_session(session=ChargingSession.objects.get(session_id="S1"))
    commands.command_send(stop)

    assert routing(peer.calls[-1]) == ("IN", "EMS", "IN", "CPA")


def test_a_command_for_a_party_the_hub_says_is_offline_fails_at_once(peer: FakePeer, hub: Partner) -> None:
    evse = evse_of(hub, "IN", "CPB", "LOC-B")
    HubClientInfo.objects.create(
        partner=hub, country_code="IN", party_id="CPB", role="CPO", status="OFFLINE", last_updated="2026-06-01T10:00Z"
    )

    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))

    assert command.status == Command.Status.FAILED
    assert "IN*CPB is OFFLINE" in command.error
    assert peer.calls == []  # mod_hub_client_info: "No requests can be sent"


def test_a_pull_through_the_hub_asks_the_hub_and_stores_each_object_under_its_party(
    peer: FakePeer, hub: Partner
) -> None:
    page = [ocpi_location("IN", "CPA", "LOC-A"), ocpi_location("IN", "CPB", "LOC-B"), ocpi_location("DE", "ABC", "X")]
    peer.route("GET", f"{HUB}/locations", (200, envelope(page)))

    run = sync_module(hub, "locations", full=True)

    assert routing(peer.calls[0]) == ("IN", "EMS", "NL", "HUB")  # "GET All via Hubs": TO = the hub
    assert (run.received, run.stored, run.rejected) == (3, 2, 1)  # DE*ABC is not granted to the hub
    stored = Location.objects.filter(partner=hub).values_list("country_code", "party_id", "location_id")
    assert sorted(stored) == [("IN", "CPA", "LOC-A"), ("IN", "CPB", "LOC-B")]


def test_an_evse_read_goes_to_the_party_that_owns_it(peer: FakePeer, hub: Partner) -> None:
    from ocpi.gateway import OcpiGateway

    evse = evse_of(hub, "IN", "CPB", "LOC-B")
    evse_json = ocpi_location("IN", "CPB", "LOC-B")["evses"][0]  # type: ignore[index]
    peer.route("GET", f"{HUB}/locations/LOC-B/{evse.uid}", (200, envelope(evse_json)))

    assert OcpiGateway().fetch_evse(evse, timeout=2) is not None
    assert routing(peer.calls[0]) == ("IN", "EMS", "IN", "CPB")


def test_our_token_goes_to_the_hub_once_as_a_broadcast_push(
    peer: FakePeer, hub: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    peer.route("PUT", f"{HUB}/tokens/IN/EMS/TOKEN-HUB-1", (200, envelope()))
    with django_capture_on_commit_callbacks(execute=True):
        token_issue(driver=DriverFactory(), uid="TOKEN-HUB-1")

    assert PushDelivery.objects.filter(partner=hub).count() == 1
    puts = [c for c in peer.calls if c["method"] == "PUT"]
    assert len(puts) == 1
    # transport §"Broadcast Push": TO = the hub, which sends it on to every party behind it.
    assert routing(puts[0]) == ("IN", "EMS", "NL", "HUB")


# -- what a hub routes to us ------------------------------------------------------------------------------------


def test_a_hub_pushes_a_location_of_a_granted_party_routed_from_it(hub: Partner) -> None:
    response = OcpiTestClient(HUB_TOKEN).put(
        f"{LOCATIONS}/IN/CPB/LOC-B", ocpi_location("IN", "CPB", "LOC-B"), headers=from_party("IN", "CPB")
    )

    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    location = Location.objects.get(location_id="LOC-B")
    assert (location.partner_id, location.country_code, location.party_id) == (hub.pk, "IN", "CPB")
    # The answer goes back to the party that sent it (transport §"Party to Party via Hub": "Direct response").
    assert (response["OCPI-to-country-code"], response["OCPI-to-party-id"]) == ("IN", "CPB")
    assert (response["OCPI-from-country-code"], response["OCPI-from-party-id"]) == ("IN", "EMS")


def test_a_broadcast_from_the_hub_itself_reaches_every_granted_party(hub: Partner) -> None:
    client = OcpiTestClient(HUB_TOKEN)
    for party_id in ("CPA", "CPB"):
        body = ocpi_location("IN", party_id, f"LOC-{party_id}")
        response = client.put(f"{LOCATIONS}/IN/{party_id}/LOC-{party_id}", body, headers=from_party("NL", "HUB"))
        assert response.json()["status_code"] == 1000
        assert response["OCPI-to-party-id"] == "HUB"
    assert Location.objects.filter(partner=hub).count() == 2


def test_a_party_behind_the_hub_cannot_write_another_partys_objects(hub: Partner) -> None:
    response = OcpiTestClient(HUB_TOKEN).put(
        f"{LOCATIONS}/IN/CPB/LOC-B", ocpi_location("IN", "CPB", "LOC-B"), headers=from_party("IN", "CPA")
    )

    assert (response.status_code, response.json()["status_code"]) == (404, 2000)
    assert not Location.objects.exists()


def test_a_hub_routing_from_a_party_we_did_not_grant_is_refused(hub: Partner) -> None:
    client = OcpiTestClient(HUB_TOKEN)
    as_sender = client.put(
        f"{LOCATIONS}/IN/CPA/LOC-A", ocpi_location("IN", "CPA", "LOC-A"), headers=from_party("DE", "ABC")
    )
    as_owner = client.put(
        f"{LOCATIONS}/DE/ABC/LOC-X", ocpi_location("DE", "ABC", "LOC-X"), headers=from_party("NL", "HUB")
    )

    assert as_sender.status_code == 404 and "DE*ABC is not granted" in as_sender.json()["status_message"]
    assert (as_owner.status_code, as_owner.json()["status_code"]) == (404, 2000)
    assert not Location.objects.exists()


def test_a_cpos_stray_from_header_changes_nothing(client_for: Callable[..., OcpiTestClient]) -> None:
    cpo = client_for("IN", "CPA")
    response = cpo.put(f"{LOCATIONS}/IN/CPA/LOC-A", ocpi_location("IN", "CPA", "LOC-A"), headers=from_party("XX", "Y"))

    assert response.json()["status_code"] == 1000  # lenient in: a direct CPO is its own party whatever it says
    assert response["OCPI-to-party-id"] == "CPA"


def test_a_cdr_naming_no_party_belongs_to_the_party_that_sent_it(
    hub: Partner, spec_example: Callable[[str], Any]
) -> None:
    cdr = {k: v for k, v in spec_example("cdr_example.json").items() if k not in ("country_code", "party_id")}

    response = OcpiTestClient(HUB_TOKEN).post("/ocpi/emsp/2.2.1/cdrs", cdr, headers=from_party("IN", "CPB"))

    assert response.json()["status_code"] == 1000, response.json()
    stored = Cdr.objects.get()
    assert (stored.partner_id, stored.country_code, stored.party_id) == (hub.pk, "IN", "CPB")


def test_a_command_result_is_taken_only_from_the_party_the_command_went_to(peer: FakePeer, hub: Partner) -> None:
    peer.route("POST", f"{HUB}/commands/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    evse = evse_of(hub, "IN", "CPB", "LOC-B")
    command = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse))
    url = f"/ocpi/emsp/2.2.1/commands/START_SESSION/{command.uid}"
    client = OcpiTestClient(HUB_TOKEN)

    wrong = client.post(url, {"result": "ACCEPTED"}, headers=from_party("IN", "CPA"))
    right = client.post(url, {"result": "ACCEPTED"}, headers=from_party("IN", "CPB"))

    assert (wrong.status_code, wrong.json()["status_code"]) == (404, 2000)
    assert right.json()["status_code"] == 1000
    assert Command.objects.get(pk=command.pk).status == Command.Status.SUCCEEDED


# -- HubClientInfo receiver (mod_hub_client_info §"Receiver Interface") ------------------------------------------


def test_a_hub_puts_client_info_and_gets_it_back_at_the_spec_path(hub: Partner) -> None:
    client = OcpiTestClient(HUB_TOKEN)

    put = client.put(f"{CLIENT_INFO}/DE/ABC", client_info("DE", "ABC", "PLANNED"))
    got = client.get(f"{CLIENT_INFO}/DE/ABC")

    assert (put.status_code, put.json()["status_code"]) == (201, 1000)
    assert got.json()["data"] == client_info("DE", "ABC", "PLANNED")
    assert "OCPI-to-party-id" not in put  # a configuration module: no routing headers
    # A record, not a grant: the CPO behind the hub waits for staff, and its objects are still refused.
    party = PartnerParty.objects.get(partner=hub, country_code="DE", party_id="ABC")
    assert party.status == PartnerParty.Status.REQUESTED
    refused = client.put(f"{LOCATIONS}/DE/ABC/LOC-X", ocpi_location("DE", "ABC", "LOC-X"))
    assert refused.status_code == 404


def test_a_newer_client_info_replaces_an_older_one_and_never_the_reverse(hub: Partner) -> None:
    client = OcpiTestClient(HUB_TOKEN)
    client.put(f"{CLIENT_INFO}/IN/CPA", client_info("IN", "CPA", "OFFLINE", last_updated="2026-06-02T10:00:00Z"))
    older = client.put(f"{CLIENT_INFO}/IN/CPA", client_info("IN", "CPA", "CONNECTED"))

    assert older.status_code == 200
    assert HubClientInfo.objects.get(partner=hub, party_id="CPA").status == "OFFLINE"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (client_info("DE", "ABC", "ONLINE"), "status"),
        (client_info("DE", "XYZ"), "party_id"),
        ({**client_info("DE", "ABC"), "role": "DRIVER"}, "role"),
        ({k: v for k, v in client_info("DE", "ABC").items() if k != "last_updated"}, "last_updated"),
        ({**client_info("DE", "ABC"), "last_updated": "2999-01-01T00:00:00Z"}, "last_updated"),
    ],
)
def test_an_unusable_client_info_is_2001_naming_the_field(hub: Partner, body: dict[str, Any], field: str) -> None:
    response = OcpiTestClient(HUB_TOKEN).put(f"{CLIENT_INFO}/DE/ABC", body)

    assert (response.status_code, response.json()["status_code"]) == (200, 2001)
    assert response.json()["status_message"].startswith(field)
    assert not HubClientInfo.objects.exists() and not PartnerParty.objects.filter(party_id="ABC").exists()


def test_an_emsp_behind_the_hub_is_recorded_but_never_requested(hub: Partner) -> None:
    OcpiTestClient(HUB_TOKEN).put(f"{CLIENT_INFO}/NL/MSP", client_info("NL", "MSP", role="EMSP"))

    assert HubClientInfo.objects.get(party_id="MSP").role == "EMSP"
    assert not PartnerParty.objects.filter(party_id="MSP").exists()


def test_a_cpo_that_is_no_hub_may_not_announce_parties(client_for: Callable[..., OcpiTestClient]) -> None:
    response = client_for("IN", "CPA").put(f"{CLIENT_INFO}/DE/ABC", client_info("DE", "ABC"))

    assert (response.status_code, response.json()["status_code"]) == (403, 2000)
    assert not HubClientInfo.objects.exists()


def test_our_version_details_offer_the_receiver_to_hubs_not_to_cpos(
    hub: Partner, client_for: Callable[..., OcpiTestClient]
) -> None:
    def identifiers(client: OcpiTestClient) -> dict[str, str]:
        return {e["identifier"]: e["role"] for e in client.get("/ocpi/2.2.1").json()["data"]["endpoints"]}

    assert identifiers(OcpiTestClient(HUB_TOKEN))["hubclientinfo"] == "RECEIVER"
    assert "hubclientinfo" not in identifiers(client_for("IN", "CPC"))


# -- HubClientInfo pulled from the hub's sender ------------------------------------------------------------------


def test_a_full_pull_reads_the_hubs_client_info_and_drops_what_it_no_longer_lists(peer: FakePeer, hub: Partner) -> None:
    HubClientInfo.objects.create(
        partner=hub, country_code="FR", party_id="OLD", role="CPO", status="CONNECTED", last_updated="2026-01-01T00:00Z"
    )
    listed = [client_info("IN", "CPA"), client_info("DE", "ABC", "PLANNED"), {"party_id": "BAD"}]
    peer.route("GET", f"{HUB}/hubclientinfo", (200, envelope(listed)))
    for module in ("locations", "tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{HUB}/{module}", (200, envelope([])))

    sync_partner(hub, full=True)

    rows = HubClientInfo.objects.filter(partner=hub).values_list("country_code", "party_id", "status")
    assert sorted(rows) == [("DE", "ABC", "PLANNED"), ("IN", "CPA", "CONNECTED")]
    [call] = [c for c in peer.calls if "/hubclientinfo" in c["url"]]
    assert routing(call) == (None, None, None, None)  # a configuration module
    assert PartnerParty.objects.get(partner=hub, party_id="ABC").status == PartnerParty.Status.REQUESTED


# -- hubs in the credentials handshake ---------------------------------------------------------------------------


def script_hub(peer: FakePeer, version: str, answer: dict[str, Any]) -> None:
    peer.route("GET", f"{HUB}/versions", (200, envelope([{"version": version, "url": f"{HUB}/{version}"}])))
    endpoints = [{"identifier": m, "role": r, "url": f"{HUB}/{version}/{m}"} for m, r in MODULES]
    peer.route("GET", f"{HUB}/{version}", (200, envelope({"version": version, "endpoints": endpoints})))
    peer.route("POST", f"{HUB}/{version}/credentials", (200, envelope(answer)))


def test_we_register_with_a_2_2_1_hub_which_names_itself_by_its_role_hub(peer: FakePeer, db: None) -> None:
    role = {"role": "HUB", "country_code": "NL", "party_id": "HUB", "business_details": {"name": "Hub"}}
    script_hub(peer, "2.2.1", {"token": "token-c", "url": f"{HUB}/versions", "roles": [role]})

    partner = register_with_partner(versions_url=f"{HUB}/versions", token_a="token-a")

    assert (partner.party_key, partner.role) == ("NL*HUB", Partner.Role.HUB)


def test_a_2_3_0_hub_names_itself_in_hub_party_id_and_its_parties_wait_for_staff(peer: FakePeer, db: None) -> None:
    roles = [
        {"role": "CPO", "country_code": cc, "party_id": pid, "business_details": {"name": pid}}
        for cc, pid in (("IN", "CPA"), ("DE", "ABC"))
    ]
    # It lists an eMSP behind it and us too: neither is a party the connection could act for.
    roles += [
        {"role": "EMSP", "country_code": "DE", "party_id": "EMP", "business_details": {"name": "EMP"}},
        {"role": "CPO", "country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID,
         "business_details": {"name": "us"}},
    ]  # fmt: skip
    script_hub(peer, "2.3.0", {"token": "token-c", "url": f"{HUB}/versions", "hub_party_id": "NLHUB", "roles": roles})

    partner = register_with_partner(versions_url=f"{HUB}/versions", token_a="token-a")

    assert (partner.party_key, partner.role, partner.version) == ("NL*HUB", Partner.Role.HUB, "2.3.0")
    parties = PartnerParty.objects.filter(partner=partner, own=False).values_list("party_id", "status")
    assert sorted(parties) == [("ABC", "REQUESTED"), ("CPA", "REQUESTED")]
    assert partner.party_keys() == {"NL*HUB"}  # named, not granted


@pytest.mark.parametrize("role", ["HUB", "CPO"])
def test_a_partner_answering_as_our_own_party_is_refused(peer: FakePeer, db: None, role: str) -> None:
    """Taken, every request through it would go to ourselves (OCPI-to = OCPI-from = us)."""
    us = {"role": role, "country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID}
    script_hub(peer, "2.2.1", {"token": "token-c", "url": f"{HUB}/versions", "roles": [{**us, "business_details": {}}]})

    with pytest.raises(RegistrationError, match="our own party"):
        register_with_partner(versions_url=f"{HUB}/versions", token_a="token-a")
    assert not Partner.objects.filter(country_code=settings.OCPI_COUNTRY_CODE, party_id=settings.OCPI_PARTY_ID)


def test_a_2_3_0_hub_party_id_naming_us_is_not_taken_for_the_hub(peer: FakePeer, db: None) -> None:
    roles = [{"role": "CPO", "country_code": "IN", "party_id": "CPA", "business_details": {"name": "CPA"}}]
    ours = f"{settings.OCPI_COUNTRY_CODE}{settings.OCPI_PARTY_ID}"
    script_hub(peer, "2.3.0", {"token": "token-c", "url": f"{HUB}/versions", "hub_party_id": ours, "roles": roles})

    partner = register_with_partner(versions_url=f"{HUB}/versions", token_a="token-a")

    assert (partner.party_key, partner.role) == ("IN*CPA", Partner.Role.CPO)  # its own party, not ours


# -- the console ------------------------------------------------------------------------------------------------


def test_the_health_page_shows_the_parties_behind_the_hub(hub: Partner, admin_client: Any) -> None:
    OcpiTestClient(HUB_TOKEN).put(f"{CLIENT_INFO}/IN/CPB", client_info("IN", "CPB", "OFFLINE"))
    OcpiTestClient(HUB_TOKEN).put(f"{CLIENT_INFO}/DE/ABC", client_info("DE", "ABC", "PLANNED"))

    page = admin_client.get(f"/admin/emsp/partner/{hub.pk}/health/").content.decode()

    assert "Parties behind this hub" in page
    for party, status, grant in (
        ("IN*CPA", "not announced", "granted"),
        ("IN*CPB", "OFFLINE", "granted"),
        ("DE*ABC", "PLANNED", "requested, not granted"),
    ):
        row = page.split(f">{party}<", 1)[1].split("</tr>", 1)[0]
        assert status in row and grant in row, (party, row)


def test_an_authorization_from_a_party_behind_the_hub_names_only_its_own_evses(hub: Partner) -> None:
    """Two parties behind one hub with the same location id: a real-time authorization routed from one of
    them is answered with that party's EVSEs only (its LocationReferences never confirm another's)."""
    own = evse_of(hub, "IN", "CPA", "LOC-SAME")
    theirs = ocpi_location("IN", "CPB", "LOC-SAME", evses=1)
    theirs["evses"][0]["uid"] = "CPB-ONLY"  # type: ignore[index]
    locations_store(hub, [theirs])
    token = TokenFactory()
    response = OcpiTestClient(HUB_TOKEN).post(
        f"/ocpi/emsp/2.2.1/tokens/{token.uid}/authorize?type={token.type}",
        {"location_id": "LOC-SAME", "evse_uids": [own.uid, "CPB-ONLY"]},
        headers=from_party("IN", "CPA"),
    )
    assert response.json()["status_code"] == 1000, response.json()
    assert response.json()["data"]["location"]["evse_uids"] == [own.uid]
