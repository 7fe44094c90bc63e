"""The audit trail of staff actions (emsp.StaffAction): each console action on partners, disputes, settlements,
deliveries and Beckn subscribers leaves one row naming the staff member and the object, and never a secret."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from beckn.models import BecknSubscriber
from billing.models import Dispute, Settlement
from billing.services.settlement import settlement_compute
from emsp.models import Delivery, Partner, PartnerParty, StaffAction, hash_token
from emsp.services.staff import REDACTED, staff_action_record
from ocpi import admin as ocpi_admin
from ocpi import tasks as ocpi_tasks
from tests.billing.dispute_factories import QueueDisputeFactory
from tests.billing.factories import settlement_scenario
from tests.factories import PartnerFactory
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db


@pytest.fixture
def no_pulls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Pulls the console queues, caught instead of run."""
    queued: list[tuple[Any, ...]] = []
    monkeypatch.setattr(ocpi_tasks.sync_partner, "delay", lambda *args: queued.append(args))
    return queued


def the_record(verb: str) -> StaffAction:
    """The one record of `verb` (fails if there are none or several)."""
    return StaffAction.objects.get(verb=verb)


def assert_by(record: StaffAction, client: Client, obj: Any) -> None:
    """The record names the client's user and the object (its text is the object's at the time)."""
    user = client.user  # type: ignore[attr-defined]
    assert (record.user, record.username) == (user, user.username)
    assert (record.object_type, record.object_id) == (obj._meta.label_lower, str(obj.pk))
    assert record.object_repr


def act(client: Client, changelist: str, action: str, *objects: Any, **extra: Any) -> Any:
    return client.post(reverse(changelist), {"action": action, "_selected_action": [o.pk for o in objects]}, **extra)


# -- the service ---------------------------------------------------------------------------------------


def test_a_record_names_who_did_what_to_which_object() -> None:
    user = User.objects.create_user("meera")
    partner = PartnerFactory(name="CPO X", party_id="CPX")
    record = staff_action_record(user=user, verb="pull", obj=partner, details={"full": True})
    assert (record.user, record.username, record.verb) == (user, "meera", "pull")
    assert (record.object_type, record.object_id, record.object_repr) == ("emsp.partner", str(partner.pk), str(partner))
    assert record.details == {"full": True}


def test_the_username_outlives_the_user() -> None:
    user = User.objects.create_user("leaver")
    record = staff_action_record(user=user, verb="pull", obj=PartnerFactory())
    user.delete()
    record.refresh_from_db()
    assert (record.user, record.username) == (None, "leaver")


def test_secrets_never_reach_the_details() -> None:
    details = {
        "token": "tok-1",
        "token_a": "tok-a",
        "changed": {"outgoing_token": ["a", "b"], "incoming_token_hash": ["x", "y"], "name": ["Old", "New"]},
        "password": "pw",
        "signing_private_key": "key",
    }
    record = staff_action_record(user=None, verb="change", obj=PartnerFactory(), details=details)
    assert record.details == {
        "token": REDACTED,
        "token_a": REDACTED,
        "changed": {"outgoing_token": REDACTED, "incoming_token_hash": REDACTED, "name": ["Old", "New"]},
        "password": REDACTED,
        "signing_private_key": REDACTED,
    }
    assert (record.user, record.username) == (None, "")


# -- partners (admin and ops) ----------------------------------------------------------------------------

PARTNERS = "admin:emsp_partner_changelist"


def test_issuing_a_token_a_is_recorded_without_the_token(login: Callable[[str], Client]) -> None:
    client = login("admin")
    partner = PartnerFactory(state=Partner.State.NEW)
    response = act(client, PARTNERS, "issue_token_a", partner, follow=True)
    shown = next(str(m) for m in response.context["messages"] if "Token A for" in str(m))
    token = shown.split(": ", 1)[1].split(" ", 1)[0]
    partner.refresh_from_db()
    assert partner.token_a_hash == hash_token(token)
    record = the_record("issue_token_a")
    assert_by(record, client, partner)
    assert token not in orjson.dumps(record.details).decode()


@pytest.mark.parametrize("group", ["admin", "ops"])
def test_pulling_now_is_recorded(login: Callable[[str], Client], no_pulls: list[Any], group: str) -> None:
    client = login(group)
    partner = PartnerFactory()
    act(client, PARTNERS, "pull_full_now", partner)
    assert no_pulls == [(partner.pk, True)]
    assert_by(the_record("pull"), client, partner)


