"""Console pages for the disputes queue: the queue, the side-by-side page where ops compare the CPO's
breakdown with ours, and the accept / contest / credit actions (always through billing.services.disputes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Case, QuerySet, Value, When
from django.db.models.functions import Abs
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone

from billing.admin_links import ReadOnly, admin_link, audit_of
from billing.models import CdrAudit, Dispute, DisputeEvent, PartnerTerms
from billing.services import disputes as dispute_services
from billing.services.audit import agrees
from emsp.services.staff import staff_action_record

# (key in the CDR / in our PriceResult.to_dict(), label) — the rows of the side-by-side table.
BREAKDOWN_ROWS = (
    ("total_cost", "Total"),
    ("total_energy_cost", "Energy"),
    ("total_time_cost", "Time"),
    ("total_parking_cost", "Parking"),
    ("total_fixed_cost", "Fixed"),
    ("total_reservation_cost", "Reservation"),
)


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def amount_text(value: Decimal | None, *, signed: bool = False) -> str:
    """An amount for the page: at least 2 and at most 4 decimals (exact values can carry 12)."""
    if value is None:
        return "—"
    if value.as_tuple().exponent < -4:  # type: ignore[operator]
        value = value.quantize(Decimal("0.0001"))
    if value.as_tuple().exponent > -2:  # type: ignore[operator]
        value = value.quantize(Decimal("0.01"))
    text = format(value, "f")
    return f"+{text}" if signed and value > 0 else text


@dataclass(frozen=True)
class BreakdownRow:
    key: str
    label: str
    cpo_excl: Decimal | None
    cpo_incl: Decimal | None
    ours_excl: Decimal | None
    ours_incl: Decimal | None
    diff_excl: Decimal | None
    diff_incl: Decimal | None
    beyond_tolerance: bool

    def cells(self) -> list[str]:
        amounts = (self.cpo_excl, self.cpo_incl, self.ours_excl, self.ours_incl)
        return [amount_text(a) for a in amounts] + [
            amount_text(self.diff_excl, signed=True),
            amount_text(self.diff_incl, signed=True),
        ]


def _beyond(
    values: tuple[Decimal | None, Decimal | None, Decimal | None],
    diff: Decimal | None,
    currency: str,
    tolerance: Decimal,
) -> bool:
    """Is this part of the bill a difference, as the audit weighs one (audit.agrees: within the tolerance, or our
    price rounded to the currency's minor unit)? A bill in whole yen that the audit accepted had been highlighted."""
    if diff is None:
        return False
    theirs, mine = values[0], values[1]
    if theirs is not None and mine is not None:
        return not agrees(theirs, mine, currency, tolerance)
    return abs(diff) > tolerance


def breakdown_rows(audit: CdrAudit, tolerance: Decimal) -> list[BreakdownRow]:
    """The CPO's (sub-)totals next to ours. Differences are the audit's own (CPO minus ours) where it stated
    them; a dimension we did not bill counts as 0 when the CPO billed it, as in the audit."""
    stated = audit.our_breakdown.get("differences") or {}
    rows = []
    for key, label in BREAKDOWN_ROWS:
        cpo = audit.cpo_breakdown.get(key)
        ours = audit.our_breakdown.get(key)
        if not isinstance(cpo, dict) and not isinstance(ours, dict):
            continue
        cpo = cpo if isinstance(cpo, dict) else {}
        ours = ours if isinstance(ours, dict) else {}
        values = {
            part: (_decimal(cpo.get(part)), _decimal(ours.get(part)), _decimal(stated.get(f"{key}.{part}")))
            for part in ("excl_vat", "incl_vat")
        }
        diffs = {}
        for part, (theirs, mine, given) in values.items():
            if given is None and theirs is not None and audit.our_breakdown:
                given = theirs - (mine if mine is not None else Decimal("0"))
            diffs[part] = given
        rows.append(
            BreakdownRow(
                key=key,
                label=label,
                cpo_excl=values["excl_vat"][0],
                cpo_incl=values["incl_vat"][0],
                ours_excl=values["excl_vat"][1],
                ours_incl=values["incl_vat"][1],
                diff_excl=diffs["excl_vat"],
                diff_incl=diffs["incl_vat"],
                beyond_tolerance=any(_beyond(values[part], d, audit.currency, tolerance) for part, d in diffs.items()),
            )
        )
    return rows


def dimension_lines(audit: CdrAudit) -> list[dict[str, Any]]:
    """Our per-dimension lines (dimension, tariff element, price, billed volume, cost) for the detail page."""
    lines = []
    for dimension, entries in (audit.our_breakdown.get("breakdown") or {}).items():
        for entry in entries or []:
            cost = entry.get("cost") or {}
            lines.append(
                {**entry, "dimension": dimension, "excl_vat": cost.get("excl_vat"), "incl_vat": cost.get("incl_vat")}
            )
    return lines


def credit_limit(dispute: Dispute) -> Decimal:
    """The most a credit may be: what the CPO billed above our price, less what its credit CDRs for the charge
    already gave back (billing.services.disputes.dispute_credit_limit, which the service enforces too)."""
    return dispute_services.dispute_credit_limit(dispute)


class DisputeActionForm(forms.Form):
    """The form of one action on a dispute; its cleaned fields are the keyword arguments of the service call."""

    def __init__(self, *args: Any, dispute: Dispute, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispute = dispute


class DisputeNoteForm(DisputeActionForm):
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), max_length=2000)


