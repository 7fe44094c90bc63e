"""A session the charger reports after its booking had ended without a charge: a START_SESSION whose answer was
lost (a 502: recorded FAILED, the driver may cancel at once, or the booking checks end the booking FAILED) that the
charger carried out after all. Nobody would pay for it (the hold and the payment hold were released, the app heard
the order end): it is stopped, once per session, a refused stop sent once more by the booking checks; its CDR
leaves the ended order as it is (no bill for the app); and the booking checks list it for staff."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.utils import timezone

from billing.services.records import cdr_store
from emsp.models import Booking, BookingCheck, ChargingSession, Command, Partner
from emsp.services import booking_checks
from emsp.services.commands import command_result_received
from emsp.services.sessions import session_key, session_patch, session_put
from ocpi.normalize import format_ocpi_datetime
from tests.beckn.bap import CPO_BASE
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db

Kind = BookingCheck.Kind


def ordered(bap: Any) -> str:
    select(bap, item_of(bap))
    init(bap)
    return confirm(bap)["message"]["order"]["id"]


def lost_start(bap: Any, peer: FakePeer) -> Booking:
    """An order whose START_SESSION got a 502 (its answer lost on the way): a failed start, the app told 40006.
    The walk-up start (tests/beckn/test_walk_up.py): asked for before the CPO answered RESERVE_NOW, it goes out
    from the worker once the answer comes, and its failure is kept (an inline start's is rolled back with the
    request: test_hardening.py)."""
    order_id = ordered(bap)
    order = {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    assert "error" not in last(bap, "on_update")
    booking = Booking.objects.get(order_id=order_id)
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", (502, b"bad gateway"))
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    assert len(peer.requests_to("START_SESSION")) == 1
    assert Command.objects.get(booking=booking, type="START_SESSION").status == Command.Status.FAILED
    assert last(bap, "on_status")["error"]["code"] == "40006"
    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING
    return booking


def cancelled(bap: Any, peer: FakePeer) -> Booking:
    booking = lost_start(bap, peer)
    bap("cancel", {"order_id": booking.order_id, "cancellation_reason_id": "changed-plans"})
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    return booking


def at(minutes: float) -> datetime:
    return timezone.now() + timedelta(minutes=minutes)


def reconcile(bap: Any, when: datetime) -> dict[str, int]:
    with time_machine.travel(when, tick=False), bap.capture(execute=True):
        return booking_checks.bookings_reconcile()


def failed(bap: Any, peer: FakePeer) -> Booking:
    """The booking checks end the order of the lost start FAILED (start_failed) and the app hears on_cancel."""
    booking = lost_start(bap, peer)
    reconcile(bap, at(6))
    booking.refresh_from_db()
    assert booking.state == Booking.State.FAILED
    assert last(bap, "on_cancel")["message"]["order"]["status"] == "CANCELLED"
    return booking


def stamp() -> str:
    return format_ocpi_datetime(timezone.now())


def late_session(bap: Any, partner: Partner, booking: Booking, *, status: str = "ACTIVE") -> ChargingSession:
    """The CPO's PUT of the session the lost start began, on the start's authorization_reference."""
    command = Command.objects.get(booking=booking, type="START_SESSION")
    assert booking.token is not None
    obj = {
        "country_code": "IN", "party_id": "CPA", "id": "S-LATE", "start_date_time": stamp(), "kwh": 2,
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                      "contract_id": booking.token.contract_id},
        "auth_method": "COMMAND", "authorization_reference": command.authorization_reference,
        "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
        "currency": "INR", "status": status, "last_updated": stamp(),
    }  # fmt: skip
    if status == "COMPLETED":
        obj["end_date_time"] = stamp()
    with bap.capture(execute=True):
        session_put(partner, obj)
    session = ChargingSession.objects.get(session_id="S-LATE")
    assert session.booking_id == booking.pk
    return session


def minute_patch(bap: Any, kwh: float) -> None:
    """The CPO's PATCH of the ACTIVE session, as it sends one every minute."""
    with bap.capture(execute=True):
        session_patch(session_key("IN", "CPA", "S-LATE"), {"kwh": kwh, "last_updated": stamp()})


def stops(session: ChargingSession) -> list[Command]:
    return list(Command.objects.filter(session=session, type=Command.Type.STOP_SESSION).order_by("pk"))


