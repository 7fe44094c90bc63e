"""The simulator started with `--ocpi-version 2.1.1` or `2.3.0`: it offers only that version, registers in it
(both directions) and every object it serves or sends is in that version's shape (cposim/versions.py wired into
server.py and emsp_client.py). The fake eMSP here offers all three versions, as ours does."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from cposim.config import config_from_options

from .conftest import FakeEmsp, Seen, SimProcess, auth, pick_evse

FAST = ("--command-delay", "0.1", "--plug-in-delay", "0.1", "--meter-interval", "0.25")
EXAMPLES = Path(__file__).resolve().parents[1] / "ocpi" / "spec_examples"
V211: dict[str, Any] = json.loads((EXAMPLES / "ocpi-2.1.1.json").read_text())
MODULES = {"credentials", "locations", "sessions", "cdrs", "tariffs", "tokens", "commands"}


class VersionedFakeEmsp(FakeEmsp):
    """A fake eMSP that offers 2.1.1, 2.2.1 and 2.3.0 and answers each version's credentials in its shape."""

    def version_details(self, version: str) -> dict[str, Any]:
        roles = {"credentials": "SENDER", "tokens": "SENDER", "commands": "SENDER"}
        endpoints = [
            {"identifier": m, "role": roles.get(m, "RECEIVER"), "url": f"{self.base}/emsp/{version}/{m}"}
            for m in sorted(MODULES)
        ]
        if version == "2.1.1":
            endpoints = [{k: v for k, v in e.items() if k != "role"} for e in endpoints]
        return {"version": version, "endpoints": endpoints}

    def credentials(self, version: str) -> dict[str, Any]:
        if version == "2.1.1":
            return {
                "token": self.token_c,
                "url": self.versions_url,
                "business_details": {"name": "Fake eMSP"},
                "country_code": self.COUNTRY,
                "party_id": self.PARTY,
            }
        return {"token": self.token_c, "url": self.versions_url, "roles": self.roles()}

    def respond(self, s: Seen) -> tuple[int, Any, dict[str, str]]:
        if s.token not in self.accepted:
            return 401, self.envelope(None, 2000), {}
        parts = s.path.strip("/").split("/")
        if parts == ["emsp", "versions"]:
            offered = [{"version": v, "url": f"{self.base}/emsp/{v}"} for v in ("2.1.1", "2.2.1", "2.3.0")]
            return 200, self.envelope(offered), {}
        if len(parts) == 2:
            return 200, self.envelope(self.version_details(parts[1])), {}
        if parts[2:] == ["credentials"] and s.method == "POST":
            self.sim_token = s.body["token"]
            return 200, self.envelope(self.credentials(parts[1])), {}
        if parts[2:] == ["cdrs"] and s.method == "POST":
            return 201, self.envelope(None), {"Location": f"{self.base}/emsp/{parts[1]}/cdrs/{s.body['id']}"}
        return 200, self.envelope(None), {}


@pytest.fixture
def emsp() -> Any:
    fake = VersionedFakeEmsp()
    yield fake
    fake.stop()


def ocpi(sim: SimProcess, version: str, method: str, path: str, token: str, **kw: Any) -> requests.Response:
    return requests.request(method, sim.url(f"/ocpi/{version}{path}"), headers=auth(token), timeout=10, **kw)


def offered(sim: SimProcess) -> list[dict[str, Any]]:
    return requests.get(sim.versions_url, headers=auth(sim.token_a), timeout=5).json()["data"]


def register_211(sim: SimProcess, emsp: VersionedFakeEmsp) -> str:
    """We register with the simulator in 2.1.1: Credentials with one party at the top level."""
    body = {
        "token": emsp.token_b,
        "url": emsp.versions_url,
        "business_details": {"name": "Fake eMSP"},
        "country_code": "IN",
        "party_id": "EMS",
    }
    resp = ocpi(sim, "2.1.1", "POST", "/credentials", sim.token_a, json=body).json()
    assert resp["status_code"] == 1000, resp
    assert set(resp["data"]) == set(V211["credentials"])
    assert (resp["data"]["country_code"], resp["data"]["party_id"]) == ("IN", "CPA")
    return str(resp["data"]["token"])


