"""Simulator transport: versions, auth, ids, routing, credentials, pagination, tokens, faults."""

from __future__ import annotations

import json
import time

import requests

from .conftest import FakeEmsp, auth, ocpi


def test_versions_details_and_ids(start_sim) -> None:
    sim = start_sim("--token-a", "tok-A", "--locations", "3")
    assert sim.token_a == "tok-A"
    headers = {**auth("tok-A"), "X-Request-ID": "req-1", "X-Correlation-ID": "corr-1"}
    resp = requests.get(sim.versions_url, headers=headers, timeout=5)
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == "req-1"
    assert resp.headers["X-Correlation-ID"] == "corr-1"
    assert "OCPI-from-party-id" not in resp.headers  # no routing headers on configuration modules
    body = resp.json()
    assert set(body) == {"data", "status_code", "status_message", "timestamp"}
    assert body["status_code"] == 1000 and body["timestamp"].endswith("Z")
    assert body["data"] == [{"version": "2.2.1", "url": f"{sim.base}/ocpi/2.2.1"}]

    # raw (not Base64) tokens are accepted too
    details = requests.get(body["data"][0]["url"], headers=auth("tok-A", "raw"), timeout=5).json()["data"]
    assert details["version"] == "2.2.1"
    roles = {e["identifier"]: e["role"] for e in details["endpoints"]}
    assert roles == {
        "credentials": "SENDER",
        "locations": "SENDER",
        "tariffs": "SENDER",
        "sessions": "SENDER",
        "cdrs": "SENDER",
        "tokens": "RECEIVER",
        "commands": "RECEIVER",
    }
    assert all(e["url"].startswith(sim.base + "/ocpi/2.2.1/") for e in details["endpoints"])
    generated = requests.get(sim.versions_url, headers=auth("tok-A"), timeout=5).headers
    assert generated["X-Request-ID"] and generated["X-Correlation-ID"]  # made up when the caller sent none


