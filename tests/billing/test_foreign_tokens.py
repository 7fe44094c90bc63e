"""A CDR bills one of our drivers only for a token of ours (CdrToken.party_id: "ID of the eMSP that 'owns' this
Token"; RFID uids collide across eMSPs, and a CPO may send us CDRs that aren't ours), and never for an amount
with VAT below the amount without (such a CDR is stored and held for review)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Cdr, CdrAudit, DriverReceipt
from billing.services.audit import cdr_process
from emsp.models import ChargingSession
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db

CDRS = "/ocpi/emsp/2.2.1/cdrs"
FOREIGN = {"country_code": "DE", "party_id": "TNM", "uid": "012345678", "type": "RFID", "contract_id": "DE8ACC12E46L89"}
OURS = {**FOREIGN, "country_code": "IN", "party_id": "EMS"}


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def cdr(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    return spec_example("cdr_example.json")


@pytest.fixture
def our_card(settings: Any) -> Any:
    assert (settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID) == ("IN", "EMS")
    return TokenFactory(uid="012345678")  # one of our RFID cards shares the foreign card's uid


def test_a_cdr_of_another_emsps_token_bills_none_of_our_drivers(
    bec: OcpiTestClient, cdr: dict[str, Any], our_card: Any, spec_example: Callable[[str], Any]
) -> None:
    session = spec_example("session_example_2_short_finished.json")
    bec.put("/ocpi/emsp/2.2.1/sessions/BE/BEC/101", {**session, "cdr_token": FOREIGN})
    assert ChargingSession.objects.get().token_id is None
    assert bec.post(CDRS, {**cdr, "cdr_token": FOREIGN}).json()["status_code"] == 1000
    audit = cdr_process(Cdr.objects.get().pk)
    assert not DriverReceipt.objects.exists()
    assert audit is not None and audit.status == CdrAudit.Status.REVIEW
    assert "foreign_token" in CdrAudit.objects.get().flags


def test_a_cdr_of_our_token_bills_our_driver(bec: OcpiTestClient, cdr: dict[str, Any], our_card: Any) -> None:
    bec.post(CDRS, {**cdr, "cdr_token": {**OURS, "country_code": "in", "party_id": "ems"}})
    cdr_process(Cdr.objects.get().pk)
    assert DriverReceipt.objects.get().driver_id == our_card.driver_id
    assert "foreign_token" not in CdrAudit.objects.get().flags


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("party_id", "1E+308"),
        ("party_id", "ÉÉÉÉÉÉ"),
        ("party_id", 1e308),
        ("country_code", "ÉÉ"),
        ("country_code", "XYZW"),
    ],
)
def test_a_token_party_that_is_no_party_is_refused_not_stored(
    bec: OcpiTestClient, cdr: dict[str, Any], field: str, value: Any
) -> None:
    response = bec.post(CDRS, {**cdr, "cdr_token": {**OURS, field: value}})
    body = response.json()
    assert body["status_code"] == 2001
    assert f"cdr_token.{field}" in body["status_message"]
    assert not Cdr.objects.exists()


def test_an_alpha3_token_country_is_read_as_its_alpha2(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    assert bec.post(CDRS, {**cdr, "cdr_token": {**FOREIGN, "country_code": "DEU"}}).json()["status_code"] == 1000
    assert Cdr.objects.get().data["cdr_token"]["country_code"] == "DE"


def test_a_cdr_total_with_vat_below_without_is_stored_and_held(
    bec: OcpiTestClient, cdr: dict[str, Any], our_card: Any
) -> None:
    """Not refused (a CDR is the CPO's bill: flagged, not rejected); the audit keeps it from the driver."""
    response = bec.post(CDRS, {**cdr, "cdr_token": OURS, "total_cost": {"excl_vat": 40.0, "incl_vat": 4.0}})
    assert response.json()["status_code"] == 1000
    cdr_process(Cdr.objects.get().pk)
    assert not DriverReceipt.objects.exists()
    assert "incl_vat_below_excl_vat" in CdrAudit.objects.get().flags


def test_a_sub_total_with_vat_below_without_is_dropped(bec: OcpiTestClient, cdr: dict[str, Any]) -> None:
    bad = {"excl_vat": 4.0, "incl_vat": 0.4}
    assert bec.post(CDRS, {**cdr, "total_energy_cost": bad}).json()["status_code"] == 1000
    assert "total_energy_cost" not in Cdr.objects.get().data


def test_a_stored_cdr_with_vat_below_without_is_held_for_review(
    bec: OcpiTestClient, cdr: dict[str, Any], our_card: Any
) -> None:
    """Whatever the receiver did with it: the stored amounts are what the audit reads."""
    bec.post(CDRS, {**cdr, "cdr_token": OURS})
    Cdr.objects.update(total_cost_excl_vat=40, total_cost_incl_vat=4)
    cdr_process(Cdr.objects.get().pk)
    assert not DriverReceipt.objects.exists()
    assert "incl_vat_below_excl_vat" in CdrAudit.objects.get().flags
