"""Beckn background work: answering ACKed requests (their callbacks go out through the outbox's tasks)."""

from __future__ import annotations

from celery import shared_task

from beckn import handlers


@shared_task(acks_late=True)
def handle_request(action: str, body: str, via_gateway: str = "", callback_url: str = "") -> None:
    handlers.handle(action, body, via_gateway, callback_url)
