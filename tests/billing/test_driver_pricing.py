"""Driver pricing: quotes for a planned charge with line items, and running estimates of a session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.models import PartnerTerms
from billing.services import tariff_put
from billing.services.driver_pricing import Fee, NoTariff, emsp_fee, quote_charge, session_estimate
from emsp.models import ChargingSession, Partner
from emsp.services.sessions import session_put
from tests.factories import stored_location

pytestmark = pytest.mark.django_db

ENERGY_TARIFF = {
    "country_code": "IN",
    "party_id": "CPA",
    "id": "T1",
    "currency": "INR",
    "elements": [
        {
            "price_components": [{"type": "ENERGY", "price": 14, "vat": 18, "step_size": 1}],
            "restrictions": {"start_time": "22:00", "end_time": "06:00"},
        },
        {"price_components": [{"type": "ENERGY", "price": 18, "vat": 18, "step_size": 1}]},
    ],
    "last_updated": "2026-01-01T00:00:00Z",
}


@pytest.fixture
def evse(partner: Partner) -> Any:
    tariff_put(partner, ENERGY_TARIFF)
    PartnerTerms.objects.create(partner=partner, fee_flat=Decimal("10"), fee_percent=Decimal("5"))
    return stored_location(partner).evses.order_by("uid").first()


def test_a_quote_prices_the_planned_charge_in_local_time_and_adds_our_fee(evse: Any) -> None:
    connector = evse.connectors.get()
    # 15:00 in Bengaluru (09:30 UTC): day rate 18/kWh; 20 kWh → 360 + 18 % GST.
    quote = quote_charge(
        evse=evse, connector=connector, arrival=datetime(2026, 10, 1, 9, 30, tzinfo=UTC), energy_kwh=Decimal("20")
    )
    assert quote.cpo_cost_excl_vat == Decimal("360")
    assert quote.cpo_cost_incl_vat == Decimal("424.80")
    assert quote.fee_excl_vat == Decimal("28")  # 10 flat + 5 % of 360
    assert quote.fee_vat == Decimal("5.04")
    assert quote.total_incl_vat == Decimal("457.84")
    lines = quote.breakdown["lines"]
    assert [line["type"] for line in lines] == ["ENERGY", "EMSP_FEE"]
    assert lines[0]["volume"] == "20"
    assert quote.valid_until > quote.created_at


def test_a_night_arrival_gets_the_night_rate(evse: Any) -> None:
    connector = evse.connectors.get()
    # 23:30 in Bengaluru is 18:00 UTC: the 22:00–06:00 element applies.
    quote = quote_charge(
        evse=evse, connector=connector, arrival=datetime(2026, 10, 1, 18, 0, tzinfo=UTC), energy_kwh=Decimal("10")
    )
    assert quote.cpo_cost_excl_vat == Decimal("140")


def test_a_duration_quote_charges_at_the_connector_power(evse: Any) -> None:
    connector = evse.connectors.get()  # 60 kW
    quote = quote_charge(
        evse=evse, connector=connector, arrival=datetime(2026, 10, 1, 9, 30, tzinfo=UTC), duration=timedelta(minutes=30)
    )
    assert quote.cpo_cost_excl_vat == Decimal("540")  # 30 kWh at 18


def test_no_known_tariff_means_no_quote(partner: Partner) -> None:
    evse = stored_location(partner, tariff_ids=["UNKNOWN"]).evses.first()
    with pytest.raises(NoTariff):
        quote_charge(evse=evse, connector=evse.connectors.get(), arrival=datetime.now(UTC), energy_kwh=Decimal("5"))


def test_the_fee_is_never_negative_on_a_credit(partner: Partner) -> None:
    terms = PartnerTerms(
        partner=partner, fee_flat=Decimal("0"), fee_percent=Decimal("10"), fee_vat_percent=Decimal("18")
    )
    assert emsp_fee(terms, Decimal("-50"), "INR").excl_vat == Decimal("0")


def test_a_running_session_is_estimated_from_its_periods(evse: Any, partner: Partner) -> None:
    start = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
    change = session_put(
        partner,
        {
            "country_code": "IN",
            "party_id": "CPA",
            "id": "S1",
            "start_date_time": "2026-10-01T09:00:00Z",
            "kwh": 5,
            "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": "X", "type": "RFID", "contract_id": "C"},
            "auth_method": "COMMAND",
            "location_id": "LOC1",
            "evse_uid": evse.uid,
            "connector_id": "1",
            "currency": "INR",
            "charging_periods": [
                {"start_date_time": "2026-10-01T09:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 5}]}
            ],
            "status": "ACTIVE",
            "last_updated": "2026-10-01T09:10:00Z",
        },
    )
    estimate = session_estimate(ChargingSession.objects.get(pk=change.session.pk), now=start + timedelta(minutes=10))
    assert estimate is not None
    assert estimate.total_cost.excl_vat == Decimal("90")


def test_a_tariff_is_still_valid_at_its_end_date_time_as_the_engine_reads_it(partner: Partner) -> None:
    # mod_tariffs: end_date_time is "the time after which this tariff is no longer valid".
    from billing.pricing import parse_tariff
    from billing.services.driver_pricing import tariffs_for_connector

    tariff_put(partner, {**ENERGY_TARIFF, "end_date_time": "2026-10-01T00:00:00Z"})
    connector = stored_location(partner).evses.order_by("uid").first().connectors.get()
    end = datetime(2026, 10, 1, tzinfo=UTC)
    assert parse_tariff({**ENERGY_TARIFF, "end_date_time": "2026-10-01T00:00:00Z"}).valid_at(end)
    assert [t.tariff_id for t in tariffs_for_connector(connector, end)] == ["T1"]
    assert tariffs_for_connector(connector, end + timedelta(seconds=1)) == []


def test_a_connectors_tariffs_are_read_as_the_orm_reads_them(partner: Partner) -> None:
    """The plain-SQL read of a connector's tariffs gives the same tariffs, every field equal, as the ORM query it
    replaced (JSON, times, decimals included), in the same order: regular ones first, then the connector's."""
    from billing.models import Quote, Tariff
    from billing.services.driver_pricing import _tariffs_by_key, tariffs_for_connector
    from emsp.models import ci_key

    tariff_put(
        partner, {**ENERGY_TARIFF, "id": "T2", "type": "AD_HOC_PAYMENT", "start_date_time": "2026-01-01T00:00:00Z"}
    )
    tariff_put(partner, {**ENERGY_TARIFF, "id": "t1", "max_price": {"excl_vat": 99.5, "incl_vat": 117.41}})
    tariff_put(partner, {**ENERGY_TARIFF, "id": "T3", "end_date_time": "2026-02-01T00:00:00Z"})
    keys = [ci_key("IN", "CPA", t) for t in ("T2", "T1", "T3", "NONE")]
    by_orm = {t.pk: t for t in Tariff.objects.filter(ocpi_key__in=keys)}
    plain = _tariffs_by_key(keys)
    assert sorted(t.pk for t in plain) == sorted(by_orm) and len(plain) == 3
    for tariff in plain:
        for field in Tariff._meta.concrete_fields:
            assert getattr(tariff, field.attname) == getattr(by_orm[tariff.pk], field.attname), field.name
        assert not tariff._state.adding and tariff._state.db == "default"
    connector = stored_location(partner).evses.order_by("uid").first().connectors.get()
    connector.tariff_ids = ["T2", "T1", "T3"]
    chosen = tariffs_for_connector(connector, datetime(2026, 3, 1, tzinfo=UTC))
    assert [t.tariff_id for t in chosen] == ["t1", "T2"]  # regular first; T3 ended
    quote = quote_charge(
        evse=connector.evse, connector=connector, arrival=datetime(2026, 3, 1, tzinfo=UTC), energy_kwh=Decimal("12")
    )
    stored = Quote.objects.get(pk=quote.pk)
    assert (stored.tariff_id, stored.total_incl_vat, stored.breakdown) == ("t1", quote.total_incl_vat, quote.breakdown)


