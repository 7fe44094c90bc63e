"""The official OCPI 2.2.1 examples normalise without rejection and unchanged, except for documented fixes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ocpi.normalize import (
    Issue,
    normalize_cdr,
    normalize_evse,
    normalize_location,
    normalize_location_patch,
    normalize_session,
    normalize_session_patch,
    normalize_tariff,
)

SHARED = Path(os.environ.get("SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")
SPEC = SHARED / "vectors" / "ocpi" / "spec-2.2.1"
TARIFF_CASES = SHARED / "vectors" / "ocpi" / "tariff-cases"

# Every change the normaliser may make to an official example, and why (all are reported as issues):
DOCUMENTED_FIXES = {
    "derived_power",  # connectors without max_electric_power get V x A x phases
    "missing_token_party",  # tag-2.2.1 cdr_token examples lack country_code/party_id ([d2] added them)
    "step_size_zero",  # tariff_5: FLAT step_size 0 -> 1
    "missing_last_updated",  # tariff_put_example and the add-EVSE connector have none
    "renamed_field",  # add-EVSE example: "floor" -> floor_level
    "type_coerced",  # add-EVSE example: floor -1 / physical_reference 3 as numbers
    "inferred_power_type",  # add-EVSE example connector omits power_type ...
    "unknown_voltage",  # ... max_voltage ...
    "unknown_amperage",  # ... and max_amperage (set to 0 = unknown)
}


def _spec_files(*prefixes: str) -> list[Any]:
    files: list[Path] = []
    if SPEC.is_dir():
        files = sorted(SPEC.glob("*.json")) + sorted((SPEC / "release-2.2.1-bugfixes").glob("*.json"))
    params = [
        pytest.param(f, id=f"{f.parent.name}/{f.name}")
        for f in files
        if f.name.startswith(prefixes) and f.name != "tariff_examples_expected.json"
    ]
    return params or [pytest.param(None, marks=pytest.mark.skip(reason=f"OCPI spec examples not found in {SPEC}"))]


def _changed_paths(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths (issue-path syntax) where ``after`` differs from ``before``; numbers compare by value."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(before.keys() | after.keys()):
            sub = f"{path}.{key}" if path else key
            if key not in before or key not in after:
                out.append(sub)
            else:
                out.extend(_changed_paths(before[key], after[key], sub))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            p for i, (b, a) in enumerate(zip(before, after, strict=True)) for p in _changed_paths(b, a, f"{path}[{i}]")
        ]
    return [] if (before == after and type(before) is type(after)) or _same_number(before, after) else [path]


def _same_number(a: Any, b: Any) -> bool:
    numeric = (int, float)
    return isinstance(a, numeric) and isinstance(b, numeric) and not isinstance(a, bool) and a == b


def _explained(changed: str, issues: list[Issue]) -> bool:
    return any(
        changed == i.path or changed.startswith((f"{i.path}.", f"{i.path}[")) or i.path.startswith(changed)
        for i in issues
    )


def _assert_only_documented_changes(raw: dict, out: dict, issues: list[Issue]) -> None:
    assert {i.code for i in issues} <= DOCUMENTED_FIXES, issues
    assert all(i.fixed for i in issues), [i for i in issues if not i.fixed]
    unexplained = [p for p in _changed_paths(raw, out) if not _explained(p, issues)]
    assert unexplained == []


@pytest.mark.parametrize("path", _spec_files("location_example"))
def test_it_keeps_official_location_examples(path: Path) -> None:
    raw = json.loads(path.read_text())
    out, issues = normalize_location(raw)
    _assert_only_documented_changes(raw, out, issues)


@pytest.mark.parametrize("path", _spec_files("location_energymix", "location_hours", "location_regularhours"))
def test_it_keeps_official_location_fragments_inside_a_location(path: Path) -> None:
    base = json.loads((SPEC / "location_example.json").read_text())
    fragment = json.loads(path.read_text())
    raw = {**base, **fragment} if "opening_times" in fragment or "energy_mix" in fragment else {**base}
    if path.name.startswith("location_hours"):
        raw["opening_times"] = fragment
    out, issues = normalize_location(raw)
    _assert_only_documented_changes(raw, out, issues)
    key = "energy_mix" if "energymix" in path.name else "opening_times"
    assert out[key] == raw[key]


def test_it_keeps_the_official_add_evse_put_example() -> None:
    path = SPEC / "location_put_example_add_evse.json"
    if not path.exists():
        pytest.skip(f"OCPI spec examples not found in {SPEC}")
    raw = json.loads(path.read_text())
    out, issues = normalize_evse(raw)
    _assert_only_documented_changes(raw, out, issues)
    assert out["floor_level"] == "-1" and out["physical_reference"] == "3"
    # The connector inherits the EVSE's stamp instead of being rejected for lacking one.
    assert out["connectors"][0]["last_updated"] == "2019-06-24T12:39:09Z"


@pytest.mark.parametrize("path", _spec_files("location_patch_example"))
def test_it_keeps_official_location_patch_examples(path: Path) -> None:
    raw = json.loads(path.read_text())
    level = {"location": "location", "tariff": "connector"}.get(path.stem.rsplit("_", 1)[-1], "evse")
    out, issues = normalize_location_patch(raw, level)
    assert (out, issues) == (raw, [])


@pytest.mark.parametrize("path", _spec_files("tariff_", "tariffrestriction_"))
def test_it_keeps_official_tariff_examples(path: Path) -> None:
    raw = json.loads(path.read_text())
    out, issues = normalize_tariff(raw)
    _assert_only_documented_changes(raw, out, issues)


@pytest.mark.parametrize("path", _spec_files("session_example"))
def test_it_keeps_official_session_examples(path: Path) -> None:
    raw = json.loads(path.read_text())
    out, issues = normalize_session(raw)
    _assert_only_documented_changes(raw, out, issues)


@pytest.mark.parametrize("path", _spec_files("session_patch_example"))
def test_it_keeps_official_session_patch_examples(path: Path) -> None:
    raw = json.loads(path.read_text())
    out, issues = normalize_session_patch(raw)
    assert (out, issues) == (raw, [])


@pytest.mark.parametrize("path", _spec_files("cdr_example"))
def test_it_keeps_official_cdr_examples_including_their_swapped_coordinates(path: Path) -> None:
    raw = json.loads(path.read_text())
    out, issues = normalize_cdr(raw)
    _assert_only_documented_changes(raw, out, issues)
    # Known defect of the example (Gent at lat 3.7 / lon 51.0): both values are in range, so kept as sent.
    assert out["cdr_location"]["coordinates"] == {"latitude": "3.729944", "longitude": "51.047599"}


def _tariff_vector_files() -> list[Any]:
    files = sorted(TARIFF_CASES.rglob("tariff.json")) if TARIFF_CASES.is_dir() else []
    return [pytest.param(f, id=f"{f.parent.parent.name}/{f.parent.name}") for f in files] or [
        pytest.param(None, marks=pytest.mark.skip(reason=f"tariff vectors not found in {TARIFF_CASES}"))
    ]


@pytest.mark.parametrize("path", _tariff_vector_files())
def test_it_accepts_every_tariff_of_the_pricing_vectors(path: Path) -> None:
    raw = json.loads(path.read_text())
    out, _issues = normalize_tariff(raw, country_code="NL", party_id="TST")
    # Prices are the JSON numbers received, so Decimal(str(x)) of the output is the partner's value.
    assert [c["price"] for e in out["elements"] for c in e["price_components"]] == [
        c["price"] for e in raw["elements"] for c in e["price_components"]
    ]


def test_it_reports_the_misspelled_tariff_lint_vector() -> None:
    path = TARIFF_CASES / "hamza-nabil-ocpi-tariffs-py" / "misspelled_field" / "tariff.json"
    if not path.exists():
        pytest.skip(f"tariff vectors not found in {TARIFF_CASES}")
    out, issues = normalize_tariff(json.loads(path.read_text()))
    codes = {(i.code, i.path) for i in issues}
    assert ("renamed_field", "elements[0].restrictions.dayOfWeek") in codes
    assert ("country_code_alpha3", "country_code") in codes
    assert (out["country_code"], out["currency"]) == ("GB", "GBP")
    assert out["elements"][1]["restrictions"] == {"day_of_week": ["SATURDAY", "SUNDAY"]}


def test_it_accepts_the_real_world_cdr_of_the_pricing_vectors() -> None:
    path = TARIFF_CASES / "hamza-nabil-ocpi-tariffs-py" / "codeberg_issue_228" / "cdr.json"
    if not path.exists():
        pytest.skip(f"tariff vectors not found in {TARIFF_CASES}")
    raw = json.loads(path.read_text())
    out, issues = normalize_cdr(raw)
    assert issues == []
    assert out["total_cost"] == raw["total_cost"]
    assert len(out["tariffs"][0]["elements"]) == len(raw["tariffs"][0]["elements"])
