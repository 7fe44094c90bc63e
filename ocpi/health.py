"""Partner health for the staff console: last pull per module, object counts, recent errors, data quality,
command outcomes and catalogue freshness; and the same figures over time as inline SVG charts (billing/charts.py):
error rate per hour, pull duration per day, freshness per hour. The charts read the database rows (the message
log, the sync runs, the EVSEs), not Prometheus: /metrics carries the same figures for alerting (emsp/metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.safestring import SafeString

from billing.charts import Series, column_chart
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
    history: PartnerHistory | None = None


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
        history=partner_history(partner, now=now),
    )


# --- over time: the charts ---------------------------------------------------------------------------------------

HISTORY_HOURS = 48  # error rate and freshness, per hour
HISTORY_DAYS = 14  # pull duration, per day
_MODULE_CLASSES = {m: f"series-{i}" for i, m in enumerate(MODULES, start=1)}


@dataclass
class PartnerHistory:
    """The partner's figures per hour or day, oldest first, and the charts drawn from them."""

    hours: list[datetime]
    requests_in: list[int]
    failed_in: list[int]
    requests_out: list[int]
    failed_out: list[int]
    days: list[datetime]
    pull_seconds: dict[str, list[float | None]]  # module → average duration of the day's finished pulls
    pull_age_minutes: dict[str, list[float | None]]  # module → minutes since its last good pull, at each hour's end
    evses_heard: list[int]  # EVSEs whose status was last heard in each hour
    evses_heard_before: int  # … before the window
    charts: dict[str, SafeString] = field(default_factory=dict)

    @property
    def error_rows(self) -> list[tuple[datetime, int, int, int, int]]:
        return list(zip(self.hours, self.requests_in, self.failed_in, self.requests_out, self.failed_out, strict=True))


def _percent(failed: int, total: int) -> float:
    return round(100.0 * failed / total, 1) if total else 0.0


def _rates(failed: list[int], totals: list[int]) -> list[float]:
    return [_percent(f, t) for f, t in zip(failed, totals, strict=True)]


def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def partner_history(partner: Partner, now: datetime | None = None) -> PartnerHistory:
    """Hourly and daily buckets over a bounded window: one GROUP BY on the message log (its created_at index
    bounds the scan), the window's sync runs, and one GROUP BY on the partner's EVSEs."""
    now = now or timezone.now()
    first_hour = _hour_floor(now) - timedelta(hours=HISTORY_HOURS - 1)
    hours = [first_hour + timedelta(hours=i) for i in range(HISTORY_HOURS)]
    slot = {hour: i for i, hour in enumerate(hours)}
    counts = {key: [0] * HISTORY_HOURS for key in ("in", "in_failed", "out", "out_failed")}
    rows = (
        OcpiMessage.objects.filter(partner=partner, created_at__gte=first_hour)
        .annotate(hour=TruncHour("created_at"))
        .values("hour", "direction")
        .annotate(total=Count("pk"), failed=Count("pk", filter=_FAILED))
        .order_by()
    )
    for row in rows:
        i = slot.get(row["hour"])
        if i is None:
            continue
        prefix = "in" if row["direction"] == OcpiMessage.Direction.IN else "out"
        counts[prefix][i] += row["total"]
        counts[f"{prefix}_failed"][i] += row["failed"]

    first_day = _hour_floor(now).replace(hour=0) - timedelta(days=HISTORY_DAYS - 1)
    days = [first_day + timedelta(days=i) for i in range(HISTORY_DAYS)]
    durations: dict[str, list[list[float]]] = {m: [[] for _ in days] for m in MODULES}
    runs = SyncRun.objects.filter(
        partner=partner, module__in=MODULES, started_at__gte=first_day, finished_at__isnull=False
    ).values_list("module", "started_at", "finished_at")
    for module, started, finished in runs:
        i = (started - first_day).days
        if 0 <= i < HISTORY_DAYS:
            durations[module][i].append(max((finished - started).total_seconds(), 0.0))
    pull_seconds = {m: [round(sum(v) / len(v), 1) if v else None for v in per_day] for m, per_day in durations.items()}

    pull_age = {m: _pull_ages(partner, m, hours, now) for m in MODULES}

    evses = Evse.objects.filter(location__partner=partner).exclude(status=Evse.Status.REMOVED)
    heard = [0] * HISTORY_HOURS
    for row in (
        evses.filter(status_updated_at__gte=first_hour)
        .annotate(hour=TruncHour("status_updated_at"))
        .values("hour")
        .annotate(n=Count("pk"))
        .order_by()
    ):
        i = slot.get(row["hour"])
        if i is not None:
            heard[i] += row["n"]
    history = PartnerHistory(
        hours=hours,
        requests_in=counts["in"],
        failed_in=counts["in_failed"],
        requests_out=counts["out"],
        failed_out=counts["out_failed"],
        days=days,
        pull_seconds=pull_seconds,
        pull_age_minutes=pull_age,
        evses_heard=heard,
        evses_heard_before=evses.filter(status_updated_at__lt=first_hour).count(),
    )
    history.charts = _charts(history)
    return history


