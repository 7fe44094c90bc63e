"""A partner's page in the console saves what staff changed on it, and only that. What is held:

- a Save racing an unregister (or a credentials rotation) leaves the partner unregistered: the state, the token
  hash and the token we send are not written back as the request loaded them (PostgreSQL, and the same
  interleaving in one connection on both databases);
- the fields staff changed are saved, a changed party still moves the partner's own party row (Partner.save's
  handling of it), and adding a partner on the add page still makes it with its own party;
- the other way round, what an unregister (the console's action, which tells the partner over HTTP first, or the
  partner's own DELETE), a Token A issued from the list, or a registration we start writes is only what it sets:
  a party move, a rename or a contact saved on the page meanwhile stands;
- a party the page may not take (granted to another connection, another partner's in another case) is a form
  error, not the database's refusal reported as a save made at the same moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from emsp.models import Partner, PartnerParty, StaffAction, hash_token
from ocpi import credentials
from ocpi.admin import PartnerAdmin
from tests.billing.test_settlement_review_fixes import _run, needs_postgres
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory
from tests.fakes import FakePeer, envelope
from tests.ocpi.test_credentials import CPO, CPO_CREDENTIALS, script_cpo


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


# -- what the partner's credentials actions write: only what they set ----------------------------------------------


@pytest.fixture
def admin_b(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("admin-b", "b@example.com", "pw-123456-x"))
    return client


def _moved_to_cpz_on_the_page(admin: Client, pk: int) -> None:
    """Another admin saves the partner's page: its party CPA -> CPZ, renamed."""
    url = reverse("admin:emsp_partner_change", args=[pk])
    response = admin.post(url, _page(Partner.objects.get(pk=pk), party_id="CPZ", name="CPO Z"))
    assert response.status_code == 302, response.content.decode()[:3000]


def _assert_unregistered_as_cpz(partner: Partner) -> None:
    partner.refresh_from_db()
    own = PartnerParty.objects.get(partner=partner, own=True)
    assert (partner.state, partner.incoming_token_hash, partner.outgoing_token) == (Partner.State.UNREGISTERED, "", "")
    assert (partner.party_id, own.party_id, partner.name) == ("CPZ", "CPZ", "CPO Z")


