"""A charge from booking to session: reservations (holds on an EVSE), bookings, the CPO's charging
sessions, and the commands we send to chargers."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.db.models.functions import Upper
from django.utils import timezone

from emsp.models.catalogue import Evse, Location
from emsp.models.drivers import Driver, Token
from emsp.models.keys import new_reservation_id
from emsp.models.partners import Partner


class Reservation(models.Model):
    """A hold on one EVSE for a time window. On PostgreSQL an exclusion constraint makes two active
    reservations overlapping on one EVSE impossible (migration emsp 0002)."""

    class Status(models.TextChoices):
        HELD = "HELD", "Held by us (not reserved at the CPO, or not yet)"
        REQUESTED = "REQUESTED", "RESERVE_NOW sent"
        RESERVED = "RESERVED", "Reserved at the CPO"
        FULFILLED = "FULFILLED", "A session started"
        CANCELLED = "CANCELLED"
        EXPIRED = "EXPIRED"
        FAILED = "FAILED", "The CPO refused or did not answer"

    ACTIVE_STATUSES = (Status.HELD, Status.REQUESTED, Status.RESERVED)

    reservation_id = models.CharField(max_length=36, unique=True, default=new_reservation_id)
    evse = models.ForeignKey(Evse, on_delete=models.PROTECT, related_name="reservations")
    connector_id = models.CharField(max_length=36, blank=True)
    token = models.ForeignKey(Token, on_delete=models.PROTECT, related_name="reservations")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.HELD, db_index=True)
    start_at = models.DateTimeField()
    expiry_at = models.DateTimeField()
    reserve_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When RESERVE_NOW is due at the CPO (a window booked ahead is reserved shortly before it "
        "opens, as far ahead as CPOs accept); empty once sent, or when the EVSE is not reservable.",
    )
    arrive_by = models.DateTimeField(
        null=True, blank=True, help_text="A booking with no charge started by then is a no-show (its hold ends)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            # The beat's sweeps: reservations due at the CPO, and holds whose driver did not come.
            models.Index(fields=["reserve_at"], name="reservation_reserve_at", condition=Q(reserve_at__isnull=False)),
            models.Index(
                fields=["arrive_by"],
                name="reservation_arrive_by",
                condition=Q(status__in=["HELD", "REQUESTED", "RESERVED"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(expiry_at__gt=models.F("start_at")), name="reservation_window"),
        ]

    def __str__(self) -> str:
        return f"{self.reservation_id} on {self.evse}"


class ChargingSession(models.Model):
    """An OCPI Session as the CPO reports it (mod_sessions), linked to our token, command and reservation."""

    class Status(models.TextChoices):
        ACTIVE = "ACTIVE"
        COMPLETED = "COMPLETED"
        INVALID = "INVALID"
        PENDING = "PENDING"
        RESERVATION = "RESERVATION"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="sessions")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    session_id = models.CharField(max_length=36)
    ocpi_key = models.CharField(max_length=48)  # unique: Meta
    status = models.CharField(max_length=12, choices=Status.choices)  # indexed: Meta
    start_date_time = models.DateTimeField()
    end_date_time = models.DateTimeField(null=True, blank=True)
    kwh = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))
    currency = models.CharField(max_length=3)
    total_cost_excl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    total_cost_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    ocpi_location_id = models.CharField(max_length=39, help_text="location_id as the CPO sent it")
    evse_uid = models.CharField(max_length=39)
    connector_id = models.CharField(max_length=36)
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.SET_NULL)
    evse = models.ForeignKey(Evse, null=True, blank=True, on_delete=models.SET_NULL)
    token_uid = models.CharField(max_length=36)
    token = models.ForeignKey(Token, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    auth_method = models.CharField(max_length=16)
    authorization_reference = models.CharField(max_length=36, blank=True)  # indexed: Meta
    reservation = models.ForeignKey(Reservation, null=True, blank=True, on_delete=models.SET_NULL)
    booking = models.ForeignKey("Booking", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    last_updated = models.DateTimeField()  # the CPO's; retention ages a session by `received_at` (ours)
    data = models.JSONField(help_text="The OCPI Session, including its charging periods.")
    received_at = models.DateTimeField(default=timezone.now)  # when we last stored a change of it (our clock)

    class Meta:
        # Each PATCH of a session writes an entry in every index (emsp/0024): these, the foreign keys' and the
        # `received_at` one (retention, emsp/0027: it took the place of `last_updated`'s) are all a session has.
        # Declared here rather than with unique=True and db_index=True, which on PostgreSQL add a LIKE index
        # beside each that nothing reads.
        constraints = [models.UniqueConstraint(fields=["ocpi_key"], name="emsp_chargingsession_ocpi_key_key")]
        indexes = [
            models.Index(fields=["status"], name="session_status"),
            models.Index(fields=["authorization_reference"], name="session_authorization_ref"),
            models.Index(fields=["received_at"], name="session_received"),
        ]

    def __str__(self) -> str:
        return f"{self.session_id} ({self.status})"


class Command(models.Model):
    """One OCPI command we sent (mod_commands): its request, the CPO's CommandResponse and CommandResult."""

    class Type(models.TextChoices):
        CANCEL_RESERVATION = "CANCEL_RESERVATION"
        RESERVE_NOW = "RESERVE_NOW"
        START_SESSION = "START_SESSION"
        STOP_SESSION = "STOP_SESSION"
        UNLOCK_CONNECTOR = "UNLOCK_CONNECTOR"

    class Status(models.TextChoices):
        QUEUED = "QUEUED", "Not sent yet"
        SENT = "SENT", "Waiting for the CommandResponse"
        ACCEPTED = "ACCEPTED", "Accepted, waiting for the CommandResult"
        SUCCEEDED = "SUCCEEDED", "CommandResult ACCEPTED"
        FAILED = "FAILED", "Refused, failed or unreachable"
        TIMEOUT = "TIMEOUT", "No CommandResult within the CPO's timeout"

    FINAL_STATUSES = (Status.SUCCEEDED, Status.FAILED, Status.TIMEOUT)

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="Our id for the CPO's answers.")
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="commands")
    type = models.CharField(max_length=20, choices=Type.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    connector_id = models.CharField(max_length=36, blank=True, help_text="START_SESSION / UNLOCK_CONNECTOR")
    request = models.JSONField(default=dict, help_text="The request as sent to the CPO")
    response = models.JSONField(null=True, blank=True, help_text="CommandResponse")
    response_result = models.CharField(max_length=20, blank=True)
    result = models.JSONField(null=True, blank=True, help_text="CommandResult")
    result_type = models.CharField(max_length=24, blank=True)
    error = models.TextField(blank=True)
    timeout_at = models.DateTimeField(null=True, blank=True)
    # Looked up case-insensitively (a CiString the CPO's Session and CDR repeat): indexed upper-cased, Meta.
    authorization_reference = models.CharField(max_length=36, blank=True)
    token = models.ForeignKey(Token, null=True, blank=True, on_delete=models.SET_NULL)
    evse = models.ForeignKey(Evse, null=True, blank=True, on_delete=models.SET_NULL)
    reservation = models.ForeignKey(Reservation, null=True, blank=True, on_delete=models.SET_NULL)
    session = models.ForeignKey(ChargingSession, null=True, blank=True, on_delete=models.SET_NULL)
    booking = models.ForeignKey("Booking", null=True, blank=True, on_delete=models.SET_NULL, related_name="commands")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(Upper("authorization_reference"), name="command_reference_ci")]

    def __str__(self) -> str:
        return f"{self.type} {self.uid} ({self.status})"


