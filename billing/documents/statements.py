"""Settlement statements: to a consumer app (BAP) — what its drivers were billed, who collected, the finder fees
and the net due by the agreed date — and to a CPO — its CDRs of a closed period, credits, disputes and what we
pay it."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, DecimalField, OuterRef, Q, Subquery, Sum
from django.db.models.functions import Coalesce

from billing.documents.layout import Column, Content, Section, day, moment, money, quantity
from billing.models import Dispute, PartnerTerms, Settlement
from billing.money import DEFAULT_POLICY
from billing.services import payments
from billing.services.bap_settlement import BapSettlement
from billing.services.settlement import period_cdrs

# A statement lists at most this many lines; beyond, it says how many more there are and where to find them
# (the CSV export), so a month of a large partner stays a document a person can file.
MAX_LINES = 2000
AMOUNT = DecimalField(max_digits=16, decimal_places=4)
ZERO = Decimal("0")


def _period_text(start: object, end_exclusive: object) -> str:
    return f"{day(start)} to {day(end_exclusive - timedelta(days=1))}"  # type: ignore[operator]


def _truncation_note(shown: int, total: int, what: str, command: str) -> str:
    if total <= shown:
        return ""
    return f"The first {shown} of {total} {what} are listed; all of them are in the export ({command})."


# --- BAP --------------------------------------------------------------------------------------------------


def bap_statement_content(settlement: BapSettlement, *, number: str, issued_at: datetime) -> Content:
    s = settlement
    currency = s.currency

    def m(amount: Decimal) -> str:
        return money(amount, currency)

    collected_bap = sum(1 for line in s.lines if line.collected_by == "BAP")
    collected_us = sum(1 for line in s.lines if line.collected_by == "BPP")
    summary = Section(
        title="Summary of the period",
        columns=[Column("", 0.56), Column("Charges", 0.14, "R"), Column(f"Amount ({currency})", 0.30, "R")],
        rows=[
            ["Billed to drivers, collected by the app (incl. VAT)", str(collected_bap), m(s.collected_by_bap)],
            ["Billed to drivers, collected by us (incl. VAT)", str(collected_us), m(s.collected_by_us)],
            ["  of which credits and refunds", "", m(s.credits)],
            [f"Finder fees kept by the app ({s.finder_fee_percent.normalize():f}%)", "", m(-s.finder_fees_retained)],
            ["Finder fees we owe the app", "", m(-s.finder_fees_owed)],
            *([["Other adjustments", "", m(s.other)]] if s.other else []),
        ],
        total_rows=[["Net due (+ the app pays us, − we pay the app)", "", m(s.net_due)]],
        note="Charges the app collected are owed to us less its finder fee; on charges we collected we owe the "
        "app its finder fee. Amounts are from our ledger, in the period's posting dates.",
    )
    account = Section(
        title="Account",
        columns=[Column("", 0.70), Column(f"Amount ({currency})", 0.30, "R")],
        rows=[
            [f"Balance on {day(s.period_start)} (+ owed to us)", m(s.opening_balance)],
            ["Net due for the period", m(s.net_due)],
            ["Payments received from the app", m(-s.paid_by_bap)],
            ["Payments made to the app", m(s.paid_to_bap)],
        ],
        total_rows=[[f"Balance at the end of {day(s.period_end - timedelta(days=1))}", m(s.closing_balance)]],
    )
    shown = s.lines[:MAX_LINES]
    lines = Section(
        title="Charges and payments",
        columns=[
            Column("Posted", 0.13),
            Column("Reference", 0.27),
            Column("Collector", 0.11),
            Column(f"Billed ({currency})", 0.13, "R"),
            Column("Finder fee", 0.12, "R"),
            Column("Net", 0.12, "R"),
            Column("Paid", 0.12, "R"),
        ],
        rows=[
            [
                day(line.posted_at),
                line.reference or "(no reference)",
                {"BAP": "App", "BPP": "Us"}.get(line.collected_by, "Payment" if line.paid else "–"),
                *(m(x) if x or line.collected_by else "" for x in (line.billed, line.finder_fee, line.net)),
                m(line.paid) if line.paid else "",
            ]
            for line in shown
        ],
        note=_truncation_note(len(shown), len(s.lines), "lines", "settlement_report --party bap:… --details"),
    )
    if s.net_due > 0:
        grand = f"Net due from the app by {day(s.due_date)} ({currency})"
    elif s.net_due < 0:
        grand = f"Net due to the app by {day(s.due_date)} ({currency})"
    else:
        grand = f"Nothing due for the period ({currency})"
    basis = {"delivery": "after the charge", "invoice_receipt": "after the invoice"}.get(s.settlement_basis, "")
    return Content(
        title="Statement",
        subtitle="Settlement with a consumer app (BAP)",
        number=number,
        issued_at=issued_at,
        recipient_label="Statement for",
        recipient=[s.name, f"Beckn subscriber {s.bap_id}" if s.legal_name else "", "Consumer app (BAP)"],
        facts=[
            ("Period", _period_text(s.period_start, s.period_end)),
            ("Currency", currency),
            ("Collects", "Yes, from its drivers" if s.collects else "No, we collect"),
            ("Window", f"{s.settlement_window} {basis}".strip()),
            ("Due date", day(s.due_date)),
        ],
        sections=[summary, account, lines] if s.lines else [summary, account],
        totals_after=2,
        totals=[
            ("Billed to drivers (incl. VAT)", m(s.billed_incl_vat)),
            ("Finder fees", m(s.finder_fees)),
            (grand, m(abs(s.net_due))),
        ],
        notes=[
            f"Please quote {number} with your payment. Times are in {settings.TIME_ZONE}.",
            "The net due is settled per the agreed window; a balance carried from earlier periods is shown under "
            "Account.",
        ],
    )


# --- CPO --------------------------------------------------------------------------------------------------


def dispute_credits_borne(settlement: Settlement) -> Decimal:
    """Credits agreed in disputes on the period's CDRs and borne by the CPO (taken off its payable when granted),
    less what its credit CDRs for the same charges cover (those count as credit CDRs): what the net payable is
    short of the CDRs' totals."""
    cdrs = period_cdrs(settlement.partner_id, settlement.period_start, settlement.period_end)
    credited = cdrs.filter(currency=settlement.currency, credit=False, disputes__state=Dispute.State.CREDITED)
    return sum((payments.dispute_credit_uncovered(cdr) for cdr in credited.distinct()), ZERO)


