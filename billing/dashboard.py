"""The staff console home: sessions, energy, revenue and margin per day, open disputes and catalogue freshness
per CPO, computed with database aggregates and drawn as inline SVG (billing/charts.py); shown per role.
It lives in billing, the top of the domain, because it reads both billing's figures and the catalogue."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.admin import AdminSite
from django.db.models import Count, Min, Q, Sum
from django.db.models.functions import Abs, TruncDate
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.safestring import SafeString

from billing.charts import Bar, Series, bar_chart, column_chart
from billing.models import Cdr, Dispute, DriverReceipt
from billing.services.ledger import from_minor
from billing.services.settlement import fee_given_back_booked
from emsp.models import ChargingSession, CircuitBreaker, Evse, Partner
from emsp.services import breakers

WINDOW_DAYS = 30
ZERO = Decimal("0")

# What a user must hold to see each section: ops and admin see activity and freshness, finance and admin see
# revenue and margin, all three see the disputes (roles in emsp/roles.py).
SECTION_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "activity": ("emsp.view_chargingsession",),
    "revenue": ("billing.view_driverreceipt",),
    "disputes": ("billing.view_dispute",),
    "freshness": ("emsp.view_partner", "emsp.view_evse"),
}


@dataclass(frozen=True)
class Window:
    """Whole days in the current time zone, the last one being today; `end` is exclusive."""

    days: tuple[date, ...]
    start: datetime
    end: datetime


def window_of(*, days: int = WINDOW_DAYS, now: datetime | None = None) -> Window:
    today = timezone.localdate(now or timezone.now())
    first = today - timedelta(days=days - 1)
    zone = timezone.get_current_timezone()
    return Window(
        days=tuple(first + timedelta(days=i) for i in range(days)),
        start=datetime.combine(first, time.min, tzinfo=zone),
        end=datetime.combine(today + timedelta(days=1), time.min, tzinfo=zone),
    )


@dataclass(frozen=True)
class Activity:
    """Sessions started per day and their energy (kWh) as the CPOs report it."""

    days: tuple[date, ...]
    sessions: list[int]
    energy_kwh: list[Decimal]

    @property
    def rows(self) -> list[tuple[date, int, Decimal]]:
        return list(zip(self.days, self.sessions, self.energy_kwh, strict=True))


def activity_per_day(win: Window) -> Activity:
    """One GROUP BY over the window. INVALID sessions (declined, never charged) are left out."""
    rows = (
        ChargingSession.objects.filter(start_date_time__gte=win.start, start_date_time__lt=win.end)
        .exclude(status=ChargingSession.Status.INVALID)
        .annotate(day=TruncDate("start_date_time"))
        .values("day")
        .annotate(sessions=Count("pk"), energy=Sum("kwh"))
        .order_by("day")
    )
    by_day = {row["day"]: row for row in rows}
    return Activity(
        days=win.days,
        sessions=[by_day[d]["sessions"] if d in by_day else 0 for d in win.days],
        energy_kwh=[(by_day[d]["energy"] or ZERO) if d in by_day else ZERO for d in win.days],
    )


@dataclass(frozen=True)
class Revenue:
    """Per day in one currency: what drivers paid (incl. VAT) and our margin (our fee excl. VAT)."""

    currency: str
    days: tuple[date, ...]
    revenue: list[Decimal]
    margin: list[Decimal]

    @property
    def rows(self) -> list[tuple[date, Decimal, Decimal]]:
        return list(zip(self.days, self.revenue, self.margin, strict=True))

    @property
    def total_revenue(self) -> Decimal:
        return sum(self.revenue, ZERO)

    @property
    def total_margin(self) -> Decimal:
        return sum(self.margin, ZERO)


def revenue_per_day(win: Window) -> list[Revenue]:
    """Driver receipts by the day their CDR ended (as settlement periods count them), one series per currency.
    Refund receipts of credit CDRs are negative and net out on their day, less the fee and VAT the ledger gave
    back with them (a credit's receipt carries no fee: settlement.fee_given_back_booked), as the settlement's
    margin does: a voided charge leaves nothing."""
    rows = (
        DriverReceipt.objects.filter(cdr__end_date_time__gte=win.start, cdr__end_date_time__lt=win.end)
        .annotate(day=TruncDate("cdr__end_date_time"))
        .values("currency", "day")
        .annotate(revenue=Sum("total_incl_vat"), margin=Sum("fee_excl_vat"))
        .order_by("currency", "day")
    )
    per_currency: dict[str, dict[date, dict[str, Any]]] = {}
    for row in rows:
        per_currency.setdefault(row["currency"], {})[row["day"]] = row
    credits = Cdr.objects.filter(end_date_time__gte=win.start, end_date_time__lt=win.end, receipt__isnull=False)
    given_back = fee_given_back_booked(credits).annotate(day=TruncDate("end_date_time")).order_by()
    for currency, day, fee, fee_vat in given_back.values_list("currency", "day", "fee_back", "fee_vat_back"):
        row = per_currency.get(currency, {}).get(day)
        if row is not None:  # its receipt is counted on that day
            fee, fee_vat = from_minor(fee, currency), from_minor(fee_vat, currency)
            row["revenue"] = (row["revenue"] or ZERO) - fee - fee_vat
            row["margin"] = (row["margin"] or ZERO) - fee
    return [
        Revenue(
            currency=currency,
            days=win.days,
            revenue=[(by_day[d]["revenue"] or ZERO) if d in by_day else ZERO for d in win.days],
            margin=[(by_day[d]["margin"] or ZERO) if d in by_day else ZERO for d in win.days],
        )
        for currency, by_day in per_currency.items()
    ]


@dataclass(frozen=True)
class OpenDisputes:
    """Open and contested disputes of one partner in one currency; at stake = the sum of |CPO − ours|."""

    partner_id: int
    partner_name: str
    currency: str
    count: int
    at_stake: Decimal
    oldest_opened_at: datetime


def open_disputes() -> list[OpenDisputes]:
    rows = (
        Dispute.objects.filter(state__in=Dispute.OPEN_STATES)
        .values("partner_id", "partner__name", "currency")
        .annotate(count=Count("pk"), at_stake=Sum(Abs("difference")), oldest=Min("opened_at"))
        .order_by("-count", "partner__name", "currency")
    )
    return [
        OpenDisputes(
            partner_id=row["partner_id"],
            partner_name=row["partner__name"],
            currency=row["currency"],
            count=row["count"],
            at_stake=row["at_stake"] or ZERO,
            oldest_opened_at=row["oldest"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Freshness:
    """A partner's EVSEs (not REMOVED) and how many have a status older than Evse.STATUS_STALE_AFTER."""

    partner: Partner
    evses: int
    stale: int

    @property
    def stale_share(self) -> float | None:
        return self.stale / self.evses if self.evses else None

    @property
    def stale_percent(self) -> float | None:
        share = self.stale_share
        return None if share is None else round(share * 100, 1)


def catalogue_freshness(*, now: datetime | None = None) -> list[Freshness]:
    """Every connected partner and every partner with EVSEs, the stalest first. Counted as the health page
    counts (ocpi/health.py): withdrawn locations' EVSEs included, REMOVED ones not."""
    cutoff = (now or timezone.now()) - Evse.STATUS_STALE_AFTER
    counts = {
        row["location__partner_id"]: row
        for row in Evse.objects.exclude(status=Evse.Status.REMOVED)
        .values("location__partner_id")
        .annotate(evses=Count("pk"), stale=Count("pk", filter=Q(status_updated_at__lt=cutoff)))
        .order_by()
    }
    partners = Partner.objects.filter(Q(state=Partner.State.CONNECTED) | Q(pk__in=list(counts))).order_by("name")
    rows = [
        Freshness(
            partner=partner,
            evses=counts.get(partner.pk, {}).get("evses", 0),
            stale=counts.get(partner.pk, {}).get("stale", 0),
        )
        for partner in partners
    ]
    return sorted(rows, key=lambda r: (r.stale_share is None, -(r.stale_share or 0.0), r.partner.name))


# ---------------------------------------------------------------------------------------------
# The page: sections a user may see, with their charts
# ---------------------------------------------------------------------------------------------


def sections_for(user: Any) -> list[str]:
    return [name for name, perms in SECTION_PERMISSIONS.items() if user.has_perms(perms)]


@dataclass
class ConsoleHome:
    window: Window
    sections: list[str]
    activity: Activity | None = None
    revenue: list[Revenue] = field(default_factory=list)
    disputes: list[OpenDisputes] = field(default_factory=list)
    freshness: list[Freshness] = field(default_factory=list)
    open_circuits: list[CircuitBreaker] = field(default_factory=list)
    charts: dict[str, SafeString] = field(default_factory=dict)
    can_view_partners: bool = False
    can_view_settlements: bool = False

    @property
    def total_sessions(self) -> int:
        return sum(self.activity.sessions) if self.activity else 0

    @property
    def total_energy_kwh(self) -> Decimal:
        return sum(self.activity.energy_kwh, ZERO) if self.activity else ZERO

    @property
    def open_dispute_count(self) -> int:
        return sum(row.count for row in self.disputes)

    @property
    def at_stake_by_currency(self) -> list[tuple[str, Decimal]]:
        totals: dict[str, Decimal] = {}
        for row in self.disputes:
            totals[row.currency] = totals.get(row.currency, ZERO) + row.at_stake
        return sorted(totals.items())

    @property
    def stale_evses(self) -> tuple[int, int]:
        return sum(r.stale for r in self.freshness), sum(r.evses for r in self.freshness)

    @property
    def revenue_cards(self) -> list[tuple[Revenue, SafeString]]:
        return [(money, self.charts[f"revenue-{money.currency}"]) for money in self.revenue]

    @property
    def stale_minutes(self) -> int:
        return int(Evse.STATUS_STALE_AFTER.total_seconds() // 60)

    @property
    def first_day(self) -> date:
        return self.window.days[0]

    @property
    def last_day(self) -> date:
        return self.window.days[-1]


def _short(day: date) -> str:
    return f"{day.day} {day:%b}"


def _long(day: date) -> str:
    return f"{day:%a} {day.day} {day:%b %Y}"


# Charts list at most this many partners (the worst first); the tables below them list all.
CHART_PARTNERS = 12


def console_home(*, user: Any, now: datetime | None = None, days: int = WINDOW_DAYS) -> ConsoleHome:
    """The figures and charts of the sections `user` may see; the others are not computed at all."""
    now = now or timezone.now()
    win = window_of(days=days, now=now)
    home = ConsoleHome(
        window=win,
        sections=sections_for(user),
        can_view_partners=user.has_perm("emsp.view_partner"),
        can_view_settlements=user.has_perm("billing.view_settlement"),
    )
    labels = [_short(d) for d in win.days]
    tooltips = [_long(d) for d in win.days]
    period = f"the {days} days from {win.days[0]:%Y-%m-%d} to {win.days[-1]:%Y-%m-%d}"
    if "activity" in home.sections:
        home.activity = activity_per_day(win)
        home.charts["sessions"] = column_chart(
            chart_id="chart-sessions",
            title="Charging sessions started per day",
            description=f"{home.total_sessions} sessions in {period}.",
            labels=labels,
            tooltips=tooltips,
            series=[Series("sessions", home.activity.sessions)],
            unit="sessions",
        )
        home.charts["energy"] = column_chart(
            chart_id="chart-energy",
            title="Energy charged per day (kWh)",
            description=f"{home.total_energy_kwh:.1f} kWh in {period}.",
            labels=labels,
            tooltips=tooltips,
            series=[Series("kWh", home.activity.energy_kwh, kind="line", css_class="series-3", decimals=1)],
            unit="kWh",
        )
    if "revenue" in home.sections:
        home.revenue = revenue_per_day(win)
        for money in home.revenue:
            home.charts[f"revenue-{money.currency}"] = column_chart(
                chart_id=f"chart-revenue-{money.currency}",
                title=f"Revenue and margin per day ({money.currency})",
                description=(
                    f"Revenue {money.total_revenue:.2f} {money.currency} incl. VAT and margin "
                    f"{money.total_margin:.2f} {money.currency} excl. VAT in {period}."
                ),
                labels=labels,
                tooltips=tooltips,
                series=[
                    Series("revenue", money.revenue, decimals=2),
                    Series("margin", money.margin, css_class="series-2", decimals=2),
                ],
                unit=money.currency,
            )
    if "disputes" in home.sections:
        home.disputes = open_disputes()
        per_partner: dict[str, int] = {}
        for row in home.disputes:
            per_partner[row.partner_name] = per_partner.get(row.partner_name, 0) + row.count
        worst = sorted(per_partner.items(), key=lambda item: (-item[1], item[0]))[:CHART_PARTNERS]
        if worst:
            home.charts["disputes"] = bar_chart(
                chart_id="chart-disputes",
                title="Open disputes per partner",
                description=f"{home.open_dispute_count} open or contested disputes.",
                bars=[Bar(name, n, f"{name}: {n} open dispute{'s' if n != 1 else ''}") for name, n in worst],
                css_class="series-2",
            )
    if "freshness" in home.sections:
        home.freshness = catalogue_freshness(now=now)
        home.open_circuits = breakers.not_closed()
        measured = [r for r in home.freshness if r.evses][:CHART_PARTNERS]
        if measured:
            minutes = int(Evse.STATUS_STALE_AFTER.total_seconds() // 60)
            home.charts["freshness"] = bar_chart(
                chart_id="chart-freshness",
                title=f"Share of EVSEs with a status older than {minutes} min, per CPO",
                description="; ".join(f"{r.partner.name}: {r.stale_percent:g} %" for r in measured),
                bars=[
                    Bar(
                        r.partner.name,
                        r.stale_percent or 0.0,
                        f"{r.partner.name}: {r.stale} of {r.evses} EVSEs older than {minutes} min",
                        value_text=f"{r.stale_percent:g} %",
                    )
                    for r in measured
                ],
                maximum=100,
                css_class="series-4",
            )
    return home


def console_home_install(site: AdminSite) -> None:
    """Give `site`'s index page the dashboard (templates/admin/index.html renders `console`), without
    replacing the site other apps register on. Called once from BillingConfig.ready, before the URLs are built."""
    if getattr(site.index, "with_console_home", False):
        return
    index: Callable[..., HttpResponse] = site.index

    def index_with_console_home(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"console": console_home(user=request.user), **(extra_context or {})}
        return index(request, extra_context=context)

    index_with_console_home.with_console_home = True  # type: ignore[attr-defined]
    site.index = index_with_console_home  # type: ignore[method-assign]
