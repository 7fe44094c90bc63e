"""The sign of a CDR's total_cost. OCPI 2.2.1 mod_cdrs "Credit CDRs": "Only the values in the total_cost field
SHALL contain the negative amounts of the original CDR." A credit CDR with a positive total_cost (its amounts not
negated) was stored, audited CREDIT without a flag, refunded the driver +4.40 and doubled the CPO's statement; it
is refused with 2001. A CDR that is no credit may not be negative."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from billing.models import Cdr, CdrAudit, DriverReceipt
from billing.services.audit import cdr_process
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db
CDRS = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def original(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    TokenFactory(uid="012345678")
    cdr = spec_example("cdr_example.json")  # BE*BEC 12345, 4.00 / 4.40 EUR
    return {**cdr, "cdr_token": {**cdr["cdr_token"], "country_code": "IN", "party_id": "EMS"}}


def _credit(original: dict[str, Any], total_cost: dict[str, Any]) -> dict[str, Any]:
    return {**original, "id": "12345-C", "credit": True, "credit_reference_id": "12345", "total_cost": total_cost}


@pytest.mark.parametrize(
    "total_cost",
    [
        {"excl_vat": 4.00, "incl_vat": 4.40},  # not negated
        {"excl_vat": -4.00, "incl_vat": 4.40},  # one of the two not negated
        {"excl_vat": 4.00},
    ],
)
def test_a_credit_cdr_with_a_positive_total_is_refused(
    client_for: Callable[..., Any], original: dict[str, Any], total_cost: dict[str, Any]
) -> None:
    bec = client_for("BE", "BEC")
    assert bec.post(CDRS, original).status_code == 201
    body = bec.post(CDRS, _credit(original, total_cost)).json()
    assert body["status_code"] == 2001, body
    assert "credit" in body["status_message"] and "positive" in body["status_message"]
    assert list(Cdr.objects.values_list("cdr_id", flat=True)) == ["12345"]


@pytest.mark.parametrize("total_cost", [{"excl_vat": -4.00, "incl_vat": -4.40}, {"excl_vat": 0, "incl_vat": 0}])
def test_a_credit_cdr_with_a_negative_or_zero_total_is_stored_and_refunds(
    client_for: Callable[..., Any], original: dict[str, Any], total_cost: dict[str, Any]
) -> None:
    """Its sub-totals may keep the original's sign (the spec negates total_cost only)."""
    bec = client_for("BE", "BEC")
    bec.post(CDRS, original)
    assert bec.post(CDRS, _credit(original, total_cost)).status_code == 201
    for pk in Cdr.objects.order_by("pk").values_list("pk", flat=True):
        cdr_process(pk)
    credit = Cdr.objects.get(cdr_id="12345-C")
    assert CdrAudit.objects.get(cdr=credit).status == CdrAudit.Status.CREDIT
    assert DriverReceipt.objects.get(cdr=credit).total_incl_vat == Decimal(str(total_cost["incl_vat"]))


@pytest.mark.parametrize("total_cost", [{"excl_vat": -4.00, "incl_vat": -4.40}, {"excl_vat": 4.00, "incl_vat": -4.40}])
def test_a_cdr_that_is_no_credit_with_a_negative_total_is_refused(
    client_for: Callable[..., Any], original: dict[str, Any], total_cost: dict[str, Any]
) -> None:
    bec = client_for("BE", "BEC")
    for credit in ({}, {"credit": False}):
        body = bec.post(CDRS, {**original, **credit, "total_cost": total_cost}).json()
        assert body["status_code"] == 2001, body
    assert not Cdr.objects.exists()
