"""Tokens sender: our paginated token list and real-time authorization."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from emsp.models import Partner, Token
from tests.conftest import OcpiTestClient
from tests.factories import DriverFactory, PartnerFactory, TokenFactory, stored_location

pytestmark = pytest.mark.django_db

LIST = "/ocpi/emsp/2.2.1/tokens"


def authorize(client: OcpiTestClient, uid: str, body: object = None, query: str = "") -> object:
    return client.post(f"/ocpi/emsp/2.2.1/tokens/{uid}/authorize{query}", body)


def test_the_token_list_is_paginated_with_link_total_and_limit(ocpi: OcpiTestClient, settings: object) -> None:
    settings.OCPI_PAGE_LIMIT = 2  # type: ignore[attr-defined]
    base = timezone.now() - timedelta(days=1)
    for i in range(5):
        TokenFactory(last_updated=base + timedelta(minutes=i))
    uids: list[str] = []
    path = LIST
    pages = 0
    while path:
        response = ocpi.get(path)
        assert response["X-Total-Count"] == "5"
        assert response["X-Limit"] == "2"
        uids += [t["uid"] for t in response.json()["data"]]
        pages += 1
        link = response.get("Link")
        path = link[1 : link.index(">")].split("8000", 1)[1] if link else ""
    assert pages == 3
    assert uids == sorted(uids)  # oldest first, every token once
    assert len(set(uids)) == 5


def next_path(response: object) -> str:
    link = response.get("Link")  # type: ignore[attr-defined]
    return link[1 : link.index(">")].split("8000", 1)[1] if link else ""


def test_a_token_changed_during_a_pull_is_not_skipped(ocpi: OcpiTestClient, settings: object) -> None:
    """Following our Link, the next page starts after the last token served (not `offset` rows in). The list is
    in creation order: a token changed meanwhile keeps its place, every token is served once (transport: "the
    sequence of objects mustn't change"; tests/ocpi/test_tokens_served_review_fixes.py pages by offset)."""
    settings.OCPI_PAGE_LIMIT = 2  # type: ignore[attr-defined]
    base = timezone.now() - timedelta(days=1)
    tokens = [TokenFactory(last_updated=base + timedelta(minutes=i)) for i in range(5)]
    first = ocpi.get(LIST)
    uids = [t["uid"] for t in first.json()["data"]]
    Token.objects.filter(pk=tokens[0].pk).update(last_updated=timezone.now())  # served, then changed
    path = next_path(first)
    while path:
        response = ocpi.get(path)
        uids += [t["uid"] for t in response.json()["data"]]
        path = next_path(response)
    assert uids == [t.uid for t in tokens]


def test_following_the_link_neither_counts_the_list_again_nor_skips_rows(
    ocpi: OcpiTestClient, settings: object
) -> None:
    """Read from the key the Link names, no OFFSET; only the tokens beyond the highest key of the first page are
    counted (transport: new objects make "the X-Total-Count … higher on the next call")."""
    settings.OCPI_PAGE_LIMIT = 2  # type: ignore[attr-defined]
    for _ in range(5):
        TokenFactory()
    path = next_path(ocpi.get(LIST))
    assert "after=" in path
    with CaptureQueriesContext(connection) as seen:
        response = ocpi.get(path)
    assert response["X-Total-Count"] == "5" and len(response.json()["data"]) == 2
    listing = [q["sql"] for q in seen.captured_queries if "emsp_token" in q["sql"]]
    assert listing and not [q for q in listing if "OFFSET" in q.upper()], listing
    counts = [q for q in listing if "COUNT(" in q.upper()]
    assert counts and all('"emsp_token"."id" >' in q for q in counts), counts


@pytest.mark.parametrize(
    "after",
    ["garbage", "", "p.3.1.5.9", "p.2.99999999999999999999.5.9", "p.2.9223372036854775808.5.9", "p.2.-1.5.9",
     "p.2.1\x00.5.9", "p.2.1.5", "p.2.1.5.9223372036854775808", "2.1"],
)  # fmt: skip
def test_an_after_that_is_not_ours_is_served_by_offset(ocpi: OcpiTestClient, settings: object, after: str) -> None:
    settings.OCPI_PAGE_LIMIT = 2  # type: ignore[attr-defined]
    base = timezone.now() - timedelta(days=1)
    tokens = [TokenFactory(last_updated=base + timedelta(minutes=i)) for i in range(5)]
    response = ocpi.get(LIST, data={"offset": "2", "after": after})
    assert response.status_code == 200 and response.json()["status_code"] == 1000
    assert [t["uid"] for t in response.json()["data"]] == [tokens[2].uid, tokens[3].uid]
    assert response["X-Total-Count"] == "5"


def test_an_after_of_our_shape_but_made_up_is_a_page_not_an_error(ocpi: OcpiTestClient) -> None:
    TokenFactory()
    for after in ("p.2.0.5.0", "p.2.9223372036854775807.999999999999.9223372036854775807"):  # first key; last
        response = ocpi.get(LIST, data={"offset": "2", "after": after})
        assert response.status_code == 200 and response.json()["status_code"] == 1000


def test_the_token_list_filters_by_date(ocpi: OcpiTestClient) -> None:
    old = TokenFactory(last_updated=timezone.now() - timedelta(days=10))
    new = TokenFactory(last_updated=timezone.now())
    data = ocpi.get(
        LIST, data={"date_from": (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    ).json()["data"]
    assert [t["uid"] for t in data] == [new.uid]
    assert old.uid not in [t["uid"] for t in data]


def test_listed_tokens_are_spec_shaped(ocpi: OcpiTestClient) -> None:
    TokenFactory(visual_number="1234")
    token = ocpi.get(LIST).json()["data"][0]
    assert set(token) >= {
        "country_code",
        "party_id",
        "uid",
        "type",
        "contract_id",
        "issuer",
        "valid",
        "whitelist",
        "last_updated",
    }
    assert token["country_code"] == "IN" and token["party_id"] == "EMS"


def test_a_bad_date_from_is_2001(ocpi: OcpiTestClient) -> None:
    response = ocpi.get(LIST, data={"date_from": "yesterday"})
    assert response.json()["status_code"] == 2001


def test_it_allows_a_valid_token(ocpi: OcpiTestClient) -> None:
    token = TokenFactory()
    body = authorize(ocpi, token.uid).json()
    assert body["status_code"] == 1000
    assert body["data"]["allowed"] == "ALLOWED"
    assert body["data"]["token"]["uid"] == token.uid
    assert body["data"]["authorization_reference"]


@pytest.mark.parametrize("version", ["2.2.1", "2.1.1"])
def test_the_authorize_url_as_mod_tokens_writes_it_without_a_slash_is_answered(
    ocpi: OcpiTestClient, version: str
) -> None:
    """mod_tokens: `{tokens_endpoint_url}{token_uid}/authorize`; our endpoint URL ends without a slash."""
    token = TokenFactory()
    body = ocpi.post(f"/ocpi/emsp/{version}/tokens{token.uid}/authorize", None).json()
    assert (body["status_code"], body["data"]["allowed"]) == (1000, "ALLOWED")


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda t: setattr(t, "is_blocked", True), "BLOCKED"),
        (lambda t: setattr(t, "expires_at", timezone.now() - timedelta(days=1)), "EXPIRED"),
        (lambda t: setattr(t.driver, "wallet_balance", Decimal("0")), "NO_CREDIT"),
    ],
)
def test_it_answers_each_refusal_with_http_200(ocpi: OcpiTestClient, setup: object, expected: str) -> None:
    token = TokenFactory()
    setup(token)  # type: ignore[operator]
    token.driver.save()
    token.save()
    response = authorize(ocpi, token.uid)
    assert response.status_code == 200
    assert response.json()["data"]["allowed"] == expected


