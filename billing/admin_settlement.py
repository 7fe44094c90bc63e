"""Console pages for settlement (finance): periods per CPO, reconciliation and exports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as admin_delete_selected
from django.contrib.admin.options import TO_FIELD_VAR
from django.contrib.admin.utils import unquote
from django.db import transaction
from django.db.models import QuerySet
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import urlencode

from billing.admin_links import attachment
from billing.models import IssuedDocument, Settlement
from billing.services import settlement as service
from emsp.models import Partner
from emsp.services.staff import staff_action_record


class ComputePeriodForm(forms.Form):
    partner = forms.ModelChoiceField(
        queryset=Partner.objects.order_by("name"), required=False, empty_label="Every partner with CDRs"
    )
    month = forms.CharField(label="Month", max_length=7, help_text="YYYY-MM, e.g. 2026-10")

    def clean_month(self) -> Any:
        try:
            month = datetime.strptime(self.cleaned_data["month"].strip(), "%Y-%m").date()  # noqa: DTZ007 - a month
        except ValueError:
            raise forms.ValidationError("Give the month as YYYY-MM, e.g. 2026-10.") from None
        if month > service.LAST_MONTH:  # its period would end in the year 10000, past the last date there is
            raise forms.ValidationError(f"Give a month up to {service.LAST_MONTH:%Y-%m}.")
        return month


class PeriodFilter(admin.SimpleListFilter):
    title = "period"
    parameter_name = "period"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        starts = Settlement.objects.order_by("-period_start").values_list("period_start", flat=True).distinct()
        return [(f"{d:%Y-%m}", f"{d:%Y-%m}") for d in starts[:36]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> QuerySet[Settlement]:
        if not self.value():
            return queryset
        try:
            start = datetime.strptime(self.value(), "%Y-%m").date()  # noqa: DTZ007
        except ValueError:
            return queryset.none()
        return queryset.filter(period_start=start)


def _report_command(settlements: list[Settlement]) -> str:
    """The `settlement_report` that writes the selected rows' workbook outside a request."""
    parties = {s.partner.party_key for s in settlements}
    months = sorted({service.period_label(s.period_start, s.period_end) for s in settlements})
    partner = next(iter(parties)) if len(parties) == 1 else "CC*PID"
    period = "YYYY-MM"
    if all(len(month) == len("2026-10") for month in months):
        period = months[0] if len(months) == 1 else f"{months[0]}..{months[-1]}"
    return f"manage.py settlement_report --partner {partner} --period {period} --output FILE.xlsx --details"


