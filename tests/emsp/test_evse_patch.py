"""The EVSE PATCH in one statement (emsp/services/catalogue.py `evse_patch_at`, PostgreSQL) leaves the same rows
and answers the same as the straightforward lookup and two updates (`evse_ref` then `evse_patch`), on random
sequences of patches: fields merged, columns set, older patches refused, the location's last_updated moved."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from django.db import connection

from emsp.models import Evse, Location, Partner
from emsp.services import catalogue
from tests.factories import stored_location

pytestmark = pytest.mark.django_db

STATUSES = [s.value for s in Evse.Status]
CAPABILITIES = ["RESERVABLE", "REMOTE_START_STOP_CAPABLE", "RFID_READER"]
START = datetime(2026, 3, 1, tzinfo=UTC)


def random_patch(rng: random.Random, step: int) -> dict[str, Any]:
    # Mostly newer than the last, sometimes older (an out-of-order push the receiver must refuse).
    moment = START + timedelta(minutes=step * 10 + rng.choice([0, 1, 5, -30, -200]))
    patch: dict[str, Any] = {"last_updated": moment.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if rng.random() < 0.9:
        patch["status"] = rng.choice(STATUSES)
    if rng.random() < 0.2:
        patch["capabilities"] = rng.sample(CAPABILITIES, rng.randint(0, 2))
    if rng.random() < 0.2:
        patch["evse_id"] = f"IN*CPA*E{rng.randint(0, 10**60)}"  # past the column's 48 characters at times
    if rng.random() < 0.2:
        patch["coordinates"] = {"latitude": f"{rng.uniform(-60, 60):.6f}", "longitude": f"{rng.uniform(-170, 170):.6f}"}
    if rng.random() < 0.3:
        patch["floor_level"] = str(rng.randint(-2, 9))
    return patch


def row(evse: Evse) -> dict[str, Any]:
    """The EVSE and its location as the PATCH leaves them, the location's own id taken out."""
    evse.refresh_from_db()
    location = Location.objects.get(pk=evse.location_id)
    own = location.location_id
    return {
        "uid": evse.uid.replace(own, "X"),
        "status": evse.status,
        "evse_id": evse.evse_id.replace(own, "X"),
        "capabilities": evse.capabilities,
        "latitude": evse.latitude,
        "longitude": evse.longitude,
        "last_updated": evse.last_updated,
        "data": orjson.loads(orjson.dumps(evse.data).decode().replace(own, "X")),
        "location_last_updated": location.last_updated,
    }


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the one-statement PATCH is PostgreSQL's")
@pytest.mark.parametrize("seed", range(8))
def test_one_statement_leaves_what_lookup_and_updates_leave(partner: Partner, seed: int) -> None:
    rng = random.Random(seed)
    stored_location(partner, location_id="ONE", evses=1, last_updated="2026-03-01T00:00:00Z")
    stored_location(partner, location_id="TWO", evses=1, last_updated="2026-03-01T00:00:00Z")
    one, two = Evse.objects.get(location__location_id="ONE"), Evse.objects.get(location__location_id="TWO")
    for step in range(40):
        patch = random_patch(rng, step)
        got = catalogue.evse_patch_at("IN", "CPA", "ONE", "one-e1", dict(patch))
        ref = catalogue.evse_ref("IN", "CPA", "TWO", "TWO-E1")
        assert ref is not None
        expected = catalogue.evse_patch(ref, dict(patch))
        assert got is not None
        assert got.applied == expected.applied, (step, patch)
        assert (got.status_change is None) == (expected.status_change is None)
        if got.status_change is not None and expected.status_change is not None:
            assert got.status_change[1:] == expected.status_change[1:]
            assert got.status_change[0] == one.pk
        assert row(one) == row(two), (step, patch)


def test_no_such_evse_is_none(partner: Partner) -> None:
    stored_location(partner, location_id="ONE", evses=1)
    patch = {"status": "CHARGING", "last_updated": "2026-03-01T00:00:00Z"}
    assert catalogue.evse_patch_at("IN", "CPA", "ONE", "NOPE", patch) is None
    assert catalogue.evse_patch_at("IN", "CPA", "NONE", "ONE-E1", patch) is None
    assert catalogue.evse_patch_at("IN", "XXX", "ONE", "ONE-E1", patch) is None
    assert not Evse.objects.filter(status="CHARGING").exists()
