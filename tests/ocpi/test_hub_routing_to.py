"""What a hub delivers to us is addressed to us (transport §"Party to Party via Hub": "Direct request | Hub to
receiving platform | TO = Receiving-party"): a message whose `OCPI-to-*` names another party is refused as
for an unknown receiver, nothing stored and no token of ours answered for it; without `OCPI-to-*` it is ours;
a direct CPO's stray `OCPI-to-*` is not refused (lenient in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from emsp.models import ChargingSession, Partner, hash_token
from emsp.services.catalogue import locations_store
from emsp.services.partners import partner_party_grant
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory, TokenFactory, ocpi_location

pytestmark = pytest.mark.django_db

HUB_TOKEN = "token-the-hub-sends-us-routing"
SESSION = "/ocpi/emsp/2.2.1/sessions/IN/CPA/S1"


@pytest.fixture
def hub(db: None) -> Partner:
    """The hub NL*HUB with the CPO IN*CPA granted behind it, whose location LOC-A we know."""
    partner = PartnerFactory(
        country_code="NL", party_id="HUB", role=Partner.Role.HUB, incoming_token_hash=hash_token(HUB_TOKEN)
    )
    partner_party_grant(partner=partner, country_code="IN", party_id="CPA", by="staff")
    partner = Partner.objects.get(pk=partner.pk)
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC-A")])
    return partner


def routed(to: tuple[str, str] | None, sender: tuple[str, str] = ("IN", "CPA")) -> dict[str, str]:
    headers = {"OCPI-from-country-code": sender[0], "OCPI-from-party-id": sender[1]}
    if to is not None:
        headers.update({"OCPI-to-country-code": to[0], "OCPI-to-party-id": to[1]})
    return headers


def session(token_party: tuple[str, str] = ("IN", "EMS")) -> dict[str, Any]:
    return {
        "country_code": "IN",
        "party_id": "CPA",
        "id": "S1",
        "start_date_time": "2026-01-01T10:00:00Z",
        "kwh": 1,
        "cdr_token": {
            "uid": "T1",
            "type": "RFID",
            "contract_id": "C1",
            "country_code": token_party[0],
            "party_id": token_party[1],
        },
        "auth_method": "WHITELIST",
        "location_id": "LOC-A",
        "evse_uid": "LOC-A-E1",
        "connector_id": "1",
        "currency": "INR",
        "status": "ACTIVE",
        "last_updated": "2026-01-01T10:00:00Z",
    }


def test_a_session_a_hub_addresses_to_another_party_is_refused_and_not_stored(hub: Partner) -> None:
    response = OcpiTestClient(HUB_TOKEN).put(SESSION, session(("DE", "OTH")), headers=routed(("DE", "OTH")))

    assert (response.status_code, response.json()["status_code"]) == (404, 2000)
    assert "DE*OTH" in response.json()["status_message"]
    assert not ChargingSession.objects.exists()
    # The refusal goes back to the party that sent it, from us.
    assert (response["OCPI-to-country-code"], response["OCPI-to-party-id"]) == ("IN", "CPA")
    assert (response["OCPI-from-country-code"], response["OCPI-from-party-id"]) == ("IN", "EMS")


def test_an_authorization_a_hub_addresses_to_another_party_is_not_answered_with_our_token(hub: Partner) -> None:
    TokenFactory(uid="T1")  # our card shares the uid of the other eMSP's card

    response = OcpiTestClient(HUB_TOKEN).post(
        "/ocpi/emsp/2.2.1/tokens/T1/authorize?type=RFID", None, headers=routed(("DE", "OTH"))
    )

    assert (response.status_code, response.json()["status_code"]) == (404, 2000)
    assert "data" not in response.json()


@pytest.mark.parametrize(
    "to",
    [
        ("IN", "EMS"),
        ("in", "ems"),  # CiString: case-insensitive
        None,  # routing headers need not be in every request
        ("", ""),
    ],
)
def test_a_session_a_hub_addresses_to_us_or_to_no_one_is_ours(hub: Partner, to: tuple[str, str] | None) -> None:
    response = OcpiTestClient(HUB_TOKEN).put(SESSION, session(), headers=routed(to))

    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    assert ChargingSession.objects.get().session_id == "S1"


def test_a_broadcast_addressed_to_the_hub_itself_is_taken(hub: Partner) -> None:
    """transport §"Broadcast Push": the sender "uses the party-id and country-code of the Hub in the 'OCPI-to-'
    headers"; a hub passing that on unchanged has misrouted nothing."""
    location = ocpi_location("IN", "CPA", "LOC-B")
    response = OcpiTestClient(HUB_TOKEN).put(
        "/ocpi/emsp/2.2.1/locations/IN/CPA/LOC-B", location, headers=routed(("NL", "HUB"))
    )

    assert (response.status_code, response.json()["status_code"]) == (201, 1000)


def test_a_hub_naming_only_half_a_receiver_is_taken_as_ours(hub: Partner) -> None:
    headers = {**routed(None), "OCPI-to-party-id": "OTH"}

    response = OcpiTestClient(HUB_TOKEN).put(SESSION, session(), headers=headers)

    assert response.json()["status_code"] == 1000


def test_a_direct_cpos_stray_to_header_is_not_refused(client_for: Callable[..., OcpiTestClient]) -> None:
    cpo = client_for("IN", "CPA")
    locations_store(Partner.objects.get(party_id="CPA"), [ocpi_location("IN", "CPA", "LOC-A")])

    response = cpo.put(SESSION, session(), headers=routed(("DE", "OTH")))

    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    assert response["OCPI-to-party-id"] == "CPA"
