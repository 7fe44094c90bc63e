"""Edges of the tariff engine and of what is priced with it: unpriceable tariffs, price limits without
incl_vat, CDRs that switch tariffs, hostile tariff sizes, reservations in quotes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from billing import pricing
from billing.models import CdrAudit, Dispute, Tariff
from billing.services import cdr_store, tariff_put
from billing.services.audit import cdr_audit
from billing.services.driver_pricing import NoTariff, quote_charge
from emsp.models import Partner
from tests.factories import PartnerFactory, TokenFactory, stored_location

ARRIVAL = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)


def _in_tariff(**extra: Any) -> dict[str, Any]:
    tariff = {
        "country_code": "IN",
        "party_id": "CPA",
        "id": "T1",
        "currency": "INR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": 18, "vat": 18, "step_size": 1}]}],
        "last_updated": "2026-01-01T00:00:00Z",
    }
    tariff.update(extra)
    return tariff


@pytest.mark.django_db
def test_it_answers_no_tariff_for_a_stored_tariff_the_engine_refuses(partner: Partner) -> None:
    # Stored before the normaliser refused it (ocpi/normalize/tariffs.py): a quote says "no price", and Beckn
    # select answers that instead of its generic error.
    tariff_put(
        partner,
        _in_tariff(
            elements=[
                {
                    "price_components": [{"type": "ENERGY", "price": 14, "vat": 18, "step_size": 1}],
                    "restrictions": {"start_date": "2026-12-31", "end_date": "2026-01-01"},
                },
                {"price_components": [{"type": "ENERGY", "price": 18, "vat": 18, "step_size": 1}]},
            ]
        ),
    )
    assert Tariff.objects.count() == 1
    evse = stored_location(partner).evses.order_by("uid").first()
    with pytest.raises(NoTariff):
        quote_charge(evse=evse, connector=evse.connectors.get(), arrival=ARRIVAL, energy_kwh=Decimal(20))


# ---------------------------------------------------------------- min_price / max_price without incl_vat

T0 = datetime(2025, 6, 2, 10, 0, tzinfo=UTC)


def _eur_tariff(**extra: Any) -> dict[str, Any]:
    tariff = {
        "country_code": "NL",
        "party_id": "TNM",
        "id": "T1",
        "currency": "EUR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1}]}],
        "last_updated": "2025-01-01T00:00:00Z",
    }
    tariff.update(extra)
    return tariff


def test_it_raises_the_total_incl_vat_with_a_min_price_that_states_only_excl_vat() -> None:
    result = pricing.quote(
        _eur_tariff(min_price={"excl_vat": 0.50}),
        start=T0,
        time_zone="Europe/Amsterdam",
        power_kw=Decimal(10),
        energy_kwh=Decimal("1.2"),
    )
    assert result.min_price_applied
    assert result.total_cost.excl_vat == Decimal("0.50")
    assert result.total_cost.incl_vat == Decimal("0.55")  # not the unlimited 0.33


def test_it_lowers_the_total_incl_vat_with_a_max_price_that_states_only_excl_vat() -> None:
    result = pricing.quote(
        _eur_tariff(max_price={"excl_vat": 10}),
        start=T0,
        time_zone="Europe/Amsterdam",
        power_kw=Decimal(10),
        energy_kwh=Decimal(100),
    )
    assert result.max_price_applied
    assert (result.total_cost.excl_vat, result.total_cost.incl_vat) == (Decimal(10), Decimal(11))


def test_a_free_session_raised_to_min_price_has_no_known_incl_vat() -> None:
    result = pricing.quote(
        _eur_tariff(min_price={"excl_vat": 0.50}),
        start=T0,
        time_zone="Europe/Amsterdam",
        power_kw=Decimal(10),
        energy_kwh=Decimal(0),
    )
    assert result.total_cost.excl_vat == Decimal("0.50")
    assert result.total_cost.incl_vat is None
    assert "vat_unknown:min_price.incl_vat" in result.warnings


def test_a_min_price_with_incl_vat_still_limits_each_side_on_its_own() -> None:
    result = pricing.quote(
        _eur_tariff(min_price={"excl_vat": 0.50, "incl_vat": 0.60}),
        start=T0,
        time_zone="Europe/Amsterdam",
        power_kw=Decimal(10),
        energy_kwh=Decimal("1.2"),
    )
    assert (result.total_cost.excl_vat, result.total_cost.incl_vat) == (Decimal("0.50"), Decimal("0.60"))


# ---------------------------------------------------------------- CDR audits


@pytest.fixture
def bec(db: None) -> Partner:
    return PartnerFactory(country_code="BE", party_id="BEC")


def _audit(partner: Partner, spec_example: Callable[[str], Any], **fields: Any) -> CdrAudit:
    """The spec's example CDR, for a token of ours, at a location we hold, with `fields` replaced; audited."""
    from ocpi.normalize import normalize_cdr

    location = stored_location(partner, location_id="LOC-AUDIT")
    location.time_zone = "Europe/Brussels"
    location.save()
    cdr = copy.deepcopy(spec_example("cdr_example.json"))
    ours = {"country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID}
    cdr["cdr_token"] = {**cdr["cdr_token"], **ours}
    TokenFactory(uid=cdr["cdr_token"]["uid"])  # one we hold: a CDR of one we don't is held (unknown_token)
    cdr["cdr_location"]["id"] = "LOC-AUDIT"
    cdr.pop("total_time_cost")
    cdr.update(fields)
    clean, _ = normalize_cdr(cdr, country_code=partner.country_code, party_id=partner.party_id)
    return cdr_audit(cdr_store(partner, clean).cdr)


def _be_tariff(tariff_id: str, price: float, **extra: Any) -> dict[str, Any]:
    return {
        "country_code": "BE",
        "party_id": "BEC",
        "id": tariff_id,
        "currency": "EUR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": price, "vat": 10, "step_size": 1}]}],
        "last_updated": "2015-02-02T14:15:01Z",
        **extra,
    }


