"""A credit note after a dispute credit the CPO bore for the same charge: the ledger refunds with the credit CDR
only what the dispute credit did not already give back (payments._credit_cdr). The note states that refund, and
the dispute credit refunded before; its total stays the whole correction, the only document the dispute credit
has, so the driver's refunds together match the notes together."""

from __future__ import annotations

import io
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pypdf import PdfReader

from billing.models import Cdr, Dispute, DriverReceipt, IssuedDocument, LedgerLine
from billing.services import disputes, documents, payments
from billing.services.audit import cdr_process
from emsp.models import Partner
from tests.billing.factories import DisputeFactory, PartnerTermsFactory
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db

CDRS = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    client = client_for("BE", "BEC")
    PartnerTermsFactory(
        partner=Partner.objects.get(country_code="BE", party_id="BEC"),
        fee_flat=Decimal("1.00"),
        fee_vat_percent=Decimal(18),
    )
    return client


@pytest.fixture
def original(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    TokenFactory(uid="012345678")
    cdr = spec_example("cdr_example.json")  # id 12345, 4.00 / 4.40 EUR
    return {**cdr, "cdr_token": {**cdr["cdr_token"], "country_code": "IN", "party_id": "EMS"}}


def credit_of(o: dict[str, Any], cid: str, excl: str, incl: str) -> dict[str, Any]:
    return {**o, "id": cid, "credit": True, "credit_reference_id": o["id"],
            "total_cost": {"excl_vat": -float(excl), "incl_vat": -float(incl)}}  # fmt: skip


def process(client: OcpiTestClient, body: dict[str, Any]) -> DriverReceipt:
    assert client.post(CDRS, body).json()["status_code"] == 1000
    cdr = Cdr.objects.get(cdr_id=body["id"])
    cdr_process(cdr.pk)
    return DriverReceipt.objects.select_related("cdr__partner", "driver").get(cdr=cdr)


def credited_in_dispute(receipt: DriverReceipt, amount: str) -> Dispute:
    """A dispute on the charge resolved with a credit of `amount` excl. VAT, borne by the CPO (with VAT 10 %)."""
    cdr = receipt.cdr
    dispute = DisputeFactory(
        cdr=cdr, partner=cdr.partner, currency=cdr.currency, cpo_amount=cdr.total_cost_excl_vat,
        our_amount=cdr.total_cost_excl_vat - Decimal(amount), difference=Decimal(amount),
    )  # fmt: skip
    return disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal(amount))


def refunded(reference: str) -> Decimal:
    """What the ledger paid back to the driver under `reference` (off refunds:pending), in EUR."""
    lines = LedgerLine.objects.filter(
        entry__reference=reference, entry__event="refund", account__code="refunds:pending", account__currency="EUR"
    )
    return Decimal(sum(lines.values_list("amount_minor", flat=True))) / 100


def text(document: IssuedDocument) -> str:
    pages = PdfReader(io.BytesIO(bytes(document.pdf))).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split())


def test_the_note_states_what_is_refunded_with_it_after_a_dispute_credit(
    bec: OcpiTestClient, original: dict[str, Any]
) -> None:
    receipt = process(bec, original)
    assert receipt.total_incl_vat == Decimal("5.58")  # 4.40 + our fee 1.00 + 0.18 VAT
    issued = documents.issue_receipt(receipt)
    dispute = credited_in_dispute(receipt, "1.00")
    assert refunded(f"dispute:{dispute.pk}") == Decimal("1.10")

    credit = process(bec, credit_of(original, "12345-C", "4.00", "4.40"))
    note = documents.issue_receipt(credit)

    # The ledger: 4.40 less the 1.10 already refunded, and our fee with its VAT.
    assert refunded(f"cdr:{credit.cdr_id}") == Decimal("4.48")
    assert payments.dispute_credit_netted(credit) == Decimal("1.10")
    body = text(note)
    assert "of which refunded before, with a credit agreed in a dispute 1.10 EUR" in body
    assert "of which returned now 4.48 EUR" in body
    assert "1.10 EUR of it was refunded to you before" in body
    # The note's total is the whole correction (the dispute credit has no document of its own): the driver's
    # refunds together are the notes together, and the charge nets to zero.
    assert note.total == Decimal("-5.58")
    assert refunded(f"dispute:{dispute.pk}") + refunded(f"cdr:{credit.cdr_id}") == -note.total == issued.total


def test_a_partial_credit_cdr_within_the_dispute_credit_returns_only_our_fee_now(
    bec: OcpiTestClient, original: dict[str, Any]
) -> None:
    """The dispute credit (2.20 with VAT) covers the CPO's whole credit CDR (1.10): only our fee on the lowered
    price, given back, is refunded with the note."""
    receipt = process(bec, original)
    documents.issue_receipt(receipt)
    credited_in_dispute(receipt, "2.00")

    credit = process(bec, credit_of(original, "12345-P", "1.00", "1.10"))
    note = documents.issue_receipt(credit)

    now = refunded(f"cdr:{credit.cdr_id}")
    fee_back = sum(payments.fee_given_back(credit), Decimal(0))
    assert now == fee_back  # nothing of the CPO's part: the dispute credit gave it back before
    assert payments.dispute_credit_netted(credit) == Decimal("1.10")
    body = text(note)
    assert "of which refunded before, with a credit agreed in a dispute 1.10 EUR" in body
    assert f"of which returned now {now:.2f} EUR" in body
    assert note.total == -(Decimal("1.10") + fee_back)


def test_a_credit_note_without_a_dispute_credit_is_unchanged(bec: OcpiTestClient, original: dict[str, Any]) -> None:
    receipt = process(bec, original)
    documents.issue_receipt(receipt)
    credit = process(bec, credit_of(original, "12345-C", "4.00", "4.40"))
    note = documents.issue_receipt(credit)

    assert payments.dispute_credit_netted(credit) == Decimal(0)
    assert refunded(f"cdr:{credit.cdr_id}") == -note.total == Decimal("5.58")
    body = text(note)
    assert "Credited to you 5.58 EUR" in body and "of which" not in body
    assert "the amount credited is returned to your payment method" in body


def test_a_dispute_credit_we_bore_is_not_netted(bec: OcpiTestClient, original: dict[str, Any]) -> None:
    """A credit we bore ourselves (expense:disputes) is not netted by the CPO's credit CDR (the CPO gives its
    whole credit back, payments.dispute_credit_uncovered): the note returns all of it now."""
    receipt = process(bec, original)
    cdr = receipt.cdr
    dispute = DisputeFactory(
        cdr=cdr, partner=cdr.partner, currency="EUR", cpo_amount=Decimal(4), our_amount=Decimal(3),
        difference=Decimal(1),
    )  # fmt: skip
    disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal("1.00"), borne_by_cpo=False)
    credit = process(bec, credit_of(original, "12345-C", "4.00", "4.40"))
    note = documents.issue_receipt(credit)

    assert payments.dispute_credit_netted(credit) == Decimal(0)
    assert refunded(f"cdr:{credit.cdr_id}") == -note.total == Decimal("5.58")
