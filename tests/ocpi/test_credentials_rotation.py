"""Credentials rotation in both directions (credentials.asciidoc §"Updating the credentials and resetting the
token"): we PUT a new token to the CPO's credentials endpoint (console action, `manage.py ocpi_rotate`), and
the CPO PUTs one to ours, in each version. The scripted CPO sits behind the outbound seam."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from emsp import outbound
from emsp.models import Partner, StaffAction, hash_token
from ocpi.credentials import RotationError, rotate_credentials
from ocpi.models import CredentialsRotation
from tests.conftest import OcpiTestClient
from tests.factories import PartnerFactory
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo"
OLD_IN = "old-token-the-cpo-uses"
OLD_OUT = "old-token-we-use"
CPO_ROLES = [{"role": "CPO", "party_id": "CPA", "country_code": "IN", "business_details": {"name": "CPO A"}}]


def connected(version: str = "2.2.1") -> Partner:
    endpoints = [
        {"identifier": m, "url": f"{CPO}/{version}/{m}", **({} if version == "2.1.1" else {"role": r})}
        for m, r in [("credentials", "RECEIVER"), ("locations", "SENDER"), ("tokens", "RECEIVER")]
    ]
    return PartnerFactory(
        country_code="IN",
        party_id="CPA",
        version=version,
        endpoints=endpoints,
        outgoing_token=OLD_OUT,
        incoming_token_hash=hash_token(OLD_IN),
    )


def works(token: str) -> bool:
    return OcpiTestClient(token).get("/ocpi/emsp/2.2.1/tokens").status_code == 200


def cpo_takes_it(version: str = "2.2.1", seen: list[dict[str, Any]] | None = None) -> Any:
    """A CPO that, before answering, reads our versions with the new token (as the spec has it)."""

    def answer(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        assert call["headers"]["Authorization"] == f"Token {_b64(OLD_OUT)}"
        new_token = call["json"]["token"]
        if seen is not None:
            seen.append({**call["json"], "new_works": works(new_token), "old_works": works(OLD_IN)})
        assert OcpiTestClient(new_token).get("/ocpi/versions").status_code == 200
        body: dict[str, Any] = {"token": "new-token-we-use", "url": f"{CPO}/versions"}
        if version == "2.1.1":
            body.update(CPO_ROLES[0])
            del body["role"]
        else:
            body["roles"] = CPO_ROLES
        return 200, envelope(body), {}

    return answer


def _b64(token: str) -> str:
    import base64

    return base64.b64encode(token.encode()).decode()


# -- we rotate ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.1.1", "2.2.1", "2.3.0"])
def test_we_rotate_and_the_cpos_old_token_is_refused_afterwards(peer: FakePeer, version: str) -> None:
    partner = connected(version)
    seen: list[dict[str, Any]] = []
    peer.route("PUT", f"{CPO}/{version}/credentials", cpo_takes_it(version, seen))
    rotation = rotate_credentials(partner)
    assert rotation.outcome == CredentialsRotation.Outcome.DONE
    # While the PUT was under way both tokens worked; afterwards only the new one does.
    (put,) = seen
    assert (put["new_works"], put["old_works"]) == (True, True)
    new_in = put["token"]
    assert not works(OLD_IN)
    assert works(new_in)
    partner.refresh_from_db()
    assert (partner.outgoing_token, partner.incoming_token_hash) == ("new-token-we-use", hash_token(new_in))
    # The Credentials we sent are those of the connection's version.
    assert ("roles" in put) == (version != "2.1.1")
    assert put["url"] == "http://127.0.0.1:8000/ocpi/versions"


def test_a_refused_rotation_keeps_the_old_tokens(peer: FakePeer) -> None:
    partner = connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", (405, envelope(status_code=2000)))
    with pytest.raises(RotationError, match="old tokens stay"):
        rotate_credentials(partner)
    new_in = peer.requests_to("/credentials")[0]["json"]["token"]
    assert works(OLD_IN) and not works(new_in)
    partner.refresh_from_db()
    assert partner.outgoing_token == OLD_OUT
    assert CredentialsRotation.objects.get().outcome == CredentialsRotation.Outcome.REFUSED


def test_an_unanswered_rotation_keeps_both_tokens_until_one_succeeds(peer: FakePeer) -> None:
    partner = connected()

    def lost(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        raise outbound.OutboundError("read timed out")

    peer.route("PUT", f"{CPO}/2.2.1/credentials", lost)
    with pytest.raises(RotationError, match="both stay valid"):
        rotate_credentials(partner)
    unsettled = peer.requests_to("/credentials")[0]["json"]["token"]
    assert works(OLD_IN) and works(unsettled)  # the CPO may have switched to it
    assert CredentialsRotation.objects.get().outcome == CredentialsRotation.Outcome.PENDING

    peer.route("PUT", f"{CPO}/2.2.1/credentials", cpo_takes_it())
    rotate_credentials(partner)
    assert not works(OLD_IN) and not works(unsettled)
    assert works(peer.requests_to("/credentials")[1]["json"]["token"])


def test_a_rotation_answered_with_garbage_keeps_both_tokens(peer: FakePeer) -> None:
    partner = connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", (200, envelope({"token": ""})))
    with pytest.raises(RotationError, match="without usable credentials"):
        rotate_credentials(partner)
    assert works(OLD_IN) and works(peer.requests_to("/credentials")[0]["json"]["token"])
    partner.refresh_from_db()
    assert partner.outgoing_token == OLD_OUT


def test_a_partner_that_is_not_connected_is_not_rotated(peer: FakePeer) -> None:
    partner = connected()
    Partner.objects.filter(pk=partner.pk).update(state=Partner.State.UNREGISTERED)
    partner.refresh_from_db()
    with pytest.raises(RotationError, match="not connected"):
        rotate_credentials(partner)
    assert not peer.calls


# -- the console and the command -----------------------------------------------------------------------------------


def act(client: Client, partner: Partner) -> Any:
    changelist = reverse("admin:emsp_partner_changelist")
    return client.post(changelist, {"action": "rotate_credentials", "_selected_action": [partner.pk]}, follow=True)


def test_an_admin_rotates_from_the_console_and_it_is_recorded(peer: FakePeer, login: Callable[[str], Client]) -> None:
    partner = connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", cpo_takes_it())
    client = login("admin")
    response = act(client, partner)
    assert "Credentials rotated with" in response.content.decode()
    assert not works(OLD_IN)
    record = StaffAction.objects.get(verb="rotate_credentials")
    assert (record.user, record.object_id) == (client.user, str(partner.pk))  # type: ignore[attr-defined]
    assert record.details == {"version": "2.2.1", "outcome": "DONE"}
    new_in = peer.requests_to("/credentials")[0]["json"]["token"]
    assert new_in not in orjson.dumps(record.details).decode()


def test_a_failed_console_rotation_is_recorded_and_shown(peer: FakePeer, login: Callable[[str], Client]) -> None:
    partner = connected()
    response = act(login("admin"), partner)  # no route: the CPO answers 404
    assert "Rotation with" in response.content.decode()
    assert StaffAction.objects.get(verb="rotate_credentials").details["outcome"] == "FAILED"
    assert works(OLD_IN)


@pytest.mark.parametrize("group", ["ops", "finance"])
def test_neither_ops_nor_finance_may_rotate(peer: FakePeer, login: Callable[[str], Client], group: str) -> None:
    partner = connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", cpo_takes_it())
    act(login(group), partner)
    assert not peer.calls
    assert works(OLD_IN)
    assert not StaffAction.objects.filter(verb="rotate_credentials").exists()


def test_manage_py_ocpi_rotate_rotates(peer: FakePeer, capsys: Any) -> None:
    connected()
    peer.route("PUT", f"{CPO}/2.2.1/credentials", cpo_takes_it())
    call_command("ocpi_rotate", "IN*CPA")
    assert "Credentials rotated with" in capsys.readouterr().out
    assert not works(OLD_IN)
    assert StaffAction.objects.get(verb="rotate_credentials").details["via"].startswith("manage.py ocpi_rotate")


def test_manage_py_ocpi_rotate_names_what_failed(peer: FakePeer) -> None:
    with pytest.raises(CommandError, match="no partner"):
        call_command("ocpi_rotate", "IN*XXX")
    connected()
    with pytest.raises(CommandError, match="refused"):
        call_command("ocpi_rotate", "IN*CPA")
    assert works(OLD_IN)


# -- the CPO rotates: PUT to our credentials endpoint ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.1.1", "2.2.1", "2.3.0"])
def test_the_cpo_rotates_by_put_and_its_old_token_is_refused(peer: FakePeer, version: str) -> None:
    partner = connected(version)
    peer.route("GET", f"{CPO}/versions", (200, envelope([{"version": version, "url": f"{CPO}/{version}"}])))
    endpoints = [{"identifier": m, "url": f"{CPO}/{version}/{m}"} for m in ("credentials", "locations")]
    peer.route("GET", f"{CPO}/{version}", (200, envelope({"version": version, "endpoints": endpoints})))
    body: dict[str, Any] = {"token": "cpo-new-token-for-us", "url": f"{CPO}/versions"}
    if version == "2.1.1":
        body.update({k: v for k, v in CPO_ROLES[0].items() if k != "role"})
    else:
        body["roles"] = CPO_ROLES
    answer = OcpiTestClient(OLD_IN).put(f"/ocpi/{version}/credentials", body).json()
    assert answer["status_code"] == 1000
    # Its endpoints were read again with its new token before we answered.
    assert {c["headers"]["Authorization"] for c in peer.calls} == {f"Token {_b64('cpo-new-token-for-us')}"}
    assert not works(OLD_IN)
    assert works(answer["data"]["token"])
    partner.refresh_from_db()
    assert (partner.outgoing_token, partner.version) == ("cpo-new-token-for-us", version)
