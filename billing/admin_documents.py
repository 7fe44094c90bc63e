"""Console pages for what we issue and what apps owe: drivers' receipts (issue a numbered receipt or credit
note), the numbered PDFs issued (read-only, downloaded as issued, their SHA-256 checked), and the settlement of
an app (BAP) over a period with its exports and statement (served from the settlement pages' URLs; issuing is a
POST of the page's form, recorded as a staff action). CPO
statements of closed periods are an action of the settlement list (admin_settlement.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode

from billing.admin_ledger import DAY_VALIDATORS
from billing.admin_links import ReadOnlyAdmin, admin_link, attachment
from billing.models import BapAgreement, DriverReceipt, IssuedDocument
from billing.services import bap_settlement, documents, settlement
from billing.services.settlement import CSV_CONTENT_TYPE, XLSX_CONTENT_TYPE, next_month, period_label
from emsp.services.staff import staff_action_record

PDF_CONTENT_TYPE = "application/pdf"


@admin.register(DriverReceipt)
class DriverReceiptAdmin(admin.ModelAdmin):
    list_display = ("cdr", "driver", "currency", "total_incl_vat", "quoted_total_incl_vat", "created_at", "document",
                    "sweeps")  # fmt: skip
    # Unissued receipts are the ones to look at: a lost task the beat's sweep will issue, or one whose issue keeps
    # failing (sweeps counts the sweep's tries, docs/settlement.md).
    list_filter = ("issued", "currency")
    search_fields = ("cdr__cdr_id", "driver__name", "driver__email")
    list_select_related = ("cdr", "driver")
    readonly_fields = [f.name for f in DriverReceipt._meta.fields if f.name != "id"]
    actions = ["issue"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[DriverReceipt]:
        """Each receipt with its document's id and number, read in the page's one statement (they were two
        queries a row)."""
        issued = IssuedDocument.objects.filter(
            kind__in=(IssuedDocument.Kind.RECEIPT, IssuedDocument.Kind.CREDIT_NOTE),
            reference=Concat(Value("cdr:"), Cast(OuterRef("cdr_id"), CharField())),
        ).order_by("pk")
        return (
            super()
            .get_queryset(request)
            .annotate(
                document_pk=Subquery(issued.values("pk")[:1]), document_number=Subquery(issued.values("number")[:1])
            )
        )

    @admin.display(description="Receipt")
    def document(self, receipt: DriverReceipt) -> str:
        pk = getattr(receipt, "document_pk", None)
        number = getattr(receipt, "document_number", None)
        return admin_link(IssuedDocument(pk=pk), number) if pk is not None else "—"  # linked by its pk, not loaded

    @admin.action(description="Issue the numbered receipt (or credit note) as PDF", permissions=["view"])
    def issue(self, request: HttpRequest, queryset: QuerySet[DriverReceipt]) -> None:
        if not request.user.has_perm("billing.add_issueddocument"):
            raise PermissionDenied
        for receipt in queryset[:200]:
            try:
                issued = documents.issue_receipt(receipt)
            except documents.DocumentError as exc:  # a document that can't be laid out is one too
                messages.warning(request, f"{receipt}: {exc}")
            except Exception as exc:
                messages.error(request, f"{receipt}: not issued ({type(exc).__name__}: {exc})"[:500])
            else:
                messages.success(request, f"{issued.number} issued for {receipt.cdr}")


@admin.register(IssuedDocument)
class IssuedDocumentAdmin(ReadOnlyAdmin):  # as issued, for good
    list_display = ("number", "kind", "party", "reference", "total", "currency", "issued_at", "download")
    list_filter = ("kind", "entity", "currency")
    search_fields = ("number", "party", "reference")
    readonly_fields = ("entity", "kind", "number", "party", "reference", "currency", "total", "sha256", "issued_at")
    exclude = ("pdf",)
    ordering = ("-issued_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[IssuedDocument]:
        return super().get_queryset(request).defer("pdf")  # a list of 100 rows read 100 PDFs

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "<int:pk>/pdf/",
                self.admin_site.admin_view(self.pdf_view),
                name="billing_issueddocument_pdf",
            )
        ]
        return extra + super().get_urls()

    @admin.display(description="PDF")
    def download(self, document: IssuedDocument) -> str:
        return format_html('<a href="{}">download</a>', reverse("admin:billing_issueddocument_pdf", args=[document.pk]))

    def pdf_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        document = get_object_or_404(IssuedDocument, pk=pk)
        try:
            body = documents.document_pdf(document)
        except documents.DocumentError as exc:  # the stored bytes no longer match their SHA-256
            messages.error(request, str(exc))
            return HttpResponse(str(exc), status=409, content_type="text/plain")
        return attachment(HttpResponse(body, content_type=PDF_CONTENT_TYPE), documents.document_filename(document))


# --- the settlement of an app (BAP) --------------------------------------------------------------------------


class BapSettlementForm(forms.Form):
    bap_id = forms.CharField(required=False, max_length=255, help_text="Empty: every app with money in the period")
    # Days a period's bounds may name (admin_ledger.DAY_VALIDATORS): 9999-12-01..9999-12-31 was a server error.
    period_start = forms.DateField(help_text="YYYY-MM-DD", validators=DAY_VALIDATORS)
    period_end = forms.DateField(help_text="YYYY-MM-DD, exclusive", validators=DAY_VALIDATORS)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("period_start"), data.get("period_end")
        # The length, not `start + 366 days`: that sum overflows past the last date there is (an OverflowError).
        if start and end and not 0 < (end - start).days <= 366:
            raise forms.ValidationError("the period ends after it starts, within a year")
        bap_id = data.get("bap_id") or ""
        if not bap_id.isprintable():
            raise forms.ValidationError("the app id is printable text")
        return data


def bap_settlement_view(request: HttpRequest) -> HttpResponse:
    """Finance: an app's collections, finder fees and net due over a period, shown and exported (GET), or its
    statement issued as a numbered PDF (POST: bap_statement_issue)."""
    if not request.user.has_perm("billing.view_settlement"):
        raise PermissionDenied
    if request.method == "POST":
        return bap_statement_issue(request)
    today = timezone.localdate()
    first = today.replace(day=1)
    previous = (first - timedelta(days=1)).replace(day=1)
    form = BapSettlementForm(request.GET or {"period_start": previous, "period_end": first})
    rows: list[Any] = []
    if form.is_valid():
        data = form.cleaned_data
        try:
            rows = bap_settlement.bap_settlements_compute(
                period_start=data["period_start"], period_end=data["period_end"], bap_id=data["bap_id"] or None
            )
        except bap_settlement.BapSettlementError as exc:
            form.add_error(None, str(exc))
        export = request.GET.get("export")
        if rows and export in ("csv", "xlsx"):
            if not request.user.has_perm("billing.export_settlement"):
                raise PermissionDenied
            lines = sum(len(row.lines) for row in rows)
            if export == "xlsx" and lines > settlement.XLSX_CONSOLE_MAX_ROWS:
                # Built in memory before the first byte is sent: the page with the message, and no file.
                messages.error(request, _too_many_lines(lines, data))
            else:
                if export == "csv":
                    body: Any = bap_settlement.bap_settlement_csv(rows)
                    response = HttpResponse(body, content_type=CSV_CONTENT_TYPE)
                else:
                    response = HttpResponse(
                        bap_settlement.bap_settlement_xlsx(rows, include_lines=True), content_type=XLSX_CONTENT_TYPE
                    )
                _record_export(request, rows, "csv" if export == "csv" else "xlsx with lines")
                return attachment(response, bap_settlement.bap_export_filename(rows, export))
    context = {
        **admin.site.each_context(request),
        "title": "App (BAP) settlement",
        "form": form,
        "rows": rows,
        "query": request.GET.urlencode(),
        "months": [(previous, first), (first, next_month(first))],
    }
    return TemplateResponse(request, "admin/billing/settlement/apps.html", context)


def _too_many_lines(lines: int, data: dict[str, Any]) -> str:
    """Where an app's lines beyond settlement.XLSX_CONSOLE_MAX_ROWS are exported: the report command."""
    start, end = data["period_start"], data["period_end"]
    months = start.day == 1 and end.day == 1
    last = (end - timedelta(days=1)).replace(day=1)
    period = (f"{start:%Y-%m}" if last == start else f"{start:%Y-%m}..{last:%Y-%m}") if months else "YYYY-MM"
    return (
        f"{lines:,} lines are too many for an XLSX built here (at most {settlement.XLSX_CONSOLE_MAX_ROWS:,}). "
        "Export the CSV here (the summary) and the lines with `manage.py settlement_report "
        f"--party bap:{data['bap_id'] or '*'} --period {period} --output FILE.csv --details` on a server."
    )


