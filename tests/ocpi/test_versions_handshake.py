"""The credentials handshake in OCPI 2.1.1 and 2.3.0, in both directions, on the specs' literal paths, against
a scripted CPO behind the outbound seam: the version is negotiated (the highest both offer) and stored."""

from __future__ import annotations

from typing import Any

import pytest

from emsp.models import Partner, hash_token
from ocpi.credentials import RegistrationError, register_with_partner
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

# The specs' example layout: /ocpi/cpo/versions, /ocpi/cpo/{version}/{module}.
CPO = "http://127.0.0.1:9999/ocpi/cpo"
MODULES = ["credentials", "locations", "tariffs", "sessions", "cdrs", "tokens", "commands"]
RECEIVERS = {"tokens", "commands"}
OUR_MODULES = ["credentials", "locations", "sessions", "cdrs", "tariffs", "tokens", "commands"]

CREDENTIALS_211 = {
    "url": f"{CPO}/versions",
    "token": "ebf3b399-779f-4497-9b9d-ac6ad3cc44d2",
    "party_id": "CPA",
    "country_code": "IN",
    "business_details": {"name": "Example Operator", "website": "http://example.com"},
}
CREDENTIALS_230 = {
    "token": "9e80a9c4-28be-11e9-b210-d663bd873d93",
    "url": f"{CPO}/versions",
    "hub_party_id": "NLHUB",
    "roles": [{"role": "CPO", "party_id": "CPA", "country_code": "IN", "business_details": {"name": "CPO A"}}],
}


def script_cpo(peer: FakePeer, offered: list[str]) -> None:
    """A CPO offering `offered` versions, each with the spec's version details (2.1.1: no roles)."""
    peer.route("GET", f"{CPO}/versions", (200, envelope([{"version": v, "url": f"{CPO}/{v}"} for v in offered])))
    for version in offered:
        endpoints = []
        for module in MODULES:
            endpoint = {"identifier": module, "url": f"{CPO}/{version}/{module}"}
            if version != "2.1.1":
                endpoint["role"] = "RECEIVER" if module in RECEIVERS else "SENDER"
            endpoints.append(endpoint)
        peer.route("GET", f"{CPO}/{version}", (200, envelope({"version": version, "endpoints": endpoints})))


# -- (a) we register with a CPO ----------------------------------------------------------------------------------


def test_we_register_with_a_2_1_1_cpo_in_2_1_1(peer: FakePeer, db: None) -> None:
    script_cpo(peer, ["2.0", "2.1.1"])

    def answer(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        # We post 2.1.1 Credentials: one party at the top level, no roles.
        assert set(call["json"]) == {"token", "url", "business_details", "party_id", "country_code"}
        assert (call["json"]["party_id"], call["json"]["country_code"]) == ("EMS", "IN")
        return 200, envelope({**CREDENTIALS_211, "token": "token-c-from-cpo"}), {}

    peer.route("POST", f"{CPO}/2.1.1/credentials", answer)
    partner = register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")
    assert (partner.version, partner.state, partner.party_key) == ("2.1.1", Partner.State.CONNECTED, "IN*CPA")
    assert partner.outgoing_token == "token-c-from-cpo"
    assert partner.credentials_roles[0]["business_details"]["name"] == "Example Operator"
    # 2.1.1 endpoints have no role: the modules are found by identifier.
    assert partner.endpoint_url("locations", "SENDER") == f"{CPO}/2.1.1/locations"
    assert partner.endpoint_url("tokens", "RECEIVER") == f"{CPO}/2.1.1/tokens"
    assert [c["url"] for c in peer.calls[:2]] == [f"{CPO}/versions", f"{CPO}/2.1.1"]


def test_we_register_with_a_2_3_0_cpo_in_2_3_0(peer: FakePeer, db: None) -> None:
    script_cpo(peer, ["2.1.1", "2.2.1", "2.3.0"])

    def answer(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        assert call["json"]["roles"][0]["role"] == "EMSP"
        return 200, envelope({**CREDENTIALS_230, "token": "token-c-from-cpo"}), {}

    peer.route("POST", f"{CPO}/2.3.0/credentials", answer)
    partner = register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")
    assert partner.version == "2.3.0"
    assert partner.endpoint_url("commands", "RECEIVER") == f"{CPO}/2.3.0/commands"
    assert not peer.requests_to(f"{CPO}/2.2.1")  # the lower versions' details are never read


def test_we_register_in_2_2_1_with_a_cpo_that_offers_2_1_1_and_2_2_1(peer: FakePeer, db: None) -> None:
    script_cpo(peer, ["2.1.1", "2.2.1"])
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope({**CREDENTIALS_230, "token": "c"})))
    assert register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo").version == "2.2.1"


