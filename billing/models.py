"""Billing records: the CPOs' tariffs and CDRs as received (audit, disputes and settlement build on these)."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone

from emsp.models import ChargingSession, Partner


class Tariff(models.Model):
    """An OCPI Tariff (mod_tariffs) of a CPO. Deleted when the CPO DELETEs it; CDRs carry their own copy."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="tariffs")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    tariff_id = models.CharField(max_length=36)
    ocpi_key = models.CharField(max_length=48, unique=True)
    currency = models.CharField(max_length=3)
    type = models.CharField(max_length=16, blank=True)
    start_date_time = models.DateTimeField(null=True, blank=True)
    end_date_time = models.DateTimeField(null=True, blank=True)
    last_updated = models.DateTimeField(db_index=True)
    data = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.tariff_id} ({self.country_code}*{self.party_id})"


class Cdr(models.Model):
    """A Charge Detail Record (mod_cdrs): immutable once received; corrections arrive as credit CDRs."""

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="cdrs")
    country_code = models.CharField(max_length=2)
    party_id = models.CharField(max_length=3)
    cdr_id = models.CharField(max_length=39)
    ocpi_key = models.CharField(max_length=51, unique=True)
    session_id = models.CharField(max_length=36, blank=True, db_index=True)
    charging_session = models.ForeignKey(
        ChargingSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="cdrs"
    )
    start_date_time = models.DateTimeField()
    end_date_time = models.DateTimeField(db_index=True)
    currency = models.CharField(max_length=3)
    total_cost_excl_vat = models.DecimalField(max_digits=14, decimal_places=4)
    total_cost_incl_vat = models.DecimalField(max_digits=14, decimal_places=4, null=True, blank=True)
    total_energy = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal("0"))
    total_time = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    total_parking_time = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    location_id = models.CharField(max_length=36, blank=True)
    evse_uid = models.CharField(max_length=36, blank=True)
    token_uid = models.CharField(max_length=36, blank=True)
    credit = models.BooleanField(default=False)
    credit_reference_id = models.CharField(max_length=39, blank=True)
    credited_cdr = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="credits",
        help_text="For a credit CDR: the CDR it corrects.",
    )
    last_updated = models.DateTimeField(db_index=True)
    data = models.JSONField()
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = "CDR"
        indexes = [models.Index(fields=["partner", "end_date_time"], name="cdr_partner_end")]

    def __str__(self) -> str:
        return self.cdr_id
