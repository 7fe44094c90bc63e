"""The payment providers' webhooks, and the page a driver lands on after paying (issue 12).

A webhook is applied only when its signature is the provider's (checked by that provider's adapter, exactly as
the provider specifies) and only once per event id: a replay is answered 200 (so a provider's own retry
stops) and changes nothing. Anything else gets a 4xx with a reason, never a 500.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing.payments import gateway as gateways
from billing.services import payments

log = logging.getLogger(__name__)

MAX_WEBHOOK_BYTES = 1024 * 1024


@csrf_exempt
@require_POST
def provider_webhook(request: HttpRequest, provider: str) -> HttpResponse:
    if provider not in settings.PAYMENT_PROVIDERS:
        return JsonResponse({"error": f"no payment provider {provider!r}"}, status=404)
    length = str(request.META.get("CONTENT_LENGTH") or "0")
    if not length.isdigit() or int(length) > MAX_WEBHOOK_BYTES:
        return JsonResponse({"error": "a body of at most 1 MiB, with its Content-Length"}, status=413)
    options = settings.PAYMENT_PROVIDERS[provider].get("options", {})
    if settings.PRODUCTION and options.get("webhook_secret") in settings.PAYSIM_WEBHOOK_SECRETS:
        # The sandbox's secret is in this repository: anyone could sign with it. Production takes no webhook
        # signed with it; the operator sets the provider's own (README, configuration).
        log.error("%s webhook refused: its webhook secret is the sandbox's public one; set the real one", provider)
        return JsonResponse({"error": f"{provider} webhooks are not configured here"}, status=503)
    body = request.body
    headers = {key.lower(): value for key, value in request.headers.items()}
    try:
        event = gateways.gateway(provider).verify_webhook(body=body, headers=headers)
    except gateways.WebhookRejected as exc:
        log.warning("%s webhook refused: %s", provider, exc)
        return JsonResponse({"error": f"not a {provider} webhook: {exc}"}, status=400)
    if "\x00" in event.event_id or not event.event_id.isprintable() or not event.event_id:
        return JsonResponse({"error": "the event id is not printable text"}, status=400)
    try:
        outcome = payments.webhook_receive(event)
    except payments.ReplayedWebhook as exc:
        return JsonResponse({"status": "duplicate", "detail": str(exc)}, status=200)
    except payments.OperationUnsettled as exc:
        # Not yet: the provider sends it again (both retry any answer but 2xx), and it applies once booked.
        log.warning("%s webhook %s put off: %s", provider, event.event_id, exc)
        return JsonResponse({"error": f"not yet: {exc}"}, status=409)
    except (DatabaseError, ValueError) as exc:
        log.exception("%s webhook %s could not be applied", provider, event.event_id)
        return JsonResponse({"error": f"could not apply the event: {type(exc).__name__}"}, status=422)
    return JsonResponse({"status": "ok", "outcome": outcome})


@require_GET
def payment_return(request: HttpRequest) -> HttpResponse:
    """Where the provider's hosted page sends the driver back: the app shows the order's state from here on."""
    return HttpResponse(
        "<!doctype html><title>Payment</title><h1>Thank you</h1>"
        "<p>Your payment is being confirmed. You can return to your charging app.</p>",
        content_type="text/html; charset=utf-8",
    )
