"""The Locations receivers and store under concurrent writes (emsp/services/catalogue.py).

Every catalogue write takes its row locks parent first (the location, then the EVSE, then the connector), so a
location PUT or pulled page, an EVSE PUT or PATCH and a connector PUT or PATCH of the same location queue behind
each other instead of deadlocking (a 500, or a pulled batch rolled back); two PUTs of one new EVSE or connector
queue on the location, and the second finds the first's row. An EVSE a location listing leaves out is REMOVED as
of the listing's last_updated: an update the CPO stamped before it, arriving late, does not bring it back.

The race tests need PostgreSQL's row locks (SQLite serialises every writer); the REMOVED stamp runs on both.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from django.db import OperationalError, connection, connections

from emsp.models import Connector, Evse, Location
from emsp.services import catalogue
from tests.conftest import OcpiTestClient
from tests.factories import ocpi_location
from tests.races import by_name

BASE = "/ocpi/emsp/2.2.1/locations"
postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks and lock order: SQLite serialises every writer"
)


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock order alone is under test: a deadlock is not run again (`catalogue.retried_on_deadlock`)."""
    monkeypatch.setattr(catalogue, "DEADLOCK_RETRIES", 0, raising=False)


@pytest.fixture
def location(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("location_example.json")  # EVSE 3256 last_updated 2015-06-28T08:12:01Z


def _meet_inside(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Two requests meet at `catalogue.<name>` (inside the write's transaction) before either goes on."""
    real = getattr(catalogue, name)
    together = threading.Barrier(2, timeout=5)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            together.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(catalogue, name, wrapped)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- a removed EVSE stays removed (both databases) ---------------------------------------------------------


@pytest.mark.django_db
def test_an_update_stamped_before_the_removal_does_not_bring_the_evse_back(bec, location) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    removed = {**location, "evses": location["evses"][1:], "last_updated": "2026-12-01T12:00:00Z"}
    assert bec.put(f"{BASE}/BE/BEC/LOC1", removed).json()["status_code"] == 1000
    assert Evse.objects.get(uid="3256").status == "REMOVED"
    # A PATCH and a PUT the CPO sent at 11:00, before its listing of 12:00 left the EVSE out, arrive late.
    late_patch = {"status": "AVAILABLE", "last_updated": "2026-12-01T11:00:00Z"}
    late_put = {**location["evses"][0], "status": "AVAILABLE", "last_updated": "2026-12-01T11:30:00Z"}
    assert bec.patch(f"{BASE}/BE/BEC/LOC1/3256", late_patch).json()["status_code"] == 1000
    assert bec.put(f"{BASE}/BE/BEC/LOC1/3256", late_put).json()["status_code"] == 1000
    evse = Evse.objects.get(uid="3256")
    assert (evse.status, evse.last_updated) == ("REMOVED", datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert not Evse.objects.bookable().filter(uid="3256").exists()
    # The CPO's newer word puts it back.
    back = {**location["evses"][0], "status": "AVAILABLE", "last_updated": "2026-12-01T13:00:00Z"}
    assert bec.put(f"{BASE}/BE/BEC/LOC1/3256", back).json()["status_code"] == 1000
    assert Evse.objects.get(uid="3256").status == "AVAILABLE"


@pytest.mark.django_db
def test_a_later_listing_that_still_leaves_the_evse_out_moves_its_stamp(bec, location) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    for stamp in ("2026-12-01T12:00:00Z", "2026-12-01T14:00:00Z"):
        without = {**location, "evses": location["evses"][1:], "last_updated": stamp}
        bec.put(f"{BASE}/BE/BEC/LOC1", without)
    # Stamped between the two listings: the second one, later, still says the EVSE is gone.
    bec.patch(f"{BASE}/BE/BEC/LOC1/3256", {"status": "AVAILABLE", "last_updated": "2026-12-01T13:00:00Z"})
    evse = Evse.objects.get(uid="3256")
    assert (evse.status, evse.last_updated) == ("REMOVED", datetime(2026, 12, 1, 14, tzinfo=UTC))


# --- a deadlock is retried (both databases) ----------------------------------------------------------------
# Only a transaction of its own is retried (`transaction=True`: a test's own transaction would be an outer one).


@pytest.mark.django_db(transaction=True)
def test_a_batch_chosen_as_a_deadlock_victim_is_stored_again(partner, monkeypatch) -> None:
    real, calls = catalogue._store_batch, []

    def first_a_deadlock(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("deadlock detected") from psycopg.errors.DeadlockDetected("deadlock detected")
        return real(*args, **kwargs)

    monkeypatch.setattr(catalogue, "_store_batch", first_a_deadlock)
    result = catalogue.locations_store(partner, [ocpi_location("IN", "CPA", "L1")])
    assert (len(calls), result.created) == (2, 1)
    assert Location.objects.filter(location_id="L1").exists()


@pytest.mark.django_db(transaction=True)
def test_other_database_errors_are_not_retried(partner, monkeypatch) -> None:
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise OperationalError("could not serialize") from psycopg.errors.SerializationFailure("could not serialize")

    monkeypatch.setattr(catalogue, "_store_batch", failing)
    with pytest.raises(OperationalError):
        catalogue.locations_store(partner, [ocpi_location("IN", "CPA", "L1")])
    assert len(calls) == 1


# --- two PUTs of one new object (PostgreSQL) ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_two_puts_of_one_new_evse_at_once(bec, location, monkeypatch) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    evse = {**location["evses"][0], "uid": "NEW-EVSE", "evse_id": "BE*BEC*E999", "last_updated": "2026-12-01T00:00:00Z"}
    _meet_inside(monkeypatch, "_require_held")  # both have looked for the EVSE and found none
    answers = by_name({f"put{i}": lambda: bec.put(f"{BASE}/BE/BEC/LOC1/NEW-EVSE", evse) for i in range(2)})
    assert sorted(a.status_code for a in answers.values()) == [200, 201], [a.content for a in answers.values()]
    assert Evse.objects.filter(uid="NEW-EVSE").count() == 1


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_two_puts_of_one_new_connector_at_once(bec, location, monkeypatch) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    connector = {**location["evses"][0]["connectors"][0], "id": "9", "last_updated": "2026-12-01T00:00:00Z"}
    _meet_inside(monkeypatch, "_require_held")
    answers = by_name({f"put{i}": lambda: bec.put(f"{BASE}/BE/BEC/LOC1/3256/9", connector) for i in range(2)})
    assert sorted(a.status_code for a in answers.values()) == [200, 201], [a.content for a in answers.values()]
    assert Connector.objects.filter(connector_id="9").count() == 1


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_a_location_patch_listing_a_new_evse_while_it_is_put(bec, location, monkeypatch) -> None:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    evse = {**location["evses"][0], "uid": "NEW-EVSE", "evse_id": "BE*BEC*E999", "last_updated": "2026-12-01T00:00:00Z"}
    patch = {"evses": [evse], "last_updated": "2026-12-01T00:00:00Z"}
    _meet_inside(monkeypatch, "_require_held")
    answers = by_name(
        {
            "patch": lambda: bec.patch(f"{BASE}/BE/BEC/LOC1", patch),
            "put": lambda: bec.put(f"{BASE}/BE/BEC/LOC1/NEW-EVSE", evse),
        }
    )
    assert [a.json()["status_code"] for a in answers.values()] == [1000, 1000], [a.content for a in answers.values()]
    assert Evse.objects.filter(uid="NEW-EVSE").count() == 1


# --- lock order: a location PUT against the writes of its children (PostgreSQL) ----------------------------


def _location_put_pauses_after_locking_the_location(monkeypatch, entered: threading.Event) -> None:
    """The location PUT, its location row written (locked), pauses before it writes the EVSE rows."""
    real, done = catalogue._evse_values, []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not done and threading.current_thread().name == "location-put":
            done.append(1)
            entered.set()
            time.sleep(0.7)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalogue, "_evse_values", wrapped)


def _during_a_location_put(bec, location, monkeypatch, name: str, write: Callable[[], Any]) -> dict[str, Any]:
    bec.put(f"{BASE}/BE/BEC/LOC1", location)
    entered = threading.Event()
    _location_put_pauses_after_locking_the_location(monkeypatch, entered)
    newer = {**location, "name": "renamed", "last_updated": "2026-12-01T10:00:00Z"}

    def child_write() -> Any:
        entered.wait(5)
        time.sleep(0.1)
        return write()

    return by_name({"location-put": lambda: bec.put(f"{BASE}/BE/BEC/LOC1", newer), name: child_write})


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_an_evse_status_patch_during_a_location_put(bec, location, monkeypatch) -> None:
    patch = {"status": "CHARGING", "last_updated": "2026-12-01T11:00:00Z"}
    answers = _during_a_location_put(
        bec, location, monkeypatch, "evse-patch", lambda: bec.patch(f"{BASE}/BE/BEC/LOC1/3256", patch)
    )
    assert {k: a.json()["status_code"] for k, a in answers.items()} == {"location-put": 1000, "evse-patch": 1000}
    assert Evse.objects.get(uid="3256").status == "CHARGING"  # applied after the PUT, not lost under it
    assert Location.objects.get(location_id="LOC1").name == "renamed"


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_an_evse_put_during_a_location_put(bec, location, monkeypatch) -> None:
    evse = {**location["evses"][0], "status": "CHARGING", "last_updated": "2026-12-01T11:00:00Z"}
    answers = _during_a_location_put(
        bec, location, monkeypatch, "evse-put", lambda: bec.put(f"{BASE}/BE/BEC/LOC1/3256", evse)
    )
    assert {k: a.json()["status_code"] for k, a in answers.items()} == {"location-put": 1000, "evse-put": 1000}
    assert Evse.objects.get(uid="3256").status == "CHARGING"


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_a_connector_patch_during_a_location_put(bec, location, monkeypatch) -> None:
    connector_id = location["evses"][0]["connectors"][0]["id"]
    patch = {"max_electric_power": 22000, "last_updated": "2026-12-01T11:00:00Z"}
    answers = _during_a_location_put(
        bec,
        location,
        monkeypatch,
        "connector-patch",
        lambda: bec.patch(f"{BASE}/BE/BEC/LOC1/3256/{connector_id}", patch),
    )
    assert {k: a.json()["status_code"] for k, a in answers.items()} == {"location-put": 1000, "connector-patch": 1000}
    connector = Connector.objects.get(evse__uid="3256", connector_id=connector_id)
    assert connector.max_electric_power == 22000  # found again under the PUT's new connector rows, and patched


# --- no hook: a pull and a pushing CPO at once (PostgreSQL) ------------------------------------------------


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_status_patches_while_pulled_pages_are_stored(bec) -> None:
    """As ocpi/sync.py stores a pulled page (locations_store) while the CPO pushes EVSE status PATCHes, newest
    location first, against the page's order. Bounded: stops after a few seconds whatever happened."""
    partner = bec.partner
    page = [ocpi_location("BE", "BEC", f"L{i:03}", evses=4) for i in range(300)]
    catalogue.locations_store(partner, page)
    errors: list[BaseException] = []
    codes: Counter[tuple[int, int]] = Counter()
    stop = threading.Event()
    deadline = time.monotonic() + 10

    def pull() -> None:
        try:
            while time.monotonic() < deadline:
                now = _now()
                catalogue.locations_store(partner, [{**loc, "name": "renamed", "last_updated": now} for loc in page])
        except BaseException as exc:  # the pull's failure is the finding
            errors.append(exc)
        finally:
            stop.set()
            connections.close_all()

    def pushes(offset: int) -> None:
        try:
            n = offset * 75
            while not stop.is_set():
                i = 299 - (n % 300)
                answer = bec.patch(f"{BASE}/BE/BEC/L{i:03}/L{i:03}-E1", {"status": "CHARGING", "last_updated": _now()})
                codes[(answer.status_code, answer.json()["status_code"])] += 1
                n += 1
        finally:
            connections.close_all()

    threads = [threading.Thread(target=pull)] + [threading.Thread(target=pushes, args=(j,)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert set(codes) == {(200, 1000)} and codes[(200, 1000)] > 10, codes


@pytest.mark.django_db(transaction=True)
@postgresql_only
@pytest.mark.usefixtures("no_retries")
def test_two_pages_of_the_same_locations_in_opposite_orders(bec) -> None:
    """Two pulls (or a pull and a PUT) storing the same locations, listed in other orders, lock them in one."""
    partner = bec.partner
    page = [ocpi_location("BE", "BEC", f"L{i:03}", evses=2) for i in range(200)]
    catalogue.locations_store(partner, page)
    errors: list[BaseException] = []
    deadline = time.monotonic() + 6

    def pull(order: int) -> None:
        try:
            while time.monotonic() < deadline:
                now = _now()
                catalogue.locations_store(partner, [{**loc, "last_updated": now} for loc in page[::order]])
        except BaseException as exc:  # the pull's failure is the finding
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=pull, args=(order,)) for order in (1, -1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
