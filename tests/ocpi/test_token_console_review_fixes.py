"""Tokens as the staff console issues and edits them, pushed to every CPO as they are: language an ISO 639-1 code,
visual_number and issuer printable (OCPI string), a uid a CPO can authorize (no '/') and not one taken (by a save
in the same instant either); a partner that tokens are restricted to is not deleted (an empty restriction list
means "anywhere")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from emsp.models import Driver, Partner, Token
from emsp.services.tokens import token_changed, token_issue
from ocpi.models import PushDelivery
from ocpi.rendering import token_as_ocpi
from tests.conftest import OcpiTestClient
from tests.factories import DriverFactory, PartnerFactory, TokenFactory

pytestmark = pytest.mark.django_db

AUTHORIZE = "/ocpi/emsp/2.2.1/tokens/{uid}/authorize"


@pytest.fixture
def admin(login: Callable[[str], Client], partner: Partner) -> Client:
    """The console as an admin, with one connected CPO (`partner`) that every token change is pushed to."""
    return login("admin")


@pytest.fixture
def driver() -> Driver:
    return DriverFactory()


def token_added(admin: Client, driver: Driver, **fields: str) -> Any:
    """Post the console's add form for a token of `driver`: a valid one unless `fields` says otherwise."""
    data = {"driver": driver.pk, "uid": "NEWCARD1", "type": "RFID", "contract_id": "IN-EMS-C1", "issuer": "Us",
            "valid": "on", "whitelist": "ALLOWED", "_save": "Save", **fields}  # fmt: skip
    return admin.post(reverse("admin:emsp_token_add"), data)


def refused_on(page: Any, field: str, driver: Driver) -> bool:
    """The add form came back with an error on `field`, and nothing was stored or pushed."""
    return (
        page.status_code == 200
        and field in page.context["adminform"].form.errors
        and not Token.objects.filter(driver=driver).exists()
        and not PushDelivery.objects.exists()
    )


def pushed() -> list[dict[str, Any]]:
    payloads = [push.payload for push in PushDelivery.objects.order_by("pk")]
    assert payloads, "nothing was pushed"
    return payloads


# 1. language: string(2), "Language Code ISO 639-1" (mod_tokens).


@pytest.mark.parametrize("language", ["1", "e", "ÄÖ", "E ", "e1", "\u212aa", "\u0131t", "zz", "QQ", "xx"])
def test_a_language_that_is_no_iso_639_1_code_is_a_form_error(admin: Client, driver: Driver, language: str) -> None:
    # "\u212a" (Kelvin sign) and "\u0131" (dotless i) lower- or upper-case to ASCII letters; "zz", "qq" and "xx"
    # have the shape of a code and are none of ISO 639-1's 184.
    assert refused_on(token_added(admin, driver, language=language), "language", driver)


@pytest.mark.parametrize(("typed", "sent"), [("en", "en"), ("EN", "en"), ("Hi", "hi")])
def test_a_language_is_stored_and_pushed_in_lower_case(admin: Client, driver: Driver, typed: str, sent: str) -> None:
    assert token_added(admin, driver, language=typed).status_code == 302
    assert Token.objects.get(driver=driver).language == sent
    assert [p["language"] for p in pushed()] == [sent]


@pytest.mark.parametrize(
    ("stored", "sent"), [("e1", None), ("E", None), ("ÄÖ", None), ("EN", "en"), ("", None), ("zz", None), ("TA", "ta")]
)
def test_a_language_stored_before_it_was_checked_is_sent_only_as_an_iso_639_1_code(
    partner: Partner, stored: str, sent: str | None
) -> None:
    token = TokenFactory(language=stored)
    token_changed(token=token)
    assert [p.get("language") for p in pushed()] == [sent]
    assert token_as_ocpi(token).get("language") == sent


# 2. visual_number and issuer: OCPI string, "printable UTF-8 characters" (types.asciidoc).


@pytest.mark.parametrize("field", ["visual_number", "issuer"])
@pytest.mark.parametrize("value", ["CARD\t7", "CARD\n7", "CARD\r\n7", "CARD\u20287"])
def test_a_tab_or_line_break_in_visual_number_or_issuer_is_a_form_error(
    admin: Client, driver: Driver, field: str, value: str
) -> None:
    assert refused_on(token_added(admin, driver, **{field: value}), field, driver)


def test_printable_text_in_visual_number_and_issuer_is_taken_as_typed(admin: Client, driver: Driver) -> None:
    assert token_added(admin, driver, visual_number="Kärte № 7", issuer="Open  eMSP").status_code == 302
    [payload] = pushed()
    assert (payload["visual_number"], payload["issuer"]) == ("Kärte № 7", "Open  eMSP")


