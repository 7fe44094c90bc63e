"""Console pages for OCPI plumbing: the message log (searchable by request/correlation id), pull runs,
data-quality findings and the push outbox."""

from __future__ import annotations

from django.contrib import admin

from ocpi.models import DataQualityIssue, OcpiMessage, PushDelivery, SyncRun


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(OcpiMessage)
class OcpiMessageAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "direction",
        "partner",
        "method",
        "module",
        "url",
        "http_status",
        "ocpi_status",
        "duration_ms",
    )
    list_filter = ("direction", "module", "http_status", "partner")
    search_fields = ("=request_id", "=correlation_id", "url")
    date_hierarchy = "created_at"
    list_select_related = ("partner",)


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "partner",
        "module",
        "mode",
        "outcome",
        "pages",
        "received",
        "stored",
        "normalised",
        "rejected",
    )
    list_filter = ("outcome", "module", "mode", "partner")
    list_select_related = ("partner",)


@admin.register(DataQualityIssue)
class DataQualityIssueAdmin(ReadOnlyAdmin):
    list_display = ("last_seen", "partner", "module", "object_id", "path", "code", "fixed", "message")
    list_filter = ("partner", "module", "code", "fixed")
    search_fields = ("object_id", "path", "message")
    list_select_related = ("partner",)


@admin.register(PushDelivery)
class PushDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "partner",
        "module",
        "method",
        "path",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
    )
    list_filter = ("status", "module", "partner")
    list_select_related = ("partner",)
