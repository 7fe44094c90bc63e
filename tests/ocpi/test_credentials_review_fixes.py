"""Review fixes in the credentials handshake and token pushes, against a scripted CPO behind the outbound seam:
an odd answer to our registration POST leaves nothing behind; odd version details are 3001, never a 500; two
pushes of one token in flight leave the CPO with the token as it is; a rotation answered by a gateway error or
a page that is not OCPI keeps both tokens; a refused re-registration keeps a connected partner's token; no
RegistrationError text carries a credentials token. Hostile answers: a Link header costs no more than its
length, deeply nested JSON and a NUL in version details are refused (3001, a RegistrationError, a failed pull),
never a 500; version details of another version are 3002; endpoint URLs we would not call, repeats and more than
a hundred endpoints are not stored; a registration whose save fails leaves nothing behind."""

from __future__ import annotations

import base64
import contextlib
import logging
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.db import DataError
from django.db import transaction as django_transaction
from django.test import Client
from django.urls import reverse

from emsp import outbox
from emsp.models import Delivery, Location, Partner, Token, hash_token
from emsp.models.breakers import CircuitBreaker
from emsp.services import tokens as token_services
from ocpi import credentials, push, sync, transport
from ocpi.client import OcpiClient, OcpiClientError, OcpiReplyError
from ocpi.credentials import RegistrationError, RotationError, register_with_partner, rotate_credentials, unregister
from ocpi.models import CredentialsRotation, OcpiMessage, PushDelivery, SyncRun
from tests.conftest import OcpiTestClient
from tests.factories import DriverFactory, PartnerFactory, stored_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9999/ocpi"
MODULES = ["credentials", "locations", "tariffs", "sessions", "cdrs", "tokens", "commands"]
RECEIVERS = {"credentials", "tokens", "commands"}
CPO_CREDENTIALS = {
    "token": "token-b-from-cpo",
    "url": f"{CPO}/versions",
    "roles": [{"role": "CPO", "party_id": "CPA", "country_code": "IN", "business_details": {"name": "CPO A"}}],
}
OLD_IN = "old-token-the-cpo-uses"
OLD_OUT = "old-token-we-use"


def details(version: str = "2.2.1") -> dict[str, Any]:
    endpoints = [
        {"identifier": m, "role": "RECEIVER" if m in RECEIVERS else "SENDER", "url": f"{CPO}/{version}/{m}"}
        for m in MODULES
    ]
    return {"version": version, "endpoints": endpoints}


def script_cpo(peer: FakePeer, version_details: Any = None) -> None:
    peer.route("GET", f"{CPO}/versions", (200, envelope([{"version": "2.2.1", "url": f"{CPO}/2.2.1"}])))
    peer.route("GET", f"{CPO}/2.2.1", (200, envelope(details() if version_details is None else version_details)))


def works(token: str) -> bool:
    return OcpiTestClient(token).get("/ocpi/emsp/2.2.1/tokens").status_code == 200


def b64(token: str) -> str:
    return base64.b64encode(token.encode()).decode()


# -- 1. a garbage answer to our registration POST ----------------------------------------------------------------


@pytest.mark.parametrize("data", [5, "not-an-object", [{"a": 1}, {"b": 2}]])
def test_a_garbage_answer_to_our_post_leaves_no_partner_whose_token_b_works(peer: FakePeer, data: Any) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope(data)))
    with pytest.raises(RegistrationError, match="credentials POST refused"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a")
    token_b = peer.requests_to("/credentials")[0]["json"]["token"]
    assert not Partner.objects.filter(incoming_token_hash=hash_token(token_b)).exists()
    assert not Partner.objects.exists()  # the provisional row made for the attempt is gone
    assert not works(token_b)


def test_the_console_shows_a_garbage_answer_as_a_failed_registration(
    peer: FakePeer, login: Callable[[str], Client]
) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope(5)))
    response = login("admin").post(
        reverse("admin:emsp_partner_register"), {"versions_url": f"{CPO}/versions", "token_a": "token-a"}
    )
    assert response.status_code == 200
    assert "Registration failed: credentials POST refused" in response.content.decode()
    assert not Partner.objects.exists()


# -- 2. odd version details from a CPO registering with us ---------------------------------------------------------


ODD_DETAILS = [
    {"version": "2.2.1", "endpoints": 5},
    {"version": "2.2.1", "endpoints": "credentials"},
    "not-an-object",
    7,
]


@pytest.fixture
def waiting_partner(db: None) -> tuple[Partner, str]:
    partner = PartnerFactory(
        country_code="IN", party_id="CPA", state=Partner.State.NEW, outgoing_token="", endpoints=[]
    )
    token_a = partner.issue_token_a()
    partner.save()
    return partner, token_a


@pytest.mark.parametrize("odd", ODD_DETAILS)
def test_odd_version_details_on_post_are_3001_and_nothing_is_stored(
    peer: FakePeer, waiting_partner: tuple[Partner, str], odd: Any
) -> None:
    partner, token_a = waiting_partner
    state = partner.state
    script_cpo(peer, odd)
    response = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS)
    assert response.status_code == 200
    body = response.json()
    assert body["status_code"] == 3001
    assert body["status_message"].startswith("Could not use your versions endpoint")
    partner.refresh_from_db()
    assert (partner.state, partner.outgoing_token, partner.incoming_token_hash) == (state, "", "")
    assert partner.token_a_hash  # Token A not spent: the CPO may try again
    assert OcpiTestClient(token_a).get("/ocpi/versions").status_code == 200