class Booking(models.Model):
    """A driver's booked charge at one connector — what a Beckn order is in the domain. It holds the EVSE
    (a Reservation row: a CPO reservation where the EVSE is RESERVABLE, else our own hold), then the
    START/STOP commands and the resulting session."""

    class State(models.TextChoices):
        CONFIRMED = "CONFIRMED", "Booked"
        STARTING = "STARTING", "Start requested"
        CHARGING = "CHARGING", "Charging"
        STOPPING = "STOPPING", "Stop requested"
        COMPLETED = "COMPLETED", "Finished, waiting for the CDR"
        SETTLED = "SETTLED", "CDR received and billed"
        CANCELLED = "CANCELLED", "Cancelled"
        EXPIRED = "EXPIRED", "No-show: the hold ended without a charge"
        FAILED = "FAILED", "Failed"

    ACTIVE_STATES = (State.CONFIRMED, State.STARTING, State.CHARGING, State.STOPPING)

    order_id = models.CharField(max_length=40, unique=True)
    driver = models.ForeignKey(Driver, null=True, blank=True, on_delete=models.SET_NULL, related_name="bookings")
    token = models.ForeignKey(Token, null=True, blank=True, on_delete=models.SET_NULL, related_name="bookings")
    evse = models.ForeignKey(Evse, on_delete=models.PROTECT, related_name="bookings")
    connector_id = models.CharField(max_length=36)
    quote = models.ForeignKey(
        "billing.Quote", null=True, blank=True, on_delete=models.SET_NULL, related_name="bookings"
    )
    reservation = models.ForeignKey(
        Reservation, null=True, blank=True, on_delete=models.SET_NULL, related_name="bookings"
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.CONFIRMED, db_index=True)
    payment_status = models.CharField(max_length=10, default="NOT-PAID")
    payment_reference = models.CharField(max_length=100, blank=True)
    cancellation_reason = models.CharField(max_length=200, blank=True)
    # The consumer app that ordered it and its journey there (Beckn bap_id and context.transaction_id; empty
    # for a booking made outside Beckn): the app finds its order here for good, also after it confirmed another
    # order in the same journey (one journey may hold several orders, one after the other).
    app_id = models.CharField(max_length=255, blank=True, help_text="The consumer app (Beckn bap_id) that ordered it.")
    app_transaction_id = models.CharField(
        max_length=255, blank=True, help_text="The app's journey it was ordered in (Beckn transaction_id)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["app_id", "app_transaction_id"], name="booking_app_journey")]

    def __str__(self) -> str:
        return f"{self.order_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES
