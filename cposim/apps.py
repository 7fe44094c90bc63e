from __future__ import annotations

from django.apps import AppConfig


class CposimConfig(AppConfig):
    verbose_name = "CPO simulator (test and demo peer)"
    name = "cposim"
