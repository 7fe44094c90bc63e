"""Domain background work: sending commands and timing them out, and the outbox of messages to partners.
Tasks take ids, load rows and call a service; running one twice is harmless (compare-and-set claims)."""

from __future__ import annotations

from celery import shared_task

from emsp import outbox, privacy
from emsp.models import Command, Partner
from emsp.services import commands, freshness


@shared_task(acks_late=True)
def command_send(command_id: int) -> str:
    command = Command.objects.get(pk=command_id)
    return commands.command_send(command).status


@shared_task(acks_late=True)
def command_check_timeout(command_id: int) -> str | None:
    command = commands.command_check_timeout(command_id)
    return command.status if command else None


@shared_task(acks_late=True)
def commands_expire_due() -> int:
    """Beat: the safety net for timeout tasks lost in a worker restart."""
    return commands.commands_expire_due()


@shared_task(acks_late=True)
def outbox_deliver(delivery_id: int) -> str | None:
    delivery = outbox.deliver(delivery_id)
    return delivery.status if delivery else None


@shared_task(acks_late=True)
def outbox_deliver_due() -> int:
    """Beat: retries whose backoff has passed, first sends that were lost, rows a stopped worker left."""
    return outbox.deliver_due()


@shared_task(acks_late=True)
def purge_expired() -> dict[str, int]:
    """Beat, hourly: delete what is past its retention (settings.RETENTION_DAYS, docs/privacy.md)."""
    return privacy.purge_expired()


@shared_task(acks_late=True)
def evses_refresh_due() -> int:
    """Beat, every EVSE_REFRESH_TICK_SECONDS: one re-read task per non-pushing partner with watched or booked
    EVSEs due (emsp/services/freshness.py)."""
    freshness.forget_expired()
    partners = freshness.partners_to_refresh()
    for partner in partners:
        evses_refresh_partner.delay(partner.pk)
    return len(partners)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100, expires=30)
def evses_refresh_partner(partner_id: int) -> int:
    partner = Partner.objects.filter(pk=partner_id, state=Partner.State.CONNECTED).first()
    return freshness.refresh_partner(partner)[0] if partner is not None else 0
