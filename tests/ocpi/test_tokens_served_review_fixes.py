"""Review fixes of what our eMSP serves CPOs (OCPI 2.2.1): the token list in creation order, counted on every
page, a large `limit` capped to our page size; real-time authorization without `type` is for an RFID token, and
its AuthorizationInfo carries the token's own validity; a non-credit CDR id over 36 characters is kept and
reported."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.models import Cdr
from emsp.models import Partner, Token
from emsp.services import tokens
from ocpi.models import DataQualityIssue
from ocpi.normalize import Rejected, normalize_cdr
from tests.conftest import OcpiTestClient
from tests.factories import DriverFactory, PartnerFactory, TokenFactory

pytestmark = pytest.mark.django_db

LIST = "/ocpi/emsp/2.2.1/tokens"
CDRS = "/ocpi/emsp/2.2.1/cdrs"


def uids(response: Any) -> list[str]:
    assert (response.status_code, response.json()["status_code"]) == (200, 1000), response.json()
    return [t["uid"] for t in response.json()["data"]]


def next_path(response: Any) -> str:
    link = response.get("Link")
    return link[1 : link.index(">")].split("8000", 1)[1] if link else ""


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- 1. the list in creation order ---------------------------------------------------------------------------


def test_a_client_paging_by_offset_misses_no_token_changed_mid_crawl(ocpi: OcpiTestClient, settings: Any) -> None:
    """transport: "the sequence of objects mustn't change, or as little as possible"; mod_tokens: what is not in
    the response is no longer valid. In `last_updated` order the token changed after page 1 moved to the end and
    the one after it was never served, with X-Total-Count unchanged."""
    settings.OCPI_PAGE_LIMIT = 2
    base = timezone.now() - timedelta(days=1)
    made = [TokenFactory(last_updated=base + timedelta(minutes=i)) for i in range(5)]
    seen: list[str] = []
    offset = 0
    while True:
        response = ocpi.get(LIST, data={"offset": str(offset), "limit": "2"})
        assert response["X-Total-Count"] == "5"
        page = uids(response)
        seen += page
        if offset == 0:
            Token.objects.filter(pk=made[0].pk).update(last_updated=timezone.now())
        offset += len(page)
        if not page or offset >= int(response["X-Total-Count"]):
            break
    assert set(seen) == {t.uid for t in made}


def test_date_from_and_date_to_filter_on_last_updated_the_order_is_creation(ocpi: OcpiTestClient) -> None:
    now = timezone.now()
    first = TokenFactory(last_updated=now - timedelta(minutes=1))
    TokenFactory(last_updated=now - timedelta(days=10))
    third = TokenFactory(last_updated=now - timedelta(minutes=5))
    assert uids(ocpi.get(LIST, data={"date_from": stamp(now - timedelta(hours=1))})) == [first.uid, third.uid]
    window = {"date_from": stamp(now - timedelta(hours=1)), "date_to": stamp(now - timedelta(minutes=3))}
    assert uids(ocpi.get(LIST, data=window)) == [third.uid]


def test_following_the_link_of_a_date_from_pull_serves_each_token_once_in_creation_order(
    ocpi: OcpiTestClient, settings: Any
) -> None:
    settings.OCPI_PAGE_LIMIT = 2
    now = timezone.now()
    wanted = []
    for i in range(5):  # created in turn, each changed earlier than the one before; one old token between
        wanted.append(TokenFactory(last_updated=now - timedelta(minutes=10 + i)))
        TokenFactory(last_updated=now - timedelta(days=10))
    response = ocpi.get(LIST, data={"date_from": stamp(now - timedelta(hours=1))})
    served = uids(response)
    while path := next_path(response):
        assert "date_from=" in path
        response = ocpi.get(path)
        assert response["X-Total-Count"] == "5"
        served += uids(response)
    assert served == [t.uid for t in wanted]


# --- 2. X-Total-Count counted on every page ---------------------------------------------------------------


def test_a_token_created_during_a_pull_raises_the_next_pages_count(ocpi: OcpiTestClient, settings: Any) -> None:
    """transport: a client detects a new object: "the X-Total-Count will be higher on the next call"."""
    settings.OCPI_PAGE_LIMIT = 2
    for _ in range(5):
        TokenFactory()
    first = ocpi.get(LIST)
    assert first["X-Total-Count"] == "5"
    created = TokenFactory()
    second = ocpi.get(next_path(first))
    assert "after=" in next_path(first) and second["X-Total-Count"] == "6"
    served = uids(first) + uids(second)
    response = second
    while path := next_path(response):
        response = ocpi.get(path)
        served += uids(response)
    assert served[-1] == created.uid and len(set(served)) == 6


def test_a_token_leaving_the_date_to_window_during_a_pull(ocpi: OcpiTestClient, settings: Any) -> None:
    """transport's NOTE on `date_to`: a client paging by offset sees "X-Total-Count will be lower in the next
    request" (counted afresh) and steps back; one following our Link has nothing to step back for: the page
    starts after the last token served."""
    settings.OCPI_PAGE_LIMIT = 2
    base = timezone.now() - timedelta(days=1)
    made = [TokenFactory(last_updated=base + timedelta(minutes=i)) for i in range(5)]
    window = {"date_to": stamp(timezone.now() - timedelta(hours=1))}
    first = ocpi.get(LIST, data=window)
    assert first["X-Total-Count"] == "5"
    Token.objects.filter(pk=made[0].pk).update(last_updated=timezone.now())
    by_offset = ocpi.get(LIST, data={**window, "offset": "2", "limit": "2"})
    assert by_offset["X-Total-Count"] == "4" and uids(by_offset) == [made[3].uid, made[4].uid]
    followed = ocpi.get(next_path(first))
    assert uids(followed) == [made[2].uid, made[3].uid]


def test_a_followed_page_never_counts_fewer_than_served_while_its_link_says_more(
    ocpi: OcpiTestClient, settings: Any
) -> None:
    """A token changed into the `date_from` window during a pull, its key below the highest of the first page, is
    served by the pages after the cursor but counted neither by the first count nor beyond that key: X-Total-Count
    said 4 with 4 served and a Link to more, and a client stopping at the count missed the rest."""
    settings.OCPI_PAGE_LIMIT = 2
    now = timezone.now()
    TokenFactory(uid="A", last_updated=now - timedelta(minutes=30))
    TokenFactory(uid="B", last_updated=now - timedelta(days=10))
    TokenFactory(uid="C", last_updated=now - timedelta(minutes=20))
    changed = TokenFactory(uid="D", last_updated=now - timedelta(days=10))
    TokenFactory(uid="E", last_updated=now - timedelta(minutes=10))
    TokenFactory(uid="F", last_updated=now - timedelta(minutes=5))
    first = ocpi.get(LIST, data={"date_from": stamp(now - timedelta(hours=1))})
    assert uids(first) == ["A", "C"] and first["X-Total-Count"] == "4"
    Token.objects.filter(pk=changed.pk).update(last_updated=timezone.now())
    second = ocpi.get(next_path(first))
    assert uids(second) == ["D", "E"] and next_path(second)
    assert second["X-Total-Count"] == "5"
    third = ocpi.get(next_path(second))
    assert uids(third) == ["F"] and third["X-Total-Count"] == "5" and not next_path(third)


def test_a_pull_following_a_link_of_the_earlier_shape_starts_the_list_again(
    ocpi: OcpiTestClient, settings: Any
) -> None:
    """A CPO mid-pull when the list changed to creation order follows a Link of the earlier shape
    (`after=offset.micros.key.total`): its first page came in `last_updated` order, and serving it on by offset in
    key order skipped tokens. It gets the list again from the first token, the count raised by its offset."""
    settings.OCPI_PAGE_LIMIT = 2
    now = timezone.now()
    made = [TokenFactory(uid=f"T{i}", last_updated=now - timedelta(minutes=i)) for i in range(6)]
    old_order = sorted(made, key=lambda t: (t.last_updated, t.pk))
    last = old_order[1]
    micros = (last.last_updated - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    served = [t.uid for t in old_order[:2]]
    response = ocpi.get(f"{LIST}?offset=2&limit=2&after=2.{micros}.{last.pk}.6")
    assert uids(response) == ["T0", "T1"] and response["X-Total-Count"] == "8"
    served += uids(response)
    offset = 2 + len(uids(response))
    while path := next_path(response):
        assert f"offset={offset}&" in path
        response = ocpi.get(path)
        assert response["X-Total-Count"] == "8"
        served += uids(response)
        offset += len(uids(response))
    assert sorted(set(served)) == sorted(t.uid for t in made)
    assert offset == 8


# --- 3. limit ------------------------------------------------------------------------------------------------


def test_a_large_limit_is_capped_to_our_page_size(ocpi: OcpiTestClient, settings: Any) -> None:
    """transport's example: `?limit=2000` answered with the server's page size, `X-Limit` saying it."""
    settings.OCPI_PAGE_LIMIT = 2
    for _ in range(5):
        TokenFactory()
    for limit in ("2000", "2147483647", "1000000000001", "9" * 5000, " 2147483647 "):
        response = ocpi.get(LIST, data={"limit": limit})
        assert len(uids(response)) == 2, limit[:20]
        assert (response["X-Limit"], response["X-Total-Count"]) == ("2", "5")
        assert "limit=2&" in next_path(response) or next_path(response).endswith("limit=2")


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "-1"},
        {"limit": "-99999999999999999999"},
        {"limit": "ten"},
        {"limit": "1\x00"},
        {"limit": "1.5"},
        {"offset": "-1"},
        {"offset": "2147483647"},
        {"offset": "9" * 5000},
        {"date_from": "9999-99-99T00:00:00Z"},
        {"date_to": "yesterday"},
    ],
)
def test_what_is_no_count_or_beyond_any_page_is_still_2001(ocpi: OcpiTestClient, query: dict[str, str]) -> None:
    TokenFactory()
    response = ocpi.get(LIST, data=query)
    assert (response.status_code, response.json()["status_code"]) == (200, 2001)


# --- 4. authorization without `type` ---------------------------------------------------------------------


def authorize(client: OcpiTestClient, uid: str, query: str = "", version: str = "2.2.1") -> Any:
    return client.post(f"/ocpi/emsp/{version}/tokens/{uid}/authorize{query}", None)


@pytest.mark.parametrize("version", ["2.2.1", "2.3.0", "2.1.1"])
def test_without_type_an_app_token_is_unknown(ocpi: OcpiTestClient, version: str) -> None:
    """mod_tokens (every version): `type` "Default if omitted: RFID". Our app tokens' uids are 16 hex digits, as
    an RFID card's UID may be: a card reading as one was allowed on the app user's account."""
    TokenFactory(uid="0A1B2C3D4E5F6071", type=Token.Type.APP_USER)
    response = authorize(ocpi, "0a1b2c3d4e5f6071", version=version)
    assert (response.status_code, response.json()["status_code"]) == (404, 2004)
    assert "data" not in response.json()


def test_without_type_the_rfid_token_of_that_uid_is_answered(ocpi: OcpiTestClient) -> None:
    driver = DriverFactory()
    TokenFactory(uid="SAME0001", type=Token.Type.APP_USER, driver=driver)  # the older one
    TokenFactory(uid="SAME0001", type=Token.Type.RFID, driver=driver, is_blocked=True)
    data = authorize(ocpi, "SAME0001").json()["data"]
    assert (data["allowed"], data["token"]["type"]) == ("BLOCKED", "RFID")
    data = authorize(ocpi, "SAME0001", "?type=APP_USER").json()["data"]
    assert (data["allowed"], data["token"]["type"]) == ("ALLOWED", "APP_USER")


def test_the_service_without_type_looks_for_an_rfid_token(partner: Partner) -> None:
    TokenFactory(uid="APPONLY1", type=Token.Type.APP_USER)
    with pytest.raises(tokens.UnknownToken):
        tokens.token_authorize(uid="APPONLY1", token_type=None, partner=partner)
    found = tokens.token_authorize(uid="APPONLY1", token_type=Token.Type.APP_USER, partner=partner)
    assert found.token.type == Token.Type.APP_USER


def test_a_2_1_1_other_is_one_of_our_app_and_ad_hoc_tokens_not_the_rfid_one(ocpi: OcpiTestClient) -> None:
    """2.1.1 TokenType is RFID or OTHER, and our app and ad-hoc tokens travel as OTHER; its parameter table names
    the parameter `token_type` (its URL example `type`)."""
    driver = DriverFactory()
    TokenFactory(uid="BOTH0001", type=Token.Type.RFID, driver=driver, is_blocked=True)
    TokenFactory(uid="BOTH0001", type=Token.Type.APP_USER, driver=driver)
    for query in ("?type=OTHER", "?token_type=OTHER", "?token_type=other"):
        assert authorize(ocpi, "BOTH0001", query, "2.1.1").json()["data"] == {"allowed": "ALLOWED"}, query
    for query in ("", "?type=RFID", "?token_type=RFID"):
        assert authorize(ocpi, "BOTH0001", query, "2.1.1").json()["data"] == {"allowed": "BLOCKED"}, query


# --- 5. AuthorizationInfo: NOT_ALLOWED with a valid token ------------------------------------------------


def test_not_allowed_comes_with_the_token_valid(ocpi: OcpiTestClient, partner: Partner) -> None:
    """AllowedType NOT_ALLOWED: "Token is valid, but is not allowed to charge at the given location"."""
    token = TokenFactory(uid="ELSEWHERE1")
    token.allowed_partners.add(PartnerFactory(party_id="OTH"))
    data = authorize(ocpi, "ELSEWHERE1").json()["data"]
    assert (data["allowed"], data["token"]["valid"]) == ("NOT_ALLOWED", True)
    # Our list and pushes to this CPO still say not valid: its copy serves only its own charge points, where the
    # token may charge nowhere, and a CPO that whitelists never asks (ocpi/rendering.py::token_as_ocpi).
    assert {t["uid"]: t["valid"] for t in ocpi.get(LIST).json()["data"]} == {"ELSEWHERE1": False}


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        ({"is_blocked": True}, "BLOCKED"),
        ({"valid": False}, "BLOCKED"),
        ({"expires_at": timezone.now() - timedelta(minutes=1)}, "EXPIRED"),
    ],
)
def test_a_token_blocked_or_expired_comes_not_valid(
    ocpi: OcpiTestClient, partner: Partner, change: dict[str, Any], allowed: str
) -> None:
    token = TokenFactory(uid="REFUSED1", **change)
    token.allowed_partners.add(partner)
    data = authorize(ocpi, "REFUSED1").json()["data"]
    assert (data["allowed"], data["token"]["valid"]) == (allowed, False)


# --- 6. a non-credit CDR id over 36 characters -------------------------------------------------------------


@pytest.fixture
def cdr(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("cdr_example.json")


def test_a_non_credit_cdr_id_of_37_to_39_characters_is_kept_and_reported(
    client_for: Callable[..., OcpiTestClient], cdr: dict[str, Any]
) -> None:
    """mod_cdrs CDR.id: "Normal (non-credit) CDRs SHALL only have an ID with a maximum length of 36". The CDR is
    the bill: kept, and staff see the finding."""
    bec = client_for("BE", "BEC")
    for length in (37, 39):
        cdr_id = "C" * length
        response = bec.post(CDRS, {**cdr, "id": cdr_id})
        assert (response.status_code, response.json()["status_code"]) == (201, 1000)
        assert Cdr.objects.filter(cdr_id=cdr_id).exists()
        finding = DataQualityIssue.objects.get(object_id=cdr_id, code="id_too_long")
        assert (finding.path, finding.fixed) == ("id", False)
        assert "kept" in finding.message


def test_an_id_the_spec_allows_is_no_finding(cdr: dict[str, Any]) -> None:
    credited = {"excl_vat": -4.0, "incl_vat": -4.4}  # mod_cdrs: a credit CDR's total_cost is negative
    for body in (
        {**cdr, "id": "C" * 36},
        {**cdr, "id": "C" * 39, "credit": True, "credit_reference_id": "12345", "total_cost": credited},
        {**cdr, "id": "C" * 37, "credit": "true", "credit_reference_id": "12345", "total_cost": credited},  # a boolean
    ):
        _, issues = normalize_cdr(body, country_code="BE", party_id="BEC")
        assert [i for i in issues if i.code == "id_too_long"] == [], body["id"]


def test_a_cdr_id_longer_than_39_is_still_refused(cdr: dict[str, Any]) -> None:
    """Longer than any CDR id and than our key: cutting it could merge two CDRs (read_identifier)."""
    with pytest.raises(Rejected, match=r"id missing"):
        normalize_cdr({**cdr, "id": "C" * 40}, country_code="BE", party_id="BEC")
