"""The eMSP domain: partners (CPOs), their catalogue (locations, EVSEs, connectors), our drivers and tokens,
reservations, charging sessions and the commands we send to chargers.

OCPI objects are kept whole in `data` (as normalised on the way in) next to indexed columns used by queries.
CiString ids (OCPI types §16.3) are stored as received; the `*_key` columns hold the upper-cased form that
uniqueness and lookups use, so `loc1` and `LOC1` are the same object.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone


def ci_key(*parts: str) -> str:
    """The case-insensitive key of an OCPI CiString id (or a `*`-joined tuple of them)."""
    return "*".join(p.strip().upper() for p in parts)


def hash_token(token: str) -> str:
    """Tokens we only verify are stored as SHA-256: they are random and long, so a fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_reservation_id() -> str:
    return str(uuid.uuid4())


def new_credentials_token() -> str:
    # OCPI credentials token: string(64) of printable non-whitespace ASCII; urlsafe base64 qualifies.
    return secrets.token_urlsafe(48)[:64]


# ---------------------------------------------------------------------------------------------
# Partners
# ---------------------------------------------------------------------------------------------


class PartnerQuerySet(models.QuerySet["Partner"]):
    def connected(self) -> PartnerQuerySet:
        return self.filter(state=Partner.State.CONNECTED)

    def due_for_sync(self, now: datetime) -> PartnerQuerySet:
        return (
            self.connected().filter(sync_enabled=True).filter(Q(next_sync_at__isnull=True) | Q(next_sync_at__lte=now))
        )


class Partner(models.Model):
    """A party we talk OCPI with: usually a CPO, sometimes a hub carrying several CPOs."""

    class Role(models.TextChoices):
        CPO = "CPO", "Charge point operator"
        HUB = "HUB", "Hub"
        OTHER = "OTHER", "Other"

    class State(models.TextChoices):
        NEW = "NEW", "New (no credentials yet)"
        TOKEN_A_ISSUED = "TOKEN_A_ISSUED", "Token A issued, waiting for the partner to register"
        CONNECTED = "CONNECTED", "Connected"
        SUSPENDED = "SUSPENDED", "Suspended"
        UNREGISTERED = "UNREGISTERED", "Unregistered"

    name = models.CharField(max_length=100)
    country_code = models.CharField(max_length=2, help_text="ISO 3166-1 alpha-2 of the partner's party.")
    party_id = models.CharField(max_length=3, help_text="The partner's OCPI party id (CiString 3).")
    role = models.CharField(max_length=8, choices=Role.choices, default=Role.CPO)
    state = models.CharField(max_length=16, choices=State.choices, default=State.NEW, db_index=True)

    # Credentials (OCPI credentials module §7). Tokens we only verify are hashed; the one we send is not,
    # because we must present it.
    token_a_hash = models.CharField(max_length=64, blank=True, db_index=True)
    incoming_token_hash = models.CharField(max_length=64, blank=True, db_index=True)
    outgoing_token = models.CharField(max_length=64, blank=True)
    outgoing_token_base64 = models.BooleanField(
        default=True,
        help_text="Send 'Authorization: Token <base64>' (OCPI 2.2.x). Untick for partners that expect the raw token.",
    )
    versions_url = models.URLField(max_length=255, blank=True)
    version = models.CharField(max_length=12, blank=True)
    endpoints = models.JSONField(default=list, blank=True, help_text="The partner's version-details endpoints.")
    credentials_roles = models.JSONField(default=list, blank=True, help_text="CredentialsRoles the partner sent.")
    registered_at = models.DateTimeField(null=True, blank=True)

    # Pull sync (OCPI transport §"Pull": the recovery path; "think in hours, not minutes").
    sync_enabled = models.BooleanField(default=True)
    sync_interval_minutes = models.PositiveIntegerField(default=60)
    full_sync_interval_hours = models.PositiveIntegerField(default=24)
    next_sync_at = models.DateTimeField(null=True, blank=True)
    last_full_sync_at = models.DateTimeField(null=True, blank=True)

    # Contacts we give drivers (Beckn support) and staff.
    support_phone = models.CharField(max_length=32, blank=True)
    support_email = models.EmailField(blank=True)
    website = models.URLField(blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = PartnerQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["country_code", "party_id"], name="partner_unique_party"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.party_key})"

    def save(self, *args: object, **kwargs: object) -> None:
        # The party is compared case-insensitively everywhere; keep the canonical upper-case form.
        self.country_code = self.country_code.strip().upper()
        self.party_id = self.party_id.strip().upper()
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    @property
    def party_key(self) -> str:
        return ci_key(self.country_code, self.party_id)

    def party_keys(self) -> set[str]:
        """Every (country_code, party_id) this partner may speak for: its own and its credentials roles."""
        keys = {self.party_key}
        for role in self.credentials_roles or []:
            if isinstance(role, dict) and role.get("country_code") and role.get("party_id"):
                keys.add(ci_key(str(role["country_code"]), str(role["party_id"])))
        return keys

    def owns(self, country_code: str, party_id: str) -> bool:
        return ci_key(country_code, party_id) in self.party_keys()

    def endpoint_url(self, identifier: str, role: str | None = None) -> str | None:
        """The URL of one of the partner's modules (from its version details), or None. With a `role`, the
        endpoint in that role, else one the partner gave without a role (OCPI 2.1.1 has no roles)."""
        endpoints = [e for e in self.endpoints or [] if e.get("identifier") == identifier]
        if role is not None:
            endpoints = [e for e in endpoints if e.get("role") == role] or [e for e in endpoints if not e.get("role")]
        for endpoint in endpoints:
            return str(endpoint.get("url") or "").rstrip("/") or None
        return None

    def issue_token_a(self) -> str:
        token = new_credentials_token()
        self.token_a_hash = hash_token(token)
        if self.state in (self.State.NEW, self.State.UNREGISTERED):
            self.state = self.State.TOKEN_A_ISSUED
        return token