@pytest.mark.parametrize("odd", ODD_DETAILS)
def test_odd_version_details_on_put_are_3001_and_the_old_tokens_stay(peer: FakePeer, odd: Any) -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA", outgoing_token=OLD_OUT)
    Partner.objects.filter(pk=partner.pk).update(incoming_token_hash=hash_token(OLD_IN))
    script_cpo(peer, odd)
    response = OcpiTestClient(OLD_IN).put("/ocpi/2.2.1/credentials", {**CPO_CREDENTIALS, "token": "new-b"})
    assert response.status_code == 200
    assert response.json()["status_code"] == 3001
    partner.refresh_from_db()
    assert (partner.outgoing_token, partner.incoming_token_hash) == (OLD_OUT, hash_token(OLD_IN))
    assert works(OLD_IN)


def test_odd_version_details_when_we_register_are_a_registration_error(peer: FakePeer) -> None:
    script_cpo(peer, {"version": "2.2.1", "endpoints": 5})
    with pytest.raises(RegistrationError, match="cannot read the partner's versions"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a")
    assert not peer.requests_to("/credentials")
    assert not Partner.objects.exists()


# -- 3. two pushes of one token in flight ----------------------------------------------------------------------------


TOKENS = "http://127.0.0.1:9/ocpi/cpo/2.2.1/tokens"  # tests/factories.py PartnerFactory


def test_a_push_landing_after_a_newer_one_is_followed_by_the_token_as_it_is(peer: FakePeer, partner: Partner) -> None:
    """A's PUT reads the token (valid) and is under way; meanwhile the token is blocked and B's PUT (blocked)
    lands first; then A's lands: the CPO would keep valid=True. A push of the token as it is follows A."""
    token = token_services.token_issue(driver=DriverFactory())
    PushDelivery.objects.all().delete()
    [row_a] = push.token_changed(token)
    at_cpo: list[bool] = []

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if not at_cpo and len(peer.requests_to("/tokens/")) == 1:  # A is in flight: B happens and lands first
            token_services.token_set_blocked(token=Token.objects.get(pk=token.pk), blocked=True)
            row_b = PushDelivery.objects.exclude(pk=row_a.pk).get()
            assert outbox.deliver(row_b.pk).status == Delivery.Status.DELIVERED
        at_cpo.append(call["json"]["valid"])
        return 200, envelope(), {}

    peer.route("PUT", f"{TOKENS}/IN/EMS/{token.uid}", cpo)
    assert outbox.deliver(row_a.pk).status == Delivery.Status.DELIVERED
    assert at_cpo == [False, True]  # B landed, then A: the CPO holds the older state for now
    [again] = PushDelivery.objects.filter(status=Delivery.Status.PENDING)
    assert again.payload["valid"] is False
    assert outbox.deliver(again.pk).status == Delivery.Status.DELIVERED
    assert at_cpo[-1] is False  # the CPO's last word is ours: blocked
    assert not PushDelivery.objects.filter(status=Delivery.Status.PENDING).exists()  # and it ends there


def test_a_push_whose_token_did_not_change_is_not_followed(peer: FakePeer, partner: Partner) -> None:
    token = token_services.token_issue(driver=DriverFactory())
    [row] = PushDelivery.objects.all()
    peer.route("PUT", f"{TOKENS}/IN/EMS/{token.uid}", (200, envelope()))
    assert outbox.deliver(row.pk).status == Delivery.Status.DELIVERED
    assert PushDelivery.objects.count() == 1


# -- 4. our rotation answered by a gateway error or a page that is not OCPI ----------------------------------------


def connected() -> Partner:
    endpoints = [
        {"identifier": m, "role": r, "url": f"{CPO}/2.2.1/{m}"}
        for m, r in [("credentials", "RECEIVER"), ("locations", "SENDER"), ("tokens", "RECEIVER")]
    ]
    return PartnerFactory(
        country_code="IN",
        party_id="CPA",
        versions_url=f"{CPO}/versions",
        endpoints=endpoints,
        outgoing_token=OLD_OUT,
        incoming_token_hash=hash_token(OLD_IN),
    )


@pytest.mark.parametrize(
    "answer",
    [
        (200, b"<html>ok</html>"),
        (502, b"<html>Bad gateway</html>"),
        (504, b"<html>Gateway timeout</html>"),
        (500, envelope(status_code=3000)),
        (200, {"token": "new-token-we-use", "url": f"{CPO}/versions"}),  # JSON, but no envelope
        (200, envelope(5)),
        (200, envelope([{"a": 1}, {"b": 2}])),
    ],
)
def test_a_rotation_without_a_usable_answer_keeps_both_tokens(peer: FakePeer, answer: tuple[int, Any]) -> None:
    partner = connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", answer)
    with pytest.raises(RotationError, match="both stay valid"):
        rotate_credentials(partner)
    new_in = peer.requests_to("/credentials")[0]["json"]["token"]
    assert works(OLD_IN) and works(new_in)  # the CPO may have switched to it
    partner.refresh_from_db()
    assert partner.outgoing_token == OLD_OUT
    assert CredentialsRotation.objects.get().outcome == CredentialsRotation.Outcome.PENDING


@pytest.mark.parametrize("answer", [(400, b"<html>Bad request</html>"), (200, envelope(None, status_code=2001))])
def test_a_rotation_refused_in_so_many_words_keeps_only_the_old_token(peer: FakePeer, answer: tuple[int, Any]) -> None:
    partner = connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", answer)
    with pytest.raises(RotationError, match="old tokens stay"):
        rotate_credentials(partner)
    new_in = peer.requests_to("/credentials")[0]["json"]["token"]
    assert works(OLD_IN) and not works(new_in)


def test_the_console_rotation_answered_with_odd_data_is_a_failure_not_a_500(
    peer: FakePeer, login: Callable[[str], Client]
) -> None:
    partner = connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", (200, envelope(5)))
    changelist = reverse("admin:emsp_partner_changelist")
    response = login("admin").post(
        changelist, {"action": "rotate_credentials", "_selected_action": [partner.pk]}, follow=True
    )
    assert response.status_code == 200
    assert "Rotation with" in response.content.decode()
    assert works(OLD_IN)


# -- 5. a refused re-registration of a connected partner -------------------------------------------------------------


def test_a_refused_re_registration_keeps_the_connected_partners_token(peer: FakePeer) -> None:
    partner = connected()
    assert works(OLD_IN)
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (405, envelope(status_code=2000)))
    with pytest.raises(CommandError, match="405"):
        call_command(
            "ocpi_register",
            "--versions-url",
            f"{CPO}/versions",
            "--token-a",
            "new-a",
            "--partner",
            "IN*CPA",
            "--no-sync",
        )
    token_b = peer.requests_to("/credentials")[0]["json"]["token"]
    partner.refresh_from_db()
    assert partner.state == Partner.State.CONNECTED
    assert partner.incoming_token_hash == hash_token(OLD_IN)
    assert partner.outgoing_token == OLD_OUT
    transport.forget_cached_tokens()  # as another process sees it, the cache aside
    assert works(OLD_IN)
    assert not works(token_b)


def test_a_refused_re_registration_leaves_no_cached_token_b(peer: FakePeer) -> None:
    """Token B of a connected partner is cached once used (the CPO reads our versions with it before answering,
    then a functional call): the refusal must not leave it working from the cache."""
    partner = connected()
    script_cpo(peer)

    def cpo_uses_token_b_then_refuses(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        assert works(call["json"]["token"])  # cached now, for a connected partner
        return 405, envelope(status_code=2000), {}

    peer.route("POST", f"{CPO}/2.2.1/credentials", cpo_uses_token_b_then_refuses)
    with pytest.raises(RegistrationError):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="new-a", partner=partner)
    token_b = peer.requests_to("/credentials")[0]["json"]["token"]
    assert not works(token_b)  # at once, in this process too
    assert works(OLD_IN)


def test_a_refused_re_registration_keeps_the_token_encoding(peer: FakePeer) -> None:
    partner = connected()
    assert partner.outgoing_token_base64 is True
    script_cpo(peer)
    peer.only_encoding, peer.refusal_status = "raw", 401  # Token A only raw: the attempt switches to raw
    peer.route("POST", f"{CPO}/2.2.1/credentials", (405, envelope(status_code=2000)))
    with pytest.raises(RegistrationError):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="new-a", partner=partner)
    partner.refresh_from_db()
    assert partner.outgoing_token_base64 is True


# -- 6. no token in a RegistrationError ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b'{"token": "cpo-secret-token-c", "url": "x"}',  # JSON without an envelope
        b'<html>{"token": "cpo-secret-token-c"}</html>',  # not JSON
        b"<html>" + b"x" * 170 + b'{"token": "cpo-secret-token-c-goes-on-past-the-excerpt"}',  # cut off
    ],
)
def test_a_registration_error_never_carries_a_token(peer: FakePeer, reply: bytes) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, reply))
    with pytest.raises(RegistrationError) as raised:
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-secret")
    text = str(raised.value)
    token_b = peer.requests_to("/credentials")[0]["json"]["token"]
    assert "cpo-secret" not in text
    assert "token-a-secret" not in text and token_b not in text
    assert "[redacted]" in text


@pytest.mark.parametrize(
    "excerpt",
    [
        b'{"token": "cpo-secret-token-c", "url": "x"}',
        b"<html>" + b"x" * 170 + b'{"token": "cpo-secret-token-c-goes-on-past-the-excerpt"}',
    ],
)
def test_a_registration_error_redacts_whatever_the_client_error_quotes(
    peer: FakePeer, monkeypatch: pytest.MonkeyPatch, excerpt: bytes
) -> None:
    """Whatever the client's error text quotes of a reply (ocpi/client.py: its first 200 bytes), the
    RegistrationError built from it carries no token."""
    script_cpo(peer)
    quoted = excerpt[:200].decode()

    def post(self: OcpiClient, method: str, url: str, **kwargs: Any) -> Any:
        if method != "POST":
            return real(self, method, url, **kwargs)
        raise OcpiReplyError(
            f"POST {url}: HTTP 200, not an OCPI answer: the body is not JSON: {quoted!r}", http_status=200
        )

    real = OcpiClient.request
    monkeypatch.setattr(OcpiClient, "request", post)
    with pytest.raises(RegistrationError) as raised:
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-secret")
    assert "cpo-secret" not in str(raised.value)
    assert "[redacted]" in str(raised.value)


