"""Domain background work: sending commands and timing them out, and the outbox of messages to partners.
Tasks take ids, load rows and call a service; running one twice is harmless (compare-and-set claims)."""

from __future__ import annotations

from celery import shared_task

from emsp import outbox, privacy
from emsp.models import Command, Partner
from emsp.services import booking_checks, bookings, commands, freshness, tokens


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
def reservations_send_due() -> int:
    """Beat: RESERVE_NOW for windows booked ahead that are now near."""
    return bookings.reservations_send_due()


@shared_task(acks_late=True)
def bookings_expire_no_shows() -> int:
    """Beat: bookings whose driver did not start in time end (no-show) and free the charger."""
    return bookings.bookings_expire_no_shows()


@shared_task(acks_late=True, time_limit=600, soft_time_limit=540)
def bookings_reconcile() -> dict[str, int]:
    """Beat, every BOOKING_CHECK_INTERVAL_SECONDS: open bookings compared with the CPO's side, repaired or
    listed for staff (emsp/services/booking_checks.py). A second run while one is going returns at once."""
    return booking_checks.bookings_reconcile()


@shared_task(acks_late=True)
def outbox_deliver(delivery_id: int) -> str | None:
    delivery = outbox.deliver(delivery_id)
    return delivery.status if delivery else None


@shared_task(acks_late=True)
def outbox_deliver_due() -> int:
    """Beat: retries whose backoff has passed, first sends that were lost, rows a stopped worker left."""
    return outbox.deliver_due()


@shared_task(acks_late=True)
def tokens_push_expired() -> int:
    """Beat: tokens that expired since they were last sent go to every CPO as not valid."""
    return tokens.tokens_expired_push()


@shared_task(acks_late=True, time_limit=1800, soft_time_limit=1740)
def purge_expired() -> dict[str, int]:
    """Beat, hourly: delete what is past its retention (settings.RETENTION_DAYS, docs/privacy.md)."""
    return privacy.purge_expired()


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
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
