"""Beckn background work: answering ACKed requests. Their callbacks are outbox rows, sent by this same task
right after its transaction commits (`outbox.sent_here`); the outbox's due sweep retries what fails."""

from __future__ import annotations

from celery import shared_task

from beckn import handlers
from emsp import outbox


@shared_task(acks_late=True)
def handle_request(action: str, body: str, via_gateway: str = "", callback_url: str = "") -> None:
    with outbox.sent_here():
        handlers.handle(action, body, via_gateway, callback_url)
