"""Our eMSP, as real processes (gunicorn, Celery worker and beat, PostgreSQL, Redis), against an OCPI 2.2.1
CPO we did not write: extrawest-ocpi from PyPI, in its own virtualenv (tests/interop/extrawest_cpo.py).

Both handshake directions, paginated pulls, its pushes to our receivers, our tokens pushed to it, and a
START_SESSION with its asynchronous CommandResult. Each quirk of the library these tests meet is named
where it is met; docs/interop.md lists them with the spec sections they break."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests

from billing.models import Cdr, Tariff
from emsp.models import ChargingSession, Command, Evse, Location, Partner, Token
from emsp.services import catalogue, commands
from emsp.services.tokens import token_issue
from ocpi import push
from ocpi.client import OcpiAuthError, OcpiClient, OcpiClientError, OcpiReplyError
from ocpi.credentials import register_with_partner, rotate_credentials
from ocpi.models import CredentialsRotation, DataQualityIssue, OcpiMessage, SyncRun
from ocpi.sync import sync_partner
from tests.e2e.platform import Platform, until
from tests.factories import DriverFactory
from tests.interop.peer import PeerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TOKEN_A = "ew-interop-token-a"
LOCATIONS, TARIFFS = 120, 110  # three pages each at the library's page size of 50


def connected_peer(extrawest_peer: Callable[..., PeerProcess], *args: str) -> tuple[PeerProcess, Partner]:
    """The peer, and our registration with it (it gave us its Token A)."""
    peer = extrawest_peer("--token-a", TOKEN_A, "--locations", str(LOCATIONS), "--tariffs", str(TARIFFS), *args)
    partner = register_with_partner(versions_url=peer.versions_url, token_a=TOKEN_A)
    return peer, partner


def peer_token_key(token: Token) -> str:
    """How the peer files one of our tokens: its CiStrings lowercase country code, party id and uid."""
    payload_party = ("IN", "EMS")
    return "*".join(part.lower() for part in (*payload_party, token.uid))


def test_we_register_with_it_and_pull_every_page(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    platform_factory()
    peer, partner = connected_peer(extrawest_peer)
    assert partner.state == Partner.State.CONNECTED
    assert (partner.country_code, partner.party_id) == ("IN", "EWX")  # it answered "in"/"ewx" (CiString)
    # Its endpoint URLs end with a slash, kept as given (without it the library answers 307).
    assert partner.endpoint_url("locations", "SENDER").endswith("/ocpi/cpo/2.2.1/locations/")
    assert [c["roles"][0]["party_id"] for c in peer.state()["clients"]] == ["ems"]  # it keeps our credentials

    runs = {run.module: run for run in sync_partner(partner, full=True, modules=("locations", "tariffs"))}
    for module, count in (("locations", LOCATIONS), ("tariffs", TARIFFS)):
        run = runs[module]
        assert run.outcome == SyncRun.Outcome.OK, run.error
        assert (run.pages, run.announced, run.received, run.stored) == (3, count, count, count)
    assert Location.objects.filter(partner=partner).count() == LOCATIONS
    assert Evse.objects.filter(location__partner=partner).count() == 2 * LOCATIONS
    assert Tariff.objects.filter(partner=partner).count() == TARIFFS
    # Its Link points at https:// and at ".../VersionNumber.v_2_2_1/ModuleID.locations/?date_from=None…":
    # not followed, paged by offset/limit on the endpoint, and said so.
    findings = DataQualityIssue.objects.filter(partner=partner, code="link_elsewhere")
    assert set(findings.values_list("module", flat=True)) == {"locations", "tariffs"}
    # Its ids arrive lowercased (CiString): stored as sent, found case-insensitively.
    location = Location.objects.get(partner=partner, location_id="ewx-l000007")
    assert location.evses.filter(uid="ewx-l000007-e1").exists()


def test_an_incremental_pull_asks_it_for_changes_only(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    platform_factory()
    peer, partner = connected_peer(extrawest_peer)
    assert all(run.outcome == SyncRun.Outcome.OK for run in sync_partner(partner, full=True, modules=("locations",)))
    changed = peer_location(partner, 42, name="Renamed by the CPO")
    peer.ctl("objects/locations/EWX-L000042", changed)
    since = datetime.now(UTC) - timedelta(minutes=1)
    [run] = sync_partner(partner, modules=("locations",))
    assert run.outcome == SyncRun.Outcome.OK, run.error
    assert run.mode == SyncRun.Mode.INCREMENTAL and run.date_from is not None and run.date_from <= since + timedelta(1)
    assert (run.announced, run.received) == (1, 1)
    assert Location.objects.get(partner=partner, location_id__iexact="EWX-L000042").name == "Renamed by the CPO"
    assert Location.objects.filter(partner=partner).count() == LOCATIONS  # an incremental pull withdraws nothing


def test_an_evse_is_re_read_on_its_own_through_its_list_of_one(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    """The EVSE-level GET (freshness for CPOs that don't push): its answer is `data: [evse]`."""
    platform_factory()
    peer, partner = connected_peer(extrawest_peer)
    sync_partner(partner, full=True, modules=("locations",))
    changed = peer_location(partner, 9)
    changed["evses"][1] = {**changed["evses"][1], "status": "CHARGING", "last_updated": changed["last_updated"]}
    peer.ctl("objects/locations/EWX-L000009", changed)
    evse = Evse.objects.get(location__partner=partner, uid__iexact="EWX-L000009-E2")
    assert evse.status == "AVAILABLE"
    assert catalogue.evse_refresh_from_cpo(evse) is True
    evse.refresh_from_db()
    assert evse.status == "CHARGING"


def test_we_rotate_our_credentials_with_it(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    platform_factory()
    peer, partner = connected_peer(extrawest_peer)
    old_token = partner.outgoing_token
    rotation = rotate_credentials(partner)
    assert rotation.outcome == CredentialsRotation.Outcome.DONE, rotation.error
    partner.refresh_from_db()
    assert partner.outgoing_token != old_token
    with pytest.raises(OcpiAuthError):  # its old token for us is gone on its side
        OcpiClient(partner, token=old_token).get(partner.endpoint_url("locations", "SENDER"), module="locations")
    [run] = sync_partner(partner, full=True, modules=("tariffs",))
    assert (run.outcome, run.stored) == (SyncRun.Outcome.OK, TARIFFS)
    assert peer.ctl("push/locations/EWX-L000001", {})["status_code"] == 201  # our new token works for it
    assert Location.objects.filter(partner=partner).count() == 1


def test_it_registers_with_us(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    platform = platform_factory()
    partner = Partner.objects.create(name="EW Interop CPO", country_code="IN", party_id="EWX")
    token_a = partner.issue_token_a()
    partner.save()
    peer = extrawest_peer("--locations", str(LOCATIONS), "--tariffs", str(TARIFFS))
    answer = peer.ctl("register", {"versions_url": f"{platform.base}/ocpi/versions", "token_a": token_a})
    assert answer == {"registered": True}, answer
    partner.refresh_from_db()
    assert partner.state == Partner.State.CONNECTED
    assert partner.versions_url == peer.versions_url
    assert partner.endpoint_url("commands", "RECEIVER") == f"{peer.base}/ocpi/cpo/2.2.1/commands/"

    # The token it got from us works on our side, ours on its side.
    runs = {run.module: run for run in sync_partner(partner, full=True, modules=("locations", "tariffs"))}
    assert (runs["locations"].stored, runs["tariffs"].stored) == (LOCATIONS, TARIFFS)
    assert peer.ctl("push/locations/EWX-L000003", {})["status_code"] == 200

    # Registering again with the same Token A: refused (Token A is single-use), nothing changes.
    again = peer.ctl("register", {"versions_url": f"{platform.base}/ocpi/versions", "token_a": token_a})
    assert again["registered"] is False and again["http_status"] == 401
    partner.refresh_from_db()
    assert partner.state == Partner.State.CONNECTED


def test_our_tokens_are_pushed_to_it(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    platform_factory()
    before = token_issue(driver=DriverFactory())  # pushed when we connect
    peer, partner = connected_peer(extrawest_peer)
    after = token_issue(driver=DriverFactory())  # pushed when issued
    tokens = until(lambda: (t := peer.state()["tokens"]) and len(t) == 2 and t, 20, "both tokens at the CPO")
    for token in (before, after):
        stored = tokens[peer_token_key(token)]
        assert stored["uid"] == token.uid.lower()  # its CiString lowercases what it stores
        assert stored["contract_id"].upper() == token.contract_id.upper()
        assert stored["valid"] is True and stored["whitelist"] == "ALLOWED"

    # A change is pushed again (PUT of the whole token).
    after.valid = False
    after.save()
    push.token_changed(after)
    until(lambda: peer.state()["tokens"][peer_token_key(after)]["valid"] is False, 20, "the token blocked at the CPO")
    assert partner.state == Partner.State.CONNECTED


def peer_location(partner: Partner, index: int, **changes: Any) -> dict[str, Any]:
    """Location number `index` as the peer holds it, with changes (read with our client: a GET of one)."""
    url = partner.endpoint_url("locations", "SENDER") + f"EWX-L{index:06d}"
    [location] = OcpiClient(partner).get(url, module="locations").data  # a list of one: see docs/interop.md
    return {**location, **changes, "last_updated": datetime.now(UTC).isoformat(timespec="seconds")}


def session_at(location_id: str, evse_uid: str, token: Token, **fields: Any) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(minutes=20)
    return {
        "start_date_time": start.isoformat(timespec="seconds"),
        "kwh": 0,
        "cdr_token": {
            "country_code": "IN",
            "party_id": "EMS",
            "uid": token.uid,
            "type": token.type,
            "contract_id": token.contract_id,
        },
        "auth_method": "WHITELIST",
        "location_id": location_id,
        "evse_uid": evse_uid,
        "connector_id": "1",
        "currency": "INR",
        "status": "ACTIVE",
        **fields,
    }


def cdr_for(session_id: str, session: dict[str, Any], tariff_id: str) -> dict[str, Any]:
    start = datetime.fromisoformat(session["start_date_time"])
    end = start + timedelta(minutes=20)
    return {
        "start_date_time": start.isoformat(timespec="seconds"),
        "end_date_time": end.isoformat(timespec="seconds"),
        "session_id": session_id,
        "cdr_token": session["cdr_token"],
        "auth_method": "WHITELIST",
        "cdr_location": {
            "id": session["location_id"],
            "address": "8 MG Road",
            "city": "Bengaluru",
            "postal_code": "560001",
            "country": "IND",
            "coordinates": {"latitude": "12.907000", "longitude": "77.520000"},
            "evse_id": "IN*EWX*E0000071",
            "evse_uid": session["evse_uid"],
            "connector_id": "1",
            "connector_standard": "IEC_62196_T2",
            "connector_format": "SOCKET",
            "connector_power_type": "AC_3_PHASE",
        },
        "currency": "INR",
        "tariffs": [],
        "charging_periods": [
            {
                "start_date_time": start.isoformat(timespec="seconds"),
                "dimensions": [{"type": "ENERGY", "volume": 8}],
                "tariff_id": tariff_id,
            }
        ],
        "total_cost": {"excl_vat": 154.0, "incl_vat": 181.72},
        "total_energy": 8,
        "total_time": 0.3333,
        "last_updated": end.isoformat(timespec="seconds"),
    }


def test_its_pushes_reach_our_receivers(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    platform_factory()
    peer, partner = connected_peer(extrawest_peer)
    sync_partner(partner, full=True, modules=("locations", "tariffs"))
    token = token_issue(driver=DriverFactory())

    # Locations: PUT through the library's push (a new one and a changed one), PATCH of an EVSE by plain HTTP.
    peer.ctl("objects/locations/EWX-L000007", peer_location(partner, 7, name="Changed and pushed"))
    assert peer.ctl("push/locations/EWX-L000007", {})["status_code"] == 200
    assert Location.objects.get(partner=partner, location_id__iexact="EWX-L000007").name == "Changed and pushed"
    # It glues the path to our endpoint URL (`…/locationsIN/EWX/…`); our receivers answer that form too.
    glued = OcpiMessage.objects.filter(direction=OcpiMessage.Direction.IN, method="PUT", url__contains="/locationsIN/")
    until(glued.exists, 5, "the PUT's log row (written once its answer is sent)")
    new = {**peer_location(partner, 8), "id": "EWX-NEW-1", "name": "Opened today"}
    new["evses"] = [{**e, "uid": e["uid"].replace("l000008", "new-1")} for e in new["evses"]]
    peer.ctl("objects/locations/EWX-NEW-1", new)
    pushed = peer.ctl("push/locations/EWX-NEW-1", {})
    assert pushed["status_code"] == 201, pushed
    assert Location.objects.filter(partner=partner).count() == LOCATIONS + 1
    patched = peer.ctl("patch/locations/EWX-L000007/ewx-l000007-e1", {"status": "CHARGING"})
    assert patched["http_status"] == 200 and patched["body"]["status_code"] == 1000, patched
    evse = Evse.objects.get(location__partner=partner, uid__iexact="EWX-L000007-E1")
    assert evse.status == "CHARGING"

    # Sessions: PUT through the library's push, PATCH by plain HTTP.
    session = session_at("ewx-l000007", "ewx-l000007-e1", token)
    peer.ctl("objects/sessions/EWX-S-1", session)
    assert peer.ctl("push/sessions/EWX-S-1", {})["status_code"] in (200, 201)
    stored = ChargingSession.objects.get(session_id__iexact="EWX-S-1")
    assert stored.partner == partner and stored.status == "ACTIVE"
    assert stored.token == token  # its cdr_token uid arrives lowercased: matched case-insensitively
    assert stored.evse == evse
    patched = peer.ctl("patch/sessions/EWX-S-1", {"kwh": 8.0})
    assert patched["body"]["status_code"] == 1000, patched
    stored.refresh_from_db()
    assert stored.kwh == 8

    # CDRs: POST through the library's push.
    tariff_id = Tariff.objects.filter(partner=partner).order_by("pk").first().tariff_id
    peer.ctl("objects/cdrs/EWX-CDR-1", cdr_for("EWX-S-1", session, tariff_id))
    answer = peer.ctl("push/cdrs/EWX-CDR-1", {})
    assert answer["status_code"] == 201, answer
    assert "/ocpi/emsp/2.2.1/cdrs/" in {k.lower(): v for k, v in answer["response"].items()}["location"]
    cdr = Cdr.objects.get(partner=partner, cdr_id__iexact="EWX-CDR-1")
    assert cdr.charging_session == stored
    assert cdr.total_cost_excl_vat == Decimal("154")
    # Its CdrLocation has no evse_uid (required in 2.2.1): the CDR is kept, and the gap is a finding.
    assert "evse_uid" not in cdr.data["cdr_location"]
    assert DataQualityIssue.objects.filter(partner=partner, module="cdrs", code="missing_evse_uid").exists()


def test_start_session_and_its_asynchronous_result(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    platform_factory()
    peer, partner = connected_peer(extrawest_peer)
    sync_partner(partner, full=True, modules=("locations",))
    token = token_issue(driver=DriverFactory())
    evse = Evse.objects.filter(location__partner=partner, status="AVAILABLE").order_by("pk").first()

    start = commands.command_send(commands.command_start_session(token=token, evse=evse))
    # Its CommandResponse comes as a list of one (data: [{...}]), read as the one object.
    assert start.status in (Command.Status.ACCEPTED, Command.Status.SUCCEEDED), start.error
    assert start.response["result"] == "ACCEPTED"
    done = until(
        lambda: (c := Command.objects.get(pk=start.pk)).status in Command.FINAL_STATUSES and c, 20, "CommandResult"
    )
    assert done.status == Command.Status.SUCCEEDED  # its background task POSTed to our response_url
    [received] = peer.state()["commands"]
    assert received["command"].endswith("start_session")
    assert received["data"]["response_url"] == start.request["response_url"]
    assert received["data"]["location_id"] == evse.location.location_id.lower()
    assert received["data"]["token"]["uid"] == token.uid.lower()

    # A result that is not ACCEPTED reaches us too.
    peer.ctl("command_results/REJECTED", {})
    second = commands.command_send(commands.command_start_session(token=token, evse=evse))
    rejected = until(
        lambda: (c := Command.objects.get(pk=second.pk)).status in Command.FINAL_STATUSES and c, 20, "CommandResult"
    )
    assert rejected.status == Command.Status.FAILED


def test_as_published_it_hides_its_commands_endpoint(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    """The library mounts the commands receiver but leaves it out of its version details: we can't send a
    command, and say so; everything else works."""
    platform_factory()
    peer, partner = connected_peer(extrawest_peer, "--as-published")
    assert partner.endpoint_url("commands", "RECEIVER") is None
    sync_partner(partner, full=True, modules=("locations",))
    token = token_issue(driver=DriverFactory())
    evse = Evse.objects.filter(location__partner=partner).order_by("pk").first()
    command = commands.command_send(commands.command_start_session(token=token, evse=evse))
    assert command.status == Command.Status.FAILED
    assert "commands" in command.error.lower()
    assert peer.state()["commands"] == []


def test_its_errors_are_failed_requests_never_empty_pages(
    platform_factory: Callable[..., Platform], extrawest_peer: Callable[..., PeerProcess]
) -> None:
    """What it answers outside OCPI: a 307 for its endpoint without the slash, 403 `{"detail": …}` for a
    token it doesn't know, 422 `{"detail": […]}` for a parameter it can't parse."""
    platform_factory()
    peer, partner = connected_peer(extrawest_peer)
    url = partner.endpoint_url("locations", "SENDER")
    with pytest.raises(OcpiReplyError, match="307"):
        OcpiClient(partner).get(url.rstrip("/"), module="locations")
    with pytest.raises(OcpiAuthError):
        OcpiClient(partner, token="not-a-token-it-issued").get(url, module="locations")
    with pytest.raises(OcpiClientError, match=r"HTTP 422"):
        OcpiClient(partner).get(url + "?date_from=None", module="locations")
    # An undecodable Base64 token: HTTP 200 with OCPI 3000 (not 401).
    reply = requests.get(peer.versions_url, headers={"Authorization": "Token bad"}, timeout=10)
    assert (reply.status_code, reply.json()["status_code"]) == (200, 3000)
