"""Console pages for tariffs and CDRs."""

from __future__ import annotations

from django.contrib import admin

from billing.models import Cdr, Tariff


@admin.register(Tariff)
class TariffAdmin(admin.ModelAdmin):
    list_display = ("tariff_id", "partner", "currency", "type", "start_date_time", "end_date_time", "last_updated")
    list_filter = ("partner", "currency", "type")
    search_fields = ("tariff_id",)
    readonly_fields = ("partner", "ocpi_key", "data", "received_at")


@admin.register(Cdr)
class CdrAdmin(admin.ModelAdmin):
    list_display = (
        "cdr_id",
        "partner",
        "end_date_time",
        "total_energy",
        "total_cost_excl_vat",
        "total_cost_incl_vat",
        "currency",
        "credit",
    )
    list_filter = ("partner", "credit", "currency")
    search_fields = ("cdr_id", "session_id", "token_uid", "credit_reference_id")
    date_hierarchy = "end_date_time"
    readonly_fields = [f.name for f in Cdr._meta.fields]
    list_select_related = ("partner",)

# Settlement pages and exports live in their own module.
from billing import admin_settlement  # noqa: E402, F401
