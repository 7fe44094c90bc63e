"""Beckn BPP URLs: POST /beckn/{action}, plus the pages our callbacks link to (tracking, support, terms,
feedback)."""

from __future__ import annotations

from django.urls import path

from beckn.pages import feedback_page, terms_page
from beckn.views import BecknActionView, support_page, track_page

app_name = "beckn"

urlpatterns = [
    path("track/<str:order_id>", track_page, name="track"),
    path("support/<str:order_id>", support_page, name="support"),
    path("terms", terms_page, name="terms"),
    path("feedback", feedback_page, name="feedback"),
    path("<str:action>", BecknActionView.as_view(), name="action"),
]
