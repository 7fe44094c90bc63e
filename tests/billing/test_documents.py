"""Numbered documents: gap-free numbers per entity, kind and year (under concurrency on PostgreSQL), once per
reference, kept with their SHA-256; and the PDFs themselves, rendered, read back and written for a look to
var/documents-preview/."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.db import connection, transaction
from pypdf import PdfReader
from reportlab.pdfbase import ttfonts

from billing.documents import layout
from billing.documents.layout import STANDARD_FONTS, Column, Content, Issuer, Section, fonts, fonts_for, render
from billing.models import (
    BapAgreement,
    CdrAudit,
    DocumentSequence,
    DriverReceipt,
    IssuedDocument,
    Payment,
    Settlement,
)
from billing.services import documents
from billing.services.documents import DocumentError, issue_receipt, next_number
from billing.services.settlement import settlement_close, settlement_compute
from emsp.models import Booking, ChargingSession
from tests.billing import bap_ledger
from tests.billing.factories import (
    CdrAuditFactory,
    CdrFactory,
    CreditCdrFactory,
    DisputeFactory,
    DriverReceiptFactory,
    PartnerTermsFactory,
    at,
    settlement_scenario,
)
from tests.factories import DriverFactory, PartnerFactory, stored_location

PREVIEW_DIR = Path(settings.BASE_DIR) / "var" / "documents-preview"
ENTITY = settings.LEGAL_ENTITY_CODE
AFTER_OCTOBER = datetime(2026, 11, 3, 9, 30, tzinfo=UTC)
Kind = IssuedDocument.Kind


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def preview(name: str, pdf: bytes) -> None:
    PREVIEW_DIR.mkdir(parents=True, exist_ok=True)
    (PREVIEW_DIR / name).write_bytes(pdf)


CDR_LOCATION = {
    "id": "LOC-BLR-7",
    "name": "Koramangala Hub",
    "address": "80 Feet Road 14",
    "postal_code": "560034",
    "city": "Bengaluru",
    "country": "IND",
    "evse_uid": "BLR7-E2",
    "evse_id": "IN*CPA*E2",
    "connector_id": "1",
}


def charge_receipt(*, credit_of: DriverReceipt | None = None, with_payment: bool = True) -> DriverReceipt:
    """A receipt of one INR charge at CPO A with a Razorpay payment: CPO 200.00 + 18% VAT, fee 20.00 + 18%."""
    if credit_of is not None:
        cdr = CreditCdrFactory(credited_cdr=credit_of.cdr, cdr_id=f"{credit_of.cdr.cdr_id}-C", data=credit_of.cdr.data)
        return DriverReceiptFactory(
            cdr=cdr, driver=credit_of.driver, cpo_vat=-credit_of.cpo_vat, total_incl_vat=cdr.total_cost_incl_vat
        )
    partner = PartnerFactory(name="Charge Point A Ltd", country_code="IN", party_id="CPA")
    PartnerTermsFactory(partner=partner)
    driver = DriverFactory(name="Asha Verma", email="asha@example.in")
    end = datetime(2026, 10, 15, 19, 45, tzinfo=UTC)
    cdr = CdrFactory(
        partner=partner,
        cdr_id="CDR-BLR-0042",
        session_id="S-0042",
        currency="INR",
        start_date_time=end - timedelta(minutes=95),
        end_date_time=end,
        total_cost_excl_vat=Decimal("200.0000"),
        total_cost_incl_vat=Decimal("236.0000"),
        total_energy=Decimal("24.5170"),
        location_id="LOC-BLR-7",
        evse_uid="BLR7-E2",
        data={"cdr_location": CDR_LOCATION},
    )
    if with_payment:
        location = stored_location(partner)
        booking = Booking.objects.create(
            order_id="ORD-42", driver=driver, evse=location.evses.first(), connector_id="1", state="SETTLED"
        )
        session = ChargingSession.objects.create(
            partner=partner,
            country_code="IN",
            party_id="CPA",
            session_id="S-0042",
            ocpi_key="IN*CPA*S-0042",
            status="COMPLETED",
            start_date_time=cdr.start_date_time,
            currency="INR",
            ocpi_location_id="LOC-BLR-7",
            evse_uid="BLR7-E2",
            connector_id="1",
            token_uid="TOKEN000001",
            auth_method="WHITELIST",
            last_updated=end,
            data={},
            booking=booking,
        )
        cdr.charging_session = session
        cdr.save()
        Payment.objects.create(
            booking=booking, driver=driver, provider="razorpay", currency="INR", status=Payment.Status.CAPTURED
        )
    return DriverReceiptFactory(
        cdr=cdr,
        driver=driver,
        cpo_vat=Decimal("36.0000"),
        fee_excl_vat=Decimal("20.0000"),
        fee_vat=Decimal("3.6000"),
        quoted_total_incl_vat=Decimal("250.0000"),
    )


# --- numbers -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_numbers_each_kind_and_year_from_one() -> None:
    taken = [next_number(entity=ENTITY, kind=Kind.RECEIPT, year=2026) for _ in range(3)]

    assert taken == [f"{ENTITY}-RC-2026-00000{n}" for n in (1, 2, 3)]
    assert next_number(entity=ENTITY, kind=Kind.CREDIT_NOTE, year=2026) == f"{ENTITY}-CN-2026-000001"
    assert next_number(entity=ENTITY, kind=Kind.RECEIPT, year=2027) == f"{ENTITY}-RC-2027-000001"
    assert next_number(entity="EMSP-DE", kind=Kind.RECEIPT, year=2026) == "EMSP-DE-RC-2026-000001"
    assert DocumentSequence.objects.get(entity=ENTITY, kind=Kind.RECEIPT, year=2026).last == 3


@pytest.mark.django_db
def test_it_refuses_an_unknown_kind() -> None:
    with pytest.raises(DocumentError, match="no numbering"):
        next_number(entity=ENTITY, kind="INVOICE", year=2026)


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_number_outside_a_transaction() -> None:
    with pytest.raises(DocumentError, match="inside the transaction"):
        next_number(entity=ENTITY, kind=Kind.RECEIPT, year=2026)


@pytest.mark.django_db
def test_a_rolled_back_document_gives_its_number_back() -> None:
    receipt = charge_receipt(with_payment=False)

    with pytest.raises(RuntimeError), transaction.atomic():
        issue_receipt(receipt)
        raise RuntimeError("the caller's transaction fails after the document was issued")
    document = issue_receipt(receipt)

    assert document.number.endswith("-000001")
    assert IssuedDocument.objects.count() == 1


# --- issuing -----------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_issues_a_receipt_once() -> None:
    receipt = charge_receipt()

    first = issue_receipt(receipt)
    again = issue_receipt(receipt)

    assert again.pk == first.pk
    assert (first.kind, first.reference, first.party) == (
        Kind.RECEIPT,
        f"cdr:{receipt.cdr_id}",
        f"driver:{receipt.driver_id}",
    )
    assert (first.currency, first.total) == ("INR", Decimal("259.60"))
    assert DocumentSequence.objects.get(kind=Kind.RECEIPT).last == 1


@pytest.mark.django_db
def test_it_keeps_the_pdf_with_its_sha256() -> None:
    document = issue_receipt(charge_receipt())

    assert documents.document_pdf(document).startswith(b"%PDF-")
    assert document.sha256 == hashlib.sha256(bytes(document.pdf)).hexdigest()
    assert documents.document_filename(document) == f"{document.number}.pdf"

    document.pdf = bytes(document.pdf) + b"% appended after issue\n"
    with pytest.raises(DocumentError, match="does not match"):
        documents.document_pdf(document)


def test_documents_render_with_reportlabs_accelerators_and_binary_streams() -> None:
    """Every billed CDR renders a receipt in the bulk worker: reportlab's C accelerators (rl_accel) are
    installed and in use, and streams are not ASCII85-encoded (a fifth of a receipt's CPU between the two)."""
    from reportlab.lib import rl_accel

    from billing.documents.layout import Column, Content, Issuer, Section, render

    assert type(rl_accel.fp_str).__name__ == "builtin_function_or_method"  # not the pure-Python fallback
    content = Content(
        title="Receipt", subtitle="Charging", number="R-1", issued_at=datetime(2026, 1, 1, tzinfo=UTC),
        recipient_label="Issued to", recipient=["A driver"], facts=[("Date", "1 Jan 2026")],
        sections=[Section("Energy", [Column("Item", 0.7), Column("Amount", 0.3, "R")], [["kWh", "1.00"]])],
    )  # fmt: skip
    pdf = render(content, Issuer("eMSP", "1 Road", "TAX1"))
    assert b"ASCII85Decode" not in pdf
    assert "kWh" in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_a_cell_that_fits_is_drawn_as_a_string_and_a_long_one_still_wraps() -> None:
    """Table cells that fit on one line are plain strings (no Paragraph to parse and break: 8.6 -> 6.2 ms a
    receipt); a cell too wide, with a line break or an indent is a Paragraph, and all of its text is printed."""
    from reportlab.platypus import Paragraph

    from billing.documents.layout import Column, Content, Issuer, Section, _cell, _styles, fonts, render

    base = _styles(*fonts())["base"]
    assert _cell("Energy", base, 100) == "Energy"
    assert isinstance(_cell("Energy " * 40, base, 100), Paragraph)
    assert isinstance(_cell("two\nlines", base, 100), Paragraph)
    assert isinstance(_cell("  of which VAT", base, 100), Paragraph)
    street = "Avenida de la Constitución 123, Polígono Industrial Los Olivos, Nave 7, Getafe " * 2
    content = Content(
        title="Receipt", subtitle="Charging", number="R-2", issued_at=datetime(2026, 1, 1, tzinfo=UTC),
        recipient_label="Issued to", recipient=["A driver"], facts=[("Date", "1 Jan 2026")],
        sections=[Section("Where", [Column("Item", 0.3), Column("Value", 0.7)],
                          [["Address", street], ["Energy", "1.00 kWh"]])],
    )  # fmt: skip
    text = " ".join(
        PdfReader(io.BytesIO(render(content, Issuer("eMSP", "1 Road", "TAX1")))).pages[0].extract_text().split()
    )
    assert " ".join(street.split()) in text and "1.00 kWh" in text


def _simple(recipient: str, note: str = "") -> Content:
    return Content(
        title="Receipt", subtitle="Charging", number="R-3", issued_at=datetime(2026, 1, 1, tzinfo=UTC),
        recipient_label="Issued to", recipient=[recipient], facts=[("Date", "1 Jan 2026")],
        sections=[Section("Energy", [Column("Item", 0.7), Column("Amount", 0.3, "R")], [["kWh – total", "1.00 €"]])],
        notes=[note] if note else [],
    )  # fmt: skip


def _fonts_of(pdf: bytes) -> tuple[set[str], bool]:
    """The base fonts a PDF names, and whether it embeds a font program."""
    reader = PdfReader(io.BytesIO(pdf))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    names = {str(fonts[key].get_object()["/BaseFont"]) for key in fonts}
    return names, b"/FontFile2" in pdf


def test_western_text_is_set_in_the_standard_fonts_and_embeds_none() -> None:
    """Every character in Windows-1252 (dashes, euro, accents): Helvetica, nothing embedded, a few kB (a receipt
    of 45 kB with two embedded subsets before, and 40 % of its rendering time)."""
    pdf = render(_simple("Zoë Müller-Ørsted"), Issuer("eMSP Ltd", "1 Road", "TAX1"))
    names, embedded = _fonts_of(pdf)
    assert names == {"/Helvetica", "/Helvetica-Bold"} and not embedded
    assert len(pdf) < 8_000
    text = PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "Zoë Müller-Ørsted" in text and "1.00 €" in text and "kWh – total" in text


@pytest.mark.parametrize("recipient", ["Łukasz Wąsik", "Дмитрий Иванов", "Asha\x07 Verma"])
def test_other_scripts_or_control_characters_embed_the_unicode_face_for_the_whole_document(recipient: str) -> None:
    """One character beyond the standard fonts (Polish, Cyrillic) or not printable: the whole document is set
    in the embedded face, so its pages look alike and every name is printed."""
    pdf = render(_simple(recipient), Issuer("eMSP Ltd", "1 Road", "TAX1"))
    names, embedded = _fonts_of(pdf)
    assert embedded and len({name for name in names if "+" in name}) == 2  # the two subsets (regular, bold)
    if recipient.isprintable():
        assert recipient in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_the_issuer_and_notes_count_in_the_choice() -> None:
    assert fonts_for(_simple("A driver", note="Merci"), Issuer("eMSP", "1 Road", "TAX1")) == STANDARD_FONTS
    assert fonts_for(_simple("A driver", note="Дякуємо"), Issuer("eMSP", "1 Road", "TAX1")) == fonts()
    assert fonts_for(_simple("A driver"), Issuer("eMSP Sp. z o.o.", "ul. Złota 1", "TAX1")) == fonts()


@pytest.mark.django_db
def test_the_receipt_shows_who_what_and_how_much() -> None:
    receipt = charge_receipt()

    with time_machine.travel(datetime(2026, 10, 16, 8, 0, tzinfo=UTC), tick=False):
        document = issue_receipt(receipt)
    text = pdf_text(bytes(document.pdf))
    preview("receipt.pdf", bytes(document.pdf))

    assert document.number == f"{ENTITY}-RC-2026-000001"
    for expected in (
        document.number,
        settings.LEGAL_ENTITY_NAME,
        f"Tax ID: {settings.LEGAL_ENTITY_TAX_ID}",
        "Asha Verma",
        "Koramangala Hub",
        "80 Feet Road 14, 560034, Bengaluru",
        "IN*CPA*E2",
        "2026-10-15 23:40 IST",  # started (18:10 UTC, printed in DOCUMENTS_TIME_ZONE)
        "2026-10-16 01:15 IST (1 h 35 min)",
        "24.517 kWh",
        "200.00",  # CPO cost excl. VAT
        "36.00",  # its VAT
        "20.00",  # our fee
        "3.60",  # VAT on it
        "259.60",  # the total
        "250.00",  # the quote
        "Razorpay · Captured",
        "Total paid (INR)",
        "Page 1 of 1",
    ):
        assert expected in text, expected


@pytest.mark.django_db
def test_a_credit_cdr_gets_a_credit_note_that_names_the_receipt() -> None:
    original = issue_receipt(receipt := charge_receipt())

    credit = charge_receipt(credit_of=receipt)
    note = issue_receipt(credit)
    text = pdf_text(bytes(note.pdf))
    preview("credit-note.pdf", bytes(note.pdf))

    assert note.kind == Kind.CREDIT_NOTE
    assert note.number == f"{ENTITY}-CN-{original.issued_at:%Y}-000001"
    assert note.total == -Decimal("259.60")  # the CPO's 236.00 and our fee 20.00 with its 3.60 VAT, given back
    for expected in ("Credit note", note.number, original.number, "-236.00", "-259.60", "Asha Verma", "CDR-BLR-0042"):
        assert expected in text, expected


@pytest.mark.django_db
def test_an_erased_driver_is_named_by_account_only() -> None:
    receipt = charge_receipt(with_payment=False)
    receipt.driver.name = ""
    receipt.driver.erased_at = datetime(2026, 10, 20, tzinfo=UTC)
    receipt.driver.save()

    text = pdf_text(bytes(issue_receipt(receipt).pdf))

    assert f"Driver account {receipt.driver_id}" in text
    assert "Asha" not in text


@pytest.mark.django_db
def test_amounts_follow_the_currency_minor_unit() -> None:
    cdr = CdrFactory(currency="JPY", total_cost_excl_vat=Decimal("1234.5000"), total_cost_incl_vat=Decimal("1358"))
    receipt = DriverReceiptFactory(
        cdr=cdr, driver=DriverFactory(name="Ken Sato"), cpo_vat=Decimal("123.5"), total_incl_vat=Decimal("1358")
    )

    text = pdf_text(bytes(issue_receipt(receipt).pdf))

    assert "1,358" in text
    assert "1,358.00" not in text
    assert "Total (JPY)" in text


# --- statements ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_bap_statement_states_the_net_due_and_its_date() -> None:
    bap_ledger.october_of_app()

    with time_machine.travel(AFTER_OCTOBER, tick=False):
        document = documents.issue_bap_statement(
            bap_id=bap_ledger.APP, currency="INR", period_start=date(2026, 10, 1), period_end=date(2026, 11, 1)
        )
    text = pdf_text(bytes(document.pdf))
    preview("bap-statement.pdf", bytes(document.pdf))

    assert (document.kind, document.party, document.total) == (
        Kind.BAP_STATEMENT,
        f"bap:{bap_ledger.APP}",
        Decimal("262.40"),
    )
    assert document.number == f"{ENTITY}-BS-2026-000001"
    for expected in (
        document.number,
        "Example Mobility Apps Pvt Ltd",
        bap_ledger.APP,
        "2026-10-01 to 2026-10-31",
        "286.00",  # collected by the app
        "177.00",  # collected by us
        "-14.75",  # finder fees it kept
        "-8.85",  # finder fees we owe
        "262.40",  # net due
        "265.40",  # closing balance
        "Net due from the app by 2026-11-08 (INR)",
        "P7D after the charge",
        "booking:3",
    ):
        assert expected in text, expected


@pytest.mark.django_db
def test_the_bap_statement_is_issued_once_per_period() -> None:
    bap_ledger.october_of_app()
    october = {
        "bap_id": bap_ledger.APP,
        "currency": "INR",
        "period_start": date(2026, 10, 1),
        "period_end": date(2026, 11, 1),
    }

    with time_machine.travel(AFTER_OCTOBER, tick=False):
        first = documents.issue_bap_statement(**october)
        again = documents.issue_bap_statement(**october)
        november = documents.issue_bap_statement(
            **{**october, "period_start": date(2026, 11, 1), "period_end": date(2026, 11, 2)}
        )

    assert again.pk == first.pk
    assert november.number.endswith("-000002")


@pytest.mark.django_db
def test_it_refuses_a_bap_statement_before_the_period_ends_or_with_nothing_in_it() -> None:
    bap_ledger.october_of_app()
    BapAgreement.objects.create(bap_id="quiet.example")

    with (
        time_machine.travel(datetime(2026, 10, 31, 12, tzinfo=UTC), tick=False),
        pytest.raises(DocumentError, match="has ended"),
    ):
        documents.issue_bap_statement(
            bap_id=bap_ledger.APP, currency="INR", period_start=date(2026, 10, 1), period_end=date(2026, 11, 1)
        )
    with time_machine.travel(AFTER_OCTOBER, tick=False), pytest.raises(DocumentError, match="nothing to state"):
        documents.issue_bap_statement(
            bap_id="quiet.example", currency="INR", period_start=date(2026, 10, 1), period_end=date(2026, 11, 1)
        )
    assert not IssuedDocument.objects.exists()
    assert not DocumentSequence.objects.filter(last__gt=0).exists()


def closed_october() -> Settlement:
    scenario = settlement_scenario()
    inr = next(
        s
        for s in settlement_compute(partner=scenario["partner"], period_start=date(2026, 10, 1))
        if s.currency == "INR"
    )
    return settlement_close(settlement=inr, user=None)


@pytest.mark.django_db
def test_the_cpo_statement_states_cdrs_credits_and_what_we_pay() -> None:
    settlement = closed_october()

    with time_machine.travel(AFTER_OCTOBER, tick=False):
        document = documents.issue_cpo_statement(settlement)
    text = pdf_text(bytes(document.pdf))
    preview("cpo-statement.pdf", bytes(document.pdf))

    assert (document.kind, document.party, document.total) == (Kind.CPO_STATEMENT, "cpo:IN*CPA", Decimal("177"))
    assert document.number == f"{ENTITY}-CS-2026-000001"
    for expected in (
        document.number,
        "CPO A",
        "OCPI party IN*CPA",
        "INR-1",
        "INR-2",
        "150.00",
        "177.00",
        "CPO amount accepted",
    ):
        assert expected in text, expected
    assert "EUR-1" not in text  # the other currency's settlement


@pytest.mark.django_db
def test_the_cpo_statement_takes_off_dispute_credits_the_cpo_bears_once() -> None:
    from billing.models import CdrAudit, Dispute
    from billing.services import disputes
    from billing.services.audit import cdr_process
    from billing.services.records import cdr_key, cdr_store

    partner = PartnerFactory(country_code="IN", party_id="CPA")
    cdr = CdrFactory(partner=partner, cdr_id="D-1", ocpi_key=cdr_key("IN", "CPA", "D-1"), currency="INR",
                     end_date_time=at(10), total_cost_excl_vat=Decimal("100"),
                     total_cost_incl_vat=Decimal("118"))  # fmt: skip
    CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("90"))
    dispute = DisputeFactory(cdr=cdr, partner=partner, currency="INR", difference=Decimal("10"))
    disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal("10"))  # 11.80 with VAT
    assert Dispute.objects.get(pk=dispute.pk).state == Dispute.State.CREDITED
    # The CPO also sends its credit CDR for the same 10: counted as a credit CDR, not a second time.
    credit = cdr_store(partner, {
        "country_code": "IN", "party_id": "CPA", "id": "D-1-C", "credit": True, "credit_reference_id": "D-1",
        "start_date_time": "2026-10-10T11:00:00Z", "end_date_time": "2026-10-10T12:00:00Z", "currency": "INR",
        "total_cost": {"excl_vat": -10, "incl_vat": -11.80}, "total_energy": 0, "total_time": 0,
        "last_updated": "2026-10-11T00:00:00Z",
    }).cdr  # fmt: skip
    cdr_process(credit.pk)
    (october,) = settlement_compute(partner=partner, period_start=date(2026, 10, 1))
    settlement = settlement_close(settlement=october, user=None)

    with time_machine.travel(AFTER_OCTOBER, tick=False):
        document = documents.issue_cpo_statement(settlement)
    assert document.total == Decimal("106.20")  # 118 − 11.80 (credit CDR), the dispute credit netted against it
    assert "Dispute credits you bear" not in pdf_text(bytes(document.pdf))


