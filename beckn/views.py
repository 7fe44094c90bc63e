"""POST /beckn/{action}: verify the signature on the raw bytes, check the envelope, answer ACK or NACK at
once, and hand the work to Celery (the on_* answer comes as a signed callback). A repeated message_id
from the same BAP and action gets the same ACK and nothing else."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from beckn import metrics, tasks
from beckn.auth import BecknAuthError, verify_beckn_request
from beckn.errors import INVALID_REQUEST, POLICY_ERROR, BecknRequestError
from beckn.openapi import SIGNATURE_AUTH, schema_ref
from beckn.parsing import ACK, ACTIONS, parse_envelope
from beckn.rendering import STATE_CODES, charging_details
from emsp.models import Booking
from emsp.ratelimit import rate_limit_hit
from emsp.ratelimit import redis_client as _redis_client

log = logging.getLogger(__name__)

ACK_BODY = orjson.dumps(ACK)
DEDUPE_SECONDS = 24 * 3600  # message ids are kept at least a day (payments practice, perf notes §3.2)


def first_sighting(key: str) -> bool:
    """True the first time a key is seen within DEDUPE_SECONDS (an atomic SET NX)."""
    client = _redis_client()
    if client is not None:
        return bool(client.set(key, 1, nx=True, ex=DEDUPE_SECONDS))
    return cache.add(key, 1, timeout=DEDUPE_SECONDS)


def forget_sighting(key: str) -> None:
    client = _redis_client()
    if client is not None:
        client.delete(key)
    else:
        cache.delete(key)


def _ack() -> HttpResponse:
    return HttpResponse(ACK_BODY, content_type="application/json")


def nack(error: dict[str, str] | None, status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    body: dict[str, Any] = {"message": {"ack": {"status": "NACK"}}}
    if error:
        body["error"] = error
    response = HttpResponse(orjson.dumps(body), status=status, content_type="application/json")
    for key, value in (headers or {}).items():
        response[key] = value
    response.beckn_nack_code = str((error or {}).get("code") or "")  # type: ignore[attr-defined]  # counted
    return response


_ACK = schema_ref("BecknAckResponse")


class BecknActionView(APIView):
    """One endpoint per Beckn 1.1.0 action (core transaction API): search, select, init, confirm, status,
    track, cancel, update, rating, support."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    parser_classes: list[Any] = []

    @extend_schema(
        tags=["Beckn"],
        operation_id="beckn_action",
        summary="A Beckn 1.1.0 request; answered with ACK/NACK, then an on_{action} callback",
        parameters=[OpenApiParameter("action", type=str, location=OpenApiParameter.PATH, enum=list(ACTIONS))],
        # One operation per action in the document (beckn.openapi.postprocess_schema), each with its own body.
        request={"application/json": schema_ref("BecknRequest")},
        responses={
            200: OpenApiResponse(_ACK, description="ACK"),
            400: OpenApiResponse(_ACK, description="NACK: not a valid request (error names the path)"),
            401: OpenApiResponse(_ACK, description="NACK: signature missing or invalid (WWW-Authenticate)"),
            413: OpenApiResponse(_ACK, description="NACK: body too large"),
            429: OpenApiResponse(_ACK, description="NACK 50000: over the subscriber's rate limit (Retry-After)"),
            503: OpenApiResponse(_ACK, description="NACK 50000: cannot queue the request now; retry"),
        },
        auth=SIGNATURE_AUTH,
    )
    def post(self, request: Request, action: str) -> HttpResponse:
        response = self.answer(request, action)
        code = getattr(response, "beckn_nack_code", None)
        if code is None:
            metrics.count_ack(action)
        else:
            metrics.count_nack(action, code)
        return response

    def answer(self, request: Request, action: str) -> HttpResponse:
        if action not in ACTIONS:
            return nack(
                {"code": "40001", "paths": "context.action", "message": f"/{action} is not a Beckn action"}, 404
            )
        raw = request._request.read(settings.BECKN_MAX_BODY_BYTES + 1)
        if len(raw) > settings.BECKN_MAX_BODY_BYTES:
            return nack({"code": "30000", "paths": "", "message": "body too large"}, 413)
        # Verify first (on the raw bytes, BECKN-006), reading only the bap_id the keyId must match; then
        # check the envelope of the same parsed body. An unsigned request is 401 whatever its body.
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None  # parse_envelope parses again and names the JSON error
        context = body.get("context") if isinstance(body, dict) else None
        bap_id = context.get("bap_id") if isinstance(context, dict) and isinstance(context.get("bap_id"), str) else None
        try:
            sender = verify_beckn_request(raw, request.headers, bap_id=bap_id)
        except BecknAuthError as exc:
            log.info("beckn %s from %s refused: %s", action, bap_id, exc)
            error = {"code": "10001", "paths": "", "message": f"Invalid signature: {exc.reason}"}
            return nack(error, 401, exc.challenges)
        # Counted only once the signature holds, so nobody can spend a subscriber's allowance for it.
        verdict = rate_limit_hit(f"beckn:{sender.subscriber_id}", settings.BECKN_RATE_LIMIT_PER_MINUTE)
        if not verdict.allowed:
            log.info("beckn %s from %s refused: over %d requests a minute", action, sender.subscriber_id, verdict.limit)
            # BECKN-005 has no rate-limit code: 50000 "Policy Error", with HTTP 429 and Retry-After.
            message = f"rate limit: at most {verdict.limit} requests a minute; retry after {verdict.retry_after} s"
            return nack(
                {"code": POLICY_ERROR, "paths": "", "message": message},
                429,
                {"Retry-After": str(verdict.retry_after)},
            )
        try:
            envelope = parse_envelope(raw, action, parsed=body)
            callback_url = registered_callback_url(envelope.context["bap_uri"], sender.subscriber_url)
        except BecknRequestError as exc:
            return nack(exc.as_error(), 400)
        # Duplicate check without touching the database: an atomic add (Redis SET NX in production). The
        # worker records each message once under a unique constraint, the second guard.
        dedupe_key = f"beckn:msg:{envelope.bap_id}:{action}:{envelope.message_id}"
        if not first_sighting(dedupe_key):
            return _ack()  # same answer, nothing else
        try:
            tasks.handle_request.delay(action, raw.decode("utf-8", "replace"), sender.gateway_id or "", callback_url)
        except Exception:  # the queue is down: no ACK, so the BAP retries, and this message id stays fresh
            forget_sighting(dedupe_key)
            log.exception("could not queue beckn %s %s", action, envelope.message_id)
            return nack({"code": "50000", "paths": "", "message": "temporarily unable to accept requests"}, 503)
        return _ack()


