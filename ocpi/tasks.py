"""OCPI background work: scheduled pulls (our pushes go out through the outbox's tasks, emsp/tasks.py).
Tasks take ids, load rows and call services; running one twice is harmless (compare-and-set claims)."""

from __future__ import annotations

from celery import shared_task

from emsp.models import Partner
from ocpi import circuits, sync


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
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
    runs = sync.sync_partner_leased(partner, full=full)  # None: another worker is pulling it right now
    return len(runs or [])


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def probe_open_circuits() -> int:
    """Beat, every 10 s: one probe per open circuit breaker whose wait is over (recovery without traffic)."""
    return circuits.probe_due()