@pytest.mark.django_db
def test_the_cpo_statement_takes_off_a_dispute_credit_no_credit_cdr_covers() -> None:
    from billing.models import CdrAudit
    from billing.services import disputes

    partner = PartnerFactory(country_code="IN", party_id="CPA")
    cdr = CdrFactory(partner=partner, cdr_id="D-2", currency="INR", end_date_time=at(10),
                     total_cost_excl_vat=Decimal("100"), total_cost_incl_vat=Decimal("118"))  # fmt: skip
    CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("90"))
    dispute = DisputeFactory(cdr=cdr, partner=partner, currency="INR", difference=Decimal("10"))
    disputes.dispute_resolve_with_credit(dispute=dispute, user=None, amount=Decimal("10"))
    (october,) = settlement_compute(partner=partner, period_start=date(2026, 10, 1))
    settlement = settlement_close(settlement=october, user=None)

    with time_machine.travel(AFTER_OCTOBER, tick=False):
        document = documents.issue_cpo_statement(settlement)
    assert document.total == Decimal("106.20")  # what the ledger's payable holds: 118 − 11.80
    assert "Dispute credits you bear" in pdf_text(bytes(document.pdf))


@pytest.mark.django_db
def test_it_refuses_a_cpo_statement_of_an_open_period() -> None:
    scenario = settlement_scenario()
    eur = next(
        s
        for s in settlement_compute(partner=scenario["partner"], period_start=date(2026, 10, 1))
        if s.currency == "EUR"
    )

    with pytest.raises(DocumentError, match="once finance closed it"):
        documents.issue_cpo_statement(eur)


