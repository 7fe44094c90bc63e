"""What happened in the domain, said in the domain's words, for whoever must react: the bookings workflow
(a CPO's side moves bookings on) and, above the domain, the consumer protocol (Beckn tells the driver's app).

A plain, explicit registry: handlers are subscribed at start-up in an `AppConfig.ready()` and run in order,
synchronously, inside the publisher's transaction (so a handler that writes an outbox row commits or rolls
back with the change that caused it). Work with I/O is the handler's to defer (`transaction.on_commit`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from emsp.models import Booking, Command, Reservation

E = TypeVar("E")
Handler = Callable[[Any], None]

_handlers: dict[type, list[Handler]] = defaultdict(list)


def subscribe(event_type: type[E], handler: Callable[[E], None]) -> None:
    """Call `handler(event)` for every published event of `event_type` (once, however often subscribed)."""
    if handler not in _handlers[event_type]:
        _handlers[event_type].append(handler)


def publish(event: object) -> None:
    for handler in list(_handlers.get(type(event), ())):
        handler(event)


def subscribers(event_type: type) -> list[Handler]:
    """The handlers of one event type, in call order (for the architecture tests and the docs)."""
    return list(_handlers.get(event_type, ()))


# --- facts from the CPO's side ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EvseStatusChanged:
    """An EVSE's status changed (a push, a pull or a live check)."""

    evse_id: int
    old_status: str
    new_status: str


@dataclass(frozen=True)
class ReservationCancelledByCpo:
    """The CPO cancelled a reservation it had accepted (mod_commands CommandResult CANCELED_RESERVATION)."""

    reservation: Reservation


@dataclass(frozen=True)
class CommandFinished:
    """A command to a charger reached a final state: succeeded, refused or failed, or TIMEOUT."""

    command: Command


# --- what a driver's booking went through -----------------------------------------------------------------


@dataclass(frozen=True)
class BookingSessionChanged:
    """The charging session of a booking changed status (pending, active, completed, ...)."""

    booking: Booking


@dataclass(frozen=True)
class BookingCancelledByProvider:
    """A booking ended on the operator's side before charging: the charger failed, the CPO refused or
    cancelled the reservation, or the driver did not come (code "no-show"; the booking is then EXPIRED)."""

    booking: Booking
    reason: str
    code: str = "charger-error"


@dataclass(frozen=True)
class BookingSettled:
    """The CDR of a booking's charge was audited and the driver's receipt made: the final bill is known."""

    booking: Booking


@dataclass(frozen=True)
class BookingCancelled:
    """A booking was cancelled, by the driver's app, staff or the CPO's side: its payment hold is released."""

    booking: Booking


@dataclass(frozen=True)
class BookingPaymentChanged:
    """The money of a booking moved: authorised, captured, refunded, failed, or paid to the app. Published by
    billing; the driver's app hears it (Beckn on_update)."""

    booking: Booking
    status: str
