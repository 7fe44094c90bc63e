"""A stored token whose uid holds a `/` (legacy rows: new ones are refused, emsp/models/drivers.py) can be authorized:
POST …/tokens/AB%2F12/authorize. WSGI decodes the %2F before routing, and `tokens/<str:token_uid>/authorize` took
no `/`: the request found no route (2001), and such a token could never charge. A route of its own takes the uid
up to the trailing /authorize (ocpi/urls.py), tried only where the plain one matched nothing.

RAW_URI is the path as gunicorn received it (transport.refuse_an_encoded_slash reads it): given here as gunicorn
gives it, or left out as the test client does."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.urls import resolve, reverse

from emsp.models import Partner, Token
from ocpi import push
from ocpi.wsgi_lane import OcpiLane
from tests.conftest import CPO_TOKEN, OcpiTestClient
from tests.factories import TokenFactory
from tests.wsgi_calls import call_wsgi

pytestmark = pytest.mark.django_db

UID = "AB/12"
ENCODED = "AB%2F12"


@pytest.fixture
def legacy_token() -> Token:
    """A token stored before uids with `/` were refused (the factory does not run the model's validators)."""
    return TokenFactory(uid=UID)


def authorize(client: OcpiTestClient, path: str, *, raw: bool = True) -> Any:
    extra = {"RAW_URI": path} if raw else {}
    return client.post(path, None, **extra).json()


@pytest.mark.parametrize("raw", [True, False], ids=["raw-uri-given", "no-raw-uri"])
@pytest.mark.parametrize("version", ["2.2.1", "2.1.1", "2.3.0"])
def test_a_token_whose_uid_holds_a_slash_is_authorized_by_its_encoded_path(
    ocpi: OcpiTestClient, legacy_token: Token, version: str, raw: bool
) -> None:
    body = authorize(ocpi, f"/ocpi/emsp/{version}/tokens/{ENCODED}/authorize?type=RFID", raw=raw)
    assert body["status_code"] == 1000, body
    assert body["data"]["allowed"] == "ALLOWED"
    if version != "2.1.1":  # 2.1.1's AuthorizationInfo carries no token
        assert body["data"]["token"]["uid"] == UID


def test_an_unknown_uid_holding_a_slash_is_2004_not_2001(ocpi: OcpiTestClient, legacy_token: Token) -> None:
    path = "/ocpi/emsp/2.2.1/tokens/AB%2F13/authorize"
    response = ocpi.post(path, None, RAW_URI=path)
    assert (response.status_code, response.json()["status_code"]) == (404, 2004)


def test_an_encoded_slash_before_authorize_is_no_authorization(ocpi: OcpiTestClient, legacy_token: Token) -> None:
    """`tokens/AB%2F12%2Fauthorize` decodes to the same path as `tokens/AB/12/authorize`; it names no action on a
    token `AB/12` (nor on `AB`: the plain route refuses a %2F as before)."""
    TokenFactory(uid="AB")
    for path in ("/ocpi/emsp/2.2.1/tokens/AB%2F12%2Fauthorize", "/ocpi/emsp/2.2.1/tokens/AB%2Fauthorize"):
        body = authorize(ocpi, path)
        assert body["status_code"] == 2001, (path, body)


def test_the_route_shadows_no_other() -> None:
    """Every other path resolves as before: a uid without `/` to the plain route (which the lane serves directly),
    the list, the glued form (mod_tokens' `{endpoint}{uid}/authorize`) and the other modules' routes."""
    plain = "tokens/<str:token_uid>/authorize"
    assert resolve("/ocpi/emsp/2.2.1/tokens/AB12/authorize").route.endswith(plain)
    assert resolve("/ocpi/emsp/2.2.1/tokens/AB12/authorize").kwargs == {"token_uid": "AB12"}
    assert resolve("/ocpi/emsp/2.2.1/tokens").route.endswith("tokens")
    assert resolve("/ocpi/emsp/2.2.1/tokensAB12/authorize").kwargs == {"token_uid": "AB12"}
    assert resolve("/ocpi/emsp/2.2.1/tokens/AB/12/authorize").kwargs == {"token_uid": "AB/12"}
    assert resolve("/ocpi/emsp/2.2.1/commands/START_SESSION/u1").url_name == "command-result"
    assert resolve("/ocpi/emsp/2.2.1/cdrs/IN/CPA/C/1").kwargs["cdr_id"] == "C/1"
    lane = OcpiLane(WSGIHandler())
    assert {route.label for route in lane.direct} == {
        "/ocpi/emsp/2.2.1/locations/<str:country_code>/<str:party_id>/<str:location_id>/<str:evse_uid>",
        "/ocpi/emsp/2.2.1/" + plain,
    }


def test_through_the_lane_as_gunicorn_hands_it(partner: Partner, legacy_token: Token) -> None:
    """The lane's direct route takes no `/`: the request goes on to Django's handler, and is answered there."""
    path = f"/ocpi/emsp/2.2.1/tokens/{ENCODED}/authorize"
    auth = {"Authorization": "Token " + base64.b64encode(CPO_TOKEN.encode()).decode()}
    status, _, content = call_wsgi(OcpiLane(WSGIHandler()), "POST", path, b"", auth, RAW_URI=path)
    body = orjson.loads(content)
    assert (status, body["status_code"], body["data"]["token"]["uid"]) == ("200 OK", 1000, UID)


def test_urls_we_make_for_such_a_token_lead_back_to_it(ocpi: OcpiTestClient, legacy_token: Token) -> None:
    """Our own URL of its authorization resolves to the uid whole; the PUT we push it with percent-encodes it;
    our token list serves it as it is."""
    url = reverse("ocpi:token-authorize", kwargs={"token_uid": UID})
    assert resolve(url).kwargs == {"token_uid": UID}
    (delivery,) = push.token_changed(legacy_token)
    assert delivery.path.endswith(f"/{ENCODED}?type=RFID") and UID not in delivery.path, delivery.path
    assert UID in [token["uid"] for token in ocpi.get("/ocpi/emsp/2.2.1/tokens").json()["data"]]
