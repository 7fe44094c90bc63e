"""What a CPO hears of our tokens says what real-time authorization would: a token blocked, its driver blocked,
expired, or restricted to other partners is sent as not valid, in the list, in pushes and in the authorization
answer; a change to any of these reaches every CPO (mod_tokens, Push: "Any changes to Token in the eMSP system
are sent to the CPO system"). A CPO that whitelists (ALLOWED, our default) never asks us, so this is all it has."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from emsp.models import Partner, Token
from emsp.services.tokens import driver_tokens_changed, token_changed, token_issue, tokens_expired_push
from ocpi.models import PushDelivery
from ocpi.push import send_push
from tests.conftest import OcpiTestClient
from tests.factories import DriverFactory, PartnerFactory, TokenFactory
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

LIST = "/ocpi/emsp/2.2.1/tokens"
CPO_TOKENS = "http://127.0.0.1:9/ocpi/cpo/2.2.1/tokens"  # tests/factories.py PartnerFactory


def listed(ocpi: OcpiTestClient) -> dict[str, bool]:
    response = ocpi.get(LIST)
    assert response.status_code == 200
    return {t["uid"]: t["valid"] for t in response.json()["data"]}


def test_the_list_says_not_valid_where_authorization_would_refuse(ocpi: OcpiTestClient, partner: Partner) -> None:
    other = PartnerFactory()
    fine = TokenFactory(uid="FINE0001")
    TokenFactory(uid="DRIVERBLOCKED", driver=DriverFactory(is_blocked=True))
    TokenFactory(uid="EXPIRED0001", expires_at=timezone.now() - timedelta(minutes=1))
    TokenFactory(uid="LATER0001", expires_at=timezone.now() + timedelta(days=1))
    elsewhere = TokenFactory(uid="ELSEWHERE01")
    elsewhere.allowed_partners.add(other)
    here = TokenFactory(uid="HERE0001")
    here.allowed_partners.add(partner)

    assert listed(ocpi) == {
        fine.uid: True,
        "DRIVERBLOCKED": False,
        "EXPIRED0001": False,
        "LATER0001": True,
        "ELSEWHERE01": False,  # to this CPO: the token is restricted to another
        "HERE0001": True,
    }


def test_the_authorization_answer_carries_the_token_as_not_valid_when_refused(ocpi: OcpiTestClient) -> None:
    TokenFactory(uid="DRIVERBLOCKED", driver=DriverFactory(is_blocked=True))
    data = ocpi.post(f"{LIST}/DRIVERBLOCKED/authorize", None).json()["data"]
    assert data["allowed"] == "BLOCKED"
    assert data["token"]["valid"] is False


def pushed(peer: FakePeer) -> list[dict[str, Any]]:
    """Send what is queued, as the outbox does; the bodies the CPOs got."""
    for push in PushDelivery.objects.filter(status="PENDING").order_by("pk"):
        peer.route("PUT", f"{CPO_TOKENS}{push.path.split('?')[0]}", (200, envelope(None)))
        assert send_push(push).delivered
        PushDelivery.objects.filter(pk=push.pk).update(status="DELIVERED")
    return [call["json"] for call in peer.calls if call["method"] == "PUT"]


@pytest.fixture
def cpo(peer: FakePeer) -> Partner:
    return PartnerFactory()


def test_blocking_a_driver_sends_each_of_their_tokens_as_not_valid(peer: FakePeer, cpo: Partner) -> None:
    driver = DriverFactory()
    first, second = token_issue(driver=driver), token_issue(driver=driver)
    assert [t["valid"] for t in pushed(peer)] == [True, True]
    before = Token.objects.get(pk=first.pk).last_updated
    peer.calls.clear()

    driver.is_blocked = True
    driver.save()
    assert driver_tokens_changed(driver=driver) == 2
    bodies = pushed(peer)
    assert sorted(b["uid"] for b in bodies) == sorted([first.uid, second.uid])
    assert [b["valid"] for b in bodies] == [False, False]
    assert Token.objects.get(pk=first.pk).last_updated > before  # a CPO pulling by date_from sees it too


def test_a_token_restricted_to_one_cpo_is_pushed_as_not_valid_to_the_others(peer: FakePeer, cpo: Partner) -> None:
    other = PartnerFactory()
    token = TokenFactory()
    token.allowed_partners.add(cpo)
    token_changed(token=token)
    valid_by_partner = {push.partner_id: push.payload["valid"] for push in PushDelivery.objects.filter(module="tokens")}
    assert valid_by_partner == {cpo.pk: True, other.pk: False}


def test_a_token_that_expires_is_sent_as_not_valid_once(peer: FakePeer, cpo: Partner) -> None:
    token = token_issue(driver=DriverFactory(), expires_at=timezone.now() + timedelta(hours=1))
    assert [t["valid"] for t in pushed(peer)] == [True]
    peer.calls.clear()
    assert tokens_expired_push() == 0  # not yet

    now = timezone.now()  # two hours on: issued then, expired a minute ago
    Token.objects.filter(pk=token.pk).update(
        last_updated=now - timedelta(hours=2), expires_at=now - timedelta(minutes=1)
    )
    assert tokens_expired_push() == 1
    assert [(b["uid"], b["valid"]) for b in pushed(peer)] == [(token.uid, False)]
    assert tokens_expired_push() == 0  # sent once
