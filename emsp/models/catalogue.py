"""The catalogue: CPOs' locations, EVSEs and connectors, kept whole in `data` next to indexed columns."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone

from emsp.models.partners import Partner


class LocationQuerySet(models.QuerySet["Location"]):
    def visible(self) -> LocationQuerySet:
        return self.filter(withdrawn_at__isnull=True, publish=True)


class Location(models.Model):
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="locations")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    location_id = models.CharField(max_length=39)  # string(39) in OCPI 2.1.1, CiString(36) since
    # Unique by a constraint, not `unique=True`: on PostgreSQL that would add a second, `varchar_pattern_ops`
    # index for LIKE queries, which nothing runs and every ingested location paid for.
    ocpi_key = models.CharField(max_length=48, help_text="CC*PID*ID upper-cased.")
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

    class Meta:
        constraints = [models.UniqueConstraint(fields=["ocpi_key"], name="emsp_location_ocpi_key_key")]
        indexes = [
            # A Beckn item names its location by id, in any case (catalogue.find_item, the select's first
            # statement; OCPI 2.1.1/2.3.0 wire lookups): without it, a scan of every location (25 ms at 1 M EVSEs).
            models.Index(Upper("location_id"), name="location_id_any_case"),
            # A party's locations, in any case: moved with it when it changes connection
            # (emsp/services/partners.py::party_objects_moved), where a scan of every location took 50 ms at 100k.
            models.Index(Upper("country_code"), Upper("party_id"), name="location_party_any_case"),
        ]

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
    uid = models.CharField(max_length=39)  # string(39) in OCPI 2.1.1, CiString(36) since
    uid_key = models.CharField(max_length=39)
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
    # Not indexed: a connector filter is checked per EVSE (through connector_unique_id), never by a scan on
    # the standard, and the two indexes it had cost every ingested connector.
    standard = models.CharField(max_length=32)
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


class WatchedEvse(models.Model):
    """An EVSE drivers are looking at (in a search result or a quote): while watched, a CPO that doesn't
    push has it re-read at most 30 s apart (RFC §8.3.1; emsp/services/freshness.py)."""

    evse = models.OneToOneField(Evse, on_delete=models.CASCADE, primary_key=True, related_name="watch")
    until = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.evse_id} until {self.until:%H:%M:%S}"
