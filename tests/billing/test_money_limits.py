"""Money beyond what our columns hold (numeric(14, 4): below 10**10) or what one charge can cost (MAX_AMOUNT):
a tariff and a CDR the OCPI normaliser accepts priced far beyond it (a unit price up to 10**6 times up to 10**5
kWh) are no price, never a failed INSERT; and a CDR's total with more than 4 decimals is stored rounded, said so,
not rounded silently by the column."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.models import Cdr, CdrAudit, DriverReceipt, Quote
from billing.services import tariff_put
from billing.services.audit import cdr_process
from billing.services.driver_pricing import NoTariff, quote_charge
from emsp.models import Connector, Partner
from ocpi.models import DataQualityIssue
from ocpi.normalize import normalize_cdr
from ocpi.normalize.sessions import MAX_AMOUNT
from tests.beckn.bap import TARIFF, FakeBap
from tests.factories import TokenFactory, stored_location
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db
CDRS = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def original(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    TokenFactory(uid="012345678")
    cdr = spec_example("cdr_example.json")  # BE*BEC 12345, 4.00 / 4.40 EUR, TIME 2.00/h
    return {**cdr, "cdr_token": {**cdr["cdr_token"], "country_code": "IN", "party_id": "EMS"}}


def _absurd_tariff(tariff_id: str = "T1") -> dict[str, Any]:
    """A tariff the normaliser accepts (a unit price up to 10**6 per kWh)."""
    return {**TARIFF, "id": tariff_id, "elements": [{"price_components": [
        {"type": "ENERGY", "price": 1000000, "vat": 18, "step_size": 1}]}]}  # fmt: skip


# --- the CDR audit ------------------------------------------------------------------------------


def test_a_cdr_priced_beyond_any_charge_is_audited_unpriceable_and_billed_as_the_cpo_priced_it(
    client_for: Callable[..., Any], original: dict[str, Any]
) -> None:
    """Its computed 1.2e10 failed saving the audit (numeric field overflow) at every run: never audited, receipted
    or billed. Needs the diff to billing/services/audit.py."""
    bec = client_for("BE", "BEC")
    tariff = {**original["tariffs"][0], "elements": [{"price_components": [
        {"type": "ENERGY", "price": 200000, "vat": 10.0, "step_size": 1}]}]}  # fmt: skip
    period = {"start_date_time": original["start_date_time"], "tariff_id": "12",
              "dimensions": [{"type": "ENERGY", "volume": 60000}]}  # fmt: skip
    cdr = {**original, "tariffs": [tariff], "total_energy": 60000, "charging_periods": [period]}
    assert bec.post(CDRS, cdr).status_code == 201
    stored = Cdr.objects.get()
    cdr_process(stored.pk)
    audit = CdrAudit.objects.get(cdr=stored)
    assert audit.status == CdrAudit.Status.UNPRICEABLE
    assert "unpriceable" in audit.flags
    assert (audit.computed_excl_vat, audit.computed_incl_vat, audit.difference_excl_vat) == (None, None, None)
    assert "beyond" in audit.error
    stored.refresh_from_db()
    assert stored.processed_at is not None
    receipt = DriverReceipt.objects.get(cdr=stored)  # the driver pays the CPO's bill, as for any unpriceable CDR
    assert receipt.cpo_cost_excl_vat == Decimal("4.00")


# --- quotes -------------------------------------------------------------------------------------


def _big_connector(partner: Partner) -> tuple[Any, Connector]:
    evse = stored_location(partner, tariff_ids=["T1"]).evses.order_by("uid").first()
    connector = evse.connectors.get()
    connector.max_electric_power = 1_000_000  # 1 MW; the EVSE normaliser takes up to 10 MW
    connector.save()
    return evse, connector


def test_a_quote_beyond_any_charge_is_no_price(partner: Partner) -> None:
    """1 MW for 24 h (beckn MAX_QUOTE_HOURS) at 10**6 per kWh: 2.4e10, which failed the Quote's INSERT."""
    tariff_put(partner, _absurd_tariff())
    evse, connector = _big_connector(partner)
    with pytest.raises(NoTariff, match="beyond"):
        quote_charge(evse=evse, connector=connector, arrival=datetime(2026, 10, 1, 9, 30, tzinfo=UTC),
                     duration=timedelta(hours=24))  # fmt: skip
    assert not Quote.objects.exists()


