"""Billing background work: auditing and receipting new CDRs."""

from __future__ import annotations

from celery import shared_task

from billing.services.audit import cdr_process


@shared_task(acks_late=True)
def process_cdr(cdr_id: int) -> str | None:
    audit = cdr_process(cdr_id)
    return audit.status if audit else None