def cpo_net_payable(settlement: Settlement) -> Decimal:
    """What we pay the CPO for the period, as its statement states it."""
    return settlement.cpo_billed_incl_vat - dispute_credits_borne(settlement)


def cpo_statement_content(settlement: Settlement, *, number: str, issued_at: datetime) -> Content:
    s = settlement
    currency = s.currency
    policy = PartnerTerms.objects.filter(partner_id=s.partner_id).values_list("rounding", flat=True).first()
    policy = policy or DEFAULT_POLICY

    def m(amount: Decimal | None) -> str:
        return money(amount, currency, policy)

    cdrs = period_cdrs(s.partner_id, s.period_start, s.period_end).filter(currency=currency)
    split = cdrs.aggregate(
        billed_excl=Coalesce(Sum("total_cost_excl_vat", filter=Q(credit=False)), ZERO, output_field=AMOUNT),
        billed_incl=Coalesce(
            Sum(Coalesce("total_cost_incl_vat", "total_cost_excl_vat"), filter=Q(credit=False)),
            ZERO,
            output_field=AMOUNT,
        ),
        credits=Count("pk", filter=Q(credit=True)),
    )
    borne = dispute_credits_borne(s)
    disputes = (
        Dispute.objects.filter(cdr__in=cdrs.values("pk"))
        .values("state")
        .annotate(n=Count("pk"), credited=Sum("credit_amount"))
        .order_by("state")
    )
    dispute_rows = [
        [Dispute.State(row["state"]).label, str(row["n"]), m(row["credited"]) if row["credited"] else ""]
        for row in disputes
    ]
    summary = Section(
        title="Summary of the period",
        columns=[
            Column("", 0.52),
            Column(f"Excl. VAT ({currency})", 0.24, "R"),
            Column(f"Incl. VAT ({currency})", 0.24, "R"),
        ],
        rows=[
            [
                f"Charge records (CDRs): {s.cdr_count - split['credits']}",
                m(split["billed_excl"]),
                m(split["billed_incl"]),
            ],
            [
                f"Credit CDRs: {split['credits']}",
                m(s.cpo_billed_excl_vat - split["billed_excl"]),
                m(s.cpo_billed_incl_vat - split["billed_incl"]),
            ],
            [f"Energy: {quantity(s.energy_kwh)} kWh", "", ""],
            ["Our repricing of the same CDRs", m(s.computed_excl_vat), ""],
        ],
        total_rows=[["Net billed by you", m(s.cpo_billed_excl_vat), m(s.cpo_billed_incl_vat)]],
    )
    sections = [summary]
    if dispute_rows:
        sections.append(
            Section(
                title="Disputes on these CDRs",
                columns=[
                    Column("State", 0.52),
                    Column("Disputes", 0.24, "R"),
                    Column("Credited (excl. VAT)", 0.24, "R"),
                ],
                rows=dispute_rows,
                note="Credits agreed in a dispute and borne by you are taken off the net payable; a credit CDR you "
                "send for the same charge is netted against them, not counted twice.",
            )
        )
    latest = Dispute.objects.filter(cdr=OuterRef("pk")).order_by("-opened_at", "-pk")
    rows = list(
        cdrs.annotate(dispute_state=Subquery(latest.values("state")[:1]))
        .order_by("end_date_time", "pk")
        .values_list(
            "cdr_id",
            "end_date_time",
            "location_id",
            "evse_uid",
            "total_energy",
            "total_cost_excl_vat",
            "total_cost_incl_vat",
            "audit__status",
            "dispute_state",
        )[:MAX_LINES]
    )
    sections.append(
        Section(
            title="Charge records",
            columns=[
                Column("CDR", 0.14),
                Column(f"Ended ({settings.TIME_ZONE})", 0.19),
                Column("Location / EVSE", 0.18),
                Column("kWh", 0.08, "R"),
                Column("Excl. VAT", 0.11, "R"),
                Column("Incl. VAT", 0.11, "R"),
                Column("Audit", 0.19),
            ],
            rows=[
                [
                    cdr_id,
                    moment(end, zone=False),
                    f"{location_id} / {evse_uid}",
                    quantity(energy),
                    m(excl),
                    m(incl if incl is not None else excl),
                    (status or "not audited").capitalize() + (f"; dispute {dispute.lower()}" if dispute else ""),
                ]
                for cdr_id, end, location_id, evse_uid, energy, excl, incl, status, dispute in rows
            ],
            note=_truncation_note(len(rows), s.cdr_count, "CDRs", "settlement_report --party cpo:… --details"),
        )
    )
    party = s.partner.party_key
    return Content(
        title="Statement",
        subtitle="Settlement with a charge point operator (CPO)",
        number=number,
        issued_at=issued_at,
        recipient_label="Statement for",
        recipient=[s.partner.name, f"OCPI party {party}", "Charge point operator (CPO)"],
        facts=[
            ("Period", _period_text(s.period_start, s.period_end)),
            ("Currency", currency),
            ("State", s.get_state_display() + (f" on {day(s.closed_at)}" if s.closed_at else "")),
            ("Open disputes", str(s.open_disputes)),
        ],
        sections=sections,
        totals_after=len(sections) - 1,  # before the list of CDRs
        totals=[
            ("Billed incl. VAT", m(split["billed_incl"])),
            ("Credits incl. VAT", m(s.cpo_billed_incl_vat - split["billed_incl"])),
            *([("Dispute credits you bear, incl. VAT", m(-borne))] if borne else []),
            (f"Net payable to the CPO ({currency})", m(s.cpo_billed_incl_vat - borne)),
        ],
        notes=[
            "Amounts are your CDRs' totals as you sent them, credit CDRs netted; a CDR without a VAT-inclusive "
            f"total counts with its total excl. VAT. Times are in {settings.TIME_ZONE}.",
            f"Please quote {number} on your invoice for this period.",
        ],
    )
