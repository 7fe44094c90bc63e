"""Credit CDRs give back at most what their original billed (mod_cdrs: "the CPO has to send a Credit CDR for the
first CDR"), and one that arrives before its original is tied to it when the original comes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from billing.models import Cdr, CdrAudit, DriverReceipt
from billing.services.audit import cdr_process
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db

CDRS = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def original(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    TokenFactory(uid="012345678")
    cdr = spec_example("cdr_example.json")  # id 12345, 4.00 / 4.40
    return {**cdr, "cdr_token": {**cdr["cdr_token"], "country_code": "IN", "party_id": "EMS"}}


def _credit(original: dict[str, Any], cdr_id: str) -> dict[str, Any]:
    total = original["total_cost"]
    negative = {"excl_vat": -total["excl_vat"], "incl_vat": -total["incl_vat"]}
    return {**original, "id": cdr_id, "credit": True, "credit_reference_id": original["id"], "total_cost": negative}


def _process_all() -> None:
    for pk in Cdr.objects.order_by("pk").values_list("pk", flat=True):
        cdr_process(pk)


def _receipts() -> list[tuple[str, Decimal]]:
    return [(r.cdr.cdr_id, r.total_incl_vat) for r in DriverReceipt.objects.order_by("pk")]


def test_a_second_credit_of_the_same_original_is_held_for_review(bec: OcpiTestClient, original: dict[str, Any]) -> None:
    bec.post(CDRS, original)
    for cdr_id in ("12345-C", "12345-C2"):
        assert bec.post(CDRS, _credit(original, cdr_id)).json()["status_code"] == 1000
    _process_all()
    assert _receipts() == [("12345", Decimal("4.40")), ("12345-C", Decimal("-4.40"))]
    first, second = (CdrAudit.objects.get(cdr__cdr_id=i) for i in ("12345-C", "12345-C2"))
    assert (first.status, first.flags) == (CdrAudit.Status.CREDIT, [])
    assert (second.status, second.flags) == (CdrAudit.Status.REVIEW, ["over_credit"])


def test_a_partial_credit_and_its_remainder_are_both_refunded(bec: OcpiTestClient, original: dict[str, Any]) -> None:
    bec.post(CDRS, original)
    for cdr_id in ("12345-C", "12345-C2"):
        bec.post(CDRS, {**_credit(original, cdr_id), "total_cost": {"excl_vat": -2.0, "incl_vat": -2.2}})
    _process_all()
    assert sum(total for _, total in _receipts()) == 0
    assert set(CdrAudit.objects.filter(cdr__credit=True).values_list("status", flat=True)) == {CdrAudit.Status.CREDIT}


def test_a_credit_before_its_original_is_held_then_tied_to_it_and_refunded(
    bec: OcpiTestClient, original: dict[str, Any]
) -> None:
    bec.post(CDRS, _credit(original, "12345-C"))
    _process_all()
    assert not DriverReceipt.objects.exists()  # a refund of what no driver was billed for yet
    assert CdrAudit.objects.get().flags == ["unknown_original"]
    bec.post(CDRS, original)
    _process_all()
    credit = Cdr.objects.get(cdr_id="12345-C")
    assert credit.credited_cdr == Cdr.objects.get(cdr_id="12345")
    assert CdrAudit.objects.get(cdr=credit).status == CdrAudit.Status.CREDIT
    assert sorted(_receipts()) == [("12345", Decimal("4.40")), ("12345-C", Decimal("-4.40"))]


def test_a_credit_stored_before_its_original_but_processed_after_is_tied_to_it(
    bec: OcpiTestClient, original: dict[str, Any]
) -> None:
    bec.post(CDRS, _credit(original, "12345-C"))
    bec.post(CDRS, original)
    for cdr_id in ("12345", "12345-C"):
        cdr_process(Cdr.objects.get(cdr_id=cdr_id).pk)
    assert Cdr.objects.get(cdr_id="12345-C").credited_cdr_id == Cdr.objects.get(cdr_id="12345").pk
    assert sorted(_receipts()) == [("12345", Decimal("4.40")), ("12345-C", Decimal("-4.40"))]


def _pk(cdr_id: str) -> int:
    return Cdr.objects.get(cdr_id=cdr_id).pk


def test_an_early_credit_and_a_later_one_are_not_both_refunded(bec: OcpiTestClient, original: dict[str, Any]) -> None:
    """C comes before its original O and is held; O is stored; D, a second credit of O, comes before O is
    processed: it waits for O (refunded first, it could give back what O never takes). Counting by arrival order,
    D was refunded, then O's processing refunded C as well: 8.80 back on 4.40."""
    bec.post(CDRS, _credit(original, "12345-C"))
    cdr_process(_pk("12345-C"))  # held: its original isn't here
    bec.post(CDRS, original)
    bec.post(CDRS, _credit(original, "12345-D"))
    assert cdr_process(_pk("12345-D")) is None  # put off: the original's own task is still to run
    cdr_process(_pk("12345"))  # links C and audits it again: C is refunded
    later = timezone.now() + timedelta(seconds=settings.WORK_LEASE_SECONDS + 1)
    cdr_process(_pk("12345-D"), now=later)  # the sweep, once D's claim expired
    assert sum(total for _, total in _receipts()) == Decimal("0.00")
    assert [c for c, _ in _receipts()].count("12345") == 1
    held = CdrAudit.objects.get(cdr__cdr_id="12345-D")
    assert (held.status, held.flags) == (CdrAudit.Status.REVIEW, ["over_credit"])


def test_a_credit_held_while_its_original_was_processed_is_settled_by_the_sweep(
    bec: OcpiTestClient, original: dict[str, Any]
) -> None:
    """The credit's audit and the original's processing ran at once, neither seeing the other uncommitted: the
    credit was held as unknown_original for good. Here: the original processed first, then the credit held as
    if it had not seen it (its link removed)."""
    from billing.services.audit import credits_waiting_resolve

    bec.post(CDRS, _credit(original, "12345-C"))
    cdr_process(_pk("12345-C"))
    bec.post(CDRS, original)
    Cdr.objects.filter(cdr_id="12345-C").update(credit_reference_id="later")  # not found by the original...
    cdr_process(_pk("12345"))
    Cdr.objects.filter(cdr_id="12345-C").update(credit_reference_id="12345")  # ...as if committed after it
    assert CdrAudit.objects.get(cdr__cdr_id="12345-C").flags == ["unknown_original"]

    assert credits_waiting_resolve() == 1
    assert _receipts() == [("12345", Decimal("4.40")), ("12345-C", Decimal("-4.40"))]
    assert CdrAudit.objects.get(cdr__cdr_id="12345-C").status == CdrAudit.Status.CREDIT
    assert credits_waiting_resolve() == 0