@pytest.mark.django_db
def test_a_long_statement_numbers_its_pages() -> None:
    partner = PartnerFactory(name="Big CPO", country_code="IN", party_id="BIG")
    for n in range(130):
        CdrAuditFactory(
            cdr=CdrFactory(partner=partner, cdr_id=f"BIG-{n:04d}", currency="INR"), status=CdrAudit.Status.MATCHED
        )
    (settlement,) = settlement_compute(partner=partner, period_start=date(2026, 10, 1))
    settlement = settlement_close(settlement=settlement, user=None)

    document = documents.issue_cpo_statement(settlement)
    reader = PdfReader(io.BytesIO(bytes(document.pdf)))
    preview("cpo-statement-long.pdf", bytes(document.pdf))
    pages = [page.extract_text() for page in reader.pages]

    assert len(pages) >= 3
    for i, text in enumerate(pages, start=1):
        assert f"Page {i} of {len(pages)}" in text
        assert document.number in text
    assert "(continued)" in pages[1]
    assert "BIG-0129" in pages[-1]


# --- concurrency (PostgreSQL: SQLite has no row locks, it serialises writers) -----------------------------------

needs_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks (SELECT … FOR UPDATE) need PostgreSQL; SQLite has none"
)


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads released at once, each on its own connection; results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work(i)
        except Exception as error:
            results[i] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_numbers_have_no_gaps_and_no_repeats() -> None:
    def take(i: int) -> str | None:
        with transaction.atomic():
            number = next_number(entity=ENTITY, kind=Kind.RECEIPT, year=2026)
            if i % 4 == 0:
                transaction.set_rollback(True)  # this document failed: its number goes back
                return None
            return number

    results = in_threads(16, take)

    assert not [r for r in results if isinstance(r, Exception)]
    numbers = sorted(r for r in results if r is not None)
    assert numbers == [f"{ENTITY}-RC-2026-{n:06d}" for n in range(1, 13)]
    assert DocumentSequence.objects.get(entity=ENTITY, kind=Kind.RECEIPT, year=2026).last == 12


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_receipts_are_numbered_once_each() -> None:
    receipts = [
        DriverReceiptFactory(cdr=CdrFactory(cdr_id=f"CC-{n}"), driver=DriverFactory(name=f"Driver {n}"))
        for n in range(6)
    ]

    # Twelve threads: every receipt asked for twice at the same time.
    results = in_threads(12, lambda i: issue_receipt(receipts[i % 6]).number)

    assert not [r for r in results if isinstance(r, Exception)]
    assert sorted(set(results)) == [f"{ENTITY}-RC-{date.today():%Y}-{n:06d}" for n in range(1, 7)]
    assert IssuedDocument.objects.count() == 6
    for i in range(6):
        assert results[i] == results[i + 6]