def token_211(uid: str) -> dict[str, Any]:
    return {
        "uid": uid,
        "type": "RFID",
        "auth_id": f"IN-EMS-{uid}",
        "issuer": "Fake eMSP",
        "valid": True,
        "whitelist": "ALLOWED",
        "last_updated": "2025-01-01T00:00:00Z",
    }


def test_it_speaks_only_2_1_1_from_handshake_to_cdr(start_sim: Any, emsp: VersionedFakeEmsp) -> None:
    sim = start_sim(*FAST, "--ocpi-version", "2.1.1", "--power-kw", "360", "--session-kwh", "0.04")
    assert offered(sim) == [{"version": "2.1.1", "url": sim.url("/ocpi/2.1.1")}]
    details = ocpi(sim, "2.1.1", "GET", "", sim.token_a).json()["data"]
    assert details["version"] == "2.1.1"
    assert all(set(e) == {"identifier", "url"} and "/ocpi/2.1.1/" in e["url"] for e in details["endpoints"])
    assert ocpi(sim, "2.2.1", "GET", "", sim.token_a).status_code == 404

    token = register_211(sim, emsp)
    assert [s.path for s in emsp.seen if s.method == "GET"] == ["/emsp/versions", "/emsp/2.1.1"]

    page = ocpi(sim, "2.1.1", "GET", "/locations", token)
    assert "OCPI-from-party-id" not in page.headers  # 2.1.1 has no routing headers
    location = page.json()["data"][0]
    assert "country_code" not in location and "party_id" not in location and location["type"]
    assert set(location["evses"][0]["connectors"][0]) >= {"voltage", "amperage"}

    put = ocpi(sim, "2.1.1", "PUT", "/tokens/IN/EMS/RFID-1", token, json=token_211("RFID-1"))
    assert put.status_code == 201, put.text
    got = ocpi(sim, "2.1.1", "GET", "/tokens/IN/EMS/RFID-1", token).json()["data"]
    assert got == token_211("RFID-1")

    loc_id, evse_uid = pick_evse(sim, need=("REMOTE_START_STOP_CAPABLE",), power="DC")
    start = {
        "response_url": f"{emsp.base}/emsp/cmd/start",
        "token": token_211("RFID-1"),
        "location_id": loc_id,
        "evse_uid": evse_uid,
    }
    answer = ocpi(sim, "2.1.1", "POST", "/commands/START_SESSION", token, json=start).json()
    assert answer["data"] == {"result": "ACCEPTED"}  # 2.1.1 CommandResponse: no timeout
    assert emsp.wait_for("POST", "/emsp/cmd/start").body == {"result": "ACCEPTED"}

    session_put = emsp.wait_for("PUT", "/emsp/2.1.1/sessions/IN/CPA/")
    session = session_put.body
    assert "OCPI-from-party-id" not in session_put.headers
    assert set(session) <= set(V211["session_finished"])
    assert session["auth_id"] == "IN-EMS-RFID-1" and session["status"] == "ACTIVE"
    assert [(e["uid"], len(e["connectors"])) for e in session["location"]["evses"]] == [(evse_uid, 1)]
    meter = emsp.wait_for("PATCH", f"/sessions/IN/CPA/{session['id']}", lambda s: s.body.get("charging_periods"))
    assert isinstance(meter.body["total_cost"], float)

    time.sleep(0.5)
    stop = {"response_url": f"{emsp.base}/emsp/cmd/stop", "session_id": session["id"]}
    assert ocpi(sim, "2.1.1", "POST", "/commands/STOP_SESSION", token, json=stop).json()["data"] == {
        "result": "ACCEPTED"
    }
    done = emsp.wait_for("PATCH", f"/sessions/IN/CPA/{session['id']}", lambda s: s.body.get("status"))
    assert done.body["status"] == "COMPLETED" and done.body["end_datetime"] and "end_date_time" not in done.body
    cdr = emsp.wait_for("POST", "/emsp/2.1.1/cdrs").body
    assert set(cdr) <= set(V211["cdr"]) | {"meter_id", "total_parking_time", "remark"}
    assert "session_id" not in cdr and cdr["auth_id"] == "IN-EMS-RFID-1" and cdr["stop_date_time"]
    held = next(c for c in sim.ctl("cdrs") if c["id"] == cdr["id"])
    assert cdr["total_cost"] == held["total_cost"]["excl_vat"]
    pulled = ocpi(sim, "2.1.1", "GET", "/cdrs", token).json()["data"]
    assert [(c["id"], "session_id" in c) for c in pulled] == [(cdr["id"], False)]

    cancel = {"response_url": f"{emsp.base}/emsp/cmd/c", "reservation_id": 7}
    assert ocpi(sim, "2.1.1", "POST", "/commands/CANCEL_RESERVATION", token, json=cancel).status_code == 404


