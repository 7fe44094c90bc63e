"""The staff console for the domain: catalogue, drivers and tokens, reservations, bookings and reconciliation's
findings on them, sessions and commands, the outbox of messages to partners (one list of OCPI pushes and Beckn
callbacks, with *retry now*), and the audit trail of staff actions. Partners are onboarded in the OCPI console
(ocpi/admin.py)."""

from __future__ import annotations

from typing import Any

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from emsp import outbox
from emsp.admin_logs import LogAdminMixin
from emsp.admin_safety import JSON_FORM_FIELDS
from emsp.models import (
    Booking,
    BookingCheck,
    ChargingSession,
    Command,
    Connector,
    Delivery,
    DeliveryAttempt,
    Driver,
    Evse,
    Location,
    Reservation,
    StaffAction,
    Token,
)
from emsp.services import booking_checks
from emsp.services import tokens as token_services
from emsp.services.staff import staff_action_record
from emsp.time_zones import iana_zone


class EvseInline(admin.TabularInline):
    model = Evse
    fields = ("uid", "evse_id", "status", "max_power_w", "capabilities", "last_updated")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


class LocationForm(forms.ModelForm):
    # On the globe (OCPI GeoLocation: latitude -90 to 90, longitude -180 to 180); the model's plain FloatFields
    # took 999 and 1e308.
    latitude = forms.FloatField(min_value=-90, max_value=90)
    longitude = forms.FloatField(min_value=-180, max_value=180)

    class Meta:
        model = Location
        fields = (
            "name",
            "address",
            "city",
            "postal_code",
            "state",
            "country",
            "latitude",
            "longitude",
            "time_zone",
            "publish",
            "withdrawn_at",
        )

    def clean_time_zone(self) -> str:
        """An IANA zone, spelled as the database spells it ("europe/berlin" is repaired). A typo had been stored:
        the catalogue then showed hours and prices in UTC while a quote refused to price the site."""
        value = self.cleaned_data["time_zone"].strip()
        zone = iana_zone(value)
        if zone is None:
            raise forms.ValidationError(f"{value!r} is not an IANA time zone (e.g. Europe/Amsterdam).")
        return zone


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = ("location_id", "name", "city", "country", "partner", "evse_count", "last_updated", "withdrawn_at")
    list_filter = ("partner", "country", "publish", ("withdrawn_at", admin.EmptyFieldListFilter), "time_zone")
    search_fields = ("location_id", "name", "city", "address", "postal_code")
    form = LocationForm
    # What the CPO's updates are matched and ordered by is theirs (as a token's uid and type are ours): a
    # location edited to another id or party is a new one at the next pull (ocpi_key derives from them), and
    # one stamped in the future skips every update older than that stamp. Staff publish or withdraw it here.
    readonly_fields = (
        "partner",
        "country_code",
        "party_id",
        "location_id",
        "ocpi_key",
        "last_updated",
        "data",
        "received_at",
    )
    inlines = [EvseInline]
    list_select_related = ("partner",)

    # Locations come from CPOs only (OCPI): an add form without a partner and a CPO's ids saved no row
    # (IntegrityError).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Location]:
        return super().get_queryset(request).annotate(n_evses=Count("evses"))

    @admin.display(description="EVSEs", ordering="n_evses")
    def evse_count(self, location: Location) -> int:
        return getattr(location, "n_evses", 0)


class ConnectorInline(admin.TabularInline):
    model = Connector
    fields = ("connector_id", "standard", "format", "power_type", "max_electric_power", "tariff_ids")
    readonly_fields = fields
    extra = 0
    can_delete = False


class StatusAgeFilter(admin.SimpleListFilter):
    title = "status age"
    parameter_name = "status_age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("fresh", "updated in the last 15 min"), ("stale", "older than 15 min")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Evse]) -> QuerySet[Evse]:
        limit = timezone.now() - Evse.STATUS_STALE_AFTER
        if self.value() == "fresh":
            return queryset.filter(status_updated_at__gte=limit)
        if self.value() == "stale":
            return queryset.filter(status_updated_at__lt=limit)
        return queryset


