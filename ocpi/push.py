"""Pushes to partners' receivers, outbox style: a PushDelivery row is written in the caller's transaction
and delivered by a Celery task after commit (ocpi.tasks.push_deliver)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from emsp import outbound
from emsp.models import Partner, Token
from ocpi.client import OcpiClient, OcpiClientError
from ocpi.models import PushDelivery
from ocpi.serializers import token_to_ocpi

MAX_ATTEMPTS = 8


def _receiver_url(partner: Partner, module: str) -> str | None:
    """The partner's receiver of `module`; an endpoint without a role is taken as one."""
    return partner.endpoint_url(module, "RECEIVER") or partner.endpoint_url(module)


def _token_put(token: Token) -> tuple[str, dict[str, Any]]:
    """(path under the Tokens receiver, body) of the PUT of one of our tokens."""
    payload = token_to_ocpi(token)
    return f"/{payload['country_code']}/{payload['party_id']}/{token.uid}?type={token.type}", payload


def token_changed(token: Token) -> list[PushDelivery]:
    """Queue a PUT of the token to every connected partner with a Tokens receiver (mod_tokens §"Push")."""
    path, payload = _token_put(token)
    deliveries = []
    for partner in Partner.objects.connected():
        if not _receiver_url(partner, "tokens"):
            continue
        deliveries.append(
            PushDelivery.objects.create(partner=partner, module="tokens", method="PUT", path=path, payload=payload)
        )
    if deliveries:
        from ocpi.tasks import push_deliver

        ids = [d.pk for d in deliveries]
        transaction.on_commit(lambda: [push_deliver.delay(pk) for pk in ids])
    return deliveries


def tokens_to_new_partner(partner: Partner) -> int:
    """On connecting, queue every token we have for the partner's Tokens receiver, so drivers can charge
    there at once (the partner may also pull our list)."""
    if not _receiver_url(partner, "tokens"):
        return 0
    deliveries = []
    for token in Token.objects.all().iterator(chunk_size=1000):
        path, payload = _token_put(token)
        deliveries.append(PushDelivery(partner=partner, module="tokens", method="PUT", path=path, payload=payload))
    PushDelivery.objects.bulk_create(deliveries, batch_size=1000)
    if deliveries:
        from ocpi.tasks import push_deliver_due

        transaction.on_commit(push_deliver_due.delay)
    return len(deliveries)


def deliver(delivery_id: int) -> PushDelivery | None:
    """Attempt one delivery. 4xx (but 408/429) is permanent; otherwise back off exponentially."""
    with transaction.atomic():
        delivery = (
            PushDelivery.objects.select_for_update(skip_locked=True)
            .select_related("partner")
            .filter(pk=delivery_id, status=PushDelivery.Status.PENDING)
            .first()
        )
        if delivery is None:
            return None
        partner = delivery.partner
        base = _receiver_url(partner, delivery.module)
        delivery.attempts += 1
        if partner.state != Partner.State.CONNECTED or not base:
            delivery.status = PushDelivery.Status.FAILED
            delivery.last_error = "partner not connected or has no receiver"
            delivery.save()
            return delivery
        try:
            OcpiClient(partner).request(
                delivery.method, base + delivery.path, module=delivery.module, json=delivery.payload
            )
        except (OcpiClientError, outbound.OutboundError) as exc:
            http_status = getattr(exc, "http_status", None)
            permanent = http_status is not None and 400 <= http_status < 500 and http_status not in (408, 429)
            delivery.last_error = str(exc)[:2000]
            if permanent or delivery.attempts >= MAX_ATTEMPTS:
                delivery.status = PushDelivery.Status.FAILED
            else:
                delivery.next_attempt_at = timezone.now() + timedelta(seconds=min(3600, 5 * 2**delivery.attempts))
        else:
            delivery.status = PushDelivery.Status.DELIVERED
            delivery.delivered_at = timezone.now()
            delivery.last_error = ""
        delivery.save()
        return delivery