# ---------------------------------------------------------------------------------------------
# Catalogue: locations, EVSEs, connectors
# ---------------------------------------------------------------------------------------------


class LocationQuerySet(models.QuerySet["Location"]):
    def visible(self) -> LocationQuerySet:
        return self.filter(withdrawn_at__isnull=True, publish=True)


class Location(models.Model):
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="locations")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    location_id = models.CharField(max_length=36)
    ocpi_key = models.CharField(max_length=48, unique=True, help_text="CC*PID*ID upper-cased.")
    name = models.CharField(max_length=255, blank=True)
    address = models.CharField(max_length=255, blank=True)
    city = models.CharField(max_length=45, blank=True)
    postal_code = models.CharField(max_length=10, blank=True)
    state = models.CharField(max_length=45, blank=True)
    country = models.CharField(max_length=3, blank=True)
    latitude = models.FloatField()
    longitude = models.FloatField()
    time_zone = models.CharField(max_length=64, default="UTC")
    publish = models.BooleanField(default=True)
    last_updated = models.DateTimeField()
    data = models.JSONField(help_text="The OCPI Location without its EVSEs.")
    withdrawn_at = models.DateTimeField(
        null=True, blank=True, help_text="Set when a full pull no longer lists the location."
    )
    received_at = models.DateTimeField(default=timezone.now)

    objects = LocationQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name or self.location_id} ({self.country_code}*{self.party_id})"


class EvseQuerySet(models.QuerySet["Evse"]):
    def visible(self) -> EvseQuerySet:
        return self.exclude(status=Evse.Status.REMOVED).filter(
            location__withdrawn_at__isnull=True, location__publish=True
        )

    def bookable(self) -> EvseQuerySet:
        return (
            self.visible()
            .filter(has_connectors=True)
            .exclude(status__in=[Evse.Status.OUTOFORDER, Evse.Status.INOPERATIVE, Evse.Status.PLANNED])
        )


