"""factory-boy factories for billing records: CDRs, audits, disputes, receipts, terms and settlements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import factory
from django.utils import timezone

from billing.models import Cdr, CdrAudit, Dispute, DriverReceipt, PartnerTerms, Settlement
from tests.factories import PartnerFactory


class CdrFactory(factory.django.DjangoModelFactory):
    """A CDR as stored from a CPO; only the columns settlement and audit read are filled in."""

    class Meta:
        model = Cdr

    partner = factory.SubFactory(PartnerFactory)
    country_code = factory.LazyAttribute(lambda c: c.partner.country_code)
    party_id = factory.LazyAttribute(lambda c: c.partner.party_id)
    cdr_id = factory.Sequence(lambda n: f"CDR{n:06d}")
    ocpi_key = factory.LazyAttribute(lambda c: f"{c.country_code}*{c.party_id}*{c.cdr_id}".lower())
    end_date_time = datetime(2026, 10, 15, 12, 0, tzinfo=UTC)
    start_date_time = factory.LazyAttribute(lambda c: c.end_date_time - timedelta(hours=1))
    currency = "EUR"
    total_cost_excl_vat = Decimal("10.0000")
    total_cost_incl_vat = factory.LazyAttribute(lambda c: c.total_cost_excl_vat * Decimal("1.19"))
    total_energy = Decimal("20.0000")
    total_time = Decimal("1.0000")
    location_id = "LOC1"
    evse_uid = "LOC1-E1"
    token_uid = "TOKEN000001"
    last_updated = factory.LazyFunction(timezone.now)
    data = factory.LazyFunction(dict)


class CreditCdrFactory(CdrFactory):
    """A credit CDR voiding `credited_cdr` (negative amounts, the original's energy repeated)."""

    credited_cdr = factory.SubFactory(CdrFactory)
    partner = factory.SelfAttribute("credited_cdr.partner")
    credit = True
    cdr_id = factory.LazyAttribute(lambda c: f"{c.credited_cdr.cdr_id}-C")
    credit_reference_id = factory.SelfAttribute("credited_cdr.cdr_id")
    end_date_time = factory.SelfAttribute("credited_cdr.end_date_time")
    currency = factory.SelfAttribute("credited_cdr.currency")
    total_cost_excl_vat = factory.LazyAttribute(lambda c: -c.credited_cdr.total_cost_excl_vat)
    total_cost_incl_vat = factory.LazyAttribute(
        lambda c: None if c.credited_cdr.total_cost_incl_vat is None else -c.credited_cdr.total_cost_incl_vat
    )
    total_energy = factory.SelfAttribute("credited_cdr.total_energy")


class CdrAuditFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = CdrAudit

    cdr = factory.SubFactory(CdrFactory)
    status = CdrAudit.Status.MATCHED
    currency = factory.SelfAttribute("cdr.currency")
    computed_excl_vat = factory.LazyAttribute(
        lambda a: None if a.status in (CdrAudit.Status.CREDIT, CdrAudit.Status.REVIEW) else a.cdr.total_cost_excl_vat
    )
    difference_excl_vat = factory.LazyAttribute(
        lambda a: None if a.computed_excl_vat is None else a.cdr.total_cost_excl_vat - a.computed_excl_vat
    )


class DisputeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Dispute

    cdr = factory.SubFactory(CdrFactory)
    partner = factory.SelfAttribute("cdr.partner")
    state = Dispute.State.OPEN
    currency = factory.SelfAttribute("cdr.currency")
    cpo_amount = factory.SelfAttribute("cdr.total_cost_excl_vat")
    our_amount = factory.LazyAttribute(lambda d: d.cdr.audit.computed_excl_vat)
    difference = factory.LazyAttribute(lambda d: d.cpo_amount - d.our_amount)


class DriverReceiptFactory(factory.django.DjangoModelFactory):
    """A receipt; pass cpo_vat, fee_excl_vat and fee_vat, the total follows (rounded to cents)."""

    class Meta:
        model = DriverReceipt

    cdr = factory.SubFactory(CdrFactory)
    currency = factory.SelfAttribute("cdr.currency")
    energy_kwh = factory.SelfAttribute("cdr.total_energy")
    cpo_cost_excl_vat = factory.SelfAttribute("cdr.total_cost_excl_vat")
    cpo_vat = Decimal("0")
    fee_excl_vat = Decimal("0")
    fee_vat = Decimal("0")
    total_incl_vat = factory.LazyAttribute(
        lambda r: (r.cpo_cost_excl_vat + r.cpo_vat + r.fee_excl_vat + r.fee_vat).quantize(Decimal("0.01"))
    )


class PartnerTermsFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PartnerTerms
        django_get_or_create = ("partner",)

    partner = factory.SubFactory(PartnerFactory)
    rounding = "HALF_UP"


class SettlementFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Settlement

    partner = factory.SubFactory(PartnerFactory)
    period_start = datetime(2026, 10, 1, tzinfo=UTC).date()
    period_end = datetime(2026, 11, 1, tzinfo=UTC).date()
    currency = "EUR"


def at(day: int, month: int = 10, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, 0, tzinfo=UTC)


def settlement_scenario() -> dict[str, object]:
    """October 2026 of CPO A (IN*CPA), hand-built so every settlement figure is known exactly.

    EUR: a matched CDR, an OPEN and a CONTESTED dispute, a CDR voided by a credit CDR, a CDR corrected by a
    partial credit (its dispute CREDITED), receipts on four of them (one a refund). INR: a matched CDR and an
    ACCEPTED dispute, so that currency reconciles. Outside the period: the last second of September, the
    first instant of November, and another partner's October CDR.
    """
    partner = PartnerFactory(name="CPO A", country_code="IN", party_id="CPA")
    PartnerTermsFactory(partner=partner, rounding="HALF_UP")
    cdr = CdrFactory

    c1 = cdr(partner=partner, cdr_id="EUR-1", end_date_time=at(1, hour=0))
    CdrAuditFactory(cdr=c1)
    DriverReceiptFactory(cdr=c1, cpo_vat=Decimal("1.9"), fee_excl_vat=Decimal("1.0"), fee_vat=Decimal("0.18"))

    c2 = cdr(partner=partner, cdr_id="EUR-2", total_cost_excl_vat=Decimal("12"), total_energy=Decimal("30"))
    CdrAuditFactory(cdr=c2, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("10.5"))
    DisputeFactory(cdr=c2)
    DriverReceiptFactory(cdr=c2, cpo_vat=Decimal("2.28"), fee_excl_vat=Decimal("1.2"), fee_vat=Decimal("0.216"))

    c3 = cdr(
        partner=partner,
        cdr_id="EUR-3",
        total_cost_excl_vat=Decimal("8"),
        total_cost_incl_vat=None,
        total_energy=Decimal("15"),
    )
    CdrAuditFactory(cdr=c3, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("9"))
    DisputeFactory(cdr=c3, state=Dispute.State.CONTESTED)

    c6 = cdr(partner=partner, cdr_id="EUR-6", total_cost_excl_vat=Decimal("7"), total_energy=Decimal("10"))
    CdrAuditFactory(cdr=c6)
    DriverReceiptFactory(cdr=c6, cpo_vat=Decimal("1.33"), fee_excl_vat=Decimal("0.7"), fee_vat=Decimal("0.126"))
    c7 = CreditCdrFactory(credited_cdr=c6)
    CdrAuditFactory(cdr=c7, status=CdrAudit.Status.CREDIT)
    DriverReceiptFactory(cdr=c7, cpo_vat=Decimal("-1.33"))

    c9 = cdr(partner=partner, cdr_id="EUR-9", total_cost_excl_vat=Decimal("6"), total_energy=Decimal("8"))
    CdrAuditFactory(cdr=c9, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("5"))
    DisputeFactory(cdr=c9, state=Dispute.State.CREDITED, credit_amount=Decimal("1"))
    c10 = CreditCdrFactory(
        credited_cdr=c9,
        end_date_time=at(31, hour=23),
        total_cost_excl_vat=Decimal("-1"),
        total_cost_incl_vat=Decimal("-1.19"),
    )
    CdrAuditFactory(cdr=c10, status=CdrAudit.Status.CREDIT)

    i1 = cdr(
        partner=partner,
        cdr_id="INR-1",
        currency="INR",
        total_cost_excl_vat=Decimal("100"),
        total_cost_incl_vat=Decimal("118"),
        total_energy=Decimal("12.5"),
    )
    CdrAuditFactory(cdr=i1)
    DriverReceiptFactory(cdr=i1, cpo_vat=Decimal("18"), fee_excl_vat=Decimal("10"), fee_vat=Decimal("1.8"))
    i2 = cdr(
        partner=partner,
        cdr_id="INR-2",
        currency="INR",
        total_cost_excl_vat=Decimal("50"),
        total_cost_incl_vat=Decimal("59"),
        total_energy=Decimal("6"),
    )
    CdrAuditFactory(cdr=i2, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("45"))
    DisputeFactory(cdr=i2, state=Dispute.State.ACCEPTED)

    for cdr_id, end in (("SEP-LAST", datetime(2026, 9, 30, 23, 59, 59, tzinfo=UTC)), ("NOV-FIRST", at(1, 11, 0))):
        outside = cdr(partner=partner, cdr_id=cdr_id, end_date_time=end, total_cost_excl_vat=Decimal("1000"))
        CdrAuditFactory(cdr=outside, status=CdrAudit.Status.MISMATCH, computed_excl_vat=Decimal("1"))
        DisputeFactory(cdr=outside)
    other = cdr(partner=PartnerFactory(name="CPO B", country_code="IN", party_id="CPB"), cdr_id="OTHER-1")
    CdrAuditFactory(cdr=other, status=CdrAudit.Status.REVIEW)
    return {"partner": partner, "c2": c2, "c3": c3, "c6": c6, "c7": c7, "c9": c9, "i1": i1, "i2": i2, "other": other}