def _record_export(request: HttpRequest, rows: list[bap_settlement.BapSettlement], fmt: str) -> None:
    """One audit record (emsp.StaffAction) per app and currency exported, as the CPO exports record one per
    settlement row; on the app's agreement (its defaults, unsaved, when it has none: object id "None")."""
    agreements = {a.bap_id: a for a in BapAgreement.objects.filter(bap_id__in={row.bap_id for row in rows})}
    for row in rows:
        staff_action_record(
            user=request.user,
            verb="export",
            obj=agreements.get(row.bap_id) or BapAgreement(bap_id=row.bap_id),
            details={
                "bap_id": row.bap_id,
                "period": period_label(row.period_start, row.period_end),
                "currency": row.currency,
                "format": fmt,
            },
        )


def bap_statement_issue(request: HttpRequest) -> HttpResponse:
    """Issue the app's statements of a period, one per currency: numbers from a gapless sequence, so only from
    the page's form (a POST with its CSRF token, never a link that a page could make a finance user follow), each
    recorded as a staff action. Back to the page with what was issued."""
    if not request.user.has_perm("billing.add_issueddocument"):
        raise PermissionDenied
    url = reverse("admin:billing_bap_settlement")
    form = BapSettlementForm(request.POST)
    if not form.is_valid() or not form.cleaned_data["bap_id"]:
        messages.error(request, "A statement is issued for one app and a valid period.")
        return HttpResponseRedirect(url)
    data = form.cleaned_data
    bap_id, start, end = data["bap_id"], data["period_start"], data["period_end"]
    back = f"{url}?{urlencode({'bap_id': bap_id, 'period_start': start.isoformat(), 'period_end': end.isoformat()})}"
    try:
        rows = bap_settlement.bap_settlements_compute(period_start=start, period_end=end, bap_id=bap_id)
    except bap_settlement.BapSettlementError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(back)
    if not rows:
        messages.warning(request, f"Nothing to state for {bap_id} in this period.")
        return HttpResponseRedirect(back)
    issued = []
    try:
        with transaction.atomic():  # every currency's statement, or none
            for row in rows:
                reference = documents.bap_statement_reference(
                    bap_id=bap_id, currency=row.currency, period_start=start, period_end=end
                )
                before = IssuedDocument.objects.filter(kind=IssuedDocument.Kind.BAP_STATEMENT, reference=reference)
                if before.exists():
                    issued.append((before.get(), False))
                    continue
                document = documents.issue_bap_statement(
                    bap_id=bap_id, currency=row.currency, period_start=start, period_end=end
                )
                staff_action_record(
                    user=request.user,
                    verb="issue",
                    obj=document,
                    details={
                        "number": document.number,
                        "bap_id": bap_id,
                        "currency": row.currency,
                        "period_start": start,
                        "period_end": end,
                    },
                )
                issued.append((document, True))
    except documents.DocumentError as exc:
        messages.warning(request, str(exc))
        return HttpResponseRedirect(back)
    for document, new in issued:
        messages.success(request, f"{document.number} issued" if new else f"{document.number} was issued already")
    return HttpResponseRedirect(back)


@admin.register(BapAgreement)
class BapAgreementAdmin(admin.ModelAdmin):
    """What we agreed with each consumer app: offered as its payment terms in on_select/on_init."""

    list_display = ("bap_id", "legal_name", "collects", "finder_fee_percent", "settlement_window", "settlement_basis")
    search_fields = ("bap_id", "legal_name")
    list_filter = ("collects", "settlement_basis")
    readonly_fields = ("created_at",)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)

        def clean_settlement_window(self: Any) -> str:
            window = self.cleaned_data["settlement_window"].strip().upper()
            try:
                bap_settlement.add_duration(timezone.now(), window)
            except bap_settlement.BapSettlementError as exc:
                raise forms.ValidationError(str(exc)) from exc
            return window

        def clean_finder_fee_percent(self: Any) -> Any:
            fee = self.cleaned_data["finder_fee_percent"]
            if not 0 <= fee <= 50:
                raise forms.ValidationError("a finder fee is between 0 and 50 %")
            return fee

        form.clean_settlement_window = clean_settlement_window
        form.clean_finder_fee_percent = clean_finder_fee_percent
        return form
