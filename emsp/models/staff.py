"""The audit trail of staff actions in the console: who did what to which partner, dispute, settlement or
delivery, and when."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class StaffAction(models.Model):
    """One thing a staff member did in the console. Written by emsp.services.staff, never edited.

    The object is named by text (app_label.model, primary key, its text at the time) rather than a foreign
    key, so the record outlives the object (an unregistered partner, a recomputed settlement row) and the
    domain needs no key into billing's tables. The username is kept as text for the same reason."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    verb = models.CharField(max_length=40, db_index=True)
    object_type = models.CharField(max_length=100, help_text="app_label.model, e.g. emsp.partner")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField("object", max_length=200)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="staffaction_object")]

    def __str__(self) -> str:
        return f"{self.username or 'system'} {self.verb} {self.object_repr} at {self.at:%Y-%m-%d %H:%M}"
