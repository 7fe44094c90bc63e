"""Billing background work: auditing and receipting new CDRs, once each (claims in billing/services/audit.py)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.utils import timezone

from billing.payments.gateway import GatewayError
from billing.services import ledger, payments
from billing.services.audit import cdr_process, cdrs_audit_late_tariffs, cdrs_process_due, credits_waiting_resolve


@worker_process_init.connect
def _remember_ledger_accounts(**_: Any) -> None:
    ledger.remember_accounts_for_this_process()


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def process_cdr(cdr_id: int) -> str | None:
    audit = cdr_process(cdr_id)
    return audit.status if audit else None


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def process_due_cdrs() -> int:
    """Beat: CDRs whose task was lost, or whose worker stopped half-way, are queued again; credits held for an
    original that has come since are settled against it."""
    ids = cdrs_process_due()
    for cdr_id in ids:
        process_cdr.delay(cdr_id)
    credits_waiting_resolve()
    return len(ids)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def audit_cdrs_for_tariffs(tariff_ids: list[int]) -> int:
    """CDRs audited in review for want of a tariff, of these stored tariffs' parties, audited again with the
    tariffs held now (queued after a tariff's commit: records.tariff_put, tariffs_store). Bounded; the beat's
    audit_cdrs_awaiting_tariffs takes the rest, and those of a task that was lost."""
    return cdrs_audit_late_tariffs(tariff_ids=tariff_ids)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def audit_cdrs_awaiting_tariffs() -> int:
    """Beat: CDRs audited in review for want of a tariff whose party has had a tariff stored since are audited
    again (billing/services/audit.py, cdrs_awaiting_tariffs)."""
    return cdrs_audit_late_tariffs()


# --- payments: provider calls run here, never inside a request or a CDR's transaction --------------------
# A retryable provider error (network, 5xx, rate limit) retries with backoff under the same idempotency key;
# a refusal marks the operation FAILED for the exceptions queue. A retry waits in its worker's memory, unacked:
# on Redis, one waiting longer than the queue's visibility timeout is handed out again, each copy retrying on its
# own (with 600 s of backoff and the timeout set to 3 s, one capture ran 231 times in 70 s). So a retry's wait
# (at most 5 s by default) and its run together stay within the timeout; an outage longer than the retries is left
# to the beat's sweep of operations still pending after 10 minutes (retry_stuck_payment_operations).

PROVIDER_RETRY = {
    "autoretry_for": (GatewayError,),
    "retry_backoff": 5,
    "retry_backoff_max": max(1, (settings.CELERY_VISIBILITY_TIMEOUT - settings.CELERY_TASK_TIME_LIMIT) // 2),
    "max_retries": 8,
}


@shared_task(acks_late=True, **PROVIDER_RETRY)
def capture_payment(payment_id: int) -> str:
    return payments.payment_capture(payment_id).status


@shared_task(acks_late=True, **PROVIDER_RETRY)
def release_payment(payment_id: int) -> str:
    return payments.payment_release(payment_id).status


@shared_task(acks_late=True, **PROVIDER_RETRY)
def refund_payment(operation_key: str) -> str:
    return payments.payment_refund(operation_key).status


@shared_task(acks_late=True, **PROVIDER_RETRY)
def open_balance_checkout(payment_id: int) -> str:
    return payments.balance_checkout(payment_id).status


# Two provider calls at most (the close, then a look at a page it refused), each within the adapters' 20 s.
@shared_task(bind=True, acks_late=True, time_limit=45, soft_time_limit=42, **PROVIDER_RETRY)
def expire_checkout(self: Any, payment_id: int, sweep: str = "") -> str:
    """Close a withdrawn balance payment's page at its provider (queued by payments._withdraw after its commit, or
    by the beat's sweep, `sweep` naming its run): payments.checkout_expire. A retryable provider error retries, each
    retry with a key of its own: closing moves no money and a closed page is answered as such, while Stripe replays
    a 500 to every retry of the same key for 24 h (the page left open)."""
    attempt = f"{sweep}-{self.request.retries}" if sweep else self.request.retries
    return payments.checkout_expire(payment_id, attempt=attempt)


@shared_task(acks_late=True, time_limit=600, soft_time_limit=540)
def retry_stuck_payment_operations() -> int:
    """Beat: provider operations still PENDING after their task was lost (a worker killed mid-call) are run
    again with their own idempotency key; checkouts for the rest of a bill that were never opened are opened; pages
    withdrawn and never closed at their provider are closed."""
    stuck = payments.operations_stuck()
    for operation in stuck:
        payments.operation_retry(operation=operation)
    unopened = payments.balance_checkouts_due()
    for payment_id in unopened:
        open_balance_checkout.delay(payment_id)
    now = timezone.now()
    unclosed = payments.withdrawn_pages_unclosed(now)
    for payment_id in unclosed:
        expire_checkout.delay(payment_id, f"sweep{int(now.timestamp())}")
    return len(stuck) + len(unopened) + len(unclosed)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def release_unbooked_holds() -> int:
    """Beat: holds a driver authorised at init's page that no order was confirmed with, and none can be any more
    (the quote expired: a confirm refused, or never sent), are released (payments.unbooked_holds_release); the
    provider calls run in release_payment after the commit."""
    return len(payments.unbooked_holds_release())


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def issue_due_receipts() -> int:
    """Beat: receipts left without their numbered document (their task lost) are queued again, each next time
    later (billing/services/documents.py, take_due_receipts)."""
    from billing.services import documents

    ids = documents.take_due_receipts()
    for receipt_id in ids:
        issue_receipt.delay(receipt_id)
    return len(ids)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)
def issue_receipt(receipt_id: int) -> str:
    """The driver's numbered receipt (or credit note) of a billed CDR, issued once."""
    from billing.models import DriverReceipt
    from billing.services import documents

    # What the receipt prints, read with it: a profile of this task showed the CDR, its CPO, its session and the
    # driver each loaded lazily, a statement apiece (docs/benchmarks.md, issue 15 point 8).
    receipt = DriverReceipt.objects.select_related("cdr__partner", "cdr__charging_session", "driver").get(pk=receipt_id)
    return documents.issue_receipt(receipt).number