def test_it_speaks_2_3_0_prices_with_taxes(start_sim: Any, emsp: VersionedFakeEmsp) -> None:
    sim = start_sim(*FAST, "--ocpi-version", "2.3.0", "--power-kw", "360", "--session-kwh", "0.04")
    assert offered(sim) == [{"version": "2.3.0", "url": sim.url("/ocpi/2.3.0")}]
    token = emsp.register_with_sim(sim)  # 2.3.0 Credentials have roles, as 2.2.1's
    assert [s.path for s in emsp.seen if s.method == "GET"] == ["/emsp/versions", "/emsp/2.3.0"]

    tariffs = ocpi(sim, "2.3.0", "GET", "/tariffs", token).json()["data"]
    assert tariffs and all(t["tax_included"] == "NO" for t in tariffs)
    location = ocpi(sim, "2.3.0", "GET", "/locations", token).json()["data"][0]
    assert len(location["parking_places"]) == len(location["evses"])

    loc_id, evse_uid = pick_evse(sim, need=("REMOTE_START_STOP_CAPABLE",), power="DC")
    start = {
        "response_url": f"{emsp.base}/emsp/cmd/start",
        "token": {"country_code": "IN", "party_id": "EMS", "uid": "APP-1", "type": "APP_USER", "contract_id": "C-1"}
        | {"issuer": "Fake eMSP", "valid": True, "whitelist": "NEVER", "last_updated": "2025-01-01T00:00:00Z"},
        "location_id": loc_id,
        "evse_uid": evse_uid,
    }
    resp = ocpi(sim, "2.3.0", "POST", "/commands/START_SESSION", token, json=start)
    assert resp.json()["data"]["result"] == "ACCEPTED" and resp.headers["OCPI-to-party-id"] == "EMS"
    session = emsp.wait_for("PUT", "/emsp/2.3.0/sessions/IN/CPA/").body
    assert set(session["total_cost"]) == {"before_taxes", "taxes"}
    time.sleep(0.5)
    stop = {"response_url": f"{emsp.base}/emsp/cmd/stop", "session_id": session["id"]}
    ocpi(sim, "2.3.0", "POST", "/commands/STOP_SESSION", token, json=stop)
    cdr = emsp.wait_for("POST", "/emsp/2.3.0/cdrs").body
    held = next(c for c in sim.ctl("cdrs") if c["id"] == cdr["id"])
    after = Decimal(str(cdr["total_cost"]["before_taxes"])) + sum(
        Decimal(str(t["amount"])) for t in cdr["total_cost"]["taxes"]
    )
    assert abs(after - Decimal(str(held["total_cost"]["incl_vat"]))) <= Decimal("0.0001")
    assert cdr["session_id"] == session["id"] and all(t["tax_included"] == "NO" for t in cdr["tariffs"])


@pytest.mark.parametrize("version", ["2.1.1", "2.3.0"])
def test_it_registers_with_an_emsp_in_its_own_version(start_sim: Any, emsp: VersionedFakeEmsp, version: str) -> None:
    sim = start_sim("--ocpi-version", version)
    state = sim.ctl("register", {"versions_url": emsp.versions_url, "token_a": emsp.token_a})
    assert state["registered"] is True, state
    posted = emsp.wait_for("POST", f"/emsp/{version}/credentials").body
    assert ("roles" in posted) is (version != "2.1.1")
    assert [r["party_id"] for r in state["emsp_roles"]] == ["EMS"]
    assert state["emsp_endpoints"] == emsp.version_details(version)["endpoints"]
    # what it pushes goes to that version's receivers
    loc_id, evse_uid = pick_evse(sim)
    assert sim.ctl("evse_status", {"location_id": loc_id, "evse_uid": evse_uid, "status": "BLOCKED"})["push_status"]
    emsp.wait_for("PATCH", f"/emsp/{version}/locations/IN/CPA/{loc_id}/{evse_uid}")


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown OCPI version '2.2'")):
        config_from_options({"ocpi_version": "2.2"})
