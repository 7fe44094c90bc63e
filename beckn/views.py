"""POST /beckn/{action} through Django: the answer itself is beckn/ack.py's (shared with the WSGI fast lane in
front of Django, beckn/ack_lane.py); the on_* answer comes as a signed callback. Plus the tracking and support
pages our callbacks link to."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from beckn import ack, metrics
from beckn.openapi import SIGNATURE_AUTH, schema_ref
from beckn.parsing import ACTIONS
from beckn.rendering import STATE_CODES, charging_details
from emsp.models import Booking


def http_response(answer: ack.Answer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, content_type="application/json")
    for key, value in answer.headers.items():
        response[key] = value
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
        raw = request._request.read(settings.BECKN_MAX_BODY_BYTES + 1) if action in ACTIONS else b""
        answer = ack.answer(action, raw, request.headers)
        if answer.nack_code is None:
            metrics.count_ack(action)
        else:
            metrics.count_nack(action, answer.nack_code)
        return http_response(answer)


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
