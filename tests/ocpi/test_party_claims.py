"""Parties a partner claims and was not granted: recorded for staff, but never without end; and a partner page
with more further parties than a form can carry still saves, the parties kept on their own list."""

from __future__ import annotations

from itertools import islice, product
from string import ascii_uppercase

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from emsp.models import Location, Partner, PartnerParty, StaffAction
from emsp.services.catalogue import locations_store
from emsp.services.partners import MAX_PENDING_CLAIMS, partner_parties_claimed
from ocpi.admin import INLINE_PARTIES_MAX
from ocpi.credentials import MAX_CREDENTIALS_ROLES
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory, ocpi_location
from tests.fakes import FakePeer
from tests.ocpi.test_credentials import CPO, script_cpo

pytestmark = pytest.mark.django_db


def parties(count: int, *, skip: int = 0) -> list[tuple[str, str]]:
    letters = ("".join(p) for p in product(ascii_uppercase, repeat=3))
    return [("NL", pid) for pid in islice(letters, skip, skip + count)]


@pytest.fixture
def claimant(db: None) -> tuple[Partner, str]:
    partner = PartnerFactory(
        country_code="IN", party_id="ATK", state=Partner.State.NEW, outgoing_token="", endpoints=[]
    )
    token_a = partner.issue_token_a()
    partner.save()
    return partner, token_a


def credentials_claiming(claimed: list[tuple[str, str]]) -> dict[str, object]:
    roles = [{"role": "CPO", "country_code": "IN", "party_id": "ATK", "business_details": {"name": "ATK"}}]
    roles += [{"role": "CPO", "country_code": cc, "party_id": pid} for cc, pid in claimed]
    return {"token": "tok-b", "url": f"{CPO}/versions", "roles": roles}


def requested(partner: Partner) -> int:
    return PartnerParty.objects.filter(partner=partner, status=PartnerParty.Status.REQUESTED).count()


def test_credentials_with_more_roles_than_any_platform_are_refused_before_any_claim_is_recorded(
    peer: FakePeer, claimant: tuple[Partner, str]
) -> None:
    partner, token_a = claimant
    script_cpo(peer)
    response = OcpiTestClient(token_a).post(
        "/ocpi/2.2.1/credentials", credentials_claiming(parties(MAX_CREDENTIALS_ROLES + 5))
    )
    assert response.json()["status_code"] == 2001
    assert "roles" in response.json()["status_message"]
    assert requested(partner) == 0


def test_claims_refused_again_and_again_fill_the_staff_queue_no_further_than_its_bound(
    peer: FakePeer, claimant: tuple[Partner, str], caplog: pytest.LogCaptureFixture
) -> None:
    partner, token_a = claimant
    script_cpo(peer)
    client = OcpiTestClient(token_a)
    for round_ in range(3):  # a refused request spends no Token A: it may come again with other parties
        response = client.post("/ocpi/2.2.1/credentials", credentials_claiming(parties(150, skip=150 * round_)))
        assert response.json()["status_code"] == 2001
    assert requested(partner) == MAX_PENDING_CLAIMS
    claims = [r for r in caplog.records if "claimed" in r.getMessage()]
    assert len(claims) == 3  # one line a request, not one a party
    assert "not recorded" in claims[-1].getMessage()
    partner.refresh_from_db()
    assert partner.token_a_hash  # still refused, Token A still unspent


def test_a_claim_already_recorded_is_recorded_once(claimant: tuple[Partner, str]) -> None:
    partner, _ = claimant
    claimed = parties(3)
    assert partner_parties_claimed(partner, claimed + claimed) == claimed + claimed
    assert partner_parties_claimed(partner, [("nl", "aaa")]) == [("nl", "aaa")]
    assert requested(partner) == 3


@pytest.fixture
def staff() -> Client:
    user = get_user_model().objects.create_superuser("staff", "staff@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def test_a_partner_page_with_more_further_parties_than_a_form_carries_still_saves(
    staff: Client, claimant: tuple[Partner, str]
) -> None:
    partner, _ = claimant
    PartnerParty.objects.bulk_create(
        PartnerParty(partner=partner, country_code=cc, party_id=pid, status=PartnerParty.Status.REQUESTED)
        for cc, pid in parties(300)
    )
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    page = staff.get(url)
    assert page.status_code == 200
    body = page.content.decode()
    assert "parties-TOTAL_FORMS" not in body  # no inline
    assert "0 granted, 300 claimed and waiting" in body
    assert f"?partner__id__exact={partner.pk}&amp;own__exact=0" in body
    form = page.context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    data.update(name="Renamed", sync_enabled="on" if partner.sync_enabled else "")
    response = staff.post(url, data)
    assert response.status_code == 302, response.content[:500]
    partner.refresh_from_db()
    assert partner.name == "Renamed"


