"""The staff console keeps what it shows consistent with what partners hold, and keeps records it doesn't own:
token changes made in the console reach every CPO, a partner we roamed with can't be deleted with its
sessions and CDRs, records of what happened are read-only, a mistyped id is a 404, and the big money lists
don't count or group every row."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from emsp.models import Partner, Token
from emsp.services.tokens import token_issue
from ocpi.models import OcpiMessage, PushDelivery
from tests.billing.factories import CdrFactory
from tests.factories import DriverFactory, PartnerFactory

pytestmark = pytest.mark.django_db


def driver_form(client: Client, driver_pk: int, **changes: str) -> dict[str, str]:
    """The driver's change form as the page sends it, with `changes`."""
    page = client.get(reverse("admin:emsp_driver_change", args=[driver_pk]))
    form = page.context["adminform"].form
    data: dict[str, str] = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else str(value)
    for formset in page.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        data.update({management.add_prefix(k): str(v) for k, v in management.initial.items()})
        for row in formset.formset.forms:  # each row's hidden keys
            data[row.add_prefix("id")] = str(row.instance.pk)
            data[row.add_prefix(formset.formset.fk.name)] = str(driver_pk)
    return {**data, **changes, "_save": "Save"}


def test_a_drivers_tokens_are_read_on_the_driver_page_and_changed_on_their_own(login: Callable[[str], Client]) -> None:
    PartnerFactory()
    admin = login("admin")
    driver = DriverFactory()
    token = token_issue(driver=driver)
    page = admin.get(reverse("admin:emsp_driver_change", args=[driver.pk]))
    (tokens,) = page.context["inline_admin_formsets"]
    assert not any(name.endswith("is_blocked") for form in tokens.formset.forms for name in form.fields)

    # A hand-made post of the old editable table changes nothing.
    data = driver_form(admin, driver.pk, **{"tokens-0-id": str(token.pk), "tokens-0-is_blocked": "on"})
    assert admin.post(reverse("admin:emsp_driver_change", args=[driver.pk]), data).status_code == 302
    token.refresh_from_db()
    assert not token.is_blocked


def test_blocking_a_driver_in_the_console_sends_their_tokens_as_not_valid(login: Callable[[str], Client]) -> None:
    PartnerFactory()
    admin = login("admin")
    driver = DriverFactory()
    token = token_issue(driver=driver)
    before = PushDelivery.objects.count()

    data = driver_form(admin, driver.pk, is_blocked="on")
    assert admin.post(reverse("admin:emsp_driver_change", args=[driver.pk]), data).status_code == 302
    (push,) = PushDelivery.objects.order_by("pk")[before:]
    assert (push.payload["uid"], push.payload["valid"]) == (token.uid, False)


def test_a_token_is_invalidated_not_deleted_and_every_cpo_hears_of_it(login: Callable[[str], Client]) -> None:
    PartnerFactory()
    admin = login("admin")
    token = token_issue(driver=DriverFactory())
    before = PushDelivery.objects.count()

    assert admin.post(reverse("admin:emsp_token_delete", args=[token.pk]), {"post": "yes"}).status_code == 403
    assert Token.objects.filter(pk=token.pk).exists()
    response = admin.post(
        reverse("admin:emsp_token_changelist"), {"action": "invalidate", "_selected_action": [token.pk]}
    )
    assert response.status_code == 302
    token.refresh_from_db()
    assert not token.valid
    (push,) = PushDelivery.objects.order_by("pk")[before:]
    assert push.payload["valid"] is False


def token_form(client: Client, token: Token, **changes: str) -> dict[str, str]:
    """The token's change form as the page sends it, with `changes`."""
    form = client.get(reverse("admin:emsp_token_change", args=[token.pk])).context["adminform"].form
    data = {k: str(v) for k, v in form.initial.items() if k in form.fields and v not in (None, False, [])}
    return {**data, **changes, "_save": "Save"}


def test_a_token_s_identity_at_the_cpos_is_not_changed_in_the_console(login: Callable[[str], Client]) -> None:
    """uid and type are a token's identity at the CPOs: edited here, only the new one was pushed and the old one
    stayed valid at every CPO (mod_tokens has no DELETE)."""
    PartnerFactory()
    admin = login("admin")
    token = token_issue(driver=DriverFactory())
    before = PushDelivery.objects.count()
    data = token_form(admin, token, uid="NEWUID1", type="APP_USER", visual_number="card 7")
    assert admin.post(reverse("admin:emsp_token_change", args=[token.pk]), data).status_code == 302
    token.refresh_from_db()
    assert (token.uid, token.type, token.visual_number) == (token.uid, Token.Type.RFID, "card 7")
    assert {p.payload["uid"] for p in PushDelivery.objects.order_by("pk")[before:]} == {token.uid}


