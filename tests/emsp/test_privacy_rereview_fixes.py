"""A driver's export and erasure, re-reviewed: a journey changes hands at the init that names another driver (not
at an order), so an init a driver retried after their order was cancelled, or an init of theirs another driver's
init then took over before any order, is theirs; and the OCPI log is searched for a token's uid cheaply first, the
exact pattern only on the rows that may name it."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from beckn.models import BecknCallback, BecknMessage, BecknTransaction
from emsp import privacy
from emsp.models import Booking, Driver
from emsp.services.tokens import token_issue
from ocpi.models import OcpiMessage
from ocpi.privacy import _erase as ocpi_erase
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.factories import DriverFactory, PartnerFactory

pytestmark = pytest.mark.django_db

ASHA = {"name": "Asha", "email": "asha@example.com", "phone": "+919845000000"}
RAVI = {"name": "Ravi", "email": "ravi@example.com", "phone": "+919800000001"}


def init_for(bap: Any, billing: dict[str, str]) -> dict[str, Any]:  # noqa: F811
    bap("init", {"order": {"provider": {"id": "IN*CPA"}, "billing": billing}})
    return last(bap, "on_init")


def on_inits_naming(text: str) -> int:
    return BecknCallback.objects.filter(action="on_init", body__icontains=text).count()


# --- a journey Asha tried again after her order was cancelled, then went on with for Ravi ----------------------


def retried_journey(bap: Any) -> tuple[Driver, str, Driver, str]:  # noqa: F811
    """Asha's order, cancelled; she inits again (her billing echoed in that on_init) and gives up; the app goes on
    with the journey for Ravi, who orders."""
    item = item_of(bap)
    select(bap, item)
    init(bap)  # Asha
    first = confirm(bap)["message"]["order"]["id"]
    bap("cancel", {"order_id": first, "cancellation_reason_id": "changed-plans"})
    assert last(bap, "on_cancel")["message"]["order"]["status"] == "CANCELLED"
    select(bap, item)
    assert init(bap)["message"]["order"]["billing"]["email"] == ASHA["email"]  # Asha tries again
    select(bap, item)
    init_for(bap, RAVI)
    second = confirm(bap)["message"]["order"]["id"]
    asha, ravi = Driver.objects.get(email=ASHA["email"]), Driver.objects.get(email=RAVI["email"])
    assert Booking.objects.get(order_id=second).driver == ravi and BecknTransaction.objects.get().driver == ravi
    assert on_inits_naming(ASHA["email"]) == 2
    return asha, first, ravi, second


def test_a_drivers_erasure_reaches_the_init_they_retried_after_their_order_was_cancelled(bap: Any) -> None:  # noqa: F811
    asha, _, _, second = retried_journey(bap)

    privacy.driver_erase(asha)

    assert on_inits_naming(ASHA["email"]) == on_inits_naming(ASHA["phone"]) == 0
    assert not BecknCallback.objects.filter(body__icontains=ASHA["email"]).exists()
    inits = list(BecknMessage.objects.filter(action="init").order_by("received_at").values_list("body", flat=True))
    assert inits[:2] == ["[erased]", "[erased]"] and inits[2] != "[erased]"  # hers; Ravi's stays
    # Ravi's part stays: his init answered, his order confirmed, his billing on the journey.
    assert on_inits_naming(RAVI["email"]) == 1
    assert BecknCallback.objects.filter(action="on_confirm", body__contains=f'"{second}"').exists()
    assert BecknTransaction.objects.get().billing["email"] == RAVI["email"]


def test_another_drivers_erasure_leaves_the_init_a_driver_retried_in_the_journey(bap: Any) -> None:  # noqa: F811
    _, _, ravi, _ = retried_journey(bap)

    privacy.driver_erase(ravi)

    assert on_inits_naming(ASHA["email"]) == 2  # both of hers, the retried one too
    assert on_inits_naming(RAVI["email"]) == 0
    inits = list(BecknMessage.objects.filter(action="init").order_by("received_at").values_list("body", flat=True))
    assert inits[:2] != ["[erased]", "[erased]"] and inits[2] == "[erased]"
    assert BecknTransaction.objects.get().billing == {}


def test_each_drivers_export_of_a_journey_they_retried_and_another_went_on_with(bap: Any) -> None:  # noqa: F811
    asha, first, ravi, second = retried_journey(bap)
    bap("rating", {"ratings": [{"rating_category": "Support", "id": bap.bap.transaction_id, "value": "2"}]})

    hers, his = privacy.driver_export(asha)["beckn"], privacy.driver_export(ravi)["beckn"]

    assert [(j["order_ids"], j["billing"]) for j in hers["journeys"]] == [([first], {})]
    assert [(j["order_ids"], j["billing"]["email"]) for j in his["journeys"]] == [([second], RAVI["email"])]
    assert first not in str(his) and ASHA["email"] not in str(his)
    # The support rating came in Ravi's stretch: his.
    assert [r["value"] for r in his["ratings"] if r["category"] == "Support"] == ["2"]
    assert not [r for r in hers["ratings"] if r["category"] == "Support"]


# --- a journey Asha only init-ed, taken over by Ravi before any order ------------------------------------------


def taken_over_journey(bap: Any, hers: dict[str, str]) -> tuple[Driver, Driver, str]:  # noqa: F811
    item = item_of(bap)
    select(bap, item)
    init_for(bap, hers)
    select(bap, item)
    init_for(bap, RAVI)
    order = confirm(bap)["message"]["order"]["id"]
    asha, ravi = Driver.objects.get(phone=ASHA["phone"]), Driver.objects.get(email=RAVI["email"])
    assert not Booking.objects.filter(driver=asha).exists() and BecknTransaction.objects.get().driver == ravi
    return asha, ravi, order


# As the app sent her billing: her email in another case (the account is found ignoring case), or a phone only.
HERS = [
    pytest.param({**ASHA, "email": "Asha@Example.COM"}, "asha@example.com", id="email-in-another-case"),
    pytest.param({"name": "Asha", "phone": ASHA["phone"]}, ASHA["phone"], id="phone-only"),
]


@pytest.mark.parametrize(("hers", "named"), HERS)
def test_a_drivers_erasure_reaches_a_journey_they_only_initialised(
    bap: Any,  # noqa: F811
    hers: dict[str, str],
    named: str,
) -> None:
    asha, _, order = taken_over_journey(bap, hers)
    assert on_inits_naming(named) == 1

    privacy.driver_erase(asha)

    assert on_inits_naming(named) == 0
    inits = list(BecknMessage.objects.filter(action="init").order_by("received_at").values_list("body", flat=True))
    assert inits[0] == "[erased]" and inits[1] != "[erased]"
    assert on_inits_naming(RAVI["email"]) == 1
    assert BecknCallback.objects.filter(action="on_confirm", body__contains=f'"{order}"').exists()
    assert BecknTransaction.objects.get().billing["email"] == RAVI["email"]


@pytest.mark.parametrize(("hers", "named"), HERS)
def test_the_later_drivers_erasure_leaves_the_init_of_the_driver_they_took_the_journey_over_from(
    bap: Any,  # noqa: F811
    hers: dict[str, str],
    named: str,
) -> None:
    _, ravi, _ = taken_over_journey(bap, hers)

    privacy.driver_erase(ravi)

    assert on_inits_naming(named) == 1
    assert on_inits_naming(RAVI["email"]) == 0
    inits = list(BecknMessage.objects.filter(action="init").order_by("received_at").values_list("body", flat=True))
    assert inits[0] != "[erased]" and inits[1] == "[erased]"


def test_the_export_lists_a_journey_the_driver_only_initialised(bap: Any) -> None:  # noqa: F811
    asha, ravi, order = taken_over_journey(bap, ASHA)

    hers, his = privacy.driver_export(asha)["beckn"], privacy.driver_export(ravi)["beckn"]

    journey = BecknTransaction.objects.get().transaction_id
    assert [(j["transaction_id"], j["order_ids"], j["billing"]) for j in hers["journeys"]] == [(journey, [], {})]
    assert [(j["order_ids"], j["billing"]["email"]) for j in his["journeys"]] == [([order], RAVI["email"])]


def test_an_init_of_another_apps_driver_with_the_same_email_is_not_theirs(bap: Any) -> None:  # noqa: F811
    # Accounts of other apps are never matched by contact (emsp/services/drivers.py): nor is their erasure.
    other = DriverFactory(app_id="another-app.example", email=ASHA["email"], phone=ASHA["phone"])
    select(bap, item_of(bap))
    init(bap)

    assert privacy.driver_export(other)["beckn"]["journeys"] == []
    privacy.driver_erase(other)

    assert on_inits_naming(ASHA["email"]) == 1
    assert not BecknMessage.objects.filter(body="[erased]").exists()


# --- the OCPI log: a cheap search first ----------------------------------------------------------------------


def logged(*, url: str = "/ocpi/emsp/2.2.1/cdrs", body: str = "{}") -> OcpiMessage:
    return OcpiMessage.objects.create(
        partner=PartnerFactory(), direction="IN", method="POST", url=url, request_body=body, response_body="{}"
    )


def test_ocpi_erasure_runs_the_exact_pattern_only_on_rows_a_cheap_search_finds() -> None:
    driver = DriverFactory()
    uids = [token_issue(driver=driver).uid for _ in range(3)]

    with CaptureQueriesContext(connection) as queries:
        ocpi_erase(driver)

    erasing = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "ocpi_ocpimessage"')]
    assert len(erasing) == 1
    where = erasing[0].split(" WHERE ", 1)[1]
    # CASE WHEN <substrings> THEN <the exact pattern>: PostgreSQL runs the pattern only where the substrings are.
    assert where.lstrip("(").startswith("CASE WHEN"), where[:200]
    cheap, exact = where.split(" THEN ", 1)
    assert all(uid.lower() in cheap.lower() for uid in uids)
    assert not any(regex in cheap for regex in ("REGEXP", "~*"))
    assert any(regex in exact for regex in ("REGEXP", "~*"))


@pytest.mark.parametrize(
    ("url", "body", "erased"),
    [
        ("/ocpi/emsp/2.2.1/cdrs", '{"cdr_token": {"uid": "%s"}}', True),
        ("/ocpi/emsp/2.2.1/cdrs", '{"cdr_token": {"uid": "%l"}}', True),  # another case
        ("/ocpi/emsp/2.2.1/cdrs", '{"cdr_token": {"uid": "%e"}}', True),  # \u-escaped: no plain uid in the row
        ("/ocpi/emsp/2.2.1/cdrs", '{"cdr_token": {"uid": "%s9"}}', False),  # a longer uid holding it
        ("/ocpi/emsp/2.2.1/cdrs", '{"note": "a\\/b %s"}', False),  # in a longer string, with an escape
        ("/ocpi/emsp/2.2.1/tokens/%p/authorize", "{}", True),  # percent-encoded in the URL only
        ("/ocpi/emsp/2.2.1/tokens/%p9/authorize?x=%25", "{}", False),
    ],
)
def test_ocpi_erasure_finds_every_form_of_the_uid_past_the_cheap_search(url: str, body: str, erased: bool) -> None:
    driver = DriverFactory()
    uid = token_issue(driver=driver).uid
    escaped = "".join(f"\\u{ord(c):04x}" for c in uid)
    encoded = "".join(f"%{ord(c):02X}" for c in uid)

    def filled(text: str) -> str:
        return text.replace("%s", uid).replace("%l", uid.lower()).replace("%e", escaped).replace("%p", encoded)

    row = logged(url=filled(url), body=filled(body))
    other = logged(body=orjson.dumps({"cdr_token": {"uid": "SOMEONE-ELSE"}}).decode())

    ocpi_erase(driver)

    row.refresh_from_db()
    other.refresh_from_db()
    assert (row.request_body == "[erased]") is erased
    assert other.request_body != "[erased]"
