"""The outbox's rows: messages we owe partners and each try at sending them (emsp/outbox.py sends them)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from emsp.models.partners import Partner


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
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
            # The console's list at tens of millions of rows: newest first per partner and per status.
            models.Index(fields=["partner", "created_at"], name="delivery_partner_time"),
            models.Index(fields=["status", "created_at"], name="delivery_status_time"),
        ]
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
