"""Races in the Beckn order lifecycle, on PostgreSQL (a review's scratch test, each interleaving forced): two inits
of a journey at once make one driver, one payment and one page; an init a confirm of its journey overtakes is
refused, not a second payment; two ratings of an order at once keep one; and a driver's cancel at the moment the
CPO puts the session, or the beat reserves the charger, takes the booking before its reservation as they do, not
the other way round (PostgreSQL had broken the deadlock by failing one of the two)."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone

from beckn import handlers, tasks
from beckn.models import BecknCallback, BecknMessage, BecknRating
from billing.models import Payment
from billing.payments.gateway import Checkout
from emsp.models import Booking, ChargingSession, Command, Driver, Evse, Partner, Reservation
from emsp.services import bookings, commands, drivers, sessions
from tests.beckn.bap import BAP_URI, CPO_BASE
from tests.beckn.test_actions import confirm, init, item_of, select
from tests.beckn.test_update_crash_safety import START, charging, ordered, update_body
from tests.billing import provider_standin as standin
from tests.factories import TokenFactory
from tests.fakes import FakePeer
from tests.races import Holds, at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row and advisory locks need PostgreSQL"),
]

INIT = {"order": {"provider": {"id": "IN*CPA"},
                  "billing": {"name": "Asha", "email": "asha@example.com", "phone": "+919845000000"}}}  # fmt: skip
CONFIRM = {"order": {"provider": {"id": "IN*CPA"}, "payments": [{"status": "NOT-PAID"}]}}


class CheckoutStandin(standin.Fake):
    """A provider with hosted pages: each checkout a new page."""

    counter = itertools.count(1)

    def checkout(self, **kw: Any) -> Checkout:
        self.calls.append(("checkout", kw))
        n = next(self.counter)
        return Checkout(checkout_id=f"cs_{n}", url=f"https://pay.example/cs_{n}")


@pytest.fixture
def gateway(settings: Any) -> CheckoutStandin:
    standin.FAKE = CheckoutStandin()
    settings.PAYMENT_PROVIDERS = {**settings.PAYMENT_PROVIDERS, "fake": {"adapter": f"{standin.__name__}.fake_gateway"}}
    settings.PAYMENT_GATEWAYS = {"INR": "fake", "*": "fake"}
    return standin.FAKE


# --- forcing an interleaving --------------------------------------------------------------------------------

# Another connection to this test database waiting for a lock (a row's, an advisory one). The statistics snapshot is
# cleared first: read in a transaction, pg_stat_activity is otherwise the one of its first reading.


class Meeting(Holds):
    """Two threads meet here: the first waits for the second's arrival, or for the second to wait on its locks."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = 0
        self.both = threading.Event()
        self.lock = threading.Lock()

    def arrive(self) -> None:
        with self.lock:
            self.arrived += 1
            if self.arrived >= 2:
                self.both.set()
        self.until_the_other_moves(self.both)


def body(bap: Any, action: str, message: dict[str, Any], **context: Any) -> str:
    context = bap.bap.context(action, message_id=str(uuid.uuid4()), **context)
    return orjson.dumps({"context": context, "message": message}).decode()


def handle(action: str, raw: str, done: threading.Event | None = None) -> Callable[[], None]:
    def run() -> None:
        try:
            handlers.handle(action, raw, callback_url=BAP_URI)
        finally:
            if done is not None:
                done.set()

    return run


def answers(action: str) -> list[dict[str, Any]]:
    return [orjson.loads(c.body) for c in BecknCallback.objects.filter(action=action).order_by("pk")]


def failed_requests() -> list[str]:
    return list(BecknMessage.objects.filter(status=BecknMessage.Status.FAILED).values_list("error", flat=True))


# --- 1. two inits of a journey ------------------------------------------------------------------------------