def _same_url(a: str, b: str) -> bool:
    left, right = urlsplit(a.strip()), urlsplit(b.strip())
    return (left.scheme.lower(), left.netloc.lower(), left.path.rstrip("/")) == (
        right.scheme.lower(),
        right.netloc.lower(),
        right.path.rstrip("/"),
    )


def registered_callback_url(bap_uri: str, registered: str) -> str:
    """Where the answers go: the sender's registered URL, never merely what its context says (else anyone
    who can sign could direct our callbacks, and the data in them, anywhere). context.bap_uri must be it."""
    if not registered:
        raise BecknRequestError(
            INVALID_REQUEST, "context.bap_uri", "this subscriber has no registered URL to send callbacks to"
        )
    if not _same_url(bap_uri, registered):
        raise BecknRequestError(INVALID_REQUEST, "context.bap_uri", "bap_uri is not the subscriber's registered URL")
    return registered


def track_page(request: Any, order_id: str) -> HttpResponse:
    """The tracking URL we give in on_track: the live state of one charge."""
    booking = get_object_or_404(Booking.objects.select_related("evse__location__partner"), order_id=order_id)
    return render(
        request,
        "beckn/track.html",
        {"booking": booking, "state": STATE_CODES[booking.state], "details": charging_details(booking) or []},
    )


def support_page(request: Any, order_id: str) -> HttpResponse:
    """Our and the CPO's contacts for one order (the support URL of on_support)."""
    booking = Booking.objects.filter(order_id=order_id).select_related("evse__location__partner").first()
    return render(
        request,
        "beckn/support.html",
        {
            "booking": booking,
            "our_phone": settings.EMSP_SUPPORT_PHONE,
            "our_email": settings.EMSP_SUPPORT_EMAIL,
            "partner": booking.evse.location.partner if booking else None,
        },
    )
