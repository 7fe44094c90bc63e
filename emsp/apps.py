from __future__ import annotations

from django.apps import AppConfig


class EmspConfig(AppConfig):
    verbose_name = "eMSP domain"
    name = "emsp"
