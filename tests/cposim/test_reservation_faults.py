"""What CPOs do with reservations, as fault modes: every RESERVE_NOW refused by the charger
(`reject_reservations`), reservations taken only so far ahead (`reserve_ahead_limit=MINUTES`), and a
reservation whose result never comes (`no_reservation_result`); each switchable at runtime (`/_sim/faults`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from .conftest import FakeEmsp, pick_evse, wait_until
from .test_charging import FAST, app_token, command


def reserve_body(fake_emsp: FakeEmsp, name: str, loc_id: str, evse_uid: str, minutes: float) -> dict:
    expiry = (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "response_url": f"{fake_emsp.base}/emsp/cmd/{name}",
        "token": app_token(),
        "expiry_date": expiry,
        "reservation_id": name.upper(),
        "location_id": loc_id,
        "evse_uid": evse_uid,
    }


def reserved_patches(fake_emsp: FakeEmsp, loc_id: str, evse_uid: str) -> list:
    path = f"/locations/IN/CPA/{loc_id}/{evse_uid}"
    return fake_emsp.requests_matching("PATCH", path, lambda s: s.body["status"] == "RESERVED")


def test_it_rejects_every_reservation_and_is_switched_at_runtime(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--fault", "reject_reservations")
    token = fake_emsp.register_with_sim(sim)
    loc_id, evse_uid = pick_evse(sim, need=("RESERVABLE",))

    # the command is taken, the charger refuses it: nothing is reserved, the EVSE stays AVAILABLE
    refused = reserve_body(fake_emsp, "r1", loc_id, evse_uid, 10)
    assert command(sim, token, "RESERVE_NOW", refused)["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/r1").body["result"] == "REJECTED"
    assert sim.ctl("reservations") == []
    time.sleep(0.3)
    assert reserved_patches(fake_emsp, loc_id, evse_uid) == []
    assert sim.ctl("commands")[0]["result"] == {"result": "REJECTED"}

    # cleared through the control API, the same charger takes the next reservation
    assert sim.ctl("faults", {"clear": ["reject_reservations"]})["faults"] == {}
    command(sim, token, "RESERVE_NOW", reserve_body(fake_emsp, "r2", loc_id, evse_uid, 10))
    assert fake_emsp.wait_for("POST", "/emsp/cmd/r2").body["result"] == "ACCEPTED"
    wait_until(lambda: reserved_patches(fake_emsp, loc_id, evse_uid))
    assert [r["reservation_id"] for r in sim.ctl("reservations")] == ["R2"]

    # and switched on again at runtime, the next one is refused
    assert sim.ctl("faults", {"set": {"reject_reservations": True}})["faults"] == {"reject_reservations": True}
    other_loc, other_evse = pick_evse(sim, need=("RESERVABLE",), skip=1)
    command(sim, token, "RESERVE_NOW", reserve_body(fake_emsp, "r3", other_loc, other_evse, 10))
    assert fake_emsp.wait_for("POST", "/emsp/cmd/r3").body["result"] == "REJECTED"
    assert [r["reservation_id"] for r in sim.ctl("reservations")] == ["R2"]


def test_it_takes_reservations_only_so_far_ahead(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--fault", "reserve_ahead_limit=20")
    token = fake_emsp.register_with_sim(sim)
    loc_id, evse_uid = pick_evse(sim, need=("RESERVABLE",))
    assert sim.ctl("state")["faults"] == {"reserve_ahead_limit": 20.0}

    too_far = command(sim, token, "RESERVE_NOW", reserve_body(fake_emsp, "far", loc_id, evse_uid, 45))
    assert too_far["data"]["result"] == "REJECTED"
    assert "20 minutes" in too_far["data"]["message"][0]["text"]
    time.sleep(0.3)
    assert fake_emsp.requests_matching("POST", "/emsp/cmd/far") == []  # refused at once: no result follows
    assert sim.ctl("reservations") == []

    near = command(sim, token, "RESERVE_NOW", reserve_body(fake_emsp, "near", loc_id, evse_uid, 15))
    assert near["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/near").body["result"] == "ACCEPTED"

    # the limit is changed at runtime; without a value it is 30 minutes; 0 switches it off
    other_loc, other_evse = pick_evse(sim, need=("RESERVABLE",), skip=1)
    assert sim.ctl("faults", {"set": {"reserve_ahead_limit": None}})["faults"] == {"reserve_ahead_limit": 30.0}
    assert (
        command(sim, token, "RESERVE_NOW", reserve_body(fake_emsp, "x", other_loc, other_evse, 40))["data"]["result"]
        == "REJECTED"
    )
    assert sim.ctl("faults", {"set": {"reserve_ahead_limit": 0}})["faults"] == {}
    far_ok = command(sim, token, "RESERVE_NOW", reserve_body(fake_emsp, "y", other_loc, other_evse, 40))
    assert far_ok["data"]["result"] == "ACCEPTED"
    assert fake_emsp.wait_for("POST", "/emsp/cmd/y").body["result"] == "ACCEPTED"


def test_it_reserves_without_telling_the_result(start_sim, fake_emsp: FakeEmsp) -> None:
    sim = start_sim(*FAST, "--fault", "no_reservation_result")
    token = fake_emsp.register_with_sim(sim)
    loc_id, evse_uid = pick_evse(sim, need=("RESERVABLE", "REMOTE_START_STOP_CAPABLE"))

    command(sim, token, "RESERVE_NOW", reserve_body(fake_emsp, "silent", loc_id, evse_uid, 10))
    wait_until(lambda: reserved_patches(fake_emsp, loc_id, evse_uid))  # the reservation is made…
    time.sleep(0.3)
    assert fake_emsp.requests_matching("POST", "/emsp/cmd/silent") == []  # …and its result never sent
    entry = next(c for c in sim.ctl("commands") if c["command"] == "RESERVE_NOW")
    assert entry["result_suppressed"] and entry["result"] == {"result": "ACCEPTED"}

    # other commands still answer
    cancel = {"response_url": f"{fake_emsp.base}/emsp/cmd/cancel", "reservation_id": "SILENT"}
    command(sim, token, "CANCEL_RESERVATION", cancel)
    assert fake_emsp.wait_for("POST", "/emsp/cmd/cancel").body["result"] == "ACCEPTED"


def test_it_refuses_fault_values_that_are_not_numbers(start_sim) -> None:
    sim = start_sim("--locations", "2")
    for value in ("soon", "inf", "nan"):
        answer = sim.ctl("faults", {"set": {"reserve_ahead_limit": value}})
        assert "not valid" in answer["error"]
    assert sim.ctl("state")["faults"] == {}
