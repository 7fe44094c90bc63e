"""A driver's receipt for one charge (and the credit note that corrects one): who we are, the charge (place,
EVSE, times, energy), the CPO's cost and our fee each with its VAT, the total, the quote and the payment."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings

from billing.documents.layout import Column, Content, Section, day, moment, money, quantity, rounded
from billing.models import BapAgreement, DriverReceipt, PartnerTerms, Payment
from billing.money import DEFAULT_POLICY

PROVIDERS = {
    "razorpay": "Razorpay",
    "stripe": "Card (Stripe)",
    "wallet": "Prepaid wallet",
    "bap": "Paid through the app",
}


def _rate(vat: Decimal, net: Decimal) -> str:
    """`19%` from the amounts (receipts keep amounts, not rates); blank when there is nothing to divide."""
    if net == 0 or vat == 0:
        return "0%" if net != 0 else ""
    rate = (vat / net * 100).quantize(Decimal("0.01")).normalize()
    return f"{rate:f}%"


def _payments(receipt: DriverReceipt) -> list[Payment]:
    """The booking's payments for the charge (the one authorised at booking, and a balance above its hold)."""
    cdr = receipt.cdr
    session = cdr.charging_session or (cdr.credited_cdr.charging_session if cdr.credited_cdr_id else None)
    if session is None or session.booking_id is None:
        return []
    return list(
        Payment.objects.filter(booking_id=session.booking_id).exclude(purpose="top-up").order_by("created_at", "pk")
    )


def _payment_facts(payments: list[Payment]) -> list[tuple[str, str]]:
    if not payments:
        return [("Payment", "Billed to your account")]
    facts = []
    for payment in payments:
        method = PROVIDERS.get(payment.provider, payment.provider or "–")
        label = "Payment" if payment.purpose != "balance" else "Balance payment"
        facts.append((label, f"{method} · {payment.get_status_display()}"))
    collectors = {p.bap_id for p in payments if p.collected_by == Payment.CollectedBy.BAP}
    for bap_id in sorted(collectors):
        agreement = BapAgreement.objects.filter(bap_id=bap_id).first()
        facts.append(("Collected by", f"{agreement or bap_id} (on our behalf)"))
    return facts


def _driver_lines(receipt: DriverReceipt) -> list[str]:
    driver = receipt.driver
    if driver is None:
        return ["Driver (account closed)"]
    if driver.erased_at is not None or not driver.name:
        return [f"Driver account {driver.pk}", "Personal data erased on request" if driver.erased_at else ""]
    return [driver.name, *(line for line in (driver.email, f"Account {driver.pk}") if line)]


