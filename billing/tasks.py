"""Billing background work: auditing and receipting new CDRs, once each (claims in billing/services/audit.py)."""

from __future__ import annotations

from celery import shared_task

from billing.services.audit import cdr_process, cdrs_process_due


@shared_task(acks_late=True)
def process_cdr(cdr_id: int) -> str | None:
    audit = cdr_process(cdr_id)
    return audit.status if audit else None


@shared_task(acks_late=True)
def process_due_cdrs() -> int:
    """Beat: CDRs whose task was lost, or whose worker stopped half-way, are queued again."""
    ids = cdrs_process_due()
    for cdr_id in ids:
        process_cdr.delay(cdr_id)
    return len(ids)
