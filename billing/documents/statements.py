"""Settlement statements: to a consumer app (BAP) — what its drivers were billed, who collected, the finder fees
and the net due by the agreed date — and to a CPO — its CDRs of a closed period, credits, disputes and what we
pay it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import CharField, Count, DecimalField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Cast, Coalesce, Concat

from billing.documents.layout import Column, Content, Section, day, moment, money, quantity
from billing.models import Cdr, Dispute, LedgerLine, PartnerTerms, Settlement
from billing.money import DEFAULT_POLICY, minor_units, round_money
from billing.services.bap_settlement import BapSettlement
from billing.services.ledger import from_minor, to_minor
from billing.services.settlement import period_cdrs, rounding_adjustments

# A statement lists at most this many lines; beyond, it says how many more there are and where to find them
# (the CSV export), so a month of a large partner stays a document a person can file.
MAX_LINES = 2000
AMOUNT = DecimalField(max_digits=16, decimal_places=4)
ZERO = Decimal("0")


def _period_text(start: object, end_exclusive: object) -> str:
    return f"{day(start)} to {day(end_exclusive - timedelta(days=1))}"  # type: ignore[operator]


def _times_note() -> str:
    """The zone the statement's times are printed in (the legal entity's, layout.document_zone) and, where it is
    not the deployment's, the zone whose midnights bound the period (settlement.period_bounds): with UTC and
    Asia/Kolkata, a CDR that ended after 18:30 UTC on the period's last day is printed with the next day's date."""
    note = f"Times are in {settings.DOCUMENTS_TIME_ZONE}."
    if settings.DOCUMENTS_TIME_ZONE != settings.TIME_ZONE:
        note += f" The period runs from midnight to midnight {settings.TIME_ZONE}."
    return note


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
            f"Please quote {number} with your payment. {_times_note()}",
            "The net due is settled per the agreed window; a balance carried from earlier periods is shown under "
            "Account.",
        ],
    )


# --- CPO --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CpoStatementFigures:
    """A CPO statement's money, each CDR's total rounded on its own (the partner's policy), as the ledger books
    it (postings.bill_of): the totals are the sums of the listed lines and match the CPO's payable account."""

    policy: str
    cdr_count: int
    credit_count: int
    billed_excl: Decimal  # the charge records (non-credit CDRs)
    billed_incl: Decimal
    credits_excl: Decimal  # the credit CDRs, negative
    credits_incl: Decimal
    computed_excl: Decimal  # our repricing (Settlement.computed_excl_vat)
    dispute_credits: Decimal  # credits agreed in disputes on the period's CDRs, borne by the CPO (its payable)
    netted: Decimal  # what the period's credit CDRs give back that such a credit had already taken off

    @property
    def net_billed_excl(self) -> Decimal:
        return self.billed_excl + self.credits_excl

    @property
    def net_billed_incl(self) -> Decimal:
        return self.billed_incl + self.credits_incl

    @property
    def dispute_credits_borne(self) -> Decimal:
        """What the net payable is short of the CDRs' totals: the dispute credits less the credit CDRs netted
        against them (negative when the period's credit CDRs net against an earlier period's dispute credits)."""
        return self.dispute_credits - self.netted

    @property
    def net_payable(self) -> Decimal:
        return self.net_billed_incl - self.dispute_credits_borne


def _round(amount: Decimal, currency: str, policy: str) -> Decimal:
    try:
        return round_money(amount, currency, policy)
    except ValueError:  # a currency outside ISO 4217: exact, as the exports show it
        return amount


def _dispute_credits(settlement: Settlement, policy: str) -> tuple[Decimal, Decimal]:
    """(dispute credits, netted), as the ledger booked them to the CPO's payable, in a few queries whatever the
    number of CDRs (they run before the statement's number is taken, not once per CDR under its lock).

    A credit agreed in a dispute and borne by the CPO is taken off its payable when granted (`dispute:<pk>:credit`)
    and counts in the period of the CDR it credits. A credit CDR the CPO sends for the same charge gives back
    only what goes beyond it (payments._credit_cdr posts the rest, `cdr:<pk>:credit`): the part the ledger did
    not post again is `netted`, in the credit CDR's period, which may be a later one (October closed with the
    dispute credit taken off, the credit CDR carried into November): counted there in full, the credit would be
    taken off twice across the two statements."""
    currency = settlement.currency
    try:
        minor_units(currency)
    except ValueError:  # a currency outside ISO 4217 has no ledger (ledger.to_minor refuses it): nothing booked
        return ZERO, ZERO
    cdrs = period_cdrs(settlement.partner_id, settlement.period_start, settlement.period_end).filter(currency=currency)
    payable = LedgerLine.objects.filter(
        account__code__startswith="cpo:", account__code__endswith=":payable", account__currency=currency
    )
    credited = Dispute.objects.filter(state=Dispute.State.CREDITED)
    keys = (
        credited.filter(cdr__in=cdrs.filter(credit=False).values("pk"))
        .annotate(key=Concat(Value("dispute:"), Cast("pk", CharField()), Value(":credit")))
        .values("key")
    )
    granted = payable.filter(entry__idempotency_key__in=Subquery(keys)).aggregate(total=Sum("amount_minor"))["total"]
    dispute_credits = from_minor(granted or 0, currency)

    period_credits = set(
        cdrs.filter(credit=True, processed_at__isnull=False, credited_cdr__disputes__state=Dispute.State.CREDITED)
        .values_list("pk", flat=True)
        .distinct()
    )
    if not period_credits:
        return dispute_credits, ZERO
    originals = set(Cdr.objects.filter(pk__in=period_credits).values_list("credited_cdr_id", flat=True))
    # Every processed credit CDR of those charges, whatever its period, in the order the ledger netted them.
    credits = list(
        Cdr.objects.filter(credited_cdr_id__in=originals, credit=True, processed_at__isnull=False)
        .order_by("processed_at", "pk")
        .values_list("pk", "credited_cdr_id", "total_cost_incl_vat", "total_cost_excl_vat")
    )
    dispute_of = {
        f"dispute:{pk}:credit": cdr_id
        for pk, cdr_id in credited.filter(cdr_id__in=originals).values_list("pk", "cdr_id")
    }
    booked = dict(
        payable.filter(entry__idempotency_key__in=[*dispute_of, *(f"cdr:{pk}:credit" for pk, *_ in credits)])
        .values("entry__idempotency_key")
        .annotate(total=Sum("amount_minor"))
        .values_list("entry__idempotency_key", "total")
    )
    left = dict.fromkeys(originals, 0)  # minor units of dispute credits not netted yet, per original
    for key, cdr_id in dispute_of.items():
        left[cdr_id] += booked.get(key, 0)
    netted = 0
    for pk, original, incl, excl in credits:
        gives_back = to_minor(-_round(incl if incl is not None else excl, currency, policy), currency)
        part = max(0, min(gives_back - booked.get(f"cdr:{pk}:credit", 0), left[original]))
        left[original] -= part
        if pk in period_credits:
            netted += part
    return dispute_credits, from_minor(netted, currency)


_FIGURES = "_cpo_statement_figures"


def cpo_statement_figures(settlement: Settlement) -> CpoStatementFigures:
    """The statement's figures, in a fixed number of queries. Kept on a CLOSED settlement (its figures are
    frozen): issue_cpo_statement asks for the total before it takes the statement's number, and the content,
    rendered under the numbering lock, reuses them rather than querying again while other statements wait."""
    mark = (settlement.pk, settlement.state, settlement.closed_at)
    kept = getattr(settlement, _FIGURES, None)
    if kept is not None and kept[0] == mark:
        return kept[1]
    s, currency = settlement, settlement.currency
    policy = PartnerTerms.objects.filter(partner_id=s.partner_id).values_list("rounding", flat=True).first()
    policy = policy or DEFAULT_POLICY
    cdrs = period_cdrs(s.partner_id, s.period_start, s.period_end).filter(currency=currency)
    billed = Coalesce("total_cost_incl_vat", "total_cost_excl_vat")
    sums = cdrs.aggregate(
        cdr_count=Count("pk"),
        credit_count=Count("pk", filter=Q(credit=True)),
        excl=Coalesce(Sum("total_cost_excl_vat"), ZERO, output_field=AMOUNT),
        incl=Coalesce(Sum(billed), ZERO, output_field=AMOUNT),
        credit_excl=Coalesce(Sum("total_cost_excl_vat", filter=Q(credit=True)), ZERO, output_field=AMOUNT),
        credit_incl=Coalesce(Sum(billed, filter=Q(credit=True)), ZERO, output_field=AMOUNT),
    )
    add = rounding_adjustments([s], {s.partner_id: policy}).get(s.pk, {})

    def rounded(exact: Decimal, figure: str) -> Decimal:
        return _round(exact + add.get(figure, ZERO), currency, policy)

    credits_excl, credits_incl = (
        rounded(sums["credit_excl"], "credit_excl"),
        rounded(sums["credit_incl"], "credit_incl"),
    )
    dispute_credits, netted = _dispute_credits(s, policy)
    figures = CpoStatementFigures(
        policy=policy,
        cdr_count=sums["cdr_count"],
        credit_count=sums["credit_count"],
        billed_excl=rounded(sums["excl"], "excl") - credits_excl,
        billed_incl=rounded(sums["incl"], "incl") - credits_incl,
        credits_excl=credits_excl,
        credits_incl=credits_incl,
        computed_excl=rounded(s.computed_excl_vat, "computed"),
        dispute_credits=dispute_credits,
        netted=netted,
    )
    if s.state == Settlement.State.CLOSED:
        setattr(settlement, _FIGURES, (mark, figures))
    return figures


def dispute_credits_borne(settlement: Settlement) -> Decimal:
    """Credits agreed in disputes on the period's CDRs and borne by the CPO (taken off its payable when granted),
    less what its credit CDRs in the period gave back that those credits had already taken off (those count as
    credit CDRs): what the net payable is short of the CDRs' totals."""
    return cpo_statement_figures(settlement).dispute_credits_borne


def cpo_net_payable(settlement: Settlement) -> Decimal:
    """What we pay the CPO for the period, as its statement states it: the sum of its CDRs' totals, each rounded
    as the ledger books it, less the dispute credits it bears."""
    return cpo_statement_figures(settlement).net_payable


def cpo_statement_content(settlement: Settlement, *, number: str, issued_at: datetime) -> Content:
    s = settlement
    currency = s.currency
    figures = cpo_statement_figures(s)
    policy, borne = figures.policy, figures.dispute_credits_borne

    def m(amount: Decimal | None) -> str:
        return money(amount, currency, policy)

    cdrs = period_cdrs(s.partner_id, s.period_start, s.period_end).filter(currency=currency)
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
                f"Charge records (CDRs): {figures.cdr_count - figures.credit_count}",
                m(figures.billed_excl),
                m(figures.billed_incl),
            ],
            [f"Credit CDRs: {figures.credit_count}", m(figures.credits_excl), m(figures.credits_incl)],
            [f"Energy: {quantity(s.energy_kwh)} kWh", "", ""],
            ["Our repricing of the same CDRs", m(figures.computed_excl), ""],
        ],
        total_rows=[["Net billed by you", m(figures.net_billed_excl), m(figures.net_billed_incl)]],
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
                "send for the same charge is netted against them, not counted twice, also when it comes in a later "
                "period.",
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
                Column(f"Ended ({settings.DOCUMENTS_TIME_ZONE})", 0.19),
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
            ("Billed incl. VAT", m(figures.billed_incl)),
            ("Credits incl. VAT", m(figures.credits_incl)),
            *([("Dispute credits you bear, incl. VAT", m(-borne))] if borne > 0 else []),
            *([("Your credit CDRs for dispute credits taken off before, incl. VAT", m(-borne))] if borne < 0 else []),
            (f"Net payable to the CPO ({currency})", m(figures.net_payable)),
        ],
        notes=[
            "Amounts are your CDRs' totals as you sent them, credit CDRs netted; a CDR without a VAT-inclusive "
            f"total counts with its total excl. VAT. {_times_note()}",
            f"Please quote {number} on your invoice for this period.",
        ],
    )
