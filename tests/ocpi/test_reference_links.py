"""A CPO's Session or CDR finds our command by the authorization_reference it repeats (mod_cdrs: it "SHALL contain
the same value"): compared case-insensitively (a CiString), and only among the commands sent to the party the
Session or CDR is of (a hub carries several CPOs on one connection, and sees every reference it passes on)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Cdr
from billing.services.records import cdr_store
from emsp.models import Command, Partner
from emsp.services import commands
from emsp.services.sessions import session_put
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory
from tests.fakes import FakePeer, envelope
from tests.ocpi.test_hubs import HUB, HUB_TOKEN, evse_of, from_party
from tests.ocpi.test_hubs import hub as hub  # the fixture

pytestmark = pytest.mark.django_db
OURS = {"uid": "T1", "type": "RFID", "contract_id": "C1", "country_code": "IN", "party_id": "EMS"}


def session(party_id: str, session_id: str, reference: str, evse: Any) -> dict[str, Any]:
    return {
        "country_code": "IN", "party_id": party_id, "id": session_id, "start_date_time": "2026-06-01T10:00:00Z",
        "end_date_time": "2026-06-01T11:00:00Z", "kwh": 10, "cdr_token": OURS, "auth_method": "COMMAND",
        "authorization_reference": reference, "location_id": evse.location.location_id, "evse_uid": evse.uid,
        "connector_id": "1", "currency": "INR", "status": "COMPLETED", "last_updated": "2026-06-01T11:00:00Z",
    }  # fmt: skip


def put_session(client: OcpiTestClient, party_id: str, session_id: str, reference: str, evse: Any) -> int:
    """A party behind the hub PUTs its session; the OCPI status code it is answered with."""
    answer = client.put(
        f"/ocpi/emsp/2.2.1/sessions/IN/{party_id}/{session_id}",
        session(party_id, session_id, reference, evse),
        headers=from_party("IN", party_id),
    )
    return int(answer.json()["status_code"])


def started_at_cpb(peer: FakePeer, hub: Partner) -> tuple[Command, Any]:
    """A START_SESSION we sent to IN*CPB behind the hub (IN*CPA is behind it too)."""
    peer.route("POST", f"{HUB}/commands/START_SESSION", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    evse_of(hub, "IN", "CPA", "LOC-A")
    evse_b = evse_of(hub, "IN", "CPB", "LOC-B")
    TokenFactory(uid="T1")
    start = commands.command_send(commands.command_start_session(token=TokenFactory(), evse=evse_b))
    return start, evse_b


def test_one_party_s_cdr_does_not_bill_another_party_s_charge_behind_the_same_hub(
    peer: FakePeer, hub: Partner, spec_example: Callable[[str], Any]
) -> None:
    start, evse_b = started_at_cpb(peer, hub)
    client = OcpiTestClient(HUB_TOKEN)
    assert put_session(client, "CPB", "S-B", start.authorization_reference, evse_b) == 1000
    base = {k: v for k, v in spec_example("cdr_example.json").items() if k != "session_id"}
    claimed = {**base, "country_code": "IN", "party_id": "CPA", "id": "CDR-A", "cdr_token": OURS,
               "authorization_reference": start.authorization_reference}  # fmt: skip
    answer = client.post("/ocpi/emsp/2.2.1/cdrs", claimed, headers=from_party("IN", "CPA"))
    assert answer.json()["status_code"] == 1000
    assert Cdr.objects.get(cdr_id="CDR-A").charging_session is None  # not CPB's S-B


def test_one_party_s_session_does_not_take_another_party_s_start(peer: FakePeer, hub: Partner) -> None:
    start, _ = started_at_cpb(peer, hub)
    evse_a = evse_of(hub, "IN", "CPA", "LOC-A")
    assert put_session(OcpiTestClient(HUB_TOKEN), "CPA", "S-A", start.authorization_reference, evse_a) == 1000
    start.refresh_from_db()
    assert start.session_id is None


def test_the_start_s_own_party_still_finds_it(peer: FakePeer, hub: Partner) -> None:
    start, evse_b = started_at_cpb(peer, hub)
    client = OcpiTestClient(HUB_TOKEN)
    assert put_session(client, "CPB", "S-B", start.authorization_reference, evse_b) == 1000
    start.refresh_from_db()
    assert start.session is not None and start.session.session_id == "S-B"


def test_a_reference_sent_back_in_another_case_finds_its_command(peer: FakePeer, hub: Partner) -> None:
    """CiString(36): a CPO that upper-cases it still names our start (its CDR had been billed to the driver's
    account, the booking's hold left standing)."""
    start, evse_b = started_at_cpb(peer, hub)
    assert start.authorization_reference != start.authorization_reference.swapcase()
    session_put(hub, session("CPB", "S-B", start.authorization_reference.swapcase(), evse_b))
    start.refresh_from_db()
    assert start.session is not None
    cdr = {**session("CPB", "S-B", "", evse_b), "id": "CDR-B"}
    cdr_obj = {
        "country_code": "IN", "party_id": "CPB", "id": "CDR-B", "start_date_time": cdr["start_date_time"],
        "end_date_time": cdr["end_date_time"], "currency": "INR", "cdr_token": OURS, "auth_method": "COMMAND",
        "authorization_reference": start.authorization_reference.upper(),
        "cdr_location": {"id": evse_b.location.location_id, "evse_uid": evse_b.uid, "connector_id": "1"},
        "total_cost": {"excl_vat": 10, "incl_vat": 11.8}, "total_energy": 10, "total_time": 1,
        "charging_periods": [], "last_updated": cdr["last_updated"],
    }  # fmt: skip
    cdr_store(hub, cdr_obj)
    assert Cdr.objects.get(cdr_id="CDR-B").charging_session_id == start.session_id
