"""Partner health for the staff console: last pull per module, object counts, recent errors, data quality,
command outcomes and catalogue freshness."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from billing.models import Cdr, Tariff
from emsp.models import BreakerChange, ChargingSession, CircuitBreaker, Command, Evse, Location, Partner
from ocpi.hubclientinfo import HubParty, hub_parties
from ocpi.models import DataQualityIssue, OcpiMessage, SyncRun

MODULES = ("locations", "tariffs", "sessions", "cdrs")
# A message that failed: no answer, a redirect or an HTTP error, an OCPI error status, or (ours to them) an
# answer that was not OCPI at all (the client writes why into `error`).
_FAILED = Q(http_status__gte=300) | Q(http_status__isnull=True) | Q(ocpi_status__gte=2000) | ~Q(error="")


@dataclass
class PartnerHealth:
    partner: Partner
    last_runs: dict[str, SyncRun | None]
    counts: dict[str, int]
    recent_errors: list[OcpiMessage]
    error_rate: float | None
    failed_requests: int  # our requests to the partner that failed, last 24 h
    unusable_replies: int  # of which the answer was not OCPI (a redirect, not JSON, no envelope)
    data_quality: list[dict[str, Any]]
    data_quality_total: int
    commands: dict[str, int] = field(default_factory=dict)
    command_success_rate: float | None = None
    stale_evse_share: float | None = None
    hub_parties: list[HubParty] = field(default_factory=list)  # a hub's parties (HubClientInfo, grants)
    breakers: list[CircuitBreaker] = field(default_factory=list)
    breaker_changes: list[BreakerChange] = field(default_factory=list)
    breaker_changes_24h: int = 0


def partner_health(partner: Partner, now: datetime | None = None) -> PartnerHealth:
    now = now or timezone.now()
    last_runs = {
        module: SyncRun.objects.filter(partner=partner, module=module).order_by("-started_at").first()
        for module in MODULES
    }
    evses = Evse.objects.filter(location__partner=partner).exclude(status=Evse.Status.REMOVED)
    evse_count = evses.count()
    counts = {
        "locations": Location.objects.filter(partner=partner, withdrawn_at__isnull=True).count(),
        "evses": evse_count,
        "tariffs": Tariff.objects.filter(partner=partner).count(),
        "sessions": ChargingSession.objects.filter(partner=partner).count(),
        "cdrs": Cdr.objects.filter(partner=partner).count(),
    }
    day_ago = now - timedelta(days=1)
    messages = OcpiMessage.objects.filter(partner=partner, created_at__gte=day_ago)
    outgoing = Q(direction=OcpiMessage.Direction.OUT)
    unusable = outgoing & (Q(http_status__range=(300, 399)) | (Q(http_status__lt=300) & ~Q(error="")))
    totals = messages.aggregate(
        total=Count("pk"),
        failed=Count("pk", filter=_FAILED),
        failed_out=Count("pk", filter=_FAILED & outgoing),
        unusable=Count("pk", filter=unusable),
    )
    errors = list(OcpiMessage.objects.filter(partner=partner).filter(_FAILED).order_by("-created_at")[:10])
    quality = list(
        DataQualityIssue.objects.filter(partner=partner)
        .values("module", "code", "fixed")
        .annotate(objects=Count("object_id", distinct=True))
        .order_by("-objects")[:20]
    )
    command_counts = dict(
        Command.objects.filter(partner=partner).values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    finished = sum(command_counts.get(s, 0) for s in Command.FINAL_STATUSES)
    stale = evses.filter(status_updated_at__lt=now - Evse.STATUS_STALE_AFTER).count()
    return PartnerHealth(
        partner=partner,
        last_runs=last_runs,
        counts=counts,
        recent_errors=errors,
        error_rate=(totals["failed"] / totals["total"]) if totals["total"] else None,
        failed_requests=totals["failed_out"],
        unusable_replies=totals["unusable"],
        data_quality=quality,
        data_quality_total=DataQualityIssue.objects.filter(partner=partner).count(),
        commands=command_counts,
        command_success_rate=(command_counts.get(Command.Status.SUCCEEDED, 0) / finished) if finished else None,
        stale_evse_share=(stale / evse_count) if evse_count else None,
        hub_parties=hub_parties(partner),
        breakers=list(CircuitBreaker.objects.filter(partner=partner).order_by("module")),
        breaker_changes=list(BreakerChange.objects.filter(breaker__partner=partner).select_related("breaker")[:10]),
        breaker_changes_24h=BreakerChange.objects.filter(breaker__partner=partner, at__gte=day_ago).count(),
    )