def test_a_registration_error_never_carries_token_a_or_b(peer: FakePeer) -> None:
    script_cpo(peer)

    def echo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        # A CPO quoting what it got in its error (and the Authorization header it refused).
        said = f"bad token {call['json']['token']} with {call['headers']['Authorization']}"
        return 400, envelope(status_code=2001) | {"status_message": said}, {}

    peer.route("POST", f"{CPO}/2.2.1/credentials", echo)
    with pytest.raises(RegistrationError) as raised:
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-secret")
    text = str(raised.value)
    token_b = peer.requests_to("/credentials")[0]["json"]["token"]
    assert "HTTP 400" in text
    assert token_b not in text and "token-a-secret" not in text and b64("token-a-secret") not in text


@pytest.mark.parametrize("status", [200, 400, 502])
def test_a_rotation_error_never_carries_a_token(peer: FakePeer, monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    """Neither the CPO's token a reply quotes nor our new one a CPO echoes: the error is shown to staff, kept
    on the rotation and in the staff action."""
    partner = connected()
    sent: list[str] = []

    def put(self: OcpiClient, method: str, url: str, **kwargs: Any) -> Any:
        sent.append(kwargs["json"]["token"])
        quoted = '{"token": "cpo-secret-new-token", "url": "x"}'
        text = f"PUT {url}: HTTP {status} bad token {sent[0]}: {quoted!r}"
        raise (OcpiReplyError if status == 200 else OcpiClientError)(text, http_status=status)

    monkeypatch.setattr(OcpiClient, "request", put)
    with pytest.raises(RotationError) as raised:
        rotate_credentials(partner)
    for text in (str(raised.value), CredentialsRotation.objects.get().error):
        assert "cpo-secret" not in text and sent[0] not in text
        assert "[redacted]" in text


def test_a_partner_unregistered_while_a_re_registration_is_refused_stays_unregistered(peer: FakePeer) -> None:
    """Staff unregister the partner while our POST is out; the CPO then refuses it. The undo must not put back
    the token unregistering revoked."""
    partner = connected()
    script_cpo(peer)

    def staff_unregisters_meanwhile(call: dict[str, Any]) -> Any:
        unregister(Partner.objects.get(pk=partner.pk))
        return 405, envelope(status_code=2000), {}

    peer.route("POST", f"{CPO}/2.2.1/credentials", staff_unregisters_meanwhile)
    with pytest.raises(RegistrationError):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="new-a", partner=partner)
    partner.refresh_from_db()
    transport.forget_cached_tokens()
    assert partner.state == Partner.State.UNREGISTERED
    assert not works(OLD_IN)


def test_the_partners_put_during_a_failed_re_registration_stands(peer: FakePeer) -> None:
    """The CPO PUTs its credentials with our Token B while our POST is out (then the POST fails at a gateway):
    the Token C we gave in that PUT works, the older token does not come back."""
    partner = connected()
    script_cpo(peer)
    given: list[str] = []

    def cpo(call: dict[str, Any]) -> Any:
        answer = OcpiTestClient(call["json"]["token"]).put(
            "/ocpi/2.2.1/credentials", {**CPO_CREDENTIALS, "token": "cpo-new"}
        )
        given.append(answer.json()["data"]["token"])
        return 504, b"<html>gateway timeout</html>", {}

    peer.route("POST", f"{CPO}/2.2.1/credentials", cpo)
    with pytest.raises(RegistrationError):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="new-a", partner=partner)
    transport.forget_cached_tokens()
    assert works(given[0])
    assert not works(OLD_IN)


# -- 5. hostile answers: a Link header, deeply nested JSON, a NUL, details of another version, odd endpoints ----------

DEEP = b"[" * 1000 + b"]" * 1000  # orjson reads it (1024 levels at most); str() of it recurses past Python's limit
ENDPOINT = "http://127.0.0.1:9/ocpi/cpo/2.2.1"  # tests/factories.py PartnerFactory


def registered_cpo(peer: FakePeer, *, versions_body: Any = None, details_body: Any = None) -> None:
    """script_cpo with either answer given as it is (raw bytes: JSON that no dict can hold for the test)."""
    script_cpo(peer)
    if versions_body is not None:
        peer.route("GET", f"{CPO}/versions", (200, versions_body))
    if details_body is not None:
        peer.route("GET", f"{CPO}/2.2.1", (200, details_body))


def cpo_takes_our_post(peer: FakePeer) -> None:
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope({**CPO_CREDENTIALS, "token": "token-c-from-cpo"})))


def endpoints_with(index: int, **changed: Any) -> list[dict[str, Any]]:
    endpoints: list[dict[str, Any]] = details()["endpoints"]
    endpoints[index] = {**endpoints[index], **changed}
    return endpoints


def post_credentials(token_a: str) -> dict[str, Any]:
    response = OcpiTestClient(token_a).post("/ocpi/2.2.1/credentials", CPO_CREDENTIALS)
    assert response.status_code == 200, response.content[:300]
    return response.json()