def test_a_token_restricted_to_other_partners_is_not_allowed(ocpi: OcpiTestClient) -> None:
    token = TokenFactory()
    token.allowed_partners.add(PartnerFactory(party_id="OTH"))
    assert authorize(ocpi, token.uid).json()["data"]["allowed"] == "NOT_ALLOWED"


def test_a_token_restricted_to_this_partner_is_allowed(ocpi: OcpiTestClient, partner: Partner) -> None:
    token = TokenFactory()
    token.allowed_partners.add(partner, PartnerFactory(party_id="OTH"))
    assert authorize(ocpi, token.uid).json()["data"]["allowed"] == "ALLOWED"


def test_a_blocked_driver_blocks_the_token(ocpi: OcpiTestClient) -> None:
    token = TokenFactory()
    token.driver.is_blocked = True
    token.driver.save()
    assert authorize(ocpi, token.uid).json()["data"]["allowed"] == "BLOCKED"


def test_a_prepaid_driver_with_credit_is_allowed(ocpi: OcpiTestClient) -> None:
    token = TokenFactory()
    token.driver.wallet_balance = Decimal("0.01")
    token.driver.save()
    assert authorize(ocpi, token.uid).json()["data"]["allowed"] == "ALLOWED"


def test_without_a_type_a_token_of_another_type_is_not_found(ocpi: OcpiTestClient) -> None:
    """mod_tokens: `type` "Default if omitted: RFID"."""
    TokenFactory(uid="APPONLY", type=Token.Type.APP_USER)
    response = authorize(ocpi, "apponly")
    assert (response.status_code, response.json()["status_code"]) == (404, 2004)
    assert "data" not in response.json()
    assert authorize(ocpi, "apponly", query="?type=APP_USER").json()["data"]["allowed"] == "ALLOWED"


