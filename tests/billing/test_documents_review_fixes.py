"""Review fixes of drivers' receipts and credit notes: text a CPO sent can't stop a receipt from being issued
(nor the console's action), a credit note states what the ledger gives back and names the receipt it corrects,
a quote in another currency isn't printed as ours, no e-mail on a receipt, and rates and nets that add up.
Reviewed again: a word joining two scripts with no space (a receipt or statement failed or printed boxes), and
a CPO's name with a character XML 1.0 has no place for (an XLSX export that didn't open)."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import openpyxl
import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pypdf import PdfReader
from reportlab.pdfbase import ttfonts

from billing.documents import layout
from billing.documents.layout import Column, Content, Issuer, Section
from billing.documents.receipt import _rate
from billing.models import Cdr, DriverReceipt, IssuedDocument, LedgerLine, Quote
from billing.services import documents
from billing.services.audit import cdr_process
from billing.services.driver_pricing import receipt_for_cdr
from billing.services.settlement import settlement_compute, spreadsheet_text
from emsp.models import Partner
from tests.billing import test_documents as td
from tests.billing.factories import CdrAuditFactory, CdrFactory, PartnerTermsFactory
from tests.billing.test_console_hardening import register_with_cpo_named, staff_with
from tests.billing.test_documents import charge_receipt
from tests.conftest import OcpiTestClient
from tests.factories import TokenFactory, stored_location

pytestmark = pytest.mark.django_db

CDRS = "/ocpi/emsp/2.2.1/cdrs"


@pytest.fixture
def bec(client_for: Callable[..., OcpiTestClient]) -> OcpiTestClient:
    return client_for("BE", "BEC")


@pytest.fixture
def original(spec_example: Callable[[str], Any]) -> dict[str, Any]:
    TokenFactory(uid="012345678")
    cdr = spec_example("cdr_example.json")  # id 12345, 4.00 / 4.40 EUR
    return {**cdr, "cdr_token": {**cdr["cdr_token"], "country_code": "IN", "party_id": "EMS"}}


def credit_of(o: dict[str, Any], cid: str) -> dict[str, Any]:
    t = o["total_cost"]
    return {**o, "id": cid, "credit": True, "credit_reference_id": o["id"],
            "total_cost": {"excl_vat": -t["excl_vat"], "incl_vat": -t["incl_vat"]}}  # fmt: skip


def text(doc: IssuedDocument) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(bytes(doc.pdf))).pages)


def process(client: OcpiTestClient, *cdrs: dict[str, Any]) -> list[DriverReceipt]:
    for body in cdrs:
        assert client.post(CDRS, body).json()["status_code"] == 1000
    for pk in Cdr.objects.order_by("pk").values_list("pk", flat=True):
        cdr_process(pk)
    return list(DriverReceipt.objects.select_related("cdr__partner", "driver").order_by("pk"))


# --- 1. text a CPO sent -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "printed"),
    [("A" + "\n" * 80 + "B", "A B"), ("X" * 5000, "X" * 40)],
    ids=["eighty-line-breaks", "five-thousand-characters"],
)
def test_a_location_name_of_many_lines_or_characters_still_gives_a_receipt(
    bec: OcpiTestClient, original: dict[str, Any], name: str, printed: str
) -> None:
    location = {**original["cdr_location"], "name": name, "address": "Rue\r\n\r\nHaute 1" + " \n" * 100}
    (receipt,) = process(bec, {**original, "cdr_location": location})
    document = documents.issue_receipt(receipt)
    body = text(document)
    assert printed in body and "Rue Haute 1" in body
    assert len(text(document)) < 3000  # capped, with an ellipsis


def test_a_cell_taller_than_a_page_is_rendered_shortened() -> None:
    """The layout's own guard, for text no content builder made plain: rendered again with short cells."""
    content = Content(
        title="Receipt",
        subtitle="x",
        number="EMSP-RC-2026-000001",
        issued_at=timezone.now(),
        recipient_label="Issued to",
        recipient=["Someone"],
        facts=[("Date", "2026-01-01")],
        sections=[Section("Things", [Column("", 0.3), Column("", 0.7)], [["Name", "A" + "\n" * 80 + "B"]])],
    )
    pdf = layout.render(content, Issuer("Us", "Street 1", "TAX1"))
    assert "A B" in "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)


