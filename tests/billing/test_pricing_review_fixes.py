"""Review fixes in the tariff engine: a CDR's reservation is not charging time for min/max_duration, and step_size
rounds only the last time-based dimension billed (TIME or PARKING_TIME, whichever came last)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from billing.models import CdrAudit, Dispute
from billing.pricing import price_cdr, quote
from billing.services import cdr_store
from billing.services.audit import cdr_audit
from emsp.models import Partner
from tests.factories import PartnerFactory, TokenFactory, stored_location

H = timedelta(hours=1)
# Reservation free; the first half hour of charging free, energy at 0.25 after it (mod_tariffs max_duration: the
# duration the Charging Session MUST last, exclusive).
FREE_FIRST_HALF_HOUR: dict[str, Any] = {
    "country_code": "BE",
    "party_id": "BEC",
    "id": "T",
    "currency": "EUR",
    "elements": [
        {
            "price_components": [{"type": "TIME", "price": 0, "vat": 10, "step_size": 1}],
            "restrictions": {"reservation": "RESERVATION"},
        },
        {
            "price_components": [{"type": "ENERGY", "price": 0, "vat": 10, "step_size": 1}],
            "restrictions": {"max_duration": 1800},
        },
        {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1}]},
    ],
    "last_updated": "2024-05-01T00:00:00Z",
}
# Charging 2.40/h and parking 1.00/h, both in 15-minute steps.
TIME_AND_PARKING: dict[str, Any] = {
    "id": "T",
    "currency": "EUR",
    "elements": [
        {
            "price_components": [
                {"type": "TIME", "price": 2.4, "vat": 10, "step_size": 900},
                {"type": "PARKING_TIME", "price": 1, "vat": 10, "step_size": 900},
            ]
        }
    ],
}
FIVE_MINUTES = 0.0833333333  # h; to the microsecond 5 minutes, as the engine reads volumes
TEN_MINUTES = 0.1666666667
TWENTY_MINUTES = 0.3333333333


def four(amount: Decimal) -> Decimal:
    """To 4 decimals: the engine is exact to 34 digits, and a third of a minute has no end."""
    return amount.quantize(Decimal("0.0001"))


def period(start: str, **dimensions: float) -> dict[str, Any]:
    return {"start_date_time": start, "dimensions": [{"type": k, "volume": v} for k, v in dimensions.items()]}


def reserved_then_charged() -> dict[str, Any]:
    """Reserved 10:00-10:30 (the CDR's start is the reservation's, mod_cdrs), then charges 10 kWh for an hour."""
    return {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T11:30:00Z",
        "currency": "EUR",
        "charging_periods": [
            period("2024-05-06T10:00:00Z", RESERVATION_TIME=0.5),
            period("2024-05-06T10:30:00Z", ENERGY=10, TIME=1),
        ],
        "tariffs": [FREE_FIRST_HALF_HOUR],
    }


# ---------------------------------------------------------------- reservation and min/max_duration


def test_a_cdrs_reservation_does_not_count_toward_max_duration() -> None:
    # mod_tariffs: a reservation "ends when the driver starts charging"; max_duration is the Charging Session's. The
    # free first half hour is the first half hour of charging (5 of the 10 kWh), not the reservation's.
    result = price_cdr(reserved_then_charged(), time_zone="UTC")
    assert result.total_cost.excl_vat == Decimal("1.25")  # 5 kWh free, 5 kWh at 0.25 (was 2.50)
    planned = quote(
        FREE_FIRST_HALF_HOUR,
        start=datetime(2024, 5, 6, 10, 30, tzinfo=UTC),
        time_zone="UTC",
        power_kw=Decimal(10),
        duration=H,
        reservation=H / 2,
    )
    assert result.total_cost == planned.total_cost


def test_a_cdrs_reservation_does_not_count_toward_min_duration() -> None:
    # Energy at 0.40 once the session has lasted half an hour, 0.20 before: the reservation's half hour does not
    # make the whole charge the dearer one.
    tariff = {
        "id": "T",
        "currency": "EUR",
        "elements": [
            {
                "price_components": [{"type": "TIME", "price": 0, "vat": 10, "step_size": 1}],
                "restrictions": {"reservation": "RESERVATION"},
            },
            {
                "price_components": [{"type": "ENERGY", "price": 0.40, "vat": 10, "step_size": 1}],
                "restrictions": {"min_duration": 1800},
            },
            {"price_components": [{"type": "ENERGY", "price": 0.20, "vat": 10, "step_size": 1}]},
        ],
    }
    result = price_cdr(reserved_then_charged(), tariffs=[tariff], time_zone="UTC")
    assert result.total_cost.excl_vat == Decimal("3.00")  # 5 kWh at 0.20, 5 kWh at 0.40 (was 10 x 0.40 = 4.00)
    assert result.total_time == Decimal("1.5")  # the CDR's total_time still covers the reservation


@pytest.fixture
def bec(db: None) -> Partner:
    return PartnerFactory(country_code="BE", party_id="BEC")


def test_a_reservation_cdr_billed_as_the_tariff_says_opens_no_dispute(
    bec: Partner, spec_example: Callable[[str], Any]
) -> None:
    # The audit reprices with price_cdr: reservation time counted as charging time priced the CDR at 2.50 and
    # disputed the CPO's correct 1.25.
    from ocpi.normalize import normalize_cdr

    location = stored_location(bec, location_id="LOC-AUDIT")
    location.time_zone = "UTC"
    location.save()
    cdr = copy.deepcopy(spec_example("cdr_example.json"))
    cdr["cdr_token"] |= {"country_code": settings.OCPI_COUNTRY_CODE, "party_id": settings.OCPI_PARTY_ID}
    TokenFactory(uid=cdr["cdr_token"]["uid"])
    cdr["cdr_location"]["id"] = "LOC-AUDIT"
    cdr.pop("total_time_cost")
    cdr |= reserved_then_charged() | {
        "total_cost": {"excl_vat": 1.25, "incl_vat": 1.375},
        "total_energy": 10,
        "total_time": 1.5,
        "total_reservation_cost": {"excl_vat": 0, "incl_vat": 0},
    }
    clean, _ = normalize_cdr(cdr, country_code=bec.country_code, party_id=bec.party_id)
    audit = cdr_audit(cdr_store(bec, clean).cdr)
    assert (audit.computed_excl_vat, audit.computed_incl_vat) == (Decimal("1.25"), Decimal("1.375"))
    assert audit.status != CdrAudit.Status.MISMATCH
    assert audit.flags == ["no_session"]  # for review only because no session of ours preceded it
    assert not Dispute.objects.exists()


# ---------------------------------------------------------------- step_size on the last time-based dimension


def test_parking_then_charging_rounds_the_charging_time_not_the_parking() -> None:
    # ocpi/ocpi#289: "The step_size rounds only the last time based TariffDimension" - here TIME.
    cdr = {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T10:25:00Z",
        "charging_periods": [
            period("2024-05-06T10:00:00Z", PARKING_TIME=FIVE_MINUTES),  # waits 5 minutes
            period("2024-05-06T10:05:00Z", TIME=TWENTY_MINUTES),  # charges 20 minutes
        ],
        "tariffs": [TIME_AND_PARKING],
    }
    result = price_cdr(cdr, time_zone="UTC")
    assert result.total_time_cost.excl_vat == Decimal("1.20")  # 20 -> 30 minutes at 2.40/h (was 0.80)
    assert four(result.total_parking_cost.excl_vat) == Decimal("0.0833")  # 5 minutes at 1.00/h (was 15: 0.25)


def test_charge_park_charge_adds_the_extra_to_the_last_charging_period() -> None:
    cdr = {
        "start_date_time": "2024-05-06T10:00:00Z",
        "end_date_time": "2024-05-06T10:25:00Z",
        "charging_periods": [
            period("2024-05-06T10:00:00Z", TIME=TEN_MINUTES),
            period("2024-05-06T10:10:00Z", PARKING_TIME=FIVE_MINUTES),
            period("2024-05-06T10:15:00Z", TIME=TEN_MINUTES),
        ],
        "tariffs": [TIME_AND_PARKING],
    }
    result = price_cdr(cdr, time_zone="UTC")
    assert result.total_time_cost.excl_vat == Decimal("1.20")  # 20 -> 30 minutes (was 0.80)
    assert four(result.total_parking_cost.excl_vat) == Decimal("0.0833")  # not rounded (was 0.25)
    added = [[four(cost.step_added) for cost in p.costs] for p in result.periods]
    assert added == [[0], [0], [Decimal("0.1667")]]  # the 10 minutes added to the last charging period, in hours
