"""Staff roles: the admin, ops and finance groups, what each can reach, and that partner credentials stay hidden."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from billing.models import Dispute, Settlement
from emsp import roles
from emsp.models import Partner, hash_token
from tests.billing.dispute_factories import QueueDisputeFactory
from tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

OUTGOING_TOKEN = "outgoing-SECRET-token-value-9f3c"
INCOMING_HASH = hash_token("incoming-secret-token")
TOKEN_A_HASH = hash_token("token-a-secret")


def perm_labels(group: Group) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


@pytest.fixture
def cpo(db: None) -> Partner:
    return PartnerFactory(
        name="Secretive CPO",
        party_id="SEC",
        outgoing_token=OUTGOING_TOKEN,
        incoming_token_hash=INCOMING_HASH,
        token_a_hash=TOKEN_A_HASH,
    )


def changelist(app_model: str) -> str:
    app, model = app_model.split(".")
    return reverse(f"admin:{app}_{model}_changelist")


# -- the groups ----------------------------------------------------------------------------------


def test_the_migration_creates_the_three_groups_with_their_permissions() -> None:
    assert set(Group.objects.values_list("name", flat=True)) >= {"admin", "ops", "finance"}
    assert perm_labels(Group.objects.get(name="ops")) == set(roles.ROLES["ops"])
    assert perm_labels(Group.objects.get(name="finance")) == set(roles.ROLES["finance"])
    assert "emsp.view_partner_credentials" in perm_labels(Group.objects.get(name="admin"))


def test_setup_roles_is_idempotent_and_undoes_changes_by_hand() -> None:
    call_command("setup_roles", stdout=None)
    before = {g.name: perm_labels(g) for g in Group.objects.all()}
    Group.objects.get(name="ops").permissions.add(Permission.objects.get(codename="change_partner"))
    call_command("setup_roles", stdout=None)
    call_command("setup_roles", stdout=None)
    assert {g.name: perm_labels(g) for g in Group.objects.all()} == before
    assert Group.objects.filter(name__in=["admin", "ops", "finance"]).count() == 3


def test_the_admin_group_holds_every_permission() -> None:
    call_command("setup_roles", stdout=None)
    assert Group.objects.get(name="admin").permissions.count() == Permission.objects.count()


def test_setup_roles_fails_loudly_on_an_unknown_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(roles.ROLES, "ops", ("billing.fly_to_the_moon",))
    with pytest.raises(CommandError, match=r"billing\.fly_to_the_moon"):
        call_command("setup_roles", stdout=None)


@pytest.mark.parametrize("group", ["ops", "finance"])
def test_neither_ops_nor_finance_may_change_partners_or_read_credentials(
    login: Callable[[str], Client], group: str
) -> None:
    user = login(group).user  # type: ignore[attr-defined]
    for permission in ("add_partner", "change_partner", "delete_partner", "view_partner_credentials"):
        assert not user.has_perm(f"emsp.{permission}"), permission


def test_finance_exports_and_closes_settlement_and_ops_does_not(login: Callable[[str], Client]) -> None:
    finance, ops = login("finance").user, login("ops").user  # type: ignore[attr-defined]
    for permission in ("view_settlement", "change_settlement", "export_settlement"):
        assert finance.has_perm(f"billing.{permission}")
        assert not ops.has_perm(f"billing.{permission}")
    assert not finance.has_perm("billing.delete_settlement")


def test_ops_works_disputes_and_finance_only_reads_them(login: Callable[[str], Client]) -> None:
    finance, ops = login("finance").user, login("ops").user  # type: ignore[attr-defined]
    assert ops.has_perm("billing.change_dispute") and ops.has_perm("billing.add_disputeevent")
    assert finance.has_perm("billing.view_dispute") and not finance.has_perm("billing.change_dispute")


# -- pages each group reaches (200) and does not (403) -------------------------------------------

OPS_PAGES = (
    "emsp.partner",
    "emsp.location",
    "emsp.evse",
    "emsp.chargingsession",
    "emsp.command",
    "billing.tariff",
    "billing.cdr",
    "billing.cdraudit",
    "billing.dispute",
    "ocpi.ocpimessage",
    "ocpi.dataqualityissue",
    "ocpi.syncrun",
    "ocpi.pushdelivery",
)
OPS_FORBIDDEN = ("emsp.driver", "emsp.token", "emsp.reservation", "billing.partnerterms", "auth.user", "auth.group")
FINANCE_PAGES = (
    "emsp.partner",
    "billing.tariff",
    "billing.cdr",
    "billing.cdraudit",
    "billing.dispute",
    "billing.partnerterms",
)
FINANCE_FORBIDDEN = (
    "emsp.location",
    "emsp.evse",
    "emsp.chargingsession",
    "emsp.command",
    "emsp.driver",
    "emsp.token",
    "ocpi.ocpimessage",
    "ocpi.dataqualityissue",
    "auth.user",
)


@pytest.mark.parametrize(
    ("group", "allowed", "forbidden"),
    [("ops", OPS_PAGES, OPS_FORBIDDEN), ("finance", FINANCE_PAGES, FINANCE_FORBIDDEN)],
)
def test_each_group_reaches_its_pages_and_no_others(
    login: Callable[[str], Client], group: str, allowed: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    client = login(group)
    for page in allowed:
        assert client.get(changelist(page)).status_code == 200, page
    for page in forbidden:
        assert client.get(changelist(page)).status_code == 403, page


def test_the_admin_group_reaches_every_page(login: Callable[[str], Client], cpo: Partner) -> None:
    client = login("admin")
    for page in (*OPS_PAGES, *OPS_FORBIDDEN, *FINANCE_PAGES, *FINANCE_FORBIDDEN):
        assert client.get(changelist(page)).status_code == 200, page
    assert client.get(reverse("admin:emsp_partner_add")).status_code == 200
    assert client.get(reverse("admin:emsp_partner_register")).status_code == 200


@pytest.mark.parametrize(("group", "status"), [("finance", 200), ("ops", 403)])
def test_only_finance_reaches_the_settlement_pages(login: Callable[[str], Client], group: str, status: int) -> None:
    if Settlement not in admin.site._registry:
        pytest.skip("no settlement admin registered yet (billing/admin_settlement.py)")
    assert login(group).get(changelist("billing.settlement")).status_code == status


def test_anonymous_visitors_are_sent_to_the_login_page(db: None) -> None:
    response = Client().get(changelist("billing.dispute"))
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("group", ["ops", "finance"])
def test_neither_group_may_add_register_or_edit_a_partner(
    login: Callable[[str], Client], cpo: Partner, group: str
) -> None:
    client = login(group)
    assert client.get(reverse("admin:emsp_partner_add")).status_code == 403
    assert client.get(reverse("admin:emsp_partner_register")).status_code == 403
    response = client.post(
        reverse("admin:emsp_partner_change", args=[cpo.pk]),
        {"name": "Renamed", "country_code": "IN", "party_id": "SEC", "role": "CPO"},
    )
    assert response.status_code == 403
    cpo.refresh_from_db()
    assert cpo.name == "Secretive CPO"


@pytest.mark.parametrize("action", ["issue_token_a", "unregister"])
@pytest.mark.parametrize("group", ["ops", "finance"])
def test_neither_group_may_run_credential_actions(
    login: Callable[[str], Client], cpo: Partner, group: str, action: str
) -> None:
    response = login(group).post(
        changelist("emsp.partner"), {"action": action, "_selected_action": [cpo.pk]}, follow=True
    )
    assert "Token A for" not in response.content.decode()
    cpo.refresh_from_db()
    assert (cpo.token_a_hash, cpo.state, cpo.outgoing_token) == (TOKEN_A_HASH, Partner.State.CONNECTED, OUTGOING_TOKEN)


# -- partner credentials are never shown to ops or finance ---------------------------------------


def partner_pages(client: Client, partner: Partner) -> list[str]:
    pages = []
    for url in (
        reverse("admin:emsp_partner_change", args=[partner.pk]),
        reverse("admin:emsp_partner_health", args=[partner.pk]),
        changelist("emsp.partner"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        pages.append(response.content.decode())
    return pages


@pytest.mark.parametrize("group", ["ops", "finance"])
def test_ops_and_finance_see_no_token_value_hash_or_credentials_section(
    login: Callable[[str], Client], cpo: Partner, group: str
) -> None:
    for html in partner_pages(login(group), cpo):
        for secret in (OUTGOING_TOKEN, INCOMING_HASH, TOKEN_A_HASH, OUTGOING_TOKEN[-4:]):
            assert secret not in html
        assert "field-credentials_state" not in html


def test_the_admin_group_sees_whether_credentials_are_set_but_not_their_values(
    login: Callable[[str], Client], cpo: Partner
) -> None:
    change, health, _ = partner_pages(login("admin"), cpo)
    assert "field-credentials_state" in change
    assert f"Token we send: set (…{OUTGOING_TOKEN[-4:]})" in change
    assert "Token the partner sends us: set" in change
    assert "Token A: issued, not used yet" in change
    for html in (change, health):
        for secret in (OUTGOING_TOKEN, INCOMING_HASH, TOKEN_A_HASH):
            assert secret not in html


# -- disputes by role ----------------------------------------------------------------------------


def test_ops_resolves_a_dispute_and_is_recorded_as_the_actor(login: Callable[[str], Client]) -> None:
    client = login("ops")
    dispute = QueueDisputeFactory()
    page = client.get(reverse("admin:billing_dispute_change", args=[dispute.pk])).content.decode()
    assert 'id="dispute-actions"' in page
    client.post(reverse("admin:billing_dispute_accept", args=[dispute.pk]))
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.ACCEPTED
    assert dispute.events.get().user == client.user  # type: ignore[attr-defined]


def test_finance_reads_a_dispute_but_cannot_act_on_it(login: Callable[[str], Client]) -> None:
    client = login("finance")
    dispute = QueueDisputeFactory()
    page = client.get(reverse("admin:billing_dispute_change", args=[dispute.pk]))
    assert page.status_code == 200
    assert 'id="dispute-actions"' not in page.content.decode()
    for action, data in (("accept", {}), ("contest", {"contest-note": "x"}), ("credit", {"credit-amount": "0.5"})):
        assert client.post(reverse(f"admin:billing_dispute_{action}", args=[dispute.pk]), data).status_code == 403
    bulk = client.post(changelist("billing.dispute"), {"action": "accept_cpo_amount", "_selected_action": [dispute.pk]})
    assert bulk.status_code in (200, 302)
    dispute.refresh_from_db()
    assert dispute.state == Dispute.State.OPEN
    assert not dispute.events.exists()


# -- every console action checks its permission (issue 11, point 7) --------------------------------------


def action_choices(client: Client, changelist_name: str) -> set[str]:
    """The actions the changelist offers this user."""
    response = client.get(changelist(changelist_name))
    assert response.status_code == 200
    form = response.context["action_form"]  # None when no action is offered at all
    return {name for name, _ in form.fields["action"].choices if name} if form is not None else set()


@pytest.fixture
def queued_pulls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, ...]]:
    from ocpi import tasks

    queued: list[tuple[object, ...]] = []
    monkeypatch.setattr(tasks.sync_partner, "delay", lambda *args: queued.append(args))
    return queued


def test_ops_holds_the_pull_permission_and_finance_does_not(login: Callable[[str], Client]) -> None:
    assert login("ops").user.has_perm(roles.PULL_PARTNER)  # type: ignore[attr-defined]
    assert not login("finance").user.has_perm(roles.PULL_PARTNER)  # type: ignore[attr-defined]


def test_finance_cannot_pull_a_partner_now(
    login: Callable[[str], Client], cpo: Partner, queued_pulls: list[tuple[object, ...]]
) -> None:
    from emsp.models import StaffAction

    client = login("finance")
    assert "pull_full_now" not in action_choices(client, "emsp.partner")
    client.post(changelist("emsp.partner"), {"action": "pull_full_now", "_selected_action": [cpo.pk]}, follow=True)
    assert queued_pulls == []
    assert not StaffAction.objects.exists()


@pytest.mark.parametrize("group", ["ops", "admin"])
def test_ops_and_admin_pull_a_partner_now(
    login: Callable[[str], Client], cpo: Partner, queued_pulls: list[tuple[object, ...]], group: str
) -> None:
    client = login(group)
    assert "pull_full_now" in action_choices(client, "emsp.partner")
    client.post(changelist("emsp.partner"), {"action": "pull_full_now", "_selected_action": [cpo.pk]})
    assert queued_pulls == [(cpo.pk, True)]


def test_ops_is_offered_no_credential_action_on_partners(login: Callable[[str], Client], cpo: Partner) -> None:
    assert action_choices(login("ops"), "emsp.partner") == {"pull_full_now"}
    assert action_choices(login("finance"), "emsp.partner") == set()


def test_only_the_admin_group_reads_the_audit_trail(login: Callable[[str], Client]) -> None:
    assert login("admin").get(changelist("emsp.staffaction")).status_code == 200
    for group in ("ops", "finance"):
        assert login(group).get(changelist("emsp.staffaction")).status_code == 403


@pytest.mark.parametrize("action", ["block", "unblock"])
def test_a_token_reader_without_the_change_permission_cannot_block_or_unblock(db: None, action: str) -> None:
    from emsp.models import Token
    from tests.factories import TokenFactory

    token = TokenFactory(is_blocked=action == "unblock")
    reader = User.objects.create_user("reader", password="pw-123456-x", is_staff=True)
    reader.user_permissions.add(Permission.objects.get(content_type__app_label="emsp", codename="view_token"))
    client = Client()
    client.force_login(reader)
    assert action_choices(client, "emsp.token") == set()
    client.post(changelist("emsp.token"), {"action": action, "_selected_action": [token.pk]})
    assert Token.objects.get(pk=token.pk).is_blocked == (action == "unblock")


def test_the_dispute_actions_are_offered_to_ops_and_not_to_finance(login: Callable[[str], Client]) -> None:
    assert action_choices(login("ops"), "billing.dispute") == {"accept_cpo_amount", "contest"}
    assert action_choices(login("finance"), "billing.dispute") == set()


def test_finance_is_offered_the_settlement_actions_but_not_deletion(login: Callable[[str], Client]) -> None:
    assert action_choices(login("finance"), "billing.settlement") == {
        "recompute",
        "export_csv",
        "export_xlsx",
        "export_xlsx_with_cdrs",
        "export_cdrs_csv",
        "close_period",
        "close_period_carrying_over",
        "issue_cpo_statement",
    }


def test_finance_reads_the_money_and_retries_but_changes_no_entry(login: Callable[[str], Client]) -> None:
    finance = login("finance")
    for model in ("billing.ledgeraccount", "billing.ledgerentry", "billing.payment", "billing.issueddocument"):
        assert finance.get(changelist(model)).status_code == 200, model
    assert action_choices(finance, "billing.driverreceipt") == {"issue"}
    ops = login("ops")
    assert ops.get(changelist("billing.ledgerentry")).status_code == 403
    assert ops.get(changelist("billing.payment")).status_code == 403


def test_the_delivery_retry_is_offered_to_ops_and_finance_cannot_reach_deliveries(
    login: Callable[[str], Client],
) -> None:
    assert action_choices(login("ops"), "emsp.delivery") == {"retry_now"}
    assert login("finance").get(changelist("emsp.delivery")).status_code == 403


def test_registering_without_the_pull_permission_makes_no_first_pull(
    db: None, monkeypatch: pytest.MonkeyPatch, cpo: Partner
) -> None:
    from ocpi import admin as ocpi_admin

    pulls: list[Partner] = []
    monkeypatch.setattr(ocpi_admin.credentials, "register_with_partner", lambda **kwargs: cpo)
    monkeypatch.setattr(ocpi_admin, "sync_partner", lambda partner, full: pulls.append(partner) or [])
    registrar = User.objects.create_user("registrar", password="pw-123456-x", is_staff=True)
    for codename in ("add_partner", "view_partner"):
        registrar.user_permissions.add(Permission.objects.get(content_type__app_label="emsp", codename=codename))
    client = Client()
    client.force_login(registrar)
    data = {"versions_url": "https://cpo.example.com/versions", "token_a": "token-a-1234", "pull_now": "on"}
    assert client.post(reverse("admin:emsp_partner_register"), data).status_code == 302
    assert pulls == []


@pytest.mark.django_db(transaction=True)
def test_the_groups_come_back_after_a_transactional_tests_flush() -> None:
    """A transactional test's teardown flushes every table; the tests after it on the same worker (xdist's work
    stealing runs some there) log in as a group member (tests/conftest.py)."""
    from django.core.management import call_command

    call_command("flush", verbosity=0, interactive=False)
    assert Group.objects.filter(name__in=["admin", "ops", "finance"]).count() == 3
    assert perm_labels(Group.objects.get(name="ops")) == set(roles.ROLES["ops"])