def _energy_period(at: str, kwh: float, tariff_id: str | None = None) -> dict[str, Any]:
    period: dict[str, Any] = {"start_date_time": at, "dimensions": [{"type": "ENERGY", "volume": kwh}]}
    if tariff_id:
        period["tariff_id"] = tariff_id
    return period


def test_a_correct_bill_at_min_price_without_incl_vat_opens_no_dispute(
    bec: Partner, spec_example: Callable[[str], Any]
) -> None:
    audit = _audit(
        bec,
        spec_example,
        tariffs=[_be_tariff("12", 0.25, min_price={"excl_vat": 0.50})],
        charging_periods=[_energy_period("2015-06-29T21:39:09Z", 1.2, "12")],
        total_energy=1.2,
        total_cost={"excl_vat": 0.50, "incl_vat": 0.55},
    )
    assert (audit.computed_excl_vat, audit.computed_incl_vat) == (Decimal("0.50"), Decimal("0.55"))
    assert audit.flags == ["no_session"]  # for review only because no session of ours preceded it
    assert not Dispute.objects.exists()


def test_a_cdr_that_switches_tariffs_prices_each_period_with_the_tariff_it_names(
    bec: Partner, spec_example: Callable[[str], Any]
) -> None:
    audit = _audit(
        bec,
        spec_example,
        tariffs=[_be_tariff("REG", 0.20, type="REGULAR"), _be_tariff("FAST", 0.40, type="PROFILE_FAST")],
        charging_periods=[
            _energy_period("2015-06-29T21:39:09Z", 10, "REG"),
            _energy_period("2015-06-29T22:39:09Z", 10, "FAST"),
        ],
        total_energy=20,
        total_cost={"excl_vat": 6.00, "incl_vat": 6.60},  # 10 kWh at 0.20 + 10 kWh at 0.40
    )
    assert (audit.computed_excl_vat, audit.computed_incl_vat) == (Decimal("6.00"), Decimal("6.60"))
    assert audit.flags == ["no_session"]
    assert not Dispute.objects.exists()


def test_a_tariff_switch_applies_step_size_once_with_the_last_tariffs_component() -> None:
    # mod_cdrs: "The step_size is not taken into account when switching between two Tariffs".
    regular = _be_tariff("REG", 0.20)
    fast = _be_tariff("FAST", 0.40) | {
        "elements": [{"price_components": [{"type": "ENERGY", "price": 0.40, "vat": 10, "step_size": 1000}]}]
    }
    cdr = {
        "currency": "EUR",
        "start_date_time": "2015-06-29T21:00:00Z",
        "end_date_time": "2015-06-29T23:00:00Z",
        "tariffs": [regular, fast],
        "charging_periods": [
            _energy_period("2015-06-29T21:00:00Z", 2.3, "REG"),
            _energy_period("2015-06-29T22:00:00Z", 1.1, "fast"),  # Tariff.id is a CiString
        ],
    }
    result = pricing.price_cdr(cdr, time_zone="Europe/Brussels")
    # 2.3 kWh at 0.20 (0.46), then 1.1 kWh at 0.40 (0.44); the 3.4 kWh total rounded up to 4 kWh with FAST's
    # 1 kWh step, the 0.6 kWh extra billed with it (0.24).
    assert result.total_cost.excl_vat == Decimal("1.14")
    assert "multiple_tariffs_priced_with_first" not in result.warnings


