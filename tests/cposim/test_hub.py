"""The simulator as an OCPI 2.2.1 hub (`--hub`, cposim/hub.py) against a fake eMSP: its credentials roles and
hubclientinfo sender, the catalogue spread over its parties, the routing it checks in what it is sent, the party
each of its pushes comes from, and ClientInfo pushed on a status change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from cposim.config import config_from_options

from .conftest import FakeEmsp, Seen, SimProcess, auth, wait_until

HUB_ARGS = (
    "--country-code", "NL", "--party-id", "HUB", "--name", "Sim Hub", "--hub", "IN*CPA,IN*CPB",
    "--locations", "6", "--command-delay", "0.1", "--plug-in-delay", "0.1", "--meter-interval", "0.25",
)  # fmt: skip
EMSP, HUB, CPA, CPB = ("IN", "EMS"), ("NL", "HUB"), ("IN", "CPA"), ("IN", "CPB")


class HubAwareEmsp(FakeEmsp):
    """The fake eMSP with a HubClientInfo receiver (mod_hub_client_info §"Receiver Interface")."""

    def details(self) -> dict[str, Any]:
        details = super().details()
        url = f"{self.base}/emsp/2.2.1/hubclientinfo"
        details["endpoints"].append({"identifier": "hubclientinfo", "role": "RECEIVER", "url": url})
        return details

    def respond(self, s: Seen) -> tuple[int, Any, dict[str, str]]:
        if s.method == "PUT" and s.path.startswith("/emsp/2.2.1/hubclientinfo/") and s.token in self.accepted:
            return 200, self.envelope(None), {}
        return super().respond(s)


@pytest.fixture
def emsp() -> Any:
    fake = HubAwareEmsp()
    yield fake
    fake.stop()


@pytest.fixture
def hub(start_sim: Callable[..., SimProcess]) -> SimProcess:
    return start_sim(*HUB_ARGS)


def routed(sender: tuple[str, str] | None, receiver: tuple[str, str] | None) -> dict[str, str]:
    headers = {}
    for way, party in (("from", sender), ("to", receiver)):
        if party:
            headers.update({f"OCPI-{way}-country-code": party[0], f"OCPI-{way}-party-id": party[1]})
    return headers


def call(
    sim: SimProcess,
    method: str,
    path: str,
    token: str,
    to: tuple[str, str] | None,
    sender: tuple[str, str] | None = EMSP,
    **kw: Any,
) -> requests.Response:
    headers = {**auth(token), **routed(sender, to)}
    return requests.request(method, sim.url("/ocpi/2.2.1" + path), headers=headers, timeout=10, **kw)


def party_of(seen: Seen) -> tuple[tuple[str, str], tuple[str, str]]:
    """(from, to) of a request the fake eMSP received."""
    h = seen.headers
    return (h["OCPI-from-country-code"], h["OCPI-from-party-id"]), (h["OCPI-to-country-code"], h["OCPI-to-party-id"])


def location_of(sim: SimProcess, party_id: str) -> dict[str, Any]:
    """A location of the party with an AVAILABLE, remotely startable EVSE first."""
    for loc in sim.ctl("locations"):
        evses = [
            e for e in loc["evses"] if e["status"] == "AVAILABLE" and "REMOTE_START_STOP_CAPABLE" in e["capabilities"]
        ]
        if loc["party_id"] == party_id and evses:
            return {**loc, "evses": evses}
    raise AssertionError(f"no usable location of {party_id}")


def start_body(loc: dict[str, Any], emsp: FakeEmsp, uid: str = "APP-1") -> dict[str, Any]:
    token = {
        "country_code": "IN", "party_id": "EMS", "uid": uid, "type": "APP_USER", "contract_id": f"C-{uid}",
        "issuer": "Fake eMSP", "valid": True, "whitelist": "NEVER", "last_updated": "2025-01-01T00:00:00Z",
    }  # fmt: skip
    return {
        "response_url": f"{emsp.base}/emsp/cmd/START_SESSION/{uid}",
        "token": token,
        "location_id": loc["id"],
        "evse_uid": loc["evses"][0]["uid"],
    }


def test_the_hub_names_itself_and_each_party_and_offers_its_client_info(hub: SimProcess, emsp: FakeEmsp) -> None:
    details = requests.get(hub.url("/ocpi/2.2.1"), headers=auth(hub.token_a), timeout=5).json()["data"]
    assert {"identifier": "hubclientinfo", "role": "SENDER", "url": hub.url("/ocpi/2.2.1/hubclientinfo")} in (
        details["endpoints"]
    )
    token = emsp.register_with_sim(hub)
    roles = call(hub, "GET", "/credentials", token, None, None).json()["data"]["roles"]
    assert [(r["role"], r["country_code"], r["party_id"]) for r in roles] == [
        ("HUB", "NL", "HUB"),
        ("CPO", "IN", "CPA"),
        ("CPO", "IN", "CPB"),
    ]
    listed = call(hub, "GET", "/hubclientinfo", token, None, None)
    assert listed.status_code == 200 and "OCPI-from-party-id" not in listed.headers  # a configuration module
    assert [(i["party_id"], i["role"], i["status"]) for i in listed.json()["data"]] == [
        ("CPA", "CPO", "CONNECTED"),
        ("CPB", "CPO", "CONNECTED"),
    ]
    assert hub.ctl("state")["party"]["role"] == "HUB"


def test_the_catalogue_is_dealt_out_to_the_parties_each_object_under_its_owner(hub: SimProcess) -> None:
    locations, tariffs = hub.ctl("locations"), hub.ctl("tariffs")

    assert [loc["party_id"] for loc in locations] == ["CPA", "CPB"] * 3
    own_tariffs = {(t["party_id"], t["id"]) for t in tariffs}
    assert {t["party_id"] for t in tariffs} == {"CPA", "CPB"}
    for loc in locations:
        assert loc["country_code"] == "IN" and loc["operator"]["name"] == f"{loc['party_id']} via Sim Hub"
        for evse in loc["evses"]:
            assert evse["evse_id"].startswith(f"IN*{loc['party_id']}*")
            for connector in evse["connectors"]:
                assert {(loc["party_id"], t) for t in connector["tariff_ids"]} <= own_tariffs


def test_a_get_all_names_the_hub_or_one_party_and_anything_else_is_refused(hub: SimProcess, emsp: FakeEmsp) -> None:
    token = emsp.register_with_sim(hub)

    everything = call(hub, "GET", "/locations", token, HUB)
    one_party = call(hub, "GET", "/locations", token, CPB)
    no_routing = call(hub, "GET", "/locations", token, None, None)
    unknown = call(hub, "GET", "/locations", token, ("DE", "ABC"))
    wrong_sender = call(hub, "GET", "/locations", token, HUB, sender=("DE", "XYZ"))

    assert {loc["party_id"] for loc in everything.json()["data"]} == {"CPA", "CPB"}
    assert (everything.headers["OCPI-from-party-id"], everything.headers["OCPI-to-party-id"]) == ("HUB", "EMS")
    assert {loc["party_id"] for loc in one_party.json()["data"]} == {"CPB"}  # the party answers for itself
    assert one_party.headers["OCPI-from-party-id"] == "CPB"
    assert (no_routing.status_code, no_routing.json()["status_code"]) == (400, 2001)
    assert (unknown.status_code, unknown.json()["status_code"]) == (404, 4001)  # status_codes: unknown receiver
    assert (wrong_sender.status_code, wrong_sender.json()["status_code"]) == (400, 2001)
    recorded = [(r["to"], r["status_code"]) for r in hub.ctl("state")["hub"]["received"]]
    assert recorded == [("NL*HUB", None), ("IN*CPB", None), (None, 2001), ("DE*ABC", 4001), ("NL*HUB", 2001)]


def test_an_object_is_read_from_the_party_that_owns_it_never_from_the_hub(hub: SimProcess, emsp: FakeEmsp) -> None:
    token = emsp.register_with_sim(hub)
    loc = location_of(hub, "CPB")
    path = f"/locations/{loc['id']}/{loc['evses'][0]['uid']}"

    owner = call(hub, "GET", path, token, CPB)
    other = call(hub, "GET", path, token, CPA)
    the_hub = call(hub, "GET", path, token, HUB)

    assert owner.json()["data"]["uid"] == loc["evses"][0]["uid"]
    assert (other.status_code, other.json()["status_code"]) == (404, 2003)  # CPA has no such location
    assert (the_hub.status_code, the_hub.json()["status_code"]) == (404, 2001)


def test_a_command_for_a_partys_evse_and_everything_it_causes_come_from_that_party(
    hub: SimProcess, emsp: FakeEmsp
) -> None:
    token = emsp.register_with_sim(hub)
    loc = location_of(hub, "CPB")

    misrouted = call(hub, "POST", "/commands/START_SESSION", token, CPA, json=start_body(loc, emsp))
    to_hub = call(hub, "POST", "/commands/START_SESSION", token, HUB, json=start_body(loc, emsp))
    assert (misrouted.status_code, misrouted.json()["status_code"]) == (404, 2003)
    assert (to_hub.status_code, to_hub.json()["status_code"]) == (404, 2001)
    assert hub.ctl("commands") == []  # neither reached the party

    started = call(hub, "POST", "/commands/START_SESSION", token, CPB, json=start_body(loc, emsp))
    assert started.json()["data"]["result"] == "ACCEPTED"
    assert (started.headers["OCPI-from-party-id"], started.headers["OCPI-to-party-id"]) == ("CPB", "EMS")
    result = emsp.wait_for("POST", "/emsp/cmd/START_SESSION/APP-1")
    assert party_of(result) == (CPB, EMSP)
    put = emsp.wait_for("PUT", "/emsp/2.2.1/sessions/")
    assert put.path.startswith("/emsp/2.2.1/sessions/IN/CPB/") and party_of(put) == (CPB, EMSP)
    assert (put.body["country_code"], put.body["party_id"]) == CPB
    session_id = put.body["id"]
    evse_patch = emsp.wait_for("PATCH", f"/emsp/2.2.1/locations/IN/CPB/{loc['id']}/")
    assert party_of(evse_patch) == (CPB, EMSP)

    hub.ctl("stop_session", {"session_id": session_id})
    cdr = emsp.wait_for("POST", "/emsp/2.2.1/cdrs")
    assert party_of(cdr) == (CPB, EMSP) and (cdr.body["country_code"], cdr.body["party_id"]) == CPB
    assert {t["party_id"] for t in cdr.body["tariffs"]} == {"CPB"}
    stored = call(hub, "GET", "/sessions", token, HUB, params={"date_from": "2020-01-01T00:00:00Z"}).json()["data"]
    assert [(s["id"], s["party_id"]) for s in stored] == [(session_id, "CPB")]
    assert hub.ctl("state")["hub"]["command_results_from"] == {start_body(loc, emsp)["response_url"]: "IN*CPB"}


def test_a_token_is_taken_as_a_broadcast_to_the_hub_or_pushed_to_one_party(hub: SimProcess, emsp: FakeEmsp) -> None:
    token = emsp.register_with_sim(hub)
    body = start_body(location_of(hub, "CPA"), emsp)["token"]

    broadcast = call(hub, "PUT", "/tokens/IN/EMS/APP-1?type=APP_USER", token, HUB, json=body)
    direct = call(hub, "PUT", "/tokens/IN/EMS/APP-1?type=APP_USER", token, CPA, json=body)
    unknown = call(hub, "PUT", "/tokens/IN/EMS/APP-1?type=APP_USER", token, ("DE", "ABC"), json=body)

    assert (broadcast.status_code, direct.status_code) == (201, 200)
    assert broadcast.headers["OCPI-from-party-id"] == "HUB"
    assert unknown.json()["status_code"] == 4001
    assert [t["uid"] for t in hub.ctl("tokens")] == ["APP-1"]


def test_a_party_set_offline_is_told_to_the_emsp_and_reached_no_more(hub: SimProcess, emsp: FakeEmsp) -> None:
    token = emsp.register_with_sim(hub)
    # After the eMSP registered, the hub PUTs every ClientInfo to its receiver, without routing headers.
    first = emsp.wait_for("PUT", "/emsp/2.2.1/hubclientinfo/IN/CPB", timeout=5)
    assert first.body["status"] == "CONNECTED" and "OCPI-from-party-id" not in first.headers

    told = hub.ctl("client_info", {"country_code": "IN", "party_id": "CPB", "status": "OFFLINE"})
    assert told["push"]["http_status"] == 200
    pushed = emsp.requests_matching("PUT", "/emsp/2.2.1/hubclientinfo/IN/CPB")[-1]
    assert pushed.body == told["client_info"] and pushed.body["status"] == "OFFLINE"
    loc = location_of(hub, "CPB")
    offline = call(hub, "POST", "/commands/START_SESSION", token, CPB, json=start_body(loc, emsp))
    assert (offline.status_code, offline.json()["status_code"]) == (502, 4003)  # status_codes: connection problem
    listed = call(hub, "GET", "/hubclientinfo", token, None, None).json()["data"]
    assert {i["party_id"]: i["status"] for i in listed} == {"CPA": "CONNECTED", "CPB": "OFFLINE"}
    bad = requests.post(hub.url("/_sim/client_info"), json={**told["client_info"], "status": "GONE"}, timeout=5)
    assert bad.status_code == 400


def test_what_a_swipe_at_a_partys_charger_sends_comes_from_that_party(hub: SimProcess, emsp: FakeEmsp) -> None:
    hub.ctl("register", {"versions_url": emsp.versions_url, "token_a": emsp.token_a})  # the hub registers with us
    cpa = location_of(hub, "CPA")
    emsp.allowed_tokens["RFID-1"] = {"uid": "RFID-1", "type": "RFID", "contract_id": "C-1"}

    evse_uid = cpa["evses"][0]["uid"]
    swiped = hub.ctl("start_session", {"location_id": cpa["id"], "evse_uid": evse_uid, "token_uid": "RFID-1"})

    assert swiped["started"] is True, swiped
    assert party_of(emsp.wait_for("POST", "/emsp/2.2.1/tokens/RFID-1/authorize")) == (CPA, EMSP)
    assert party_of(emsp.wait_for("PUT", f"/emsp/2.2.1/sessions/IN/CPA/{swiped['session_id']}")) == (CPA, EMSP)
    assert party_of(emsp.wait_for("PATCH", f"/emsp/2.2.1/locations/IN/CPA/{cpa['id']}/{evse_uid}")) == (CPA, EMSP)
    # Registering with the eMSP, the hub announced its parties at once.
    wait_until(lambda: len(emsp.requests_matching("PUT", "/emsp/2.2.1/hubclientinfo/")) == 2)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"hub": "IN-CPA"}, "is not CC*PID"),
        ({"hub": "IN*CPA,NL*HUB", "country_code": "NL", "party_id": "HUB"}, "is the hub itself"),
        ({"hub": "IN*CPB", "ocpi_version": "2.1.1"}, "needs --ocpi-version 2.2.1"),
    ],
)
def test_a_hub_option_that_names_no_usable_parties_is_refused(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("*", r"\*")):
        config_from_options(options)


def test_the_hub_option_lists_the_parties_in_order_once() -> None:
    cfg = config_from_options({"hub": " in*cpa, IN*CPB ,in*CPA", "party_id": "HUB", "country_code": "NL"})
    assert cfg.hub == [("IN", "CPA"), ("IN", "CPB")]
    assert config_from_options({}).hub == []
