"""Unit tests of the simulator's own pricing, meter and synthetic catalogue (no processes)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from cposim.catalogue import CITIES, synthetic_locations, tariff_profile
from cposim.common import encode_token, get_tz, iso, token_candidates
from cposim.config import SimConfig, config_from_options, parse_faults
from cposim.meter import Runtime, advance_meter
from cposim.pricing import Context, merge_periods, price_session, restrictions_match, time_boundaries

from .conftest import REPO, SimProcess

IST = get_tz("Asia/Kolkata")


def ist(h: int, m: int = 0, s: int = 0, day: int = 6) -> datetime:
    """A January 2025 instant given in IST, as UTC (6 Jan 2025 is a Monday)."""
    return datetime(2025, 1, day, h, m, s, tzinfo=IST).astimezone(UTC)


def period(start: datetime, **dims: float) -> dict:
    return {
        "start_date_time": iso(start, ms=True),
        "tariff_id": "T",
        "dimensions": [{"type": k, "volume": v} for k, v in dims.items()],
    }


def tariffs(profile: str = "a") -> dict[str, dict]:
    return {t["id"]: t for t in tariff_profile(profile, SimConfig())}


def test_restrictions() -> None:
    ctx = Context(local=datetime(2025, 1, 6, 23, 30, tzinfo=IST), kwh_so_far=3.0, seconds_so_far=600)
    assert restrictions_match({"start_time": "22:00", "end_time": "06:00"}, ctx)  # wraps past midnight
    assert not restrictions_match({"start_time": "06:00", "end_time": "22:00"}, ctx)
    assert restrictions_match({"start_time": "18:00", "end_time": "00:00"}, ctx)  # 00:00 = end of day
    assert restrictions_match({"day_of_week": ["MONDAY"]}, ctx)
    assert not restrictions_match({"day_of_week": ["SATURDAY", "SUNDAY"]}, ctx)
    assert restrictions_match({"min_kwh": 3.0, "max_kwh": 5.0}, ctx)
    assert not restrictions_match({"max_kwh": 3.0}, ctx)
    assert not restrictions_match({"min_duration": 900}, ctx)
    assert not restrictions_match({"reservation": "RESERVATION"}, ctx)
    assert restrictions_match({"start_date": "2025-01-06", "end_date": "2025-01-07"}, ctx)


def test_energy_across_the_night_boundary_profile_a_ac() -> None:
    tariff = tariffs()["A-AC-STD"]
    start = ist(21, 30)
    periods = [
        period(start, ENERGY=5.0, TIME=0.5),
        period(ist(22), ENERGY=5.0, TIME=0.5),
        period(ist(22, 30), PARKING_TIME=0.25),
    ]
    res = price_session(tariff, periods, start, IST)
    assert res.fixed.excl == 20
    assert res.energy.excl == Decimal("5") * 18 + Decimal("5") * 14
    assert res.parking.excl == Decimal("0.25") * 60
    assert res.time.excl == 0  # no TIME component for AC
    assert res.total.excl == Decimal("195.00")
    assert res.total.incl == Decimal("195.00") * Decimal("1.18")
    assert res.total.price() == {"excl_vat": 195.0, "incl_vat": 230.1}


def test_profile_b_dc_and_profiles_differ() -> None:
    a, b = tariffs("a"), tariffs("b")
    assert set(a) == {"A-AC-STD", "A-DC-FAST"} and set(b) == {"B-AC-SAVER", "B-DC-ULTRA"}
    tariff = b["B-DC-ULTRA"]
    start = ist(12)
    res = price_session(
        tariff, [period(start, ENERGY=30.0, TIME=0.5), period(ist(12, 30), PARKING_TIME=0.5)], start, IST
    )
    assert res.total.excl == 49 + 30 * 24 + Decimal("0.5") * 90 + Decimal("0.5") * 150
    night = price_session(tariff, [period(ist(23, 30), ENERGY=10.0, TIME=0.25)], ist(23, 30), IST)
    assert night.energy.excl == 190
    for t in [*a.values(), *b.values()]:
        comps = [c for e in t["elements"] for c in e["price_components"]]
        assert {c["type"] for c in comps} >= {"FLAT", "ENERGY", "PARKING_TIME"}
        assert all(c["vat"] == 18.0 for c in comps) and t["currency"] == "INR"
        assert any("start_time" in (e.get("restrictions") or {}) for e in t["elements"])


def test_step_size_and_min_price() -> None:
    # numbers of the official cdr_example: TIME 2.00/h, 10 % VAT, step 300 s, 1.973 h -> 2 h billed
    tariff = {
        "id": "12",
        "currency": "EUR",
        "elements": [{"price_components": [{"type": "TIME", "price": 2.00, "vat": 10.0, "step_size": 300}]}],
    }
    start = datetime(2015, 6, 29, 21, 39, 9, tzinfo=UTC)
    res = price_session(tariff, [period(start, TIME=1.973)], start, UTC)
    assert res.total.price() == {"excl_vat": 4.0, "incl_vat": 4.4}
    energy = {
        "id": "E",
        "currency": "EUR",
        "min_price": {"excl_vat": 5.0, "incl_vat": 6.0},
        "elements": [{"price_components": [{"type": "ENERGY", "price": 1.0, "step_size": 1000}]}],
    }
    res = price_session(energy, [period(start, ENERGY=1.2)], start, UTC)
    assert res.energy.excl == 2  # 1.2 kWh rounded up to 2 kWh; no VAT given -> incl = excl
    assert res.total.excl == 5 and res.total.incl == 6  # min_price applies


def test_time_boundaries_and_merge() -> None:
    tariff = tariffs()["A-AC-STD"]
    cuts = time_boundaries(tariff, ist(21), ist(7, day=7), IST)
    assert cuts == [ist(22), ist(6, day=7)]
    start = ist(21, 58)
    periods = [
        period(start, ENERGY=0.1, TIME=0.01),
        period(ist(21, 59), ENERGY=0.1, TIME=0.01),
        period(ist(22), ENERGY=0.1, TIME=0.01),
        period(ist(22, 1), PARKING_TIME=0.02),
    ]
    merged = merge_periods(tariff, periods, start, IST)
    assert [len(p["dimensions"]) for p in merged] == [2, 2, 1]
    assert merged[0]["dimensions"][0] == {"type": "ENERGY", "volume": 0.2}
    assert price_session(tariff, merged, start, IST).total.excl == price_session(tariff, periods, start, IST).total.excl


def test_meter_splits_at_tariff_window_and_when_full() -> None:
    tariff = tariffs()["A-AC-STD"]
    start = ist(21, 59, 50)
    rt = Runtime("S1", "L", "E", "1", tariff, IST, power_kw=7.2, target_kwh=0.03, started=start, last_meter=start)
    periods = advance_meter(rt, ist(22, 0, 30))
    kinds = [[d["type"] for d in p["dimensions"]] for p in periods]
    assert kinds == [["ENERGY", "TIME"], ["ENERGY", "TIME"], ["PARKING_TIME"]]
    assert periods[1]["start_date_time"] == iso(ist(22), ms=True)
    assert math.isclose(sum(p["dimensions"][0]["volume"] for p in periods[:2]), 0.03)
    assert math.isclose(
        sum(d["volume"] for p in periods for d in p["dimensions"] if d["type"] != "ENERGY"), 40 / 3600, abs_tol=1e-6
    )
    assert rt.published_kwh == 0.03 and advance_meter(rt, ist(22, 0, 30)) == []


def test_synthetic_catalogue_is_deterministic_and_indian() -> None:
    cfg = SimConfig(locations=40, seed=7)
    locs = synthetic_locations(cfg, tariff_profile("a", cfg))
    assert locs == synthetic_locations(cfg, tariff_profile("a", cfg))
    other = synthetic_locations(SimConfig(locations=40, seed=7, party_id="CPB"), tariff_profile("a", cfg))
    assert [x["coordinates"] for x in other] != [x["coordinates"] for x in locs]
    centres = {c.name: c for c in CITIES}
    evses = [e for loc in locs for e in loc["evses"]]
    assert len({e["uid"] for e in evses}) == len(evses)
    for loc in locs:
        city = centres[loc["city"]]
        assert loc["time_zone"] == "Asia/Kolkata" and loc["country"] == "IND" and loc["state"]
        assert abs(float(loc["coordinates"]["latitude"]) - city.lat) < 0.05
        assert abs(float(loc["coordinates"]["longitude"]) - city.lon) < 0.05
        assert len(loc["coordinates"]["latitude"].split(".")[1]) == 6
    assert {loc["city"] for loc in locs} >= {"Bengaluru", "Delhi", "Mumbai", "Chennai", "Hyderabad", "Pune"}
    reservable = [e for e in evses if "RESERVABLE" in e["capabilities"]]
    assert 0 < len(reservable) < len(evses)
    assert all("REMOTE_START_STOP_CAPABLE" in e["capabilities"] for e in evses)
    assert sum(e["status"] == "AVAILABLE" for e in evses) > 0.7 * len(evses)
    stamps = [loc["last_updated"] for loc in locs]
    assert len(set(stamps)) == len(stamps)


def test_config_and_tokens() -> None:
    assert parse_faults(["slow=0.5,http500=0.2", "lowercase"]) == {"slow": 0.5, "http500": 0.2, "lowercase": True}
    with pytest.raises(ValueError, match="unknown fault"):
        parse_faults(["explode"])
    cfg = config_from_options({"port": 0, "cities": "Pune, Delhi", "fault": ["wrap_single"], "party_id": "cpa"})
    assert cfg.cities == ["Pune", "Delhi"] and cfg.party_id == "CPA" and cfg.faults == {"wrap_single": True}
    assert token_candidates(encode_token("abc-1", "base64"))[0] == "abc-1"
    assert token_candidates(encode_token("abc-1", "raw")) == ["abc-1"]
    assert token_candidates("Bearer x") == []


def test_management_command_wrapper(tmp_path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "emsp.settings"}
    check = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check.returncode != 0:
        pytest.skip(f"Django project does not load right now: {check.stderr.strip().splitlines()[-1:]}")
    sim = SimProcess(["--locations", "2"], tmp_path / "mgmt.log", argv=[sys.executable, "manage.py", "cpo_simulator"])
    try:
        assert sim.versions_url.startswith("http://127.0.0.1:") and sim.token_a
        assert sim.ctl("state")["counts"]["locations"] == 2
    finally:
        assert sim.stop() == 0


def test_start_stop_exit_code(tmp_path) -> None:
    sim = SimProcess(["--locations", "1", "--cities", "Kochi"], tmp_path / "sim.log")
    try:
        assert sim.ctl("locations")[0]["city"] == "Kochi"
    finally:
        assert sim.stop() == 0
    assert "stopped" in sim.log_path.read_text()