def test_the_issue_action_reports_a_receipt_it_cant_render_and_issues_the_others(
    login: Callable[[str], Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = charge_receipt()
    bad = charge_receipt(credit_of=good)
    real = documents.render

    def render(content: Content, issuer: Issuer) -> bytes:
        if content.title == "Credit note":
            raise layout.LayoutError("Flowable <LongTable> tallest cell 896.0 points, too large")
        return real(content, issuer)

    monkeypatch.setattr(documents, "render", render)
    url = reverse("admin:billing_driverreceipt_changelist")
    response = login("finance").post(url, {"action": "issue", "_selected_action": [bad.pk, good.pk]}, follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "laid out" in page
    assert IssuedDocument.objects.get().kind == IssuedDocument.Kind.RECEIPT
    bad.refresh_from_db()
    assert not bad.issued


# --- 2. a credit note states what the ledger gives back ----------------------------------------------------


def test_a_credit_note_states_our_fee_given_back_and_totals_the_refund(
    bec: OcpiTestClient, original: dict[str, Any]
) -> None:
    from emsp.models import Partner

    PartnerTermsFactory(
        partner=Partner.objects.get(country_code="BE", party_id="BEC"),
        fee_flat=Decimal("1.00"),
        fee_vat_percent=Decimal(18),
    )
    receipt, credit = process(bec, original, credit_of(original, "12345-C"))
    assert receipt.total_incl_vat == Decimal("5.58")
    issued = documents.issue_receipt(receipt)
    note = documents.issue_receipt(credit)
    refunded = sum(
        line.amount_minor
        for line in LedgerLine.objects.filter(
            entry__reference=f"cdr:{credit.cdr_id}", entry__event="refund", account__code__startswith="refunds:"
        )
        if line.amount_minor > 0
    )
    assert refunded == 558
    assert -note.total == Decimal("5.58") == issued.total
    body = text(note)
    assert "Service fee given back" in body and "-1.00" in body and "-0.18" in body and "5.58 EUR" in body


# --- 3. a credit note names the receipt it corrects -------------------------------------------------------


def test_a_credit_note_issued_before_its_original_receipt_issues_that_first_and_names_it() -> None:
    receipt = charge_receipt()
    credit = charge_receipt(credit_of=receipt)
    note = documents.issue_receipt(credit)
    original = IssuedDocument.objects.get(kind=IssuedDocument.Kind.RECEIPT)
    assert original.reference == f"cdr:{receipt.cdr_id}"
    assert original.number in text(note)
    receipt.refresh_from_db()
    assert receipt.issued


# --- 4. a quote in another currency --------------------------------------------------------------------------


def test_a_quote_in_another_currency_is_not_printed_as_the_quoted_total(
    bec: OcpiTestClient, original: dict[str, Any]
) -> None:
    bec.post(CDRS, original)
    cdr = Cdr.objects.get()
    now = timezone.now()
    quote = Quote.objects.create(
        evse=stored_location(cdr.partner).evses.first(), connector_id="1", currency="INR", arrival_at=now,
        cpo_cost_excl_vat=Decimal(400), fee_excl_vat=Decimal(0), fee_vat=Decimal(0),
        total_incl_vat=Decimal(472), valid_until=now + timedelta(hours=1),
    )  # fmt: skip
    receipt = receipt_for_cdr(cdr, quote=quote)
    assert receipt is not None and receipt.quoted_total_incl_vat is None
    assert "Quoted before the charge" not in text(documents.issue_receipt(receipt))


# --- 5. no e-mail on a receipt -------------------------------------------------------------------------------


def test_a_receipt_names_the_driver_without_the_e_mail() -> None:
    body = text(documents.issue_receipt(charge_receipt()))
    assert "Asha Verma" in body and "asha@example.in" not in body


# --- 6. rates and nets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vat", "net", "currency", "printed"),
    [
        (Decimal(9), Decimal(95), "JPY", "–"),  # 9.47 %: 9, 9.5 and 10 % all round to 9 yen
        (Decimal("1.925"), Decimal("10.125"), "EUR", "19%"),  # not 19.01 %
        (Decimal("0.84"), Decimal("4.40"), "EUR", "19%"),
        (Decimal("36"), Decimal("200"), "INR", "18%"),
        (Decimal("0.55"), Decimal("10"), "EUR", "5.5%"),
        (Decimal("0.4"), Decimal("10"), "EUR", "4%"),
        (Decimal("0.47"), Decimal("10"), "EUR", "–"),  # 4.7 %: no whole or half percent
    ],
)
def test_a_rate_is_printed_only_when_the_rounded_amounts_give_one(
    vat: Decimal, net: Decimal, currency: str, printed: str
) -> None:
    assert _rate(vat, net, currency) == printed


def test_the_total_row_adds_across() -> None:
    receipt = charge_receipt()
    DriverReceipt.objects.filter(pk=receipt.pk).update(
        cpo_cost_excl_vat=Decimal("10.125"), cpo_vat=Decimal("1.925"), fee_excl_vat=0, fee_vat=0,
        total_incl_vat=Decimal("12.05"),
    )  # fmt: skip
    receipt.refresh_from_db()
    content = documents.receipt_content(receipt, number="N", issued_at=timezone.now())
    amounts = content.sections[1]
    for row in (*amounts.rows, *amounts.total_rows):
        if row[1]:
            assert Decimal(row[1].replace(",", "")) + Decimal(row[3].replace(",", "")) == Decimal(
                row[4].replace(",", "")
            )
    assert amounts.rows[0][2] == "19%"


# --- 7. a word of two scripts ----------------------------------------------------------------------------------

ISSUER = Issuer("eMSP Ltd", "1 Road", "TAX1")


@pytest.fixture
def fresh_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The script faces registered anew, as in a worker process that has rendered nothing yet."""
    monkeypatch.setattr(layout, "_script_faces", {})
    td._needs_faces("NotoSansDevanagari", "NotoSansTamil")


def pdf_text(pdf: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)


def prints(body: str, letters: str) -> bool:
    """Are these letters in the PDF's text, and no glyph read back as U+FFFF (a glyph looked up in the wrong
    font)? Shaped, a conjunct or ligature reads back as a private-use code point, so only letters that stay
    letters are asked for."""
    return "\uffff" not in body and all(letter in body for letter in letters)


@pytest.mark.parametrize(
    ("name", "letters"),
    [("चेन्नई-சென்னை", "चईசன"), ("कம", "कம"), ("Hub (मुंबई/மும்பை)", "Hubमबப")],
)
def test_a_receipt_whose_location_name_mixes_two_scripts_in_one_word_is_issued(
    fresh_worker: None, monkeypatch: pytest.MonkeyPatch, name: str, letters: str
) -> None:
    monkeypatch.setattr(td, "CDR_LOCATION", {**td.CDR_LOCATION, "name": name})
    document = documents.issue_receipt(charge_receipt())
    assert prints(pdf_text(documents.document_pdf(document)), letters)


def test_the_layout_renders_a_word_of_two_scripts(fresh_worker: None) -> None:
    assert prints(pdf_text(layout.render(td._simple("कம"), ISSUER)), "क ம")


def test_issuing_the_statement_of_a_cpo_named_in_two_scripts_is_no_server_error(fresh_worker: None) -> None:
    closed = td.closed_october()
    closed.partner.name = "चेन्नई-சென்னை Charging"
    closed.partner.save()
    issuer = staff_with("view_settlement", "add_issueddocument", username="issuer")
    issuer.raise_request_exception = False
    response = issuer.post(
        reverse("admin:billing_settlement_changelist"),
        {"action": "issue_cpo_statement", "_selected_action": [closed.pk]},
    )
    assert response.status_code in (200, 302)
    statement = IssuedDocument.objects.get(kind=IssuedDocument.Kind.CPO_STATEMENT)
    assert prints(text(statement), "चईசன")


def test_a_word_joining_latin_and_an_indian_script_prints_every_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawn by a worker that had shaped Devanagari before, such a word was issued with boxes for some of its
    letters; each script is now a word in its own font, a space between them."""
    td._needs_faces("NotoSansDevanagari")
    layout.render(td._simple("मुंबई"), ISSUER)  # the worker has drawn the script before
    words = "ऊर्जा–kWh Straße(मुंबई) aकb"
    body = pdf_text(layout.render(td._simple(words), ISSUER))
    assert prints(body, "ऊजा") and "– kWh Straße( मुंबई) a क b" in body
    monkeypatch.setattr(ttfonts, "uharfbuzz", None)  # unshaped, the text reads back as it was, spaces added
    unshaped = pdf_text(layout.render(td._simple(words), ISSUER))
    assert "ऊर्जा– kWh Straße( मुंबई) a क b" in unshaped


def test_runs_of_two_fonts_in_one_word_are_set_apart_by_a_space() -> None:
    td._needs_faces("NotoSansDevanagari", "NotoSansTamil")
    assert layout._marked("aकb") == 'a <font face="DocDevanagari">क</font> b'
    assert layout._marked("चेन्नई-சென்னை", bold=True) == (
        '<font face="DocDevanagari-Bold">चेन्नई-</font> <font face="DocTamil-Bold">சென்னை</font>'
    )
    # Where a space is there already, nothing is added.
    assert layout._marked("Asha शर्मा") == 'Asha <font face="DocDevanagari">शर्मा</font>'
    assert layout._marked("12, अन्ना सालै") == '12, <font face="DocDevanagari">अन्ना सालै</font>'
    assert layout._marked("Asha Verma & Co") == "Asha Verma &amp; Co"
    # A no-break space doesn't end a word for reportlab: the fonts are set apart all the same.
    assert layout._marked("a\xa0क") == 'a\xa0 <font face="DocDevanagari">क</font>'


def test_a_danda_is_set_in_the_face_of_the_script_it_ends() -> None:
    """The danda is coded in the Devanagari block but ends sentences in Bengali, Odia, Gurmukhi…: set in
    Devanagari after a Bengali word, the two faces met and a space was put before it."""
    td._needs_faces("NotoSansDevanagari", "NotoSansBengali")
    assert layout._marked("কলকাতা। ঢাকা॥") == '<font face="DocBengali">কলকাতা। ঢাকা॥</font>'
    assert layout._marked("है ।") == '<font face="DocDevanagari">है ।</font>'  # across a space
    assert layout._marked("Kolkata।") == 'Kolkata <font face="DocDevanagari">।</font>'  # no script before it
    assert layout.needs_script_fonts("।")


# --- 8. a CPO's name with a character XML 1.0 has no place for ------------------------------------------------


def test_spreadsheet_text_drops_what_xml_has_no_place_for() -> None:
    assert spreadsheet_text("Evil\uffff\ufffe\ud800\udfffCPO") == "EvilCPO"
    assert spreadsheet_text("A\tB\nC\x0bD\x85E") == "A\tB\nCDE"
    kept = "Straße चेन्नई \ue000\ufffd \U0001f50c \U0010ffff"  # private use, U+FFFD, beyond the BMP: all XML
    assert spreadsheet_text(kept) == kept
    assert spreadsheet_text("\uffff=1+1") == "'=1+1"  # what is left can't be a formula either


@pytest.mark.parametrize("name", ["Evil\uffffCPO", "Evil\ufffeCPO"])
def test_a_cpo_name_with_an_xml_illegal_character_still_gives_an_xlsx_that_opens(peer: Any, name: str) -> None:
    partner = Partner.objects.get(pk=register_with_cpo_named(peer, name).pk)
    assert partner.name == name
    CdrAuditFactory(cdr=CdrFactory(partner=partner))
    (row,) = settlement_compute(partner=partner, period_start=date(2026, 10, 1))
    finance = staff_with("view_settlement", "change_settlement", "export_settlement")
    for action in ("export_xlsx", "export_xlsx_with_cdrs"):
        response = finance.post(
            reverse("admin:billing_settlement_changelist"), {"action": action, "_selected_action": [row.pk]}
        )
        assert response.status_code == 200, action
        sheet = openpyxl.load_workbook(io.BytesIO(response.content)).active
        assert sheet["A2"].value == "EvilCPO", action
