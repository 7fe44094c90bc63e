"""Stale writes the locations store must not let through (emsp/services/catalogue.py).

A connector a listing of its location leaves out is deleted: a PUT of it the CPO stamped before the listing, arriving
after it, is older than its EVSE's last_updated and ignored (both databases). A pulled batch compares stamps under
its locations' locks: a location PUT committed while the batch ran is not written over by the batch's older copy. A
location PATCH locks its row FOR NO KEY UPDATE: a session referring to the location is stored meanwhile (both
PostgreSQL: SQLite serialises every writer).
"""

from __future__ import annotations

import functools
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from emsp.models import ChargingSession, Connector, Evse, Location, Partner, PartnerParty
from emsp.services import catalogue
from emsp.services.partners import partner_party_grant
from tests.factories import PartnerFactory
from tests.ocpi import test_location_races as location_races
from tests.ocpi import test_party_moved as party_moved
from tests.races import Holds, by_name

BASE = "/ocpi/emsp/2.2.1/locations"
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks: SQLite serialises every writer"
)


hub = party_moved.hub  # the hub NL*HUB with IN*CPA and IN*CPB granted behind it
# The CPO BE*BEC, the spec's example location (EVSE 3256: connectors 1 and 2, stamped in 2015), no deadlock retries.
bec, location, no_retries = location_races.bec, location_races.location, location_races.no_retries


def _connectors_of_3256() -> list[str]:
    return sorted(Connector.objects.filter(evse__uid="3256").values_list("connector_id", flat=True))


def _answer(response: Any) -> tuple[int, int]:
    return response.status_code, response.json()["status_code"]


def _at(hour: int, minute: int = 0) -> str:
    return f"2026-12-01T{hour:02}:{minute:02}:00Z"


# --- a connector left out by a listing stays out (both databases) ------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("listed_by", ["location-put", "pull"])
def test_a_connector_put_stamped_before_the_listing_that_left_it_out_does_not_bring_it_back(
    bec, location, listed_by
) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    assert _connectors_of_3256() == ["1", "2"]
    # The CPO removes connector 2 at 12:00: the EVSE's last_updated moves with it (mod_locations), the listing says so.
    evse = location["evses"][0]
    without_2 = {**evse, "connectors": evse["connectors"][:1], "last_updated": _at(12)}
    listing = {**location, "evses": [without_2, *location["evses"][1:]], "last_updated": _at(12)}
    if listed_by == "pull":
        catalogue.locations_store(bec.partner, [listing])
    else:
        assert _answer(bec.put(f"{BASE}/BE/BEC/LOC1", listing)) == (200, 1000)
    assert _connectors_of_3256() == ["1"]
    # Its PUT of connector 2 from 11:00, before the removal, arrives late: answered as a stale PUT is, not stored.
    late = {**evse["connectors"][1], "last_updated": _at(11)}
    assert _answer(bec.put(f"{BASE}/BE/BEC/LOC1/3256/2", late)) == (200, 1000)
    assert _connectors_of_3256() == ["1"]
    stored = Evse.objects.get(uid="3256")
    assert stored.last_updated == datetime(2026, 12, 1, 12, tzinfo=UTC)  # nothing moved by it
    assert Location.objects.get(location_id="LOC1").last_updated == datetime(2026, 12, 1, 12, tzinfo=UTC)
    # The CPO's newer word puts it back.
    again = {**evse["connectors"][1], "last_updated": _at(13)}
    assert _answer(bec.put(f"{BASE}/BE/BEC/LOC1/3256/2", again)) == (201, 1000)
    assert _connectors_of_3256() == ["1", "2"]
    assert Evse.objects.get(uid="3256").last_updated == datetime(2026, 12, 1, 13, tzinfo=UTC)


