"""Console pages for the ledger (finance): accounts with their balances, an account's statement, entries with
their lines and the booking/CDR/payment they came from, and the trial balance with receivables and payables
over time. Everything here is read-only for everyone: entries are immutable, a correction is a new entry."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from billing import finance
from billing.admin_links import ReadOnly, ReadOnlyAdmin, admin_link
from billing.charts import Series, column_chart
from billing.models import LedgerAccount, LedgerEntry, LedgerLine
from billing.money import minor_units
from billing.services.ledger import from_minor
from emsp.admin_logs import LogAdminMixin

# What an entry's `reference` (`<kind>:<pk>`) names, for the link to its console page.
REFERENCE_MODELS = {
    "booking": "emsp.Booking",
    "cdr": "billing.Cdr",
    "payment": "billing.Payment",
    "dispute": "billing.Dispute",
    "settlement": "billing.Settlement",
    "driver": "emsp.Driver",
}


def reference_url(reference: str) -> str | None:
    """The console page of what `reference` names, or None (no such kind, or no page for it). A booking without
    a page of its own (its admin not registered) is shown by its payments."""
    kind, _, rest = (reference or "").partition(":")
    key = rest.split(":", 1)[0]
    if kind not in REFERENCE_MODELS or not key.isdigit():
        return None
    model = apps.get_model(REFERENCE_MODELS[kind])
    meta = model._meta
    try:
        if admin.site.is_registered(model):
            return reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[key])
        if kind == "booking":
            return f"{reverse('admin:billing_payment_changelist')}?{urlencode({'booking__id__exact': key})}"
    except NoReverseMatch:
        return None
    return None


def reference_link(reference: str) -> str:
    if not reference:
        return "-"
    url = reference_url(reference)
    return format_html('<a href="{}">{}</a>', url, reference) if url else reference


def money_text(amount: Decimal | None) -> str:
    """An amount as the ledger holds it: exact, thousands separated, the sign kept (debit +, credit −)."""
    return "" if amount is None else f"{amount:,f}"


# ---------------------------------------------------------------------------------------------
# Accounts: the list with balances, an account's statement, the trial balance
# ---------------------------------------------------------------------------------------------


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


# The days a range may name: its end is the start of the day after `until`, and the bounds are moments in the
# current time zone, so neither may be the last (or the first) day there is (an OverflowError, a 500).
FIRST_DAY, LAST_DAY = date(1, 1, 2), date(9998, 12, 31)
DAY_VALIDATORS = [MinValueValidator(FIRST_DAY), MaxValueValidator(LAST_DAY)]


def day_field(label: str) -> forms.DateField:
    return forms.DateField(
        required=False, label=label, widget=forms.DateInput(attrs={"type": "date"}), validators=DAY_VALIDATORS
    )


class StatementRangeForm(forms.Form):
    since = day_field("From")
    until = day_field("To (inclusive)")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            raise forms.ValidationError("The range starts after it ends.")
        return cleaned

    def bounds(self) -> tuple[datetime | None, datetime | None]:
        """[start of `since`, start of the day after `until`) in the current time zone; open ends are None."""
        if not self.is_bound or not self.is_valid():
            return None, None
        since, until = self.cleaned_data.get("since"), self.cleaned_data.get("until")
        return (
            start_of_day(since) if since else None,
            start_of_day(until + timedelta(days=1)) if until else None,
        )


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    change_list_template = "admin/billing/ledger/account_change_list.html"
    list_display = ("code", "name", "currency", "kind", "balance")
    list_filter = ("currency", "kind")
    # A trial balance row's accounts (_rows_url); emsp/admin_lookups.py
    list_lookups = ("currency__exact", "code__startswith", "code__endswith")
    search_fields = ("code",)
    ordering = ("currency", "code")

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerAccount]:
        # The balance column is summed in the page's own query, one subquery per listed account (not a GROUP BY
        # over every line, which the page's count repeated), not one query per row.
        lines = LedgerLine.objects.filter(account=OuterRef("pk")).order_by().values("account")
        balance = lines.annotate(total=Sum("amount_minor")).values("total")
        return super().get_queryset(request).annotate(balance_minor=Coalesce(Subquery(balance), 0))

    @admin.display(description="Balance (debit +, credit −)", ordering="balance_minor")
    def balance(self, account: LedgerAccount) -> str:
        return money_text(from_minor(account.balance_minor, account.currency))

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        extra = [
            path("trial-balance/", view(self.trial_balance_view), name="billing_ledgeraccount_trial_balance"),
        ]
        return extra + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The account's page: its figures and its statement, a page at a time, over an optional date range."""
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET"])
        account = self.get_object(request, unquote(object_id))
        if account is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, account):
            raise PermissionDenied
        bound = any(request.GET.get(name) for name in ("since", "until"))
        form = StatementRangeForm(request.GET if bound else None)
        since, until = form.bounds()
        statement = finance.statement_page(
            account=account,
            since=since,
            until=until,
            page=request.GET.get("page"),
            per_page=finance.STATEMENT_PAGE_SIZE,
        )
        range_query = urlencode({k: request.GET[k] for k in ("since", "until") if request.GET.get(k)})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{account.code} ({account.currency})",
            "subtitle": None,
            "account": account,
            "balance": money_text(from_minor(account.balance_minor, account.currency)),
            "form": form,
            "ranged": since is not None or until is not None,
            "statement": statement,
            "rows": [
                {
                    "row": row,
                    "debit": money_text(row.amount) if row.amount > 0 else "",
                    "credit": money_text(-row.amount) if row.amount < 0 else "",
                    "balance": money_text(row.balance),
                    "entry_url": reverse("admin:billing_ledgerentry_change", args=[row.entry.pk]),
                    "reference": reference_link(row.entry.reference),
                }
                for row in statement.rows
            ],
            "carried_forward": money_text(statement.carried_forward),
            "closing": money_text(statement.closing),
            "range_query": range_query,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/billing/ledger/account.html", context)

    def trial_balance_view(self, request: HttpRequest) -> HttpResponse:
        """Per currency: every account family's balance, their sum (zero, or loudly not), and the receivables and
        payables of the last 90 days."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = TrialBalanceForm(request.GET if request.GET.get("until") else None)
        until = (
            start_of_day(form.cleaned_data["until"] + timedelta(days=1)) if form.is_bound and form.is_valid() else None
        )
        detail = request.GET.get("detail") == "1"
        books = finance.trial_balances(until=until, detail=detail)
        history = {h.currency: h for h in finance.balance_history()}
        cards = []
        for book in books:
            chart = None
            if book.currency in history:
                chart = receivables_payables_chart(history[book.currency])
            cards.append(
                {
                    "book": book,
                    "rows": [
                        {
                            "row": row,
                            "url": self._rows_url(book.currency, row),
                            "debit": money_text(row.debit),
                            "credit": money_text(row.credit),
                        }
                        for row in book.rows
                    ],
                    "debits": money_text(book.debits),
                    "credits": money_text(book.credits),
                    "total": money_text(book.total),
                    "history": history.get(book.currency),
                    "chart": chart,
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Finance: trial balance, receivables and payables",
            "form": form,
            "detail": detail,
            "cards": cards,
            "unbalanced": [card["book"] for card in cards if not card["book"].balanced],
            "history_days": finance.HISTORY_DAYS,
            "can_view_payments": request.user.has_perm("billing.view_payment"),
            "can_view_entries": request.user.has_perm("billing.view_ledgerentry"),
        }
        return TemplateResponse(request, "admin/billing/ledger/trial_balance.html", context)

    @staticmethod
    def _rows_url(currency: str, row: finance.TrialRow) -> str:
        if row.account is not None:
            return reverse("admin:billing_ledgeraccount_change", args=[row.account.pk])
        head, _, purpose = row.label.partition(":*:")
        query = {"currency__exact": currency, "code__startswith": f"{head}:", "code__endswith": f":{purpose}"}
        return f"{reverse('admin:billing_ledgeraccount_changelist')}?{urlencode(query)}"


class TrialBalanceForm(forms.Form):
    until = day_field("As of the end of")


def receivables_payables_chart(history: finance.BalanceHistory) -> Any:
    currency = history.currency
    labels = [f"{d.day} {d:%b}" for d in history.days]
    tooltips = [f"{d:%a} {d.day} {d:%b %Y}" for d in history.days]
    decimals = minor_units(currency)
    return column_chart(
        chart_id=f"chart-receivables-payables-{currency}",
        title=f"Receivables and payables at the end of each day ({currency})",
        description=(
            f"On {history.days[-1]:%Y-%m-%d}: receivables {history.receivables[-1]:f} {currency}, "
            f"payables {history.payables[-1]:f} {currency}."
        ),
        labels=labels,
        tooltips=tooltips,
        series=[
            Series("receivables", history.receivables, kind="line", decimals=decimals),
            Series("payables", history.payables, kind="line", css_class="series-2", decimals=decimals),
        ],
        unit=currency,
    )


# ---------------------------------------------------------------------------------------------
# Entries: immutable, with their lines and what they refer to
# ---------------------------------------------------------------------------------------------


class LedgerLineInline(ReadOnly, admin.TabularInline):
    model = LedgerLine
    fields = ("account_link", "debit", "credit")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The lines are the entry: whoever may read the entry reads them (no separate line permission).
        return request.user.has_perm("billing.view_ledgerentry")

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerLine]:
        return super().get_queryset(request).select_related("account").order_by("pk")

    @admin.display(description="Account")
    def account_link(self, line: LedgerLine) -> str:
        return admin_link(line.account)

    @admin.display(description="Debit")
    def debit(self, line: LedgerLine) -> str:
        return money_text(from_minor(line.amount_minor, line.account.currency)) if line.amount_minor > 0 else ""

    @admin.display(description="Credit")
    def credit(self, line: LedgerLine) -> str:
        return money_text(from_minor(-line.amount_minor, line.account.currency)) if line.amount_minor < 0 else ""


class LedgerEventFilter(admin.SimpleListFilter):
    """The events postings make (billing/services/postings.py), named here: Django's own filter reads the
    distinct events of every entry."""

    title = "event"
    parameter_name = "event"
    EVENTS = (
        "authorisation",
        "capture",
        "charge",
        "credit",
        "finder_fee",
        "refund",
        "release",
        "remittance",
        "settlement_payout",
        "wallet_top_up",
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(e, e) for e in self.EVENTS] + [("reversal", "a reversal")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[LedgerEntry]) -> QuerySet[LedgerEntry]:
        if self.value() == "reversal":
            return queryset.filter(event__startswith="reversal:")
        return queryset.filter(event=self.value()) if self.value() else queryset


@admin.register(LedgerEntry)
class LedgerEntryAdmin(LogAdminMixin, ReadOnlyAdmin):
    """Thousands of entries a second at peak: listed as the logs are (a capped count, no date drill-down, indexed
    filters), with each entry's amount read for the page's rows only."""

    list_display = ("id", "posted_at", "event", "memo", "reference_link", "amount", "reverses_link")
    list_filter = (LedgerEventFilter, ("posted_at", admin.DateFieldListFilter))
    list_lookups = ("reference__exact",)  # a payment's entries (PaymentAdmin.ledger_entries); emsp/admin_lookups.py
    search_fields = ("^reference", "=idempotency_key")
    search_help_text = "A reference (cdr:12, payment:7 …) or its beginning, or an idempotency key."
    log_time_field = "posted_at"
    ordering = ("-posted_at", "-pk")
    list_select_related = ("reverses",)
    inlines = [LedgerLineInline]
    fields = ("posted_at", "event", "memo", "reference_link", "idempotency_key", "reverses_link", "reversals_links")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerEntry]:
        # The amount column (the entry's debits) comes with the page's own query.
        # Subqueries, not a join and GROUP BY over every line: the page's 50 rows read their own lines.
        lines = LedgerLine.objects.filter(entry=OuterRef("pk")).order_by()
        debits = lines.filter(amount_minor__gt=0).values("entry").annotate(total=Sum("amount_minor")).values("total")
        return (
            super()
            .get_queryset(request)
            .annotate(
                debits_minor=Subquery(debits),
                currency=Subquery(lines.values("account__currency")[:1]),
            )
        )

    @admin.display(description="Amount")
    def amount(self, entry: LedgerEntry) -> str:
        if not entry.currency:
            return "-"
        return f"{money_text(from_minor(entry.debits_minor or 0, entry.currency))} {entry.currency}"

    @admin.display(description="Reference", ordering="reference")
    def reference_link(self, entry: LedgerEntry) -> str:
        return reference_link(entry.reference)

    @admin.display(description="Reverses")
    def reverses_link(self, entry: LedgerEntry) -> str:
        return admin_link(entry.reverses) if entry.reverses_id else "-"

    @admin.display(description="Reversed by")
    def reversals_links(self, entry: LedgerEntry) -> str:
        reversals = list(entry.reversals.order_by("pk"))
        if not reversals:
            return "-"
        return format_html_join(", ", "{}", ((admin_link(r),) for r in reversals))