@pytest.mark.django_db
def test_a_rounding_line_makes_the_rounded_lines_add_up() -> None:
    cdr = CdrFactory(currency="INR", total_cost_excl_vat=Decimal("100.0050"), total_cost_incl_vat=Decimal("118.0050"))
    receipt = DriverReceiptFactory(
        cdr=cdr,
        driver=DriverFactory(name="Ravi Iyer"),
        cpo_vat=Decimal("18.0000"),
        fee_excl_vat=Decimal("10.0050"),
        fee_vat=Decimal("1.8000"),
        total_incl_vat=Decimal("129.81"),  # 129.8100 exact; the lines round to 118.01 + 11.81 = 129.82
    )

    cells = [line.strip() for line in pdf_text(bytes(issue_receipt(receipt).pdf)).splitlines()]

    assert {"118.01", "11.81"} <= set(cells)  # the CPO's line and our fee's, each rounded on its own
    assert cells[cells.index("Rounding") + 1] == "-0.01"
    assert cells[cells.index("Rounding") + 2 : cells.index("Rounding") + 6] == ["Total", "110.01", "19.80", "129.81"]


@pytest.mark.django_db
def test_a_long_bap_id_still_fits_the_reference() -> None:
    bap_id = "apps." + "x" * 240 + ".example"

    reference = documents.bap_statement_reference(
        bap_id=bap_id, currency="inr", period_start=date(2026, 10, 1), period_end=date(2026, 11, 1)
    )

    assert len(reference) <= IssuedDocument._meta.get_field("reference").max_length
    assert reference.startswith("bap:sha256-") and reference.endswith(":INR:2026-10-01..2026-11-01")
    assert (
        documents.bap_statement_reference(
            bap_id=bap_id, currency="INR", period_start=date(2026, 10, 1), period_end=date(2026, 11, 1)
        )
        == reference
    )


