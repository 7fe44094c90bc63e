"""Beckn BPP URLs: POST /beckn/{action}, plus the tracking and support pages our callbacks link to."""

from __future__ import annotations

from django.urls import path

from beckn.views import BecknActionView, support_page, track_page

app_name = "beckn"

urlpatterns = [
    path("track/<str:order_id>", track_page, name="track"),
    path("support/<str:order_id>", support_page, name="support"),
    path("<str:action>", BecknActionView.as_view(), name="action"),
]
