from __future__ import annotations

from django.apps import AppConfig


class OcpiConfig(AppConfig):
    verbose_name = "OCPI 2.2.1"
    name = "ocpi"
