"""Tariffs the pricing engine refuses are refused on PUT (2001, naming the field), never stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.models import Tariff
from billing.pricing import price_cdr
from ocpi.normalize import Rejected, normalize_tariff
from tests.conftest import OcpiTestClient

pytestmark = pytest.mark.django_db

BASE = "/ocpi/emsp/2.2.1/tariffs"


def _tariff(**extra: Any) -> dict[str, Any]:
    tariff = {
        "country_code": "DE",
        "party_id": "ALL",
        "id": "T1",
        "currency": "EUR",
        "elements": [{"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1}]}],
        "last_updated": "2025-01-01T00:00:00Z",
    }
    tariff.update(extra)
    return tariff


def _restricted(restrictions: dict[str, Any]) -> dict[str, Any]:
    return _tariff(
        elements=[
            {
                "price_components": [{"type": "ENERGY", "price": 0.30, "vat": 10, "step_size": 1}],
                "restrictions": restrictions,
            },
            {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1}]},
        ]
    )


# An element whose window is empty (end_date before start_date, min_kwh above max_kwh) never applies: it is
# dropped, not the tariff (tests/ocpi/test_lenient_again.py).
REFUSED = [
    (_restricted({"start_date": "2025-02-30"}), "elements[0].restrictions.start_date"),
    (_restricted({"start_date": "0999-01-01"}), "elements[0].restrictions.start_date"),
    (_tariff(min_price={"excl_vat": 5}, max_price={"excl_vat": 1}), "min_price.excl_vat"),
    (_tariff(currency="XTS"), "currency"),
    (_tariff(currency="XXX"), "currency"),
    (_tariff(currency="XAU"), "currency"),
]


@pytest.mark.parametrize(("tariff", "path"), REFUSED)
def test_it_rejects_what_the_engine_cannot_price_naming_the_field(tariff: dict[str, Any], path: str) -> None:
    with pytest.raises(Rejected) as refused:
        normalize_tariff(tariff, country_code="DE", party_id="ALL")
    assert refused.value.path == path
    assert refused.value.code == "unpriceable_tariff"


@pytest.mark.parametrize(("tariff", "path"), REFUSED)
def test_a_put_of_an_unpriceable_tariff_is_2001_and_nothing_stored(
    client_for: Callable[..., OcpiTestClient], tariff: dict[str, Any], path: str
) -> None:
    response = client_for("DE", "ALL").put(f"{BASE}/DE/ALL/T1", tariff)
    assert response.json()["status_code"] == 2001
    assert path in response.json()["status_message"]
    assert not Tariff.objects.exists()


def test_every_official_tariff_example_still_normalises(vectors: Any, spec_example: Callable[[str], Any]) -> None:
    names = sorted(p.name for p in (vectors / "ocpi" / "spec-2.2.1").glob("tariff_*.json") if "expected" not in p.name)
    for name in names:
        normalize_tariff(spec_example(name), country_code="DE", party_id="ALL")


def _minute_windows(count: int) -> list[dict[str, Any]]:
    """`count` elements, each one minute of a Sunday with a minute between them (two times of day each: the
    hostile shape, every window splits every day)."""
    elements = []
    for i in range(count):
        start, end = 2 * i % 1440, 2 * i % 1440 + 1
        elements.append(
            {
                "price_components": [{"type": "ENERGY", "price": 0.2, "vat": 21, "step_size": 1}],
                "restrictions": {
                    "start_time": f"{start // 60:02d}:{start % 60:02d}",
                    "end_time": f"{end // 60 % 24:02d}:{end % 60:02d}",
                    "day_of_week": ["SUNDAY"],
                },
            }
        )
    return [*elements, {"price_components": [{"type": "ENERGY", "price": 0.3, "vat": 21, "step_size": 1}]}]


def test_a_tariff_of_more_than_1000_elements_is_2001(client_for: Callable[..., OcpiTestClient]) -> None:
    plain = {"price_components": [{"type": "ENERGY", "price": 0.3, "vat": 21, "step_size": 1}]}
    response = client_for("DE", "ALL").put(f"{BASE}/DE/ALL/T1", _tariff(elements=[plain] * 1001))
    assert response.json()["status_code"] == 2001
    assert "at most 1000" in response.json()["status_message"]
    assert not Tariff.objects.exists()


DAYS = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


def _quarter_hour_price(day: int, quarter: int) -> Decimal:
    return Decimal(20 + (day * 96 + quarter) % 37) / 100  # 0.20 to 0.56, every quarter of the week its own


def _weekly_quarter_hours() -> list[dict[str, Any]]:
    """A week of quarter-hour prices, one element per day and quarter (672), as dynamic-price CPOs publish."""
    elements = []
    for day, name in enumerate(DAYS):
        for quarter in range(96):
            start, end = quarter * 15, (quarter + 1) * 15 % 1440
            elements.append(
                {
                    "price_components": [
                        {"type": "ENERGY", "price": float(_quarter_hour_price(day, quarter)), "vat": 21, "step_size": 1}
                    ],
                    "restrictions": {
                        "start_time": f"{start // 60:02d}:{start % 60:02d}",
                        "end_time": f"{end // 60:02d}:{end % 60:02d}",
                        "day_of_week": [name],
                    },
                }
            )
    return elements


def test_a_week_of_quarter_hour_prices_is_taken_and_priced_quarter_by_quarter(
    client_for: Callable[..., OcpiTestClient],
) -> None:
    tariff = _tariff(elements=_weekly_quarter_hours())
    assert len(tariff["elements"]) == 672
    response = client_for("DE", "ALL").put(f"{BASE}/DE/ALL/T1", tariff)
    assert response.json()["status_code"] == 1000, response.json()
    # Sunday 23:00 to Monday 01:00 in Berlin at 7 kW: 1.75 kWh in each of eight quarters, each at its own price.
    periods, expected = [], Decimal(0)
    begin = datetime(2026, 3, 1, 22, 0, tzinfo=UTC)  # Sunday 23:00 CET
    for i in range(8):
        day, quarter = (6, 92 + i) if i < 4 else (0, i - 4)
        expected += Decimal("1.75") * _quarter_hour_price(day, quarter)
        start = (begin + timedelta(minutes=15 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        periods.append({"start_date_time": start, "dimensions": [{"type": "ENERGY", "volume": 1.75}]})
    cdr = {
        "id": "C1",
        "start_date_time": "2026-03-01T22:00:00Z",
        "end_date_time": "2026-03-02T00:00:00Z",
        "currency": "EUR",
        "charging_periods": periods,
    }
    stored = Tariff.objects.get()
    result = price_cdr(cdr, tariffs=[stored.data], time_zone="Europe/Berlin")
    assert result.total_cost.excl_vat == expected


def test_a_tariff_of_more_than_288_times_of_day_is_rejected() -> None:
    with pytest.raises(Rejected) as refused:
        normalize_tariff(_tariff(elements=_minute_windows(145)), country_code="DE", party_id="ALL")  # 290 times
    assert refused.value.code == "too_many_elements"
    assert refused.value.path == "elements"
    normalize_tariff(_tariff(elements=_minute_windows(144)), country_code="DE", party_id="ALL")  # 288: accepted
