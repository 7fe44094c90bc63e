"""The staff console for the domain: partners (onboarding, health), catalogue, drivers and tokens,
reservations, sessions and commands."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from emsp.forms import RegisterWithPartnerForm
from emsp.models import ChargingSession, Command, Connector, Driver, Evse, Location, Partner, Reservation, Token
from emsp.roles import VIEW_PARTNER_CREDENTIALS
from emsp.services import tokens as token_services


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = ("name", "party", "role", "state", "version", "locations", "health_link")
    list_filter = ("state", "role")
    search_fields = ("name", "country_code", "party_id")
    actions = ["issue_token_a", "pull_full_now", "unregister"]
    readonly_fields = (
        "state",
        "version",
        "versions_url",
        "endpoints",
        "credentials_roles",
        "registered_at",
        "last_full_sync_at",
        "health_link",
        "credentials_state",
    )
    # Token values and hashes never reach a form or a page; see credentials_state for what may be shown.
    exclude = ("outgoing_token", "incoming_token_hash", "token_a_hash")
    fieldsets = (
        (None, {"fields": ("name", "country_code", "party_id", "role", "state", "health_link")}),
        (
            "OCPI connection",
            {
                "fields": (
                    "versions_url",
                    "version",
                    "endpoints",
                    "credentials_roles",
                    "registered_at",
                    "outgoing_token_base64",
                )
            },
        ),
        (
            "Pull sync",
            {"fields": ("sync_enabled", "sync_interval_minutes", "full_sync_interval_hours", "last_full_sync_at")},
        ),
        ("Contacts", {"fields": ("support_phone", "support_email", "website")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Partner]:
        return super().get_queryset(request).annotate(location_count=Count("locations"))

    def get_fieldsets(self, request: HttpRequest, obj: Partner | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or not request.user.has_perm(VIEW_PARTNER_CREDENTIALS):
            return fieldsets
        return (*fieldsets, ("Credentials", {"fields": ("credentials_state",)}))

    @admin.display(description="Credentials")
    def credentials_state(self, partner: Partner) -> str:
        """Whether each token is set, never its value: the last four characters of the token we send are
        enough to tell two apart, and hashes are not shown at all."""
        outgoing = f"set (…{partner.outgoing_token[-4:]})" if partner.outgoing_token else "not set"
        return format_html(
            "Token we send: {}<br>Token the partner sends us: {}<br>Token A: {}",
            outgoing,
            "set" if partner.incoming_token_hash else "not set",
            "issued, not used yet" if partner.token_a_hash else "none outstanding",
        )

    @admin.display(description="Party")
    def party(self, partner: Partner) -> str:
        return f"{partner.country_code}*{partner.party_id}"

    @admin.display(description="Locations", ordering="location_count")
    def locations(self, partner: Partner) -> int:
        return getattr(partner, "location_count", 0)

    @admin.display(description="Health")
    def health_link(self, partner: Partner) -> str:
        if not partner.pk:
            return "-"
        return format_html('<a href="{}">health</a>', reverse("admin:emsp_partner_health", args=[partner.pk]))

    def get_urls(self) -> list[Any]:
        extra = [
            path("register/", self.admin_site.admin_view(self.register_view), name="emsp_partner_register"),
            path("<int:pk>/health/", self.admin_site.admin_view(self.health_view), name="emsp_partner_health"),
        ]
        return extra + super().get_urls()

    def register_view(self, request: HttpRequest) -> HttpResponse:
        """Onboard a CPO that gave us its versions URL and a Token A (we initiate the handshake)."""
        from ocpi.credentials import RegistrationError, register_with_partner
        from ocpi.sync import sync_partner

        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = RegisterWithPartnerForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                partner = register_with_partner(
                    versions_url=form.cleaned_data["versions_url"], token_a=form.cleaned_data["token_a"]
                )
            except RegistrationError as exc:
                form.add_error(None, f"Registration failed: {exc}")
            else:
                messages.success(request, f"Registered with {partner} (OCPI {partner.version}).")
                if form.cleaned_data["pull_now"]:
                    runs = sync_partner(partner, full=True)
                    summary = ", ".join(
                        f"{r.module}: {r.stored} stored, {r.rejected} rejected ({r.outcome})" for r in runs
                    )
                    messages.info(request, f"First pull — {summary}")
                return HttpResponseRedirect(reverse("admin:emsp_partner_health", args=[partner.pk]))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Register with a CPO",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/emsp/partner/register.html", context)

    def health_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        from ocpi.health import partner_health

        partner = get_object_or_404(Partner, pk=pk)
        if not self.has_view_permission(request, partner):
            return HttpResponse(status=403)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Health of {partner}",
            "health": partner_health(partner),
            "opts": self.model._meta,
            "original": partner,
        }
        return TemplateResponse(request, "admin/emsp/partner/health.html", context)

    # Actions that change credentials need the change permission (a view-only role may not post them).
    @admin.action(description="Issue a new Token A (for a CPO that registers with us)", permissions=["change"])
    def issue_token_a(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        from ocpi.credentials import versions_url

        for partner in queryset:
            token = partner.issue_token_a()
            partner.save()
            messages.warning(
                request,
                f"Token A for {partner}: {token} — give it with our versions URL {versions_url()}. It is shown once.",
            )

    @admin.action(description="Pull everything now (full sync)")
    def pull_full_now(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        from ocpi.tasks import sync_partner

        for partner in queryset.filter(state=Partner.State.CONNECTED):
            sync_partner.delay(partner.pk, True)
            messages.info(request, f"Full pull of {partner} queued.")

    @admin.action(description="Unregister (stop all communication)", permissions=["change"])
    def unregister(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        from ocpi.credentials import unregister

        for partner in queryset:
            unregister(partner)
            messages.info(request, f"{partner} unregistered.")


class EvseInline(admin.TabularInline):
    model = Evse
    fields = ("uid", "evse_id", "status", "max_power_w", "capabilities", "last_updated")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Location)
class LocationAdmin(admin.ModelAdmin):
    list_display = ("location_id", "name", "city", "country", "partner", "evse_count", "last_updated", "withdrawn_at")
    list_filter = ("partner", "country", "publish", ("withdrawn_at", admin.EmptyFieldListFilter), "time_zone")
    search_fields = ("location_id", "name", "city", "address", "postal_code")
    readonly_fields = ("partner", "ocpi_key", "data", "received_at")
    inlines = [EvseInline]
    list_select_related = ("partner",)

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
        from datetime import timedelta

        from django.utils import timezone

        limit = timezone.now() - timedelta(minutes=15)
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
    readonly_fields = ("location", "data", "status_updated_at")
    inlines = [ConnectorInline]
    list_select_related = ("location",)


class TokenInline(admin.TabularInline):
    model = Token
    fields = ("uid", "type", "contract_id", "valid", "is_blocked", "whitelist", "expires_at")
    extra = 0
    show_change_link = True


@admin.register(Driver)
class DriverAdmin(admin.ModelAdmin):
    list_display = ("name", "email", "phone", "wallet_balance", "currency", "is_blocked")
    search_fields = ("name", "email", "phone")
    list_filter = ("is_blocked",)
    inlines = [TokenInline]


@admin.register(Token)
class TokenAdmin(admin.ModelAdmin):
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
    actions = ["block", "unblock"]
    list_select_related = ("driver",)

    def save_model(self, request: HttpRequest, obj: Token, form: Any, change: bool) -> None:
        # Every change reaches the CPOs (mod_tokens "Push"): go through the service, not a bare save.
        from django.utils import timezone

        from ocpi import push

        obj.last_updated = timezone.now()
        super().save_model(request, obj, form, change)
        push.token_changed(obj)

    @admin.action(description="Block (pushed to every CPO)")
    def block(self, request: HttpRequest, queryset: QuerySet[Token]) -> None:
        for token in queryset:
            token_services.token_set_blocked(token=token, blocked=True)

    @admin.action(description="Unblock (pushed to every CPO)")
    def unblock(self, request: HttpRequest, queryset: QuerySet[Token]) -> None:
        for token in queryset:
            token_services.token_set_blocked(token=token, blocked=False)


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ("reservation_id", "evse", "token", "status", "start_at", "expiry_at")
    list_filter = ("status",)
    search_fields = ("reservation_id", "evse__uid", "token__uid")
    list_select_related = ("evse", "token")


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


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    list_display = ("created_at", "type", "partner", "status", "response_result", "result_type", "timeout_at", "error")
    list_filter = ("type", "status", "partner")
    search_fields = ("=uid", "authorization_reference")
    readonly_fields = [f.name for f in Command._meta.fields]
    list_select_related = ("partner",)
