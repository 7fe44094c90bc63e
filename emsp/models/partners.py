"""Partners: the connections we talk OCPI with (CPOs, hubs), their connection and pull settings, and the
parties each may act for — granted by us, never taken from what a partner claims."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from emsp.crypto import EncryptedTextField
from emsp.models.keys import ci_key, hash_token, new_credentials_token


def default_sync_interval_minutes() -> int:
    return settings.OCPI_DEFAULT_SYNC_INTERVAL_MINUTES


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

    # Credentials (OCPI credentials module §7). Tokens we only verify are hashed; the one we send must be
    # presented, so it is encrypted at rest with keys from the environment (emsp/crypto.py).
    token_a_hash = models.CharField(max_length=64, blank=True, db_index=True)
    incoming_token_hash = models.CharField(max_length=64, blank=True, db_index=True)
    outgoing_token = EncryptedTextField(blank=True)
    outgoing_token_base64 = models.BooleanField(
        default=True,
        help_text="Send 'Authorization: Token <base64>' (OCPI 2.2.x). Untick for partners that expect the raw token.",
    )
    versions_url = models.URLField(max_length=255, blank=True)
    version = models.CharField(max_length=12, blank=True)
    endpoints = models.JSONField(default=list, blank=True, help_text="The partner's version-details endpoints.")
    credentials_roles = models.JSONField(
        default=list,
        blank=True,
        help_text="CredentialsRoles the partner sent, as a record only: what it may act for is its parties.",
    )
    registered_at = models.DateTimeField(null=True, blank=True)

    # Pull sync (OCPI transport §"Pull": the recovery path; "think in hours, not minutes").
    sync_enabled = models.BooleanField(default=True)
    sync_interval_minutes = models.PositiveIntegerField(
        default=default_sync_interval_minutes, help_text="OCPI_DEFAULT_SYNC_INTERVAL_MINUTES unless set here."
    )
    full_sync_interval_hours = models.PositiveIntegerField(default=24)
    next_sync_at = models.DateTimeField(null=True, blank=True)
    last_full_sync_at = models.DateTimeField(null=True, blank=True)
    # The last time the partner pushed us a location/EVSE/connector (PUT or PATCH), kept to the minute: a CPO
    # that doesn't push gets the EVSEs drivers look at re-read instead (emsp/services/freshness.py).
    last_push_at = models.DateTimeField(null=True, blank=True)

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
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and not {"country_code", "party_id"} & set(update_fields):  # type: ignore[call-overload]
            super().save(*args, **kwargs)  # type: ignore[arg-type]
            return
        from emsp.services.partners import party_objects_moved

        with transaction.atomic():
            super().save(*args, **kwargs)  # type: ignore[arg-type]
            party = {"country_code": self.country_code, "party_id": self.party_id}
            held = self.parties.filter(**party, status=PartnerParty.Status.GRANTED).exists()
            # Its own party is one of its parties: held in PartnerParty too, so that one constraint there
            # keeps every party to one connection (also against another's grant).
            self.parties.filter(own=True).exclude(**party).delete()
            self.parties.filter(own=False, **party).delete()
            self.parties.update_or_create(own=True, defaults={**party, "status": "GRANTED"})
            if not held:  # newly its party (a new partner, or its party changed): what we hold of it is its now
                party_objects_moved(self, self.country_code, self.party_id)
        self.__dict__.pop("_granted_keys", None)

    @property
    def party_key(self) -> str:
        return ci_key(self.country_code, self.party_id)

    def _granted_party_keys(self) -> set[str]:
        keys = self.__dict__.get("_granted_keys")
        if keys is None:
            granted = self.parties.filter(status=PartnerParty.Status.GRANTED).values_list("country_code", "party_id")
            keys = {ci_key(cc, pid) for cc, pid in granted} if self.pk else set()
            self.__dict__["_granted_keys"] = keys
        return keys

    def party_keys(self) -> set[str]:
        """Every (country_code, party_id) this partner may act for: its own and those staff granted it."""
        return {self.party_key, *self._granted_party_keys()}

    def owns(self, country_code: str, party_id: str) -> bool:
        """Whether the party is one of party_keys() (asked on every OCPI push: without building that set)."""
        key = ci_key(country_code, party_id)
        return key == self.party_key or key in self._granted_party_keys()

    def endpoint_url(self, identifier: str, role: str | None = None) -> str | None:
        """The URL of one of the partner's modules (from its version details), exactly as the partner gave it
        (a trailing slash is part of it), or None. With a `role`, the endpoint in that role, else one the
        partner gave without a role (OCPI 2.1.1 has no roles)."""
        endpoints = [e for e in self.endpoints or [] if e.get("identifier") == identifier]
        if role is not None:
            endpoints = [e for e in endpoints if e.get("role") == role] or [e for e in endpoints if not e.get("role")]
        for endpoint in endpoints:
            return str(endpoint.get("url") or "") or None
        return None

    def issue_token_a(self) -> str:
        token = new_credentials_token()
        self.token_a_hash = hash_token(token)
        if self.state in (self.State.NEW, self.State.UNREGISTERED):
            self.state = self.State.TOKEN_A_ISSUED
        return token


class PartnerParty(models.Model):
    """A party a connection may act for (read and write its locations, tariffs, sessions, CDRs). Granted by
    us — a partner's own party when we set it up, a hub's CPOs when staff confirm them — never taken from the
    roles a partner sends in its credentials; those become REQUESTED rows for staff to decide on. A granted
    party belongs to one connection only (a database constraint)."""

    class Status(models.TextChoices):
        GRANTED = "GRANTED", "Granted"
        REQUESTED = "REQUESTED", "Claimed by the partner, waiting for staff"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="parties")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.GRANTED)
    own = models.BooleanField(default=False, help_text="The partner's own party (set with the partner).")
    granted_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "partner parties"
        constraints = [
            models.UniqueConstraint(
                fields=["country_code", "party_id"],
                condition=Q(status="GRANTED"),
                name="party_granted_to_one_connection",
            ),
            models.UniqueConstraint(fields=["partner", "country_code", "party_id"], name="party_once_per_partner"),
            models.UniqueConstraint(fields=["partner"], condition=Q(own=True), name="partner_one_own_party"),
        ]

    def __str__(self) -> str:
        return f"{self.country_code}*{self.party_id} → {self.partner} ({self.status})"

    def save(self, *args: object, **kwargs: object) -> None:
        self.country_code = self.country_code.strip().upper()
        self.party_id = self.party_id.strip().upper()
        super().save(*args, **kwargs)  # type: ignore[arg-type]
