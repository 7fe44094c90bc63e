"""Billing background work: auditing and receipting new CDRs, once each (claims in billing/services/audit.py)."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings

from billing.models import Payment
from billing.payments import gateway as gateways
from billing.payments.gateway import GatewayError
from billing.services import ledger, payments
from billing.services.audit import cdr_process, cdrs_process_due, credits_waiting_resolve

log = logging.getLogger(__name__)


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


# A balance page withdrawn (payments._withdraw: a credit lowered or covered its bill, or a page it replaced took
# it) asks for nothing, but the provider's page stayed open: the driver could still pay it (it then takes only
# what is still owed, or is released) and was left wondering why. It is closed at the provider here. What the
# provider said goes in front of the payment's `failure` (which says why the page was withdrawn) for staff in
# the admin: no PaymentOperation (its kinds move money), no migration. A repeat finds the note and calls no one.
PAGE_NOTE = "provider page "
PAGE_WORDS = {
    gateways.PAGE_CLOSED: "closed",
    gateways.PAGE_ALREADY_CLOSED: "already closed",
    gateways.PAGE_PAID: "paid before it could be closed",
}


def _withdrawn_pages() -> Any:
    """Balance payments withdrawn with nothing ever held (payments._withdrawn_page) whose page was opened."""
    withdrawn = Payment.objects.filter(purpose="balance", status=Payment.Status.RELEASED, authorised_minor=0)
    return withdrawn.exclude(checkout_id="")


def _page_noted(payment: Payment, note: str) -> None:
    """`note` in front of the payment's failure text, unless it changed meanwhile (its page paid: the webhook
    cleared the text; another run of this task noted it first)."""
    text = "; ".join(filter(None, [PAGE_NOTE + note, payment.failure]))[:300]
    _withdrawn_pages().filter(pk=payment.pk, failure=payment.failure).update(failure=text)


# Two provider calls at most (the close, then a look at a page it refused), each within the adapters' 20 s.
@shared_task(bind=True, acks_late=True, time_limit=45, soft_time_limit=42, **PROVIDER_RETRY)
def expire_checkout(self: Any, payment_id: int) -> str:
    """Close a withdrawn balance payment's page at its provider (queued by payments._withdraw after its commit).
    A page the driver paid first is left to its webhook; a refusal (no such page) is noted, not retried. Each
    retry sends a key of its own: closing moves no money and a closed page is answered as such, while Stripe
    replays a 500 to every retry of the same key for 24 h (the page left open)."""
    payment = _withdrawn_pages().filter(pk=payment_id).first()
    if payment is None:
        return "not a withdrawn page"
    if payment.failure.startswith(PAGE_NOTE):
        return "noted before"
    try:
        expiry = gateways.gateway(payment.provider).expire_checkout(
            checkout_id=payment.checkout_id, idempotency_key=f"{payment.key}:expire:{self.request.retries}"
        )
    except GatewayError as error:
        if error.retryable:
            raise
        log.warning("payment %s: %s refused to close page %s: %s", payment.pk, payment.provider,
                    payment.checkout_id, error)  # fmt: skip
        _page_noted(payment, f"not closed at {payment.provider}: {str(error)[:120]}")
        return "refused"
    log.info("payment %s: page %s %s at %s (%s)", payment.pk, payment.checkout_id, PAGE_WORDS[expiry.outcome],
             payment.provider, expiry.status)  # fmt: skip
    _page_noted(payment, f"{PAGE_WORDS[expiry.outcome]} at {payment.provider} ({expiry.status})")
    return expiry.outcome


@shared_task(acks_late=True, time_limit=600, soft_time_limit=540)
def retry_stuck_payment_operations() -> int:
    """Beat: provider operations still PENDING after their task was lost (a worker killed mid-call) are run
    again with their own idempotency key; checkouts for the rest of a bill that were never opened are opened."""
    stuck = payments.operations_stuck()
    for operation in stuck:
        payments.operation_retry(operation=operation)
    unopened = payments.balance_checkouts_due()
    for payment_id in unopened:
        open_balance_checkout.delay(payment_id)
    return len(stuck) + len(unopened)


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
