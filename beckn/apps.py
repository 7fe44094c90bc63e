from __future__ import annotations

from django.apps import AppConfig


class BecknConfig(AppConfig):
    name = "beckn"