def test_visual_number_and_issuer_stored_before_they_were_checked_are_sent_printable(
    partner: Partner, settings: Any
) -> None:
    settings.OCPI_BUSINESS_NAME = "Open eMSP"
    written = TokenFactory(visual_number="CARD\r\n\t7", issuer="Open\teMSP\n")
    blank = TokenFactory(visual_number="\n", issuer="\r\n")  # issuer is required: never left out
    token_changed(token=written)
    token_changed(token=blank)
    first, second = pushed()
    assert (first["visual_number"], first["issuer"]) == ("CARD 7", "Open eMSP")
    assert "visual_number" not in second
    assert second["issuer"] == "Open eMSP"


# 3. A partner's deletion takes the token's restriction rows with it, and no restriction means "anywhere".


def test_deleting_the_only_partner_a_token_is_restricted_to_does_not_open_it_to_every_cpo(
    admin: Client, ocpi: OcpiTestClient, driver: Driver
) -> None:
    mistake = PartnerFactory(country_code="IN", party_id="NEW", state=Partner.State.NEW)
    token = token_issue(driver=driver, uid="FLEET1")
    token.allowed_partners.set([mistake])
    assert ocpi.post(AUTHORIZE.format(uid="FLEET1")).json()["data"]["allowed"] == "NOT_ALLOWED"

    page = admin.post(reverse("admin:emsp_partner_delete", args=[mistake.pk]), {"post": "yes"}, follow=True)

    assert Partner.objects.filter(pk=mistake.pk).exists()
    assert list(token.allowed_partners.all()) == [mistake]
    [message] = [str(m) for m in page.context["messages"]]
    assert "tokens are restricted to it (FLEET1)" in message
    assert ocpi.post(AUTHORIZE.format(uid="FLEET1")).json()["data"]["allowed"] == "NOT_ALLOWED"
    change_page = admin.get(reverse("admin:emsp_partner_change", args=[mistake.pk])).content.decode()
    assert reverse("admin:emsp_partner_delete", args=[mistake.pk]) not in change_page  # no Delete button

    token.allowed_partners.clear()  # staff changed the token first (and it was pushed): now it can go
    assert admin.post(reverse("admin:emsp_partner_delete", args=[mistake.pk]), {"post": "yes"}).status_code == 302
    assert not Partner.objects.filter(pk=mistake.pk).exists()


def test_a_staff_member_who_may_not_delete_partners_gets_no_hint(
    login: Callable[[str], Client], driver: Driver
) -> None:
    mistake = PartnerFactory(country_code="IN", party_id="NEW", state=Partner.State.NEW)
    token_issue(driver=driver, uid="FLEET1").allowed_partners.set([mistake])
    finance = login("finance")
    assert finance.post(reverse("admin:emsp_partner_delete", args=[mistake.pk]), {"post": "yes"}).status_code == 403
    assert Partner.objects.filter(pk=mistake.pk).exists()


# 4. (uid, type) is unique in any case (token_unique_uid_type, on uid_key, which no form holds).


@pytest.mark.parametrize("uid", ["card1", "CARD1", "Card1"])
def test_adding_a_token_whose_uid_is_taken_is_a_form_error_not_a_500(admin: Client, driver: Driver, uid: str) -> None:
    token_issue(driver=driver, uid="CARD1")
    PushDelivery.objects.all().delete()
    admin.raise_request_exception = False
    page = token_added(admin, driver, uid=uid)
    assert page.status_code == 200
    assert "uid" in page.context["adminform"].form.errors
    assert Token.objects.filter(driver=driver).count() == 1
    assert not PushDelivery.objects.exists()


def test_a_taken_uid_of_another_type_is_a_token_of_its_own(admin: Client, driver: Driver) -> None:
    token_issue(driver=driver, uid="CARD1", token_type=Token.Type.APP_USER)
    assert token_added(admin, driver, uid="card1", type="RFID").status_code == 302
    assert sorted(Token.objects.filter(driver=driver).values_list("type", flat=True)) == ["APP_USER", "RFID"]


def test_a_token_keeps_its_own_uid_when_edited(admin: Client, driver: Driver) -> None:
    token = token_issue(driver=driver, uid="CARD1")
    data = {"driver": driver.pk, "contract_id": token.contract_id, "issuer": "Us", "valid": "on",
            "whitelist": "ALLOWED", "visual_number": "CARD 1", "_save": "Save"}  # fmt: skip
    assert admin.post(reverse("admin:emsp_token_change", args=[token.pk]), data).status_code == 302
    assert Token.objects.get(pk=token.pk).visual_number == "CARD 1"


