"""OCPI background work: scheduled pulls and push delivery. Tasks take ids, load rows and call services;
running one twice is harmless (compare-and-set claims, outbox row states)."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from emsp.models import Partner
from ocpi import push, sync
from ocpi.models import PushDelivery


@shared_task(acks_late=True)
def sync_due_partners() -> int:
    """Beat, every minute: enqueue a pull for every partner whose interval has passed."""
    due = sync.schedule_due()
    for partner_id, full in due:
        sync_partner.delay(partner_id, full)
    return len(due)


@shared_task(acks_late=True, time_limit=3600, soft_time_limit=3500)
def sync_partner(partner_id: int, full: bool = False) -> int:
    partner = Partner.objects.filter(pk=partner_id, state=Partner.State.CONNECTED).first()
    if partner is None:
        return 0
    return len(sync.sync_partner(partner, full=full))


@shared_task(acks_late=True)
def push_deliver(delivery_id: int) -> str | None:
    delivery = push.deliver(delivery_id)
    return delivery.status if delivery else None


@shared_task(acks_late=True)
def push_deliver_due() -> int:
    """Beat: retry pushes whose backoff has passed."""
    ids = list(
        PushDelivery.objects.filter(status=PushDelivery.Status.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:200]
    )
    for pk in ids:
        push.deliver(pk)
    return len(ids)
