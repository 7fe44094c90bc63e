"""Domain background work: sending commands and timing them out."""

from __future__ import annotations

from celery import shared_task

from emsp.models import Command
from emsp.services import commands


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