def test_unregistering_tells_the_partner_and_is_recorded(login: Callable[[str], Client], peer: FakePeer) -> None:
    client = login("admin")
    partner = PartnerFactory()
    token = partner.outgoing_token
    credentials_url = partner.endpoint_url("credentials")
    peer.route("DELETE", credentials_url, (200, envelope()))
    act(client, PARTNERS, "unregister", partner)
    partner.refresh_from_db()
    assert partner.state == Partner.State.UNREGISTERED
    # credentials.asciidoc, DELETE: both parties end automated communication. It went with our token.
    (call,) = peer.calls
    assert (call["method"], call["url"]) == ("DELETE", credentials_url)
    assert base64.b64decode(call["headers"]["Authorization"].removeprefix("Token ")).decode() == token
    record = the_record("unregister")
    assert_by(record, client, partner)
    assert record.details == {
        "was": "CONNECTED",
        "told": "the partner took our credentials DELETE (HTTP 200, OCPI 1000)",
    }


def test_unregistering_a_partner_that_does_not_answer_still_unregisters(
    login: Callable[[str], Client], peer: FakePeer
) -> None:
    client = login("admin")
    partner = PartnerFactory()
    peer.route("DELETE", partner.endpoint_url("credentials"), (500, b"down"))
    act(client, PARTNERS, "unregister", partner)
    partner.refresh_from_db()
    assert partner.state == Partner.State.UNREGISTERED
    assert the_record("unregister").details["told"].startswith("the partner's credentials DELETE failed")