@pytest.mark.django_db
def test_a_new_connector_stamped_after_its_evse_is_stored(bec, location) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    connector = location["evses"][0]["connectors"][0]
    # Stamped as its EVSE is (2015-06-28T08:12:01Z); then one after a status PATCH moved the EVSE's stamp.
    as_its_evse = {**connector, "id": "3", "last_updated": "2015-06-28T08:12:01Z"}
    assert _answer(bec.put(f"{BASE}/BE/BEC/LOC1/3256/3", as_its_evse)) == (201, 1000)
    bec.patch(f"{BASE}/BE/BEC/LOC1/3256", {"status": "CHARGING", "last_updated": _at(14)})
    after_the_patch = {**connector, "id": "4", "last_updated": _at(14, 30)}
    assert _answer(bec.put(f"{BASE}/BE/BEC/LOC1/3256/4", after_the_patch)) == (201, 1000)
    assert _connectors_of_3256() == ["1", "2", "3", "4"]
    # One we hold is replaced by a PUT older than its EVSE but newer than itself, as before.
    held = {**connector, "last_updated": _at(10)}
    assert _answer(bec.put(f"{BASE}/BE/BEC/LOC1/3256/1", held)) == (200, 1000)
    stored = Connector.objects.get(evse__uid="3256", connector_id="1")
    assert stored.last_updated == datetime(2026, 12, 1, 10, tzinfo=UTC)


@pytest.mark.django_db
def test_a_new_connector_listed_by_a_patch_of_its_evse_is_there_as_of_the_patch(bec, location) -> None:
    """A PATCH of the EVSE at 14:00 that lists a connector we don't hold, stamped 13:00 (a child's stamp is older
    than its parent's): the PATCH puts 14:00 on the EVSE first, so the connector's own stamp is older than the
    EVSE's; as of the PATCH's it is not. A PATCH older than the EVSE (ignored) lists none that way."""
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    bec.patch(f"{BASE}/BE/BEC/LOC1/3256", {"status": "CHARGING", "last_updated": _at(14)})
    evse = Evse.objects.get(uid="3256")
    connector = {**location["evses"][0]["connectors"][0], "id": "3", "last_updated": _at(13)}
    put = functools.partial(catalogue.connector_put, evse, connector, writer=bec.partner)
    assert put() == (None, False, False)
    assert put(listed_as_of=datetime(2026, 12, 1, 12, tzinfo=UTC)) == (None, False, False)
    assert _connectors_of_3256() == ["1", "2"]
    stored, created, applied = put(listed_as_of=datetime(2026, 12, 1, 14, tzinfo=UTC))
    assert (created, applied) == (True, True)
    assert stored is not None and stored.last_updated == datetime(2026, 12, 1, 13, tzinfo=UTC)  # its own stamp
    assert _connectors_of_3256() == ["1", "2", "3"]


def test_an_evse_patch_listing_a_new_connector_with_an_older_stamp_stores_it(bec, location) -> None:
    """Through the receiver: the PATCH's own stamp (14:00) puts the listed connector (13:00) in, where the EVSE it
    has just stamped would have made it look stale."""
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    connectors = [*location["evses"][0]["connectors"], {**location["evses"][0]["connectors"][0], "id": "3"}]
    listed = [{**c, "last_updated": _at(13)} for c in connectors]
    answer = bec.patch(f"{BASE}/BE/BEC/LOC1/3256", {"connectors": listed, "last_updated": _at(14)})
    assert answer.json()["status_code"] == 1000
    assert _connectors_of_3256() == ["1", "2", "3"]


# --- a pulled batch compares stamps under its locks (PostgreSQL) -------------------------------------------


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_a_location_put_committed_while_a_pulled_batch_is_stored_is_not_overwritten(bec, location, monkeypatch) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    pulled = {**location, "name": "pulled at 11:00", "last_updated": _at(11)}
    pushed = {**location, "name": "pushed at 12:00", "last_updated": _at(12)}
    holds, read, put_done = Holds(), threading.Event(), threading.Event()
    real = catalogue.party_holders

    def pull_holds_after_reading_the_stamps(*args: Any, **kwargs: Any) -> Any:
        # Called by _store_batch after it has read the stored stamps, before it writes: the pull holds there until
        # the PUT has committed or waits for a lock the pull holds.
        if threading.current_thread().name == "pull":
            read.set()
            holds.until_the_other_moves(put_done)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalogue, "party_holders", pull_holds_after_reading_the_stamps)

    def put() -> Any:
        read.wait(5)
        try:
            return bec.put(f"{BASE}/BE/BEC/LOC1", pushed)
        finally:
            put_done.set()

    answers = by_name({"pull": lambda: catalogue.locations_store(bec.partner, [pulled]), "put": put})
    assert holds.given_up == 0
    assert _answer(answers["put"]) == (200, 1000)
    stored = Location.objects.get(location_id="LOC1")
    assert (stored.name, stored.last_updated) == ("pushed at 12:00", datetime(2026, 12, 1, 12, tzinfo=UTC))


