"""Lenient where no price changes: a tariff element that can never apply is dropped (not the tariff), a CDR total
with VAT below the total without is kept and held for review (not refused), and a CDR retry whose coordinates
are rendered again differently is the same CDR."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from billing import pricing
from billing.models import Cdr, DriverReceipt, Tariff
from billing.services import records
from billing.services.audit import HELD, cdr_process
from ocpi.models import DataQualityIssue
from ocpi.normalize import normalize_cdr
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db

TARIFFS = "/ocpi/emsp/2.2.1/tariffs"
CDRS = "/ocpi/emsp/2.2.1/cdrs"
OURS = {"country_code": "IN", "party_id": "EMS", "uid": "012345678", "type": "RFID", "contract_id": "IN-EMS-C1"}


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def cdr(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("cdr_example.json")


def _tariff(first_restrictions: dict[str, Any], *, fallback: bool = True) -> dict[str, Any]:
    """The reviewer's tariff: a 0.30/kWh element restricted to an empty window, then a plain 0.25/kWh one."""
    elements = [
        {
            "price_components": [{"type": "ENERGY", "price": 0.30, "vat": 10, "step_size": 1}],
            "restrictions": first_restrictions,
        }
    ]
    if fallback:
        elements.append({"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1}]})
    return {
        "country_code": "DE",
        "party_id": "ALL",
        "id": "T1",
        "currency": "EUR",
        "elements": elements,
        "last_updated": "2025-01-01T00:00:00Z",
    }


EMPTY_WINDOWS = [
    {"start_date": "2025-06-10", "end_date": "2025-06-01"},
    {"min_kwh": 10, "max_kwh": 5},
    {"min_power": 22, "max_power": 11},
    {"min_current": 32, "max_current": 16},
    {"min_duration": 600, "max_duration": 60},
    # [min, max) with min == max holds nothing either (the engine never applied such an element)
    {"start_date": "2025-06-05", "end_date": "2025-06-05"},
    {"min_kwh": 5, "max_kwh": 5},
    {"min_power": 11, "max_power": 11},
    {"min_current": 16, "max_current": 16},
    {"min_duration": 600, "max_duration": 600},
]


@pytest.mark.parametrize("window", EMPTY_WINDOWS)
def test_it_drops_a_tariff_element_that_can_never_apply_and_keeps_the_tariff(
    client_for: Callable[..., OcpiTestClient], window: dict[str, Any]
) -> None:
    response = client_for("DE", "ALL").put(f"{TARIFFS}/DE/ALL/T1", _tariff(window))
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    stored = Tariff.objects.get()
    assert stored.data["elements"] == [
        {"price_components": [{"type": "ENERGY", "price": 0.25, "vat": 10, "step_size": 1}]}
    ]
    finding = DataQualityIssue.objects.get(code="empty_restriction_window")
    assert (finding.object_id, finding.fixed) == ("T1", False)
    assert finding.path.startswith("elements[0].restrictions.")
    priced = pricing.quote(
        stored.data,
        start=datetime(2025, 6, 5, 12, tzinfo=UTC),
        time_zone="Europe/Berlin",
        power_kw=Decimal(11),
        energy_kwh=Decimal(10),
    )
    assert priced.total_cost.excl_vat == Decimal("2.50")  # 10 kWh at the remaining element's 0.25


def test_a_tariff_whose_only_element_can_never_apply_is_still_refused(
    client_for: Callable[..., OcpiTestClient],
) -> None:
    response = client_for("DE", "ALL").put(
        f"{TARIFFS}/DE/ALL/T1", _tariff({"min_kwh": 10, "max_kwh": 5}, fallback=False)
    )
    assert response.json()["status_code"] == 2001
    assert not Tariff.objects.exists()


def test_an_unreadable_date_in_a_window_is_still_refused_not_dropped(
    client_for: Callable[..., OcpiTestClient],
) -> None:
    """Only a readable window is empty: "2025-02-30" is no day, and the engine refuses it as before."""
    window = {"start_date": "2025-02-30", "end_date": "2025-01-01"}
    response = client_for("DE", "ALL").put(f"{TARIFFS}/DE/ALL/T1", _tariff(window))
    assert response.json()["status_code"] == 2001
    assert "start_date" in response.json()["status_message"]
    assert not Tariff.objects.exists()


def test_a_cdr_total_with_vat_below_without_is_accepted_held_and_bills_no_driver(
    bec: OcpiTestClient, cdr: dict[str, Any]
) -> None:
    our_card = TokenFactory(uid="012345678")
    response = bec.post(CDRS, {**cdr, "cdr_token": OURS, "total_cost": {"excl_vat": 40.0, "incl_vat": 4.0}})
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)
    stored = Cdr.objects.get()
    assert (stored.total_cost_excl_vat, stored.total_cost_incl_vat) == (Decimal(40), Decimal(4))
    finding = DataQualityIssue.objects.get(code="incl_vat_below_excl_vat")
    assert (finding.object_id, finding.path) == (cdr["id"], "total_cost.incl_vat")
    audit = cdr_process(stored.pk)
    assert audit is not None and "incl_vat_below_excl_vat" in audit.flags
    assert "incl_vat_below_excl_vat" in HELD  # the flag that keeps the charge from the driver until staff look
    assert not DriverReceipt.objects.filter(driver_id=our_card.driver_id).exists()


@pytest.mark.parametrize(
    "coordinates",
    [
        {"latitude": "3.7299440", "longitude": "51.047599"},
        {"latitude": "3.729944", "longitude": "51.0475990"},
        {"latitude": 3.729944, "longitude": 51.047599},
    ],
)
def test_a_cdr_retry_with_its_coordinates_rendered_again_is_the_same_cdr(
    bec: OcpiTestClient, cdr: dict[str, Any], coordinates: dict[str, Any]
) -> None:
    assert cdr["cdr_location"]["coordinates"] == {"latitude": "3.729944", "longitude": "51.047599"}
    assert bec.post(CDRS, cdr).status_code == 201
    retry = {**cdr, "cdr_location": {**cdr["cdr_location"], "coordinates": coordinates}}
    response = bec.post(CDRS, retry)
    assert (response.status_code, response.json()["status_code"]) == (200, 1000)
    assert not DataQualityIssue.objects.filter(code="cdr_changed").exists()


def test_a_cdr_retry_at_another_place_is_still_a_change(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    bec.post(CDRS, cdr)
    moved = {
        **cdr,
        "cdr_location": {**cdr["cdr_location"], "coordinates": {"latitude": "3.7299441", "longitude": "51.047599"}},
    }
    assert bec.post(CDRS, moved).json()["status_code"] == 2001
    clean, _ = normalize_cdr(moved, country_code="BE", party_id="BEC")
    assert records.cdr_store(Cdr.objects.get().partner, clean).changed_fields == ["cdr_location"]