@admin.register(Evse)
class EvseAdmin(admin.ModelAdmin):
    list_display = ("uid", "evse_id", "location", "status", "max_power_w", "status_updated_at")
    list_filter = (
        "status",
        StatusAgeFilter,
        "has_connectors",
        "location__partner",
        "connectors__standard",
        "connectors__power_type",
    )
    search_fields = ("uid", "evse_id", "location__name", "location__location_id", "location__city")
    # The CPO's: its uid (uid_key matches a CPO's update to it; edited, the next pull made a second EVSE), the
    # last_updated its updates are ordered by (a stamp in the year 9999 skipped every update after it), and its
    # coordinates (its own or its location's, as the CPO sent them; the catalogue's radius search reads them).
    readonly_fields = (
        "location",
        "uid",
        "uid_key",
        "latitude",
        "longitude",
        "last_updated",
        "data",
        "status_updated_at",
    )
    formfield_overrides = JSON_FORM_FIELDS  # capabilities: a NUL is a form error, not a database one
    inlines = [ConnectorInline]
    list_select_related = ("location",)

    # EVSEs come from CPOs only, within their locations (an add form without a location saved no row).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class TokenInline(admin.TabularInline):
    """The driver's tokens, read here and changed on their own page, whose save pushes them to every CPO: a
    change made in this table would reach no CPO, and a whitelisting CPO would go on taking a blocked card."""

    model = Token
    fields = ("uid", "type", "contract_id", "valid", "is_blocked", "whitelist", "expires_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Driver)
class DriverAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "phone", "wallet_balance", "currency", "is_blocked")
    search_fields = ("name", "email", "phone")
    list_filter = ("is_blocked",)
    inlines = [TokenInline]
    # The ledger holds a prepaid balance (driver:<id>:wallet); this column mirrors it. Money reaches a wallet
    # only as a posted top-up (manage.py wallet_top_up), never by editing a number. A driver's personal data is
    # erased by manage.py driver_erase, which sets erased_at. The currency is checked on billing's page of this
    # admin (billing/admin.py), which knows the currencies money is kept in.
    readonly_fields = ("wallet_balance", "erased_at")

    def save_model(self, request: HttpRequest, obj: Driver, form: Any, change: bool) -> None:
        # Blocking a driver makes each of their tokens not valid as we send it: every CPO hears of it.
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            if change and "is_blocked" in form.changed_data:
                token_services.driver_tokens_changed(driver=obj)


class TokenForm(forms.ModelForm):
    class Meta:
        model = Token
        fields = (
            "driver",
            "uid",
            "type",
            "contract_id",
            "visual_number",
            "issuer",
            "group_id",
            "valid",
            "whitelist",
            "language",
            "is_blocked",
            "expires_at",
            "allowed_partners",
        )

    # Checked against the model's rules only when staff change them: a token stored before those rules (emsp 0032)
    # stays editable. Its page had refused to block a stolen card for a tab in its untouched visual number; what
    # CPOs are sent of such a token is cleaned (ocpi/rendering.py::token_as_ocpi).
    CHECKED_WHEN_CHANGED = ("visual_number", "issuer", "language")

    def _get_validation_exclusions(self) -> set[str]:
        excluded = set(super()._get_validation_exclusions())
        if self.instance.pk is not None:
            excluded.update(name for name in self.CHECKED_WHEN_CHANGED if name not in self.changed_data)
        return excluded

    def clean_language(self) -> str:
        # "EN" is taken as "en" (the model takes ISO 639-1 as written: lower-case). Only ASCII is lowered: the
        # Kelvin sign (U+212A) lowers to an ASCII "k" and would pass.
        language = str(self.cleaned_data.get("language") or "")
        return language.lower() if language.isascii() else language


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
    form = TokenForm
    list_display = (
        "uid",
        "type",
        "driver",
        "contract_id",
        "valid",
        "is_blocked",
        "whitelist",
        "expires_at",
        "last_updated",
    )
    list_filter = ("type", "is_blocked", "valid", "whitelist")
    search_fields = ("uid", "contract_id", "visual_number", "driver__name", "driver__email")
    readonly_fields = ("last_updated",)
    actions = ["block", "unblock", "invalidate"]
    list_select_related = ("driver",)

    def get_readonly_fields(self, request: HttpRequest, obj: Token | None = None) -> tuple[str, ...]:
        # A token's identity at the CPOs is its (uid, type): changed here, only the new one was pushed and the old
        # stayed valid at every CPO (mod_tokens has no DELETE; a whitelisting CPO never asks us). A new identity
        # is a new token; the old one is invalidated (pushed as not valid).
        return ("last_updated", "uid", "type") if obj is not None else ("last_updated",)

    def save_model(self, request: HttpRequest, obj: Token, form: Any, change: bool) -> None:
        obj.last_updated = timezone.now()
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Every change reaches the CPOs (mod_tokens "Push"), once the partners it is restricted to are saved too;
        # the console saves a form in one transaction, so the token and its pushes commit together.
        super().save_related(request, form, formsets, change)
        token_services.token_changed(token=form.instance)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A CPO keeps a token we delete as valid, and sessions and CDRs name it: it is made invalid instead.
        return False

    @admin.action(description="Invalidate (pushed to every CPO)", permissions=["change"])
    def invalidate(self, request: HttpRequest, queryset: QuerySet[Token]) -> None:
        for token in queryset:
            token_services.token_update(token=token, valid=False)

    # They change the token (and push it to every CPO): the change permission, not merely view.
    @admin.action(description="Block (pushed to every CPO)", permissions=["change"])
    def block(self, request: HttpRequest, queryset: QuerySet[Token]) -> None:
        for token in queryset:
            token_services.token_set_blocked(token=token, blocked=True)

    @admin.action(description="Unblock (pushed to every CPO)", permissions=["change"])
    def unblock(self, request: HttpRequest, queryset: QuerySet[Token]) -> None:
        for token in queryset:
            token_services.token_set_blocked(token=token, blocked=False)


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ("reservation_id", "evse", "token", "status", "start_at", "expiry_at")
    list_filter = ("status",)
    search_fields = ("reservation_id", "evse__uid", "token__uid")
    list_select_related = ("evse", "token")
    # Bookings make reservations and the CPO's answers move them on (emsp/services/bookings.py): each field is what
    # the CPO was told (its RESERVE_NOW: reservation_id, EVSE, token, expiry) or the bookkeeping of that exchange
    # (status, when the command is due, the no-show deadline). An edited reservation_id had gone out unchecked in
    # RESERVE_NOW and as authorization_reference, and on a RESERVED one made CANCEL_RESERVATION name a
    # reservation the CPO never had. Nothing here is staff's to set: a reservation ends with its booking's
    # cancellation, its no-show deadline or the CPO's word.
    readonly_fields = [f.name for f in Reservation._meta.fields]

    # An add form of read-only fields saved no row, and a reservation made here would be no booking's.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    # Deleted, a reservation the CPO holds would be one we can no longer cancel (its booking loses it).
    def has_delete_permission(self, request: HttpRequest, obj: Reservation | None = None) -> bool:
        return False