def test_registering_with_a_cpo_is_recorded_without_its_token_a(
    login: Callable[[str], Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = login("admin")
    partner = PartnerFactory(name="New CPO", party_id="NEW")
    monkeypatch.setattr(ocpi_admin.credentials, "register_with_partner", lambda **kwargs: partner)
    response = client.post(
        reverse("admin:emsp_partner_register"),
        {"versions_url": "https://cpo.example.com/ocpi/versions", "token_a": "SECRET-token-a-1234", "party": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    record = the_record("register")
    assert_by(record, client, partner)
    assert record.details["versions_url"] == "https://cpo.example.com/ocpi/versions"
    assert "SECRET-token-a-1234" not in orjson.dumps(record.details).decode()


def change_form(partner: Partner, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": partner.name,
        "country_code": partner.country_code,
        "party_id": partner.party_id,
        "role": partner.role,
        "outgoing_token_base64": "on" if partner.outgoing_token_base64 else "",
        "sync_enabled": "on" if partner.sync_enabled else "",
        "sync_interval_minutes": partner.sync_interval_minutes,
        "full_sync_interval_hours": partner.full_sync_interval_hours,
        "parties-TOTAL_FORMS": 0,
        "parties-INITIAL_FORMS": 0,
        "parties-MIN_NUM_FORMS": 0,
        "parties-MAX_NUM_FORMS": 1000,
    }
    data.update(fields)
    return data


def test_a_partner_changed_in_the_console_is_recorded_with_what_changed(login: Callable[[str], Client]) -> None:
    client = login("admin")
    partner = PartnerFactory(name="Old name")
    response = client.post(
        reverse("admin:emsp_partner_change", args=[partner.pk]), change_form(partner, name="New name")
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    record = the_record("change")
    partner.refresh_from_db()
    assert_by(record, client, partner)
    assert record.details == {"changed": {"name": ["Old name", "New name"]}}


def test_saving_a_partner_unchanged_records_nothing(login: Callable[[str], Client]) -> None:
    partner = PartnerFactory()
    login("admin").post(reverse("admin:emsp_partner_change", args=[partner.pk]), change_form(partner))
    assert not StaffAction.objects.exists()


def test_granting_a_requested_party_is_recorded_on_the_partner(login: Callable[[str], Client]) -> None:
    client = login("admin")
    hub = PartnerFactory(country_code="NL", party_id="HUB", role=Partner.Role.HUB)
    requested = PartnerParty.objects.create(partner=hub, country_code="IN", party_id="NEW", status="REQUESTED")
    rows = {
        "parties-TOTAL_FORMS": 2,
        "parties-INITIAL_FORMS": 1,
        "parties-0-id": requested.pk,
        "parties-0-partner": hub.pk,
        "parties-0-country_code": "IN",
        "parties-0-party_id": "NEW",
        "parties-0-status": "GRANTED",
        "parties-1-partner": hub.pk,
        "parties-1-country_code": "DE",
        "parties-1-party_id": "ADD",
        "parties-1-status": "GRANTED",
    }
    response = client.post(reverse("admin:emsp_partner_change", args=[hub.pk]), change_form(hub, **rows))
    assert response.status_code == 302, response.content.decode()[:2000]
    records = StaffAction.objects.filter(verb="grant_party").order_by("pk")
    assert [(r.details["party"], r.details["was"]) for r in records] == [("IN*NEW", "REQUESTED"), ("DE*ADD", None)]
    for record in records:
        assert_by(record, client, hub)


def test_removing_a_party_is_recorded(login: Callable[[str], Client]) -> None:
    client = login("admin")
    hub = PartnerFactory(country_code="NL", party_id="HUB", role=Partner.Role.HUB)
    granted = PartnerParty.objects.create(partner=hub, country_code="IN", party_id="OLD", status="GRANTED")
    rows = {
        "parties-TOTAL_FORMS": 1,
        "parties-INITIAL_FORMS": 1,
        "parties-0-id": granted.pk,
        "parties-0-partner": hub.pk,
        "parties-0-country_code": "IN",
        "parties-0-party_id": "OLD",
        "parties-0-status": "GRANTED",
        "parties-0-DELETE": "on",
    }
    client.post(reverse("admin:emsp_partner_change", args=[hub.pk]), change_form(hub, **rows))
    record = the_record("remove_party")
    assert_by(record, client, hub)
    assert record.details == {"party": "IN*OLD", "was": "GRANTED"}


# -- disputes (ops) ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verb", "data", "state"),
    [
        ("accept", {"accept-note": "fine"}, Dispute.State.ACCEPTED),
        ("contest", {"contest-note": "wrong energy"}, Dispute.State.CONTESTED),
        ("credit", {"credit-amount": "0.5", "credit-note": "split"}, Dispute.State.CREDITED),
    ],
)
def test_each_dispute_step_is_recorded_next_to_its_event(
    login: Callable[[str], Client], verb: str, data: dict[str, str], state: str
) -> None:
    client = login("ops")
    dispute = QueueDisputeFactory()
    client.post(reverse(f"admin:billing_dispute_{verb}", args=[dispute.pk]), data)
    dispute.refresh_from_db()
    assert dispute.state == state
    assert dispute.events.filter(user=client.user).count() == 1  # type: ignore[attr-defined]
    record = the_record(verb)
    assert_by(record, client, dispute)
    assert (record.details["from_state"], record.details["to_state"]) == ("OPEN", state)


def test_a_credit_records_its_amount(login: Callable[[str], Client]) -> None:
    client = login("ops")
    dispute = QueueDisputeFactory()
    client.post(reverse("admin:billing_dispute_credit", args=[dispute.pk]), {"credit-amount": "0.5"})
    assert the_record("credit").details["amount"] == "0.5"


def test_a_refused_dispute_step_records_nothing(login: Callable[[str], Client]) -> None:
    client = login("ops")
    dispute = QueueDisputeFactory(state=Dispute.State.ACCEPTED)
    client.post(reverse("admin:billing_dispute_contest", args=[dispute.pk]), {"contest-note": "late"})
    assert not StaffAction.objects.exists()


@pytest.mark.parametrize(("action", "verb"), [("accept_cpo_amount", "accept"), ("contest", "contest")])
def test_bulk_dispute_actions_record_each_dispute(login: Callable[[str], Client], action: str, verb: str) -> None:
    client = login("ops")
    first, second = QueueDisputeFactory(), QueueDisputeFactory()
    act(client, "admin:billing_dispute_changelist", action, first, second)
    records = StaffAction.objects.filter(verb=verb).order_by("pk")
    assert [r.object_id for r in records] == [str(first.pk), str(second.pk)]
    for record, dispute in zip(records, (first, second), strict=True):
        assert_by(record, client, dispute)


# -- settlement (finance) --------------------------------------------------------------------------------

SETTLEMENTS = "admin:billing_settlement_changelist"


@pytest.fixture
def settlements() -> dict[str, Settlement]:
    scenario = settlement_scenario()
    return {s.currency: s for s in settlement_compute(partner=scenario["partner"], period_start=date(2026, 10, 1))}


def test_computing_a_period_records_each_row(login: Callable[[str], Client]) -> None:
    client = login("finance")
    settlement_scenario()
    client.post(reverse("admin:billing_settlement_compute"), {"month": "2026-10"})
    records = StaffAction.objects.filter(verb="compute")
    rows = Settlement.objects.filter(period_start=date(2026, 10, 1))
    assert rows.exists()
    assert sorted(r.object_id for r in records) == sorted(str(s.pk) for s in rows)
    for record in records:
        assert_by(record, client, Settlement.objects.get(pk=record.object_id))
        assert record.details["period"] == "2026-10"


def test_recomputing_is_recorded(login: Callable[[str], Client], settlements: dict[str, Settlement]) -> None:
    client = login("finance")
    act(client, SETTLEMENTS, "recompute", settlements["EUR"])
    assert_by(the_record("recompute"), client, settlements["EUR"])


def test_closing_is_recorded_and_a_refused_close_is_not(
    login: Callable[[str], Client], settlements: dict[str, Settlement]
) -> None:
    client = login("finance")
    act(client, SETTLEMENTS, "close_period", settlements["INR"], settlements["EUR"])  # EUR has open disputes
    record = the_record("close")
    settlements["INR"].refresh_from_db()
    assert settlements["INR"].state == Settlement.State.CLOSED
    assert_by(record, client, settlements["INR"])


@pytest.mark.parametrize(
    ("action", "kind"),
    [
        ("export_csv", "csv"),
        ("export_xlsx", "xlsx"),
        ("export_xlsx_with_cdrs", "xlsx with CDRs"),
        ("export_cdrs_csv", "CDRs csv"),
    ],
)
def test_each_export_is_recorded(
    login: Callable[[str], Client], settlements: dict[str, Settlement], action: str, kind: str
) -> None:
    client = login("finance")
    response = act(client, SETTLEMENTS, action, settlements["INR"])
    assert response.status_code == 200
    record = the_record("export")
    assert_by(record, client, settlements["INR"])
    assert record.details["format"] == kind


# -- deliveries (ops) -------------------------------------------------------------------------------------


def test_retrying_deliveries_records_each_one_queued(login: Callable[[str], Client]) -> None:
    client = login("ops")
    failed = Delivery.objects.create(channel=Delivery.Channel.OCPI_PUSH, target="a", status=Delivery.Status.FAILED)
    delivered = Delivery.objects.create(
        channel=Delivery.Channel.OCPI_PUSH, target="b", status=Delivery.Status.DELIVERED
    )
    act(client, "admin:emsp_delivery_changelist", "retry_now", failed, delivered)
    failed.refresh_from_db()
    assert failed.status == Delivery.Status.PENDING
    record = the_record("retry")
    assert_by(record, client, failed)
    assert record.details == {"status": "FAILED", "attempts": 0}


# -- Beckn subscribers (admin) ---------------------------------------------------------------------------


def test_trusting_a_beckn_subscriber_is_recorded(login: Callable[[str], Client]) -> None:
    client = login("admin")
    response = client.post(
        reverse("admin:beckn_becknsubscriber_add"),
        {
            "subscriber_id": "bap.example.com",
            "unique_key_id": "k1",
            "type": "BAP",
            "signing_public_key": "awGPjRK6i/Vg/lWr+0xObclVxlwZXvTjWYtlu6NeOHk=",
            "trusted": "on",
            "status": "SUBSCRIBED",
            "subscriber_url": "https://bap.example.com/beckn",
            "domains": "[]",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    subscriber = BecknSubscriber.objects.get(subscriber_id="bap.example.com")
    record = the_record("add")
    assert_by(record, client, subscriber)
    assert record.details == {"trusted": True, "unique_key_id": "k1"}


# -- the console list --------------------------------------------------------------------------------------


def test_the_audit_trail_lists_filters_and_searches(login: Callable[[str], Client]) -> None:
    client = login("admin")
    partner = PartnerFactory(name="Findable CPO")
    staff_action_record(user=client.user, verb="pull", obj=partner)  # type: ignore[attr-defined]
    staff_action_record(user=client.user, verb="unregister", obj=PartnerFactory(name="Other CPO"))  # type: ignore[attr-defined]
    url = reverse("admin:emsp_staffaction_changelist")
    page = client.get(url, {"verb": "pull"}).content.decode()
    assert "Findable CPO" in page and "Other CPO" not in page
    assert "Findable CPO" not in client.get(url, {"q": "Other"}).content.decode()
    assert client.get(url, {"object_type": "emsp.partner", "username": "admin-user"}).status_code == 200


def test_nobody_edits_or_deletes_the_audit_trail(login: Callable[[str], Client]) -> None:
    client = login("admin")
    record = staff_action_record(user=client.user, verb="pull", obj=PartnerFactory())  # type: ignore[attr-defined]
    assert client.get(reverse("admin:emsp_staffaction_add")).status_code == 403
    assert client.post(reverse("admin:emsp_staffaction_delete", args=[record.pk]), {"post": "yes"}).status_code == 403
    client.post(reverse("admin:emsp_staffaction_change", args=[record.pk]), {"verb": "nothing"})
    record.refresh_from_db()
    assert record.verb == "pull"
    assert StaffAction.objects.count() == 1
