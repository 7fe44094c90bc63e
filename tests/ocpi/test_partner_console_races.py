"""A partner's page in the console saves what staff changed on it, and only that. What is held:

- a Save racing an unregister (or a credentials rotation) leaves the partner unregistered: the state, the token
  hash and the token we send are not written back as the request loaded them (PostgreSQL, and the same
  interleaving in one connection on both databases);
- the fields staff changed are saved, a changed party still moves the partner's own party row (Partner.save's
  handling of it), and adding a partner on the add page still makes it with its own party.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from emsp.models import Partner, PartnerParty, StaffAction, hash_token
from ocpi import credentials
from ocpi.admin import PartnerAdmin
from tests.billing.test_settlement_review_fixes import _run, needs_postgres
from tests.factories import PartnerFactory


@pytest.fixture
def admin_a(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin-a", "a@example.com", "pw-123456-x"))
    return client


def _page(partner: Partner, **fields: Any) -> dict[str, Any]:
    """The partner's page as staff post it, with `fields` changed."""
    return {
        "name": partner.name,
        "country_code": partner.country_code,
        "party_id": partner.party_id,
        "role": partner.role,
        "outgoing_token_base64": "on" if partner.outgoing_token_base64 else "",
        "sync_enabled": "on" if partner.sync_enabled else "",
        "sync_interval_minutes": partner.sync_interval_minutes,
        "full_sync_interval_hours": partner.full_sync_interval_hours,
        "support_email": partner.support_email,
        "parties-TOTAL_FORMS": 0,
        "parties-INITIAL_FORMS": 0,
        "parties-MIN_NUM_FORMS": 0,
        "parties-MAX_NUM_FORMS": 1000,
        **fields,
    }


def _connected() -> Partner:
    return PartnerFactory(
        name="CPO A",
        country_code="IN",
        party_id="CPA",
        state=Partner.State.CONNECTED,
        incoming_token_hash=hash_token("token-the-cpo-uses"),
        outgoing_token="token-we-use",
    )


def _unregistered_first(monkeypatch: pytest.MonkeyPatch, unregister: Callable[[int], None]) -> None:
    """Another admin unregisters the partner while this page's Save is in flight: after the request loaded the
    partner and validated the form, before it saves."""
    monkeypatch.setattr(credentials.transport, "forget_cached_tokens", lambda: None)
    real_save = PartnerAdmin.save_model

    def unregistered_then_saved(self: Any, request: Any, obj: Partner, form: Any, change: bool) -> None:
        unregister(obj.pk)
        real_save(self, request, obj, form, change)

    monkeypatch.setattr(PartnerAdmin, "save_model", unregistered_then_saved)