@admin.register(Settlement)
class SettlementAdmin(admin.ModelAdmin):
    change_list_template = "admin/billing/settlement/change_list.html"
    list_display = (
        "partner",
        "period",
        "currency",
        "state",
        "cdr_count",
        "energy_kwh",
        "cpo_billed_excl_vat",
        "computed_excl_vat",
        "disputed_excl_vat",
        "open_disputes",
        "charged_to_drivers",
        "margin_excl_vat",
        "vat_collected",
        "ledger_payable",
        "carried_over",
        "computed_at",
    )
    list_filter = ("partner", PeriodFilter, "state", "currency")
    list_select_related = ("partner", "closed_by")
    ordering = ("-period_start", "partner__name", "currency")
    actions = [
        "delete_selected",
        "recompute",
        "export_csv",
        "export_xlsx",
        "export_xlsx_with_cdrs",
        "export_cdrs_csv",
        "close_period",
        "close_period_carrying_over",
        "issue_cpo_statement",
    ]
    readonly_fields = [f.name for f in Settlement._meta.fields if f.name != "id"]

    @admin.display(description="Period", ordering="period_start")
    def period(self, settlement: Settlement) -> str:
        return service.period_label(settlement.period_start, settlement.period_end)

    # Rows come from settlement_compute only; finance reads, recomputes, exports and closes them.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Settlement | None = None) -> bool:
        if obj is not None and obj.state == Settlement.State.CLOSED:
            return False
        return super().has_delete_permission(request, obj)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The state the request loaded says nothing of a close running or committed since: the row is locked (a
        # close holds it until it commits, then this reads it CLOSED) and its state read again before the admin's
        # delete, in the same transaction. Before, a close in progress was waited for by the DELETE itself, which
        # then removed the period just closed.
        if request.method != "POST" or not self.has_delete_permission(request):
            return super().delete_view(request, object_id, extra_context)
        to_field = request.POST.get(TO_FIELD_VAR, request.GET.get(TO_FIELD_VAR))
        if to_field and not self.to_field_allowed(request, to_field):
            return super().delete_view(request, object_id, extra_context)  # Django's 400, before any read
        with transaction.atomic():
            loaded = self.get_object(request, unquote(object_id), to_field)
            if loaded is not None and (closed := self._closed_locked([loaded.pk])):
                messages.error(request, f"Not deleted: {closed[0]} is closed.")
                return HttpResponseRedirect(reverse("admin:billing_settlement_change", args=[loaded.pk]))
            return super().delete_view(request, object_id, extra_context)

    @admin.action(description="Delete selected settlements", permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> HttpResponse | None:
        """Django's action, its confirmed POST under the rows' locks with their states read again: none is deleted
        when one of them is closed (or was closed by a close that held it meanwhile)."""
        if not request.POST.get("post"):
            return admin_delete_selected(self, request, queryset)  # the confirmation page
        with transaction.atomic():
            if closed := self._closed_locked(list(queryset.values_list("pk", flat=True))):
                names = ", ".join(str(s) for s in closed)
                messages.error(request, f"Nothing deleted: {names} {'is' if len(closed) == 1 else 'are'} closed.")
                return None
            return admin_delete_selected(self, request, queryset)

    @staticmethod
    def _closed_locked(pks: list[int]) -> list[Settlement]:
        """Lock these rows until the transaction ends and return those that are closed. In the order a close takes
        the rows of a period (currency, pk), the periods one after another: a delete and a close don't deadlock."""
        rows = Settlement.objects.select_for_update().filter(pk__in=pks)
        states = rows.order_by("period_start", "partner_id", "currency", "pk").values_list("pk", "state")
        closed = [pk for pk, state in states if state == Settlement.State.CLOSED]
        return list(Settlement.objects.filter(pk__in=closed).select_related("partner").order_by("period_start"))

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.export_settlement")

    def has_issue_permission(self, request: HttpRequest) -> bool:
        # A statement takes the next number of a gapless sequence: issuing documents, as receipts need.
        return request.user.has_perm("billing.add_issueddocument")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Every field is read-only: a POST here could only write the row back as this request loaded it, and
        # one racing a close had reopened the period (CLOSED back to RECONCILED, closed_by cleared). The row
        # changes only through the actions and settlement_compute; the page has no Save buttons.
        if request.method == "POST":
            return HttpResponseNotAllowed(["GET"])
        no_save = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, extra_context={**no_save, **(extra_context or {})})

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra_context = {"can_compute": self.has_change_permission(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def get_urls(self) -> list[Any]:
        from billing.admin_documents import bap_settlement_view

        extra = [
            path("compute/", self.admin_site.admin_view(self.compute_view), name="billing_settlement_compute"),
            path("apps/", self.admin_site.admin_view(bap_settlement_view), name="billing_bap_settlement"),
        ]
        return extra + super().get_urls()

    def compute_view(self, request: HttpRequest) -> HttpResponse:
        """Compute (or recompute) one month for one partner or for every partner with CDRs in it."""
        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        form = ComputePeriodForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            start = form.cleaned_data["month"]
            partner = form.cleaned_data["partner"]
            with transaction.atomic():
                rows = service.settlements_compute(period_start=start, partners=[partner] if partner else None)
                scope = "one partner" if partner else "every partner with CDRs"
                self._record(request, "compute", rows, scope=scope)
            messages.success(request, f"Computed {len(rows)} settlement row(s) for {start:%Y-%m}.")
            query = {"period": f"{start:%Y-%m}"} | ({"partner__id__exact": partner.pk} if partner else {})
            return HttpResponseRedirect(f"{reverse('admin:billing_settlement_changelist')}?{urlencode(query)}")
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Compute a settlement period",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/billing/settlement/compute.html", context)

    @staticmethod
    def _record(request: HttpRequest, verb: str, settlements: list[Settlement], **details: Any) -> None:
        """One audit record (emsp.StaffAction) per settlement row the staff member acted on."""
        for settlement in settlements:
            staff_action_record(
                user=request.user,
                verb=verb,
                obj=settlement,
                details={"period": f"{settlement.period_start:%Y-%m}", "currency": settlement.currency, **details},
            )

    def _selected(self, queryset: QuerySet[Settlement]) -> list[Settlement]:
        return list(
            queryset.select_related("partner", "closed_by").order_by("period_start", "partner__name", "currency")
        )

    @admin.action(description="Recompute the selected periods", permissions=["change"])
    def recompute(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> None:
        selected = self._selected(queryset)
        periods = {(s.partner, s.period_start, s.period_end) for s in selected}
        with transaction.atomic():
            for partner, start, end in periods:
                service.settlement_compute(partner=partner, period_start=start, period_end=end)
            self._record(request, "recompute", selected)
        messages.success(request, f"Recomputed {len(periods)} period(s); closed rows keep their figures.")

    def _refuse_export(self, request: HttpRequest) -> bool:
        # The action list already hides exports from users without the permission; this guards direct posts.
        if self.has_export_permission(request):
            return False
        messages.error(request, "You need the permission to export settlement reports.")
        return True

    @admin.action(description="Export CSV", permissions=["export"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> HttpResponse | None:
        if self._refuse_export(request):
            return None
        settlements = self._selected(queryset)
        response = HttpResponse(service.settlement_csv(settlements), content_type=service.CSV_CONTENT_TYPE)
        self._record(request, "export", settlements, format="csv")
        return attachment(response, service.export_filename(settlements, "csv"))

    @admin.action(description="Export XLSX", permissions=["export"])
    def export_xlsx(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> HttpResponse | None:
        return self._xlsx(request, queryset, include_cdrs=False)

    @admin.action(description="Export XLSX with a sheet of CDRs", permissions=["export"])
    def export_xlsx_with_cdrs(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> HttpResponse | None:
        return self._xlsx(request, queryset, include_cdrs=True)

    def _xlsx(self, request: HttpRequest, queryset: QuerySet[Settlement], *, include_cdrs: bool) -> HttpResponse | None:
        if self._refuse_export(request):
            return None
        settlements = self._selected(queryset)
        if include_cdrs and (total := service.settlement_cdr_total(settlements)) > service.XLSX_CONSOLE_MAX_ROWS:
            # Built in memory before the first byte is sent: a big CPO's month ran past the request timeout.
            messages.error(
                request,
                f"{total:,} CDRs are too many for an XLSX built here (at most {service.XLSX_CONSOLE_MAX_ROWS:,}). "
                "Export the summary as XLSX and the CDRs with “Export the CDRs as CSV (one row per CDR)”, which "
                f"streams any number, or run `{_report_command(settlements)}` on a server.",
            )
            return None
        try:
            content = service.settlement_xlsx(settlements, include_cdrs=include_cdrs)
        except service.SettlementError as error:
            messages.error(request, str(error))
            return None
        response = HttpResponse(content, content_type=service.XLSX_CONTENT_TYPE)
        self._record(request, "export", settlements, format="xlsx with CDRs" if include_cdrs else "xlsx")
        return attachment(response, service.export_filename(settlements, "xlsx"))

    @admin.action(description="Export the CDRs as CSV (one row per CDR)", permissions=["export"])
    def export_cdrs_csv(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> HttpResponse | None:
        if self._refuse_export(request):
            return None
        settlements = self._selected(queryset)
        # Streamed: a big CPO's month is hundreds of thousands of rows, read from the database in chunks.
        response = StreamingHttpResponse(
            service.settlement_cdrs_csv(settlements), content_type=service.CSV_CONTENT_TYPE
        )
        self._record(request, "export", settlements, format="CDRs csv")
        return attachment(response, service.export_filename(settlements, "csv", suffix="-cdrs"))

    @admin.action(description="Close the selected periods (reconciled only)", permissions=["change"])
    def close_period(self, request: HttpRequest, queryset: QuerySet[Settlement], carry_over: bool = False) -> None:
        for settlement in self._selected(queryset):
            # One transaction per period with its record; a refused close still keeps the recomputed figures,
            # and the CDRs it carried over when every one was in review (nothing left to close).
            with transaction.atomic():
                try:
                    service.settlement_close(settlement=settlement, user=request.user, carry_over=carry_over)
                except service.SettlementError as error:
                    if error.carried:
                        self._record(request, "carry_over", [settlement], carried=error.carried)
                    messages.warning(request, f"Not closed: {error}.")
                else:
                    details = {"carried_over": settlement.carried_over} if carry_over else {}
                    self._record(request, "close", [settlement], **details)
                    messages.success(request, f"Closed {settlement}.")

    @admin.action(
        description="Close, carrying CDRs still in review (open disputes, unmatched audits) to the next period",
        permissions=["change"],
    )
    def close_period_carrying_over(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> None:
        self.close_period(request, queryset, carry_over=True)

    @admin.action(description="Issue the CPO statement (closed periods) as a numbered PDF", permissions=["issue"])
    def issue_cpo_statement(self, request: HttpRequest, queryset: QuerySet[Settlement]) -> None:
        from billing.services import documents

        for settlement in self._selected(queryset):
            try:
                issued, new = self._statement_issued(request, settlement)
            except documents.DocumentError as error:
                messages.warning(request, f"{settlement}: {error}")
            else:
                done = "issued" if new else "was issued already"
                messages.success(request, f"{issued.number} {done} for {settlement}")

    def _statement_issued(self, request: HttpRequest, settlement: Settlement) -> tuple[IssuedDocument, bool]:
        """The settlement's CPO statement, and whether this request issued it (then recorded as a staff action
        in its transaction). A second click, the back button and the same POST again, or two at once, get the
        statement issued before, said so, and recorded once: the settlement's row is locked first, so a twin
        waits for the first to commit and finds its statement (as bap_statement_issue tells them apart)."""
        from billing.services import documents

        with transaction.atomic():
            list(Settlement.objects.select_for_update().filter(pk=settlement.pk).values_list("pk", flat=True))
            reference = f"settlement:{settlement.pk}"  # documents.issue_cpo_statement's
            before = IssuedDocument.objects.filter(kind=IssuedDocument.Kind.CPO_STATEMENT, reference=reference)
            if (existing := before.first()) is not None:
                return existing, False
            issued = documents.issue_cpo_statement(settlement)
            self._record(request, "statement", [settlement])
        return issued, True
