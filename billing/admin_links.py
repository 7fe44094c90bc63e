"""What billing's console pages share: links between them (CDR, audit and dispute pages), downloads, and the
read-only rule of the pages of records (ledger, payments, documents, dispute history)."""

from __future__ import annotations

from typing import Any, TypeVar

from django.contrib import admin
from django.http import HttpRequest, HttpResponseBase
from django.urls import reverse
from django.utils.html import format_html

from billing.models import Cdr, CdrAudit

Response = TypeVar("Response", bound=HttpResponseBase)


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


def attachment(response: Response, filename: str) -> Response:
    """A download. Our export and document file names are letters, digits and -_. only: no quoting needed."""
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


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
