"""Simulator behaviour towards an eMSP: commands, pushes, reservations, RFID swipes, CDR totals, registration."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_CEILING, Decimal

import requests

from .conftest import FakeEmsp, auth, ocpi, pick_evse, wait_until

FAST = ("--command-delay", "0.1", "--plug-in-delay", "0.1", "--meter-interval", "0.25")
IST = timezone(timedelta(hours=5, minutes=30))


def app_token(uid: str = "APP-USER-1") -> dict:
    return {
        "country_code": "IN",
        "party_id": "EMS",
        "uid": uid,
        "type": "APP_USER",
        "contract_id": f"IN-EMS-{uid}",
        "issuer": "Fake eMSP",
        "valid": True,
        "whitelist": "NEVER",
        "last_updated": "2025-01-01T00:00:00Z",
    }


def command(sim, token: str, name: str, body: dict) -> dict:
    resp = ocpi(sim, "POST", f"/commands/{name}", token, json=body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["OCPI-from-party-id"] == "CPA" and resp.headers["OCPI-to-party-id"] == "EMS"
    return resp.json()


def expected_total(cdr: dict) -> tuple[Decimal, Decimal]:
    """Independent pricing of a CDR of tariff profile a (flat + energy by IST time of day + time + parking),
    step_size 1: the session's energy is billed in whole Wh and its time in whole seconds, the extra at the
    rate of the last period that used it (mod_cdrs step_size)."""
    tariff = cdr["tariffs"][0]
    dc = tariff["id"] == "A-DC-FAST"
    flat, day, night = (Decimal(30), Decimal(22), Decimal(16)) if dc else (Decimal(20), Decimal(18), Decimal(14))
    time_rate, parking_rate = (Decimal(60), Decimal(120)) if dc else (Decimal(0), Decimal(60))
    total = flat
    sums = {"ENERGY": Decimal(0), "TIME": Decimal(0), "PARKING_TIME": Decimal(0)}
    last_rate: dict[str, Decimal] = {}
    for period in cdr["charging_periods"]:
        local = datetime.fromisoformat(period["start_date_time"].replace("Z", "+00:00")).astimezone(IST)
        is_night = local.hour >= 22 or local.hour < 6
        for dim in period["dimensions"]:
            vol = Decimal(str(dim["volume"]))
            rate = {"ENERGY": night if is_night else day, "TIME": time_rate, "PARKING_TIME": parking_rate}[dim["type"]]
            total += vol * rate
            sums[dim["type"]] += vol
            last_rate[dim["type"]] = rate
    for dim, unit in (("ENERGY", Decimal(1000)), ("PARKING_TIME" if sums["PARKING_TIME"] else "TIME", Decimal(3600))):
        if sums[dim]:
            units = sums[dim] * unit
            total += (units.to_integral_value(ROUND_CEILING) - units) / unit * last_rate[dim]
    return total, total * Decimal("1.18")


def test_remote_start_stop_pushes_and_cdr(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--power-kw", "360", "--session-kwh", "0.04")
    token = fake_emsp.register_with_sim(sim)
    loc_id, evse_uid = pick_evse(sim, need=("REMOTE_START_STOP_CAPABLE",), power="DC")

    body = {
        "response_url": f"{fake_emsp.base}/emsp/cmd/start-1",
        "token": app_token(),
        "location_id": loc_id,
        "evse_uid": evse_uid,
        "authorization_reference": "AUTH-REF-1",
    }
    resp = command(sim, token, "START_SESSION", body)
    assert resp["status_code"] == 1000
    assert resp["data"]["result"] == "ACCEPTED" and resp["data"]["timeout"] == 30

    result = fake_emsp.wait_for("POST", "/emsp/cmd/start-1")
    assert result.body == {"result": "ACCEPTED"} and result.token == fake_emsp.token_b
    put = fake_emsp.wait_for("PUT", "/emsp/2.2.1/sessions/IN/CPA/")
    session = put.body
    assert put.path.endswith(f"/{session['id']}")
    assert put.headers["OCPI-to-party-id"] == "EMS" and put.headers["OCPI-from-party-id"] == "CPA"
    assert put.headers["X-Request-ID"] and put.headers["X-Correlation-ID"]
    assert session["status"] == "ACTIVE" and session["auth_method"] == "COMMAND"
    assert session["authorization_reference"] == "AUTH-REF-1"
    assert session["cdr_token"]["uid"] == "APP-USER-1" and session["cdr_token"]["contract_id"] == "IN-EMS-APP-USER-1"
    assert session["location_id"] == loc_id and session["evse_uid"] == evse_uid and session["currency"] == "INR"
    assert session["total_cost"] == {"excl_vat": 30.0, "incl_vat": 35.4}  # the flat fee so far
    charging = fake_emsp.wait_for(
        "PATCH", f"/locations/IN/CPA/{loc_id}/{evse_uid}", lambda s: s.body["status"] == "CHARGING"
    )
    assert set(charging.body) == {"status", "last_updated"}
    meter = fake_emsp.wait_for("PATCH", f"/sessions/IN/CPA/{session['id']}", lambda s: s.body.get("charging_periods"))
    assert meter.body["kwh"] > 0 and "last_updated" in meter.body and meter.body["total_cost"]["excl_vat"] > 30
    assert sim.ctl("locations") and any(
        e["status"] == "CHARGING" for loc in sim.ctl("locations") if loc["id"] == loc_id for e in loc["evses"]
    )

    time.sleep(0.8)  # 0.04 kWh at 360 kW is full after 0.4 s: the rest is PARKING_TIME
    stop = command(
        sim, token, "STOP_SESSION", {"response_url": f"{fake_emsp.base}/emsp/cmd/stop-1", "session_id": session["id"]}
    )
    assert stop["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/stop-1").body["result"] == "ACCEPTED"
    done = fake_emsp.wait_for("PATCH", f"/sessions/IN/CPA/{session['id']}", lambda s: s.body.get("status"))
    assert done.body["status"] == "COMPLETED" and done.body["end_date_time"]
    fake_emsp.wait_for("PATCH", f"/locations/IN/CPA/{loc_id}/{evse_uid}", lambda s: s.body["status"] == "AVAILABLE")
    cdr = fake_emsp.wait_for("POST", "/emsp/2.2.1/cdrs").body

    assert cdr["session_id"] == session["id"] and cdr["authorization_reference"] == "AUTH-REF-1"
    assert cdr["cdr_location"]["id"] == loc_id and cdr["cdr_location"]["evse_uid"] == evse_uid
    assert cdr["cdr_location"]["connector_power_type"] == "DC" and "time_zone" not in cdr["cdr_location"]
    assert [t["id"] for t in cdr["tariffs"]] == ["A-DC-FAST"]
    dims = [d["type"] for p in cdr["charging_periods"] for d in p["dimensions"]]
    assert "ENERGY" in dims and "TIME" in dims and "PARKING_TIME" in dims
    energy = sum(d["volume"] for p in cdr["charging_periods"] for d in p["dimensions"] if d["type"] == "ENERGY")
    assert abs(energy - 0.04) < 1e-3 and abs(cdr["total_energy"] - energy) < 1e-6
    parking = sum(d["volume"] for p in cdr["charging_periods"] for d in p["dimensions"] if d["type"] == "PARKING_TIME")
    assert abs(cdr["total_parking_time"] - parking) < 1e-5 and parking > 0
    excl, incl = expected_total(cdr)
    assert abs(Decimal(str(cdr["total_cost"]["excl_vat"])) - excl) <= Decimal("0.006")
    assert abs(Decimal(str(cdr["total_cost"]["incl_vat"])) - incl) <= Decimal("0.006")
    assert cdr["total_fixed_cost"] == {"excl_vat": 30.0, "incl_vat": 35.4}

    # the same objects are available by pulling
    since = {"date_from": "2020-01-01T00:00:00Z"}
    pulled = ocpi(sim, "GET", "/sessions", token, params=since).json()["data"]
    assert [s["status"] for s in pulled] == ["COMPLETED"]
    assert [c["id"] for c in ocpi(sim, "GET", "/cdrs", token).json()["data"]] == [cdr["id"]]
    # stopping again / unknown sessions
    again = command(
        sim, token, "STOP_SESSION", {"response_url": f"{fake_emsp.base}/emsp/cmd/x", "session_id": session["id"]}
    )
    assert again["data"]["result"] == "REJECTED"
    unknown = command(
        sim, token, "STOP_SESSION", {"response_url": f"{fake_emsp.base}/emsp/cmd/x", "session_id": "NOPE"}
    )
    assert unknown["data"]["result"] == "UNKNOWN_SESSION"
    log = sim.ctl("commands")
    assert [c["command"] for c in log][:2] == ["START_SESSION", "STOP_SESSION"]
    assert log[0]["result"] == {"result": "ACCEPTED"} and log[0]["result_http_status"] == 200


def test_start_rejections_and_evse_status_push(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST)
    token = fake_emsp.register_with_sim(sim)
    loc_id, evse_uid = pick_evse(sim, need=("REMOTE_START_STOP_CAPABLE",))
    pushed = sim.ctl("evse_status", {"location_id": loc_id, "evse_uid": evse_uid, "status": "OUTOFORDER"})
    assert pushed["push_status"] == 200
    patch = fake_emsp.wait_for("PATCH", f"/locations/IN/CPA/{loc_id}/{evse_uid}")
    assert patch.body["status"] == "OUTOFORDER" and patch.token == fake_emsp.token_b

    body = {
        "response_url": f"{fake_emsp.base}/emsp/cmd/s-inop",
        "token": app_token(),
        "location_id": loc_id,
        "evse_uid": evse_uid,
    }
    assert command(sim, token, "START_SESSION", body)["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/s-inop").body["result"] == "EVSE_INOPERATIVE"
    unknown = command(sim, token, "START_SESSION", {**body, "location_id": "NOPE"})
    assert unknown["status_code"] == 2003 and unknown["data"]["result"] == "REJECTED"
    missing = command(sim, token, "START_SESSION", {"response_url": body["response_url"]})
    assert missing["status_code"] == 2001
    bad = ocpi(sim, "POST", "/commands/SELF_DESTRUCT", token, json=body)
    assert bad.status_code == 404
    unlock = command(
        sim,
        token,
        "UNLOCK_CONNECTOR",
        {
            "response_url": f"{fake_emsp.base}/emsp/cmd/u1",
            "location_id": loc_id,
            "evse_uid": evse_uid,
            "connector_id": "1",
        },
    )
    assert unlock["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/u1").body["result"] == "ACCEPTED"


def test_reservation_push_expiry_and_cancel(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST)
    token = fake_emsp.register_with_sim(sim)
    loc_id, evse_uid = pick_evse(sim, need=("RESERVABLE",))
    expiry = (datetime.now(UTC) + timedelta(seconds=1.5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = {
        "response_url": f"{fake_emsp.base}/emsp/cmd/r1",
        "token": app_token(),
        "expiry_date": expiry,
        "reservation_id": "RES-1",
        "location_id": loc_id,
        "evse_uid": evse_uid,
    }
    assert command(sim, token, "RESERVE_NOW", body)["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/r1").body["result"] == "ACCEPTED"
    evse_path = f"/locations/IN/CPA/{loc_id}/{evse_uid}"
    fake_emsp.wait_for("PATCH", evse_path, lambda s: s.body["status"] == "RESERVED")
    # a second reservation on the same EVSE is refused by the charger
    other = {**body, "reservation_id": "RES-2", "response_url": f"{fake_emsp.base}/emsp/cmd/r2"}
    assert command(sim, token, "RESERVE_NOW", other)["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/r2").body["result"] == "EVSE_OCCUPIED"
    # expiry frees the EVSE
    fake_emsp.wait_for("PATCH", evse_path, lambda s: s.body["status"] == "AVAILABLE", timeout=4)
    assert sim.ctl("state")["counts"]["reservations"] == 0

    # cancel before expiry
    later = (datetime.now(UTC) + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body3 = {**body, "reservation_id": "RES-3", "expiry_date": later, "response_url": f"{fake_emsp.base}/emsp/cmd/r3"}
    command(sim, token, "RESERVE_NOW", body3)
    fake_emsp.wait_for("POST", "/emsp/cmd/r3")
    wait_until(
        lambda: len(fake_emsp.requests_matching("PATCH", evse_path, lambda s: s.body["status"] == "RESERVED")) == 2
    )
    cancel = command(
        sim, token, "CANCEL_RESERVATION", {"response_url": f"{fake_emsp.base}/emsp/cmd/c3", "reservation_id": "RES-3"}
    )
    assert cancel["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/c3").body["result"] == "ACCEPTED"
    wait_until(
        lambda: len(fake_emsp.requests_matching("PATCH", evse_path, lambda s: s.body["status"] == "AVAILABLE")) == 2
    )
    command(
        sim, token, "CANCEL_RESERVATION", {"response_url": f"{fake_emsp.base}/emsp/cmd/c4", "reservation_id": "RES-404"}
    )
    assert fake_emsp.wait_for("POST", "/emsp/cmd/c4").body["result"] == "UNKNOWN_RESERVATION"

    # an EVSE without RESERVABLE
    loc2, evse2 = pick_evse(sim, exclude=("RESERVABLE",))
    nope = command(
        sim, token, "RESERVE_NOW", {**body3, "reservation_id": "RES-5", "location_id": loc2, "evse_uid": evse2}
    )
    assert nope["data"]["result"] == "NOT_SUPPORTED"

    # a reserved EVSE starts only for the token holding the reservation, which consumes the reservation
    body6 = {**body3, "reservation_id": "RES-6", "response_url": f"{fake_emsp.base}/emsp/cmd/r6"}
    command(sim, token, "RESERVE_NOW", body6)
    assert fake_emsp.wait_for("POST", "/emsp/cmd/r6").body["result"] == "ACCEPTED"
    start = {
        "response_url": f"{fake_emsp.base}/emsp/cmd/s-other",
        "token": app_token("SOMEONE-ELSE"),
        "location_id": loc_id,
        "evse_uid": evse_uid,
    }
    command(sim, token, "START_SESSION", start)
    assert fake_emsp.wait_for("POST", "/emsp/cmd/s-other").body["result"] == "EVSE_OCCUPIED"
    mine = {**start, "token": app_token(), "response_url": f"{fake_emsp.base}/emsp/cmd/s-mine"}
    command(sim, token, "START_SESSION", mine)
    assert fake_emsp.wait_for("POST", "/emsp/cmd/s-mine").body["result"] == "ACCEPTED"
    put = fake_emsp.wait_for("PUT", "/emsp/2.2.1/sessions/")
    assert put.body["cdr_token"]["uid"] == "APP-USER-1" and put.body["evse_uid"] == evse_uid
    assert sim.ctl("state")["counts"]["reservations"] == 0


def test_lowercase_fault_in_pushes(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--fault", "lowercase", "--locations", "3")
    fake_emsp.register_with_sim(sim)
    loc = sim.ctl("locations")[0]
    sim.ctl("evse_status", {"location_id": loc["id"], "evse_uid": loc["evses"][0]["uid"], "status": "BLOCKED"})
    patch = fake_emsp.wait_for("PATCH", "/emsp/2.2.1/locations/in/cpa/")
    assert patch.path.endswith(f"/{loc['id'].lower()}/{loc['evses'][0]['uid'].lower()}")
    assert patch.body["status"] == "blocked"


def test_no_command_result_fault(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--fault", "no_command_result")
    token = fake_emsp.register_with_sim(sim)
    loc_id, evse_uid = pick_evse(sim, need=("REMOTE_START_STOP_CAPABLE",))
    body = {
        "response_url": f"{fake_emsp.base}/emsp/cmd/lost",
        "token": app_token(),
        "location_id": loc_id,
        "evse_uid": evse_uid,
    }
    assert command(sim, token, "START_SESSION", body)["data"]["result"] == "ACCEPTED"
    fake_emsp.wait_for("PUT", "/emsp/2.2.1/sessions/")  # the session starts anyway (ocpi/ocpi#475)
    time.sleep(0.3)
    assert fake_emsp.requests_matching("POST", "/emsp/cmd/lost") == []
    entry = sim.ctl("commands")[0]
    assert entry["result_suppressed"] and entry["result_http_status"] is None


def test_rfid_swipe_uses_realtime_authorization(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--power-kw", "50")
    token = fake_emsp.register_with_sim(sim)
    fake_emsp.allowed_tokens["RFID-OK"] = {
        "country_code": "IN",
        "party_id": "EMS",
        "uid": "RFID-OK",
        "type": "RFID",
        "contract_id": "IN-EMS-C0001",
        "issuer": "Fake eMSP",
        "valid": True,
        "whitelist": "ALLOWED",
        "last_updated": "2025-01-01T00:00:00Z",
    }
    loc_id, evse_uid = pick_evse(sim, power="AC")
    denied = sim.ctl("start_session", {"location_id": loc_id, "evse_uid": evse_uid, "token_uid": "RFID-NO"})
    assert denied["started"] is False and denied["authorization"]["http_status"] == 404
    started = sim.ctl(
        "start_session", {"location_id": loc_id, "evse_uid": evse_uid, "token_uid": "RFID-OK", "token_type": "RFID"}
    )
    assert started["started"] and started["auth_method"] == "AUTH_REQUEST"
    rta = fake_emsp.wait_for("POST", "/tokens/RFID-OK/authorize")
    assert rta.query == {"type": ["RFID"]} and rta.body == {"location_id": loc_id, "evse_uids": [evse_uid]}
    assert rta.headers["OCPI-to-party-id"] == "EMS"
    put = fake_emsp.wait_for("PUT", f"/sessions/IN/CPA/{started['session_id']}")
    assert put.body["authorization_reference"] == "RTA-RFID-OK" and put.body["auth_method"] == "AUTH_REQUEST"
    assert put.body["cdr_token"]["contract_id"] == "IN-EMS-C0001"
    # occupied now
    busy = sim.ctl("start_session", {"location_id": loc_id, "evse_uid": evse_uid, "token_uid": "RFID-OK"})
    assert busy == {"started": False, "reason": "EVSE_OCCUPIED"}
    time.sleep(0.4)
    stopped = sim.ctl("stop_session", {"session_id": started["session_id"]})
    cdr = stopped["cdr"]
    assert cdr["auth_method"] == "AUTH_REQUEST" and cdr["tariffs"][0]["id"] == "A-AC-STD"
    excl, incl = expected_total(cdr)
    assert abs(Decimal(str(cdr["total_cost"]["excl_vat"])) - excl) <= Decimal("0.006")
    assert abs(Decimal(str(cdr["total_cost"]["incl_vat"])) - incl) <= Decimal("0.006")
    posted = fake_emsp.wait_for("POST", "/emsp/2.2.1/cdrs")
    assert posted.body["id"] == cdr["id"]
    assert sim.ctl("stop_session", {"session_id": started["session_id"]}) == {"error": "no active session with that id"}
    assert ocpi(sim, "GET", "/cdrs", token).json()["data"][0]["id"] == cdr["id"]


def test_cdr_overcharge(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--cdr-overcharge", "0.1", "--tariff-profile", "b", "--party-id", "CPB")
    fake_emsp.register_with_sim(sim)
    fake_emsp.allowed_tokens["RFID-OK"] = {"uid": "RFID-OK", "type": "RFID", "contract_id": "C1"}
    loc_id, evse_uid = pick_evse(sim)
    started = sim.ctl("start_session", {"location_id": loc_id, "evse_uid": evse_uid, "token_uid": "RFID-OK"})
    cdr = sim.ctl("stop_session", {"session_id": started["session_id"]})["cdr"]
    assert cdr["party_id"] == "CPB" and cdr["tariffs"][0]["id"].startswith("B-")
    fixed = 49.0 if "DC" in cdr["tariffs"][0]["id"] else 10.0
    assert cdr["total_fixed_cost"]["excl_vat"] == round(fixed * 1.1, 2)
    assert "overcharge" in cdr["remark"]


def test_simulator_registers_with_emsp(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--token-encoding", "raw", "--locations", "4")
    state = sim.ctl("register", {"versions_url": fake_emsp.versions_url, "token_a": fake_emsp.token_a})
    assert state["registered"] and state["direction"] == "we_registered_with_emsp"
    # the fake called back our versions + details with token B before answering the POST
    assert fake_emsp.callback_before_reply == ["versions 200", "details 200"]
    post = fake_emsp.wait_for("POST", "/emsp/2.2.1/credentials")
    assert post.token == fake_emsp.token_a and post.headers["Authorization"].startswith("Token ")
    assert post.body["roles"][0] == {
        "role": "CPO",
        "party_id": "CPA",
        "country_code": "IN",
        "business_details": {"name": "Sim CPO A"},
    }
    assert post.body["url"] == sim.versions_url
    assert state["token_b"] == post.body["token"] == fake_emsp.sim_token
    assert state["token_c"] == fake_emsp.token_c
    # pushes now use token C, raw-encoded as configured
    loc = sim.ctl("locations")[0]
    sim.ctl("evse_status", {"location_id": loc["id"], "evse_uid": loc["evses"][0]["uid"], "status": "BLOCKED"})
    patch = fake_emsp.wait_for("PATCH", "/emsp/2.2.1/locations/IN/CPA/")
    assert patch.headers["Authorization"] == f"Token {fake_emsp.token_c}"
    # and the eMSP can call us with token B
    assert ocpi(sim, "GET", "/locations", state["token_b"]).status_code == 200
    unreachable = requests.post(
        sim.url("/_sim/register"),
        json={"versions_url": "http://127.0.0.1:9/v", "token_a": "x", "attempts": 1},
        timeout=10,
    )
    assert unreachable.status_code == 502 and unreachable.json()["registered"] is False


def test_register_with_cli_option(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(
        "--locations", "2", "--register-with", fake_emsp.versions_url, "--register-token", fake_emsp.token_a
    )
    wait_until(lambda: sim.ctl("state")["registered"], timeout=10)
    assert sim.lines.get(timeout=5) == f"REGISTERED {fake_emsp.versions_url}"
    assert requests.get(sim.versions_url, headers=auth(sim.ctl("state")["token_b"]), timeout=5).status_code == 200