@pytest.mark.django_db
def test_our_fee_is_rounded_as_an_invoice_line_and_its_vat_on_it() -> None:
    """The ledger books the fee and its VAT from the receipt in hand; the receipt's PDF is printed later from its
    stored row; a settlement sums the stored fees. Rounded once, here, they are the same figures everywhere:
    7.0276 and 1.264968 had been booked 7.03 + 1.26, printed 7.03 + 1.27, and summed unrounded."""
    terms = PartnerTerms(fee_flat=Decimal("5"), fee_percent=Decimal("2"), fee_vat_percent=Decimal("18"))
    fee = emsp_fee(terms, Decimal("101.38"), "INR")
    assert (fee.excl_vat, fee.vat) == (Decimal("7.03"), Decimal("1.27"))  # VAT on the rounded line: 1.2654
    assert emsp_fee(terms, Decimal("101.38"), "JPY") == Fee(Decimal("7"), Decimal("1"))  # no minor unit
    from tests.billing.factories import DriverReceiptFactory

    receipt = DriverReceiptFactory(fee_excl_vat=fee.excl_vat, fee_vat=fee.vat)
    receipt.refresh_from_db()
    assert (receipt.fee_excl_vat, receipt.fee_vat) == (fee.excl_vat, fee.vat)  # stored as computed
