"""The staff console answers hostile or unlucky input without a server error: closing a period whose every CDR
is in review, a control character in a CPO's name, issuing a statement without the right to issue documents, a
NUL or a control character in any console parameter, a date drill-down past the last year there is, an app
settlement period at the end of time, a NUL inside a JSON field, a selected row that is no number, and the add
page of records only partners send. Several were server errors on PostgreSQL only (it refuses a NUL in text and
jsonb): run them there too."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date
from typing import Any

import openpyxl
import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.forms import MultiWidget
from django.test import Client
from django.urls import reverse

from beckn.models import BecknSubscriber
from billing.models import Cdr, CdrAudit, IssuedDocument, Settlement
from billing.services.settlement import SettlementError, settlement_close, settlement_compute, spreadsheet_text
from emsp.admin_safety import NulFreeJSONField
from emsp.models import ChargingSession, Command, Evse, Partner, StaffAction
from ocpi.credentials import RegistrationError, register_with_partner
from tests.billing.factories import CdrAuditFactory, CdrFactory, at
from tests.billing.test_documents import closed_october
from tests.factories import PartnerFactory, stored_location
from tests.fakes import envelope
from tests.ocpi.test_credentials import CPO, CPO_CREDENTIALS, script_cpo

pytestmark = pytest.mark.django_db

OCTOBER, NOVEMBER = date(2026, 10, 1), date(2026, 11, 1)
SETTLEMENTS = "admin:billing_settlement_changelist"


def staff_with(*codenames: str, username: str = "finance") -> Client:
    """A staff member holding exactly these billing permissions."""
    user = User.objects.create_user(username, password="pw-123456-x", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(content_type__app_label="billing", codename=codename))
    client = Client()
    client.force_login(user)
    return client


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def changelist(model: type) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


# --- 1. closing with every CDR in review ---------------------------------------------------------------------


def every_cdr_in_review() -> tuple[Cdr, Settlement]:
    review = CdrFactory(partner=PartnerFactory(name="A CPO in review", country_code="IN", party_id="REV"))
    CdrAuditFactory(cdr=review, status=CdrAudit.Status.REVIEW)
    (row,) = settlement_compute(partner=review.partner, period_start=OCTOBER)
    return review, row


def test_closing_a_period_whose_every_cdr_is_in_review_carries_them_and_says_nothing_is_left_to_close() -> None:
    review, row = every_cdr_in_review()

    with pytest.raises(SettlementError, match=r"no longer has CDRs: its 1 CDR\(s\) in review") as refused:
        settlement_close(settlement=row, user=None, carry_over=True)

    assert refused.value.carried == 1
    review.refresh_from_db()
    assert review.carried_to == NOVEMBER  # the carry-over stands
    assert not Settlement.objects.filter(pk=row.pk).exists()
    (november,) = settlement_compute(partner=review.partner, period_start=NOVEMBER)
    assert (november.cdr_count, november.state) == (1, Settlement.State.OPEN)


def test_the_carry_over_is_undone_with_a_close_that_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    review, row = every_cdr_in_review()
    clean = CdrFactory(partner=review.partner, cdr_id="CLEAN-1")
    CdrAuditFactory(cdr=clean)
    (row,) = settlement_compute(partner=review.partner, period_start=OCTOBER)

    def fails(self: Settlement, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Settlement, "refresh_from_db", fails)
    with pytest.raises(RuntimeError):
        settlement_close(settlement=row, user=None, carry_over=True)

    review.refresh_from_db()
    assert review.carried_to is None  # one transaction: carried and closed, or neither
    assert Settlement.objects.get(pk=row.pk).state == Settlement.State.OPEN


def test_the_console_says_why_it_did_not_close_records_the_carry_over_and_closes_the_others() -> None:
    review, row = every_cdr_in_review()
    clean = CdrFactory(partner=PartnerFactory(name="B clean CPO", country_code="IN", party_id="CLN"))
    CdrAuditFactory(cdr=clean)
    (reconciled,) = settlement_compute(partner=clean.partner, period_start=OCTOBER)
    finance = staff_with("view_settlement", "change_settlement", "export_settlement")

    response = finance.post(
        reverse(SETTLEMENTS),
        {"action": "close_period_carrying_over", "_selected_action": [row.pk, reconciled.pk]},
    )

    assert response.status_code == 302
    said = messages_of(response)
    assert any(m.startswith("Not closed: ") and "no longer has CDRs" in m for m in said), said
    carried = StaffAction.objects.get(verb="carry_over")
    assert (carried.object_id, carried.username, carried.details["carried"]) == (str(row.pk), "finance", 1)
    review.refresh_from_db()
    assert review.carried_to == NOVEMBER
    reconciled.refresh_from_db()
    assert reconciled.state == Settlement.State.CLOSED  # selected after the refused one, closed all the same
    close = StaffAction.objects.get(verb="close")
    assert (close.object_id, close.details["carried_over"]) == (str(reconciled.pk), 0)


# --- 2. a control character in a CPO's name ------------------------------------------------------------------


def test_spreadsheet_text_drops_control_characters_and_still_escapes_formulas() -> None:
    assert spreadsheet_text("Evil\x0bCPO\x00\x1b\x7f\x85") == "EvilCPO"
    assert spreadsheet_text("\x0b=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert spreadsheet_text("a\tb\nc") == "a\tb\nc"  # tab and line feed are text a spreadsheet holds
    assert spreadsheet_text("\t=1") == "'\t=1"


def test_a_control_character_in_a_cpo_name_is_left_out_of_the_xlsx_export() -> None:
    cdr = CdrFactory(partner=PartnerFactory(name="Evil\x0bCPO", country_code="IN", party_id="EVL"))
    CdrAuditFactory(cdr=cdr)
    (row,) = settlement_compute(partner=cdr.partner, period_start=OCTOBER)
    finance = staff_with("view_settlement", "change_settlement", "export_settlement")

    for action in ("export_xlsx", "export_xlsx_with_cdrs"):
        response = finance.post(reverse(SETTLEMENTS), {"action": action, "_selected_action": [row.pk]})
        assert response.status_code == 200, action
        sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
        assert sheet["A2"].value == "EvilCPO"


def register_with_cpo_named(peer: Any, name: str) -> Partner:
    script_cpo(peer)
    role = {**CPO_CREDENTIALS["roles"][0], "business_details": {"name": name}}
    answer = {**CPO_CREDENTIALS, "token": "token-c-from-cpo", "roles": [role]}
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope(answer)))
    return register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo")


def test_a_cpo_named_with_a_control_character_is_adopted_without_it(peer: Any) -> None:
    partner = register_with_cpo_named(peer, " Evil\x0bCPO\x1b ")

    assert Partner.objects.get(pk=partner.pk).name == "EvilCPO"


def test_a_cpo_name_longer_than_the_column_is_cut_and_one_with_a_nul_refused(peer: Any) -> None:
    partner = register_with_cpo_named(peer, "N" * 150)
    assert Partner.objects.get(pk=partner.pk).name == "N" * 100

    with pytest.raises(RegistrationError, match=r"NUL"):
        register_with_cpo_named(peer, "Evil\x00CPO")


# --- 3. issuing a CPO statement needs the right to issue documents --------------------------------------------


def test_issuing_a_cpo_statement_needs_the_permission_to_issue_documents() -> None:
    closed = closed_october()
    exporter = staff_with("view_settlement", "change_settlement", "export_settlement")

    page = exporter.get(reverse(SETTLEMENTS))
    assert "issue_cpo_statement" not in dict(page.context["action_form"].fields["action"].choices)
    exporter.post(reverse(SETTLEMENTS), {"action": "issue_cpo_statement", "_selected_action": [closed.pk]})
    assert not IssuedDocument.objects.exists()

    issuer = staff_with("view_settlement", "add_issueddocument", username="issuer")
    issuer.post(reverse(SETTLEMENTS), {"action": "issue_cpo_statement", "_selected_action": [closed.pk]})
    assert IssuedDocument.objects.get().kind == IssuedDocument.Kind.CPO_STATEMENT
    assert StaffAction.objects.filter(verb="statement", object_id=str(closed.pk)).exists()


# --- 4. a NUL or a control character in any console parameter ------------------------------------------------


def test_a_nul_in_any_list_filter_of_any_console_list_is_a_bad_request(admin_client: Client) -> None:
    failed, checked = [], 0
    for model in admin.site._registry:
        url = changelist(model)
        page = admin_client.get(url)
        assert page.status_code == 200, url
        names = {name for spec in page.context["cl"].filter_specs for name in spec.expected_parameters()}
        for name in sorted(names):
            checked += 1
            status = admin_client.get(url, {name: "\x00"}).status_code
            if status != 400:
                failed.append((url, name, status))
    assert checked > 50
    assert not failed


@pytest.mark.parametrize(
    "url",
    [
        "/admin/billing/ledgerentry/?event=%00",
        "/admin/ocpi/ocpimessage/?module=%00",
        "/admin/ocpi/pushdelivery/?module=%00",
    ],
)
def test_a_nul_in_a_filter_named_without_a_lookup_is_a_bad_request(admin_client: Client, url: str) -> None:
    response = admin_client.get(url)
    assert response.status_code == 400
    assert b"NUL" in response.content


def test_a_control_character_in_a_console_parameter_or_form_is_a_bad_request(admin_client: Client) -> None:
    assert admin_client.get(changelist(Cdr), {"q": "a\x0bb"}).status_code == 400
    assert admin_client.get(changelist(Cdr), {"q": "a\x85b"}).status_code == 400
    assert admin_client.get(changelist(Cdr), {"q\x00": "a"}).status_code == 400
    add = reverse("admin:beckn_becknsubscriber_add")
    assert admin_client.post(add, {"subscriber_id": "bap\x00.example"}).status_code == 400
    assert admin_client.post(add, {"subscriber_id": "bap\x1b.example"}).status_code == 400
    # Tab, line feed and carriage return are text: a form with them is answered by the form.
    assert admin_client.post(add, {"subscriber_id": "bap.example\r\n", "domains": "[\n\t]"}).status_code == 200
    assert admin_client.get(changelist(Cdr), {"q": "a b"}).status_code == 200


# --- 5. a date drill-down past the last year ------------------------------------------------------------------


def test_a_date_drill_down_out_of_range_is_a_bad_request_on_every_list_with_one(admin_client: Client) -> None:
    CdrAuditFactory(cdr=CdrFactory(end_date_time=at(31, month=12)))
    refused = [
        {"year": "9999"},
        {"year": "9999", "month": "12"},
        {"year": "9999", "month": "12", "day": "31"},
        {"year": "0"},
        {"year": "99999999999999999999"},
        {"year": "abc"},
        {"year": "2026", "month": "13"},
        {"year": "2026", "month": "0"},
        {"year": "2026", "month": "12", "day": "32"},
        {"year": "2026", "month": "1.5"},
    ]
    accepted = [{"year": "9998", "month": "12", "day": "31"}, {"year": "1", "month": "1", "day": "1"}, {"year": "2026"}]
    failed, lists = [], 0
    for model, model_admin in admin.site._registry.items():
        field = model_admin.date_hierarchy
        if not field:
            continue
        lists += 1
        url = changelist(model)
        for parts, expected in [(p, 400) for p in refused] + [(p, 200) for p in accepted]:
            status = admin_client.get(url, {f"{field}__{part}": value for part, value in parts.items()}).status_code
            if status != expected:
                failed.append((url, parts, status))
    assert lists >= 5
    assert not failed


# --- 6. an app settlement period at the end of time -----------------------------------------------------------


def test_an_app_settlement_period_at_the_end_of_time_is_a_form_error(login: Callable[[str], Client]) -> None:
    finance = login("finance")
    url = reverse("admin:billing_bap_settlement")
    end_of_time = {"bap_id": "app.example", "period_start": "9999-12-01", "period_end": "9999-12-31"}

    page = finance.get(url, end_of_time)
    assert page.status_code == 200
    assert not page.context["form"].is_valid()
    issued = finance.post(url, end_of_time)
    assert issued.status_code == 302
    assert "valid period" in " ".join(messages_of(issued))
    assert not IssuedDocument.objects.exists()

    longer_than_a_year = {"bap_id": "app.example", "period_start": "2026-01-01", "period_end": "2027-01-03"}
    assert not finance.get(url, longer_than_a_year).context["form"].is_valid()
    last_year = {"bap_id": "", "period_start": "9998-12-01", "period_end": "9998-12-31"}
    assert finance.get(url, last_year).context["form"].is_valid()


# --- 7. a NUL inside a JSON field -----------------------------------------------------------------------------


def test_the_json_form_field_refuses_a_nul_anywhere_in_the_value() -> None:
    field = NulFreeJSONField()
    for text in ('["a\\u0000"]', '{"k\\u0000": 1}', '{"k": {"l": ["\\u0000"]}}', '"\\u0000"'):
        with pytest.raises(ValidationError, match=r"NUL"):
            field.clean(text)
    assert field.clean('{"k": ["a", 1, null, true]}') == {"k": ["a", 1, None, True]}


SIGNING_KEY = "awGPjRK6i/Vg/lWr+0xObclVxlwZXvTjWYtlu6NeOHk="


def test_a_nul_in_the_domains_of_a_beckn_subscriber_is_a_form_error(admin_client: Client) -> None:
    form = {
        "subscriber_id": "bap.example",
        "unique_key_id": "k1",
        "type": "BAP",
        "signing_public_key": SIGNING_KEY,
        "trusted": "on",
        "status": "SUBSCRIBED",
        "valid_from": "",
        "valid_until": "",
        "subscriber_url": "https://bap.example/beckn",
    }
    response = admin_client.post(reverse("admin:beckn_becknsubscriber_add"), {**form, "domains": '["a\\u0000"]'})

    assert response.status_code == 200
    assert "domains" in response.context["adminform"].form.errors
    assert not BecknSubscriber.objects.exists()
    saved = admin_client.post(reverse("admin:beckn_becknsubscriber_add"), {**form, "domains": '["ONDC:TRV10"]'})
    assert saved.status_code == 302, saved.context and saved.context["adminform"].form.errors
    assert BecknSubscriber.objects.get().domains == ["ONDC:TRV10"]


def change_form(client: Client, url: str, parent_pk: int, **changes: str) -> dict[str, str]:
    """The change form as the page sends it (each inline row by its key), with `changes`."""
    page = client.get(url)
    data: dict[str, str] = {}
    for field in page.context["adminform"].form:
        value, widget = field.value(), field.field.widget
        if isinstance(widget, MultiWidget):  # a date and a time
            for i, (part, sub) in enumerate(zip(widget.decompress(value), widget.widgets, strict=True)):
                data[f"{field.html_name}_{i}"] = sub.format_value(part) or ""
        elif value is True:
            data[field.html_name] = "on"
        elif value is not None and value is not False:
            data[field.html_name] = str(value)
    for formset in page.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        data.update({management.add_prefix(k): str(v) for k, v in management.initial.items()})
        for row in formset.formset.forms:
            data[row.add_prefix("id")] = str(row.instance.pk)
            data[row.add_prefix(formset.formset.fk.name)] = str(parent_pk)
    return {**data, **changes, "_save": "Save"}


def test_a_nul_in_the_capabilities_of_an_evse_is_a_form_error(admin_client: Client) -> None:
    evse = Evse.objects.filter(location=stored_location(PartnerFactory())).first()
    url = reverse("admin:emsp_evse_change", args=[evse.pk])
    before = evse.capabilities

    response = admin_client.post(url, change_form(admin_client, url, evse.pk, capabilities='["RFID_READER\\u0000"]'))

    assert response.status_code == 200
    assert "capabilities" in response.context["adminform"].form.errors
    evse.refresh_from_db()
    assert evse.capabilities == before
    for depth in (900, 5000):  # nested past what Python decodes: a form error too
        deep = admin_client.post(url, change_form(admin_client, url, evse.pk, capabilities="[" * depth + "]" * depth))
        assert deep.status_code == 200, depth
        assert "capabilities" in deep.context["adminform"].form.errors
    unchanged = admin_client.post(url, change_form(admin_client, url, evse.pk, capabilities='["RFID_READER"]'))
    assert unchanged.status_code == 302, unchanged.context and unchanged.context["adminform"].form.errors
    evse.refresh_from_db()
    assert evse.capabilities == ["RFID_READER"]


# --- 8. a selected row that is no number ----------------------------------------------------------------------


def test_a_selected_row_that_is_no_number_is_a_bad_request_on_every_list_with_actions(admin_client: Client) -> None:
    failed, lists = [], 0
    for model in admin.site._registry:
        url = changelist(model)
        page = admin_client.get(url)
        form = page.context.get("action_form")
        actions = [name for name, _ in form.fields["action"].choices if name] if form is not None else []
        if not actions:
            continue
        lists += 1
        for selected in ("abc", "1.5", "-1", "\x00", "99999999999999999999999", " 1"):
            status = admin_client.post(url, {"action": actions[0], "_selected_action": ["1", selected]}).status_code
            if status != 400:
                failed.append((url, actions[0], selected, status))
    assert lists >= 5
    assert not failed


def test_a_numbered_selection_still_reaches_the_action(admin_client: Client) -> None:
    _, row = every_cdr_in_review()
    response = admin_client.post(reverse(SETTLEMENTS), {"action": "recompute", "_selected_action": [str(row.pk)]})
    assert response.status_code == 302
    assert StaffAction.objects.filter(verb="recompute", object_id=str(row.pk)).exists()


# --- 9. records only partners send have no add page -----------------------------------------------------------


@pytest.mark.parametrize("model", [Cdr, ChargingSession, Command])
def test_records_only_partners_send_have_no_add_page(login: Callable[[str], Client], model: type) -> None:
    add = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add")
    admin_user = login("admin")
    assert admin_user.post(add, {}).status_code == 403
    assert admin_user.get(add).status_code == 403
    assert not model.objects.exists()