def test_a_quote_just_beyond_max_amount_is_no_price_and_one_within_it_is_quoted(partner: Partner) -> None:
    """The limit is MAX_AMOUNT, not the column's: 1000 kWh at 10**6 (1.18e9 with VAT) fits the column, and is no
    charge anyone pays."""
    tariff_put(partner, _absurd_tariff())
    evse, connector = _big_connector(partner)
    arrival = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)
    with pytest.raises(NoTariff):
        quote_charge(evse=evse, connector=connector, arrival=arrival, energy_kwh=Decimal("1000"))
    quote = quote_charge(evse=evse, connector=connector, arrival=arrival, energy_kwh=Decimal("10"))
    assert quote.cpo_cost_excl_vat == Decimal("10000000") and quote.total_incl_vat <= MAX_AMOUNT


def test_a_beckn_select_priced_beyond_any_charge_is_answered_quote_unavailable(
    partner: Partner, peer: FakePeer, django_capture_on_commit_callbacks: Any
) -> None:
    """The app gets on_select's error 40003, not a 500 and no callback."""
    tariff_put(partner, _absurd_tariff())
    evse, connector = _big_connector(partner)
    bap = FakeBap(peer)
    item = f"{evse.location.location_id}/{evse.uid}/{connector.connector_id}"
    message = {
        "order": {
            "provider": {"id": "IN*CPA"},
            "items": [{"id": item, "quantity": {"selected": {"measure": {"value": "24", "unit": "h"}}}}],
        }
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = bap.post("select", message)
    assert response.status_code == 200, response.content
    (callback,) = bap.callbacks("on_select")
    assert callback["error"]["code"] == "40003", callback
    assert not Quote.objects.exists()


# --- a CDR's totals as stored -------------------------------------------------------------------


def _normalized(original: dict[str, Any], total: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    return normalize_cdr({**original, "total_cost": total})


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (0.00001, Decimal("0.0000")),
        (99999999.99999, Decimal("100000000.0000")),  # MAX_AMOUNT itself, not beyond it
        (4.00005, Decimal("4.0001")),  # half away from zero, as PostgreSQL's numeric
    ],
)
def test_a_total_with_more_than_4_decimals_is_stored_rounded_and_said_so(
    client_for: Callable[..., Any], original: dict[str, Any], given: float, stored: Decimal
) -> None:
    bec = client_for("BE", "BEC")
    assert bec.post(CDRS, {**original, "total_cost": {"excl_vat": given, "incl_vat": given}}).status_code == 201
    cdr = Cdr.objects.get()
    assert (cdr.total_cost_excl_vat, cdr.total_cost_incl_vat) == (stored, stored)
    assert cdr.total_cost_excl_vat <= MAX_AMOUNT
    assert cdr.data["total_cost"] == {"excl_vat": given, "incl_vat": given}  # as the CPO stated it
    issue = DataQualityIssue.objects.get(partner=bec.partner, object_id="12345", code="rounded")
    assert issue.path.startswith("total_cost.") and str(stored) in issue.message and issue.fixed


def test_a_total_of_4_decimals_is_stored_as_given_without_a_finding(original: dict[str, Any]) -> None:
    _, issues = _normalized(original, {"excl_vat": 4.0001, "incl_vat": 4.4})
    assert not [i for i in issues if i.code == "rounded"]


def test_a_total_beyond_max_amount_is_refused_however_it_rounds(client_for: Callable[..., Any], original: Any) -> None:
    bec = client_for("BE", "BEC")
    response = bec.post(CDRS, {**original, "total_cost": {"excl_vat": 100000000.00004}})
    assert response.json()["status_code"] == 2001
    assert not Cdr.objects.exists()
