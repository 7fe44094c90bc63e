"""The eMSP domain's tables: partners (partners.py), their catalogue (catalogue.py), our drivers and tokens
(drivers.py), reservations, bookings, charging sessions and commands (charging.py), the outbox's rows
(deliveries.py), reconciliation's findings on bookings (booking_checks.py), circuit breakers per partner and
module (breakers.py), the audit trail of staff actions (staff.py) and the beat's heartbeat (ops.py).

OCPI objects are kept whole in `data` (as normalised on the way in) next to indexed columns used by queries.
CiString ids (OCPI types §16.3) are stored as received; the `*_key` columns hold the upper-cased form that
uniqueness and lookups use, so `loc1` and `LOC1` are the same object (keys.py).
"""

from __future__ import annotations

from emsp.models.booking_checks import BookingCheck
from emsp.models.breakers import BreakerChange, CircuitBreaker
from emsp.models.catalogue import Connector, Evse, EvseQuerySet, Location, LocationQuerySet, WatchedEvse
from emsp.models.charging import Booking, ChargingSession, Command, Reservation
from emsp.models.deliveries import Delivery, DeliveryAttempt
from emsp.models.drivers import Driver, Token, TokenQuerySet
from emsp.models.keys import ci_key, hash_token, new_credentials_token, new_reservation_id
from emsp.models.ops import BeatHeartbeat
from emsp.models.partners import Partner, PartnerParty, PartnerQuerySet
from emsp.models.staff import StaffAction

__all__ = [
    "BeatHeartbeat",
    "Booking",
    "BookingCheck",
    "BreakerChange",
    "ChargingSession",
    "CircuitBreaker",
    "Command",
    "Connector",
    "Delivery",
    "DeliveryAttempt",
    "Driver",
    "Evse",
    "EvseQuerySet",
    "Location",
    "LocationQuerySet",
    "Partner",
    "PartnerParty",
    "PartnerQuerySet",
    "Reservation",
    "StaffAction",
    "Token",
    "TokenQuerySet",
    "WatchedEvse",
    "ci_key",
    "hash_token",
    "new_credentials_token",
    "new_reservation_id",
]