@admin.register(ChargingSession)
class ChargingSessionAdmin(admin.ModelAdmin):
    list_display = (
        "session_id",
        "partner",
        "status",
        "start_date_time",
        "kwh",
        "total_cost_excl_vat",
        "currency",
        "token_uid",
    )
    list_filter = ("status", "partner", "auth_method")
    search_fields = ("session_id", "token_uid", "authorization_reference", "ocpi_location_id", "evse_uid")
    readonly_fields = [f.name for f in ChargingSession._meta.fields]
    list_select_related = ("partner",)

    # Sessions come from CPOs only (OCPI): an add form of read-only fields saved an empty row (IntegrityError).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    list_display = ("created_at", "type", "partner", "status", "response_result", "result_type", "timeout_at", "error")
    list_filter = ("type", "status", "partner")
    search_fields = ("=uid", "authorization_reference")
    readonly_fields = [f.name for f in Command._meta.fields]
    list_select_related = ("partner",)

    # Commands are made where they are sent (emsp/services/commands.py): an add form of read-only fields saved
    # an empty row (IntegrityError).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class OpenBookingCheckInline(admin.TabularInline):
    model = BookingCheck
    verbose_name_plural = "open findings of reconciliation"
    fields = ("kind", "detail", "first_seen", "last_seen", "times_seen")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[BookingCheck]:
        return super().get_queryset(request).filter(resolved_at__isnull=True)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    """Bookings (Beckn orders) as they stand, read-only, with reconciliation's open findings."""

    list_display = ("order_id", "state", "evse", "connector_id", "payment_status", "created_at", "updated_at")
    list_filter = ("state", "payment_status", "evse__location__partner")
    search_fields = ("=order_id", "evse__uid", "token__uid")
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Booking._meta.fields]
    list_select_related = ("evse",)
    inlines = [OpenBookingCheckInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Booking | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Booking | None = None) -> bool:
        return False


class CheckStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "open"), ("repaired", "repaired"), ("resolved", "resolved (gone or by staff)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[BookingCheck]) -> QuerySet[BookingCheck]:
        if self.value() == "open":
            return queryset.filter(resolved_at__isnull=True)
        if self.value() == "repaired":
            return queryset.filter(repaired=True)
        if self.value() == "resolved":
            return queryset.filter(resolved_at__isnull=False, repaired=False)
        return queryset


@admin.register(BookingCheck)
class BookingCheckAdmin(admin.ModelAdmin):
    """Reconciliation's findings (emsp/services/booking_checks.py): what it repaired, and what waits for staff.
    *Check again* reruns the check of the bookings (reading the CPO's lists now); *mark resolved* closes a
    finding staff have dealt with (that kind is then not listed again for the booking)."""

    list_display = ("last_seen", "kind", "booking_link", "partner", "detail", "times_seen", "resolution")
    list_filter = (CheckStateFilter, "kind", "booking__evse__location__partner")
    search_fields = ("=booking__order_id", "detail")
    date_hierarchy = "last_seen"
    readonly_fields = [f.name for f in BookingCheck._meta.fields]
    list_select_related = ("booking__evse__location__partner",)
    actions = ["check_again", "mark_resolved"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: BookingCheck | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: BookingCheck | None = None) -> bool:
        return False

    def has_recheck_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("emsp.recheck_bookingcheck")

    @admin.display(description="booking", ordering="booking__order_id")
    def booking_link(self, check: BookingCheck) -> str:
        url = reverse("admin:emsp_booking_change", args=[check.booking_id])
        return format_html('<a href="{}">{}</a>', url, check.booking.order_id)

    @admin.display(description="CPO", ordering="booking__evse__location__partner__name")
    def partner(self, check: BookingCheck) -> Any:
        return check.booking.evse.location.partner

    @admin.action(description="Check again now (reads the CPO's lists)", permissions=["recheck"])
    def check_again(self, request: HttpRequest, queryset: QuerySet[BookingCheck]) -> None:
        booking_ids = sorted(set(queryset.values_list("booking_id", flat=True)))
        still_open = 0
        for booking_id in booking_ids:
            checks = booking_checks.booking_reconcile(booking=booking_id, force_pull=True)
            still_open += sum(1 for c in checks if c.is_open)
            booking = Booking.objects.get(pk=booking_id)
            staff_action_record(user=request.user, verb="recheck", obj=booking, details={"state": booking.state})
        messages.info(request, f"{len(booking_ids)} booking(s) checked again; {still_open} finding(s) still open.")

    @admin.action(description="Mark resolved", permissions=["recheck"])
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[BookingCheck]) -> None:
        found = list(queryset.filter(resolved_at__isnull=True))
        with transaction.atomic():
            count = booking_checks.booking_checks_resolve(checks=found, user=request.user)
            for check in found:
                staff_action_record(user=request.user, verb="resolve", obj=check, details={"kind": check.kind})
        messages.info(request, f"{count} finding(s) marked resolved.")


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("at", "http_status", "duration_ms", "error")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Delivery)
class DeliveryAdmin(LogAdminMixin, admin.ModelAdmin):
    """Every message we owe a partner, OCPI pushes and Beckn callbacks alike, in one list."""

    list_display = ("created_at", "channel", "partner", "target", "status", "attempts", "next_attempt_at", "last_error")
    # A big log (emsp/admin_logs.py): indexed filters, newest first, no date drill-down, no full count.
    list_filter = (("created_at", admin.DateFieldListFilter), "status", "channel", "partner")
    search_fields = ("target", "last_error")
    ordering = ("-created_at", "-pk")
    sortable_by = ("created_at",)
    list_select_related = ("partner",)
    readonly_fields = [f.name for f in Delivery._meta.fields]
    inlines = [DeliveryAttemptInline]
    actions = ["retry_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("emsp.retry_delivery")

    @admin.action(description="Retry now", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        # The rows outbox.retry_now will queue (it leaves those being sent or delivered alone), each recorded.
        due = list(queryset.exclude(status__in=(Delivery.Status.SENDING, Delivery.Status.DELIVERED)))
        with transaction.atomic():
            count = outbox.retry_now(Delivery.objects.filter(pk__in=[d.pk for d in due]))
            for delivery in due:
                staff_action_record(
                    user=request.user,
                    verb="retry",
                    obj=delivery,
                    details={"status": delivery.status, "attempts": delivery.attempts},
                )
        messages.info(request, f"{count} deliver{'y' if count == 1 else 'ies'} queued again.")


@admin.register(StaffAction)
class StaffActionAdmin(admin.ModelAdmin):
    """The audit trail: who did what to which partner, dispute, settlement or delivery. Read-only for
    everyone, administrators included; only the admin role holds its view permission (emsp/roles.py)."""

    list_display = ("at", "username", "verb", "object_type", "object_id", "object_repr")
    list_filter = ("verb", "object_type", "username")
    search_fields = ("username", "object_repr", "=object_id", "verb")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in StaffAction._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StaffAction | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: StaffAction | None = None) -> bool:
        return False


class LoginAttemptAdmin(AccessAttemptAdmin):
    """django-axes' list of failed logins, with its clean-up action working: axes (8.3) reads the time of the
    attempt being handled from the request, which only its login handlers set (AttributeError here)."""

    @admin.action(description="Clean up expired attempts")
    def cleanup_expired_attempts(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        request.axes_attempt_time = timezone.now()  # type: ignore[attr-defined]
        count = self.handler.clean_expired_user_attempts(request=request)
        self.message_user(request, f"Cleaned up {count} expired access attempts.")


if admin.site.is_registered(AccessAttempt):  # axes registers its pages unless AXES_ENABLE_ADMIN is off
    admin.site.unregister(AccessAttempt)
    admin.site.register(AccessAttempt, LoginAttemptAdmin)