def findings(booking: Booking) -> list[tuple[str, bool, bool]]:
    """(kind, repaired, open) of the booking's findings, oldest first."""
    rows = BookingCheck.objects.filter(booking=booking).order_by("pk")
    return [(c.kind, c.repaired, c.resolved_at is None) for c in rows]


# --- A: the late session is stopped, once --------------------------------------------------------------------------


@pytest.mark.parametrize("ended", [Booking.State.CANCELLED, Booking.State.EXPIRED])
def test_a_late_session_of_a_cancelled_order_is_stopped_once(
    bap: Any, peer: FakePeer, network: Partner, ended: str
) -> None:
    """docs/driver-journey.md, "A cancel after the start": the driver's cancel after a start whose answer was lost
    released the hold. (EXPIRED stands for a no-show's end: no flow links a session to one, its start would have
    moved it on; the rule is the same.)"""
    booking = cancelled(bap, peer)
    Booking.objects.filter(pk=booking.pk).update(state=ended)
    session = late_session(bap, network, booking)

    assert len(peer.requests_to("STOP_SESSION")) == 1
    stop = stops(session)[0]
    assert stop.booking_id == booking.pk
    for kwh in (3, 4, 5):  # the CPO's PATCH every minute: no stop on each
        minute_patch(bap, kwh)
    assert len(peer.requests_to("STOP_SESSION")) == 1
    booking.refresh_from_db()
    assert booking.state == ended  # the order stays ended: the app heard it so


