"""Beckn background work: answering ACKed requests. Their callbacks are outbox rows, sent by this same task
right after its transaction commits (`outbox.sent_here`); the outbox's due sweep retries what fails. A request
queued through the ACK's script is journalled until its task is done, and the sweep below puts back one a
worker lost (emsp/queue_journal.py)."""

from __future__ import annotations

import logging

import orjson
import redis
from celery import shared_task
from django.conf import settings

from beckn import handlers
from beckn.models import BecknMessage
from emsp import outbox, queue_journal, queue_push
from emsp.ratelimit import redis_client

log = logging.getLogger(__name__)

# A request older than this, neither waiting in the queue nor held by a worker and without its row, was lost.
LOST_AFTER_SECONDS = 30
# Put back at most this often; then given up on, with an error in the log (a request no worker can finish).
MOST_TRIES = 5


@shared_task(acks_late=True, bind=True)
def handle_request(  # type: ignore[no-untyped-def]
    self, action: str, body: str, via_gateway: str = "", callback_url: str = "", gateway_url: str = ""
) -> None:
    # New arguments go last with a default: a request journalled or queued by an older ACK still runs.
    with outbox.sent_here():
        handlers.handle(action, body, via_gateway, callback_url, gateway_url)
    if queue_push.pushable(self) and self.request.id:
        try:
            queue_journal.done(redis_client(), settings.LATENCY_QUEUE, self.request.id)
        except redis.RedisError:  # handled all the same; the sweep finds its row and forgets it
            log.warning("beckn %s: could not strike task %s from the journal", action, self.request.id, exc_info=True)


@shared_task
def requeue_lost_requests() -> int:
    """Put back on the queue each Beckn request a worker took and lost (killed between taking it off the queue
    and recording it, celery/celery#7950, or between recording an update and answering it: its row RECEIVED,
    beckn/handlers.py `handle`); forget those whose row says they were handled. Returns how many went back."""
    task = handle_request._get_current_object()
    if not queue_push.pushable(task):
        return 0
    client, queue = redis_client(), settings.LATENCY_QUEUE
    put_back = 0
    for entry in queue_journal.unaccounted(client, queue, older_than=LOST_AFTER_SECONDS):
        action, bap_id, message_id = _request_of(entry)
        recorded = BecknMessage.objects.filter(bap_id=bap_id, action=action, message_id=message_id)
        if recorded.exclude(status=BecknMessage.Status.RECEIVED).exists():
            queue_journal.forget(client, queue, entry.task_id)  # handled; its worker died before saying so
            continue
        if queue_journal.again(client, queue, entry, most=MOST_TRIES) is None:
            log.error("beckn %s %s from %s: lost %d times, given up", action, message_id, bap_id, MOST_TRIES + 1)
            continue
        put_back += 1
        log.warning("beckn %s %s from %s was lost by a worker: queued again", action, message_id, bap_id)
    return put_back


def _request_of(entry: queue_journal.Entry) -> tuple[str, str, str]:
    """(action, bap_id, message_id) of a journalled handle_request: checked at the ACK, so they are there."""
    action, body, *_ = entry.args()
    context = orjson.loads(body)["context"]
    return str(action), str(context["bap_id"]), str(context["message_id"])