@pytest.mark.we_collect
def test_two_inits_at_once_make_one_driver_one_payment_and_one_page(
    bap: Any, gateway: CheckoutStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's retry under a new message_id: each had found no driver, opened one, and a payment and page for it."""
    select(bap, item_of(bap))
    meeting = Meeting()
    token_of = drivers.driver_app_token

    def met(*args: Any, **kw: Any) -> Any:  # each init has its driver: it waits here for the other
        meeting.arrive()
        return token_of(*args, **kw)

    monkeypatch.setattr(drivers, "driver_app_token", met)
    assert not at_once(*(handle("init", body(bap, "init", INIT)) for _ in range(2)))

    assert meeting.given_up == 0
    assert not failed_requests()
    offered = [a["message"]["order"]["payments"][0] for a in answers("on_init")]
    assert len(offered) == 2 and len({p["url"] for p in offered}) == 1
    assert Driver.objects.filter(email="asha@example.com").count() == 1
    assert Payment.objects.filter(journey__endswith=bap.bap.transaction_id).count() == 1
    assert [name for name, _ in gateway.calls].count("checkout") == 1


def test_a_new_drivers_inits_in_two_journeys_at_once_open_one_account(
    bap: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two journeys (no lock of one journey serialises them): the account is looked for again under a lock of its
    contact details."""
    item = item_of(bap)
    journeys = [str(uuid.uuid4()), str(uuid.uuid4())]
    for journey in journeys:
        order = {"provider": {"id": "IN*CPA"}, "items": [{"id": item}]}
        bap("select", {"order": order}, transaction_id=journey)
    assert len([a for a in answers("on_select") if "error" not in a]) == 2
    meeting = Meeting()
    token_of = drivers.driver_app_token

    def met(*args: Any, **kw: Any) -> Any:
        meeting.arrive()
        return token_of(*args, **kw)

    monkeypatch.setattr(drivers, "driver_app_token", met)
    assert not at_once(*(handle("init", body(bap, "init", INIT, transaction_id=j)) for j in journeys))

    assert meeting.given_up == 0
    assert not failed_requests()
    assert all("error" not in a for a in answers("on_init"))
    assert Driver.objects.filter(email="asha@example.com").count() == 1


# --- 2. an init overtaken by a confirm ----------------------------------------------------------------------


@pytest.mark.we_collect
def test_an_init_overtaken_by_a_confirm_of_its_journey_is_refused_not_a_second_payment(
    bap: Any, gateway: CheckoutStandin, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The init read its journey before the confirm committed, and goes on after: it sees the order, under the
    journey's lock, where it had opened a payment bound to nothing and answered a new page after on_confirm."""
    select(bap, item_of(bap))
    init(bap)
    confirm_body, init_body = body(bap, "confirm", CONFIRM), body(bap, "init", INIT)
    received, confirmed = threading.Event(), threading.Event()
    on_init = handlers.HANDLERS["init"]

    def late(envelope: Any, txn: Any) -> Any:  # the init recorded, its journey read: now the confirm commits
        received.set()
        assert confirmed.wait(20)
        return on_init(envelope, txn)

    monkeypatch.setitem(handlers.HANDLERS, "init", late)

    def confirm_then() -> None:
        assert received.wait(20)
        handle("confirm", confirm_body, done=confirmed)()

    assert not at_once(handle("init", init_body), confirm_then)

    assert not failed_requests()
    assert "error" not in answers("on_confirm")[-1]
    late_init = answers("on_init")[-1]
    assert late_init.get("error", {}).get("code") == "40000", late_init
    assert "is confirmed in this transaction" in late_init["error"]["message"]
    journey = Payment.objects.filter(journey__endswith=bap.bap.transaction_id)
    assert journey.count() == 1 and journey.get().booking_id == Booking.objects.get().pk
    assert [name for name, _ in gateway.calls].count("checkout") == 1


# --- 4. two ratings of an order -----------------------------------------------------------------------------


def test_two_ratings_of_one_order_at_once_keep_one(bap: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each had deleted the earlier ratings (none) before the other stored its own: both were kept."""
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    ratings = [body(bap, "rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": v}]})
               for v in ("1", "5")]  # fmt: skip
    meeting = Meeting()
    manager = BecknRating.objects
    stored = manager.bulk_create

    def met(*args: Any, **kw: Any) -> Any:  # the earlier ratings deleted: each waits here for the other
        meeting.arrive()
        return stored(*args, **kw)

    monkeypatch.setattr(manager, "bulk_create", met)
    assert not at_once(*(handle("rating", r) for r in ratings))

    assert meeting.given_up == 0
    assert not failed_requests()
    assert all("error" not in a for a in answers("on_rating"))
    assert BecknRating.objects.filter(ref_id=order_id).count() == 1


# --- 3. one lock order: the booking, then its reservation ---------------------------------------------------


def test_a_cancel_as_the_cpo_puts_the_session_of_a_start_it_refused_does_not_deadlock(
    bap: Any, peer: FakePeer, network: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session (of a start whose answer was a 502, carried out after all) fulfilled the reservation, then moved
    the booking; the driver's cancel, between the two, locked the booking and waited for the reservation."""
    booking = ordered(bap)
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", (502, b"<html>bad gateway</html>"))
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    holds, fulfilled, cancelled = Holds(), threading.Event(), threading.Event()
    update = QuerySet.update

    def held_after_fulfilling(self: QuerySet, **kw: Any) -> int:
        done = update(self, **kw)
        if self.model is Reservation and kw.get("status") == Reservation.Status.FULFILLED and done:
            fulfilled.set()  # the driver's cancel comes in that moment
            holds.until_the_other_moves(cancelled)
        return done

    monkeypatch.setattr(QuerySet, "update", held_after_fulfilling)
    cancel = body(bap, "cancel", {"order_id": booking.order_id, "cancellation_reason_id": "changed-my-mind"})

    def cancel_then() -> None:
        assert fulfilled.wait(20)
        handle("cancel", cancel, done=cancelled)()

    failures = at_once(cancel_then, lambda: charging(network, booking))

    assert not failures and not failed_requests(), (failures, failed_requests())  # "deadlock detected"
    assert holds.given_up == 0
    booking.refresh_from_db()
    # The session first: charging, then the cancel is a stop of it.
    assert booking.state == Booking.State.STOPPING
    assert booking.reservation.status == Reservation.Status.FULFILLED
    assert Command.objects.filter(booking=booking, type=Command.Type.STOP_SESSION).count() == 1
    assert "error" not in answers("on_cancel")[-1]


def test_a_cancel_as_the_cpo_puts_the_session_it_reported_pending_does_not_deadlock(
    bap: Any, network: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's PUT held its row locked in a mode the cancel's STOP_SESSION, which refers to the session, waited
    for under the booking's lock, while the PUT went on to the booking."""
    booking = ordered(bap)
    with bap.capture(execute=True):
        tasks.handle_request.apply(("update", update_body(bap, booking, START)))
    start = Command.objects.get(booking=booking, type=Command.Type.START_SESSION)
    assert start.status == Command.Status.ACCEPTED and start.reservation_id == booking.reservation_id
    reported(network, booking, start, ChargingSession.Status.PENDING)  # plugged in: linked, still STARTING
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING
    holds, stored, cancelled = Holds(), threading.Event(), threading.Event()
    after_save = sessions._after_save

    def held_before_the_booking(change: Any, **kw: Any) -> None:  # the session stored, its booking next
        stored.set()
        holds.until_the_other_moves(cancelled)
        after_save(change, **kw)

    monkeypatch.setattr(sessions, "_after_save", held_before_the_booking)
    cancel = body(bap, "cancel", {"order_id": booking.order_id})

    def cancel_then() -> None:
        assert stored.wait(20)
        handle("cancel", cancel, done=cancelled)()

    failures = at_once(cancel_then, lambda: reported(network, booking, start, ChargingSession.Status.ACTIVE))

    assert not failures and not failed_requests(), (failures, failed_requests())
    assert holds.given_up == 0
    booking.refresh_from_db()
    assert booking.state == Booking.State.STOPPING  # the cancel first: a stop, which the session leaves as it is
    assert booking.reservation.status == Reservation.Status.FULFILLED
    assert Command.objects.filter(booking=booking, type=Command.Type.STOP_SESSION).count() == 1


def reported(network: Partner, booking: Booking, start: Command, status: str) -> None:
    """The CPO's PUT of the session its START_SESSION began, in `status`."""
    stamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    sessions.session_put(
        network,
        {
            "country_code": "IN", "party_id": "CPA", "id": "S-1", "start_date_time": stamp, "kwh": 0,
            "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                          "contract_id": booking.token.contract_id},
            "auth_method": "COMMAND", "authorization_reference": start.authorization_reference,
            "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
            "currency": "INR", "status": status, "last_updated": stamp,
        },
    )  # fmt: skip


def test_a_cancel_as_the_beat_reserves_the_charger_does_not_deadlock(bap: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The beat's RESERVE_NOW of a window booked ahead claimed the reservation, then referred to the booking; the
    driver's cancel, between the two, locked the booking and waited for the reservation."""
    evse = Evse.objects.filter(location__location_id="NEAR").order_by("uid").first()
    start = timezone.now() + timedelta(hours=3)
    booking = bookings.booking_confirm(evse=evse, connector_id="1", token=TokenFactory(), window=(start, start + HOUR))
    Reservation.objects.filter(pk=booking.reservation_id).update(reserve_at=timezone.now() - timedelta(seconds=1))
    holds, claimed, cancelled = Holds(), threading.Event(), threading.Event()
    reserve_now = commands.command_reserve_now

    def held_before_the_command(**kw: Any) -> Command:  # the reservation claimed, the booking's command next
        claimed.set()
        holds.until_the_other_moves(cancelled)
        return reserve_now(**kw)

    monkeypatch.setattr(commands, "command_reserve_now", held_before_the_command)
    sent: list[int] = []

    def cancel_then() -> None:
        assert claimed.wait(20)
        try:
            bookings.booking_cancel(Booking.objects.get(pk=booking.pk), reason="changed my mind")
        finally:
            cancelled.set()

    failures = at_once(cancel_then, lambda: sent.append(bookings.reservations_send_due()))

    assert not failures, failures  # "deadlock detected"
    assert holds.given_up == 0
    assert sent == [1]
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert booking.reservation.status == Reservation.Status.CANCELLED


HOUR = timedelta(hours=1)
