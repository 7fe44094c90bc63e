"""OCPI plumbing records: the message log, pull-sync runs, data-quality findings and the pushes we owe CPOs."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from emsp.models import Delivery, Partner


class OcpiMessage(models.Model):
    """One OCPI request, in or out, searchable by X-Request-ID / X-Correlation-ID."""

    class Direction(models.TextChoices):
        IN = "IN", "Partner → us"
        OUT = "OUT", "Us → partner"

    # Written on every request: only the indexes the console's searches need (ids, time).
    partner = models.ForeignKey(
        Partner, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages", db_index=False
    )
    direction = models.CharField(max_length=3, choices=Direction.choices)
    method = models.CharField(max_length=8)
    url = models.CharField(max_length=500)
    module = models.CharField(max_length=24, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    ocpi_status = models.PositiveIntegerField(null=True, blank=True)
    # Indexed in Meta: db_index=True would add a second, varchar_pattern_ops index for LIKE on PostgreSQL, which
    # the console's exact-match search never uses and every insert paid for.
    request_id = models.CharField(max_length=100, blank=True)
    correlation_id = models.CharField(max_length=100, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    request_body = models.TextField(blank=True)
    response_body = models.TextField(blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    # What the health page and the console call failed: no answer, not a 2xx, an OCPI error, or an error noted.
    FAILED = (
        models.Q(http_status__gte=300)
        | models.Q(http_status__isnull=True)
        | models.Q(ocpi_status__gte=2000)
        | ~models.Q(error="")
    )

    class Meta:
        verbose_name = "OCPI message"
        ordering = ["-created_at"]
        # The console's filters at tens of millions of rows (docs/benchmarks.md, "Retention"): newest first per
        # partner and per module; failed ones (a few percent: partial indexes, cheap to write) overall and per
        # partner.
        indexes = [
            models.Index(fields=["request_id"], name="ocpimessage_request_id"),
            models.Index(fields=["correlation_id"], name="ocpimessage_correlation_id"),
            models.Index(fields=["partner", "created_at"], name="ocpimessage_partner_time"),
            models.Index(fields=["module", "created_at"], name="ocpimessage_module_time"),
            models.Index(
                fields=["created_at"],
                condition=models.Q(http_status__gte=300)
                | models.Q(http_status__isnull=True)
                | models.Q(ocpi_status__gte=2000)
                | ~models.Q(error=""),
                name="ocpimessage_failed_time",
            ),
            models.Index(
                fields=["partner", "created_at"],
                condition=models.Q(http_status__gte=300)
                | models.Q(http_status__isnull=True)
                | models.Q(ocpi_status__gte=2000)
                | ~models.Q(error=""),
                name="ocpimessage_partner_failed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.method} {self.url} → {self.http_status}"


class SyncRun(models.Model):
    """One pull of one module from one partner (OCPI transport §"Pull")."""

    class Mode(models.TextChoices):
        FULL = "FULL"
        INCREMENTAL = "INCREMENTAL"
        TARGETED = "TARGETED", "Targeted (since a given time, for a check)"

    class Outcome(models.TextChoices):
        RUNNING = "RUNNING"
        OK = "OK"
        FAILED = "FAILED"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="sync_runs")
    module = models.CharField(max_length=16)
    mode = models.CharField(max_length=12, choices=Mode.choices)
    date_from = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    # The partner's clock when it answered the first page (its envelope's timestamp), where it said one we can
    # believe: the next incremental pull counts from it, as the partner stamps its objects' last_updated.
    partner_time = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.RUNNING)
    pages = models.PositiveIntegerField(default=0)
    received = models.PositiveIntegerField(default=0)
    stored = models.PositiveIntegerField(default=0)
    normalised = models.PositiveIntegerField(default=0)
    rejected = models.PositiveIntegerField(default=0)
    announced = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="The X-Total-Count the partner's first page announced, if any."
    )
    error = models.TextField(blank=True)
    # A full pull of locations or tariffs paged on by offset without X-Total-Count (ocpi/sync.py): the objects it
    # did not list and kept, by key, with the last_updated we held. The next full pull withdraws (deletes) one it
    # does not list either, received nothing of since.
    unlisted = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["partner", "module", "-started_at"], name="syncrun_partner_module")]

    def __str__(self) -> str:
        return f"{self.partner} {self.module} {self.mode} {self.outcome}"


class DataQualityIssue(models.Model):
    """Something a partner sent that we had to fix or drop. One row per (object, code), kept current."""

    # The unique constraint leads with partner: no separate FK index (every index slows the bulk ingest).
    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="data_quality_issues", db_index=False)
    module = models.CharField(max_length=16)
    object_id = models.CharField(max_length=120)
    path = models.CharField(max_length=200)
    code = models.CharField(max_length=40, db_index=True)
    message = models.CharField(max_length=500)
    fixed = models.BooleanField(help_text="Normalised and kept (true) or dropped (false).")
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["partner", "module", "object_id", "code"], name="dq_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.module} {self.object_id} {self.path}: {self.code}"


class PushDelivery(Delivery):
    """An object we push to a partner's receiver (our Tokens): a Delivery of the one outbox (emsp/outbox.py),
    sent by ocpi/push.py. The URL is the partner's receiver at sending time plus `path`."""

    module = models.CharField(max_length=16)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=200, help_text="Appended to the partner's module URL.")
    payload = models.JSONField()

    class Meta:
        verbose_name_plural = "push deliveries"

    def __str__(self) -> str:
        return f"{self.method} {self.module}{self.path} → {self.partner} ({self.status})"