# --- the Indian scripts: each in its Noto face, shaped --------------------------------------------------------


def _needs_faces(*faces: str) -> None:
    for face in faces:
        if layout.script_family(face) is None:
            pytest.skip(f"{face} is not installed here (Debian's fonts-noto-core; `make install` installs it)")


def test_words_of_a_script_are_runs_of_its_face_with_their_punctuation() -> None:
    _needs_faces("NotoSansDevanagari", "NotoSansTamil")
    assert layout.script_runs("12, अन्ना सालै, சென்னை 600002") == [
        ("12, ", None),
        ("अन्ना सालै,", "NotoSansDevanagari"),  # the space between two words of one script, and the comma, join it
        (" ", None),
        ("சென்னை", "NotoSansTamil"),
        (" 600002", None),
    ]
    # A word mixing a script with letters its face lacks is cut where the script ends.
    assert layout.script_runs("ऊर्जा–kWh") == [("ऊर्जा–", "NotoSansDevanagari"), ("kWh", None)]
    assert layout.script_runs("Asha Verma") == [("Asha Verma", None)]


def test_names_in_indian_scripts_are_set_in_their_faces_and_shaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Hindi name (bold, the recipient's first line) and a Tamil note: their faces are embedded, the bold one
    for the bold line, and HarfBuzz reorders and joins the letters (drawn unshaped, the PDF's text would read back
    code point for code point; shaped, the conjuncts प्र and र्म are single glyphs)."""
    _needs_faces("NotoSansDevanagari", "NotoSansTamil")
    content = _simple("प्रिया शर्मा", note="நன்றி, சென்னை")
    pdf = render(content, Issuer("eMSP Ltd", "1 Road", "TAX1"))
    names, _ = _fonts_of(pdf)
    assert {n.split("+")[-1] for n in names} >= {"NotoSansDevanagari-Bold", "NotoSansTamil-Regular", "DejaVuSans"}
    monkeypatch.setattr(ttfonts, "uharfbuzz", None)  # the same document without HarfBuzz
    unshaped = render(content, Issuer("eMSP Ltd", "1 Road", "TAX1"))
    assert "प्रिया शर्मा" in PdfReader(io.BytesIO(unshaped)).pages[0].extract_text()
    assert "प्रिया शर्मा" not in PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_without_the_faces_the_scripts_print_in_the_embedded_face(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(layout, "SCRIPT_FONT_DIRS", (str(tmp_path),))
    monkeypatch.setattr(layout, "_script_faces", {})
    pdf = render(_simple("प्रिया शर्मा"), Issuer("eMSP Ltd", "1 Road", "TAX1"))
    names, embedded = _fonts_of(pdf)
    assert embedded and not [n for n in names if "Noto" in n]
    assert layout.script_runs("प्रिया") == [("प्रिया", "NotoSansDevanagari")]  # known as Devanagari, no face
