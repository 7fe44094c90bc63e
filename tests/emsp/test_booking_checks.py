"""Reconciliation of bookings with the CPO's side: each mismatch repaired (through the normal paths, the app
told) or listed for staff; re-runs change nothing twice; the console's list and actions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from beckn.models import BecknCallback, BecknTransaction
from emsp import tasks
from emsp.models import Booking, BookingCheck, ChargingSession, Command, Evse, Partner, Reservation, StaffAction
from emsp.services import booking_checks, bookings, commands, sessions
from ocpi.normalize import format_ocpi_datetime
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"
Capture = Callable[..., AbstractContextManager[Any]]
Kind = BookingCheck.Kind


@pytest.fixture
def evse(partner: Partner) -> Evse:
    """An EVSE that is not RESERVABLE: a start goes out at once (no RESERVE_NOW in the way)."""
    return stored_location(partner, capabilities=["REMOTE_START_STOP_CAPABLE"]).evses.order_by("uid").first()


@pytest.fixture
def capture(django_capture_on_commit_callbacks: Capture) -> Capture:
    """Run what a block queues after commit (command sends, callbacks), as a worker would."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture(autouse=True)
def _answers(peer: FakePeer) -> Iterator[None]:
    for name in ("RESERVE_NOW", "START_SESSION", "STOP_SESSION", "CANCEL_RESERVATION"):
        peer.route("POST", f"{CPO}/commands/{name}", (200, envelope({"result": "ACCEPTED", "timeout": 30})))
    peer.route("GET", f"{CPO}/sessions", (200, envelope([])))
    peer.route("GET", f"{CPO}/cdrs", (200, envelope([])))
    yield


def list_sessions(peer: FakePeer, *objects: dict[str, Any]) -> None:
    peer.route("GET", f"{CPO}/sessions", (200, envelope(list(objects))))


def ocpi_time(at: datetime | None = None) -> str:
    return format_ocpi_datetime(at or timezone.now())


def session_object(
    booking: Booking, *, reference: str, session_id: str = "S1", status: str = "ACTIVE", ended: bool = False
) -> dict[str, Any]:
    assert booking.token is not None
    obj: dict[str, Any] = {
        "country_code": "IN",
        "party_id": "CPA",
        "id": session_id,
        "start_date_time": ocpi_time(),
        "kwh": 4.5 if ended else 0,
        "cdr_token": {
            "country_code": settings.OCPI_COUNTRY_CODE,
            "party_id": settings.OCPI_PARTY_ID,
            "uid": booking.token.uid,
            "type": booking.token.type,
            "contract_id": booking.token.contract_id,
        },
        "auth_method": "COMMAND",
        "authorization_reference": reference,
        "location_id": booking.evse.location.location_id,
        "evse_uid": booking.evse.uid,
        "connector_id": "1",
        "currency": "INR",
        "status": status,
        "last_updated": ocpi_time(),
    }
    if ended:
        obj["end_date_time"] = ocpi_time()
    return obj


def with_app(booking: Booking) -> BecknTransaction:
    """The booking's Beckn journey: what the app hears goes to it."""
    return BecknTransaction.objects.create(
        bap_id="bap.example", transaction_id=f"t-{booking.pk}", bap_uri="https://bap.example/beckn",
        callback_uri="https://bap.example/beckn", domain="ev-charging:beckn", booking=booking,
    )  # fmt: skip


def told(txn: BecknTransaction, action: str) -> list[dict[str, Any]]:
    return [orjson.loads(c.body) for c in BecknCallback.objects.filter(transaction=txn, action=action).order_by("pk")]


def start(evse: Evse, capture: Capture, *, result: str | None = "ACCEPTED") -> Booking:
    """A booking whose start went out, with the CPO's CommandResult (None: none came)."""
    with capture():
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    with capture():
        bookings.booking_start(booking)
    command = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    if result is not None:
        with capture():
            commands.command_result_received(command, {"result": result})
    booking.refresh_from_db()
    return booking


def reconcile(capture: Capture, at: datetime) -> dict[str, int]:
    with time_machine.travel(at, tick=False), capture():
        return booking_checks.bookings_reconcile()


def later(minutes: float) -> datetime:
    return timezone.now() + timedelta(minutes=minutes)