def test_a_cdr_switching_to_a_tariff_it_does_not_carry_is_for_review_not_disputed(
    bec: Partner, spec_example: Callable[[str], Any]
) -> None:
    audit = _audit(
        bec,
        spec_example,
        tariffs=[_be_tariff("REG", 0.20)],
        charging_periods=[
            _energy_period("2015-06-29T21:39:09Z", 10, "REG"),
            _energy_period("2015-06-29T22:39:09Z", 10, "FAST"),
        ],
        total_energy=20,
        total_cost={"excl_vat": 6.00, "incl_vat": 6.60},
    )
    assert audit.status == CdrAudit.Status.REVIEW
    assert "inexact_reprice" in audit.flags
    assert not Dispute.objects.exists()


def test_a_cdr_naming_no_tariff_is_priced_with_the_regular_one_not_the_ad_hoc_one_listed_first(
    bec: Partner, spec_example: Callable[[str], Any]
) -> None:
    adhoc = _be_tariff("ADHOC", 0.50, type="AD_HOC_PAYMENT")
    audit = _audit(
        bec,
        spec_example,
        tariffs=[adhoc, _be_tariff("REG", 0.30)],
        charging_periods=[_energy_period("2015-06-29T21:39:09Z", 10)],
        total_energy=10,
        total_cost={"excl_vat": 3.00, "incl_vat": 3.30},
    )
    assert audit.computed_excl_vat == Decimal("3.00")
    assert audit.flags == ["no_session"]
    assert not Dispute.objects.exists()


# ---------------------------------------------------------------- hostile sizes

DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


