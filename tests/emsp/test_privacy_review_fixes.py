"""A driver's export and erasure reach their data and no one else's: a Beckn journey another driver went on
with after the first one's order was cancelled, the console's history of the driver's account, and the OCPI log
naming a token in another case or a token whose uid lies inside another's."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client

from beckn.models import BecknCallback, BecknMessage, BecknRating, BecknTransaction, DriverFeedback
from emsp import privacy
from emsp.models import Booking, Driver
from emsp.services.tokens import token_issue
from ocpi.models import OcpiMessage
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.factories import DriverFactory, PartnerFactory

pytestmark = pytest.mark.django_db

RAVI = {"name": "Ravi", "email": "ravi@example.com", "phone": "+919800000001"}


# --- a journey two drivers went on ---------------------------------------------------------------------------


def shared_journey(bap: Any) -> tuple[Driver, str, Driver, str]:  # noqa: F811
    """Asha's order, cancelled, then Ravi's in the same transaction (the app re-inits with his billing)."""
    item = item_of(bap)
    select(bap, item)
    init(bap)  # Asha
    first = confirm(bap)["message"]["order"]["id"]
    bap("cancel", {"order_id": first, "cancellation_reason_id": "changed-plans"})
    assert last(bap, "on_cancel")["message"]["order"]["status"] == "CANCELLED"
    bap("rating", {"ratings": [{"rating_category": "Order", "id": first, "value": "1"}]})
    select(bap, item)
    bap("init", {"order": {"provider": {"id": "IN*CPA"}, "billing": RAVI}})
    second = confirm(bap)["message"]["order"]["id"]
    asha, ravi = Driver.objects.get(email="asha@example.com"), Driver.objects.get(email=RAVI["email"])
    assert Booking.objects.get(order_id=first).driver == asha and Booking.objects.get(order_id=second).driver == ravi
    assert BecknTransaction.objects.get().driver == ravi
    return asha, first, ravi, second


def test_one_drivers_export_holds_another_drivers_feedback_when_the_app_reuses_a_journey(
    bap: Any,  # noqa: F811
) -> None:
    asha, first, ravi, second = shared_journey(bap)
    DriverFeedback.objects.create(order_id=first, rating=1, comment="Asha Rao here, call me on +919845000000")
    DriverFeedback.objects.create(order_id=second, rating=4, comment="Ravi: fine")

    exported = privacy.driver_export(ravi)["beckn"]
    assert "Asha Rao" not in str(exported)
    assert [j["order_ids"] for j in exported["journeys"]] == [[second]]
    assert [f["order_id"] for f in exported["feedback"]] == [second]
    assert first not in str(exported["ratings"])
    hers = privacy.driver_export(asha)["beckn"]
    assert [f["comment"] for f in hers["feedback"]] == ["Asha Rao here, call me on +919845000000"]
    assert [(r["ref_id"], r["value"]) for r in hers["ratings"]] == [(first, "1")]
    # The journey's billing is Ravi's now (his init): not in her export, though the journey is listed with her order.
    assert [(j["order_ids"], j["billing"]) for j in hers["journeys"]] == [([first], {})]


def test_one_drivers_erasure_leaves_another_drivers_order_of_the_same_journey(
    bap: Any,  # noqa: F811
) -> None:
    _, first, ravi, second = shared_journey(bap)
    DriverFeedback.objects.create(order_id=first, rating=1, comment="Asha Rao here")
    DriverFeedback.objects.create(order_id=second, rating=4, comment="Ravi: fine")

    privacy.driver_erase(ravi)

    assert dict(DriverFeedback.objects.values_list("order_id", "comment")) == {first: "Asha Rao here", second: ""}
    # Her requests and the callbacks that answered them (on_init and on_confirm echo her billing) are kept ...
    assert BecknCallback.objects.filter(action="on_init", body__contains="asha@example.com").exists()
    assert BecknCallback.objects.filter(action="on_confirm", body__contains=f'"{first}"').exists()
    assert BecknCallback.objects.filter(action="on_cancel", body__contains="asha@example.com").exists()
    assert BecknMessage.objects.filter(action="cancel", body__contains=f'"{first}"').exists()
    hers_until = Booking.objects.get(order_id=first).created_at
    assert not BecknMessage.objects.filter(received_at__lte=hers_until, body="[erased]").exists()
    # ... his are gone, and so are the journey's details (his billing).
    assert not BecknCallback.objects.filter(body__contains=RAVI["email"]).exists()
    his = BecknMessage.objects.filter(action__in=["init", "confirm"], received_at__gt=hers_until)
    assert set(his.values_list("action", "body")) == {("init", "[erased]"), ("confirm", "[erased]")}
    assert BecknTransaction.objects.get().billing == {}


def test_the_earlier_drivers_erasure_reaches_their_part_of_a_journey_another_driver_went_on_with(
    bap: Any,  # noqa: F811
) -> None:
    asha, first, _, second = shared_journey(bap)

    privacy.driver_erase(asha)

    assert not BecknCallback.objects.filter(body__contains="asha@example.com").exists()
    assert BecknMessage.objects.filter(action="cancel", body="[erased]").exists()
    # Ravi's part stays: his billing on the journey, his init answered, his order confirmed.
    assert BecknTransaction.objects.get().billing["email"] == RAVI["email"]
    assert BecknCallback.objects.filter(action="on_init", body__contains=RAVI["email"]).exists()
    assert BecknCallback.objects.filter(action="on_confirm", body__contains=f'"{second}"').exists()
    assert BecknRating.objects.filter(ref_id=first).exists()  # a score and an order id: kept


# --- the console's history of the account --------------------------------------------------------------------


def test_admin_history_keeps_the_erased_drivers_name(client: Client) -> None:
    admin = User.objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    driver = DriverFactory(name="Asha Rao", email="asha@example.com", phone="+911")
    other = DriverFactory(name="Ravi Kumar")
    form = {
        "app_id": "",
        "email": "asha@example.com",
        "phone": "+911",
        "wallet_limit": "0",
        "currency": "INR",
        "tokens-TOTAL_FORMS": "0",
        "tokens-INITIAL_FORMS": "0",
        "tokens-MIN_NUM_FORMS": "0",
        "tokens-MAX_NUM_FORMS": "1000",
    }
    r = client.post(f"/admin/emsp/driver/{driver.pk}/change/", {**form, "name": "Asha K. Rao"})
    assert r.status_code == 302
    r = client.post(f"/admin/emsp/driver/{other.pk}/change/", {**form, "name": "Ravi K.", "email": "r@example.com"})
    assert r.status_code == 302
    assert LogEntry.objects.filter(object_id=str(driver.pk), object_repr="Asha K. Rao").exists()

    privacy.driver_erase(driver)

    kept = list(LogEntry.objects.values_list("object_repr", flat=True))
    assert not [r for r in kept if "Asha" in r], kept
    erased = LogEntry.objects.get(object_id=str(driver.pk))
    assert (erased.object_repr, erased.change_message) == (f"Erased driver {driver.pk}", "")
    assert LogEntry.objects.get(object_id=str(other.pk)).object_repr == "Ravi K."  # another driver's history


# --- the OCPI log --------------------------------------------------------------------------------------------


def cdr_logged(uid: str, *, body: str | None = None, url: str = "/ocpi/emsp/2.2.1/cdrs") -> OcpiMessage:
    return OcpiMessage.objects.create(
        partner=PartnerFactory(),
        direction="IN",
        method="POST",
        url=url,
        module="cdrs",
        request_body=body if body is not None else f'{{"id": "CDR1", "cdr_token": {{"uid": "{uid}"}}}}',
    )


def test_ocpi_log_naming_the_token_in_another_case_is_erased() -> None:
    driver = DriverFactory(name="Asha Rao")
    token = token_issue(driver=driver)
    lower = token.uid.lower()
    assert lower != token.uid
    body = f'{{"id": "CDR1", "cdr_token": {{"uid": "{lower}", "contract_id": "{token.contract_id}"}}}}'
    cdr_logged(lower, body=body)

    privacy.driver_erase(driver)

    assert [m.request_body for m in OcpiMessage.objects.all() if lower in m.request_body] == []


def test_ocpi_erasure_of_one_driver_leaves_the_log_of_another_whose_uid_holds_theirs() -> None:
    a, b = DriverFactory(), DriverFactory()
    token_issue(driver=a, uid="04A1B2C3")
    token_issue(driver=b, uid="04A1B2C3D4")
    theirs = cdr_logged("04A1B2C3D4")
    authorized = cdr_logged("", body='{"allowed": "ALLOWED"}', url="/ocpi/emsp/2.2.1/tokens/04A1B2C3D4/authorize")
    mine = cdr_logged("04a1b2c3")

    privacy.driver_erase(a)

    theirs.refresh_from_db()
    authorized.refresh_from_db()
    mine.refresh_from_db()
    assert theirs.request_body != "[erased]" and authorized.request_body != "[erased]"
    assert mine.request_body == "[erased]"


@pytest.mark.parametrize(
    "body",
    [
        '{"cdr_token":{"uid":"%s"}}',  # no spaces
        '{"cdr_token": {"uid" :  "%s"}}',  # spaces either side
        '{"data": [{"token": {"uid": "%s", "type": "RFID"}}]}',  # a list pulled
        "ESCAPED",  # a partner's JSON escaping every character
    ],
)
def test_ocpi_log_naming_the_token_however_the_json_is_written_is_erased(body: str) -> None:
    driver = DriverFactory()
    uid = token_issue(driver=driver, uid="AB/12-x").uid
    text = orjson.dumps({"cdr_token": {"uid": uid}}).decode() if body == "ESCAPED" else body % uid.lower()
    if body == "ESCAPED":
        text = text.replace(f'"{uid}"', '"' + "".join(f"\\u{ord(c):04X}" for c in uid.upper()) + '"')
    logged = cdr_logged(uid, body=text)

    privacy.driver_erase(driver)

    logged.refresh_from_db()
    assert logged.request_body == "[erased]"


@pytest.mark.parametrize(
    "url, erased",
    [
        ("/ocpi/emsp/2.2.1/tokens/04A1B2C3/authorize?type=RFID", True),
        ("/ocpi/emsp/2.2.1/tokens/04a1b2c3/authorize", True),
        ("/ocpi/cpo/2.2.1/tokens/IN/EMS/04A1B2C3", True),
        ("/ocpi/cpo/2.2.1/tokens/IN/EMS/%30%34A1B2C3?type=RFID", True),  # percent-encoded
        ("/ocpi/cpo/2.2.1/tokens/IN/EMS/04A1B2C3D4", False),
        ("/ocpi/cpo/2.2.1/tokens/IN/EMS/X04A1B2C3/authorize", False),
    ],
)
def test_ocpi_log_naming_the_token_in_its_url_is_erased(url: str, erased: bool) -> None:
    driver = DriverFactory()
    token_issue(driver=driver, uid="04A1B2C3")
    logged = cdr_logged("", body='{"allowed": "ALLOWED"}', url=url)

    privacy.driver_erase(driver)

    logged.refresh_from_db()
    assert (logged.request_body == "[erased]") is erased


@pytest.mark.parametrize("uid", ["A-._~!$&'()*+,;=:@%<>", 'B[]{}|^`"\\ /#?'])
def test_ocpi_log_naming_a_token_of_any_printable_characters_is_erased_and_no_other(uid: str) -> None:
    driver = DriverFactory()
    token_issue(driver=driver, uid=uid)
    in_body = cdr_logged(uid, body=orjson.dumps({"cdr_token": {"uid": uid.lower()}}).decode())
    in_url = cdr_logged(uid, body="{}", url=f"/ocpi/cpo/2.2.1/tokens/IN/EMS/{quote(uid, safe='')}?type=RFID")
    longer = cdr_logged(uid, body=orjson.dumps({"cdr_token": {"uid": uid + "X"}}).decode())

    privacy.driver_erase(driver)

    for logged in (in_body, in_url, longer):
        logged.refresh_from_db()
    assert (in_body.request_body, in_url.request_body, longer.request_body != "[erased]") == ("[erased]",) * 2 + (True,)
