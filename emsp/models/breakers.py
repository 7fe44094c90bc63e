"""Circuit breakers: one per partner and OCPI module, so a CPO that stops answering is not waited on again
and again (RFC §8.2.2, §8.3.2). The rules that move them are in emsp/services/breakers.py."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from emsp.models.partners import Partner


class CircuitBreaker(models.Model):
    class State(models.TextChoices):
        CLOSED = "CLOSED", "Closed (requests go through)"
        OPEN = "OPEN", "Open (requests refused at once)"
        HALF_OPEN = "HALF_OPEN", "Half-open (one probe request in flight)"

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="breakers")
    module = models.CharField(max_length=16, help_text="The OCPI module the requests are for.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.CLOSED)
    failures = models.PositiveIntegerField(default=0, help_text="Failures counted in the current window.")
    window_started_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True, help_text="When a probe may try the partner again.")
    open_seconds = models.PositiveIntegerField(default=0, help_text="The open period now (doubles per failed probe).")
    probe_until = models.DateTimeField(null=True, blank=True, help_text="The probe in flight gives up by then.")
    reason = models.CharField(max_length=300, blank=True, help_text="The failure that opened it.")
    trips = models.PositiveIntegerField(default=0, help_text="Times opened.")
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["partner", "module"], name="breaker_partner_module")]

    def __str__(self) -> str:
        return f"{self.partner} {self.module}: {self.state}"

    @property
    def is_closed(self) -> bool:
        return self.state == self.State.CLOSED


class BreakerChange(models.Model):
    """Every state change of a breaker, for the health page and the console home."""

    breaker = models.ForeignKey(CircuitBreaker, on_delete=models.CASCADE, related_name="changes")
    from_state = models.CharField(max_length=10, choices=CircuitBreaker.State.choices)
    to_state = models.CharField(max_length=10, choices=CircuitBreaker.State.choices)
    reason = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.breaker}: {self.from_state} → {self.to_state}"