# --- a start that went out -------------------------------------------------------------------------------------


def test_it_stores_a_missed_session_through_the_normal_path_and_the_app_hears_on_status(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = start(evse, capture)
    txn = with_app(booking)
    reference = Command.objects.get(booking=booking, type=Command.Type.START_SESSION).authorization_reference
    list_sessions(peer, session_object(booking, reference=reference))  # the push never reached us
    assert not booking.sessions.exists()

    reconcile(capture, later(6))

    booking.refresh_from_db()
    assert booking.state == Booking.State.CHARGING
    assert booking.sessions.get().session_id == "S1"
    assert "date_from=" in peer.requests_to("/sessions")[0]["url"]
    [on_status] = told(txn, "on_status")
    assert on_status["message"]["order"]["id"] == booking.order_id
    assert on_status["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "ACTIVE"
    check = BookingCheck.objects.get(booking=booking)
    assert check.kind == Kind.SESSION_MISSING
    assert check.repaired and check.resolved_at is not None
    assert "now CHARGING" in check.resolution


def test_it_runs_twice_without_doubling_anything(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    booking = start(evse, capture)
    txn = with_app(booking)
    reference = Command.objects.get(booking=booking, type=Command.Type.START_SESSION).authorization_reference
    list_sessions(peer, session_object(booking, reference=reference))
    reconcile(capture, later(6))
    rows, callbacks, pulls = BookingCheck.objects.count(), BecknCallback.objects.count(), len(peer.calls)

    reconcile(capture, later(7))
    tasks.bookings_reconcile()

    assert BookingCheck.objects.count() == rows == 1
    assert BecknCallback.objects.count() == callbacks
    assert len(told(txn, "on_status")) == 1
    assert len(peer.calls) == pulls  # nothing left to ask the CPO


def test_it_links_a_session_the_cpo_gave_its_own_reference(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    booking = start(evse, capture)
    txn = with_app(booking)
    list_sessions(peer, session_object(booking, reference="CPO-MADE-THIS-UP"))

    reconcile(capture, later(6))

    booking.refresh_from_db()
    assert booking.state == Booking.State.CHARGING
    assert ChargingSession.objects.get().booking == booking
    assert len(told(txn, "on_status")) == 1
    repaired = dict(BookingCheck.objects.filter(repaired=True).values_list("kind", "resolution"))
    assert set(repaired) == {Kind.SESSION_UNLINKED, Kind.SESSION_MISSING}
    assert "session S1 linked" in repaired[Kind.SESSION_UNLINKED]


def test_it_lists_a_missing_session_and_ends_the_booking_failed_after_the_give_up_time(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = start(evse, capture)
    txn = with_app(booking)

    reconcile(capture, later(6))  # the CPO's list has no session for it either
    reconcile(capture, later(7))  # read again only after a while
    check = BookingCheck.objects.get()
    assert (check.kind, check.is_open, check.times_seen) == (Kind.SESSION_MISSING, True, 2)
    assert len(peer.requests_to("/sessions")) == 1
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING

    reconcile(capture, later(31))

    booking.refresh_from_db()
    assert booking.state == Booking.State.FAILED
    assert booking.reservation.status == Reservation.Status.CANCELLED
    [on_cancel] = told(txn, "on_cancel")
    assert on_cancel["message"]["order"]["cancellation"]["cancelled_by"] == "PROVIDER"
    check.refresh_from_db()
    assert check.repaired and not check.is_open
    assert "FAILED" in check.resolution
    assert BookingCheck.objects.count() == 1


def test_it_does_not_end_a_booking_while_the_cpo_cannot_be_asked(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    booking = start(evse, capture)
    peer.route("GET", f"{CPO}/sessions", (503, envelope(status_code=3000)))

    reconcile(capture, later(31))

    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    check = BookingCheck.objects.get()
    assert check.is_open and "could not be read" in check.detail


def test_it_ends_a_booking_whose_start_the_cpo_refused(evse: Evse, capture: Capture) -> None:
    booking = start(evse, capture, result="EVSE_OCCUPIED")
    txn = with_app(booking)

    reconcile(capture, later(2))  # the app was told at once; the booking waits a little
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    reconcile(capture, later(6))
    reconcile(capture, later(8))

    booking.refresh_from_db()
    assert booking.state == Booking.State.FAILED
    assert "EVSE_OCCUPIED" in booking.cancellation_reason
    assert len(told(txn, "on_cancel")) == 1
    check = BookingCheck.objects.get()
    assert (check.kind, check.repaired) == (Kind.START_FAILED, True)


def test_it_sends_a_command_whose_send_task_was_lost(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    with capture():
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    bookings.booking_start(booking)  # committed, but its send task never ran
    assert Command.objects.get(type=Command.Type.START_SESSION).status == Command.Status.QUEUED

    reconcile(capture, later(2))
    reconcile(capture, later(3))

    assert len(peer.requests_to("START_SESSION")) == 1
    assert Command.objects.get(type=Command.Type.START_SESSION).status == Command.Status.ACCEPTED
    check = BookingCheck.objects.get()
    assert (check.kind, check.repaired) == (Kind.COMMAND_STUCK, True)


def test_a_requeue_whose_repair_did_not_commit_is_tried_again(evse: Evse, capture: Capture) -> None:
    """The mark that keeps a command from being queued again for a day is set once the repair commits: a repair
    rolled back (or its process killed) before that leaves the next check to queue it."""
    from django.core.cache import cache
    from django.db import transaction

    from emsp.services.booking_checks import _requeue, _requeued_key

    with capture():
        booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    bookings.booking_start(booking)
    command = Command.objects.get(type=Command.Type.START_SESSION)

    class Killed(Exception):
        pass

    with pytest.raises(Killed), transaction.atomic():
        assert _requeue(command.pk) is not None
        raise Killed
    assert cache.get(_requeued_key(command)) is None
    with capture():
        assert _requeue(command.pk) is not None  # the next check queues it
    assert cache.get(_requeued_key(command)) is not None
    assert _requeue(command.pk) is None  # and not again that day


# --- charging and stopping -------------------------------------------------------------------------------------


def charging(evse: Evse, capture: Capture, *, session_id: str = "S1") -> tuple[Booking, ChargingSession]:
    booking = start(evse, capture)
    reference = Command.objects.get(booking=booking, type=Command.Type.START_SESSION).authorization_reference
    obj = session_object(booking, reference=reference, session_id=session_id)
    with capture():
        session = sessions.session_put(evse.location.partner, obj).session
    booking.refresh_from_db()
    assert booking.state == Booking.State.CHARGING
    return booking, session


def test_it_moves_a_booking_on_whose_session_completed_unnoticed(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    booking, session = charging(evse, capture)
    txn = with_app(booking)
    ChargingSession.objects.filter(pk=session.pk).update(status=ChargingSession.Status.COMPLETED)  # a crash between

    reconcile(capture, later(1))
    reconcile(capture, later(2))

    booking.refresh_from_db()
    assert booking.state == Booking.State.COMPLETED
    assert len(told(txn, "on_status")) == 1
    check = BookingCheck.objects.get()
    assert (check.kind, check.repaired) == (Kind.BOOKING_BEHIND_SESSION, True)
    assert "CHARGING → COMPLETED" in check.resolution


def test_it_reads_the_sessions_again_when_a_stop_was_accepted_but_the_session_goes_on(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking, session = charging(evse, capture)
    txn = with_app(booking)
    with capture():
        stop = bookings.booking_stop(booking)
    assert stop is not None
    commands.command_result_received(stop, {"result": "ACCEPTED"})
    reference = session.authorization_reference
    finished = session_object(booking, reference=reference, status="COMPLETED", ended=True)
    list_sessions(peer, finished)

    reconcile(capture, later(6))

    booking.refresh_from_db()
    assert booking.state == Booking.State.COMPLETED
    assert len(told(txn, "on_status")) == 1
    check = BookingCheck.objects.get()
    assert (check.kind, check.repaired) == (Kind.SESSION_NOT_STOPPED, True)


def test_it_sends_a_failed_stop_once_more_then_lists_the_session(peer: FakePeer, evse: Evse, capture: Capture) -> None:
    booking, _ = charging(evse, capture)
    with capture():
        stop = bookings.booking_stop(booking)
    assert stop is not None
    commands.command_result_received(stop, {"result": "FAILED"})

    reconcile(capture, later(6))
    assert len(peer.requests_to("STOP_SESSION")) == 2
    again = Command.objects.filter(type=Command.Type.STOP_SESSION).latest("pk")
    commands.command_result_received(again, {"result": "FAILED"})
    reconcile(capture, later(12 + 15))

    assert len(peer.requests_to("STOP_SESSION")) == 2
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING
    rows = list(BookingCheck.objects.order_by("pk").values_list("kind", "repaired", "resolved_at"))
    assert [(kind, repaired, resolved is None) for kind, repaired, resolved in rows] == [
        (Kind.SESSION_NOT_STOPPED, True, False),
        (Kind.SESSION_NOT_STOPPED, False, True),
    ]


# --- after the charge ------------------------------------------------------------------------------------------


def completed(evse: Evse, capture: Capture, *, status: str = "COMPLETED", session_id: str = "S1") -> Booking:
    booking, session = charging(evse, capture, session_id=session_id)
    obj = session_object(
        booking, reference=session.authorization_reference, status=status, ended=True, session_id=session_id
    )
    with capture():
        sessions.session_put(evse.location.partner, obj)
    booking.refresh_from_db()
    assert booking.state == Booking.State.COMPLETED
    return booking


def test_it_reads_the_cdrs_of_a_charge_whose_cdr_did_not_come(
    peer: FakePeer, evse: Evse, capture: Capture, spec_example: Callable[[str], Any]
) -> None:
    booking = completed(evse, capture)
    cdr = {
        **spec_example("cdr_example.json"),
        "country_code": "IN",
        "party_id": "CPA",
        "id": "CDR-1",
        "session_id": "S1",
        "last_updated": ocpi_time(),
    }
    peer.route("GET", f"{CPO}/cdrs", (200, envelope([cdr])))

    reconcile(capture, later(60))  # not yet: CDRs take their time
    assert not peer.requests_to("/cdrs")
    reconcile(capture, later(60 * settings.BOOKING_CHECK_CDR_WAIT_HOURS + 1))

    assert "date_from=" in peer.requests_to("/cdrs")[0]["url"]
    session = booking.sessions.get()
    assert session.cdrs.get().cdr_id == "CDR-1"
    check = BookingCheck.objects.get()
    assert (check.kind, check.repaired) == (Kind.CDR_MISSING, True)


def test_it_lists_an_invalid_session_once_and_staff_can_close_it_for_good(
    peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = completed(evse, capture, status="INVALID")

    reconcile(capture, later(1))
    reconcile(capture, later(2))
    check = BookingCheck.objects.get()
    assert (check.kind, check.is_open, check.times_seen) == (Kind.SESSION_INVALID, True, 2)

    booking_checks.booking_checks_resolve(checks=[check], user=User(username="ops-anna"))
    reconcile(capture, later(3))

    check.refresh_from_db()
    assert (check.resolved_by, check.resolution) == ("ops-anna", "resolved by ops-anna")
    assert BookingCheck.objects.filter(booking=booking).count() == 1


# --- after the booking ended -----------------------------------------------------------------------------------


def test_it_cancels_a_reservation_the_cpo_accepted_after_our_cancel(
    peer: FakePeer, partner: Partner, capture: Capture
) -> None:
    reservable = stored_location(partner, location_id="LOC2").evses.order_by("uid").first()
    with capture():
        booking = bookings.booking_confirm(evse=reservable, connector_id="1", token=TokenFactory())
    with capture():
        bookings.booking_cancel(booking, reason="changed my mind")
    # The cancel overtook the reservation: the CPO knew none, then made it.
    cancel = Command.objects.get(type=Command.Type.CANCEL_RESERVATION)
    commands.command_result_received(cancel, {"result": "UNKNOWN_RESERVATION"})
    with time_machine.travel(later(0.5), tick=False):
        reserve = Command.objects.get(type=Command.Type.RESERVE_NOW)
        commands.command_result_received(reserve, {"result": "ACCEPTED"})

    reconcile(capture, later(1))
    reconcile(capture, later(2))

    assert len(peer.requests_to("CANCEL_RESERVATION")) == 2
    check = BookingCheck.objects.get()
    assert (check.kind, check.repaired) == (Kind.RESERVATION_NOT_RELEASED, True)


def test_it_leaves_a_reservation_alone_when_the_cpo_released_it(
    peer: FakePeer, partner: Partner, capture: Capture
) -> None:
    reservable = stored_location(partner, location_id="LOC2").evses.order_by("uid").first()
    with capture():
        booking = bookings.booking_confirm(evse=reservable, connector_id="1", token=TokenFactory())
    commands.command_result_received(Command.objects.get(type=Command.Type.RESERVE_NOW), {"result": "ACCEPTED"})
    with capture():
        bookings.booking_cancel(booking)
    commands.command_result_received(Command.objects.get(type=Command.Type.CANCEL_RESERVATION), {"result": "ACCEPTED"})

    reconcile(capture, later(1))

    assert len(peer.requests_to("CANCEL_RESERVATION")) == 1
    assert not BookingCheck.objects.exists()


def test_the_beat_runs_the_check(evse: Evse) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["emsp-bookings-reconcile"]
    assert entry["task"] == "emsp.tasks.bookings_reconcile"
    assert entry["schedule"] == float(settings.BOOKING_CHECK_INTERVAL_SECONDS)
    bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    assert tasks.bookings_reconcile() == {"checked": 1}


# --- the console -----------------------------------------------------------------------------------------------


@pytest.fixture
def staff(db: None) -> Client:
    user = User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x")
    client = Client()
    client.force_login(user)
    return client


def test_the_findings_list_filters_and_links_to_the_booking(
    staff: Client, peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = completed(evse, capture, status="INVALID")
    reconcile(capture, later(1))
    url = reverse("admin:emsp_bookingcheck_changelist")

    text = staff.get(url, {"state": "open", "kind__exact": Kind.SESSION_INVALID}).content.decode()
    assert booking.order_id in text
    assert reverse("admin:emsp_booking_change", args=[booking.pk]) in text
    assert booking.order_id not in staff.get(url, {"state": "repaired"}).content.decode()
    booking_page = staff.get(reverse("admin:emsp_booking_change", args=[booking.pk])).content.decode()
    assert "Open findings of reconciliation" in booking_page
    assert "INVALID" in booking_page


def test_check_again_and_mark_resolved_from_the_console(
    staff: Client, peer: FakePeer, evse: Evse, capture: Capture
) -> None:
    booking = start(evse, capture)
    reconcile(capture, later(6))
    check = BookingCheck.objects.get()
    url = reverse("admin:emsp_bookingcheck_changelist")
    reference = Command.objects.get(booking=booking, type=Command.Type.START_SESSION).authorization_reference
    list_sessions(peer, session_object(booking, reference=reference))

    with time_machine.travel(later(7), tick=False), capture():
        response = staff.post(url, {"action": "check_again", "_selected_action": [check.pk]}, follow=True)
    assert "1 booking(s) checked again; 0 finding(s) still open" in response.content.decode()
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CHARGING  # read now, not in 15 min
    check.refresh_from_db()
    assert check.repaired

    elsewhere = stored_location(evse.location.partner, location_id="LOC3", capabilities=[]).evses.first()
    other = completed(elsewhere, capture, status="INVALID", session_id="S2")
    reconcile(capture, later(8))
    finding = BookingCheck.objects.get(booking=other)
    response = staff.post(url, {"action": "mark_resolved", "_selected_action": [finding.pk]}, follow=True)
    assert "1 finding(s) marked resolved" in response.content.decode()
    finding.refresh_from_db()
    assert finding.resolved_by == "boss"
    assert StaffAction.objects.filter(verb="resolve", object_id=str(finding.pk)).exists()
    assert StaffAction.objects.filter(verb="recheck", object_id=str(booking.pk)).exists()


def test_ops_may_work_the_findings(login: Callable[[str], Client]) -> None:
    ops = login("ops")
    assert ops.get(reverse("admin:emsp_bookingcheck_changelist")).status_code == 200
    assert ops.get(reverse("admin:emsp_booking_changelist")).status_code == 200
    assert ops.user.has_perm("emsp.recheck_bookingcheck")  # type: ignore[attr-defined]
