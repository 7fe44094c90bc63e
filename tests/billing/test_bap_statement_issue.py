"""An app's statement takes the next number of a gapless sequence: finance issues it from the settlement page's
form (a POST with the CSRF token), the issue is recorded as a staff action, and a GET — a link, an image on
some page — only shows the settlement."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from billing.models import IssuedDocument
from emsp.models import StaffAction
from tests.billing.bap_ledger import APP, october_of_app

pytestmark = pytest.mark.django_db

OCTOBER = {"bap_id": APP, "period_start": "2026-10-01", "period_end": "2026-11-01"}


@pytest.fixture
def finance(login: Callable[[str], Client]) -> Client:
    return login("finance")


def url() -> str:
    return reverse("admin:billing_bap_settlement")


def statements() -> int:
    return IssuedDocument.objects.filter(kind=IssuedDocument.Kind.BAP_STATEMENT).count()


def test_a_get_never_issues_a_statement(finance: Client) -> None:
    october_of_app()
    page = finance.get(url(), {**OCTOBER, "issue": "1"})
    assert page.status_code == 200 and page.context["rows"]
    assert statements() == 0 and not StaffAction.objects.exists()


def test_the_page_offers_issuing_as_a_form_with_its_csrf_token(finance: Client) -> None:
    october_of_app()
    page = finance.get(url(), OCTOBER).content.decode()
    form = page[page.index('<form method="post" class="bap-statement-issue">') :]
    form = form[: form.index("</form>")]
    assert "csrfmiddlewaretoken" in form and f'value="{APP}"' in form and 'value="2026-10-01"' in form
    assert "issue=1" not in page


def test_finance_issues_the_statement_with_a_post_and_it_is_recorded(finance: Client) -> None:
    october_of_app()
    response = finance.post(url(), OCTOBER)
    assert response.status_code == 302 and response["Location"].startswith(url())
    statement = IssuedDocument.objects.get(kind=IssuedDocument.Kind.BAP_STATEMENT)
    assert statement.party == f"bap:{APP}"
    action = StaffAction.objects.get()
    assert (action.verb, action.object_type, action.object_id) == ("issue", "billing.issueddocument", str(statement.pk))
    assert action.username == "finance-user" and action.details["bap_id"] == APP

    finance.post(url(), OCTOBER)  # a second time: the same statement, nothing more recorded
    assert statements() == 1 and StaffAction.objects.count() == 1


def test_a_post_without_the_csrf_token_issues_nothing(db: None) -> None:
    october_of_app()
    user = User.objects.create_user("finance-csrf", password="pw-123456-x", is_staff=True)
    user.groups.add(Group.objects.get(name="finance"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(url(), OCTOBER).status_code == 403
    assert statements() == 0


def test_staff_who_may_not_issue_documents_cannot_post_one(login: Callable[[str], Client]) -> None:
    october_of_app()
    ops = login("ops")
    assert ops.post(url(), OCTOBER).status_code == 403
    assert statements() == 0


def test_a_statement_needs_the_app_named(finance: Client) -> None:
    october_of_app()
    response = finance.post(url(), {**OCTOBER, "bap_id": ""})
    assert response.status_code == 302
    assert statements() == 0 and not StaffAction.objects.exists()