def test_a_late_session_of_an_order_the_booking_checks_ended_failed_is_stopped(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    booking = failed(bap, peer)
    session = late_session(bap, network, booking)
    assert len(peer.requests_to("STOP_SESSION")) == 1
    assert [c.status for c in stops(session)] == [Command.Status.ACCEPTED]
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.FAILED


def test_a_session_reported_completed_is_not_stopped(bap: Any, peer: FakePeer, network: Partner) -> None:
    booking = cancelled(bap, peer)
    late_session(bap, network, booking, status="COMPLETED")
    assert not peer.requests_to("STOP_SESSION")


def test_a_refused_stop_of_a_late_session_is_sent_once_more_by_the_booking_checks_not_by_each_patch(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """As for a booking STOPPING (docs/architecture.md, "Reconciliation"): one more stop, then listed."""
    booking = cancelled(bap, peer)
    session = late_session(bap, network, booking)
    command_result_received(stops(session)[0], {"result": "REJECTED"})
    minute_patch(bap, 3)
    assert len(peer.requests_to("STOP_SESSION")) == 1

    reconcile(bap, at(6))
    assert len(peer.requests_to("STOP_SESSION")) == 2
    command_result_received(stops(session)[1], {"result": "REJECTED"})
    reconcile(bap, at(12 + 15))
    assert len(peer.requests_to("STOP_SESSION")) == 2  # two tries, as for a STOPPING booking
    assert findings(booking) == [
        (Kind.SESSION_AFTER_END, False, True),
        (Kind.SESSION_NOT_STOPPED, True, False),
        (Kind.SESSION_NOT_STOPPED, False, True),
    ]
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CANCELLED


# --- C: the booking checks list a late session of a cancelled order ------------------------------------------------


def test_the_booking_checks_list_a_late_session_of_a_cancelled_order_for_staff(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    booking = cancelled(bap, peer)
    late_session(bap, network, booking)
    cancels = len(bap.bap.callbacks("on_cancel"))

    reconcile(bap, at(1))
    reconcile(bap, at(2))

    check = BookingCheck.objects.get(booking=booking)
    assert (check.kind, check.repaired, check.resolved_at, check.times_seen) == (Kind.SESSION_AFTER_END, False, None, 2)
    assert "the booking is CANCELLED, yet session S-LATE (ACTIVE)" in check.detail
    booking.refresh_from_db()
    assert (booking.state, booking.cancellation_reason) == (Booking.State.CANCELLED, "changed-plans")
    assert len(bap.bap.callbacks("on_cancel")) == cancels  # the app hears nothing more


# --- B: the late session's CDR leaves the ended order as it is -----------------------------------------------------


def late_cdr(bap: Any, partner: Partner, booking: Booking, session: ChargingSession) -> None:
    assert booking.token is not None
    obj = {
        "country_code": "IN", "party_id": "CPA", "id": "CDR-LATE", "session_id": session.session_id,
        "start_date_time": stamp(), "end_date_time": stamp(), "currency": "INR",
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                      "contract_id": booking.token.contract_id},
        "auth_method": "COMMAND",
        "cdr_location": {"id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1"},
        "total_cost": {"excl_vat": 38, "incl_vat": 44.84}, "total_energy": 2, "total_time": 0.2,
        "charging_periods": [], "last_updated": stamp(),
    }  # fmt: skip
    with bap.capture(execute=True):
        cdr_store(partner, obj)


@pytest.mark.parametrize("ending", ["failed", "cancelled"])
def test_the_cdr_of_a_late_session_leaves_the_ended_order_and_its_finding_alone(
    bap: Any, peer: FakePeer, network: Partner, ending: str
) -> None:
    booking = failed(bap, peer) if ending == "failed" else cancelled(bap, peer)
    ended = booking.state
    late_session(bap, network, booking)
    reconcile(bap, at(7))
    listed = findings(booking)
    assert listed[-1] == (Kind.SESSION_AFTER_END, False, True)  # after the start_failed that ended a FAILED one
    updates = len(bap.bap.callbacks("on_update"))

    session = late_session(bap, network, booking, status="COMPLETED")
    late_cdr(bap, network, booking, session)

    booking.refresh_from_db()
    assert booking.state == ended  # not SETTLED: the finding stays open
    told = bap.bap.callbacks("on_update")[updates:]
    assert told, "the app hears the bill of the charge its driver took"
    assert told[-1]["message"]["order"]["quote"]["price"]["value"] == "51.64"
    reconcile(bap, at(8))
    assert findings(booking) == listed  # still listed for staff, not closed as gone
    check = BookingCheck.objects.get(booking=booking, kind=Kind.SESSION_AFTER_END)
    assert "yet session S-LATE (COMPLETED)" in check.detail


# --- the driver's own card at the booked EVSE is no late session of ours -------------------------------------------


def test_the_booked_driver_s_card_charge_plugged_in_before_arrive_by_is_neither_expired_nor_stopped(
    bap: Any, peer: FakePeer, network: Partner
) -> None:
    """The driver taps their card at the booked EVSE before the arrive-by time; the CPO reports the session PENDING
    (plugged in, not drawing yet) and the booking checks link it to the booking. The no-show sweep leaves the
    booking standing, and the charge, once ACTIVE, is not stopped. Before, the sweep expired the booking and the
    charge was then stopped as a late session of ours, though no START_SESSION of ours began it."""
    from emsp.services import bookings

    booking = Booking.objects.get(order_id=ordered(bap))
    reservation = booking.reservation
    arrive_by = reservation.arrive_by or reservation.expiry_at
    tapped = arrive_by - timedelta(minutes=2)
    with time_machine.travel(tapped, tick=False):
        now = format_ocpi_datetime(timezone.now())
        card = {
            "country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
            "contract_id": booking.token.contract_id,
        }  # fmt: skip
        session = {
            "country_code": "IN", "party_id": "CPA", "id": "S-CARD", "start_date_time": now, "kwh": 0,
            "cdr_token": card, "auth_method": "WHITELIST", "location_id": booking.evse.location.location_id,
            "evse_uid": booking.evse.uid, "connector_id": "1", "currency": "INR", "status": "PENDING",
            "last_updated": now,
        }  # fmt: skip
        with bap.capture(execute=True):
            session_put(network, session)
    reconcile(bap, tapped + timedelta(minutes=1))
    assert ChargingSession.objects.get(session_id="S-CARD").booking_id == booking.pk

    with bap.capture(execute=True):
        assert bookings.bookings_expire_no_shows(now=arrive_by + timedelta(minutes=1)) == 0
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CONFIRMED

    with time_machine.travel(arrive_by + timedelta(minutes=2), tick=False), bap.capture(execute=True):
        patch = {"status": "ACTIVE", "kwh": 0.3, "last_updated": format_ocpi_datetime(timezone.now())}
        session_patch(session_key("IN", "CPA", "S-CARD"), patch)
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CHARGING
    assert not peer.requests_to("STOP_SESSION")
