"""Races of one journey's requests that only PostgreSQL's row locks show: a START_SESSION whose POST got a 502
writing back the command as read before it (the session the CPO's PUT linked meanwhile lost); a re-select whose
live EVSE check took the EVSE before the journey, deadlocking with the confirm of the same journey."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from beckn import tasks
from emsp.models import Booking, ChargingSession, Command, Evse, Partner
from emsp.services import catalogue as svc
from ocpi.normalize import format_ocpi_datetime
from ocpi.normalize.evses import normalize_evse
from tests.beckn.bap import CPO_BASE
from tests.beckn.test_actions import init, select
from tests.beckn.test_booking_windows import NEAR_1
from tests.beckn.test_order_races import CONFIRM, body, failed_requests, handle
from tests.beckn.test_update_crash_safety import START, charging, ordered, update_body
from tests.factories import ocpi_location
from tests.fakes import FakePeer, envelope
from tests.races import Holds, at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks across transactions need PostgreSQL"),
]


def test_a_start_whose_post_got_a_502_keeps_the_session_the_cpo_put_meanwhile(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """The CPO started the charge and PUT its session while our POST was on the way; the POST then got a 502.
    _finish_sent's command.save() wrote the command as read before the POST: its session_id (None) over the
    session the PUT tied to it. Now _finish saves only the fields it sets."""
    booking = ordered(bap)
    put: list[ChargingSession] = []

    def started_then_502(call: Any) -> tuple[int, Any, dict[str, str]]:
        put.append(charging(network, booking))  # the CPO's PUT, committed while our POST waits for its answer
        return 502, b"<html>bad gateway</html>", {}

    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", started_then_502)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))

    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    assert put and start.status == Command.Status.FAILED
    assert ChargingSession.objects.get(pk=put[0].pk).booking_id == booking.pk
    assert start.session_id == put[0].pk, "the PUT's link of the session to its start was overwritten"


def test_a_start_the_cpo_rejected_keeps_the_session_its_put_linked_and_the_rejection(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """The same on the REJECTED path: the command's save after the CommandResponse keeps the session the PUT
    linked meanwhile, and still stores the CPO's answer (the fields the send set besides the outcome)."""
    booking = ordered(bap)
    put: list[ChargingSession] = []

    def put_then_rejected(call: Any) -> tuple[int, Any, dict[str, str]]:
        put.append(charging(network, booking))
        status, answer = 200, envelope({"result": "REJECTED"})
        return status, answer, {}

    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", put_then_rejected)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))

    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    assert put and start.status == Command.Status.FAILED
    assert start.response_result == "REJECTED" and start.response
    assert start.session_id == put[0].pk, "the PUT's link of the session to its start was overwritten"


class _Cpo:
    """The live check of on_select: the CPO describes the EVSE as it is."""

    def fetch_evse(self, evse: Evse, *, timeout: float) -> dict[str, Any]:
        stamp = format_ocpi_datetime(timezone.now())
        obj = ocpi_location(location_id="NEAR", evses=1, last_updated=stamp)["evses"][0]  # type: ignore[index]
        clean, _ = normalize_evse(obj)
        return clean


def test_a_reselect_as_the_journey_is_confirmed_does_not_deadlock(
    bap: Any, network: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """on_select's live check locks the location and the EVSE (evse_put), then updates the journey; on_confirm
    locks the journey (_journey_locked), then the EVSE (booking_confirm, FOR UPDATE). Now on_select takes the
    journey first: the confirm waits for the select, then books."""
    monkeypatch.setattr(svc, "cpo_gateway", lambda: _Cpo())
    select(bap, NEAR_1)
    init(bap)
    holds, refreshed, confirmed = Holds(), threading.Event(), threading.Event()
    real_put = svc.evse_put

    def held(*args: Any, **kw: Any) -> Any:  # the EVSE written and locked: the confirm comes now
        done = real_put(*args, **kw)
        if not refreshed.is_set():
            refreshed.set()
            holds.until_the_other_moves(confirmed)
        return done

    monkeypatch.setattr(svc, "evse_put", held)
    item = {"id": NEAR_1, "quantity": {"selected": {"measure": {"value": "20", "unit": "kWh"}}}}
    select_body = body(bap, "select", {"order": {"provider": {"id": "IN*CPA"}, "items": [item]}})
    confirm_body = body(bap, "confirm", CONFIRM)

    def confirm_then() -> None:
        assert refreshed.wait(20)
        handle("confirm", confirm_body, done=confirmed)()

    failures = at_once(handle("select", select_body), confirm_then)

    assert holds.given_up == 0
    assert not failures and not failed_requests(), (failures, failed_requests())  # "deadlock detected"
    assert Booking.objects.count() == 1