@pytest.mark.django_db
def test_the_unregister_action_keeps_a_party_move_saved_while_it_told_the_partner(
    admin_a: Client, admin_b: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The action loads the partner, then tells it over HTTP outside any transaction. Before, unregister then saved
    that object whole: the party moved back to CPA (its own party row with it) and the old name came back."""
    partner = _connected()
    monkeypatch.setattr(credentials.transport, "forget_cached_tokens", lambda: None)

    def b_saves_while_a_tells(p: Partner) -> str:
        _moved_to_cpz_on_the_page(admin_b, p.pk)
        return "told"

    monkeypatch.setattr(credentials, "tell_partner_unregistered", b_saves_while_a_tells)
    response = admin_a.post(
        reverse("admin:emsp_partner_changelist"), {"action": "unregister", "_selected_action": [partner.pk]}
    )
    assert response.status_code == 302

    _assert_unregistered_as_cpz(partner)
    record = StaffAction.objects.get(verb="unregister")
    assert record.details["was"] == Partner.State.CONNECTED
    assert "IN*CPZ" in record.object_repr  # the partner as it is, not as the list loaded it


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_the_unregister_action_keeps_a_party_move_committed_in_another_connection(
    admin_a: Client, admin_b: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    partner = _connected()
    monkeypatch.setattr(credentials.transport, "forget_cached_tokens", lambda: None)

    def b_saves_while_a_tells(p: Partner) -> str:
        thread, out = _run(lambda: _moved_to_cpz_on_the_page(admin_b, p.pk))
        thread.join(20)
        assert "error" not in out, out
        return "told"

    monkeypatch.setattr(credentials, "tell_partner_unregistered", b_saves_while_a_tells)
    response = admin_a.post(
        reverse("admin:emsp_partner_changelist"), {"action": "unregister", "_selected_action": [partner.pk]}
    )
    assert response.status_code == 302

    _assert_unregistered_as_cpz(partner)


@pytest.mark.django_db
def test_the_partners_own_delete_keeps_a_party_move_saved_after_its_token_was_checked(
    admin_b: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DELETE's partner is the row its token was checked against: a page saved after that stands."""
    partner = _connected()
    real_forget = credentials.transport.forget_cached_tokens
    saved = []

    def page_saved_first() -> None:  # unregister's first step, before it writes
        if not saved:
            saved.append(True)
            _moved_to_cpz_on_the_page(admin_b, partner.pk)
        real_forget()

    monkeypatch.setattr(credentials.transport, "forget_cached_tokens", page_saved_first)
    response = OcpiTestClient("token-the-cpo-uses").delete("/ocpi/2.2.1/credentials")
    assert response.json()["status_code"] == 1000
    assert saved

    _assert_unregistered_as_cpz(partner)


@pytest.mark.django_db
def test_a_token_a_issued_from_the_list_keeps_a_registration_made_since_the_list_was_loaded(
    admin_a: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the listed object was saved whole: the partner that had just registered was written back NEW, then
    TOKEN_A_ISSUED, without the tokens of its connection (its calls refused, ours sent with no token)."""
    partner = PartnerFactory(name="CPO A", country_code="IN", party_id="CPA", state=Partner.State.NEW)
    real_action = PartnerAdmin.issue_token_a

    @admin.action(description="Issue a new Token A", permissions=["change"])
    def registered_after_listing(self: Any, request: Any, queryset: Any) -> None:
        listed = list(queryset)
        Partner.objects.filter(pk=partner.pk).update(
            state=Partner.State.CONNECTED,
            incoming_token_hash=hash_token("token-c"),
            outgoing_token="token-b-from-cpo",
            name="CPO A (registered)",
        )
        real_action(self, request, listed)

    monkeypatch.setattr(PartnerAdmin, "issue_token_a", registered_after_listing)
    response = admin_a.post(
        reverse("admin:emsp_partner_changelist"), {"action": "issue_token_a", "_selected_action": [partner.pk]}
    )
    assert response.status_code == 302

    partner.refresh_from_db()
    assert (partner.state, partner.incoming_token_hash, partner.outgoing_token, partner.name) == (
        Partner.State.CONNECTED,
        hash_token("token-c"),
        "token-b-from-cpo",
        "CPO A (registered)",
    )
    assert partner.token_a_hash  # the Token A was issued
    assert StaffAction.objects.get(verb="issue_token_a").details == {"state": Partner.State.CONNECTED}


@pytest.mark.django_db
def test_a_registration_we_start_keeps_a_page_saved_while_the_cpo_answered(admin_b: Client, peer: FakePeer) -> None:
    """register_with_partner with a partner staff set up: its row was loaded before the CPO's versions were read
    and our POST answered. Before, it was saved whole after the POST: the rename and contact saved meanwhile went."""
    partner = PartnerFactory(name="CPO A", country_code="IN", party_id="CPA", state=Partner.State.UNREGISTERED)
    script_cpo(peer)

    def page_saved_while_the_cpo_answers(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        url = reverse("admin:emsp_partner_change", args=[partner.pk])
        page = _page(Partner.objects.get(pk=partner.pk), name="CPO A (north)", support_email="ops@cpo.example")
        response = admin_b.post(url, page)
        assert response.status_code == 302, response.content.decode()[:3000]
        return 200, envelope({**CPO_CREDENTIALS, "token": "token-c-from-cpo"}), {}

    peer.route("POST", f"{CPO}/2.2.1/credentials", page_saved_while_the_cpo_answers)
    registered = credentials.register_with_partner(versions_url=f"{CPO}/versions", token_a="new-a", partner=partner)

    partner.refresh_from_db()
    assert registered.pk == partner.pk
    assert (partner.state, partner.outgoing_token) == (Partner.State.CONNECTED, "token-c-from-cpo")
    assert (partner.name, partner.support_email) == ("CPO A (north)", "ops@cpo.example")


# -- a party the page may not take ---------------------------------------------------------------------------------


def _refused_on_the_page(admin: Client, partner: Partner, party_id: str) -> str:
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    response = admin.post(url, _page(partner, party_id=party_id))
    # The form again, with the error on the field: not the database's refusal (a redirect saying another save
    # was made at the same moment).
    assert response.status_code == 200, response.status_code
    errors = response.context["adminform"].form.errors
    partner.refresh_from_db()
    assert (partner.party_id, PartnerParty.objects.get(partner=partner, own=True).party_id) == ("CPA", "CPA")
    assert not StaffAction.objects.filter(verb="change").exists()
    return " ".join(errors.get("party_id", []))


@pytest.mark.django_db
def test_a_party_granted_to_another_connection_is_refused_on_the_page(admin_a: Client) -> None:
    partner = _connected()
    hub = PartnerFactory(name="Hub", country_code="IN", party_id="HUB", role=Partner.Role.HUB)
    PartnerParty.objects.create(partner=hub, country_code="IN", party_id="CPZ", status=PartnerParty.Status.GRANTED)

    assert "IN*CPZ is granted to Hub (IN*HUB)" in _refused_on_the_page(admin_a, partner, "cpz")


@pytest.mark.django_db
def test_another_partners_party_typed_in_another_case_is_refused_on_the_page(admin_a: Client) -> None:
    partner = _connected()
    PartnerFactory(name="Other", country_code="IN", party_id="CPZ")

    assert "IN*CPZ is granted to Other (IN*CPZ)" in _refused_on_the_page(admin_a, partner, "cpz")


@pytest.mark.django_db
def test_a_party_the_partner_holds_as_a_further_party_may_become_its_own(admin_a: Client) -> None:
    partner = _connected()
    PartnerParty.objects.create(partner=partner, country_code="IN", party_id="CPZ", status=PartnerParty.Status.GRANTED)
    url = reverse("admin:emsp_partner_change", args=[partner.pk])
    response = admin_a.post(url, _page(partner, party_id="cpz"))
    assert response.status_code == 302, response.content.decode()[:3000]

    partner.refresh_from_db()
    assert partner.party_id == "CPZ"
    assert list(PartnerParty.objects.filter(partner=partner).values_list("party_id", "own")) == [("CPZ", True)]
