"""What we send a CPO and read from it, in the CPO's version (Partner.version): token pushes, commands, EVSE
reads and pulls, against a scripted 2.1.1 or 2.3.0 CPO behind the outbound seam, on the specs' literal paths."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from emsp import outbox
from emsp.models import Command, Evse, Location, Partner, Reservation, Token
from emsp.services import commands
from ocpi import push, sync
from ocpi.gateway import OcpiGateway
from ocpi.models import PushDelivery, SyncRun
from tests.factories import PartnerFactory, TokenFactory, ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo"
V211: dict[str, Any] = json.loads((Path(__file__).parent / "spec_examples" / "ocpi-2.1.1.json").read_text())


def cpo(version: str) -> Partner:
    roles = {"tokens": "RECEIVER", "commands": "RECEIVER"}
    endpoints = [
        {
            "identifier": m,
            "url": f"{CPO}/{version}/{m}",
            **({} if version == "2.1.1" else {"role": roles.get(m, "SENDER")}),
        }
        for m in ("credentials", "locations", "sessions", "tokens", "commands")
    ]
    return PartnerFactory(country_code="IN", party_id="CPA", version=version, endpoints=endpoints)


def evse_of(partner: Partner) -> Evse:
    sync.ingest_page(
        partner,
        "locations",
        [ocpi_location("IN", "CPA", "LOC1", capabilities=["RESERVABLE", "REMOTE_START_STOP_CAPABLE"])],
    )
    evse = Evse.objects.filter(location__location_id="LOC1").order_by("pk").first()
    assert evse is not None
    return evse


# --- tokens ------------------------------------------------------------------------------------------------------


def test_a_token_is_pushed_to_a_2_1_1_cpo_in_2_1_1(peer: FakePeer) -> None:
    cpo("2.1.1")
    token = TokenFactory(type=Token.Type.APP_USER, uid="APP1", contract_id="IN-EMS-C00000042")
    # mod_tokens 2.1.1: PUT {tokens}/{country_code}/{party_id}/{token_uid}, no ?type=.
    peer.route("PUT", f"{CPO}/2.1.1/tokens/IN/EMS/APP1", (200, envelope()))
    (delivery,) = push.token_changed(token)
    outbox.deliver(delivery.pk)
    assert PushDelivery.objects.get(pk=delivery.pk).status == "DELIVERED"
    (call,) = peer.requests_to("/tokens/")
    assert call["url"] == f"{CPO}/2.1.1/tokens/IN/EMS/APP1"
    assert set(call["json"]) <= set(V211["token"])
    assert (call["json"]["auth_id"], call["json"]["type"]) == ("IN-EMS-C00000042", "OTHER")


def test_a_token_is_pushed_to_a_2_3_0_cpo_as_to_2_2_1(peer: FakePeer) -> None:
    cpo("2.3.0")
    token = TokenFactory(type=Token.Type.RFID, uid="RFID1")
    peer.route("PUT", f"{CPO}/2.3.0/tokens/IN/EMS/RFID1", (200, envelope()))
    (delivery,) = push.token_changed(token)
    outbox.deliver(delivery.pk)
    (call,) = peer.requests_to("/tokens/")
    assert call["url"] == f"{CPO}/2.3.0/tokens/IN/EMS/RFID1?type=RFID"
    assert call["json"]["contract_id"] == token.contract_id


# --- commands ----------------------------------------------------------------------------------------------------


def test_a_start_session_goes_to_a_2_1_1_cpo_without_what_2_1_1_lacks(peer: FakePeer) -> None:
    partner = cpo("2.1.1")
    token = TokenFactory(type=Token.Type.APP_USER)
    command = commands.command_start_session(token=token, evse=evse_of(partner))
    peer.route("POST", f"{CPO}/2.1.1/commands/START_SESSION", (200, envelope({"result": "ACCEPTED"})))
    reply = OcpiGateway().send_command(command)
    assert (reply.result, reply.timeout_seconds) == ("ACCEPTED", None)  # 2.1.1 has no timeout: our default applies
    sent = peer.requests_to("/commands/")[0]["json"]
    assert set(sent) == {"response_url", "token", "location_id", "evse_uid"}
    assert sent["response_url"] == f"http://127.0.0.1:8000/ocpi/emsp/2.1.1/commands/START_SESSION/{command.uid}"
    assert "auth_id" in sent["token"]
    command.refresh_from_db()
    assert command.request == sent  # what was sent is what is kept


def test_cancel_reservation_at_a_2_1_1_cpo_fails_at_once(peer: FakePeer) -> None:
    partner = cpo("2.1.1")
    evse = evse_of(partner)
    now = timezone.now()
    reservation = Reservation.objects.create(
        evse=evse,
        token=TokenFactory(),
        start_at=now,
        expiry_at=now + timedelta(minutes=15),
        status=Reservation.Status.RESERVED,
    )
    command = commands.command_cancel_reservation(reservation=reservation)
    commands.command_send(command)
    command.refresh_from_db()
    assert command.status == Command.Status.FAILED
    assert "no CANCEL_RESERVATION" in command.error
    assert not peer.calls


def test_a_2_1_1_synchronous_timeout_is_a_refusal(peer: FakePeer) -> None:
    partner = cpo("2.1.1")
    command = commands.command_start_session(token=TokenFactory(), evse=evse_of(partner))
    peer.route("POST", f"{CPO}/2.1.1/commands/START_SESSION", (200, envelope({"result": "TIMEOUT"})))
    assert OcpiGateway().send_command(command).result == "REJECTED"


def test_a_2_3_0_command_points_at_our_2_3_0_result_endpoint(peer: FakePeer) -> None:
    partner = cpo("2.3.0")
    command = commands.command_start_session(token=TokenFactory(), evse=evse_of(partner))
    peer.route("POST", f"{CPO}/2.3.0/commands/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    OcpiGateway().send_command(command)
    sent = peer.requests_to("/commands/")[0]["json"]
    assert sent["response_url"].startswith("http://127.0.0.1:8000/ocpi/emsp/2.3.0/commands/START_SESSION/")
    assert sent["authorization_reference"] == command.authorization_reference


# --- reads ---------------------------------------------------------------------------------------------------------


def test_an_evse_read_from_a_2_1_1_cpo_is_upgraded(peer: FakePeer) -> None:
    partner = cpo("2.1.1")
    evse = evse_of(partner)
    answer = json.loads(json.dumps(V211["location"]["evses"][0]))
    answer["uid"] = evse.uid
    peer.route("GET", f"{CPO}/2.1.1/locations/LOC1/{evse.uid}", (200, envelope(answer)))
    clean = OcpiGateway().fetch_evse(evse, timeout=1)
    assert clean is not None
    assert clean["connectors"][0]["max_voltage"] == 220 and clean["connectors"][0]["tariff_ids"] == ["11"]


def test_a_pull_from_a_2_1_1_cpo_stores_its_locations_without_renaming_findings(peer: FakePeer) -> None:
    from ocpi.models import DataQualityIssue

    partner = cpo("2.1.1")
    peer.route("GET", f"{CPO}/2.1.1/locations", (200, envelope([V211["location"]])))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    location = Location.objects.get(partner=partner, location_id="LOC1")
    assert location.data["parking_type"] == "ON_STREET"
    assert not DataQualityIssue.objects.filter(partner=partner, code="renamed_field").exists()


def test_a_2_1_1_page_with_absurd_objects_is_pulled_to_its_end(peer: FakePeer) -> None:
    """Objects whose 2.1.1 mapping meets an absurd value (an exponent no money has, the ends of time) are
    refused one by one and recorded; the pull goes on and ends OK (it used to stop with an exception)."""
    from ocpi.models import DataQualityIssue

    partner = cpo("2.1.1")
    partner.endpoints = [*partner.endpoints, {"identifier": "cdrs", "url": f"{CPO}/2.1.1/cdrs"}]
    partner.save()
    sessions = [
        {**V211["session_start"], "id": "BAD1", "total_cost": "1e1000000"},
        {**V211["session_start"], "id": "OK1"},
    ]
    peer.route("GET", f"{CPO}/2.1.1/sessions", (200, envelope(sessions)))
    cdrs = [{**V211["cdr"], "id": "BAD2", "start_date_time": "0001-01-01T00:00:00Z"}, V211["cdr"]]
    peer.route("GET", f"{CPO}/2.1.1/cdrs", (200, envelope(cdrs)))
    for module in ("sessions", "cdrs"):
        run = sync.sync_module(partner, module, full=True)
        assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
        assert run.received == 2
    assert DataQualityIssue.objects.filter(partner=partner, object_id="BAD2", code="rejected").exists()
