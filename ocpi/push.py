"""Pushes to partners' receivers (mod_tokens §"Push"): each is a PushDelivery row of the one outbox
(emsp/outbox.py), written in the caller's transaction and sent after commit by `send_push` here."""

from __future__ import annotations

from itertools import islice
from typing import Any
from urllib.parse import quote

from django.db import transaction
from django.utils import timezone

from emsp import bulk, outbound, outbox
from emsp.models import Delivery, Partner, Token
from ocpi.client import OcpiCircuitOpen, OcpiClient, OcpiClientError, url_under
from ocpi.models import PushDelivery
from ocpi.rendering import token_as_ocpi
from ocpi.versions import wire


def _token_put(token: Token, partner: Partner) -> tuple[str, dict[str, Any]]:
    """(path under the Tokens receiver, body) of the PUT of one of our tokens to `partner`."""
    payload = token_as_ocpi(token, partner)
    uid = quote(token.uid, safe="")
    return f"/{payload['country_code']}/{payload['party_id']}/{uid}?type={token.type}", payload


def _push(partner: Partner, path: str, payload: dict[str, Any]) -> PushDelivery:
    return PushDelivery(
        channel=Delivery.Channel.OCPI_PUSH,
        partner=partner,
        target=f"{partner.party_key} tokens PUT {path}"[:500],
        module="tokens",
        method="PUT",
        path=path,
        payload=payload,
    )


def token_changed(token: Token) -> list[PushDelivery]:
    """Queue a PUT of the token to every connected partner with a Tokens receiver."""
    deliveries = []
    for partner in Partner.objects.connected():
        if not partner.endpoint_url("tokens", "RECEIVER"):
            continue
        delivery = _push(partner, *_token_put(token, partner))
        delivery.save()
        outbox.deliver_after_commit(delivery)
        deliveries.append(delivery)
    return deliveries


def tokens_to_new_partner(partner: Partner) -> int:
    """On connecting, queue every token we have for the partner's Tokens receiver, so drivers can charge
    there at once (the partner may also pull our list). The outbox's due sweep sends them."""
    if not partner.endpoint_url("tokens", "RECEIVER"):
        return 0
    count = 0
    with transaction.atomic():
        listed = Token.objects.select_related("driver").prefetch_related("allowed_partners")
        all_tokens = listed.iterator(chunk_size=1000)
        while tokens := list(islice(all_tokens, 1000)):
            pushes = [_push(partner, *_token_put(token, partner)) for token in tokens]
            # Multi-table rows, which bulk_create refuses: the Delivery rows in bulk, then their PushDelivery part.
            parents = Delivery.objects.bulk_create([Delivery(**_parent_fields(p)) for p in pushes])
            bulk.insert(
                PushDelivery,
                ("delivery_ptr_id", "module", "method", "path", "payload"),
                [(d.pk, p.module, p.method, p.path, p.payload) for d, p in zip(parents, pushes, strict=True)],
            )
            count += len(pushes)
    if count:
        outbox.deliver_due_after_commit()
    return count


def _parent_fields(push: PushDelivery) -> dict[str, Any]:
    return {f.attname: getattr(push, f.attname) for f in Delivery._meta.concrete_fields if not f.primary_key}


def _token_of(payload: Any) -> Token | None:
    """Our token a tokens push is about, as it is now (None: not a token's push, or the token is gone)."""
    if not isinstance(payload, dict) or not payload.get("uid"):
        return None
    tokens = Token.objects.by_uid(str(payload["uid"]), str(payload.get("type") or "") or None)
    return tokens.select_related("driver").first()


def _as_it_is_now(push: PushDelivery, partner: Partner) -> dict[str, Any]:
    """The token as we hold it now, not as the row was written: a row handed back after its lease (its worker
    killed) or retried after backoff can go after a newer row of the same token, and the older state would
    then be the CPO's last word (a blocked token valid again). A PUT carries the whole object: the latest is
    always right. A token no longer there goes as the row has it."""
    payload = push.payload
    token = _token_of(payload) if push.module == "tokens" else None
    return token_as_ocpi(token, partner) if token is not None else payload


def _again_if_changed(push: PushDelivery, partner: Partner, sent: dict[str, Any]) -> PushDelivery | None:
    """After a token's PUT was taken: if the token is no longer what it carried, push it again. Reading the
    token just before sending is not enough: two pushes of one token can be under way at once (a change made
    while one is out queues another), and the CPO keeps whichever lands last, though it may have been read
    first (a blocked token valid again at the CPO). Whatever the interleaving, the PUT that lands last was
    either read after every change, or finds the token changed here once it has landed and is followed by
    one that carries it as it is then. Nothing is serialised: a push waits for no other, and this costs a
    read of the token (with its driver and the partners it is restricted to) per delivered push."""
    token = _token_of(sent) if push.module == "tokens" else None
    if token is None:
        return None
    path, now = _token_put(token, partner)
    if now == sent:
        return None
    again = _push(partner, path, now)
    again.save()
    outbox.deliver_after_commit(again)
    return again


def send_push(delivery: Delivery) -> outbox.SendResult:
    """The outbox's sender for OCPI pushes: one request to the partner's receiver as it is now."""
    push = PushDelivery.objects.select_related("partner").get(pk=delivery.pk)
    partner = push.partner
    assert partner is not None
    base = partner.endpoint_url(push.module, "RECEIVER")
    if partner.state != Partner.State.CONNECTED or not base:
        return outbox.SendResult(None, "partner not connected or has no receiver", give_up=True)
    try:
        # In the partner's version as it is now (the row holds our 2.2.1 Token), of the token as it is now.
        sent = _as_it_is_now(push, partner)
        path, payload = wire.push(partner, push.module, push.path, sent)
        reply = OcpiClient(partner).request(push.method, url_under(base, path), module=push.module, json=payload)
    except OcpiCircuitOpen as exc:
        until = exc.breaker.retry_at or exc.breaker.probe_until or timezone.now()
        return outbox.SendResult(None, str(exc), delivered=False, not_sent_until=until)
    except (OcpiClientError, outbound.OutboundError) as exc:
        # An OCPI error status comes with HTTP 200: not delivered, and worth retrying.
        return outbox.SendResult(getattr(exc, "http_status", None), str(exc), delivered=False)
    _again_if_changed(push, partner, sent)
    return outbox.SendResult(reply.http_status, delivered=True)
