"""Console pages for payments (finance): payments with their provider operations, providers' webhooks, and the
exceptions queue (failed payments, stuck operations, refunds pending, missing captures, unmatched payouts) with
its one action, retrying an operation (through billing.services.payments). Nothing here edits a payment."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from billing import finance
from billing.admin_ledger import money_text, reference_link
from billing.admin_links import ReadOnly, ReadOnlyAdmin
from billing.models import Payment, PaymentOperation, ProviderWebhook
from billing.services.ledger import from_minor
from emsp.services.staff import staff_action_record

logger = logging.getLogger(__name__)

# Retrying a provider call moves money: it takes the permission to act on payments. The finance role holds it
# (emsp/roles.py); reading payments is billing.view_payment.
RETRY_PERMISSION = "billing.change_payment"


def can_retry(request: HttpRequest) -> bool:
    return request.user.has_perm(RETRY_PERMISSION)


def minor_text(amount_minor: int | None, currency: str) -> str:
    return "" if amount_minor is None else f"{money_text(from_minor(amount_minor, currency))} {currency}"


def driver_payment_command(credit: finance.DriverCredit) -> str:
    """The command that books paying the driver what their account holds (billing/management/commands/
    settlement_payment.py), the amount as the command reads it (no thousands separators); the bank's reference
    is finance's to fill in."""
    if not credit.driver_id:
        return ""
    return (
        f"manage.py settlement_payment --party driver:{credit.driver_id} --paid {credit.amount:f} "
        f"--currency {credit.currency} --reference …"
    )


