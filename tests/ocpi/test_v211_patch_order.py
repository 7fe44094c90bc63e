"""OCPI 2.1.1 PATCHes need not carry last_updated (release-2.1.1-bugfixes: the EVSE status PATCH
`{"status": "CHARGING"}`, "the most common type of update", and the session PATCH `{"total_cost": 0.60}` carry
none). Only the CPO's clock orders the CPO's objects: such a PATCH is its newest word when it comes, applied over
whatever we hold, and the stored last_updated stays the CPO's. Our clock's time had been put on it and ordered
against the CPO's own stamps: with the CPO's clock 90 s behind ours its final COMPLETED PUT was dropped as older
than the PATCH (the session stuck ACTIVE), 90 s ahead its PATCHes were dropped as older than its PUT; both
answered 1000, never retried."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from emsp.datetimes import format_datetime, parse_utc
from emsp.models import ChargingSession, Evse, Location, Partner
from emsp.services.catalogue import locations_store
from ocpi.normalize import Rejected, normalize_location_patch, normalize_session_patch
from ocpi.versions import Context, upgrade
from tests.conftest import OcpiTestClient
from tests.factories import ocpi_location
from tests.ocpi.test_versions_receivers import V211, example

pytestmark = pytest.mark.django_db

SKEW = timedelta(seconds=90)
SESSION = "/ocpi/emsp/2.1.1/sessions/IN/CPA/S1"
LOCATION = "/ocpi/emsp/2.1.1/locations/IN/CPA/LOC1"
EVSE = f"{LOCATION}/LOC1-E1"


def cpo_clock(skew: timedelta, later: timedelta = timedelta(0)) -> str:
    """The CPO's time `later` from now, its clock `skew` off ours."""
    return format_datetime(timezone.now() + skew + later)


def session(name: str, stamp: str, **changes: Any) -> dict[str, Any]:
    body = example(V211, name, id="S1", last_updated=stamp, **changes)
    body["start_datetime"] = format_datetime(timezone.now() - timedelta(hours=1))
    body["location"] = {**body["location"], "id": "LOC1", "evses": [{"uid": "LOC1-E1", "connectors": [{"id": "1"}]}]}
    return body


def stored_location(partner: Partner, stamp: str) -> Location:
    locations_store(partner, [ocpi_location("IN", "CPA", "LOC1", last_updated=stamp)])
    return Location.objects.get(partner=partner, location_id="LOC1")


def evse() -> Evse:
    return Evse.objects.get(location__location_id="LOC1", uid="LOC1-E1")


def answered(response: Any) -> int:
    return response.json()["status_code"]


# --- sessions ------------------------------------------------------------------------------------------------