class DisputeContestForm(DisputeActionForm):
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        max_length=2000,
        help_text="Why we contest: what the CPO is asked to correct.",
    )


class DisputeCreditForm(DisputeActionForm):
    # The model's column: 14 digits, 4 decimals; more precision is refused, not silently rounded.
    amount = forms.DecimalField(max_digits=14, decimal_places=4, min_value=Decimal("0.0001"), label="Credit excl. VAT")
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), max_length=2000)

    def __init__(self, *args: Any, dispute: Dispute, **kwargs: Any) -> None:
        super().__init__(*args, dispute=dispute, **kwargs)
        self.fields[
            "amount"
        ].help_text = (
            f"At most {credit_limit(dispute)} {dispute.currency} (the CPO's amount minus ours, less its credit CDRs)."
        )

    def clean_amount(self) -> Decimal:
        amount: Decimal = self.cleaned_data["amount"]
        limit = credit_limit(self.dispute)
        if limit <= 0 and self.dispute.difference > 0:
            raise forms.ValidationError(
                "The CPO's credit CDRs already gave back the disputed difference: there is nothing left to credit. "
                "Accept instead."
            )
        if limit <= 0:
            raise forms.ValidationError(
                "The CPO billed no more than our price: there is nothing to credit. Accept or contest instead."
            )
        if amount > limit:
            raise forms.ValidationError(
                f"A credit of {amount} is more than the disputed difference left to credit ({limit} "
                f"{self.dispute.currency}, after the CPO's credit CDRs)."
            )
        return amount


class DisputeAgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"
    # (value, label, older than days, younger than days)
    BANDS = (
        ("lt1", "less than a day", None, 1),
        ("1-7", "1–7 days", 1, 7),
        ("7-30", "7–30 days", 7, 30),
        ("gt30", "more than 30 days", 30, None),
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _, _ in self.BANDS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> QuerySet[Dispute]:
        now = timezone.now()
        for value, _, older, younger in self.BANDS:
            if self.value() != value:
                continue
            if older is not None:
                queryset = queryset.filter(opened_at__lte=now - timedelta(days=older))
            if younger is not None:
                queryset = queryset.filter(opened_at__gt=now - timedelta(days=younger))
        return queryset


class AmountAtStakeFilter(admin.SimpleListFilter):
    title = "amount at stake (|CPO − ours|, dispute currency)"
    parameter_name = "stake"
    BANDS = (
        ("lt1", "under 1", None, Decimal("1")),
        ("1-10", "1 to 10", Decimal("1"), Decimal("10")),
        ("10-100", "10 to 100", Decimal("10"), Decimal("100")),
        ("gte100", "100 and more", Decimal("100"), None),
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _, _ in self.BANDS]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> QuerySet[Dispute]:
        for value, _, low, high in self.BANDS:
            if self.value() != value:
                continue
            queryset = queryset.annotate(stake=Abs("difference"))
            if low is not None:
                queryset = queryset.filter(stake__gte=low)
            if high is not None:
                queryset = queryset.filter(stake__lt=high)
        return queryset


class DisputeEventInline(ReadOnly, admin.TabularInline):
    """The dispute's history; written only by billing.services.disputes, never edited."""

    model = DisputeEvent
    fields = ("at", "user", "action", "from_state", "to_state", "note")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "history"


@admin.register(Dispute)
class DisputeAdmin(admin.ModelAdmin):
    change_form_template = "admin/billing/dispute/change_form.html"
    list_display = (
        "opened_at",
        "partner",
        "cdr_id",
        "state",
        "currency",
        "cpo_amount",
        "our_amount",
        "difference",
        "age_days",
    )
    list_filter = ("partner", "state", DisputeAgeFilter, AmountAtStakeFilter)
    search_fields = ("cdr__cdr_id", "cdr__session_id")
    list_select_related = ("partner", "cdr")
    # The queue: open and contested disputes first, the oldest of them on top.
    ordering = (
        Case(When(state__in=Dispute.OPEN_STATES, then=Value(0)), default=Value(1)).asc(),
        "opened_at",
        "pk",
    )
    actions = ["accept_cpo_amount", "contest"]
    inlines = [DisputeEventInline]
    fieldsets = (
        (None, {"fields": ("partner", "cdr_link", "state", "opened_at", "age_days", "resolved_at")}),
        ("Amounts excl. VAT", {"fields": ("currency", "cpo_amount", "our_amount", "difference", "credit_amount")}),
    )
    readonly_fields = (
        "partner",
        "cdr_link",
        "state",
        "opened_at",
        "age_days",
        "resolved_at",
        "currency",
        "cpo_amount",
        "our_amount",
        "difference",
        "credit_amount",
    )

    # Disputes are opened by the CDR audit and kept as a record; the console moves them only through the
    # workflow (billing.services.disputes), never by editing fields.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Dispute | None = None) -> bool:
        return False

    @admin.display(description="CDR", ordering="cdr__cdr_id")
    def cdr_id(self, dispute: Dispute) -> str:
        return dispute.cdr.cdr_id

    @admin.display(description="CDR")
    def cdr_link(self, dispute: Dispute) -> str:
        return admin_link(dispute.cdr)

    @admin.display(description="Age (days)", ordering="opened_at")
    def age_days(self, dispute: Dispute) -> int:
        return (timezone.now() - dispute.opened_at).days

    # -- detail page ---------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        extra = [
            path("<int:object_id>/accept/", view(self.accept_view), name="billing_dispute_accept"),
            path("<int:object_id>/contest/", view(self.contest_view), name="billing_dispute_contest"),
            path("<int:object_id>/credit/", view(self.credit_view), name="billing_dispute_credit"),
        ]
        return extra + super().get_urls()

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Every field is read-only: a POST here could only write an empty change. The actions have their URLs.
        if request.method == "POST":
            return HttpResponseNotAllowed(["GET"])
        dispute = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if dispute is not None:
            context.update(self.detail_context(request, dispute))
        return super().change_view(request, object_id, form_url, extra_context=context)

    def detail_context(self, request: HttpRequest, dispute: Dispute) -> dict[str, Any]:
        cdr = dispute.cdr
        audit = audit_of(cdr)
        terms = PartnerTerms.objects.filter(partner_id=dispute.partner_id).first()
        tolerance = terms.audit_tolerance if terms else PartnerTerms._meta.get_field("audit_tolerance").default
        can_act = self.has_change_permission(request, dispute) and dispute.state in Dispute.OPEN_STATES
        return {
            "dispute": dispute,
            "cdr": cdr,
            "audit": audit,
            "tolerance": tolerance,
            "breakdown_rows": breakdown_rows(audit, tolerance) if audit is not None else [],
            "dimension_lines": dimension_lines(audit) if audit is not None else [],
            "can_act": can_act,
            "can_contest": can_act and dispute.state == Dispute.State.OPEN,
            "accept_form": DisputeNoteForm(prefix="accept", dispute=dispute),
            "contest_form": DisputeContestForm(prefix="contest", dispute=dispute),
            "credit_form": DisputeCreditForm(prefix="credit", dispute=dispute),
            "credit_limit": credit_limit(dispute),
        }

    # -- actions on one dispute ----------------------------------------------------------------

    def _acting_on(self, request: HttpRequest, object_id: int) -> Dispute:
        dispute = get_object_or_404(Dispute, pk=object_id)
        if not self.has_change_permission(request, dispute):
            raise PermissionDenied
        return dispute

    def _done(self, dispute: Dispute) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:billing_dispute_change", args=[dispute.pk]))

    def _form_errors(self, request: HttpRequest, form: forms.Form) -> None:
        for field, errors in form.errors.items():
            label = form.fields[field].label if field in form.fields else ""
            for error in errors:
                messages.error(request, f"{label or field}: {error}" if field != "__all__" else error)

    def _act(
        self,
        request: HttpRequest,
        object_id: int,
        form_class: type[DisputeActionForm],
        prefix: str,
        success: str,
        move: Callable[..., Dispute],
    ) -> HttpResponse:
        """POST of one action's form: validate it, then `move(dispute=, user=, **cleaned fields)` through
        billing.services.disputes; `success` is formatted with the cleaned fields and the dispute's currency.
        Whatever happens, back to the dispute's page with a message."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        dispute = self._acting_on(request, object_id)
        form = form_class(request.POST, prefix=prefix, dispute=dispute)
        if not form.is_valid():
            self._form_errors(request, form)
            return self._done(dispute)
        data = form.cleaned_data
        try:
            # The DisputeEvent (the dispute's own history) and the staff audit record commit together.
            with transaction.atomic():
                moved = move(dispute=dispute, user=request.user, **data)
                self._record(request, prefix, moved, **data)
        except dispute_services.DisputeStateError:
            dispute.refresh_from_db()
            messages.error(
                request,
                f"Nothing changed: dispute {dispute.pk} is already {dispute.get_state_display().lower()} "
                f"({dispute.state}); someone may have moved it first.",
            )
        except ValueError as exc:
            messages.error(request, f"Nothing changed: {exc}.")
        else:
            done = success.format(**data, currency=dispute.currency)
            self.log_change(request, moved, done)
            messages.success(request, f"Dispute {moved.pk}: {done}.")
        return self._done(dispute)

    def accept_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return self._act(
            request,
            object_id,
            DisputeNoteForm,
            "accept",
            "accepted the CPO amount",
            dispute_services.dispute_accept_cpo_amount,
        )

    def contest_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return self._act(
            request,
            object_id,
            DisputeContestForm,
            "contest",
            "contested with the CPO",
            dispute_services.dispute_contest,
        )

    def credit_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return self._act(
            request,
            object_id,
            DisputeCreditForm,
            "credit",
            "resolved with a credit of {amount} {currency}",
            dispute_services.dispute_resolve_with_credit,
        )

    @staticmethod
    def _record(request: HttpRequest, verb: str, dispute: Dispute, **data: Any) -> None:
        """The staff audit record of a move, in its transaction. The state it moved from is the one the move
        read under the row's lock (its DisputeEvent), not the one this request loaded: another member of staff
        may have moved the dispute in between."""
        staff_action_record(
            user=request.user,
            verb=verb,
            obj=dispute,
            details={
                "from_state": dispute_services.dispute_moved_from(dispute),
                "to_state": dispute.state,
                "currency": dispute.currency,
                **data,
            },
        )

    # -- bulk actions on the queue -------------------------------------------------------------

    def _bulk(self, request: HttpRequest, queryset: QuerySet[Dispute], verb: str, call: Any, *, record: str) -> None:
        """`call(dispute)` on each selected dispute; `verb` for messages, `record` for the staff audit trail."""
        moved, refused = [], []
        for dispute in queryset.order_by("pk"):
            try:
                with transaction.atomic():
                    call(dispute)
                    self._record(request, record, dispute, note="from the queue")
            except dispute_services.DisputeStateError:
                refused.append(dispute)
            else:
                moved.append(dispute)
                self.log_change(request, dispute, verb)
        if moved:
            messages.success(request, f"{verb.capitalize()}: {len(moved)} dispute(s).")
        if refused:
            ids = ", ".join(str(d.pk) for d in refused)
            messages.warning(
                request, f"Left unchanged (already resolved, or not in a state that allows this): dispute(s) {ids}."
            )

    @admin.action(description="Accept the CPO amount", permissions=["change"])
    def accept_cpo_amount(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> None:
        self._bulk(
            request,
            queryset,
            "accepted the CPO amount",
            lambda d: dispute_services.dispute_accept_cpo_amount(dispute=d, user=request.user, note="from the queue"),
            record="accept",
        )

    @admin.action(description="Contest with the CPO", permissions=["change"])
    def contest(self, request: HttpRequest, queryset: QuerySet[Dispute]) -> None:
        self._bulk(
            request,
            queryset,
            "contested",
            lambda d: dispute_services.dispute_contest(dispute=d, user=request.user, note="from the queue"),
            record="contest",
        )