def as_posted(page: Any, **changed: str) -> dict[str, Any]:
    """A token's change form posted back as a browser would, every field as shown, with `changed`."""
    form = page.context["adminform"].form
    data: dict[str, Any] = {}
    for name in form.fields:
        value = form[name].value()
        if isinstance(value, bool):
            if value:
                data[name] = "on"
        elif isinstance(value, (list, tuple)):
            data[name] = [str(v) for v in value]
        else:
            data[name] = "" if value is None else str(value)
    data.pop("expires_at", None)
    return {**data, "expires_at_0": "", "expires_at_1": "", "_save": "Save", **changed}


@pytest.mark.parametrize(
    "stored",
    [{"visual_number": "CARD\t7"}, {"issuer": "Open\teMSP"}, {"language": "1"}, {"language": "ÄÖ"}],
    ids=["visual_number-tab", "issuer-tab", "language-1", "language-AeOe"],
)
def test_a_token_stored_before_the_checks_can_be_blocked_on_its_page(admin: Client, stored: dict[str, str]) -> None:
    """Blocking a stolen card on its page had been refused for a value staff did not touch."""
    token = TokenFactory(**stored)  # as stored before emsp 0032
    url = reverse("admin:emsp_token_change", args=[token.pk])
    page = admin.post(url, as_posted(admin.get(url), is_blocked="on"))
    assert page.status_code == 302, page.context["adminform"].form.errors if page.status_code == 200 else page
    assert Token.objects.get(pk=token.pk).is_blocked


def test_a_value_changed_on_an_older_tokens_page_is_checked(admin: Client) -> None:
    token = TokenFactory(visual_number="CARD\t7")
    url = reverse("admin:emsp_token_change", args=[token.pk])
    page = admin.post(url, as_posted(admin.get(url), language="1"))
    assert page.status_code == 200 and "language" in page.context["adminform"].form.errors
    assert Token.objects.get(pk=token.pk).language != "1"


def test_the_model_refuses_a_uid_taken_in_another_case(driver: Driver) -> None:
    token_issue(driver=driver, uid="CARD1")
    with pytest.raises(ValidationError) as refused:
        Token(driver=driver, uid="card1", contract_id="IN-EMS-C2", issuer="Us").full_clean()
    assert "uid" in refused.value.message_dict


# 5. A uid is a segment of the URLs a CPO calls us on: '/' can't be in one (404/2000 on …/AB%2FCD/authorize).


@pytest.mark.parametrize("uid", ["AB/CD", "/ABCD", "ABCD/"])
def test_a_token_uid_with_a_slash_is_a_form_error(admin: Client, driver: Driver, uid: str) -> None:
    assert refused_on(token_added(admin, driver, uid=uid), "uid", driver)


def test_a_token_the_console_issues_can_be_authorized_by_a_cpo(
    admin: Client, ocpi: OcpiTestClient, driver: Driver
) -> None:
    assert token_added(admin, driver, uid="AB-CD.1*2").status_code == 302
    [push] = PushDelivery.objects.all()
    assert push.path.startswith(f"/IN/EMS/{quote('AB-CD.1*2', safe='')}?")  # where the CPO stores it
    response = ocpi.post(AUTHORIZE.format(uid=quote(push.payload["uid"], safe="")))
    assert response.status_code == 200, response.json()
    assert response.json()["data"]["allowed"] == "ALLOWED"


# 7. Two staff adding the same uid in the same instant: both forms pass, the second save meets the constraint.


def test_a_uid_taken_by_a_save_in_the_same_instant_is_a_message_not_a_500(admin: Client, driver: Driver) -> None:
    from django.db.models.signals import pre_save

    def another_staff_saves_first(sender: type[Token], instance: Token, **kwargs: Any) -> None:
        pre_save.disconnect(another_staff_saves_first, sender=Token)
        token_issue(driver=DriverFactory(), uid="newcard1")  # committed between our form's check and its save

    pre_save.connect(another_staff_saves_first, sender=Token)
    try:
        page = token_added(admin, driver)
    finally:
        pre_save.disconnect(another_staff_saves_first, sender=Token)
    assert page.status_code == 302 and page["Location"] == reverse("admin:emsp_token_add")
    assert not Token.objects.filter(driver=driver).exists()
    shown = admin.get(page["Location"])
    assert "Nothing was saved" in shown.content.decode()