class Evse(models.Model):
    class Status(models.TextChoices):
        AVAILABLE = "AVAILABLE"
        BLOCKED = "BLOCKED"
        CHARGING = "CHARGING"
        INOPERATIVE = "INOPERATIVE"
        OUTOFORDER = "OUTOFORDER"
        PLANNED = "PLANNED"
        REMOVED = "REMOVED"
        RESERVED = "RESERVED"
        UNKNOWN = "UNKNOWN"

    # A status last heard longer ago than this is stale (console freshness, partner health).
    STATUS_STALE_AFTER = timedelta(minutes=15)
    # A charger in one of these can't serve a booking: its bookings are cancelled, alternatives offered.
    FAULT_STATUSES = (Status.OUTOFORDER, Status.INOPERATIVE, Status.REMOVED)

    # Indexes are kept to what queries need: each one costs every bulk ingest and status PATCH.
    location = models.ForeignKey(Location, on_delete=models.CASCADE, related_name="evses", db_index=False)
    uid = models.CharField(max_length=36)
    uid_key = models.CharField(max_length=36)
    evse_id = models.CharField(max_length=48, blank=True)
    # Not indexed on purpose: a status PATCH then changes no indexed column, so PostgreSQL can update the
    # row in place (a HOT update) on the hot path of live availability.
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UNKNOWN)
    capabilities = models.JSONField(default=list, blank=True)
    latitude = models.FloatField(help_text="The EVSE's own coordinates, or its location's.")
    longitude = models.FloatField()
    max_power_w = models.PositiveIntegerField(null=True, blank=True, help_text="Highest connector power.")
    has_connectors = models.BooleanField(default=True)
    last_updated = models.DateTimeField()
    status_updated_at = models.DateTimeField(
        default=timezone.now, help_text="When we last heard this EVSE's status (our clock)."
    )
    data = models.JSONField(help_text="The OCPI EVSE without its connectors.")

    objects = EvseQuerySet.as_manager()

    class Meta:
        verbose_name = "EVSE"
        constraints = [models.UniqueConstraint(fields=["location", "uid_key"], name="evse_unique_uid")]
        # The catalogue's radius search: a bounding box on this composite btree, then exact distance
        # (measured faster than PostGIS at 1 M rows on this machine type, perf notes §2.3).
        indexes = [models.Index(fields=["latitude", "longitude"], name="evse_lat_lon")]

    def __str__(self) -> str:
        return self.evse_id or self.uid

    @property
    def is_reservable(self) -> bool:
        return "RESERVABLE" in (self.capabilities or [])

    @property
    def needs_connector_id(self) -> bool:
        return "START_SESSION_CONNECTOR_REQUIRED" in (self.capabilities or [])


class Connector(models.Model):
    evse = models.ForeignKey(Evse, on_delete=models.CASCADE, related_name="connectors", db_index=False)
    connector_id = models.CharField(max_length=36)
    id_key = models.CharField(max_length=36)
    standard = models.CharField(max_length=32, db_index=True)
    format = models.CharField(max_length=8)
    power_type = models.CharField(max_length=20)
    max_voltage = models.PositiveIntegerField(null=True, blank=True)
    max_amperage = models.PositiveIntegerField(null=True, blank=True)
    max_electric_power = models.PositiveIntegerField(null=True, blank=True, help_text="W")
    tariff_ids = models.JSONField(default=list, blank=True)
    last_updated = models.DateTimeField()
    data = models.JSONField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["evse", "id_key"], name="connector_unique_id")]

    def __str__(self) -> str:
        return f"{self.connector_id} {self.standard}"


# ---------------------------------------------------------------------------------------------
# Drivers and our tokens
# ---------------------------------------------------------------------------------------------


