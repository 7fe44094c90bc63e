from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self) -> None:
        from django.contrib import admin

        from billing import metrics, privacy
        from billing.dashboard import console_home_install

        # The console home (charts per role) on the default admin site, which other apps register on.
        console_home_install(admin.site)
        privacy.register()  # receipts and quotes in export, erasure and retention
        metrics.register()  # CDRs awaiting audit, audits, disputes, settlements in /metrics (emsp/metrics.py)

        from billing.services import payments
        from emsp import events

        events.subscribe(events.BookingCancelled, payments.booking_cancelled)