def test_we_do_not_register_with_a_cpo_offering_only_2_0(peer: FakePeer, db: None) -> None:
    script_cpo(peer, ["2.0"])
    with pytest.raises(RegistrationError, match="offers no OCPI"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")
    assert not peer.requests_to("/credentials")


# -- (b) a CPO registers with us ---------------------------------------------------------------------------------


@pytest.fixture
def token_a(db: None) -> str:
    partner = PartnerFactory(
        country_code="IN", party_id="CPA", state=Partner.State.NEW, outgoing_token="", endpoints=[]
    )
    token = partner.issue_token_a()
    partner.save()
    return token


def test_we_offer_all_three_versions_with_token_a(token_a: str) -> None:
    body = OcpiTestClient(token_a).get("/ocpi/versions").json()
    assert [v["version"] for v in body["data"]] == ["2.1.1", "2.2.1", "2.3.0"]
    assert body["data"][0]["url"] == "http://127.0.0.1:8000/ocpi/2.1.1"


def test_our_2_1_1_version_details_have_no_roles(token_a: str) -> None:
    data = OcpiTestClient(token_a).get("/ocpi/2.1.1").json()["data"]
    assert data["version"] == "2.1.1"
    assert [e["identifier"] for e in data["endpoints"]] == OUR_MODULES
    assert all(set(e) == {"identifier", "url"} for e in data["endpoints"])
    urls = {e["identifier"]: e["url"] for e in data["endpoints"]}
    assert urls["credentials"] == "http://127.0.0.1:8000/ocpi/2.1.1/credentials"
    assert urls["locations"] == "http://127.0.0.1:8000/ocpi/emsp/2.1.1/locations"


def test_our_2_3_0_version_details_have_roles(token_a: str) -> None:
    data = OcpiTestClient(token_a).get("/ocpi/2.3.0").json()["data"]
    roles = {e["identifier"]: (e["role"], e["url"]) for e in data["endpoints"]}
    assert roles["locations"] == ("RECEIVER", "http://127.0.0.1:8000/ocpi/emsp/2.3.0/locations")
    assert roles["tokens"] == ("SENDER", "http://127.0.0.1:8000/ocpi/emsp/2.3.0/tokens")


def test_a_2_1_1_cpo_registers_with_us_in_2_1_1(peer: FakePeer, token_a: str) -> None:
    script_cpo(peer, ["2.1.1"])
    response = OcpiTestClient(token_a).post("/ocpi/2.1.1/credentials", CREDENTIALS_211)
    body = response.json()
    assert (response.status_code, body["status_code"]) == (200, 1000)
    # Our answer is 2.1.1 Credentials.
    assert set(body["data"]) == {"token", "url", "business_details", "party_id", "country_code"}
    assert body["data"]["url"] == "http://127.0.0.1:8000/ocpi/versions"
    partner = Partner.objects.get(party_id="CPA")
    assert (partner.version, partner.state) == ("2.1.1", Partner.State.CONNECTED)
    assert partner.outgoing_token == CREDENTIALS_211["token"]
    assert partner.incoming_token_hash == hash_token(body["data"]["token"])
    assert partner.endpoint_url("locations", "SENDER") == f"{CPO}/2.1.1/locations"
    assert OcpiTestClient(body["data"]["token"]).get("/ocpi/emsp/2.1.1/tokens").json()["status_code"] == 1000


def test_a_2_3_0_cpo_registers_with_us_in_2_3_0(peer: FakePeer, token_a: str) -> None:
    script_cpo(peer, ["2.2.1", "2.3.0"])
    body = OcpiTestClient(token_a).post("/ocpi/2.3.0/credentials", CREDENTIALS_230).json()
    assert body["status_code"] == 1000
    assert body["data"]["roles"][0]["role"] == "EMSP"
    partner = Partner.objects.get(party_id="CPA")
    assert partner.version == "2.3.0"
    # We read the details of the version it registers in, not of another.
    assert [c["url"] for c in peer.calls[:2]] == [f"{CPO}/versions", f"{CPO}/2.3.0"]


def test_a_cpo_registering_in_a_version_it_does_not_offer_is_3002(peer: FakePeer, token_a: str) -> None:
    script_cpo(peer, ["2.2.1"])
    body = OcpiTestClient(token_a).post("/ocpi/2.3.0/credentials", CREDENTIALS_230).json()
    assert body["status_code"] == 3002
    assert Partner.objects.get(party_id="CPA").state != Partner.State.CONNECTED


def test_a_put_to_our_2_1_1_credentials_switches_the_connection_to_2_1_1(peer: FakePeer, token_a: str) -> None:
    script_cpo(peer, ["2.1.1", "2.2.1"])
    token_c = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CREDENTIALS_230).json()["data"]["token"]
    assert Partner.objects.get(party_id="CPA").version == "2.2.1"
    answer = OcpiTestClient(token_c).put("/ocpi/2.1.1/credentials", {**CREDENTIALS_211, "token": "new-b"}).json()
    assert answer["status_code"] == 1000 and "party_id" in answer["data"]
    partner = Partner.objects.get(party_id="CPA")
    assert (partner.version, partner.outgoing_token) == ("2.1.1", "new-b")
    assert partner.endpoint_url("locations", "SENDER") == f"{CPO}/2.1.1/locations"
    # Its old token C stops working with our answer; the new one works.
    assert OcpiTestClient(token_c).get("/ocpi/versions").status_code == 401
    assert OcpiTestClient(answer["data"]["token"]).get("/ocpi/versions").status_code == 200