@pytest.mark.parametrize("uid", ["Ä€ b", "TAB\tIN", "é"])
def test_a_new_token_s_uid_is_printable_ascii(login: Callable[[str], Client], uid: str) -> None:
    """mod_tokens: uid is a CiString(36), "only printable ASCII allowed": refused with a form error, never pushed."""
    PartnerFactory()
    admin = login("admin")
    driver = DriverFactory()
    page = admin.post(
        reverse("admin:emsp_token_add"),
        {"driver": driver.pk, "uid": uid, "type": "RFID", "contract_id": "IN-EMS-C1", "issuer": "Us",
         "valid": "on", "whitelist": "ALLOWED", "_save": "Save"},
    )  # fmt: skip
    assert page.status_code == 200
    assert "uid" in page.context["adminform"].form.errors
    assert not Token.objects.filter(driver=driver).exists()


def test_a_partner_we_roamed_with_is_not_deleted(login: Callable[[str], Client]) -> None:
    admin = login("admin")
    connected = PartnerFactory()
    gone_with_cdrs = PartnerFactory(state=Partner.State.UNREGISTERED)
    CdrFactory(partner=gone_with_cdrs)
    mistake = PartnerFactory(state=Partner.State.NEW)

    for partner in (connected, gone_with_cdrs):
        response = admin.post(reverse("admin:emsp_partner_delete", args=[partner.pk]), {"post": "yes"})
        assert response.status_code == 403
        assert Partner.objects.filter(pk=partner.pk).exists()
    assert admin.post(reverse("admin:emsp_partner_delete", args=[mistake.pk]), {"post": "yes"}).status_code == 302
    assert not Partner.objects.filter(pk=mistake.pk).exists()
    assert "delete_selected" not in admin.get(reverse("admin:emsp_partner_changelist")).content.decode()


def test_records_of_what_happened_are_not_deleted_by_hand() -> None:
    PartnerFactory()
    admin = Client()  # a superuser: no role stands in the way, only the console itself
    admin.force_login(User.objects.create_superuser("root", "root@example.com", "pw-123456-x"))
    message = OcpiMessage.objects.create(direction="IN", method="GET", url="/ocpi/emsp/2.2.1/tokens")
    assert admin.post(reverse("admin:ocpi_ocpimessage_delete", args=[message.pk]), {"post": "yes"}).status_code == 403
    assert OcpiMessage.objects.filter(pk=message.pk).exists()


def test_a_mistyped_id_in_an_action_url_is_not_an_error(login: Callable[[str], Client]) -> None:
    """Not the action's URL (its id is a number): the admin's own "no such object" answer, not a 500."""
    finance, ops = login("finance"), login("ops")
    assert finance.post("/admin/billing/payment/operations/abc/retry/").status_code in (302, 404)
    assert ops.post("/admin/billing/dispute/abc/accept/").status_code in (302, 404)


def counts_and_groups(client: Client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return [
        q["sql"]
        for q in queries.captured_queries
        if ("COUNT(" in q["sql"] and "LIMIT" not in q["sql"])
        or "DISTINCT" in q["sql"]
        or 'JOIN "billing_ledgerline"' in q["sql"]  # every line joined and grouped (a subquery per row is fine)
    ]


def test_the_big_lists_neither_count_nor_group_every_row(login: Callable[[str], Client]) -> None:
    from tests.billing.bap_ledger import october_of_app

    october_of_app()  # a month of an app's bills in the ledger
    PartnerFactory()
    token_issue(driver=DriverFactory())
    admin = login("admin")
    for name in ("billing_ledgerentry", "ocpi_pushdelivery"):
        assert counts_and_groups(admin, reverse(f"admin:{name}_changelist")) == [], name
    # Accounts are counted (one per driver wallet at most), their balances summed for the page's rows only.
    accounts = counts_and_groups(admin, reverse("admin:billing_ledgeraccount_changelist"))
    assert not [sql for sql in accounts if "ledgerline" in sql and "COUNT(" in sql]


def test_the_documents_list_reads_no_pdf(login: Callable[[str], Client]) -> None:
    from tests.billing.bap_ledger import october_of_app

    october_of_app()
    finance = login("finance")
    with CaptureQueriesContext(connection) as queries:
        assert finance.get(reverse("admin:billing_issueddocument_changelist")).status_code == 200
    listing = [q["sql"] for q in queries.captured_queries if 'FROM "billing_issueddocument"' in q["sql"]]
    assert listing and not [sql for sql in listing if '"billing_issueddocument"."pdf"' in sql]
