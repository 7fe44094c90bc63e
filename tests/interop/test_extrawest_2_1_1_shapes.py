"""What a 2.1.1 CPO reads back from our receivers (GET /ocpi/emsp/2.1.1/locations/…, …/sessions/…), judged by
an OCPI library we did not write: extrawest-ocpi's 2.1.1 models, in the peer's own virtualenv
(tests/interop/extrawest_shapes.py), with fields its models don't name refused. The same objects in our
2.2.1 shape fail there: the check can tell them apart."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from emsp.models import Partner
from emsp.services.catalogue import locations_store
from tests.conftest import OcpiTestClient
from tests.factories import ocpi_location
from tests.ocpi.test_versions_read_back import session_221, stored_location
from tests.ocpi.test_versions_receivers import V211

pytestmark = pytest.mark.django_db

SCRIPT = Path(__file__).with_name("extrawest_shapes.py")


def judged(peer_python: Path, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    lines = "".join(json.dumps({"kind": kind, "object": obj}) + "\n" for kind, obj in items)
    done = subprocess.run(
        [str(peer_python), str(SCRIPT)], input=lines, capture_output=True, text=True, timeout=120, check=True
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_our_2_1_1_read_backs_pass_an_independent_library(
    peer_python: Path, ocpi: OcpiTestClient, partner: Partner
) -> None:
    stored_location(partner)
    assert (
        ocpi.put("/ocpi/emsp/2.1.1/locations/IN/CPA/GENT", {**V211["location"], "id": "GENT"}).json()["status_code"]
        == 1000
    )
    locations_store(partner, [ocpi_location("IN", "CPA", "BLR", tariff_ids=["T1"])])
    assert (
        ocpi.put("/ocpi/emsp/2.2.1/sessions/IN/CPA/S1", session_221(location_id="BLR", evse_uid="BLR-E1")).json()[
            "status_code"
        ]
        == 1000
    )
    paths = {
        "location": ["locations/IN/CPA/LOC1", "locations/IN/CPA/GENT", "locations/IN/CPA/BLR"],
        "evse": ["locations/IN/CPA/LOC1/LOC1-E1", "locations/IN/CPA/GENT/3256"],
        "connector": ["locations/IN/CPA/LOC1/LOC1-E1/1", "locations/IN/CPA/GENT/3257/1"],
        "session": ["sessions/IN/CPA/S1"],
    }
    items, in_221 = [], []
    for kind, kind_paths in paths.items():
        for path in kind_paths:
            answer = ocpi.get(f"/ocpi/emsp/2.1.1/{path}").json()
            assert answer["status_code"] == 1000, (path, answer)
            items.append((kind, answer["data"]))
            in_221.append((kind, ocpi.get(f"/ocpi/emsp/2.2.1/{path}").json()["data"]))
    verdicts = judged(peer_python, items + in_221)
    ours, theirs = verdicts[: len(items)], verdicts[len(items) :]
    assert [v["error"] for v in ours] == [""] * len(items)
    # The check can fail: the same objects in 2.2.1's shape are refused by the 2.1.1 models.
    assert not any(v["ok"] for v in theirs)