def assert_nothing_stored(partner: Partner) -> None:
    """A CPO's POST refused: the partner waits as it did, its Token A still good for another try."""
    partner.refresh_from_db()
    assert (partner.state, partner.outgoing_token, partner.incoming_token_hash, partner.endpoints) == (
        Partner.State.TOKEN_A_ISSUED,
        "",
        "",
        [],
    )
    assert partner.token_a_hash


def assert_registration_left_nothing(peer: FakePeer) -> None:
    """Our registration failed: no partner row (the provisional one gone), Token B works nowhere."""
    assert not Partner.objects.exists()
    for call in peer.requests_to("/credentials"):
        assert not works(call["json"]["token"])


@pytest.mark.parametrize(
    "link",
    [
        "<" + " " * 2000,  # 11.7 s with the regular expression
        "<" * 60_000,  # 40 s
        "<https://127.0.0.1:9/ocpi/cpo/2.2.1/tariffs?offset=0&limit=10>; rel=prev, " * 1000,  # 75 KB
        "<" + "a " * 3000 + ";rel=next",
    ],
    ids=["open-bracket-and-spaces", "brackets", "long-list", "unclosed-under-the-limit"],
)
def test_a_pull_whose_link_header_is_hostile_ends_in_well_under_a_second(peer: FakePeer, link: str) -> None:
    partner = PartnerFactory()
    peer.route("GET", f"{ENDPOINT}/tariffs", lambda call: (200, envelope([]), {"Link": link}))
    started = time.monotonic()
    run = sync.sync_module(partner, "tariffs", full=True)
    elapsed = time.monotonic() - started
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run and run.error
    assert elapsed < 1.0, f"one page with a {len(link)}-character Link header took {elapsed:.1f} s"


def walked(peer: FakePeer, link: str) -> list[str]:
    """The URLs a walk asks for when the first page (one object, no total) carries `link`."""
    url = f"{ENDPOINT}/locations"

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        first = call["url"] == url
        return 200, envelope([{"id": "L1"}] if first else []), {"Link": link} if first else {}

    peer.route("GET", url, cpo)
    for _ in OcpiClient(PartnerFactory()).iter_pages(url, module="locations"):
        pass
    return [call["url"].removeprefix(url) for call in peer.calls]


@pytest.mark.parametrize(
    "link",
    [
        f'<{ENDPOINT}/locations?offset=1>; rel="next"',
        f"<{ENDPOINT}/locations?offset=1>;rel=next",
        f'<{ENDPOINT}/locations?offset=1>; REL="Next"',
        f'<{ENDPOINT}/locations?offset=1>; rel="prev next"',
        f'< {ENDPOINT}/locations?offset=1 >; rel="next"',
        f'<{ENDPOINT}/locations?offset=0>; rel="prev", <{ENDPOINT}/locations?offset=1>; rel="next"',
        f'<{ENDPOINT}/locations?offset=1>; title="first, then"; rel="next"',
        f'<{ENDPOINT}/locations?offset=1>; title="see also; rel=prev"; rel="next"',  # a quoted `;` separates nothing
        f'{ENDPOINT}/locations?offset=1; rel="next"',  # without the angle brackets
    ],
)
def test_a_next_link_is_read_as_rfc_8288_writes_it(peer: FakePeer, link: str) -> None:
    assert walked(peer, link) == ["", "?offset=1"]


def test_a_link_with_a_comma_in_its_url_is_followed_whole(peer: FakePeer) -> None:
    assert walked(peer, f'<{ENDPOINT}/locations?ids=a,b>; rel="next"') == ["", "?ids=a,b"]


@pytest.mark.parametrize(
    "link",
    [
        f'<{ENDPOINT}/locations?offset=1>; rel="prev"',
        f'<{ENDPOINT}/locations?offset=1>; rel="nextpage"',
        f"<{ENDPOINT}/locations?offset=1",  # no closing bracket
    ],
)
def test_a_link_naming_no_next_page_is_the_end(peer: FakePeer, link: str) -> None:
    assert walked(peer, link) == [""]


def test_a_link_header_longer_than_a_few_kilobytes_is_not_read(
    peer: FakePeer, caplog: pytest.LogCaptureFixture
) -> None:
    link = f'<{ENDPOINT}/locations?offset=1>; rel="next", ' + f'<{ENDPOINT}/locations>; rel="first", ' * 200
    with caplog.at_level(logging.WARNING, logger="ocpi.client"):
        assert walked(peer, link) == [""]  # as without one: no total, so that page was the list
    assert f"a Link header of {len(link)} characters" in caplog.text


def test_a_deeply_nested_status_message_in_the_versions_answer_is_3001_not_a_500(
    peer: FakePeer, waiting_partner: tuple[Partner, str]
) -> None:
    partner, token_a = waiting_partner
    registered_cpo(peer, versions_body=b'{"status_code": 1000, "status_message": ' + DEEP + b', "data": []}')
    body = post_credentials(token_a)
    assert body["status_code"] == 3001
    assert "nested deeper than" in body["status_message"]
    assert_nothing_stored(partner)


