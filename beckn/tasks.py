"""Beckn background work: handling ACKed requests and delivering callbacks."""

from __future__ import annotations

from celery import shared_task

from beckn import callbacks, services


@shared_task(acks_late=True)
def handle_request(action: str, body: str, via_gateway: str = "") -> None:
    services.handle(action, body, via_gateway)


@shared_task(acks_late=True)
def deliver_callback(callback_pk: int) -> str | None:
    callback = callbacks.deliver(callback_pk)
    return callback.status if callback else None


@shared_task(acks_late=True)
def deliver_due_callbacks() -> int:
    """Beat: retries whose scheduled task was lost (worker restarts)."""
    return callbacks.deliver_due()