class PaymentOperationInline(ReadOnly, admin.TabularInline):
    model = PaymentOperation
    fields = (
        "kind",
        "amount",
        "status",
        "attempts",
        "error",
        "provider_reference",
        "idempotency_key",
        "created_at",
        "finished_at",
    )
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ("created_at", "pk")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A payment's operations are its history: whoever may read the payment reads them.
        return request.user.has_perm("billing.view_payment")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return (*self.fields, "retry") if can_retry(request) else self.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return self.get_fields(request, obj)

    @admin.display(description="Amount")
    def amount(self, operation: PaymentOperation) -> str:
        return minor_text(operation.amount_minor, operation.payment.currency)

    @admin.display(description="Retry")
    def retry(self, operation: PaymentOperation) -> str:
        if not finance.needs_retry(operation):
            return ""
        # A button of the page's own form (its CSRF token included) sent to the retry URL: forms don't nest.
        return format_html(
            '<button type="submit" class="button" formaction="{}" formmethod="post" name="next" value="{}">'
            "Retry {}</button>",
            reverse("admin:billing_payment_retry_operation", args=[operation.pk]),
            reverse("admin:billing_payment_change", args=[operation.payment_id]),
            operation.kind,
        )


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    change_list_template = "admin/billing/payments/payment_change_list.html"
    list_display = (
        "id",
        "created_at",
        "booking_order",
        "collected_by",
        "provider",
        "status",
        "authorised",
        "captured",
        "refunded",
        "billed",
        "failure",
    )
    list_filter = ("status", "provider", "collected_by", "purpose", "currency", "type")
    list_lookups = ("booking__id__exact",)  # a booking's payments (admin_ledger.reference_url); emsp/admin_lookups.py
    search_fields = (
        "=key",
        "=booking__order_id",
        "=checkout_id",
        "=provider_payment_id",
        "=bap_id",
        "=bap_transaction_id",
    )
    search_help_text = (
        "Our payment key, a booking's order id, a provider's checkout or payment id, a BAP id or its transaction id."
    )
    list_select_related = ("booking", "driver")
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-pk")
    inlines = [PaymentOperationInline]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "key",
                    "booking_order",
                    "purpose",
                    "driver",
                    "bap_id",
                    "journey",
                    "collected_by",
                    "type",
                    "provider",
                    "status",
                )
            },
        ),
        ("Amounts", {"fields": ("currency", "requested", "authorised", "captured", "refunded", "billed")}),
        (
            "At the provider",
            {"fields": ("checkout_id", "provider_payment_id", "url", "bap_transaction_id", "failure")},
        ),
        ("Ledger", {"fields": ("ledger_entries",)}),
        (None, {"fields": ("created_at", "updated_at")}),
    )
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

    @admin.display(description="Booking", ordering="booking__order_id")
    def booking_order(self, payment: Payment) -> str:
        return payment.booking.order_id if payment.booking_id else "-"

    @admin.display(description="Requested", ordering="requested_minor")
    def requested(self, payment: Payment) -> str:
        return minor_text(payment.requested_minor, payment.currency)

    @admin.display(description="Authorised", ordering="authorised_minor")
    def authorised(self, payment: Payment) -> str:
        return minor_text(payment.authorised_minor, payment.currency)

    @admin.display(description="Captured", ordering="captured_minor")
    def captured(self, payment: Payment) -> str:
        return minor_text(payment.captured_minor, payment.currency)

    @admin.display(description="Refunded", ordering="refunded_minor")
    def refunded(self, payment: Payment) -> str:
        return minor_text(payment.refunded_minor, payment.currency)

    @admin.display(description="Billed", ordering="billed_minor")
    def billed(self, payment: Payment) -> str:
        return minor_text(payment.billed_minor, payment.currency) or "-"

    @admin.display(description="Ledger entries")
    def ledger_entries(self, payment: Payment) -> str:
        url = reverse("admin:billing_ledgerentry_changelist")
        query = urlencode({"reference__exact": f"payment:{payment.pk}"})
        return format_html('<a href="{}?{}">entries referring to payment:{}</a>', url, query, payment.pk)

    # -- the exceptions queue and its action -----------------------------------------------------

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        extra = [
            path("exceptions/", view(self.exceptions_view), name="billing_payment_exceptions"),
            path(
                "operations/<int:operation_id>/retry/",
                view(self.retry_view),
                name="billing_payment_retry_operation",
            ),
        ]
        return extra + super().get_urls()

    def exceptions_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        found = finance.exceptions()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Payment exceptions",
            "exceptions": found,
            "can_retry": can_retry(request),
            "operations": [(op, minor_text(op.amount_minor, op.payment.currency)) for op in found.operations],
            "capture_missing": [
                (p, minor_text(p.authorised_minor, p.currency), minor_text(p.billed_minor, p.currency) or "—")
                for p in found.capture_missing
            ],
            "refunds": [(refund, reference_link(refund.reference)) for refund in found.pending_refunds],
            "refund_totals": [
                (currency, money_text(amount)) for currency, amount in found.refunds_pending_by_currency.items()
            ],
            "driver_credits": [
                (credit, money_text(credit.amount), driver_payment_command(credit)) for credit in found.driver_credits
            ],
            "driver_credit_totals": [
                (currency, money_text(amount)) for currency, amount in found.driver_credits_by_currency.items()
            ],
            "stuck_minutes": int(finance.OPERATION_STUCK_AFTER.total_seconds() // 60),
            "capture_hours": int(finance.CAPTURE_DUE_AFTER.total_seconds() // 3600),
            "shown": finance.EXCEPTIONS_SHOWN,
        }
        return TemplateResponse(request, "admin/billing/payments/exceptions.html", context)

    def retry_view(self, request: HttpRequest, operation_id: int) -> HttpResponse:
        """Retry one FAILED or stuck PENDING operation with its own idempotency key (the provider answers a key it
        has seen with its first result, so a retry never moves money twice)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not can_retry(request):
            raise PermissionDenied
        operation = get_object_or_404(PaymentOperation.objects.select_related("payment"), pk=operation_id)
        back = self._back(request)
        if not finance.needs_retry(operation):
            messages.warning(
                request,
                f"Nothing to retry: the {operation.kind} of payment {operation.payment_id} is {operation.status}"
                + (" and may still be answered." if operation.status == PaymentOperation.Status.PENDING else "."),
            )
            return back
        from billing.services.payments import operation_retry  # the payment service imports this app's models

        status_before = operation.status
        try:
            # Not in a transaction of ours: the service calls the provider, and its own transactions must commit
            # (the money moved) whatever happens to the audit record after.
            result = operation_retry(operation=operation, user=request.user)
        except Exception as error:  # a provider's or the service's refusal: shown, never a 500
            logger.warning("retry of payment operation %s failed", operation.pk, exc_info=True)
            messages.error(request, f"The {operation.kind} of payment {operation.payment_id} was not retried: {error}")
            return back
        staff_action_record(
            user=request.user,
            verb="retry",
            obj=operation.payment,
            details={
                "operation": operation.pk,
                "kind": operation.kind,
                "amount_minor": operation.amount_minor,
                "status_before": status_before,
            },
        )
        retried = result if isinstance(result, PaymentOperation) else operation
        retried.refresh_from_db()
        succeeded = retried.status == PaymentOperation.Status.SUCCEEDED
        why = f" ({retried.error})" if retried.error and not succeeded else ""
        messages.add_message(
            request,
            messages.SUCCESS if succeeded else messages.WARNING,
            f"Retried the {retried.kind} of payment {retried.payment_id}: {retried.status}{why}.",
        )
        return back

    def _back(self, request: HttpRequest) -> HttpResponseRedirect:
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = reverse("admin:billing_payment_exceptions")
        return HttpResponseRedirect(target)


@admin.register(ProviderWebhook)
class ProviderWebhookAdmin(ReadOnlyAdmin):
    list_display = ("received_at", "provider", "type", "event_id", "processed_at", "outcome")
    list_filter = ("provider", "type")
    search_fields = ("=event_id",)
    date_hierarchy = "received_at"
    ordering = ("-received_at", "-pk")
    readonly_fields = ("provider", "event_id", "type", "received_at", "processed_at", "outcome", "payload")
    fields = readonly_fields