def receipt_content(receipt: DriverReceipt, *, number: str, issued_at: datetime, credited_number: str = "") -> Content:
    """The receipt (or, for a credit CDR, the credit note) as document content."""
    cdr = receipt.cdr
    currency = receipt.currency
    policy = PartnerTerms.objects.filter(partner_id=cdr.partner_id).values_list("rounding", flat=True).first()
    policy = policy or DEFAULT_POLICY

    def m(amount: Decimal) -> str:
        return money(amount, currency, policy)

    location = cdr.data.get("cdr_location") or {}
    place = ", ".join(
        str(part) for part in (location.get("address"), location.get("postal_code"), location.get("city")) if part
    )
    evse = location.get("evse_id") or cdr.evse_uid or "–"
    connector = location.get("connector_id")
    minutes = int((cdr.end_date_time - cdr.start_date_time).total_seconds() // 60)
    charge = Section(
        title="The charge",
        columns=[Column("", 0.28), Column("", 0.72)],
        rows=[
            ["Location", location.get("name") or cdr.location_id or "–"],
            ["Address", place or "–"],
            ["Charge point (EVSE)", f"{evse}, connector {connector}" if connector else evse],
            ["Operator (CPO)", f"{cdr.partner.name} ({cdr.country_code}*{cdr.party_id})"],
            ["Started", moment(cdr.start_date_time)],
            ["Ended", f"{moment(cdr.end_date_time)} ({minutes // 60} h {minutes % 60:02d} min)"],
            ["Energy", f"{quantity(receipt.energy_kwh)} kWh"],
            ["Charge record (CDR)", cdr.cdr_id + (f", session {cdr.session_id}" if cdr.session_id else "")],
        ],
    )

    cpo_total = receipt.cpo_cost_excl_vat + receipt.cpo_vat
    fee_total = receipt.fee_excl_vat + receipt.fee_vat
    rows = [
        [
            f"Charging, {cdr.partner.name}",
            m(receipt.cpo_cost_excl_vat),
            _rate(receipt.cpo_vat, receipt.cpo_cost_excl_vat),
            m(receipt.cpo_vat),
            m(cpo_total),
        ]
    ]
    if receipt.fee_excl_vat or receipt.fee_vat:
        rows.append(
            [
                f"Service fee, {settings.LEGAL_ENTITY_NAME}",
                m(receipt.fee_excl_vat),
                _rate(receipt.fee_vat, receipt.fee_excl_vat),
                m(receipt.fee_vat),
                m(fee_total),
            ]
        )
    # Each line is rounded for display; the difference to the rounded total is shown, so the column adds up.
    rounding = rounded(receipt.total_incl_vat, currency, policy) - sum(
        (rounded(x, currency, policy) for x in (cpo_total, fee_total)), Decimal(0)
    )
    if rounding:
        rows.append(["Rounding", "", "", "", m(rounding)])
    net = receipt.cpo_cost_excl_vat + receipt.fee_excl_vat
    vat = receipt.cpo_vat + receipt.fee_vat
    amounts = Section(
        title="Amounts" if not cdr.credit else "Amounts credited",
        columns=[
            Column("Description", 0.40),
            Column(f"Net ({currency})", 0.16, "R"),
            Column("VAT rate", 0.12, "R"),
            Column(f"VAT ({currency})", 0.16, "R"),
            Column(f"Total ({currency})", 0.16, "R"),
        ],
        rows=rows,
        total_rows=[["Total", m(net), "", m(vat), m(receipt.total_incl_vat)]],
        note="VAT on the charging is the operator's, as stated in its charge record; VAT on the service fee is ours.",
    )

    payments = _payments(receipt)
    facts = [("Date", day(issued_at)), ("Currency", currency), *_payment_facts(payments)]
    totals = []
    if receipt.quoted_total_incl_vat is not None and not cdr.credit:
        totals.append(("Quoted before the charge", f"{m(receipt.quoted_total_incl_vat)} {currency}"))
    notes = [
        f"Times are in {settings.TIME_ZONE}. Amounts are rounded to the currency's minor unit "
        f"({policy.lower().replace('_', ' ')}).",
        "Issued electronically; valid without a signature. Please keep it for your records.",
    ]
    if cdr.credit:
        if credited_number:
            facts.append(("Credits receipt", credited_number))
        facts.append(("Corrects CDR", cdr.credit_reference_id or "–"))
        totals.append(("Credited to you", f"{m(-receipt.total_incl_vat)} {currency}"))
        totals.append((f"Total ({currency})", m(receipt.total_incl_vat)))
        notes.insert(0, "The operator corrected this charge; the amount credited is returned to your payment method.")
        title, subtitle = "Credit note", "Correction of a charge"
    else:
        paid = bool(payments) and all(
            p.status in (Payment.Status.CAPTURED, Payment.Status.COLLECTED_BY_BAP) for p in payments
        )
        totals.append((f"Total {'paid' if paid else 'due'} ({currency})", m(receipt.total_incl_vat)))
        title, subtitle = "Receipt", "Electric vehicle charging"
    return Content(
        title=title,
        subtitle=subtitle,
        number=number,
        issued_at=issued_at,
        recipient_label="Issued to",
        recipient=[line for line in _driver_lines(receipt) if line],
        facts=facts,
        sections=[charge, amounts],
        totals=totals,
        notes=notes,
    )
