"""Our eMSP through an OCPI 2.2.1 hub, end to end: the simulator runs in its own process as the hub NL*HUB
fronting three CPO parties (`--hub IN*CPA,IN*CPB,IN*CPC`), our eMSP is a live server. We register with the hub;
staff grant two of its parties; the hub routes, checks and records everything on the wire (GET /_sim/state →
hub.received), so each test asserts both what we stored and how we addressed the hub."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Cdr, Tariff
from emsp.models import ChargingSession, Command, Evse, Location, Partner, PartnerParty
from emsp.services import commands
from emsp.services.partners import partner_party_grant
from emsp.services.tokens import token_issue
from ocpi.credentials import register_with_partner
from ocpi.gateway import OcpiGateway
from ocpi.models import HubClientInfo, SyncRun
from ocpi.sync import sync_partner
from tests.cposim.conftest import SimProcess, wait_until
from tests.factories import DriverFactory

pytestmark = pytest.mark.django_db(transaction=True)

HUB_ARGS = (
    "--country-code", "NL", "--party-id", "HUB", "--name", "Sim Hub", "--hub", "IN*CPA,IN*CPB,IN*CPC",
    "--locations", "9", "--cities", "Bengaluru", "--token-a", "hub-token-a",
    "--command-delay", "0.2", "--plug-in-delay", "0.3", "--meter-interval", "0.3",
)  # fmt: skip
GRANTED = ("CPA", "CPB")  # IN*CPC stays as the hub announced it: REQUESTED, not granted


@pytest.fixture
def emsp_url(live_server: Any, settings: Any) -> str:
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url


@pytest.fixture
def hub_sim(emsp_url: str, simulator: Callable[..., SimProcess]) -> SimProcess:
    return simulator(*HUB_ARGS)


@pytest.fixture
def hub(hub_sim: SimProcess) -> Partner:
    """We registered with the hub; staff granted IN*CPA and IN*CPB to its connection; a full pull ran."""
    partner = register_with_partner(versions_url=hub_sim.versions_url, token_a="hub-token-a")
    for party_id in GRANTED:
        partner_party_grant(partner=partner, country_code="IN", party_id=party_id, by="staff")
    partner = Partner.objects.get(pk=partner.pk)
    runs = {run.module: run for run in sync_partner(partner, full=True)}
    assert all(run.outcome == SyncRun.Outcome.OK for run in runs.values()), {m: r.error for m, r in runs.items()}
    # The hub PUTs its parties' ClientInfo 1 s after our registration (cposim/server.py): waited for, or a test's
    # change of a party's status made before it (without a push) was overwritten by that late announcement.
    wait_until(lambda: hub_sim.log_tail(400).count(" client info -> ") >= 3, timeout=10)
    return partner


def received(sim: SimProcess, method: str, path_part: str) -> list[dict[str, Any]]:
    """What the hub was sent, with the routing it read (from / to as CC*PID)."""
    return [r for r in sim.ctl("state")["hub"]["received"] if r["method"] == method and path_part in r["path"]]


def sim_locations_by_party(sim: SimProcess) -> Counter[str]:
    return Counter(loc["party_id"] for loc in sim.ctl("locations"))


def test_we_register_with_the_hub_and_its_parties_wait_for_staff(hub_sim: SimProcess) -> None:
    partner = register_with_partner(versions_url=hub_sim.versions_url, token_a="hub-token-a")

    assert (partner.party_key, partner.role) == ("NL*HUB", Partner.Role.HUB)
    parties = PartnerParty.objects.filter(partner=partner, own=False).values_list("party_id", "status")
    assert sorted(parties) == [("CPA", "REQUESTED"), ("CPB", "REQUESTED"), ("CPC", "REQUESTED")]
    # After our registration the hub PUTs its ClientInfo to our receiver (mod_hub_client_info), unasked.
    wait_until(lambda: HubClientInfo.objects.filter(partner=partner).count() == 3, timeout=10)
    assert {(i.party_id, i.role, i.status) for i in HubClientInfo.objects.filter(partner=partner)} == {
        ("CPA", "CPO", "CONNECTED"),
        ("CPB", "CPO", "CONNECTED"),
        ("CPC", "CPO", "CONNECTED"),
    }
    assert partner.party_keys() == {"NL*HUB"}  # announced, not granted


def test_a_full_pull_stores_each_partys_objects_under_that_party_behind_one_connection(
    hub_sim: SimProcess, hub: Partner
) -> None:
    by_party = sim_locations_by_party(hub_sim)
    stored = Counter(Location.objects.filter(partner=hub).values_list("party_id", flat=True))
    assert stored == Counter({p: by_party[p] for p in GRANTED})  # IN*CPC's locations are refused
    assert by_party["CPC"] > 0 and not Location.objects.filter(party_id="CPC").exists()
    tariffs = set(Tariff.objects.filter(partner=hub).values_list("party_id", "tariff_id"))
    assert tariffs == {
        ("CPA", "CPA-A-AC-STD"),
        ("CPA", "CPA-A-DC-FAST"),
        ("CPB", "CPB-A-AC-STD"),
        ("CPB", "CPB-A-DC-FAST"),
    }
    # The hub's ClientInfo list, pulled from its hubclientinfo sender, is kept for the connection.
    infos = HubClientInfo.objects.filter(partner=hub).values_list("country_code", "party_id", "status")
    assert sorted(infos) == [("IN", "CPA", "CONNECTED"), ("IN", "CPB", "CONNECTED"), ("IN", "CPC", "CONNECTED")]
    # "GET All via Hubs": every list was asked of the hub itself.
    gets = [r for r in hub_sim.ctl("state")["hub"]["received"] if r["method"] == "GET"]
    assert {r["module"] for r in gets} == {"locations", "tariffs", "sessions", "cdrs"}
    assert {(r["from"], r["to"], r["status_code"]) for r in gets} == {("IN*EMS", "NL*HUB", None)}

    # Reading one EVSE is a direct request to the party that owns it.
    evse = Evse.objects.filter(location__partner=hub, location__party_id="CPB").order_by("pk").first()
    assert OcpiGateway().fetch_evse(evse, timeout=5) is not None
    [read] = received(hub_sim, "GET", f"/locations/{evse.location.location_id}/{evse.uid}")
    assert (read["to"], read["status_code"]) == ("IN*CPB", None)


def test_a_start_for_the_second_partys_evse_goes_to_that_party_and_its_result_comes_back(
    hub_sim: SimProcess, hub: Partner
) -> None:
    token = token_issue(driver=DriverFactory())
    # Our token reaches the hub once, as a Broadcast Push (OCPI-to-* = the hub).
    wait_until(lambda: any(t["uid"] == token.uid for t in hub_sim.ctl("tokens")), timeout=10)
    [push] = received(hub_sim, "PUT", f"/tokens/IN/EMS/{token.uid}")
    assert (push["from"], push["to"], push["status_code"]) == ("IN*EMS", "NL*HUB", None)

    evse = (
        Evse.objects.filter(location__partner=hub, location__party_id="CPB", status="AVAILABLE")
        .filter(capabilities__contains=["REMOTE_START_STOP_CAPABLE"])
        .order_by("pk")
        .first()
    )
    assert evse is not None
    start = commands.command_send(commands.command_start_session(token=token, evse=evse))
    assert start.status == Command.Status.ACCEPTED, start.error
    wait_until(lambda: Command.objects.get(pk=start.pk).status == Command.Status.SUCCEEDED, timeout=10)
    [sent] = received(hub_sim, "POST", "/commands/START_SESSION")
    assert (sent["from"], sent["to"], sent["status_code"]) == ("IN*EMS", "IN*CPB", None)
    # The hub sends the asynchronous CommandResult as the party the command went to (its OCPI-from-*; the
    # headers themselves are checked in tests/cposim/test_hub.py), and we took it.
    assert set(hub_sim.ctl("state")["hub"]["command_results_from"].values()) == {"IN*CPB"}

    session = wait_until(
        lambda: ChargingSession.objects.filter(authorization_reference=start.authorization_reference).first(),
        timeout=10,
    )
    assert (session.partner_id, session.country_code, session.party_id) == (hub.pk, "IN", "CPB")
    assert session.evse == evse
    stop = commands.command_send(commands.command_stop_session(session=session))
    assert stop.status == Command.Status.ACCEPTED, stop.error
    cdr = wait_until(lambda: Cdr.objects.filter(session_id=session.session_id).first(), timeout=15)
    assert (cdr.partner_id, cdr.country_code, cdr.party_id) == (hub.pk, "IN", "CPB")
    assert [r["to"] for r in received(hub_sim, "POST", "/commands/STOP_SESSION")] == ["IN*CPB"]


def test_a_push_from_a_party_we_did_not_grant_is_refused(hub_sim: SimProcess, hub: Partner) -> None:
    locations = hub_sim.ctl("locations")
    ungranted = next(loc for loc in locations if loc["party_id"] == "CPC")
    granted = next(loc for loc in locations if loc["party_id"] == "CPB")

    refused = hub_sim.ctl(
        "evse_status",
        {"location_id": ungranted["id"], "evse_uid": ungranted["evses"][0]["uid"], "status": "OUTOFORDER"},
    )
    taken = hub_sim.ctl(
        "evse_status", {"location_id": granted["id"], "evse_uid": granted["evses"][0]["uid"], "status": "OUTOFORDER"}
    )

    assert refused["push_status"] == 404, refused
    assert "IN*CPC is not granted to this hub" in refused["push"]["body"]["status_message"]
    assert taken["push_status"] == 200, taken
    evse = Evse.objects.get(location__partner=hub, location__location_id=granted["id"], uid=granted["evses"][0]["uid"])
    assert evse.status == "OUTOFORDER"


def test_a_party_the_hub_reports_offline_is_sent_nothing(hub_sim: SimProcess, hub: Partner) -> None:
    told = hub_sim.ctl("client_info", {"country_code": "IN", "party_id": "CPB", "status": "OFFLINE"})
    assert told["push"]["http_status"] == 200, told
    assert HubClientInfo.objects.get(partner=hub, party_id="CPB").status == "OFFLINE"
    before = len(received(hub_sim, "POST", "/commands/"))

    evse = Evse.objects.filter(location__partner=hub, location__party_id="CPB").order_by("pk").first()
    token = token_issue(driver=DriverFactory())
    start = commands.command_send(commands.command_start_session(token=token, evse=evse))

    assert start.status == Command.Status.FAILED
    assert "IN*CPB is OFFLINE" in start.error
    assert len(received(hub_sim, "POST", "/commands/")) == before


def test_a_swipe_at_a_partys_charger_is_authorized_in_real_time_through_the_hub(
    hub_sim: SimProcess, hub: Partner
) -> None:
    token = token_issue(driver=DriverFactory())
    location = Location.objects.filter(partner=hub, party_id="CPA").order_by("pk").first()
    evse = location.evses.filter(status="AVAILABLE").order_by("pk").first()

    answer = hub_sim.ctl(
        "start_session", {"location_id": location.location_id, "evse_uid": evse.uid, "token_uid": token.uid}
    )

    assert answer["started"] is True and answer["auth_method"] == "AUTH_REQUEST", answer
    session = wait_until(lambda: ChargingSession.objects.filter(session_id=answer["session_id"]).first(), timeout=10)
    assert (session.partner_id, session.party_id, session.token) == (hub.pk, "CPA", token)


def test_the_hub_registers_with_us_and_announces_its_parties(emsp_url: str, hub_sim: SimProcess) -> None:
    partner = Partner.objects.create(name="Roaming hub", country_code="NL", party_id="HUB")
    token_a = partner.issue_token_a()
    partner.save()

    hub_sim.ctl("register", {"versions_url": f"{emsp_url}/ocpi/versions", "token_a": token_a})

    partner.refresh_from_db()
    assert (partner.state, partner.role) == (Partner.State.CONNECTED, Partner.Role.HUB)
    parties = PartnerParty.objects.filter(partner=partner, own=False).values_list("party_id", "status")
    assert sorted(parties) == [("CPA", "REQUESTED"), ("CPB", "REQUESTED"), ("CPC", "REQUESTED")]
    wait_until(lambda: HubClientInfo.objects.filter(partner=partner).count() == 3, timeout=10)
    partner_party_grant(partner=partner, country_code="IN", party_id="CPA", by="staff")
    runs = {run.module: run for run in sync_partner(Partner.objects.get(pk=partner.pk), full=True)}
    assert runs["locations"].outcome == SyncRun.Outcome.OK, runs["locations"].error
    assert set(Location.objects.filter(partner=partner).values_list("party_id", flat=True)) == {"CPA"}


def test_a_party_the_hub_cannot_reach_does_not_cut_off_the_others(hub_sim: SimProcess, hub: Partner) -> None:
    """The hub answers 4003 (status_codes: "receiving party is not connected") for IN*CPB, which it never told us
    about: that is the state of one party behind the hub, not of the hub, and commands to IN*CPA still go."""
    hub_sim.ctl("client_info", {"country_code": "IN", "party_id": "CPB", "status": "OFFLINE", "push": False})
    token = token_issue(driver=DriverFactory())
    cpb = Evse.objects.filter(location__partner=hub, location__party_id="CPB").order_by("pk")
    for evse in cpb[:3]:
        failed = commands.command_send(commands.command_start_session(token=token, evse=evse))
        assert failed.status == Command.Status.FAILED and "HTTP 502" in failed.error, failed.error

    cpa = (
        Evse.objects.filter(location__partner=hub, location__party_id="CPA", status="AVAILABLE")
        .filter(capabilities__contains=["REMOTE_START_STOP_CAPABLE"])
        .order_by("pk")
        .first()
    )
    start = commands.command_send(commands.command_start_session(token=token, evse=cpa))

    assert start.status == Command.Status.ACCEPTED, start.error
    assert [r["to"] for r in received(hub_sim, "POST", "/commands/START_SESSION")] == ["IN*CPB"] * 3 + ["IN*CPA"]
