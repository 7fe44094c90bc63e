"""Billing's part of personal data (emsp/privacy.py): a driver's receipts and quotes, exported; on erasure
the receipts stay (tax records) on the pseudonymised account; quotes never booked go with their retention,
CDRs and receipts with the tax-law period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from billing.models import Cdr, Dispute, DriverReceipt, Payment, ProviderWebhook, Quote
from emsp import privacy
from emsp.models import Driver


def _export(driver: Driver) -> dict[str, Any]:
    return {
        "receipts": [
            {
                "cdr": r.cdr.cdr_id,
                "operator": f"{r.cdr.country_code}*{r.cdr.party_id}",
                "currency": r.currency,
                "energy_kwh": str(r.energy_kwh),
                "total_incl_vat": str(r.total_incl_vat),
                "charged_from": privacy.when(r.cdr.start_date_time),
                "charged_to": privacy.when(r.cdr.end_date_time),
            }
            for r in DriverReceipt.objects.filter(driver=driver).select_related("cdr").order_by("cdr__end_date_time")
        ],
        "quotes": [
            {
                "id": q.pk,
                "currency": q.currency,
                "total_incl_vat": str(q.total_incl_vat) if q.total_incl_vat else None,
                "created_at": privacy.when(q.created_at),
                "accepted_at": privacy.when(q.accepted_at),
            }
            for q in Quote.objects.filter(driver=driver).order_by("created_at")
        ],
        "payments": [
            {
                "id": p.pk,
                "purpose": p.purpose,
                "provider": p.provider,
                "currency": p.currency,
                "status": p.status,
                "requested_minor": p.requested_minor,
                "authorised_minor": p.authorised_minor,
                "captured_minor": p.captured_minor,
                "refunded_minor": p.refunded_minor,
                "created_at": privacy.when(p.created_at),
            }
            for p in Payment.objects.filter(driver=driver).order_by("created_at")
        ],
    }


def _erase(driver: Driver) -> dict[str, int]:
    # A quote never booked is no record anyone needs; a booked one stays with its receipt.
    unbooked = Quote.objects.filter(driver=driver, accepted_at__isnull=True)
    count = unbooked.count()
    unbooked.delete()
    return {"quotes_deleted": count}


def expired_cdrs(since: datetime) -> QuerySet[Cdr]:
    """CDRs past the tax-law period, aged by when we stored them (`received_at`, our clock), never by the dates
    the CPO wrote in them: a CDR's end_date_time can be years old when it reaches us (the normalizer accepts
    event dates back to 2010; the spec's examples are from 2015), and deleting it on arrival would delete its
    audit, dispute and receipt with it and let the CPO's retry be stored again as a new CDR. Kept however old:
    a CDR with a dispute still open (OPEN or CONTESTED: staff are working it), one whose driver receipt was made
    within the period (a tax document, kept its full term from its own date), and one a credit CDR still kept
    corrects (the credit refers to it)."""
    return (
        Cdr.objects.filter(received_at__lt=since)
        .exclude(Exists(Dispute.objects.filter(cdr=OuterRef("pk"), state__in=Dispute.OPEN_STATES)))
        .exclude(Exists(DriverReceipt.objects.filter(cdr=OuterRef("pk"), created_at__gte=since)))
        .exclude(Exists(Cdr.objects.filter(credited_cdr=OuterRef("pk"), received_at__gte=since)))
    )


EXPIRING = (
    privacy.Expiry(
        "quotes", "quotes", lambda since: Quote.objects.filter(accepted_at__isnull=True, created_at__lt=since)
    ),
    # With their audits, disputes and receipts, after the tax-law period (`expired_cdrs`).
    privacy.Expiry("charging_records", "cdrs", expired_cdrs),
    # The replay guard of payment webhooks: kept far longer than any provider redelivers an event.
    privacy.Expiry(
        "provider_webhooks",
        "provider_webhooks",
        lambda since: ProviderWebhook.objects.filter(received_at__lt=since),
    ),
)


def register() -> None:
    privacy.register("billing", export=_export, erase=_erase, expiring=EXPIRING)