def test_an_unknown_token_is_404_with_2004_and_no_data(ocpi: OcpiTestClient) -> None:
    response = authorize(ocpi, "NOPE")
    assert response.status_code == 404
    assert response.json()["status_code"] == 2004
    assert "data" not in response.json()


def test_the_type_parameter_selects_the_token(ocpi: OcpiTestClient) -> None:
    driver = DriverFactory()
    TokenFactory(uid="SAME", type=Token.Type.RFID, driver=driver, is_blocked=True)
    TokenFactory(uid="SAME", type=Token.Type.APP_USER, driver=driver)
    assert authorize(ocpi, "SAME").json()["data"]["allowed"] == "BLOCKED"
    assert authorize(ocpi, "same", query="?type=APP_USER").json()["data"]["allowed"] == "ALLOWED"


def test_location_references_are_echoed_when_allowed(ocpi: OcpiTestClient) -> None:
    token = TokenFactory()
    body = authorize(ocpi, token.uid, {"location_id": "LOC1"}).json()
    assert body["data"]["location"] == {"location_id": "LOC1"}


def test_the_echoed_evses_are_those_we_know_at_that_location(ocpi: OcpiTestClient, partner: Partner) -> None:
    stored_location(partner, location_id="LOC1", evses=2)
    stored_location(partner, location_id="LOC2", evses=1)
    token = TokenFactory()
    refs = {"location_id": "loc1", "evse_uids": ["LOC1-E1", "loc1-e2", "LOC2-E1", "NOPE"]}
    echoed = authorize(ocpi, token.uid, refs).json()["data"]["location"]
    assert echoed == {"location_id": "loc1", "evse_uids": ["LOC1-E1", "loc1-e2"]}  # LOC2's EVSE is not at LOC1
    # None of them known (a charge point not pushed yet): echoed as sent, lenient in.
    refs = {"location_id": "LOC2", "evse_uids": ["X1", "X2"]}
    assert authorize(ocpi, token.uid, refs).json()["data"]["location"] == refs


def test_an_unknown_type_is_2001(ocpi: OcpiTestClient) -> None:
    token = TokenFactory()
    assert authorize(ocpi, token.uid, query="?type=CAR").json()["status_code"] == 2001