class SyncLease(models.Model):
    """Who pulls a partner now: one pull per partner at a time. A pull renews it page by page; one that
    outlives its lease was left by a stopped worker, and the next pull takes over (SYNC_LEASE_SECONDS)."""

    partner = models.OneToOneField(Partner, on_delete=models.CASCADE, related_name="sync_lease")
    holder = models.CharField(max_length=64)
    held_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.partner} pulled by {self.holder} until {self.held_until:%H:%M:%S}"


class CredentialsRotation(models.Model):
    """A rotation of tokens we started with a partner (PUT on its credentials endpoint). While it is PENDING
    its new token authenticates as the partner next to the old one: the partner may use it (to read our
    versions) before it answers. The old token is dropped only on a valid answer (ocpi/credentials.py)."""

    class Outcome(models.TextChoices):
        PENDING = "PENDING", "Sent, no usable answer yet: both tokens are valid"
        DONE = "DONE", "Done: the new tokens are in use"
        REFUSED = "REFUSED", "Refused by the partner: the old tokens stay"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="credentials_rotations")
    token_hash = models.CharField(max_length=64, db_index=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.PENDING)
    started_by = models.CharField(max_length=150, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"rotation with {self.partner} at {self.started_at:%Y-%m-%d %H:%M} ({self.outcome})"


class HubClientInfo(models.Model):
    """A party a hub connects us with, as the hub last told us (mod_hub_client_info ClientInfo): its role and
    the state of its connection to the hub. A record, never a grant: what a connection may act for is
    `Partner.parties`. One per (hub, party): the module addresses ClientInfo by country_code/party_id only."""

    class Status(models.TextChoices):
        CONNECTED = "CONNECTED", "Connected"
        OFFLINE = "OFFLINE", "Offline: no requests can be sent"
        PLANNED = "PLANNED", "Planned: never connected yet"
        SUSPENDED = "SUSPENDED", "Suspended: will not connect anymore"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="hub_clients", db_index=False)
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    role = models.CharField(max_length=8, help_text="The party's OCPI Role (CPO, EMSP, HUB, NAP, NSP, OTHER, SCSP).")
    status = models.CharField(max_length=10, choices=Status.choices)
    last_updated = models.DateTimeField(help_text="The ClientInfo's last_updated, as the hub stamped it.")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "hub client info"
        constraints = [
            models.UniqueConstraint(fields=["partner", "country_code", "party_id"], name="hubclientinfo_once"),
        ]

    def __str__(self) -> str:
        return f"{self.country_code}*{self.party_id} ({self.role}) via {self.partner}: {self.status}"