class Driver(models.Model):
    """A driver account of ours: the owner of tokens and of Beckn orders."""

    name = models.CharField(max_length=100)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=32, blank=True)
    is_blocked = models.BooleanField(default=False)
    wallet_balance = models.DecimalField(
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="Prepaid balance; empty for post-paid accounts. At or below zero the driver has NO_CREDIT.",
    )
    currency = models.CharField(max_length=3, default="INR")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def has_credit(self) -> bool:
        return self.wallet_balance is None or self.wallet_balance > Decimal("0")


class TokenQuerySet(models.QuerySet["Token"]):
    def by_uid(self, uid: str, token_type: str | None = None) -> TokenQuerySet:
        qs = self.filter(uid_key=ci_key(uid))
        return qs.filter(type=token_type) if token_type else qs


class Token(models.Model):
    """One of our OCPI Tokens (mod_tokens §"Token object"). Unique by (uid, type)."""

    class Type(models.TextChoices):
        AD_HOC_USER = "AD_HOC_USER"
        APP_USER = "APP_USER"
        OTHER = "OTHER"
        RFID = "RFID"

    class Whitelist(models.TextChoices):
        ALWAYS = "ALWAYS"
        ALLOWED = "ALLOWED"
        ALLOWED_OFFLINE = "ALLOWED_OFFLINE"
        NEVER = "NEVER"

    class Allowed(models.TextChoices):
        ALLOWED = "ALLOWED"
        BLOCKED = "BLOCKED"
        EXPIRED = "EXPIRED"
        NO_CREDIT = "NO_CREDIT"
        NOT_ALLOWED = "NOT_ALLOWED"

    driver = models.ForeignKey(Driver, on_delete=models.PROTECT, related_name="tokens")
    uid = models.CharField(max_length=36)
    uid_key = models.CharField(max_length=36, editable=False)
    type = models.CharField(max_length=12, choices=Type.choices, default=Type.RFID)
    contract_id = models.CharField(max_length=36)
    visual_number = models.CharField(max_length=64, blank=True)
    issuer = models.CharField(max_length=64)
    group_id = models.CharField(max_length=36, blank=True)
    valid = models.BooleanField(default=True)
    whitelist = models.CharField(max_length=16, choices=Whitelist.choices, default=Whitelist.ALLOWED)
    language = models.CharField(max_length=2, blank=True)
    is_blocked = models.BooleanField(default=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    allowed_partners = models.ManyToManyField(
        Partner,
        blank=True,
        help_text="If any are set, the token may only charge at these partners (else NOT_ALLOWED).",
    )
    last_updated = models.DateTimeField(default=timezone.now, db_index=True)

    objects = TokenQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["uid_key", "type"], name="token_unique_uid_type")]

    def __str__(self) -> str:
        return f"{self.uid} ({self.type})"

    def save(self, *args: object, **kwargs: object) -> None:
        self.uid_key = ci_key(self.uid)
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def allowed_status(self, now: datetime, partner: Partner | None = None) -> str:
        """The AllowedType real-time authorization answers for this token (mod_tokens §AllowedType)."""
        if self.is_blocked or not self.valid or self.driver.is_blocked:
            return self.Allowed.BLOCKED
        if self.expires_at is not None and self.expires_at <= now:
            return self.Allowed.EXPIRED
        if not self.driver.has_credit():
            return self.Allowed.NO_CREDIT
        if partner is not None:
            if hasattr(self, "is_restricted"):  # read with the token by real-time authorization's query
                restricted, allowed_here = self.is_restricted, self.allowed_here
            else:
                partner_ids = {p.pk for p in self.allowed_partners.all()}
                restricted, allowed_here = bool(partner_ids), partner.pk in partner_ids
            if restricted and not allowed_here:
                return self.Allowed.NOT_ALLOWED
        return self.Allowed.ALLOWED


# ---------------------------------------------------------------------------------------------
# Reservations, sessions, commands
# ---------------------------------------------------------------------------------------------


