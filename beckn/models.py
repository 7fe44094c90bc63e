"""Beckn network participants whose signatures we verify: subscribers staff trust in the console and
subscribers looked up in the registry (core 1.1.0 `registry.yaml` Subscription)."""

from __future__ import annotations

from datetime import datetime

from django.db import models

from emsp.crypto import EncryptedJSONField
from emsp.models import Delivery


class BecknSubscriber(models.Model):
    """One signing key of one subscriber (a subscriber may rotate keys: one row per unique_key_id)."""

    class Type(models.TextChoices):
        BAP = "BAP", "BAP (consumer app)"
        BPP = "BPP", "BPP (provider platform)"
        BG = "BG", "BG (gateway)"

    class Status(models.TextChoices):
        # core 1.1.0 registry.yaml Subscription.status; only SUBSCRIBED keys are used.
        INITIATED = "INITIATED", "Initiated"
        UNDER_SUBSCRIPTION = "UNDER_SUBSCRIPTION", "Under subscription"
        SUBSCRIBED = "SUBSCRIBED", "Subscribed"
        EXPIRED = "EXPIRED", "Expired"
        UNSUBSCRIBED = "UNSUBSCRIBED", "Unsubscribed"
        INVALID_SSL = "INVALID_SSL", "Invalid SSL"

    subscriber_id = models.CharField(max_length=255, help_text="As in keyId and context.bap_id, e.g. bap.example.com")
    unique_key_id = models.CharField(
        max_length=255,
        blank=True,
        help_text="The middle part of keyId (registry ukId / key_id). Empty when the network has one key per "
        "subscriber.",
    )
    type = models.CharField(max_length=3, choices=Type.choices, blank=True)
    signing_public_key = models.CharField(max_length=64, help_text="Ed25519 public key, 32 bytes in base64.")
    subscriber_url = models.URLField(max_length=255, blank=True)
    domains = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SUBSCRIBED)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)
    trusted = models.BooleanField(
        default=False,
        help_text="Entered by staff: used before (and instead of) the registry, and never overwritten by a lookup. "
        "Set status to Unsubscribed to block the key.",
    )
    last_lookup_at = models.DateTimeField(null=True, blank=True, help_text="When the registry last returned it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Beckn subscriber"
        constraints = [
            models.UniqueConstraint(fields=["subscriber_id", "unique_key_id"], name="beckn_subscriber_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.subscriber_id}|{self.unique_key_id}" if self.unique_key_id else self.subscriber_id

    def is_usable(self, now: datetime) -> bool:
        """SUBSCRIBED and inside [valid_from, valid_until); open ends count as unbounded."""
        return (
            self.status == self.Status.SUBSCRIBED
            and (self.valid_from is None or self.valid_from <= now)
            and (self.valid_until is None or now < self.valid_until)
        )


class BecknTransaction(models.Model):
    """One consumer journey of one BAP (context.transaction_id): what was selected, the quote, the booking."""

    bap_id = models.CharField(max_length=255)
    transaction_id = models.CharField(max_length=255)
    bap_uri = models.URLField(max_length=500)
    callback_uri = models.URLField(max_length=500, help_text="Where on_* callbacks go: the BAP, or the gateway.")
    domain = models.CharField(max_length=100)
    context_location = models.JSONField(default=dict, blank=True)
    provider_id = models.CharField(max_length=20, blank=True)
    item_id = models.CharField(max_length=120, blank=True)
    quote = models.ForeignKey("billing.Quote", null=True, blank=True, on_delete=models.SET_NULL)
    booking = models.OneToOneField(
        "emsp.Booking", null=True, blank=True, on_delete=models.SET_NULL, related_name="beckn_transaction"
    )
    driver = models.ForeignKey("emsp.Driver", null=True, blank=True, on_delete=models.SET_NULL)
    token = models.ForeignKey("emsp.Token", null=True, blank=True, on_delete=models.SET_NULL)
    window_start = models.DateTimeField(null=True, blank=True, help_text="The time window selected, if any.")
    window_end = models.DateTimeField(null=True, blank=True)
    # The driver's billing and contact details (names, emails, phones, addresses): kept in this one place,
    # encrypted at rest (emsp/crypto.py); stored request bodies have them redacted (beckn/privacy.py).
    billing = EncryptedJSONField(default=dict, blank=True)
    customer = EncryptedJSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bap_id", "transaction_id"], name="beckn_transaction_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.bap_id} {self.transaction_id}"


class BecknMessage(models.Model):
    """An inbound request, kept once per (bap_id, action, message_id): a repeat gets the same ACK and
    causes nothing (beckn-notes §3.2 idempotency). RECEIVED: recorded, with the start or stop `command` it made,
    which goes to the CPO before the request is answered (beckn/handlers.py `handle`); PROCESSED once answered."""

    class Status(models.TextChoices):
        RECEIVED = "RECEIVED"
        PROCESSED = "PROCESSED"
        FAILED = "FAILED"

    bap_id = models.CharField(max_length=255)
    action = models.CharField(max_length=16)
    message_id = models.CharField(max_length=255)
    transaction = models.ForeignKey(
        BecknTransaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    via_gateway = models.CharField(max_length=255, blank=True)
    command = models.ForeignKey(
        "emsp.Command",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The START_SESSION or STOP_SESSION this update made, sent after the request was recorded.",
    )
    body = models.TextField()
    ack = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["bap_id", "action", "message_id"], name="beckn_message_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.message_id} from {self.bap_id}"


class BecknCallback(Delivery):
    """An on_* callback we owe a BAP (or the gateway that forwarded its search): a Delivery of the one outbox
    (emsp/outbox.py), sent by beckn/callbacks.py with the exact bytes stored here, signed."""

    transaction = models.ForeignKey(
        BecknTransaction, null=True, blank=True, on_delete=models.SET_NULL, related_name="callbacks"
    )
    request = models.ForeignKey(
        BecknMessage, null=True, blank=True, on_delete=models.SET_NULL, related_name="callbacks"
    )
    action = models.CharField(max_length=16)
    url = models.URLField(max_length=500)
    message_id = models.CharField(max_length=255)
    solicited = models.BooleanField(default=True)
    body = models.TextField(help_text="The exact JSON sent (and signed)")

    def __str__(self) -> str:
        return f"{self.action} → {self.url} ({self.status})"


class BecknRating(models.Model):
    transaction = models.ForeignKey(BecknTransaction, null=True, blank=True, on_delete=models.SET_NULL)
    # The journey's driver when the rating came (its later init may name another driver): whose rating a new one
    # of theirs replaces. None for a journey without a driver, and for a rating from before this was kept in a
    # journey two drivers went on.
    driver = models.ForeignKey(
        "emsp.Driver", null=True, blank=True, on_delete=models.SET_NULL, related_name="beckn_ratings"
    )
    bap_id = models.CharField(max_length=255)
    category = models.CharField(max_length=20)
    ref_id = models.CharField(max_length=255)
    value = models.CharField(max_length=20)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.category} {self.ref_id}: {self.value}"


class DriverFeedback(models.Model):
    """What a driver wrote on the feedback form an on_rating links to (`/beckn/feedback`)."""

    order_id = models.CharField(max_length=40, blank=True)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    comment = models.TextField(max_length=2000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"feedback {self.order_id or '-'}: {self.rating}"