def test_a_deeply_nested_role_in_the_version_details_is_3001_not_a_500(
    peer: FakePeer, waiting_partner: tuple[Partner, str]
) -> None:
    partner, token_a = waiting_partner
    first = f'{{"identifier": "locations", "url": "{CPO}/2.2.1/locations", "role": '.encode() + DEEP + b"}"
    rest = b",".join(orjson.dumps(e) for e in details()["endpoints"])
    registered_cpo(
        peer,
        details_body=b'{"status_code": 1000, "data": {"version": "2.2.1", "endpoints": ['
        + first
        + b","
        + rest
        + b"]}}",
    )
    assert post_credentials(token_a)["status_code"] == 3001
    assert_nothing_stored(partner)


def test_deeply_nested_versions_when_we_register_are_a_registration_error(peer: FakePeer) -> None:
    registered_cpo(peer, versions_body=b'{"status_code": 1000, "data": [{"version": ' + DEEP + b', "url": "x"}]}')
    with pytest.raises(RegistrationError, match="cannot read the partner's versions"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo", name="X")
    assert_registration_left_nothing(peer)


def test_a_deeply_nested_status_code_is_a_failed_request_counted_and_logged(peer: FakePeer) -> None:
    partner = PartnerFactory()
    peer.route("GET", f"{ENDPOINT}/locations", (200, b'{"status_code": ' + DEEP + b"}"))
    with pytest.raises(OcpiReplyError, match="nested deeper than"):
        OcpiClient(partner).get(f"{ENDPOINT}/locations", module="locations")
    assert OcpiMessage.objects.filter(partner=partner, module="locations").exclude(error="").exists()
    assert CircuitBreaker.objects.get(partner=partner, module="locations").failures == 1


def test_a_pull_answered_with_a_deeply_nested_status_message_fails_and_the_others_go_on(peer: FakePeer) -> None:
    partner = PartnerFactory()
    peer.route("GET", f"{ENDPOINT}/locations", (200, b'{"status_code": 1000, "status_message": ' + DEEP + b"}"))
    for module in ("tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{ENDPOINT}/{module}", (200, envelope([])))
    runs = sync.sync_partner(partner, full=True)
    assert [(r.module, r.outcome) for r in runs] == [
        ("locations", SyncRun.Outcome.FAILED),
        ("tariffs", SyncRun.Outcome.OK),
        ("sessions", SyncRun.Outcome.OK),
        ("cdrs", SyncRun.Outcome.OK),
    ]
    assert "nested deeper than" in runs[0].error
    assert not SyncRun.objects.filter(outcome=SyncRun.Outcome.RUNNING).exists()


@pytest.mark.parametrize("field", ["url", "identifier", "role"])
def test_a_nul_in_the_version_details_is_3001_not_a_500(
    peer: FakePeer, waiting_partner: tuple[Partner, str], field: str
) -> None:
    partner, token_a = waiting_partner
    value = {"url": f"{CPO}/2.2.1/loc\x00ations", "identifier": "loc\x00ations", "role": "SEN\x00DER"}[field]
    script_cpo(peer, {"version": "2.2.1", "endpoints": endpoints_with(1, **{field: value})})
    body = post_credentials(token_a)
    assert body["status_code"] == 3001
    assert "NUL" in body["status_message"]
    assert_nothing_stored(partner)


def test_a_nul_in_the_version_details_on_put_is_3001_and_the_old_tokens_stay(peer: FakePeer) -> None:
    partner = connected()
    script_cpo(peer, {"version": "2.2.1", "endpoints": endpoints_with(2, url=f"{CPO}/2.2.1/ta\x00riffs")})
    response = OcpiTestClient(OLD_IN).put("/ocpi/2.2.1/credentials", {**CPO_CREDENTIALS, "token": "new-b"})
    assert response.json()["status_code"] == 3001
    partner.refresh_from_db()
    assert (partner.outgoing_token, partner.incoming_token_hash) == (OLD_OUT, hash_token(OLD_IN))


def test_a_nul_in_the_version_details_when_we_register_is_a_registration_error(peer: FakePeer) -> None:
    script_cpo(peer, {"version": "2.2.1", "endpoints": endpoints_with(2, url=f"{CPO}/2.2.1/ta\x00riffs")})
    cpo_takes_our_post(peer)
    with pytest.raises(RegistrationError, match="NUL"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo", name="X")
    assert not peer.requests_to("/credentials")  # refused before the CPO gave us a token
    assert_registration_left_nothing(peer)


def test_a_registration_whose_save_fails_leaves_nothing_behind(peer: FakePeer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPO took our POST and answered with Token C, then storing the partner failed: the provisional row had
    stayed, renamed to the CPO's party, in state NEW, with Token B working."""
    script_cpo(peer)
    cpo_takes_our_post(peer)

    def fails(partner: Partner) -> None:
        raise DataError("unsupported Unicode escape sequence")

    monkeypatch.setattr(push, "tokens_to_new_partner", fails)
    with pytest.raises(RegistrationError, match="could not be stored") as raised:
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo", name="X")
    assert "token-c-from-cpo" not in str(raised.value)
    assert_registration_left_nothing(peer)


def test_a_failed_save_leaves_the_partner_staff_set_up_as_it_was(
    peer: FakePeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPO answered as the party of a partner staff set up (not connected): the provisional row merges into
    it. A save failing then leaves that partner as it was and no provisional row."""
    staff_made = PartnerFactory(
        country_code="IN", party_id="CPA", state=Partner.State.NEW, outgoing_token="", endpoints=[]
    )
    script_cpo(peer)
    cpo_takes_our_post(peer)

    def fails(partner: Partner) -> None:
        raise DataError("unsupported Unicode escape sequence")

    monkeypatch.setattr(push, "tokens_to_new_partner", fails)
    with pytest.raises(RegistrationError):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo", name="X")
    assert list(Partner.objects.values_list("pk", "state", "incoming_token_hash", "outgoing_token")) == [
        (staff_made.pk, Partner.State.NEW, "", "")
    ]
    assert not works(peer.requests_to("/credentials")[0]["json"]["token"])


def details_of_211() -> dict[str, Any]:
    return {"version": "2.1.1", "endpoints": [{"identifier": m, "url": f"{CPO}/2.1.1/{m}"} for m in MODULES]}


def test_details_of_another_version_than_the_one_registered_in_are_3002(
    peer: FakePeer, waiting_partner: tuple[Partner, str]
) -> None:
    """The versions list says 2.2.1 is at {CPO}/2.2.1, but what is there are 2.1.1 details (no roles): they had
    been taken, the partner CONNECTED in 2.2.1 with 2.1.1 endpoints."""
    partner, token_a = waiting_partner
    script_cpo(peer, details_of_211())
    body = post_credentials(token_a)
    assert body["status_code"] == 3002
    assert "'2.1.1'" in body["status_message"]
    assert_nothing_stored(partner)


def test_details_of_another_version_when_we_register_are_a_registration_error(peer: FakePeer) -> None:
    script_cpo(peer, details_of_211())
    cpo_takes_our_post(peer)
    with pytest.raises(RegistrationError, match=r"are for OCPI '2\.1\.1', not 2\.2\.1"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo", name="X")
    assert_registration_left_nothing(peer)


@pytest.mark.parametrize(
    "url",
    [
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "file:///etc/passwd",
        "/ocpi/2.2.1/tariffs",
        "http://",
        f"{CPO}/2.2.1/tariffs?pad=" + "x" * 300,
        f"{CPO}/2.2.1/ta\triffs",
        f"{CPO}/2.2.1/ta riffs",
        ["http://127.0.0.1:9999/ocpi/2.2.1/tariffs"],
    ],
    ids=["gopher", "file", "relative", "no-host", "too-long", "control-character", "space", "not-a-string"],
)
def test_an_endpoint_url_we_would_not_call_is_not_stored(
    peer: FakePeer, waiting_partner: tuple[Partner, str], url: Any, caplog: pytest.LogCaptureFixture
) -> None:
    partner, token_a = waiting_partner
    script_cpo(peer, {"version": "2.2.1", "endpoints": endpoints_with(2, url=url)})  # tariffs
    with caplog.at_level(logging.WARNING, logger="ocpi.credentials"):
        assert post_credentials(token_a)["status_code"] == 1000
    partner.refresh_from_db()
    assert partner.state == Partner.State.CONNECTED
    assert partner.endpoint_url("tariffs", "SENDER") is None
    assert [e["identifier"] for e in partner.endpoints] == [m for m in MODULES if m != "tariffs"]
    assert "endpoints[2].url (tariffs)" in caplog.text or "endpoints[2] has no identifier or url" in caplog.text


@pytest.mark.parametrize(
    "base",
    ["https://ocpi.stadtwerke-müllheim.de/cpo", "https://ocpi.example.com/cpo/München"],
    ids=["international-host", "utf8-path"],
)
def test_a_cpo_whose_endpoint_urls_are_not_ascii_registers(
    peer: FakePeer, waiting_partner: tuple[Partner, str], base: str
) -> None:
    """2.2.1 types: a URL is a string(255), printable UTF-8 (outbound.py sends an international host as IDNA)."""
    partner, token_a = waiting_partner
    endpoints = [
        {"identifier": m, "role": "RECEIVER" if m in RECEIVERS else "SENDER", "url": f"{base}/2.2.1/{m}"}
        for m in MODULES
    ]
    script_cpo(peer, {"version": "2.2.1", "endpoints": endpoints})
    assert post_credentials(token_a)["status_code"] == 1000
    partner.refresh_from_db()
    assert partner.endpoint_url("locations", "SENDER") == f"{base}/2.2.1/locations"


def test_a_required_endpoint_whose_url_we_would_not_call_is_3003_saying_why(
    peer: FakePeer, waiting_partner: tuple[Partner, str]
) -> None:
    partner, token_a = waiting_partner
    script_cpo(peer, {"version": "2.2.1", "endpoints": endpoints_with(1, url="gopher://127.0.0.1:6379/_FLUSHALL")})
    body = post_credentials(token_a)
    assert body["status_code"] == 3003
    assert "['locations']" in body["status_message"] and "gopher://" in body["status_message"]
    assert_nothing_stored(partner)


def test_a_huge_list_of_repeated_endpoints_is_stored_once_each(
    peer: FakePeer, waiting_partner: tuple[Partner, str]
) -> None:
    partner, token_a = waiting_partner
    repeated = details()["endpoints"] * 20_000  # 140,000 Endpoint objects
    repeated[7] = {**repeated[7], "url": f"{CPO}/2.2.1/credentials-again"}  # a repeat of the first: not taken
    script_cpo(peer, {"version": "2.2.1", "endpoints": repeated})
    assert post_credentials(token_a)["status_code"] == 1000
    partner.refresh_from_db()
    assert partner.endpoints == details()["endpoints"]


def test_at_most_a_hundred_endpoints_are_stored(peer: FakePeer, waiting_partner: tuple[Partner, str]) -> None:
    partner, token_a = waiting_partner
    many = details()["endpoints"] + [
        {"identifier": f"module{i}", "role": "SENDER", "url": f"{CPO}/2.2.1/module{i}"} for i in range(500)
    ]
    script_cpo(peer, {"version": "2.2.1", "endpoints": many})
    assert post_credentials(token_a)["status_code"] == 1000
    partner.refresh_from_db()
    assert partner.endpoints == many[:100]


# -- a feed's ZZ partner registered, and an unregister while our registration POST is out ------------------------


def feed_partner_with_a_location() -> Partner:
    """A partner `ocpi_import --partner ZZ*EZV` made: a ZZ party like a registration's placeholder, but real."""
    feed = PartnerFactory(name="EZV (imported)", country_code="ZZ", party_id="EZV", state=Partner.State.NEW)
    stored_location(feed)
    assert Location.objects.filter(partner=feed).count() == 1
    return feed


def register_feed_partner() -> None:
    call_command(
        "ocpi_register",
        "--versions-url",
        f"{CPO}/versions",
        "--token-a",
        "token-a-from-cpo",
        "--partner",
        "ZZ*EZV",
        "--no-sync",
    )


def test_a_failed_registration_of_a_feed_partner_keeps_it_and_its_locations(peer: FakePeer) -> None:
    feed = feed_partner_with_a_location()
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (401, envelope(None, status_code=2001)))
    with pytest.raises(CommandError, match="credentials POST refused"):
        register_feed_partner()
    feed.refresh_from_db()  # not deleted as if the attempt had made it
    assert (feed.state, feed.party_key, feed.incoming_token_hash) == (Partner.State.NEW, "ZZ*EZV", "")
    assert Location.objects.filter(partner=feed).count() == 1


def test_a_feed_partner_the_cpo_answers_for_as_another_partner_is_refused_not_merged_away(peer: FakePeer) -> None:
    feed = feed_partner_with_a_location()
    staff_set_up = PartnerFactory(name="CPO A", country_code="IN", party_id="CPA", state=Partner.State.NEW)
    script_cpo(peer)
    peer.route("POST", f"{CPO}/2.2.1/credentials", (200, envelope({**CPO_CREDENTIALS, "token": "c"})))
    with pytest.raises(CommandError, match=r"IN\*CPA, the party of CPO A \(IN\*CPA\); EZV \(imported\) \(ZZ\*EZV\)"):
        register_feed_partner()
    feed.refresh_from_db()
    staff_set_up.refresh_from_db()
    assert (feed.state, feed.party_key, feed.incoming_token_hash) == (Partner.State.NEW, "ZZ*EZV", "")
    assert Location.objects.filter(partner=feed).count() == 1
    assert (staff_set_up.state, staff_set_up.incoming_token_hash) == (Partner.State.NEW, "")


def test_a_registration_racing_an_unregister_leaves_the_partner_unregistered(peer: FakePeer) -> None:
    partner = PartnerFactory(name="CPO A", country_code="IN", party_id="CPA", state=Partner.State.UNREGISTERED)
    script_cpo(peer)

    def unregistered_while_the_cpo_answers(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        unregister(Partner.objects.get(pk=partner.pk))
        return 200, envelope({**CPO_CREDENTIALS, "token": "token-c-from-cpo"}), {}

    peer.route("POST", f"{CPO}/2.2.1/credentials", unregistered_while_the_cpo_answers)
    with pytest.raises(RegistrationError, match="superseded while our POST was out"):
        register_with_partner(versions_url=f"{CPO}/versions", token_a="token-a-from-cpo", partner=partner)
    partner.refresh_from_db()
    assert (partner.state, partner.incoming_token_hash, partner.outgoing_token) == (Partner.State.UNREGISTERED, "", "")
    assert not works("token-c-from-cpo")


def test_unregister_of_a_partner_deleted_right_after_its_commit_returns_what_it_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    partner = PartnerFactory(state=Partner.State.CONNECTED, outgoing_token="ours")
    stale = Partner.objects.get(pk=partner.pk)
    Partner.objects.filter(pk=partner.pk).update(name="Renamed meanwhile")

    @contextlib.contextmanager
    def atomic_then_deleted() -> Iterator[None]:
        with django_transaction.atomic():
            yield
        Partner.objects.filter(pk=partner.pk).delete()  # staff deleting it once the unregister committed

    monkeypatch.setattr(credentials, "transaction", types.SimpleNamespace(atomic=atomic_then_deleted))
    assert unregister(stale) == Partner.State.CONNECTED
    assert (stale.state, stale.outgoing_token, stale.name) == (Partner.State.UNREGISTERED, "", "Renamed meanwhile")
