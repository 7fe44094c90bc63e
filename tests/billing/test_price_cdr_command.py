"""`manage.py price_cdr`: prints the repriced totals as JSON; bad input exits 2 naming the field."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.billing.conftest import CASES_DIR, SPEC_DIR, load_json

MANAGE = Path(__file__).resolve().parents[2] / "manage.py"


def run(*args: str) -> dict[str, Any]:
    out = io.StringIO()
    call_command("price_cdr", *args, stdout=out)
    return json.loads(out.getvalue())


def write(tmp_path: Path, name: str, data: Any) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_it_prints_the_totals_of_the_spec_cdr_example() -> None:
    path = SPEC_DIR / "release-2.2.1-bugfixes" / "cdr_example.json"
    load_json(path)  # skips when shared/ is absent
    data = run(str(path), "--time-zone", "Europe/Brussels")
    assert data["total_cost"] == {"excl_vat": "4", "incl_vat": "4.4"}
    assert data["total_time_cost"] == {"excl_vat": "4", "incl_vat": "4.4"}
    for key in ("total_energy_cost", "total_parking_cost", "total_fixed_cost", "total_reservation_cost"):
        assert data[key] is None
    assert data["breakdown"]["TIME"][0]["volume"] == "2"


def test_it_prices_with_a_separate_tariff_file_and_rounding() -> None:
    case = CASES_DIR / "tandemdrive-ocpi-tariffs" / "simple_3hour_5parking"
    load_json(case / "cdr1.json")
    data = run(str(case / "cdr1.json"), "--tariff", str(case / "tariff.json"), "--rounding", "HALF_UP")
    assert data["total_cost"] == {"excl_vat": "11.25", "incl_vat": "12.75"}
    assert data["total_parking_cost"] == {"excl_vat": "3.75", "incl_vat": "4.50"}
    assert "time_zone_unknown_assumed_utc" in data["warnings"]


def test_it_accepts_an_ocpi_response_envelope(tmp_path: Path) -> None:
    cdr = load_json(SPEC_DIR / "release-2.2.1-bugfixes" / "cdr_example.json")
    path = write(tmp_path, "envelope.json", {"data": cdr, "status_code": 1000, "timestamp": "2015-06-30T00:00:00Z"})
    assert run(path, "--time-zone", "UTC")["total_cost"]["excl_vat"] == "4"


def test_a_malformed_cdr_names_the_field_and_exits_2(tmp_path: Path) -> None:
    cdr = load_json(SPEC_DIR / "release-2.2.1-bugfixes" / "cdr_example.json")
    cdr["charging_periods"][0]["dimensions"][0]["volume"] = "lots"
    path = write(tmp_path, "bad.json", cdr)
    with pytest.raises(CommandError) as caught:
        run(path)
    assert caught.value.returncode == 2
    assert "charging_periods[0].dimensions[0].volume" in str(caught.value)


def test_a_malformed_tariff_file_names_the_field(tmp_path: Path) -> None:
    cdr = load_json(SPEC_DIR / "release-2.2.1-bugfixes" / "cdr_example.json")
    tariff = {"id": "12", "currency": "EUR", "elements": [{"price_components": [{"type": "TIME", "price": None}]}]}
    with pytest.raises(CommandError) as caught:
        run(write(tmp_path, "cdr.json", cdr), "--tariff", write(tmp_path, "t.json", tariff))
    assert caught.value.returncode == 2
    assert "t.json: elements[0].price_components[0].price: is required" in str(caught.value)


def test_invalid_json_and_missing_files_exit_2(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as caught:
        run(write(tmp_path, "broken.json", '{"start_date_time": '))
    assert caught.value.returncode == 2
    assert "not valid JSON" in str(caught.value)
    with pytest.raises(CommandError) as caught:
        run(str(tmp_path / "nope.json"))
    assert caught.value.returncode == 2


def test_manage_py_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.json", {"start_date_time": "2024-05-06T10:00:00Z"})
    done = subprocess.run(
        [sys.executable, str(MANAGE), "price_cdr", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "end_date_time: is required" in done.stderr
    assert "Traceback" not in done.stderr