def test_a_cpo_clock_behind_ours_completes_its_session_after_an_unstamped_patch(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    stored_location(partner, cpo_clock(-SKEW))
    put = cpo_clock(-SKEW)
    assert answered(ocpi.put(SESSION, session("session_start", put, status="ACTIVE"))) == 1000
    assert answered(ocpi.patch(SESSION, {"kwh": 5.0})) == 1000
    assert ChargingSession.objects.get(session_id="S1").kwh == Decimal("5")

    ended = format_datetime(timezone.now() - timedelta(minutes=1))
    final = session("session_finished", cpo_clock(-SKEW, timedelta(seconds=30)), end_datetime=ended)
    assert answered(ocpi.put(SESSION, final)) == 1000
    stored = ChargingSession.objects.get(session_id="S1")
    assert (stored.status, stored.last_updated) == ("COMPLETED", parse_utc(final["last_updated"]))


def test_a_cpo_clock_ahead_of_ours_has_its_session_patch_applied(ocpi: OcpiTestClient, partner: Partner) -> None:
    stored_location(partner, cpo_clock(SKEW))
    put = cpo_clock(SKEW)
    assert answered(ocpi.put(SESSION, session("session_start", put, status="ACTIVE"))) == 1000
    assert answered(ocpi.patch(SESSION, {"total_cost": 0.60})) == 1000
    stored = ChargingSession.objects.get(session_id="S1")
    assert (stored.total_cost_excl_vat, stored.last_updated) == (Decimal("0.6"), parse_utc(put))


def test_a_2_1_1_session_patch_stamped_older_than_ours_is_still_skipped(ocpi: OcpiTestClient, partner: Partner) -> None:
    """Where the CPO stamps a 2.1.1 PATCH, its stamp orders it (a late delivery changes nothing)."""
    stored_location(partner, cpo_clock(-SKEW))
    put = cpo_clock(timedelta(0))
    assert answered(ocpi.put(SESSION, session("session_start", put, status="ACTIVE"))) == 1000
    late = {"total_cost": 9.0, "last_updated": cpo_clock(-timedelta(minutes=10))}
    assert answered(ocpi.patch(SESSION, late)) == 1000
    stored = ChargingSession.objects.get(session_id="S1")
    assert (stored.total_cost_excl_vat, stored.last_updated) == (Decimal("2.5"), parse_utc(put))


# --- locations -----------------------------------------------------------------------------------------------


def test_a_cpo_clock_ahead_of_ours_has_its_evse_status_patch_applied(ocpi: OcpiTestClient, partner: Partner) -> None:
    stamp = cpo_clock(SKEW)
    location = stored_location(partner, stamp)
    assert answered(ocpi.patch(EVSE, {"status": "CHARGING"})) == 1000
    assert (evse().status, evse().last_updated) == ("CHARGING", parse_utc(stamp))
    location.refresh_from_db()
    assert location.last_updated == parse_utc(stamp)


def test_a_cpo_clock_behind_ours_has_its_evse_put_applied_after_an_unstamped_patch(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    stored_location(partner, cpo_clock(-SKEW))
    assert answered(ocpi.patch(EVSE, {"status": "CHARGING"})) == 1000
    assert evse().status == "CHARGING"
    put = {**V211["evse_put"], "uid": "LOC1-E1", "status": "AVAILABLE", "last_updated": cpo_clock(-SKEW, SKEW / 3)}
    assert answered(ocpi.put(EVSE, put)) == 1000
    assert evse().status == "AVAILABLE"


def test_a_cpo_clock_ahead_of_ours_has_its_connector_and_location_patches_applied(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    stamp = cpo_clock(SKEW)
    location = stored_location(partner, stamp)
    assert answered(ocpi.patch(f"{EVSE}/1", {"tariff_id": "15"})) == 1000
    assert answered(ocpi.patch(LOCATION, {"name": "Gent Noord"})) == 1000
    connector = evse().connectors.get(connector_id="1")
    assert (connector.tariff_ids, connector.last_updated) == (["15"], parse_utc(stamp))
    location.refresh_from_db()
    assert (location.name, location.last_updated) == ("Gent Noord", parse_utc(stamp))


def test_an_unstamped_2_1_1_patch_listing_children_applies_to_them(ocpi: OcpiTestClient, partner: Partner) -> None:
    """A child naming no last_updated takes its parent's: none, from a 2.1.1 PATCH without one (it had been a
    KeyError, or our clock's time)."""
    stamp = cpo_clock(SKEW)
    stored_location(partner, stamp)
    body = {"evses": [{"uid": "LOC1-E1", "status": "CHARGING", "connectors": [{"id": "1", "tariff_id": "15"}]}]}
    assert answered(ocpi.patch(LOCATION, body)) == 1000
    assert answered(ocpi.patch(EVSE, {"connectors": [{"id": "1", "tariff_id": "16"}]})) == 1000
    assert (evse().status, evse().last_updated) == ("CHARGING", parse_utc(stamp))
    assert evse().connectors.get(connector_id="1").tariff_ids == ["16"]


def test_an_unstamped_evse_patch_costs_the_statements_a_stamped_one_does(
    ocpi: OcpiTestClient, partner: Partner
) -> None:
    """The hot path of live availability (bench/bench_ocpi_calls.py): one statement on PostgreSQL either way (on
    SQLite one fewer: no location stamp to move)."""
    stored_location(partner, cpo_clock(-SKEW))
    ocpi.patch(EVSE, {"status": "AVAILABLE"})  # the partner's credentials read once

    def statements(path: str, body: dict[str, Any]) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert answered(ocpi.patch(path, body)) == 1000
        return len(queries)

    stamp = cpo_clock(-SKEW, SKEW / 3)
    stamped = statements("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/LOC1-E1", {"status": "BLOCKED", "last_updated": stamp})
    assert evse().status == "BLOCKED"
    assert statements(EVSE, {"status": "CHARGING"}) <= stamped
    assert evse().status == "CHARGING"


# --- 2.2.1 requires last_updated: unchanged ----------------------------------------------------------------


def test_a_2_2_1_patch_without_last_updated_is_still_refused(ocpi: OcpiTestClient, partner: Partner) -> None:
    stored_location(partner, cpo_clock(SKEW))
    assert answered(ocpi.put(SESSION, session("session_start", cpo_clock(SKEW), status="ACTIVE"))) == 1000
    patches = [
        ("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1/LOC1-E1", {"status": "CHARGING"}),
        ("/ocpi/emsp/2.2.1/locations/IN/CPA/LOC1", {"evses": [{"uid": "LOC1-E1", "status": "CHARGING"}]}),
        ("/ocpi/emsp/2.2.1/sessions/IN/CPA/S1", {"kwh": 5.0}),
    ]
    for path, body in patches:
        assert answered(ocpi.patch(path, body)) == 2001, path
    assert evse().status == "AVAILABLE"
    assert ChargingSession.objects.get(session_id="S1").kwh == Decimal("0")


def test_only_the_2_1_1_mapping_lets_a_patch_through_without_last_updated() -> None:
    """The mark is a type, not a field: nothing parsed from a request body carries it."""
    ctx = Context()
    clean, _ = normalize_location_patch(upgrade("2.1.1", "location_patch", {"status": "CHARGING"}, ctx), "evse")
    assert clean == {"status": "CHARGING"}
    clean, _ = normalize_session_patch(upgrade("2.1.1", "session_patch", {"total_cost": 0.6}, ctx))
    assert clean == {"total_cost": {"excl_vat": 0.6}}
    with pytest.raises(Rejected):
        normalize_location_patch({"status": "CHARGING"}, "evse")
    with pytest.raises(Rejected):
        normalize_session_patch({"total_cost": {"excl_vat": 0.6}})
