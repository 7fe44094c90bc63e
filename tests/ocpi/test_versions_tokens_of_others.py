"""Tokens that aren't ours, as OCPI 2.1.1 and 2.3.0 name them. A 2.1.1 session or CDR names its driver by
`auth_id` alone: the CdrToken is ours only for a contract we hold, else it belongs to the eMSP its eMA-ID
prefix names (CdrToken.party_id: "ID of the eMSP that 'owns' this Token"), so another eMSP's CDR is billed to
none of our drivers and its price is not disputed. 2.3.0's open TokenType (EMAID, a CPO's own values) is read
as OTHER on sessions and CDRs, and in a real-time authorization it names a token we don't have (2004)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from billing.models import Cdr, CdrAudit, Dispute, DriverReceipt
from billing.services.audit import cdr_process
from emsp.models import ChargingSession, Partner
from emsp.services.catalogue import locations_store
from ocpi import versions
from ocpi.models import DataQualityIssue
from ocpi.versions import Context, wire
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory, ocpi_location

pytestmark = pytest.mark.django_db

TESTS = Path(__file__).parents[1]
CDRS_211: dict[str, Any] = json.loads((TESTS / "billing/spec_examples/ocpi-2.1.1-tariffs-cdrs.json").read_text())
CDRS_230: dict[str, Any] = json.loads((TESTS / "billing/spec_examples/ocpi-2.3.0-tariffs-cdrs.json").read_text())
V211: dict[str, Any] = json.loads((TESTS / "ocpi/spec_examples/ocpi-2.1.1.json").read_text())
V230: dict[str, Any] = json.loads((TESTS / "ocpi/spec_examples/ocpi-2.3.0.json").read_text())
OTHER_EMSPS_CONTRACT = "NL-TNM-C00000099"  # eMA-ID shaped, of the eMSP NL*TNM: no token of ours has it
CPO = ("BE", "BEC")
US = ("IN", "EMS")


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for(*CPO)


def cdr_211(auth_id: str, **changes: Any) -> dict[str, Any]:
    return {**copy.deepcopy(CDRS_211["cdr_example"]), "auth_id": auth_id, **changes}


def cdr_token_of(auth_id: str, ctx: Context) -> dict[str, Any]:
    return versions.upgrade("2.1.1", "cdr", cdr_211(auth_id), ctx)["cdr_token"]


def findings(partner: Partner) -> set[tuple[str, str]]:
    return set(DataQualityIssue.objects.filter(partner=partner).values_list("path", "code"))


# --- 2.1.1: whose contract -----------------------------------------------------------------------------------


def test_a_2_1_1_cdr_of_another_emsps_contract_is_neither_billed_nor_disputed(bec: OcpiTestClient) -> None:
    # The CPO's price differs from what the tariff gives: for a CDR of ours that is a dispute.
    response = bec.post("/ocpi/emsp/2.1.1/cdrs", cdr_211(OTHER_EMSPS_CONTRACT, total_cost=9.99))
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)

    cdr = Cdr.objects.get()
    token = cdr.data["cdr_token"]
    assert (token["country_code"], token["party_id"], token["contract_id"]) == ("NL", "TNM", OTHER_EMSPS_CONTRACT)
    audit = cdr_process(cdr.pk)
    assert audit is not None and audit.status == CdrAudit.Status.REVIEW
    assert "foreign_token" in audit.flags
    assert not Dispute.objects.exists()
    assert not DriverReceipt.objects.exists()


def test_a_2_1_1_cdr_of_our_contract_is_ours_and_billed(bec: OcpiTestClient) -> None:
    card = TokenFactory(uid="012345678", contract_id="IN-EMS-C00000042")

    assert bec.post("/ocpi/emsp/2.1.1/cdrs", cdr_211("IN-EMS-C00000042")).json()["status_code"] == 1000

    cdr = Cdr.objects.get()
    token = cdr.data["cdr_token"]
    assert (token["country_code"], token["party_id"], token["uid"], token["type"]) == ("IN", "EMS", "012345678", "RFID")
    audit = cdr_process(cdr.pk)
    assert audit is not None and "foreign_token" not in audit.flags
    assert DriverReceipt.objects.get().driver_id == card.driver_id


def test_a_2_1_1_session_of_another_emsps_contract_is_stored_as_theirs(ocpi: OcpiTestClient, partner: Partner) -> None:
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC1")])
    session = {**copy.deepcopy(V211["session_start"]), "auth_id": OTHER_EMSPS_CONTRACT}

    assert ocpi.put("/ocpi/emsp/2.1.1/sessions/IN/CPA/101", session).json()["status_code"] == 1000

    stored = ChargingSession.objects.get(session_id="101")
    token = stored.data["cdr_token"]
    assert (token["country_code"], token["party_id"]) == ("NL", "TNM")
    assert stored.token_id is None


@pytest.mark.parametrize(
    ("auth_id", "party"),
    [
        ("NL-TNM-C00000099", ("NL", "TNM")),
        ("DE8ACC12E46L89", ("DE", "8AC")),  # the 2.1.1 examples' contract, an eMA-ID without separators
        ("nl-tnm-c00000099", ("NL", "TNM")),
        ("IN-EMS-C00000077", US),  # our own prefix: a contract of ours we no longer hold is still ours
        ("12345678", CPO),  # no prefix to read: the CPO's, the only party the CDR names (not ours)
        ("AB-1", CPO),
    ],
)
def test_an_unknown_2_1_1_contract_belongs_to_the_emsp_its_prefix_names(auth_id: str, party: tuple[str, str]) -> None:
    token = cdr_token_of(auth_id, Context(owner=CPO, emsp=US))
    assert (token["country_code"], token["party_id"]) == party
    assert (token["uid"], token["type"], token["contract_id"]) == (auth_id, "OTHER", auth_id)


def test_a_2_1_1_auth_id_carrying_our_cards_uid_is_ours(partner: Partner) -> None:
    """A common 2.1.1 slip: the card's uid in auth_id instead of its contract. Lenient in: it is our driver's."""
    TokenFactory(uid="04A1B2C3D4E5F6")
    token = cdr_token_of("04A1B2C3D4E5F6", wire.context(partner))
    assert (token["country_code"], token["party_id"], token["uid"]) == ("IN", "EMS", "04A1B2C3D4E5F6")


def test_a_2_1_1_contract_we_hold_is_ours_whatever_its_prefix() -> None:
    ctx = Context(owner=CPO, emsp=US, token_for={"DE8ACC12E46L89": ("012345678", "RFID")}.get)
    token = cdr_token_of("DE8ACC12E46L89", ctx)
    assert (token["country_code"], token["party_id"], token["uid"]) == ("IN", "EMS", "012345678")


# --- 2.3.0: the open TokenType -------------------------------------------------------------------------------


def session_230(token_type: str) -> dict[str, Any]:
    body = {**copy.deepcopy(V230["session_example_2_short_finished"]), "country_code": "IN", "party_id": "CPA"}
    body["cdr_token"]["type"] = token_type
    return body


@pytest.mark.parametrize("token_type", ["EMAID", "MAC_ADDRESS"])
def test_a_2_3_0_session_with_a_token_type_2_2_1_lacks_is_stored_as_other(
    ocpi: OcpiTestClient, partner: Partner, token_type: str
) -> None:
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC1")])

    response = ocpi.put("/ocpi/emsp/2.3.0/sessions/IN/CPA/101", session_230(token_type))

    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    assert ChargingSession.objects.get(session_id="101").data["cdr_token"]["type"] == "OTHER"
    # EMAID is 2.3.0's own value; a CPO's own value is reported to it.
    reported = ("cdr_token.type", "unknown_enum") in findings(partner)
    assert reported == (token_type == "MAC_ADDRESS")


def test_a_2_3_0_session_patch_may_name_an_emaid_token(ocpi: OcpiTestClient, partner: Partner) -> None:
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC1")])
    ocpi.put("/ocpi/emsp/2.3.0/sessions/IN/CPA/101", session_230("RFID"))
    token = {**session_230("EMAID")["cdr_token"]}

    patch = ocpi.patch(
        "/ocpi/emsp/2.3.0/sessions/IN/CPA/101", {"cdr_token": token, "last_updated": "2026-01-01T10:00:00Z"}
    )

    assert patch.json()["status_code"] == 1000
    assert ChargingSession.objects.get(session_id="101").data["cdr_token"]["type"] == "OTHER"


def test_a_2_2_1_session_with_a_token_type_outside_2_2_1_is_still_refused(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC1")])
    body = session_230("EMAID")
    body["total_cost"] = {"excl_vat": 1.0}

    response = ocpi.put("/ocpi/emsp/2.2.1/sessions/IN/CPA/101", body)

    assert response.json()["status_code"] == 2001
    assert not ChargingSession.objects.exists()


def test_a_2_3_0_cdr_with_a_cpos_own_token_type_is_kept_as_other_and_reported(bec: OcpiTestClient) -> None:
    raw = copy.deepcopy(CDRS_230["cdr_example"])
    raw["cdr_token"]["type"] = "MAC_ADDRESS"

    response = bec.post("/ocpi/emsp/2.3.0/cdrs", raw)

    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    assert Cdr.objects.get().data["cdr_token"]["type"] == "OTHER"
    partner = Partner.objects.get(country_code="BE", party_id="BEC")
    assert ("cdr_token.type", "unknown_enum") in findings(partner)


@pytest.mark.parametrize("token_type", ["EMAID", "emaid", "MAC_ADDRESS"])
def test_a_2_3_0_authorization_of_a_type_we_issue_none_of_is_an_unknown_token(
    ocpi: OcpiTestClient, token_type: str
) -> None:
    TokenFactory(uid="NLEMSC00000001", type="OTHER")  # even a uid of ours is no EMAID of ours

    response = ocpi.post(f"/ocpi/emsp/2.3.0/tokens/NLEMSC00000001/authorize?type={token_type}", {"location_id": "LOC1"})

    assert (response.status_code, response.json()["status_code"]) == (404, 2004)
    assert "data" not in response.json()


def test_a_2_2_1_authorization_of_a_type_outside_2_2_1_is_still_2001(ocpi: OcpiTestClient) -> None:
    response = ocpi.post("/ocpi/emsp/2.2.1/tokens/NLEMSC00000001/authorize?type=EMAID", {"location_id": "LOC1"})
    assert response.json()["status_code"] == 2001
