"""What else happens when the domain changes: the one place where the domain hands events to the billing
engine and to the consumer-facing protocol (Beckn). Each hook runs inside the caller's transaction; work
with I/O is deferred to Celery with `transaction.on_commit`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

if TYPE_CHECKING:
    from billing.models import Cdr
    from emsp.models import ChargingSession, Command, Reservation


def session_changed(session: ChargingSession, old_status: str | None) -> None:
    """A CPO created or changed a session: it moves its booking on."""
    from emsp.services import bookings

    bookings.on_session_changed(session)


def command_finished(command: Command) -> None:
    """A command reached a final state (result, refusal or TIMEOUT)."""


def reservation_cancelled_by_cpo(reservation: Reservation | None) -> None:
    """The CPO cancelled a reservation it had accepted."""


def evse_status_changed(evse_id: int, old_status: str, new_status: str) -> None:
    """An EVSE's status changed (push or pull)."""


def cdr_received(cdr: Cdr) -> None:
    """A new CDR was stored: audit it against our tariff engine and make the driver's receipt."""
    from billing.tasks import process_cdr

    cdr_id = cdr.pk
    transaction.on_commit(lambda: process_cdr.delay(cdr_id))
