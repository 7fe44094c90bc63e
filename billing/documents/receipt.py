"""A driver's receipt for one charge (and the credit note that corrects one): who we are, the charge (place,
EVSE, times, energy), the CPO's cost and our fee each with its VAT, the total, the quote and the payment."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.conf import settings

from billing.documents.layout import Column, Content, Section, day, moment, money, plain, quantity, rounded
from billing.models import BapAgreement, DriverReceipt, PartnerTerms, Payment
from billing.money import DEFAULT_POLICY, minor_units

ZERO = Decimal(0)
HUNDRED = Decimal(100)

PROVIDERS = {
    "razorpay": "Razorpay",
    "stripe": "Card (Stripe)",
    "wallet": "Prepaid wallet",
    "bap": "Paid through the app",
}


def _rate(vat: Decimal, net: Decimal, currency: str) -> str:
    """`19%` from the amounts (receipts keep amounts, not rates); blank when there is nothing to divide. The
    amounts are rounded to the currency's minor unit, so their quotient is not the rate (JPY 9 on 95 is 9.47 %):
    a rate is printed only when exactly one whole or half percent gives the VAT on the net within half a minor
    unit, else "–" rather than a rate nobody charged."""
    if net == 0 or vat == 0:
        return "0%" if net != 0 else ""
    try:
        half_unit = Decimal(1).scaleb(-minor_units(currency)) / 2
    except ValueError:  # outside ISO 4217: the amounts as given
        half_unit = Decimal("0.005")
    near = (vat / net * 200).to_integral_value()  # in half percents
    fits = [
        rate
        for rate in (Decimal(h) / 2 for h in range(int(near) - 2, int(near) + 3) if h > 0)
        if abs(net * rate / HUNDRED - vat) <= half_unit
    ]
    return f"{fits[0].normalize():f}%" if len(fits) == 1 else "–"


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
        facts.append(("Collected by", f"{plain(agreement or bap_id)} (on our behalf)"))
    return facts


def _driver_lines(receipt: DriverReceipt) -> list[str]:
    driver = receipt.driver
    if driver is None:
        return ["Driver (account closed)"]
    if driver.erased_at is not None or not driver.name:
        return [f"Driver account {driver.pk}", "Personal data erased on request" if driver.erased_at else ""]
    # The name only, no e-mail: a tax receipt doesn't need it, and a receipt is kept (unchanged) after the
    # driver's erasure (docs/privacy.md).
    return [plain(driver.name), f"Account {driver.pk}"]


def receipt_content(
    receipt: DriverReceipt,
    *,
    number: str,
    issued_at: datetime,
    credited_number: str = "",
    fee_given_back: tuple[Decimal, Decimal] = (ZERO, ZERO),
    refunded_before: Decimal = ZERO,
) -> Content:
    """The receipt (or, for a credit CDR, the credit note) as document content. `fee_given_back` is, for a
    credit note, our fee and its VAT given back with the CPO's part (payments.fee_given_back, what the ledger
    refunds): printed as a line of its own and in the total. `refunded_before` is, for a credit note, the part
    of the CPO's credit a dispute credit it bore had already refunded (payments.dispute_credit_netted): the note
    totals the whole correction and states, of it, what was refunded before and what is returned now (what the
    ledger refunds with it). Text the CPO sent (the location's name and address) and partners' names are
    printed plain and capped (layout.plain)."""
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
    evse = plain(location.get("evse_id") or cdr.evse_uid or "–", 80)
    connector = plain(location.get("connector_id") or "", 80)
    partner = plain(cdr.partner.name, 120)
    minutes = int((cdr.end_date_time - cdr.start_date_time).total_seconds() // 60)
    charge = Section(
        title="The charge",
        columns=[Column("", 0.28), Column("", 0.72)],
        rows=[
            ["Location", plain(location.get("name") or cdr.location_id or "–")],
            ["Address", plain(place or "–")],
            ["Charge point (EVSE)", f"{evse}, connector {connector}" if connector else evse],
            ["Operator (CPO)", f"{partner} ({cdr.country_code}*{cdr.party_id})"],
            ["Started", moment(cdr.start_date_time)],
            ["Ended", f"{moment(cdr.end_date_time)} ({minutes // 60} h {minutes % 60:02d} min)"],
            ["Energy", f"{quantity(receipt.energy_kwh)} kWh"],
            ["Charge record (CDR)", plain(cdr.cdr_id + (f", session {cdr.session_id}" if cdr.session_id else ""))],
        ],
    )

    def r(amount: Decimal) -> Decimal:
        return rounded(amount, currency, policy)

    def line(label: str, net: Decimal, vat: Decimal) -> list[str]:
        # The net printed is the rounded total less the rounded VAT, so the row adds across.
        return [label, m(r(net + vat) - r(vat)), _rate(vat, net, currency), m(vat), m(net + vat)]

    fee_excl, fee_vat = receipt.fee_excl_vat, receipt.fee_vat
    fee_label = f"Service fee, {settings.LEGAL_ENTITY_NAME}"
    if cdr.credit and (fee_given_back[0] or fee_given_back[1]):
        fee_excl, fee_vat = -fee_given_back[0], -fee_given_back[1]
        fee_label = f"Service fee given back, {settings.LEGAL_ENTITY_NAME}"
    total = receipt.total_incl_vat + fee_excl + fee_vat - receipt.fee_excl_vat - receipt.fee_vat
    cpo_total = receipt.cpo_cost_excl_vat + receipt.cpo_vat
    fee_total = fee_excl + fee_vat
    rows = [line(f"Charging, {partner}", receipt.cpo_cost_excl_vat, receipt.cpo_vat)]
    if fee_excl or fee_vat:
        rows.append(line(fee_label, fee_excl, fee_vat))
    # Each line is rounded for display; the difference to the rounded total is shown, so the column adds up.
    rounding = r(total) - sum((r(x) for x in (cpo_total, fee_total)), Decimal(0))
    if rounding:
        rows.append(["Rounding", "", "", "", m(rounding)])
    vat = receipt.cpo_vat + fee_vat
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
        total_rows=[["Total", m(r(total) - r(vat)), "", m(vat), m(total)]],
        note="VAT on the charging is the operator's, as stated in its charge record; VAT on the service fee is ours.",
    )

    payments = _payments(receipt)
    facts = [("Date", day(issued_at)), ("Currency", currency), *_payment_facts(payments)]
    totals = []
    if receipt.quoted_total_incl_vat is not None and not cdr.credit:
        totals.append(("Quoted before the charge", f"{m(receipt.quoted_total_incl_vat)} {currency}"))
    notes = [
        f"Times are in {settings.DOCUMENTS_TIME_ZONE}. Amounts are rounded to the currency's minor unit "
        f"({policy.lower().replace('_', ' ')}).",
        "Issued electronically; valid without a signature. Please keep it for your records.",
    ]
    if cdr.credit:
        if credited_number:
            facts.append(("Credits receipt", credited_number))
        facts.append(("Corrects CDR", cdr.credit_reference_id or "–"))
        totals.append(("Credited to you", f"{m(-total)} {currency}"))
        if refunded_before > 0:
            now = -total - refunded_before
            totals.append(
                ("  of which refunded before, with a credit agreed in a dispute", f"{m(refunded_before)} {currency}")
            )
            totals.append(("  of which returned now", f"{m(now)} {currency}"))
            notes.insert(
                0,
                f"The operator corrected this charge. {m(refunded_before)} {currency} of it was refunded to you "
                "before, with a credit agreed in a dispute about this charge; the rest, "
                f"{m(now)} {currency}, is returned to your payment method.",
            )
        else:
            notes.insert(
                0, "The operator corrected this charge; the amount credited is returned to your payment method."
            )
        totals.append((f"Total ({currency})", m(total)))
        title, subtitle = "Credit note", "Correction of a charge"
    else:
        paid = bool(payments) and all(
            p.status in (Payment.Status.CAPTURED, Payment.Status.COLLECTED_BY_BAP) for p in payments
        )
        totals.append((f"Total {'paid' if paid else 'due'} ({currency})", m(total)))
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