def test_auth_401_and_forbid_fault(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim("--locations", "3")
    assert requests.get(sim.versions_url, timeout=5).status_code == 401
    assert requests.get(sim.versions_url, headers=auth("nope"), timeout=5).status_code == 401
    bad = requests.get(sim.versions_url, headers={"Authorization": "Bearer x"}, timeout=5)
    assert bad.status_code == 401 and bad.json()["status_code"] == 2000
    # Token A may only reach versions/credentials
    assert ocpi(sim, "GET", "/locations", sim.token_a).status_code == 401
    token_c = fake_emsp.register_with_sim(sim)
    assert ocpi(sim, "GET", "/locations", token_c).status_code == 200
    # Token A is spent after registration
    assert requests.get(sim.versions_url, headers=auth(sim.token_a), timeout=5).status_code == 401
    sim.ctl("faults", {"set": {"forbid_instead_of_401": True}})
    assert ocpi(sim, "GET", "/locations", "wrong").status_code == 403
    sim.ctl("faults", {"clear": ["forbid_instead_of_401"]})
    assert ocpi(sim, "GET", "/locations", "wrong").status_code == 401


def test_credentials_handshake_rules(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim("--locations", "3")
    token_c = fake_emsp.register_with_sim(sim)
    # the simulator fetched our versions + details with our token B before it answered
    versions_calls = fake_emsp.requests_matching("GET", "/emsp/versions")
    details_calls = fake_emsp.requests_matching("GET", "/emsp/2.2.1")
    assert versions_calls and versions_calls[0].token == fake_emsp.token_b
    assert details_calls and details_calls[0].token == fake_emsp.token_b
    state = sim.ctl("state")
    assert state["registered"] and state["direction"] == "emsp_registered_with_us"
    assert state["token_b"] == fake_emsp.token_b and state["token_c"] == token_c
    assert state["emsp_versions_url"] == fake_emsp.versions_url

    cred_url = sim.url("/ocpi/2.2.1/credentials")
    got = requests.get(cred_url, headers=auth(token_c), timeout=5).json()["data"]
    assert got["token"] == token_c
    assert got["roles"][0]["role"] == "CPO" and got["roles"][0]["party_id"] == "CPA"
    body = {"token": "new-b", "url": fake_emsp.versions_url, "roles": fake_emsp.roles()}
    assert requests.post(cred_url, json=body, headers=auth(token_c), timeout=5).status_code == 405
    # PUT rotates the token
    fake_emsp.accepted.add("new-b")
    resp = requests.put(cred_url, json=body, headers=auth(token_c), timeout=10)
    assert resp.status_code == 200
    token_c2 = resp.json()["data"]["token"]
    assert token_c2 != token_c
    assert ocpi(sim, "GET", "/tariffs", token_c).status_code == 401
    assert ocpi(sim, "GET", "/tariffs", token_c2).status_code == 200
    assert sim.ctl("state")["token_b"] == "new-b"
    # DELETE unregisters; then PUT/DELETE are 405 (Token A becomes usable again in the simulator)
    assert requests.delete(cred_url, headers=auth(token_c2), timeout=5).status_code == 200
    assert not sim.ctl("state")["registered"]
    assert requests.put(cred_url, json=body, headers=auth(sim.token_a), timeout=5).status_code == 405
    assert requests.delete(cred_url, headers=auth(sim.token_a), timeout=5).status_code == 405
    # an unreachable eMSP versions URL gives 3001
    bad = {"token": "x", "url": "http://127.0.0.1:9/versions", "roles": fake_emsp.roles()}
    resp = requests.post(cred_url, json=bad, headers=auth(sim.token_a), timeout=15)
    assert resp.status_code == 200 and resp.json()["status_code"] == 3001


def test_pagination_walk_and_date_from(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim("--locations", "25", "--page-limit", "10")
    token = fake_emsp.register_with_sim(sim)
    url = sim.url("/ocpi/2.2.1/locations")
    headers = {
        **auth(token),
        "OCPI-from-country-code": "IN",
        "OCPI-from-party-id": "EMS",
        "OCPI-to-country-code": "IN",
        "OCPI-to-party-id": "CPA",
    }
    pages, items = 0, []
    next_url: str | None = url
    while next_url:
        resp = requests.get(next_url, headers=headers, timeout=5)
        assert resp.status_code == 200
        assert resp.headers["X-Total-Count"] == "25" and resp.headers["X-Limit"] == "10"
        assert resp.headers["OCPI-from-party-id"] == "CPA" and resp.headers["OCPI-to-party-id"] == "EMS"
        items += resp.json()["data"]
        pages += 1
        link = resp.headers.get("Link")
        next_url = link.split(";")[0].strip("<> ") if link else None
        assert link is None or 'rel="next"' in link
    assert pages == 3 and len(items) == 25 and len({i["id"] for i in items}) == 25
    stamps = [i["last_updated"] for i in items]
    assert stamps == sorted(stamps)

    # date_from is inclusive and kept in the Link; limit is capped by X-Limit
    cut = stamps[5]
    resp = requests.get(url, params={"date_from": cut, "limit": 100}, headers=headers, timeout=5)
    assert resp.headers["X-Total-Count"] == "20" and len(resp.json()["data"]) == 10
    assert resp.json()["data"][0]["last_updated"] == cut
    assert "date_from=" in resp.headers["Link"] and "offset=10" in resp.headers["Link"]
    second = requests.get(resp.headers["Link"].split(";")[0].strip("<>"), headers=headers, timeout=5)
    assert len(second.json()["data"]) == 10 and "Link" not in second.headers
    # date_to is exclusive
    resp = requests.get(url, params={"date_to": cut}, headers=headers, timeout=5)
    assert resp.headers["X-Total-Count"] == "5"
    # invalid parameters are an OCPI 2001, not an HTTP error
    resp = requests.get(url, params={"offset": "x"}, headers=headers, timeout=5)
    assert resp.status_code == 200 and resp.json()["status_code"] == 2001

    # touch: incremental pull sees exactly the touched locations
    touched = sim.ctl("touch", {"n": 3})["touched"]
    newest = max(loc["last_updated"] for loc in sim.ctl("locations") if loc["id"] in touched)
    resp = requests.get(url, params={"date_from": newest}, headers=headers, timeout=5)
    assert {i["id"] for i in resp.json()["data"]} == set(touched)

    # single objects and 404s
    loc = items[0]
    one = ocpi(sim, "GET", f"/locations/{loc['id']}", token).json()["data"]
    assert one["id"] == loc["id"]
    evse = loc["evses"][0]
    got = ocpi(sim, "GET", f"/locations/{loc['id']}/{evse['uid']}", token).json()["data"]
    assert got["uid"] == evse["uid"]
    conn = ocpi(sim, "GET", f"/locations/{loc['id']}/{evse['uid']}/1", token).json()["data"]
    assert conn["id"] == "1" and conn["tariff_ids"]
    missing = ocpi(sim, "GET", "/locations/NOPE", token)
    assert missing.status_code == 404 and missing.json()["status_code"] == 2003
    # tariffs and the sessions date_from rule
    tariffs = ocpi(sim, "GET", "/tariffs", token).json()["data"]
    assert {t["id"] for t in tariffs} == {"A-AC-STD", "A-DC-FAST"}
    assert ocpi(sim, "GET", "/sessions", token).json()["status_code"] == 2001
    since = {"date_from": "2020-01-01T00:00:00Z"}
    assert ocpi(sim, "GET", "/sessions", token, params=since).json()["data"] == []
    assert ocpi(sim, "DELETE", "/locations", token).status_code == 405


def _token(uid: str, **extra: object) -> dict:
    return {
        "country_code": "IN",
        "party_id": "EMS",
        "uid": uid,
        "type": "RFID",
        "contract_id": f"IN-EMS-{uid}",
        "issuer": "Fake eMSP",
        "valid": True,
        "whitelist": "ALLOWED",
        "last_updated": "2025-01-01T00:00:00Z",
        **extra,
    }


def test_tokens_receiver(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim("--locations", "2")
    token = fake_emsp.register_with_sim(sim)
    path = "/tokens/IN/EMS/RFID001"
    assert ocpi(sim, "PUT", path, token, json=_token("RFID001")).status_code == 201
    assert ocpi(sim, "PUT", path, token, json=_token("RFID001")).status_code == 200
    got = ocpi(sim, "GET", path, token, params={"type": "RFID"})
    assert got.status_code == 200 and got.json()["data"]["contract_id"] == "IN-EMS-RFID001"
    assert ocpi(sim, "GET", "/tokens/in/ems/rfid001", token).status_code == 200  # CiString
    assert ocpi(sim, "GET", path, token, params={"type": "APP_USER"}).status_code == 404
    no_stamp = ocpi(sim, "PATCH", path, token, json={"valid": False})
    assert no_stamp.status_code == 200 and no_stamp.json()["status_code"] == 2001
    ok = ocpi(sim, "PATCH", path, token, json={"valid": False, "last_updated": "2025-01-02T00:00:00Z"})
    assert ok.json()["status_code"] == 1000
    assert ocpi(sim, "GET", path, token).json()["data"]["valid"] is False
    mismatch = ocpi(sim, "PUT", "/tokens/IN/EMS/OTHER", token, json=_token("RFID001"))
    assert mismatch.json()["status_code"] == 2001
    unknown = ocpi(sim, "GET", "/tokens/IN/EMS/NOPE", token)
    assert unknown.status_code == 404 and unknown.json()["status_code"] == 2004
    bad_json = requests.put(sim.url("/ocpi/2.2.1" + path), data=b"{nope", headers=auth(token), timeout=5)
    assert bad_json.status_code == 400
    assert [t["uid"] for t in sim.ctl("tokens")] == ["RFID001"]
    assert sim.ctl("state")["counts"]["tokens"] == 1


def test_fault_modes(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim("--locations", "12", "--page-limit", "5", "--fault", "lowercase,wrap_single")
    token = fake_emsp.register_with_sim(sim)
    assert sim.ctl("state")["faults"] == {"lowercase": True, "wrap_single": True}
    loc = sim.ctl("locations")[0]
    data = ocpi(sim, "GET", f"/locations/{loc['id'].lower()}", token).json()["data"]
    assert isinstance(data, list) and len(data) == 1
    quirky = data[0]
    assert quirky["id"] == loc["id"].lower() and quirky["country_code"] == "in"
    assert quirky["evses"][0]["status"] == loc["evses"][0]["status"].lower()
    watts = loc["evses"][0]["connectors"][0]["max_electric_power"]
    assert quirky["evses"][0]["connectors"][0]["max_electric_power"] == watts / 1000

    sim.ctl("faults", {"set": {"broken_link": True}, "clear": ["lowercase", "wrap_single"]})
    resp = ocpi(sim, "GET", "/locations", token)
    assert resp.headers["Link"].startswith("<null>") and resp.headers["X-Total-Count"] == "12"

    sim.ctl("faults", {"set": {"http500": 1.0}})
    resp = ocpi(sim, "GET", "/locations", token)
    assert resp.status_code == 500 and resp.json()["status_code"] == 3000
    sim.ctl("faults", {"set": {"slow": 0.3}, "clear": ["http500", "broken_link"]})
    started = time.monotonic()
    assert ocpi(sim, "GET", "/tariffs", token).status_code == 200
    assert time.monotonic() - started >= 0.3
    assert sim.ctl("faults", {"clear": ["slow"]})["faults"] == {}
    bad = requests.post(sim.url("/_sim/faults"), json={"set": {"nope": 1}}, timeout=5)
    assert bad.status_code == 400


def test_locations_file(start_sim, tmp_path, fake_emsp: FakeEmsp) -> None:
    loc = {
        "country_code": "XX",
        "party_id": "OLD",
        "id": "FILE-1",
        "publish": True,
        "address": "1 MG Road",
        "city": "Bengaluru",
        "country": "IND",
        "coordinates": {"latitude": "12.971600", "longitude": "77.594600"},
        "evses": [
            {
                "uid": "FILE-1-1",
                "status": "AVAILABLE",
                "connectors": [
                    {
                        "id": "1",
                        "standard": "IEC_62196_T2",
                        "format": "SOCKET",
                        "power_type": "AC_3_PHASE",
                        "max_voltage": 400,
                        "max_amperage": 32,
                        "last_updated": "2024-01-01T00:00:00Z",
                    }
                ],
                "last_updated": "2024-01-01T00:00:00Z",
            }
        ],
        "time_zone": "Asia/Kolkata",
        "last_updated": "2024-01-01T00:00:00Z",
    }
    path = tmp_path / "locs.json"
    path.write_text(json.dumps({"data": [loc], "status_code": 1000, "timestamp": "2024-01-01T00:00:00Z"}))
    sim = start_sim("--locations-file", str(path), "--tariff-profile", "b", "--party-id", "CPB")
    locs = sim.ctl("locations")
    assert [x["id"] for x in locs] == ["FILE-1"]
    assert locs[0]["party_id"] == "CPB" and locs[0]["country_code"] == "IN"
    evse = locs[0]["evses"][0]
    assert evse["connectors"][0]["tariff_ids"] == ["B-AC-SAVER"] and "RESERVABLE" in evse["capabilities"]
    token = fake_emsp.register_with_sim(sim)
    assert ocpi(sim, "GET", "/locations", token).headers["X-Total-Count"] == "1"
