"""One lock order, the booking before its reservation, in the commands' outcomes and the booking checks, on
PostgreSQL (each interleaving forced): a RESERVE_NOW's result, refusal or unknown outcome, and the CPO's cancel of
a reservation, arriving as the driver cancels (or the no-show sweep ends the booking), had updated the reservation
and then locked the booking, while the other held the booking and waited for the reservation; and the booking
checks' link of a session, under the booking's lock, had waited for the session the CPO's PUT held while that PUT
waited for the booking. PostgreSQL broke each deadlock by failing one of the two ("deadlock detected")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from emsp.models import Booking, ChargingSession, Command, Evse, Partner, Reservation
from emsp.services import booking_checks, bookings, commands, sessions
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer, envelope
from tests.races import Holds, at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks and their deadlocks need PostgreSQL"),
]

COMMANDS_URL = "http://127.0.0.1:9/ocpi/cpo/2.2.1/commands"
ACCEPTED = (200, envelope({"result": "ACCEPTED", "timeout": 30}))
REJECTED = (200, envelope({"result": "REJECTED", "timeout": 30}))


# --- forcing an interleaving --------------------------------------------------------------------------------

# Another connection to this test database waiting for a lock. The statistics snapshot is cleared first: read in a
# transaction, pg_stat_activity is otherwise the one of its first reading.


def held_after_the_reservation(
    monkeypatch: pytest.MonkeyPatch, status: str, holds: Holds, other_done: threading.Event
) -> threading.Event:
    """The first update of a reservation to `status` holds its transaction (the reservation's row locked) until
    the other thread has ended or waits on a lock; the event returned is set at that moment."""
    updated = threading.Event()
    update = QuerySet.update

    def held(self: QuerySet, **kw: Any) -> int:
        done = update(self, **kw)
        if self.model is Reservation and kw.get("status") == status and done and not updated.is_set():
            updated.set()
            holds.until_the_other_moves(other_done)
        return done

    monkeypatch.setattr(QuerySet, "update", held)
    return updated


def after(signal: threading.Event, call: Callable[[], Any], done: threading.Event) -> Callable[[], None]:
    """`call` once `signal` is set; `done` set when it has ended."""

    def run() -> None:
        assert signal.wait(20)
        try:
            call()
        finally:
            done.set()

    return run


def only_deadlocks(failures: list[BaseException]) -> list[BaseException]:
    return [f for f in failures if not isinstance(f, bookings.BookingStateError)]


# --- the setting ----------------------------------------------------------------------------------------------


@pytest.fixture
def evse(partner: Partner) -> Evse:
    return stored_location(partner).evses.order_by("uid").first()


@pytest.fixture
def cpo(peer: FakePeer) -> FakePeer:
    for name in ("RESERVE_NOW", "CANCEL_RESERVATION", "START_SESSION", "STOP_SESSION"):
        peer.route("POST", f"{COMMANDS_URL}/{name}", ACCEPTED)
    return peer


def booked_now(evse: Evse) -> tuple[Booking, Command]:
    """A booking for now, its RESERVE_NOW accepted by the CPO and waiting for its result."""
    booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory())
    reserve = Command.objects.get(booking=booking, type=Command.Type.RESERVE_NOW)
    assert reserve.status == Command.Status.ACCEPTED
    assert Reservation.objects.get(pk=booking.reservation_id).status == Reservation.Status.REQUESTED
    return booking, reserve


def booked_ahead(evse: Evse) -> tuple[Booking, Command]:
    """A booking for a window ahead, its RESERVE_NOW about to be sent (as the beat's reservations_send_due does)."""
    start = timezone.now() + timedelta(hours=3)
    booking = bookings.booking_confirm(
        evse=evse, connector_id="1", token=TokenFactory(), window=(start, start + timedelta(hours=1))
    )
    reservation = Reservation.objects.get(pk=booking.reservation_id)
    Reservation.objects.filter(pk=reservation.pk).update(reserve_at=None)
    return booking, commands.command_reserve_now(reservation=reservation, booking=booking)


def cancel_of(booking: Booking) -> Callable[[], Any]:
    return lambda: bookings.booking_cancel(Booking.objects.get(pk=booking.pk), reason="changed my mind")


# --- 1. a command's outcome, as the driver cancels ------------------------------------------------------------


@pytest.mark.parametrize("other", ["driver's cancel", "no-show sweep"])
def test_a_refused_reservation_as_the_booking_ends_does_not_deadlock(
    cpo: FakePeer, evse: Evse, monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    """The CPO's CommandResult REJECTED marked the reservation FAILED, then locked the booking to cancel it
    (on_reservation_finished); the driver's cancel (the no-show sweep), between the two, had locked the booking and
    waited for the reservation."""
    booking, reserve = booked_now(evse)
    if other == "no-show sweep":
        Reservation.objects.filter(pk=booking.reservation_id).update(arrive_by=timezone.now() - timedelta(minutes=1))
        ending: Callable[[], Any] = bookings.bookings_expire_no_shows
    else:
        ending = cancel_of(booking)
    holds, ended = Holds(), threading.Event()
    updated = held_after_the_reservation(monkeypatch, Reservation.Status.FAILED, holds, ended)

    failures = at_once(
        lambda: commands.command_result_received(reserve, {"result": "REJECTED"}), after(updated, ending, ended)
    )

    assert not only_deadlocks(failures), failures  # "deadlock detected"
    assert holds.given_up == 0
    # The result first: the booking is cancelled on the refusal; the driver's cancel then finds it ended.
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert booking.cancellation_reason.startswith("the operator did not accept the reservation")
    assert booking.reservation.status == Reservation.Status.FAILED
    assert Command.objects.get(pk=reserve.pk).status == Command.Status.FAILED


@pytest.mark.parametrize(
    ("answer", "marked"),
    [((502, b"<html>bad gateway</html>"), Reservation.Status.REQUESTED), (REJECTED, Reservation.Status.FAILED)],
    ids=["unanswered", "refused"],
)
def test_a_reservation_sent_as_the_driver_cancels_does_not_deadlock(
    cpo: FakePeer, evse: Evse, monkeypatch: pytest.MonkeyPatch, answer: tuple[int, Any], marked: str
) -> None:
    """The send's own outcome: no CommandResponse (a 502, the CPO may have reserved: the reservation REQUESTED,
    `_finish_unanswered`) or a refusal (REJECTED: FAILED, `_finish_sent`), then the booking locked to cancel it."""
    booking, reserve = booked_ahead(evse)
    cpo.route("POST", f"{COMMANDS_URL}/RESERVE_NOW", answer)
    holds, cancelled = Holds(), threading.Event()
    updated = held_after_the_reservation(monkeypatch, marked, holds, cancelled)

    failures = at_once(lambda: commands.command_send(reserve), after(updated, cancel_of(booking), cancelled))

    assert not only_deadlocks(failures), failures  # "deadlock detected"
    assert holds.given_up == 0
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert booking.cancellation_reason.startswith("the operator did not")
    expected = Command.Status.TIMEOUT if marked == Reservation.Status.REQUESTED else Command.Status.FAILED
    assert Command.objects.get(pk=reserve.pk).status == expected


def test_the_cpos_cancel_of_a_reservation_as_the_driver_cancels_does_not_deadlock(
    cpo: FakePeer, evse: Evse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CANCELED_RESERVATION marked the reservation CANCELLED, then locked its bookings to cancel them
    (on_reservation_cancelled_by_cpo)."""
    booking, reserve = booked_now(evse)
    commands.command_result_received(reserve, {"result": "ACCEPTED"})
    assert Reservation.objects.get(pk=booking.reservation_id).status == Reservation.Status.RESERVED
    holds, cancelled = Holds(), threading.Event()
    updated = held_after_the_reservation(monkeypatch, Reservation.Status.CANCELLED, holds, cancelled)

    failures = at_once(
        lambda: commands.command_result_received(reserve, {"result": "CANCELED_RESERVATION"}),
        after(updated, cancel_of(booking), cancelled),
    )

    assert not only_deadlocks(failures), failures  # "deadlock detected"
    assert holds.given_up == 0
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert booking.cancellation_reason == "the operator cancelled the reservation"
    assert booking.reservation.status == Reservation.Status.CANCELLED


# --- 2. the booking checks link a session the CPO is putting --------------------------------------------------


def put(partner: Partner, booking: Booking, reference: str, status: str) -> None:
    """The CPO's PUT of a session of the booking's token at its EVSE, naming `reference`."""
    stamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    token = booking.token
    sessions.session_put(
        partner,
        {
            "country_code": partner.country_code, "party_id": partner.party_id, "id": "S-1",
            "start_date_time": stamp, "kwh": 0,
            "cdr_token": {"country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID,
                          "uid": token.uid, "type": token.type, "contract_id": token.contract_id},
            "auth_method": "WHITELIST", "authorization_reference": reference,
            "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
            "currency": "INR", "status": status, "last_updated": stamp,
        },
    )  # fmt: skip


def test_the_checks_linking_a_session_the_cpo_puts_do_not_deadlock(
    cpo: FakePeer, partner: Partner, evse: Evse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's card on the reservation (no START_SESSION of ours: the session names the RESERVE_NOW's
    reference, and is linked to the reservation, not the booking). The checks lock the booking and link the session;
    the CPO's PUT of it (ACTIVE) holds the session and locks the booking to fulfil the reservation."""
    booking, reserve = booked_now(evse)
    commands.command_result_received(reserve, {"result": "ACCEPTED"})
    put(partner, booking, reserve.authorization_reference, ChargingSession.Status.PENDING)
    session = ChargingSession.objects.get()
    assert session.reservation_id == booking.reservation_id and session.booking_id is None
    holds, at_link, put_done = Holds(), threading.Event(), threading.Event()
    link = booking_checks._link

    def held_before_linking(booking_id: int, session_id: int) -> str | None:  # the booking locked, the session next
        at_link.set()
        holds.until_the_other_moves(put_done)
        return link(booking_id, session_id)

    monkeypatch.setattr(booking_checks, "_link", held_before_linking)
    active = after(at_link, lambda: put(partner, booking, reserve.authorization_reference, "ACTIVE"), put_done)

    failures = at_once(lambda: booking_checks.booking_reconcile(booking=booking.pk), active)

    assert not failures, failures  # "deadlock detected"
    assert holds.given_up == 0
    session.refresh_from_db()
    assert session.status == ChargingSession.Status.ACTIVE
    assert Reservation.objects.get(pk=booking.reservation_id).status == Reservation.Status.FULFILLED
    # The CPO's change first: the check left the session to the next one, which links it and moves the booking on.
    assert session.booking_id is None
    monkeypatch.setattr(booking_checks, "_link", link)
    booking_checks.booking_reconcile(booking=booking.pk)
    session.refresh_from_db()
    assert session.booking_id == booking.pk
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CHARGING


def test_the_checks_following_a_session_the_cpo_puts_do_not_deadlock(
    cpo: FakePeer, partner: Partner, evse: Evse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`_follow` writes no session row: under the booking's lock it inserts a STOP_SESSION that refers to the
    session (a KEY SHARE lock, which the PUT's NO KEY UPDATE lock of the session lets through), while the PUT
    (COMPLETED) waits for the booking. No repair to make: this holds the order as it is."""
    booking, reserve = booked_now(evse)
    commands.command_result_received(reserve, {"result": "ACCEPTED"})
    put(partner, booking, reserve.authorization_reference, ChargingSession.Status.ACTIVE)
    booking_checks.booking_reconcile(booking=booking.pk)  # linked, CHARGING
    Booking.objects.filter(pk=booking.pk).update(state=Booking.State.STOPPING)  # the stop asked for, none sent
    session = ChargingSession.objects.get(booking=booking)
    holds, at_follow, put_done = Holds(), threading.Event(), threading.Event()
    follow = booking_checks._follow

    def held_before_following(booking_id: int, session_id: int) -> str | None:
        at_follow.set()
        holds.until_the_other_moves(put_done)
        return follow(booking_id, session_id)

    monkeypatch.setattr(booking_checks, "_follow", held_before_following)
    completed = after(at_follow, lambda: put(partner, booking, reserve.authorization_reference, "COMPLETED"), put_done)

    failures = at_once(lambda: booking_checks.booking_reconcile(booking=booking.pk), completed)

    assert not failures, failures
    assert holds.given_up == 0
    assert Command.objects.filter(session=session, type=Command.Type.STOP_SESSION).count() == 1
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.COMPLETED
