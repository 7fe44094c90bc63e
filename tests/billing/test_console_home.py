"""Console home: the figures on a hand-built data set, the sections each role sees, and no external assets."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from billing import charts, dashboard
from billing.models import Dispute
from emsp.models import ChargingSession, Evse, Partner
from tests.billing.dispute_factories import QueueDisputeFactory
from tests.billing.factories import CdrFactory, CreditCdrFactory, DriverReceiptFactory
from tests.factories import PartnerFactory, stored_location

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 10, 30, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def day(days_ago: int, hour: int = 10) -> datetime:
    return datetime(TODAY.year, TODAY.month, TODAY.day, hour, tzinfo=UTC) - timedelta(days=days_ago)


def charging_session(partner: Partner, start: datetime, kwh: str, status: str = "COMPLETED") -> ChargingSession:
    n = ChargingSession.objects.count() + 1
    return ChargingSession.objects.create(
        partner=partner,
        country_code=partner.country_code,
        party_id=partner.party_id,
        session_id=f"S{n}",
        ocpi_key=f"{partner.party_key}*S{n}",
        status=status,
        start_date_time=start,
        kwh=Decimal(kwh),
        currency="EUR",
        ocpi_location_id="LOC1",
        evse_uid="LOC1-E1",
        connector_id="1",
        token_uid="TOKEN000001",
        auth_method="WHITELIST",
        last_updated=start,
        data={},
    )


def receipt(partner: Partner, end: datetime, currency: str, cost: str, vat: str, fee: str, fee_vat: str) -> None:
    cdr = CdrFactory(partner=partner, end_date_time=end, currency=currency, total_cost_excl_vat=Decimal(cost))
    DriverReceiptFactory(cdr=cdr, cpo_vat=Decimal(vat), fee_excl_vat=Decimal(fee), fee_vat=Decimal(fee_vat))


@pytest.fixture
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def data_set(frozen: None) -> dict[str, Partner]:
    """Two CPOs with sessions, receipts, disputes and EVSEs whose every dashboard figure is known."""
    cpa = PartnerFactory(name="CPO A", country_code="IN", party_id="CPA")
    cpb = PartnerFactory(name="CPO B", country_code="IN", party_id="CPB")
    PartnerFactory(name="Not yet", country_code="IN", party_id="NEW", state=Partner.State.NEW)

    # Sessions: today 2 (15 kWh), two days ago 1 (7 kWh); an INVALID one and one before the window don't count.
    charging_session(cpa, day(0, hour=0), "10.5")
    charging_session(cpb, day(0, hour=11), "4.5", status="ACTIVE")
    charging_session(cpa, day(2), "7")
    charging_session(cpa, day(0), "99", status="INVALID")
    charging_session(cpa, day(30, hour=23), "50")

    # Receipts: yesterday two EUR (13.08 + 26.16, fees 1 + 2); today one INR and a EUR refund of the first.
    receipt(cpa, day(1), "EUR", "10", "1.9", "1.0", "0.18")
    receipt(cpb, day(1), "EUR", "20", "3.8", "2.0", "0.36")
    receipt(cpa, day(0), "INR", "100", "18", "10", "1.8")
    first = CdrFactory._meta.model.objects.get(total_cost_excl_vat=Decimal("10"), currency="EUR")
    credit = CreditCdrFactory(credited_cdr=first, end_date_time=day(0))
    DriverReceiptFactory(cdr=credit, cpo_vat=Decimal("-1.9"), fee_excl_vat=Decimal("-1.0"), fee_vat=Decimal("-0.18"))
    receipt(cpa, day(31), "EUR", "500", "95", "50", "9")  # before the window

    # Disputes: CPO A three open or contested EUR (|1.5| + |-0.5| + |3| at stake), one accepted; CPO B one INR.
    QueueDisputeFactory(cdr__partner=cpa, cdr__total_cost_excl_vat=Decimal("10.5"))
    QueueDisputeFactory(cdr__partner=cpa, cdr__total_cost_excl_vat=Decimal("9"), our_amount=Decimal("9.5"))
    QueueDisputeFactory(cdr__partner=cpa, cdr__total_cost_excl_vat=Decimal("12"), state=Dispute.State.CONTESTED)
    QueueDisputeFactory(cdr__partner=cpa, cdr__total_cost_excl_vat=Decimal("40"), state=Dispute.State.ACCEPTED)
    QueueDisputeFactory(cdr__partner=cpb, cdr__currency="INR", currency="INR", cdr__total_cost_excl_vat=Decimal("19"))

    # EVSEs of CPO A: 4 stored now; one heard 20 min ago, one REMOVED (not counted) also long ago.
    stored_location(cpa, location_id="LOC1", evses=4)
    evses = list(Evse.objects.filter(location__partner=cpa).order_by("uid"))
    Evse.objects.filter(pk=evses[0].pk).update(status_updated_at=NOW - timedelta(minutes=20))
    Evse.objects.filter(pk=evses[1].pk).update(status_updated_at=NOW - timedelta(minutes=14))
    Evse.objects.filter(pk=evses[2].pk).update(status=Evse.Status.REMOVED, status_updated_at=NOW - timedelta(days=2))
    return {"cpa": cpa, "cpb": cpb}


def test_it_counts_sessions_and_energy_per_day(data_set: dict[str, Partner]) -> None:
    activity = dashboard.activity_per_day(dashboard.window_of(now=NOW))
    assert len(activity.days) == 30
    assert activity.days[-1] == TODAY
    by_day = {d: (n, kwh) for d, n, kwh in activity.rows}
    assert by_day[TODAY] == (2, Decimal("15"))
    assert by_day[TODAY - timedelta(days=2)] == (1, Decimal("7"))
    assert by_day[TODAY - timedelta(days=1)] == (0, Decimal("0"))
    assert sum(activity.sessions) == 3


def test_it_sums_revenue_and_margin_per_day_and_currency(data_set: dict[str, Partner]) -> None:
    revenue = {r.currency: r for r in dashboard.revenue_per_day(dashboard.window_of(now=NOW))}
    assert sorted(revenue) == ["EUR", "INR"]
    eur = {d: (total, margin) for d, total, margin in revenue["EUR"].rows}
    assert eur[TODAY - timedelta(days=1)] == (Decimal("39.24"), Decimal("3"))
    assert eur[TODAY] == (Decimal("-13.08"), Decimal("-1"))
    assert revenue["EUR"].total_revenue == Decimal("26.16")
    assert revenue["EUR"].total_margin == Decimal("2")
    assert revenue["INR"].total_revenue == Decimal("129.80")
    assert revenue["INR"].total_margin == Decimal("10")


def test_it_sums_open_disputes_per_partner_and_currency(data_set: dict[str, Partner]) -> None:
    rows = {(r.partner_name, r.currency): r for r in dashboard.open_disputes()}
    assert set(rows) == {("CPO A", "EUR"), ("CPO B", "INR")}
    assert (rows["CPO A", "EUR"].count, rows["CPO A", "EUR"].at_stake) == (3, Decimal("5"))
    assert (rows["CPO B", "INR"].count, rows["CPO B", "INR"].at_stake) == (1, Decimal("10"))


def test_it_measures_catalogue_freshness_per_cpo(data_set: dict[str, Partner]) -> None:
    rows = {r.partner.name: r for r in dashboard.catalogue_freshness(now=NOW)}
    assert set(rows) == {"CPO A", "CPO B"}  # connected or with EVSEs; the NEW partner has neither
    assert (rows["CPO A"].evses, rows["CPO A"].stale, rows["CPO A"].stale_percent) == (3, 1, 33.3)
    assert (rows["CPO B"].evses, rows["CPO B"].stale_share) == (0, None)


def test_it_agrees_with_the_partner_health_page_on_staleness(data_set: dict[str, Partner]) -> None:
    from ocpi.health import partner_health

    row = next(r for r in dashboard.catalogue_freshness(now=NOW) if r.partner == data_set["cpa"])
    assert row.stale_share == partner_health(data_set["cpa"], now=NOW).stale_evse_share


# ---------------------------------------------------------------------------------------------
# The page, per role
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def login(db: None) -> Callable[[str | None], Client]:
    """A client logged in as a staff member of one group (None: staff without any permission)."""

    def make(group: str | None) -> Client:
        user = User.objects.create_user(f"{group or 'nobody'}-user", password="pw-123456-x", is_staff=True)
        if group:
            user.groups.add(Group.objects.get(name=group))
        client = Client()
        client.force_login(user)
        return client

    return make


def home(client: Client) -> str:
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    return response.content.decode()


SECTIONS = {
    "sessions": 'id="console-sessions"',
    "energy": 'id="console-energy"',
    "revenue": 'id="console-revenue-EUR"',
    "disputes": 'id="console-disputes"',
    "freshness": 'id="console-freshness"',
}


@pytest.mark.parametrize(
    ("group", "shown"),
    [
        ("admin", {"sessions", "energy", "revenue", "disputes", "freshness"}),
        ("ops", {"sessions", "energy", "disputes", "freshness"}),
        ("finance", {"revenue", "disputes"}),
    ],
)
def test_each_role_sees_its_sections_and_no_others(
    data_set: dict[str, Partner], login: Callable[[str | None], Client], group: str, shown: set[str]
) -> None:
    page = home(login(group))
    for section, marker in SECTIONS.items():
        assert (marker in page) == (section in shown), f"{group}: {section}"
    assert page.index('id="console-home"') < page.index('class="app-')  # above the app list


def test_staff_without_permissions_get_the_plain_index(login: Callable[[str | None], Client]) -> None:
    page = home(login(None))
    assert 'id="console-home"' not in page
    assert "console.css" not in page


def test_the_page_shows_the_figures(data_set: dict[str, Partner], login: Callable[[str | None], Client]) -> None:
    page = home(login("admin"))
    assert re.search(r'id="kpi-sessions">3<', page)
    assert re.search(r'id="kpi-energy">22\.0<', page)
    assert re.search(r'id="kpi-revenue-EUR">26\.16<', page)
    assert re.search(r'id="kpi-margin-INR">10\.00<', page)
    assert re.search(r'id="kpi-disputes">4<', page)
    assert "5.00 EUR" in page and "10.00 INR" in page
    assert '<td class="num">39.24</td><td class="num">3.00</td>' in page  # yesterday, EUR
    assert "33.3 %" in page


def test_it_links_each_cpo_to_its_health_page(
    data_set: dict[str, Partner], login: Callable[[str | None], Client]
) -> None:
    page = home(login("ops"))
    for partner in data_set.values():
        assert reverse("admin:emsp_partner_health", args=[partner.pk]) in page


def test_charts_are_inline_svg_with_a_title_per_bar(
    data_set: dict[str, Partner], login: Callable[[str | None], Client]
) -> None:
    page = home(login("admin"))
    assert page.count('<svg class="console-chart"') == 6  # sessions, energy, EUR, INR, disputes, freshness
    assert f"<title>{TODAY:%a} {TODAY.day} {TODAY:%b %Y}: 2 sessions</title>" in page
    assert "<title>CPO A: 1 of 3 EVSEs older than 15 min</title>" in page
    assert page.count("<details") >= 6  # every chart has its numbers as a table


EXTERNAL = re.compile(r"""(?:src|href|action|xlink:href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def test_the_page_loads_nothing_from_other_hosts(
    data_set: dict[str, Partner], login: Callable[[str | None], Client]
) -> None:
    page = home(login("admin"))
    assert not EXTERNAL.findall(page)
    assert "<script" not in page.split('id="console-home"', 1)[1].split('id="content-related"', 1)[0]
    css = (Path(settings.BASE_DIR) / "static" / "emsp" / "console.css").read_text()
    assert "url(" not in css and "@import" not in css


def test_the_index_hook_is_installed_once() -> None:
    index = admin.site.index
    dashboard.console_home_install(admin.site)
    assert admin.site.index is index


def test_axis_ticks_are_round_and_cover_the_data() -> None:
    assert charts.axis_ticks([0, 3, 7]) == [0, 2, 4, 6, 8]
    assert charts.axis_ticks([Decimal("-13.08"), Decimal("39.24")]) == [-20, 0, 20, 40]
    assert charts.axis_ticks([0, 0]) == [0, 1]


def test_chart_labels_are_escaped() -> None:
    svg = charts.bar_chart(
        chart_id="c", title="t", description="d", bars=[charts.Bar("<b>CPO</b>", 1, "<script>x</script>")]
    )
    assert "<b>" not in svg and "<script>" not in svg
