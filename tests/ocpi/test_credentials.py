"""Credentials handshake in both directions, against a scripted CPO behind the outbound seam."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command

from emsp.models import Partner, hash_token
from ocpi.credentials import RegistrationError, register_with_partner
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9999/ocpi"


def script_cpo(peer: FakePeer, *, modules: list[str] | None = None) -> None:
    modules = modules or ["credentials", "locations", "tariffs", "sessions", "cdrs", "tokens", "commands"]
    roles = {"credentials": "RECEIVER", "tokens": "RECEIVER", "commands": "RECEIVER"}
    peer.route("GET", f"{CPO}/versions", (200, envelope([{"version": "2.2.1", "url": f"{CPO}/2.2.1"}])))
    peer.route(
        "GET",
        f"{CPO}/2.2.1",
        (
            200,
            envelope(
                {
                    "version": "2.2.1",
                    "endpoints": [
                        {"identifier": m, "role": roles.get(m, "SENDER"), "url": f"{CPO}/2.2.1/{m}"} for m in modules
                    ],
                }
            ),
        ),
    )


CPO_CREDENTIALS = {
    "token": "token-b-from-cpo",
    "url": f"{CPO}/versions",
    "roles": [
        {"role": "CPO", "party_id": "CPA", "country_code": "IN", "business_details": {"name": "CPO A"}},
    ],
}


@pytest.fixture
def waiting_partner(db: None) -> tuple[Partner, str]:
    partner = PartnerFactory(
        country_code="IN", party_id="CPA", state=Partner.State.NEW, outgoing_token="", endpoints=[]
    )
    token_a = partner.issue_token_a()
    partner.save()
    return partner, token_a


# -- (b) a CPO registers with us ----------------------------------------------------------------


def test_a_cpo_registers_with_token_a_and_gets_token_c(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    partner, token_a = waiting_partner
    script_cpo(peer)
    response = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS)
    body = response.json()
    assert (response.status_code, body["status_code"]) == (200, 1000)
    token_c = body["data"]["token"]
    assert body["data"]["url"] == "http://127.0.0.1:8000/ocpi/versions"
    assert body["data"]["roles"][0] == {
        "role": "EMSP",
        "business_details": {"name": "Open eMSP"},
        "party_id": "EMS",
        "country_code": "IN",
    }
    # We read its versions with its token B before answering.
    assert [c["url"] for c in peer.calls[:2]] == [f"{CPO}/versions", f"{CPO}/2.2.1"]
    partner.refresh_from_db()
    assert partner.state == Partner.State.CONNECTED
    assert partner.outgoing_token == "token-b-from-cpo"
    assert partner.incoming_token_hash == hash_token(token_c)
    assert token_c not in (partner.incoming_token_hash, partner.token_a_hash)  # stored hashed only
    # Token A is spent; token C works.
    assert OcpiTestClient(token_a).get("/ocpi/versions").status_code == 401
    assert OcpiTestClient(token_c).get("/ocpi/emsp/2.2.1/tokens").status_code == 200


def test_a_second_post_is_405(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    _, token_a = waiting_partner
    script_cpo(peer)
    token_c = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS).json()["data"]["token"]
    response = OcpiTestClient(token_c).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS)
    assert response.status_code == 405


def test_put_and_delete_before_post_are_405(waiting_partner: tuple[Partner, str]) -> None:
    _, token_a = waiting_partner
    assert OcpiTestClient(token_a).put("/ocpi/2.2.1/credentials", CPO_CREDENTIALS).status_code == 405
    assert OcpiTestClient(token_a).delete("/ocpi/2.2.1/credentials").status_code == 405


def test_put_rotates_the_tokens(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    partner, token_a = waiting_partner
    script_cpo(peer)
    token_c = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS).json()["data"]["token"]
    response = OcpiTestClient(token_c).put("/ocpi/2.2.1/credentials", {**CPO_CREDENTIALS, "token": "new-token-b"})
    new_c = response.json()["data"]["token"]
    assert new_c != token_c
    partner.refresh_from_db()
    assert partner.outgoing_token == "new-token-b"
    assert OcpiTestClient(token_c).get("/ocpi/versions").status_code == 401
    assert OcpiTestClient(new_c).get("/ocpi/versions").status_code == 200


def test_delete_unregisters_and_stops_jobs(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    partner, token_a = waiting_partner
    script_cpo(peer)
    token_c = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS).json()["data"]["token"]
    assert OcpiTestClient(token_c).delete("/ocpi/2.2.1/credentials").json()["status_code"] == 1000
    partner.refresh_from_db()
    assert partner.state == Partner.State.UNREGISTERED
    assert not partner.sync_enabled
    assert OcpiTestClient(token_c).get("/ocpi/versions").status_code == 401


def test_an_unreachable_versions_url_is_3001(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    partner, token_a = waiting_partner
    response = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS)
    assert response.json()["status_code"] == 3001
    partner.refresh_from_db()
    assert partner.state != Partner.State.CONNECTED


def test_missing_required_modules_is_3003(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    _, token_a = waiting_partner
    script_cpo(peer, modules=["credentials", "tariffs"])
    assert OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS).json()["status_code"] == 3003


def test_a_credentials_object_without_token_is_2001(waiting_partner: tuple[Partner, str]) -> None:
    _, token_a = waiting_partner
    body = {k: v for k, v in CPO_CREDENTIALS.items() if k != "token"}
    assert OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", body).json()["status_code"] == 2001


def test_get_credentials_returns_ours_with_the_callers_token(ocpi: OcpiTestClient) -> None:
    data = ocpi.get("/ocpi/2.2.1/credentials").json()["data"]
    assert data["token"] == "cpo-token-for-us-0001"
    assert data["roles"][0]["role"] == "EMSP"


def test_ocpi_token_a_command_prints_a_working_token(db: None, capsys: Any) -> None:
    call_command("ocpi_token_a", "IN*NEW", "--create", "New CPO")
    out = capsys.readouterr().out
    token = out.split("token A:")[1].strip()
    assert OcpiTestClient(token).get("/ocpi/versions").status_code == 200


# -- (a) we register with a CPO -----------------------------------------------------------------


def answer_credentials(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    assert call["json"]["url"] == "http://127.0.0.1:8000/ocpi/versions"
    return 200, envelope({**CPO_CREDENTIALS, "token": "token-c-from-cpo"}), {}


def test_we_register_with_a_cpo_and_store_token_c(peer: FakePeer, db: None) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", answer_credentials)
    partner = register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")
    assert (partner.country_code, partner.party_id) == ("IN", "CPA")
    assert partner.state == Partner.State.CONNECTED
    assert partner.outgoing_token == "token-c-from-cpo"
    token_b = peer.requests_to("/credentials")[0]["json"]["token"]
    assert partner.incoming_token_hash == hash_token(token_b)
    assert partner.endpoint_url("locations", "SENDER") == f"{CPO}/2.2.1/locations"


def test_we_register_again_with_a_cpo_we_were_unregistered_from(peer: FakePeer, db: None) -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA", state=Partner.State.UNREGISTERED, outgoing_token="")
    script_cpo(peer)

    def cpo_checks_our_versions_with_token_b(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        # A real CPO reads our versions with Token B before it answers the POST.
        assert OcpiTestClient(call["json"]["token"]).get("/ocpi/versions").status_code == 200
        return answer_credentials(call)

    peer.route("POST", f"{CPO}/2.2.1/credentials", cpo_checks_our_versions_with_token_b)
    again = register_with_partner(versions_url=f"{CPO}/versions", token_a="new-token-a", partner=partner)
    assert again.pk == partner.pk
    assert again.state == Partner.State.CONNECTED
    assert again.outgoing_token == "token-c-from-cpo"


def test_a_refused_registration_leaves_an_unregistered_partner_unregistered(peer: FakePeer, db: None) -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA", state=Partner.State.UNREGISTERED, outgoing_token="")
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope(None, status_code=3001)))
    with pytest.raises(RegistrationError):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="new-token-a", partner=partner)
    partner.refresh_from_db()
    assert partner.state == Partner.State.UNREGISTERED


def test_we_retry_with_a_raw_token_when_base64_is_refused(peer: FakePeer, db: None) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", answer_credentials)
    peer.only_encoding = "raw"
    peer.refusal_status = 403  # a real quirk: 403 where 401 is due
    partner = register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")
    assert partner.outgoing_token_base64 is False
    assert peer.requests_to("/credentials")[0]["headers"]["Authorization"] == "Token token-a-from-cpo"


def test_we_do_not_post_when_the_cpo_lacks_locations(peer: FakePeer, db: None) -> None:
    script_cpo(peer, modules=["credentials", "tariffs"])
    with pytest.raises(RegistrationError, match="locations"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")
    assert not peer.requests_to("/credentials")


def test_ocpi_register_command_registers_and_pulls(peer: FakePeer, db: None, capsys: Any) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", answer_credentials)
    for module in ("locations", "tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{CPO}/2.2.1/{module}", (200, envelope([])))
    call_command("ocpi_register", "--versions-url", f"{CPO}/versions", "--token-a", "token-a-from-cpo")
    out = capsys.readouterr().out
    assert "Registered with" in out
    assert "pulled locations" in out
    assert Partner.objects.get(party_id="CPA").state == Partner.State.CONNECTED


def test_our_tokens_are_pushed_to_a_newly_connected_cpo(peer: FakePeer, db: None) -> None:
    from ocpi.models import PushDelivery
    from tests.factories import TokenFactory

    tokens = [TokenFactory(), TokenFactory()]
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", answer_credentials)
    for token in tokens:
        peer.route("PUT", f"{CPO}/2.2.1/tokens/IN/EMS/{token.uid}", (200, envelope()))
    partner = register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")
    assert PushDelivery.objects.filter(partner=partner).count() == 2
    from emsp import outbox

    for delivery in PushDelivery.objects.filter(partner=partner):
        outbox.deliver(delivery.pk)
    assert PushDelivery.objects.filter(partner=partner, status="DELIVERED").count() == 2
    assert {c["json"]["uid"] for c in peer.requests_to("/tokens/")} == {t.uid for t in tokens}


def test_the_message_log_never_keeps_a_credentials_token(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    from ocpi.models import OcpiMessage

    _, token_a = waiting_partner
    script_cpo(peer)
    token_c = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS).json()["data"]["token"]
    logged = " ".join(m.request_body + m.response_body for m in OcpiMessage.objects.filter(module="credentials"))
    assert "[redacted]" in logged
    assert token_c not in logged
    assert CPO_CREDENTIALS["token"] not in logged
