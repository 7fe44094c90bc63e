"""Findings of booking reconciliation (emsp/services/booking_checks.py): where a booking and the CPO's side
disagree. A mismatch the check repaired itself is kept resolved, saying how; one it cannot repair stays open for
staff (one open finding per booking and kind, however often it is seen) until it is gone or staff resolve it."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from emsp.models.charging import Booking


class BookingCheck(models.Model):
    class Kind(models.TextChoices):
        BOOKING_BEHIND_SESSION = "booking_behind_session", "The booking did not follow its session"
        SESSION_UNLINKED = "session_unlinked", "The driver's session was not linked to the booking"
        SESSION_AMBIGUOUS = "session_ambiguous", "Several sessions could be the booking's"
        SESSION_MISSING = "session_missing", "Start sent, no session reported"
        START_FAILED = "start_failed", "Start failed, no session"
        START_NOT_SENT = "start_not_sent", "Start asked for, never sent"
        SESSION_NOT_STOPPED = "session_not_stopped", "Stop sent, the session is still active"
        CDR_MISSING = "cdr_missing", "Charge finished, no CDR"
        CDR_NOT_SETTLED = "cdr_not_settled", "CDR received, booking not settled"
        SESSION_INVALID = "session_invalid", "The CPO declared the session invalid (not billed)"
        SESSION_AFTER_END = "session_after_end", "A session on a booking that had ended"
        RESERVATION_NOT_RELEASED = "reservation_not_released", "Booking ended, the CPO may still hold the charger"
        COMMAND_STUCK = "command_stuck", "A command never went out"

    booking = models.ForeignKey(Booking, on_delete=models.CASCADE, related_name="checks")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    detail = models.TextField(help_text="What was compared and found, as of the last time it was seen.")
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    times_seen = models.PositiveIntegerField(default=1)
    repaired = models.BooleanField(default=False, help_text="Reconciliation repaired it itself.")
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)
    resolution = models.CharField(max_length=300, blank=True, help_text="How it ended: repaired, gone, or by staff.")
    resolved_by = models.CharField(
        max_length=150, blank=True, help_text="The staff member who marked it resolved (empty: reconciliation)."
    )

    class Meta:
        ordering = ["-last_seen", "-pk"]
        constraints = [
            # Re-runs update the open finding instead of adding another.
            models.UniqueConstraint(
                fields=["booking", "kind"], condition=Q(resolved_at__isnull=True), name="booking_check_one_open"
            ),
        ]
        permissions = [("recheck_bookingcheck", "Can check a booking again and mark its findings resolved")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.booking_id})"

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None
