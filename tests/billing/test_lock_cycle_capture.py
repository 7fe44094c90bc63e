"""A CDR's processing and a capture making a page for the rest of a bill, at the same moment, on PostgreSQL (each
interleaving forced). The capture holds the charge payment's row (`_execute`, across its `book`) and inserts the
`balance` payment, whose foreign key checks its booking FOR KEY SHARE; the CDR's processing locks the booking
(`charge_locked`, or `_session_made` for a CDR whose session it makes) and then bills the charge payment, waiting
for its row. The booking taken FOR UPDATE held the insert up: each waited for the other, and PostgreSQL failed one
("deadlock detected"). Taken FOR NO KEY UPDATE, as an update of the booking takes it, the insert goes through and
commits, and the CDR then bills the charge payment."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from billing.models import Cdr, Payment
from billing.payments.gateway import Checkout
from billing.services import audit, payments, records
from billing.services.audit import cdr_process
from billing.services.records import cdr_store
from emsp.models import Booking, ChargingSession, Partner
from emsp.services.sessions import session_put
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm
from tests.beckn.test_payments_journey import start
from tests.billing.provider_standin import Fake
from tests.billing.provider_standin import fake as fake
from tests.billing.test_cdr_booking_links import authorised_charge, cdr_of, session_of
from tests.races import Holds, at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.we_collect,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks and their deadlocks need PostgreSQL"),
]

REST = 5000  # what the capture's page asks (minor units): the rest of a bill above its hold


def _nothing_queued(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tasks the commits queue (the CDR's processing, the capture, a page's checkout) are left for a worker."""
    for module in (records, audit, payments):
        monkeypatch.setattr(module, "run_after_commit", lambda *a, **k: None)


@pytest.fixture
def booking(bap: Any, network: Partner, fake: Fake, settings: Any) -> Booking:  # noqa: F811
    """An order whose charge payment is authorised at the provider, its charge started."""
    settings.PAYMENT_GATEWAYS = {"*": "fake"}
    fake.checkout = lambda **kw: Checkout(checkout_id="cs_1", url="https://pay.example/cs_1")  # type: ignore[method-assign]
    authorised_charge(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    return Booking.objects.get(order_id=order_id)


def _capture_makes_a_page(charge: Payment) -> Callable[[], None]:
    """The capture's transaction as `payment_capture` runs it: the charge payment's row locked (`_execute`), then
    the page for the rest above the hold inserted (`book`: `_balance_payment`), referring to the booking."""

    def run() -> None:
        with transaction.atomic():
            locked = Payment.objects.select_for_update().get(pk=charge.pk)
            payments._balance_payment(locked, "rest", REST)

    return run


def _race(
    monkeypatch: pytest.MonkeyPatch, where: str, process: Callable[[], Any], charge: Payment
) -> tuple[list[BaseException], dict[str, bool], Holds]:
    """`process` (a CDR's processing) held right after `audit.<where>` has locked the booking, until the capture's
    transaction has ended or waits on a lock; the capture starts once the booking is locked. What each raised, and
    whether the page was made while the processing held the booking."""
    holds, locked, made = Holds(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}
    real = getattr(audit, where)

    def held(*args: Any) -> Any:
        result = real(*args)
        if not locked.is_set():
            locked.set()
            holds.until_the_other_moves(made)
            seen["made_while_held"] = made.is_set()
        return result

    monkeypatch.setattr(audit, where, held)

    def capture() -> None:
        assert locked.wait(20)
        try:
            _capture_makes_a_page(charge)()
        finally:
            made.set()

    return at_once(process, capture), seen, holds


def test_a_capture_making_a_page_goes_through_while_a_cdr_of_its_booking_is_processed(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    booking: Booking,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CDR names its session, tied to the booking: `charge_locked` locks the booking. Before, the capture's
    insert waited for the booking while holding the charge payment, which the CDR's bill then waited for."""
    charge = Payment.objects.get(booking=booking, purpose="charge")
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    assert ChargingSession.objects.get(session_id="S-1").booking_id == booking.pk
    _nothing_queued(monkeypatch)
    cdr_store(network, cdr_of(booking, "CDR-1", session_id="S-1"))
    cdr = Cdr.objects.get(cdr_id="CDR-1")
    assert cdr.processed_at is None

    failures, seen, holds = _race(monkeypatch, "charge_locked", lambda: cdr_process(cdr.pk), charge)

    assert not failures, failures  # "deadlock detected"
    assert holds.given_up == 0
    assert seen == {"made_while_held": True}  # not held up by the booking's lock
    cdr.refresh_from_db()
    charge.refresh_from_db()
    assert cdr.processed_at is not None
    assert charge.billed_minor == 46327  # billed after the capture's transaction committed
    page = Payment.objects.get(booking=booking, purpose="balance")
    assert page.billed_minor == REST


@pytest.mark.parametrize("session_id", ["S-1", ""], ids=["named", "unnamed"])
def test_a_capture_making_a_page_goes_through_while_a_cdr_makes_the_session_of_its_booking(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    booking: Booking,
    monkeypatch: pytest.MonkeyPatch,
    session_id: str,
) -> None:
    """No session reported (the CPO has no Sessions module): past its grace the CDR makes one for the booking,
    `_session_made` locking the start and the booking first. Held in `session_from_cdr`, the booking locked."""
    charge = Payment.objects.get(booking=booking, purpose="charge")
    _nothing_queued(monkeypatch)
    cdr_store(network, cdr_of(booking, "CDR-1", session_id=session_id))
    cdr = Cdr.objects.get(cdr_id="CDR-1")
    later = timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3)

    failures, seen, holds = _race(monkeypatch, "session_from_cdr", lambda: cdr_process(cdr.pk, now=later), charge)

    assert not failures, failures  # "deadlock detected"
    assert holds.given_up == 0
    assert seen == {"made_while_held": True}
    cdr.refresh_from_db()
    charge.refresh_from_db()
    assert cdr.processed_at is not None
    assert ChargingSession.objects.get(booking=booking).pk == cdr.charging_session_id
    assert charge.billed_minor == 46327
    assert Payment.objects.get(booking=booking, purpose="balance").billed_minor == REST