def _pull_ages(partner: Partner, module: str, hours: list[datetime], now: datetime) -> list[float | None]:
    """Minutes since the module's last good pull had finished, at the end of each hour (None before any)."""
    start = hours[0]
    finished = list(
        SyncRun.objects.filter(
            partner=partner, module=module, outcome=SyncRun.Outcome.OK, finished_at__gte=start, finished_at__lte=now
        )
        .order_by("finished_at")
        .values_list("finished_at", flat=True)
    )
    before = (
        SyncRun.objects.filter(partner=partner, module=module, outcome=SyncRun.Outcome.OK, finished_at__lt=start)
        .order_by("-started_at")
        .values_list("finished_at", flat=True)
        .first()
    )
    ages: list[float | None] = []
    last, k = before, 0
    for hour in hours:
        end = min(hour + timedelta(hours=1), now)
        while k < len(finished) and finished[k] <= end:
            last, k = finished[k], k + 1
        ages.append(round((end - last).total_seconds() / 60, 1) if last is not None else None)
    return ages


def _charts(h: PartnerHistory) -> dict[str, SafeString]:
    labels = [f"{hour:%H}h" for hour in h.hours]
    tooltips = [f"{hour:%Y-%m-%d %H:00}" for hour in h.hours]
    charts = {
        "errors": column_chart(
            chart_id="chart-error-rate",
            title=f"Failed OCPI requests per hour, last {HISTORY_HOURS} h (%)",
            description=(
                f"{sum(h.failed_in)} of {sum(h.requests_in)} requests from the partner and {sum(h.failed_out)} of "
                f"{sum(h.requests_out)} of ours to it failed."
            ),
            labels=labels,
            tooltips=tooltips,
            series=[
                Series(
                    "theirs to us", _rates(h.failed_in, h.requests_in), kind="line", css_class="series-1", decimals=1
                ),
                Series(
                    "ours to them", _rates(h.failed_out, h.requests_out), kind="line", css_class="series-2", decimals=1
                ),
            ],
            unit="%",
        )
    }
    pulled = [m for m in MODULES if any(v is not None for v in h.pull_seconds[m])]
    if pulled:
        charts["sync"] = column_chart(
            chart_id="chart-sync-duration",
            title=f"Average pull duration per day and module, last {HISTORY_DAYS} days (s)",
            description="; ".join(
                f"{m}: {sum(v is not None for v in h.pull_seconds[m])} days with pulls" for m in pulled
            ),
            labels=[f"{day:%d %b}" for day in h.days],
            tooltips=[f"{day:%Y-%m-%d}" for day in h.days],
            series=[
                Series(m, [v or 0.0 for v in h.pull_seconds[m]], kind="line", css_class=_MODULE_CLASSES[m], decimals=1)
                for m in pulled
            ],
            unit="s",
        )
    aged = [m for m in MODULES if any(v is not None for v in h.pull_age_minutes[m])]
    if aged:
        charts["freshness"] = column_chart(
            chart_id="chart-freshness",
            title=f"Minutes since the last good pull, per module, at each hour (last {HISTORY_HOURS} h)",
            description="How old the pulled data was: it drops to zero at each successful pull.",
            labels=labels,
            tooltips=tooltips,
            series=[
                Series(m, [v or 0.0 for v in h.pull_age_minutes[m]], kind="line", css_class=_MODULE_CLASSES[m])
                for m in aged
            ],
            unit="min",
        )
    if any(h.evses_heard) or h.evses_heard_before:
        charts["evses"] = column_chart(
            chart_id="chart-evse-heard",
            title=f"EVSEs by the hour their status was last heard (last {HISTORY_HOURS} h)",
            description=f"{sum(h.evses_heard)} EVSEs heard in the window, {h.evses_heard_before} not since before it.",
            labels=labels,
            tooltips=tooltips,
            series=[Series("EVSEs", h.evses_heard, css_class="series-3")],
        )
    return charts