def _windows_tariff(count: int) -> dict[str, Any]:
    """`count` one-minute windows with a minute between them, 144 a day over the week: 288 times of day."""
    elements: list[dict[str, Any]] = []
    for i in range(count):
        start = 2 * (i % 144)
        elements.append(
            {
                "price_components": [{"type": "ENERGY", "price": 0.2, "vat": 10, "step_size": 1}],
                "restrictions": {
                    "start_time": f"{start // 60:02d}:{start % 60:02d}",
                    "end_time": f"{(start + 1) // 60:02d}:{(start + 1) % 60:02d}",
                    "day_of_week": [DAYS[i // 144 % 7]],
                },
            }
        )
    elements.append({"price_components": [{"type": "ENERGY", "price": 0.3, "vat": 10, "step_size": 1}]})
    return _be_tariff("MANY", 0.3) | {"elements": elements}


def test_it_refuses_to_price_beyond_its_segment_budget_instead_of_working_for_half_a_minute() -> None:
    cdr = {
        "id": "CDR1",
        "currency": "EUR",
        "start_date_time": "2025-05-01T00:00:00Z",
        "end_date_time": "2025-05-31T00:00:00Z",
        "tariffs": [_windows_tariff(2000)],
        "charging_periods": [
            {"start_date_time": "2025-05-01T00:00:00Z", "dimensions": [{"type": "ENERGY", "volume": 100}]}
        ],
    }
    with pytest.raises(pricing.CdrError) as refused:
        pricing.price_cdr(cdr, time_zone="Europe/Brussels")
    assert refused.value.path == "charging_periods"


def test_a_cdr_too_costly_to_reprice_is_unpriceable_not_disputed(
    bec: Partner, spec_example: Callable[[str], Any]
) -> None:
    # 500 elements and 288 times of day, what the normaliser still accepts; over 30 days beyond the budget.
    audit = _audit(
        bec,
        spec_example,
        start_date_time="2015-06-01T00:00:00Z",
        end_date_time="2015-06-30T23:00:00Z",
        tariffs=[_windows_tariff(499)],
        charging_periods=[_energy_period("2015-06-01T00:00:00Z", 100)],
        total_energy=100,
        total_cost={"excl_vat": 30.00, "incl_vat": 33.00},
    )
    assert audit.status == CdrAudit.Status.UNPRICEABLE, (audit.flags, audit.error)
    assert audit.error.startswith("charging_periods")
    assert not Dispute.objects.exists()


MANY_PERIODS = 2_001  # one more than billing.services.audit.STORED_PERIODS


def test_an_audit_of_thousands_of_sub_periods_stores_totals_without_them(
    bec: Partner, spec_example: Callable[[str], Any]
) -> None:
    start = datetime(2015, 6, 29, 0, 0, tzinfo=UTC)
    periods = [
        _energy_period((start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"), 0.01) for i in range(MANY_PERIODS)
    ]
    audit = _audit(
        bec,
        spec_example,
        start_date_time="2015-06-29T00:00:00Z",
        end_date_time=(start + timedelta(minutes=MANY_PERIODS)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tariffs=[_be_tariff("12", 0.25)],
        charging_periods=periods,
        total_energy=(MANY_PERIODS) / 100,
        total_cost={"excl_vat": 5.0025, "incl_vat": 5.50275},
    )
    assert audit.computed_excl_vat == Decimal("5.0025")
    assert audit.our_breakdown["periods"] == []
    assert audit.our_breakdown["periods_omitted"] == MANY_PERIODS
    assert audit.our_breakdown["breakdown"]["ENERGY"]


# ---------------------------------------------------------------- quotes include the booking's reservation


def _store_tariff_16(partner: Partner, spec_example: Callable[[str], Any]) -> None:
    from ocpi.normalize import normalize_tariff

    raw = spec_example("tariff_16_reservation_2_euro_fee_5_euro_per_hour.json")
    raw |= {"country_code": "IN", "party_id": "CPA", "id": "T1"}
    tariff_put(partner, normalize_tariff(raw, country_code="IN", party_id="CPA")[0])


@pytest.mark.django_db
def test_a_quote_at_a_reservable_evse_prices_the_reservation_the_booking_makes(
    partner: Partner, spec_example: Callable[[str], Any]
) -> None:
    _store_tariff_16(partner, spec_example)
    evse = stored_location(partner).evses.order_by("uid").first()
    arrival = timezone.now() + timedelta(hours=3)  # RESERVE_NOW goes 30 minutes ahead (BOOKING_RESERVE_LEAD_MINUTES)
    quote = quote_charge(evse=evse, connector=evse.connectors.get(), arrival=arrival, energy_kwh=Decimal(20))
    # 0.50 start + 5.00 energy, and the reservation: 2.00 fee + 0.5 h at 5.00/h.
    assert quote.cpo_cost_excl_vat == Decimal("10.00")
    lines = {line["type"]: line for line in quote.breakdown["lines"]}
    assert lines["RESERVATION_TIME"]["volume"] == "0.5"
    assert lines["RESERVATION_FLAT"]["price_excl_vat"] == "2.00"


@pytest.mark.django_db
def test_a_quote_at_an_evse_we_cannot_reserve_prices_no_reservation(
    partner: Partner, spec_example: Callable[[str], Any]
) -> None:
    _store_tariff_16(partner, spec_example)
    evse = stored_location(partner, capabilities=["REMOTE_START_STOP_CAPABLE"]).evses.order_by("uid").first()
    arrival = timezone.now() + timedelta(hours=3)
    quote = quote_charge(evse=evse, connector=evse.connectors.get(), arrival=arrival, energy_kwh=Decimal(20))
    assert quote.cpo_cost_excl_vat == Decimal("5.50")


# ---------------------------------------------------------------- search estimates for a window ahead


@pytest.mark.django_db
@pytest.mark.parametrize("fast_path", [True, False])
def test_a_search_for_a_window_ahead_shows_the_tariff_valid_then(
    monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    from beckn import catalogue
    from beckn.catalogue import SearchFilters, search
    from emsp.services.catalogue import locations_store
    from tests.factories import ocpi_location

    monkeypatch.setattr(catalogue, "FAST_PATH", fast_path)
    partner = PartnerFactory(country_code="IN", party_id="CPA", state="CONNECTED")
    location = ocpi_location("IN", "CPA", "LOC1", evses=1, latitude=12.97, longitude=77.59)
    location["evses"][0]["connectors"][0]["tariff_ids"] = ["NOW", "LATER"]  # type: ignore[index]
    locations_store(partner, [location])
    now = timezone.now().replace(microsecond=0)
    switch = now + timedelta(hours=2)

    def energy_at(price: int) -> list[dict[str, Any]]:
        return [{"price_components": [{"type": "ENERGY", "price": price, "vat": 18, "step_size": 1}]}]

    tariff_put(partner, _in_tariff(id="NOW", elements=energy_at(18), end_date_time=switch.isoformat()))
    tariff_put(partner, _in_tariff(id="LATER", elements=energy_at(25), start_date_time=switch.isoformat()))
    here = {"latitude": 12.97, "longitude": 77.59, "radius_m": 5000}

    window = (now + timedelta(hours=3), now + timedelta(hours=4))
    assert {hit.energy_price for hit in search(SearchFilters(**here, window=window), now=now)} == {Decimal(25)}
    assert {hit.energy_price for hit in search(SearchFilters(**here), now=now)} == {Decimal(18)}
