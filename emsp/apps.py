from __future__ import annotations

from django.apps import AppConfig


class EmspConfig(AppConfig):
    verbose_name = "eMSP domain"
    name = "emsp"

    def ready(self) -> None:
        # The console home (charts per role) on the default admin site, which other apps register on.
        from django.contrib import admin

        from emsp.dashboard import console_home_install

        console_home_install(admin.site)