def _assert_unregistered_with_the_change(partner: Partner) -> None:
    partner.refresh_from_db()
    # No token of theirs is accepted any more, nothing is sent to them; the page's change is saved.
    assert (partner.state, partner.incoming_token_hash, partner.outgoing_token) == (
        Partner.State.UNREGISTERED,
        "",
        "",
    ), (partner.state, partner.incoming_token_hash[:6], bool(partner.outgoing_token))
    assert partner.support_email == "ops@cpo.example"
    assert StaffAction.objects.get(verb="change").details["changed"]["support_email"][1] == "ops@cpo.example"


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_partner_save_racing_an_unregister_leaves_it_unregistered(
    admin_a: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unregister commits in another connection. Before, the Save wrote every column back as its request
    had loaded them: CONNECTED again, with the old tokens."""
    partner = _connected()

    def in_another_connection(pk: int) -> None:
        thread, out = _run(lambda: credentials.unregister(Partner.objects.get(pk=pk)))
        thread.join(20)
        assert "error" not in out, out

    _unregistered_first(monkeypatch, in_another_connection)
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    response = admin_a.post(url, _page(partner, support_email="ops@cpo.example"))
    assert response.status_code == 302, response.content.decode()[:3000]

    _assert_unregistered_with_the_change(partner)


@pytest.mark.django_db
def test_a_partner_save_after_an_unregister_it_did_not_see_leaves_it_unregistered(
    admin_a: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same interleaving in the request's own connection (SQLite has one writer at a time)."""
    partner = _connected()
    _unregistered_first(monkeypatch, lambda pk: credentials.unregister(Partner.objects.get(pk=pk)))
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    response = admin_a.post(url, _page(partner, support_email="ops@cpo.example"))
    assert response.status_code == 302, response.content.decode()[:3000]

    _assert_unregistered_with_the_change(partner)


@pytest.mark.django_db
def test_a_partner_save_after_a_rotation_it_did_not_see_keeps_the_new_tokens(
    admin_a: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation that committed after the page's request loaded the partner: its new tokens stay."""
    partner = _connected()
    real_save = PartnerAdmin.save_model

    def rotated_then_saved(self: Any, request: Any, obj: Partner, form: Any, change: bool) -> None:
        Partner.objects.filter(pk=obj.pk).update(incoming_token_hash=hash_token("new-in"))
        rotated = Partner.objects.get(pk=obj.pk)
        rotated.outgoing_token = "new-out"
        rotated.save(update_fields=["outgoing_token"])
        real_save(self, request, obj, form, change)

    monkeypatch.setattr(PartnerAdmin, "save_model", rotated_then_saved)
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    response = admin_a.post(url, _page(partner, name="CPO A (south)"))
    assert response.status_code == 302, response.content.decode()[:3000]

    partner.refresh_from_db()
    assert (partner.name, partner.incoming_token_hash, partner.outgoing_token) == (
        "CPO A (south)",
        hash_token("new-in"),
        "new-out",
    )
    assert partner.state == Partner.State.CONNECTED


@pytest.mark.django_db
def test_a_party_changed_on_the_page_moves_the_partners_own_party(admin_a: Client) -> None:
    partner = _connected()
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    response = admin_a.post(url, _page(partner, party_id="cpz"))
    assert response.status_code == 302, response.content.decode()[:3000]

    partner.refresh_from_db()
    assert partner.party_id == "CPZ"
    own = PartnerParty.objects.get(partner=partner, own=True)
    assert (own.country_code, own.party_id, own.status) == ("IN", "CPZ", PartnerParty.Status.GRANTED)
    assert partner.state == Partner.State.CONNECTED
    assert partner.outgoing_token == "token-we-use"


@pytest.mark.django_db
def test_a_page_saved_with_nothing_changed_writes_nothing(admin_a: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """Suspended after the request loaded the partner: a Save that changed nothing leaves it suspended."""
    partner = _connected()
    real_save = PartnerAdmin.save_model

    def suspended_then_saved(self: Any, request: Any, obj: Partner, form: Any, change: bool) -> None:
        Partner.objects.filter(pk=obj.pk).update(state=Partner.State.SUSPENDED)
        real_save(self, request, obj, form, change)

    monkeypatch.setattr(PartnerAdmin, "save_model", suspended_then_saved)
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    response = admin_a.post(url, _page(partner))
    assert response.status_code == 302, response.content.decode()[:3000]

    partner.refresh_from_db()
    assert partner.state == Partner.State.SUSPENDED
    assert not StaffAction.objects.filter(verb="change").exists()


@pytest.mark.django_db
def test_a_partner_added_on_the_add_page_is_made_with_its_own_party(admin_a: Client) -> None:
    page = {
        "name": "CPO N",
        "country_code": "in",
        "party_id": "cpn",
        "role": Partner.Role.CPO,
        "outgoing_token_base64": "on",
        "sync_enabled": "on",
        "sync_interval_minutes": 60,
        "full_sync_interval_hours": 24,
        "support_email": "ops@cpn.example",
        "parties-TOTAL_FORMS": 0,
        "parties-INITIAL_FORMS": 0,
        "parties-MIN_NUM_FORMS": 0,
        "parties-MAX_NUM_FORMS": 1000,
    }
    response = admin_a.post(reverse("admin:emsp_partner_add"), page)
    assert response.status_code == 302, response.content.decode()[:3000]

    partner = Partner.objects.get(name="CPO N")
    assert (partner.country_code, partner.party_id, partner.state) == ("IN", "CPN", Partner.State.NEW)
    assert partner.support_email == "ops@cpn.example"
    own = PartnerParty.objects.get(partner=partner, own=True)
    assert (own.country_code, own.party_id, own.status) == ("IN", "CPN", PartnerParty.Status.GRANTED)
    assert StaffAction.objects.get(verb="add").details == {"party": "IN*CPN"}