def test_a_partner_page_with_a_few_further_parties_keeps_them_inline(
    staff: Client, claimant: tuple[Partner, str]
) -> None:
    partner, _ = claimant
    partner_parties_claimed(partner, parties(INLINE_PARTIES_MAX))
    body = staff.get(reverse("admin:emsp_partner_change", args=[partner.pk])).content.decode()
    assert "parties-TOTAL_FORMS" in body


def test_staff_grant_claims_from_the_parties_list_and_the_party_brings_its_chargers(
    staff: Client, claimant: tuple[Partner, str]
) -> None:
    partner, _ = claimant
    other = PartnerFactory(country_code="DE", party_id="OTH")
    # A charger of NL*AAA stored under another connection (it held the party before), and NL*AAB held elsewhere.
    locations_store(other, [ocpi_location("NL", "AAA", "LOC-NL")])
    location = Location.objects.get(location_id="LOC-NL")
    PartnerParty.objects.create(partner=other, country_code="NL", party_id="AAB", status=PartnerParty.Status.GRANTED)
    partner_parties_claimed(partner, parties(2))
    mine = PartnerParty.objects.filter(partner=partner, status=PartnerParty.Status.REQUESTED)
    changelist = reverse("admin:emsp_partnerparty_changelist")
    assert staff.get(changelist, {"partner__id__exact": partner.pk}).status_code == 200
    response = staff.post(
        changelist,
        {"action": "grant_selected", "_selected_action": [str(pk) for pk in mine.values_list("pk", flat=True)]},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    assert "1 party granted." in shown
    assert any("NL*AAB" in m and "another connection" in m for m in shown)
    statuses = dict(PartnerParty.objects.filter(partner=partner, own=False).values_list("party_id", "status"))
    assert statuses == {"AAA": "GRANTED", "AAB": "REQUESTED"}
    assert Location.objects.get(pk=location.pk).partner_id == partner.pk
    action = StaffAction.objects.get(verb="grant_party")
    assert action.details["moved"] == {"locations": 1, "tariffs": 0}
    assert action.details["was"] == "REQUESTED"


def test_staff_remove_parties_from_the_list_and_each_removal_is_recorded(
    staff: Client, claimant: tuple[Partner, str]
) -> None:
    partner, _ = claimant
    partner_parties_claimed(partner, parties(3))
    pks = list(PartnerParty.objects.filter(partner=partner, own=False).values_list("pk", flat=True))
    own = PartnerParty.objects.get(partner=partner, own=True).pk
    staff.post(
        reverse("admin:emsp_partnerparty_changelist"),
        {"action": "remove_selected", "_selected_action": [str(pk) for pk in [*pks, own]]},
    )
    assert not PartnerParty.objects.filter(pk__in=pks).exists()
    assert StaffAction.objects.filter(verb="remove_party").count() == 3
    assert PartnerParty.objects.filter(pk=own).exists()  # its own party is set on its page, never removed here


def test_a_party_row_edited_to_a_party_its_partner_already_has_is_a_form_error(staff: Client) -> None:
    hub = PartnerFactory(country_code="NL", party_id="HUB", role=Partner.Role.HUB)
    typo = PartnerParty.objects.create(partner=hub, country_code="IN", party_id="CPX", status="GRANTED")
    PartnerParty.objects.create(partner=hub, country_code="IN", party_id="CPC", status="REQUESTED")
    response = staff.post(
        reverse("admin:emsp_partnerparty_change", args=[typo.pk]),
        {"country_code": "IN", "party_id": "cpc", "status": "GRANTED"},
    )
    assert response.status_code == 200  # the form again, with the error
    assert "already a party of this partner" in response.content.decode()
    assert PartnerParty.objects.get(pk=typo.pk).party_id == "CPX"


def test_saving_an_own_partys_read_only_page_records_no_grant(staff: Client, claimant: tuple[Partner, str]) -> None:
    partner, _ = claimant
    own = PartnerParty.objects.get(partner=partner, own=True)
    response = staff.post(reverse("admin:emsp_partnerparty_change", args=[own.pk]), {})
    assert response.status_code == 302
    assert not StaffAction.objects.filter(verb__in=("grant_party", "change_party")).exists()


def test_an_own_party_is_not_deleted_on_its_own(staff: Client, claimant: tuple[Partner, str]) -> None:
    partner, _ = claimant
    own = PartnerParty.objects.get(partner=partner, own=True)
    response = staff.post(reverse("admin:emsp_partnerparty_delete", args=[own.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert PartnerParty.objects.filter(pk=own.pk).exists()
