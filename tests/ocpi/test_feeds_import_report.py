"""Normalise every location of the 16 real CPO feeds and report accepted/normalised/rejected per feed.

Run ``python tests/ocpi/test_feeds_import_report.py`` to print the table (quoted in the docs).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ocpi.normalize import ISSUE_CODES, Rejected, normalize_location, unwrap_list_payload

SHARED = Path(os.environ.get("SHARED_DIR") or Path(__file__).resolve().parents[2].parent / "shared")
FEEDS = SHARED / "data" / "ocm" / "ocpi-feeds"


def _placeholder_party(path: Path) -> tuple[str, str]:
    """(country_code, party_id) standing in for the partner's credentials: "ZZ" + 3 letters of the CPO name."""
    cpo = path.stem.replace("_locations", "-locations").rsplit("-", 1)[-1]
    return "ZZ", (cpo.upper() + "XXX")[:3]


def feed_report(path: Path) -> dict[str, Any]:
    """Counts for one feed: locations accepted (clean / normalised / with drops) or rejected, EVSEs, connectors."""
    locations = unwrap_list_payload(path.read_bytes())
    placeholder_cc, placeholder_pid = _placeholder_party(path)
    report: dict[str, Any] = {
        "feed": path.name,
        "locations": len(locations),
        "accepted": 0,
        "clean": 0,
        "normalised": 0,
        "with_drops": 0,
        "rejected": 0,
        "evses_in": 0,
        "evses_out": 0,
        "connectors_in": 0,
        "connectors_out": 0,
        "issues": Counter(),
        "rejections": Counter(),
    }
    for raw in locations:
        evses = raw.get("evses") or []
        report["evses_in"] += len(evses)
        report["connectors_in"] += sum(len(e.get("connectors") or []) for e in evses if isinstance(e, dict))
        try:
            out, issues = normalize_location(
                raw,
                country_code=raw.get("country_code") or placeholder_cc,
                party_id=raw.get("party_id") or placeholder_pid,
            )
        except Rejected as exc:
            report["rejected"] += 1
            report["rejections"][f"{exc.path}:{exc.code}"] += 1
            continue
        report["accepted"] += 1
        report["clean"] += not issues
        report["normalised"] += any(i.fixed for i in issues)
        report["with_drops"] += any(not i.fixed for i in issues)
        report["evses_out"] += len(out.get("evses", []))
        report["connectors_out"] += sum(len(e["connectors"]) for e in out.get("evses", []))
        report["issues"].update(i.code for i in issues)
    return report


def feed_reports() -> list[dict[str, Any]]:
    return [feed_report(p) for p in sorted(FEEDS.glob("*.json"))]


def format_table(reports: list[dict[str, Any]]) -> str:
    head = (
        "| feed | locations | accepted | clean | normalised | with drops | rejected "
        "| EVSEs in→out | connectors in→out |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total: Counter[str] = Counter()
    for r in reports:
        lines.append(
            f"| {r['feed']} | {r['locations']} | {r['accepted']} | {r['clean']} | {r['normalised']} | "
            f"{r['with_drops']} | {r['rejected']} | {r['evses_in']}→{r['evses_out']} | "
            f"{r['connectors_in']}→{r['connectors_out']} |"
        )
        total.update({k: v for k, v in r.items() if isinstance(v, int)})
    lines.append(
        f"| **total** | {total['locations']} | {total['accepted']} | {total['clean']} | {total['normalised']} | "
        f"{total['with_drops']} | {total['rejected']} | {total['evses_in']}→{total['evses_out']} | "
        f"{total['connectors_in']}→{total['connectors_out']} |"
    )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def reports() -> list[dict[str, Any]]:
    if not FEEDS.is_dir():
        pytest.skip(f"real OCPI feeds not found in {FEEDS}")
    return feed_reports()


def test_it_reads_all_16_feeds_and_every_location(reports: list[dict[str, Any]]) -> None:
    # catalogue-summary.json: 3,848 locations / 7,600 EVSEs / 9,696 connectors.
    assert len(reports) == 16
    assert sum(r["locations"] for r in reports) == 3848
    assert sum(r["evses_in"] for r in reports) == 7600
    assert sum(r["connectors_in"] for r in reports) == 9696


def test_every_feed_adds_up(reports: list[dict[str, Any]]) -> None:
    for r in reports:
        assert r["accepted"] + r["rejected"] == r["locations"], r["feed"]
        assert r["clean"] + r["normalised"] >= r["accepted"] - r["with_drops"], r["feed"]
        assert r["clean"] <= r["accepted"] and r["normalised"] <= r["accepted"], r["feed"]
        assert r["evses_out"] <= r["evses_in"] and r["connectors_out"] <= r["connectors_in"], r["feed"]


def test_at_least_99_percent_of_locations_are_accepted(reports: list[dict[str, Any]]) -> None:
    accepted = sum(r["accepted"] for r in reports)
    # 42 have no usable position (test_only_unusable_coordinates_reject_a_location): all the rest are taken.
    assert accepted >= 3848 - 42
    # No feed is lost wholesale, and the clean 2.2.1 feeds stay untouched.
    assert all(r["accepted"] >= 0.9 * r["locations"] for r in reports)
    clean = {r["feed"]: r["clean"] for r in reports}
    assert clean["ocpi_2_2_1_locations-ezvolt.json"] == 91


def test_only_unusable_coordinates_reject_a_location(reports: list[dict[str, Any]]) -> None:
    # ITC "0"/"0" (31) and Toger "" (3) are the only locations without a position; 8 more lie in open sea (ITC at
    # 0,-1 and 0,-2 and in the Kara Sea, Punkt at 1,1).
    rejections = Counter()
    for r in reports:
        rejections.update(r["rejections"])
    assert rejections == Counter({"coordinates:invalid_coordinates": 34, "coordinates:coordinates_at_sea": 8})


def test_nearly_every_evse_and_connector_survives(reports: list[dict[str, Any]]) -> None:
    evses_out = sum(r["evses_out"] for r in reports)
    connectors_out = sum(r["connectors_out"] for r in reports)
    assert evses_out >= 0.98 * 7600
    assert connectors_out >= 0.98 * 9696


def test_every_issue_code_is_documented(reports: list[dict[str, Any]]) -> None:
    used = set().union(*(r["issues"] for r in reports))
    assert used - ISSUE_CODES.keys() == set()


def test_it_prints_the_report_table(reports: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    table = format_table(reports)
    with capsys.disabled():
        print("\n" + table)
    assert table.count("\n") == len(reports) + 2


if __name__ == "__main__":
    print(format_table(feed_reports()))