class Reservation(models.Model):
    """A hold on one EVSE for a time window. On PostgreSQL an exclusion constraint makes two active
    reservations overlapping on one EVSE impossible (migration emsp 0002)."""

    class Status(models.TextChoices):
        HELD = "HELD", "Held by us (EVSE not reservable at the CPO)"
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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
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
    ocpi_key = models.CharField(max_length=48, unique=True)
    status = models.CharField(max_length=12, choices=Status.choices, db_index=True)
    start_date_time = models.DateTimeField()
    end_date_time = models.DateTimeField(null=True, blank=True)
    kwh = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))
    currency = models.CharField(max_length=3)
    total_cost_excl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    total_cost_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    ocpi_location_id = models.CharField(max_length=36, help_text="location_id as the CPO sent it")
    evse_uid = models.CharField(max_length=36)
    connector_id = models.CharField(max_length=36)
    location = models.ForeignKey(Location, null=True, blank=True, on_delete=models.SET_NULL)
    evse = models.ForeignKey(Evse, null=True, blank=True, on_delete=models.SET_NULL)
    token_uid = models.CharField(max_length=36)
    token = models.ForeignKey(Token, null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    auth_method = models.CharField(max_length=16)
    authorization_reference = models.CharField(max_length=36, blank=True, db_index=True)
    reservation = models.ForeignKey(Reservation, null=True, blank=True, on_delete=models.SET_NULL)
    booking = models.ForeignKey("Booking", null=True, blank=True, on_delete=models.SET_NULL, related_name="sessions")
    last_updated = models.DateTimeField(db_index=True)
    data = models.JSONField(help_text="The OCPI Session, including its charging periods.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["partner", "last_updated"], name="session_partner_updated")]

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
    authorization_reference = models.CharField(max_length=36, blank=True, db_index=True)
    token = models.ForeignKey(Token, null=True, blank=True, on_delete=models.SET_NULL)
    evse = models.ForeignKey(Evse, null=True, blank=True, on_delete=models.SET_NULL)
    reservation = models.ForeignKey(Reservation, null=True, blank=True, on_delete=models.SET_NULL)
    session = models.ForeignKey(ChargingSession, null=True, blank=True, on_delete=models.SET_NULL)
    booking = models.ForeignKey("Booking", null=True, blank=True, on_delete=models.SET_NULL, related_name="commands")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

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
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.order_id} ({self.state})"

    @property
    def is_active(self) -> bool:
        return self.state in self.ACTIVE_STATES


# ---------------------------------------------------------------------------------------------
# The outbox: messages we owe partners
# ---------------------------------------------------------------------------------------------


class Delivery(models.Model):
    """One message we owe a partner — an OCPI push to a CPO, a Beckn callback to a BAP. Stored in the
    transaction that caused it, then sent by the outbox (emsp/outbox.py) under one retry policy. What the
    message is, and how to send it, lives in the adapter's subclass (`ocpi.PushDelivery`,
    `beckn.BecknCallback`: multi-table inheritance), whose sender the adapter registers at start-up."""

    class Channel(models.TextChoices):
        OCPI_PUSH = "ocpi_push", "OCPI push to a CPO"
        BECKN_CALLBACK = "beckn_callback", "Beckn callback to a BAP"

    class Status(models.TextChoices):
        PENDING = "PENDING", "Waiting to be sent"
        SENDING = "SENDING", "Being sent"
        DELIVERED = "DELIVERED"
        FAILED = "FAILED", "Failed for good"

    channel = models.CharField(max_length=20, choices=Channel.choices)
    partner = models.ForeignKey(
        Partner, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries", help_text="OCPI only"
    )
    target = models.CharField(max_length=500, help_text="Where it goes, for people reading the console.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True, help_text="When a worker took it for sending.")
    last_http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"
        # The due sweep's query: pending rows by due time, and SENDING rows left by a stopped worker.
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="delivery_due")]
        permissions = [("retry_delivery", "Can retry a delivery now")]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} → {self.target} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try at sending a Delivery: what the partner answered, or why no answer came."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(default=timezone.now)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"{self.delivery} at {self.at:%H:%M:%S}: {self.http_status or self.error[:40]}"
