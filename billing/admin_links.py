"""Links between billing's console pages, shared by the CDR and audit pages (admin.py) and the disputes
console (admin_disputes.py); and the read-only rule of the pages of records (ledger, payments, documents)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from billing.models import Cdr, CdrAudit


def admin_link(obj: Any, text: Any = None) -> str:
    """A link to `obj`'s change page, labelled `text` (default: the object itself)."""
    meta = obj._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, obj if text is None else text)


def audit_of(cdr: Cdr) -> CdrAudit | None:
    """The CDR's audit, or None before billing.services.audit has run on it."""
    try:
        return cdr.audit
    except CdrAudit.DoesNotExist:
        return None


class ReadOnly:
    """Nobody adds, changes or deletes here, superusers included: the rows are records, written by services
    (for model admins and inlines alike)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin):
    actions = None
