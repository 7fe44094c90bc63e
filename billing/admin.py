"""Console pages for billing: tariffs, CDRs with their audit, partner terms, and the driver page with billing's
rules on a driver's currency. The disputes queue (admin_disputes.py) and settlement (admin_settlement.py) have
their own modules, registered from here."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html_join

from billing.admin_links import admin_link, audit_of
from billing.models import Cdr, CdrAudit, Dispute, LedgerAccount, PartnerTerms, Tariff
from billing.money import MINOR_UNITS
from billing.services import held_cdrs
from billing.services.audit import ACCEPTED, RELEASED, TARIFF_NEWER, VOIDED, WITHDRAWN, accept_as_billed
from emsp.admin import DriverAdmin
from emsp.models import Driver


@admin.register(Tariff)
class TariffAdmin(admin.ModelAdmin):
    list_display = ("tariff_id", "partner", "currency", "type", "start_date_time", "end_date_time", "last_updated")
    list_filter = ("partner", "currency", "type")
    search_fields = ("tariff_id",)
    # A tariff is the CPO's object, changed only by its OCPI pushes and pulls (billing/services/records.py fills
    # every column from `data`). An editable country_code/party_id moved it to a party nobody holds while
    # ocpi_key and data kept the old one; an edited last_updated or currency would drift from `data` the same way.
    readonly_fields = [f.name for f in Tariff._meta.fields]

    # No add form either, as for CDRs: a tariff staff typed in would be no CPO's object (and, read-only, an empty row).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


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
        "audit_status",
    )
    list_filter = ("partner", "audit__status", "credit", "currency")
    search_fields = ("cdr_id", "session_id", "token_uid", "credit_reference_id")
    date_hierarchy = "end_date_time"
    readonly_fields = [*(f.name for f in Cdr._meta.fields), "audit_link"]
    list_select_related = ("partner", "audit")

    # CDRs come from CPOs only (OCPI): an add form of read-only fields saved an empty row (IntegrityError).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Audit", ordering="audit__status")
    def audit_status(self, cdr: Cdr) -> str:
        audit = audit_of(cdr)
        return audit.status if audit is not None else "-"

    @admin.display(description="Audit and disputes")
    def audit_link(self, cdr: Cdr) -> str:
        audit = audit_of(cdr)
        parts = [admin_link(audit, audit.get_status_display()) if audit is not None else "not audited"]
        parts += [admin_link(d, f"dispute {d.pk} ({d.state})") for d in cdr.disputes.order_by("opened_at")]
        return format_html_join(" · ", "{}", ((p,) for p in parts))


# ---------------------------------------------------------------------------------------------
# CDR audits and partner terms
# ---------------------------------------------------------------------------------------------

# The flags billing.services.audit sets on an audit, and the one a staff member's release adds
# (billing.services.held_cdrs).
AUDIT_FLAGS = (
    "no_session",
    "no_tariff",
    "unknown_location",
    "unpriceable",
    "unknown_original",
    "duplicate_session_cdr",
    "original_held",
    "foreign_token",
    "incl_vat_below_excl_vat",
    "over_credit",
    "tax_rate_unknown",
    "inexact_reprice",
    "unknown_token",
    "currency_differs",
    "token_differs",
    "tariff_currency_differs",
    TARIFF_NEWER,
    VOIDED,
    RELEASED,
    ACCEPTED,
    WITHDRAWN,
)


class AuditFlagFilter(admin.SimpleListFilter):
    title = "flag"
    parameter_name = "flag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(flag, flag.replace("_", " ")) for flag in AUDIT_FLAGS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CdrAudit]) -> QuerySet[CdrAudit]:
        if self.value() not in AUDIT_FLAGS:
            return queryset
        # The JSON text contains the quoted flag; portable across SQLite and PostgreSQL (no JSON containment
        # lookup on SQLite), and the flag names are not substrings of one another once quoted.
        return queryset.filter(flags__icontains=f'"{self.value()}"')


@admin.register(CdrAudit)
class CdrAuditAdmin(admin.ModelAdmin):
    list_display = (
        "cdr_id",
        "partner",
        "status",
        "currency",
        "computed_excl_vat",
        "difference_excl_vat",
        "flag_list",
        "audited_at",
        "dispute_links",
    )
    list_filter = ("status", AuditFlagFilter, "cdr__partner")
    search_fields = ("cdr__cdr_id", "cdr__session_id")
    list_select_related = ("cdr", "cdr__partner")
    readonly_fields = [*(f.name for f in CdrAudit._meta.fields), "cdr_link", "flag_list", "dispute_links"]
    fieldsets = (
        (None, {"fields": ("cdr_link", "status", "flag_list", "error", "dispute_links", "audited_at")}),
        ("Totals", {"fields": ("currency", "computed_excl_vat", "computed_incl_vat", "difference_excl_vat")}),
        ("Breakdowns", {"fields": ("time_zone", "cpo_breakdown", "our_breakdown")}),
    )
    actions = ["bill_held_cdr", "accept_as_billed"]

    # Audits are derived from CDRs by billing.services.audit; the console only reads them (and bills a held CDR
    # staff release, through billing.services.held_cdrs, or notes a CDR in review accepted as billed).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: CdrAudit | None = None) -> bool:
        return False

    @admin.display(description="CDR", ordering="cdr__cdr_id")
    def cdr_id(self, audit: CdrAudit) -> str:
        return audit.cdr.cdr_id

    @admin.display(description="Partner", ordering="cdr__partner__name")
    def partner(self, audit: CdrAudit) -> str:
        return str(audit.cdr.partner)

    @admin.display(description="CDR")
    def cdr_link(self, audit: CdrAudit) -> str:
        return admin_link(audit.cdr)

    @admin.display(description="Flags")
    def flag_list(self, audit: CdrAudit) -> str:
        return ", ".join(audit.flags or []) or "-"

    def get_queryset(self, request: HttpRequest) -> QuerySet[CdrAudit]:
        # dispute_links is a list column: its disputes come in one query for the page, not one per row.
        disputes = Prefetch("cdr__disputes", queryset=Dispute.objects.order_by("opened_at"))
        return super().get_queryset(request).prefetch_related(disputes)

    @admin.display(description="Disputes")
    def dispute_links(self, audit: CdrAudit) -> str:
        disputes = audit.cdr.disputes.all()
        if not disputes:
            return "-"
        return format_html_join(", ", "{}", ((admin_link(d, f"{d.pk} ({d.state})"),) for d in disputes))

    @admin.action(description="Bill the driver for this held CDR", permissions=["change"])
    def bill_held_cdr(self, request: HttpRequest, queryset: QuerySet[CdrAudit]) -> HttpResponse | None:
        """A confirmation page first (the CDRs, what each driver would pay, or why one won't be billed), as
        Django's delete does; its POST with `confirm` bills. Each CDR is billed or refused on its own, with a
        message saying which and why."""
        audits = list(queryset.select_related("cdr", "cdr__partner").order_by("pk"))
        if request.POST.get("confirm") != "yes":
            return self._confirm_billing(request, audits)
        for audit in audits:
            release = held_cdrs.bill_held_cdr(audit.cdr_id, request.user)
            if release.receipt is not None:
                total = held_cdrs.receipt_total(release.receipt)
                messages.success(
                    request, f"CDR {release.label}: billed the driver {total} (receipt {release.receipt.pk})."
                )
            else:
                messages.warning(request, f"CDR {release.label}: not billed: {release.reason}.")
        return None

    @admin.action(description="Accept the CPO's bill of these CDRs in review as billed", permissions=["change"])
    def accept_as_billed(self, request: HttpRequest, queryset: QuerySet[CdrAudit]) -> None:
        """A CDR in review or unpriceable, not held, that its driver paid (no_session, no_tariff, inexact_reprice,
        tax_rate_unknown…): staff who judged the CPO's bill right accept it, and its settlement counts it as
        matching. Each CDR accepted or refused on its own, with a message; each acceptance recorded."""
        for cdr_id in queryset.order_by("pk").values_list("cdr_id", flat=True)[:200]:
            outcome = accept_as_billed(cdr_id, request.user)
            if outcome.accepted:
                messages.success(request, f"CDR {outcome.label}: accepted as billed.")
            else:
                messages.warning(request, f"CDR {outcome.label}: not accepted: {outcome.reason}.")

    def _confirm_billing(self, request: HttpRequest, audits: list[CdrAudit]) -> TemplateResponse:
        rows = []
        for audit in audits:
            refusal = held_cdrs.release_refusal(audit.cdr, audit)
            rows.append(
                {
                    "audit": audit,
                    "cdr": audit.cdr,
                    "held": ", ".join(sorted(held_cdrs.HELD.intersection(audit.flags or []))) or "-",
                    "refusal": refusal,
                    "driver_bill": None if refusal else held_cdrs.driver_bill(audit.cdr),
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Bill the driver for held CDRs?",
            "opts": self.model._meta,
            "rows": rows,
            "billable": sum(1 for row in rows if not row["refusal"]),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action": "bill_held_cdr",
        }
        return TemplateResponse(request, "admin/billing/cdraudit/bill_held_confirmation.html", context)


class PartnerTermsForm(forms.ModelForm):
    class Meta:
        model = PartnerTerms
        fields = ("partner", "audit_tolerance", "fee_flat", "fee_percent", "fee_vat_percent", "rounding")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        for name in ("audit_tolerance", "fee_flat", "fee_percent", "fee_vat_percent"):
            value = cleaned.get(name)
            if value is not None and value < 0:
                self.add_error(name, "Must not be negative.")
        vat = cleaned.get("fee_vat_percent")
        if vat is not None and vat > 100:
            self.add_error("fee_vat_percent", "A VAT rate is at most 100 %.")
        return cleaned


@admin.register(PartnerTerms)
class PartnerTermsAdmin(admin.ModelAdmin):
    form = PartnerTermsForm
    list_display = ("partner", "audit_tolerance", "fee_flat", "fee_percent", "fee_vat_percent", "rounding")
    list_filter = ("rounding",)
    search_fields = ("partner__name", "partner__party_id")
    list_select_related = ("partner",)


class DriverForm(forms.ModelForm):
    class Meta:
        model = Driver
        fields = ("app_id", "name", "email", "phone", "is_blocked", "wallet_limit", "currency")

    def clean_currency(self) -> str:
        # An ISO 4217 code money is kept in (billing.money): "ZZZ" or a zero-width space was saved, and the
        # driver's next wallet top-up failed (unknown ISO 4217 currency code).
        code = self.cleaned_data["currency"].strip().upper()
        if code not in MINOR_UNITS:
            raise forms.ValidationError("Enter an ISO 4217 currency code, such as INR or EUR.")
        return code


class BillingDriverAdmin(DriverAdmin):
    """emsp's driver page (emsp/admin.py), with billing's rules on the currency: an ISO 4217 code, fixed once
    the ledger holds an account of the driver's (their wallet or receivable, kept in that currency: in another,
    the balance would be read from an empty account)."""

    form = DriverForm

    def get_readonly_fields(self, request: HttpRequest, obj: Driver | None = None) -> tuple[str, ...]:
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and LedgerAccount.objects.filter(code__in=_driver_accounts(obj.pk)).exists():
            fields += ("currency",)
        return fields


def _driver_accounts(driver_id: int) -> list[str]:
    return [f"driver:{driver_id}:wallet", f"driver:{driver_id}:receivable"]  # billing.services.accounts


admin.site.unregister(Driver)
admin.site.register(Driver, BillingDriverAdmin)


# Admin autodiscovery imports only this module: the other console pages register when imported here.
from billing import admin_disputes, admin_documents, admin_ledger, admin_payments, admin_settlement  # noqa: E402, F401
