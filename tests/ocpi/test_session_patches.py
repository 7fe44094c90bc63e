"""Session PATCHes as CPOs and hubs really send them: retried, out of order, partial, racing a PUT, from a clock a
few seconds behind ours (mod_sessions §"PATCH": charging_periods are added)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from emsp.models import ChargingSession
from emsp.services import sessions
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

URL = "/ocpi/emsp/2.2.1/sessions/BE/BEC/101"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def session(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("session_example_2_short_finished.json")  # 2015-06-29 22:39:09 to 23:50:16


def _period(moment: str) -> dict[str, Any]:
    return {"start_date_time": moment, "dimensions": [{"type": "ENERGY", "volume": 1.5}]}


def _starts() -> list[str]:
    return [p["start_date_time"] for p in ChargingSession.objects.get().data["charging_periods"]]


def test_it_adds_a_retried_patchs_periods_once(bec: OcpiTestClient, session: dict[str, Any]) -> None:
    bec.put(URL, session)
    patch = {"charging_periods": [_period("2015-06-29T23:40:00Z")], "last_updated": "2015-06-29T23:55:00Z"}
    assert bec.patch(URL, patch).json()["status_code"] == 1000
    assert bec.patch(URL, patch).json()["status_code"] == 1000  # a hub's retry of the same request
    assert _starts().count("2015-06-29T23:40:00Z") == 1
    assert len(_starts()) == len(session["charging_periods"]) + 1


def test_it_adds_the_periods_of_a_patch_delivered_late_in_time_order(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    bec.put(URL, session)
    later = {"kwh": 12, "charging_periods": [_period("2015-06-29T23:45:00Z")], "last_updated": "2015-06-29T23:56:00Z"}
    earlier = {"kwh": 9, "charging_periods": [_period("2015-06-29T23:40:00Z")], "last_updated": "2015-06-29T23:55:00Z"}
    assert bec.patch(URL, later).json()["status_code"] == 1000
    assert bec.patch(URL, earlier).json()["status_code"] == 1000
    stored = ChargingSession.objects.get()
    assert stored.kwh == 12  # the late PATCH's fields are older than the stored ones
    assert _starts() == sorted(_starts())
    assert {"2015-06-29T23:40:00Z", "2015-06-29T23:45:00Z"} <= set(_starts())


def test_a_patch_period_outside_the_session_is_dropped_as_a_puts_is(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    bec.put(URL, session)
    bec.patch(URL, {"charging_periods": [_period("2011-03-03T00:00:00Z")], "last_updated": "2015-06-30T00:00:00Z"})
    assert "2011-03-03T00:00:00Z" not in _starts()
    assert len(_starts()) == len(session["charging_periods"])


def test_a_patch_ending_the_session_before_its_start_changes_nothing(session: dict[str, Any], bec: Any) -> None:
    bec.put(URL, session)
    key = ChargingSession.objects.get().ocpi_key
    change = sessions.session_patch(
        key, {"end_date_time": "2011-01-01T00:00:00Z", "last_updated": "2015-06-30T00:00:00Z"}
    )
    assert change is not None and change.refused == "end_date_time is before start_date_time"
    assert not change.applied
    stored = ChargingSession.objects.get()
    assert stored.end_date_time > stored.start_date_time
    assert stored.data["last_updated"] == session["last_updated"]


def test_a_patch_starting_the_session_after_its_end_changes_nothing(session: dict[str, Any], bec: Any) -> None:
    bec.put(URL, session)
    key = ChargingSession.objects.get().ocpi_key
    change = sessions.session_patch(
        key, {"start_date_time": "2016-01-01T00:00:00Z", "last_updated": "2016-01-02T00:00:00Z"}
    )
    assert change is not None and change.refused
    stored = ChargingSession.objects.get()
    assert stored.start_date_time < stored.end_date_time


def test_the_loser_of_two_first_puts_racing_updates_the_winners_row(
    bec: OcpiTestClient, session: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two PUTs of a new session: the second looked before the first committed (its look found nothing), and its
    INSERT then meets the first one's row."""
    assert bec.put(URL, session).status_code == 201
    real = sessions._locked
    looks: list[str] = []

    def first_look_misses(key: str) -> ChargingSession | None:
        looks.append(key)
        return None if len(looks) == 1 else real(key)

    monkeypatch.setattr(sessions, "_locked", first_look_misses)
    response = bec.put(URL, {**session, "kwh": 15, "last_updated": "2015-06-29T23:55:00Z"})
    assert (response.status_code, response.json()["status_code"]) == (200, 1000)
    assert ChargingSession.objects.get().kwh == 15


def test_a_cpo_stamped_patch_applies_after_a_put_without_last_updated(
    bec: OcpiTestClient, session: dict[str, Any]
) -> None:
    """The PUT's stamp is not our receive time: a CPO whose clock is seconds behind ours saw its PATCHes dropped."""
    now = datetime.now(UTC)
    body = {k: v for k, v in session.items() if k not in ("last_updated", "end_date_time", "charging_periods")}
    body.update(start_date_time=(now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ"), status="ACTIVE", kwh=1)
    assert bec.put(URL, body).json()["status_code"] == 1000
    stamp = (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert bec.patch(URL, {"kwh": 7, "status": "COMPLETED", "last_updated": stamp}).json()["status_code"] == 1000
    stored = ChargingSession.objects.get()
    assert (stored.status, stored.kwh) == ("COMPLETED", 7)


def test_a_cpo_patching_an_end_before_the_start_hears_2001(session: dict[str, Any], bec: Any) -> None:
    bec.put(URL, session)
    response = bec.patch(URL, {"end_date_time": "2011-01-01T00:00:00Z", "last_updated": "2015-06-30T00:00:00Z"})
    assert response.json()["status_code"] == 2001
    assert ChargingSession.objects.get().end_date_time > ChargingSession.objects.get().start_date_time