# --- a location PATCH lets a session referring to the location in (PostgreSQL) -----------------------------


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_a_session_referring_to_a_location_is_stored_while_a_patch_of_it_holds_its_lock(
    bec, location, monkeypatch
) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    stored = Location.objects.get(location_id="LOC1")
    holds, locked, inserted = Holds(), threading.Event(), threading.Event()
    inserted_under_the_lock: list[bool] = []
    real = catalogue._patched_location

    def patch_holds_under_its_lock(*args: Any, **kwargs: Any) -> Any:
        # Called by location_patch with the location locked: it holds until the insert is done or waits for it.
        locked.set()
        holds.until_the_other_moves(inserted)
        inserted_under_the_lock.append(inserted.is_set())
        return real(*args, **kwargs)

    monkeypatch.setattr(catalogue, "_patched_location", patch_holds_under_its_lock)

    def insert_a_session() -> None:
        locked.wait(5)
        now = timezone.now()
        ChargingSession.objects.create(
            partner=bec.partner, country_code="BE", party_id="BEC", session_id="S1", ocpi_key="BE*BEC*S1",
            status="ACTIVE", start_date_time=now, currency="EUR", ocpi_location_id="LOC1", evse_uid="3256",
            connector_id="1", location=stored, last_updated=now, data={},
        )  # fmt: skip
        inserted.set()

    patch = {"name": "patched", "last_updated": _at(12)}
    answers = by_name({"patch": lambda: bec.patch(f"{BASE}/BE/BEC/LOC1", patch), "insert": insert_a_session})
    assert holds.given_up == 0
    assert inserted_under_the_lock == [True]  # not waiting for the PATCH's commit
    assert _answer(answers["patch"]) == (200, 1000)
    assert Location.objects.get(pk=stored.pk).name == "patched"
    assert ChargingSession.objects.get(session_id="S1").location_id == stored.pk


# --- a party moved while a hub's batch holds its locations (PostgreSQL) ------------------------------------


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_a_grant_made_while_the_hubs_batch_holds_the_location_moves_it_after_the_batch(
    hub: Partner, monkeypatch
) -> None:
    """Staff move the party to another hub while the old hub's batch runs: the batch has locked the location
    before it read it, so the grant's move of it waits and then moves it, over the batch's write (the batch's
    upsert leaves partner_id alone). The interleaving tests/ocpi/test_party_moved.py forces (a grant committed
    between the batch's read and its upsert) can no longer happen."""
    party_moved.hub_pushes_both_parties()
    other = PartnerFactory(country_code="DE", party_id="HB2", role=Partner.Role.HUB)
    holds, moved = Holds(), threading.Event()
    real = catalogue.party_holders

    def hub_holds_after_reading(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == "hub":
            holds.until_the_other_moves(moved)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalogue, "party_holders", hub_holds_after_reading)

    def staff_move_the_party() -> None:
        try:
            PartnerParty.objects.filter(partner=hub, country_code="IN", party_id="CPB").delete()
            partner_party_grant(partner=other, country_code="IN", party_id="CPB", by="staff")
        finally:
            moved.set()

    def hub_writes() -> Any:
        return catalogue.locations_store(hub, [party_moved.location("CPB", "LOC-B", party_moved.NEW, "Hub's")])

    answers = by_name({"hub": hub_writes, "staff": staff_move_the_party})
    assert holds.given_up == 0
    assert answers["hub"].updated == 1
    stored = Location.objects.get(location_id="LOC-B")
    assert (stored.partner_id, stored.name) == (other.pk, "Hub's")
