"""The OCPI console: partners (register with a CPO, issue a Token A, rotate credentials, health page, pull now,
unregister) and the OCPI plumbing — the message log (searchable by request/correlation id), pull runs,
data-quality findings, our pushes and the credentials rotations we started."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import Count, Func, IntegerField, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from emsp.admin_logs import LogAdminMixin
from emsp.models import Partner, PartnerParty, Token, ci_key
from emsp.roles import PULL_PARTNER, VIEW_PARTNER_CREDENTIALS
from emsp.services.partners import party_holder, party_objects_moved
from emsp.services.staff import form_changes, staff_action_record
from ocpi import credentials, tasks
from ocpi.forms import RegisterWithPartnerForm
from ocpi.health import partner_health
from ocpi.models import CredentialsRotation, DataQualityIssue, OcpiMessage, PushDelivery, SyncRun
from ocpi.sync import sync_partner


class PartnerPartyForm(forms.ModelForm):
    class Meta:
        model = PartnerParty
        fields = ("country_code", "party_id", "status")

    # Upper-cased as the row is saved, so that the formset's own check sees two rows of one party as one (IN*CPX
    # and in*cpx had passed it and hit the database's constraint: a 500).
    def clean_country_code(self) -> str:
        return str(self.cleaned_data.get("country_code") or "").strip().upper()

    def clean_party_id(self) -> str:
        return str(self.cleaned_data.get("party_id") or "").strip().upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("status") == PartnerParty.Status.GRANTED and data.get("country_code") and data.get("party_id"):
            holder = party_holder(data["country_code"], data["party_id"])
            if holder is not None and holder.pk != self._partner_id(data):
                raise forms.ValidationError(f"{data['country_code']}*{data['party_id']} is granted to {holder}.")
        if data.get("country_code") and data.get("party_id") and self._partner_id(data) is not None:
            # One row a party for each partner (party_once_per_partner), which Django's own check skips where the
            # partner is not a field of the form (the inline, a row's change page): a form error, not a 500.
            others = PartnerParty.objects.filter(
                partner_id=self._partner_id(data),
                country_code=data["country_code"].strip().upper(),
                party_id=data["party_id"].strip().upper(),
            ).exclude(pk=self.instance.pk)
            if others.exists():
                raise forms.ValidationError(
                    f"{data['country_code']}*{data['party_id']} is already a party of this partner: change that row."
                )
        return data

    def _partner_id(self, data: dict[str, Any]) -> int | None:
        partner = data.get("partner")
        return partner.pk if partner is not None else self.instance.partner_id


class PartnerPartyListForm(PartnerPartyForm):
    class Meta(PartnerPartyForm.Meta):
        fields = ("partner", "country_code", "party_id", "status")


class PartnerForm(forms.ModelForm):
    """The partner's page. Its party is checked here, as the inline's further parties are: one granted to another
    connection (a hub's further party) or another partner's typed in another case (cpz for CPZ) had passed the
    form and been refused by the database, which the console then reported as a save made at the same moment."""

    class Meta:
        model = Partner
        fields = ("name", "country_code", "party_id")  # the admin's fieldsets decide the page's fields

    # Upper-cased as Partner.save stores them, so that Django's own check of partner_unique_party sees CPZ in cpz.
    def clean_country_code(self) -> str:
        return str(self.cleaned_data.get("country_code") or "").strip().upper()

    def clean_party_id(self) -> str:
        return str(self.cleaned_data.get("party_id") or "").strip().upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        country_code, party_id = data.get("country_code"), data.get("party_id")
        if country_code and party_id:
            # Every partner's own party is a granted row too (Partner.save): one question covers both.
            holder = party_holder(country_code, party_id)
            if holder is not None and holder.pk != self.instance.pk:
                # On the field: Django's constraint check then skips it rather than say it again.
                self.add_error("party_id", f"{country_code}*{party_id} is granted to {holder}.")
        return data


# More further parties than this (a hub's CPOs, or claims waiting for staff) and the partner page lists none
# inline: each row is several form fields, and a page of hundreds could no longer be saved at all (Django's
# DATA_UPLOAD_MAX_NUMBER_FIELDS: a 400, even to suspend the partner). They are on their own list then
# (PartnerPartyAdmin), searched, filtered and paged.
INLINE_PARTIES_MAX = 50


def party_saved(request: HttpRequest, partner: Partner, party: PartnerParty, *, was: str | None, was_key: str) -> None:
    """Staff saved a further party of `partner` (the partner page's inline or the parties' list): who granted it,
    the party's objects moved to it when it is newly held, the staff action recorded."""
    if party.status == PartnerParty.Status.GRANTED and not party.granted_by:
        party.granted_by = request.user.get_username()
    party.save()
    granted = party.status == PartnerParty.Status.GRANTED and was != PartnerParty.Status.GRANTED
    # Newly held: granted now, or a granted row edited to name another party.
    newly_held = party.status == PartnerParty.Status.GRANTED and (
        granted or was_key != ci_key(party.country_code, party.party_id)
    )
    details: dict[str, Any] = {"party": f"{party.country_code}*{party.party_id}", "status": party.status, "was": was}
    if newly_held:
        # The party's locations and tariffs held under the connection it came from are this one's now (in the
        # form's transaction, with the grant).
        moved = party_objects_moved(partner, party.country_code, party.party_id)
        details["moved"] = moved
        if any(moved.values()):
            messages.info(
                request,
                f"{party.country_code}*{party.party_id}: {moved['locations']} location(s) and "
                f"{moved['tariffs']} tariff(s) moved to {partner}.",
            )
    staff_action_record(
        user=request.user, verb="grant_party" if granted else "change_party", obj=partner, details=details
    )


def party_removed(request: HttpRequest, party: PartnerParty) -> None:
    party.delete()
    staff_action_record(
        user=request.user,
        verb="remove_party",
        obj=party.partner,
        details={"party": f"{party.country_code}*{party.party_id}", "was": party.status},
    )


def _changed_fields_saved(partner: Partner, form: Any) -> None:
    """Write the fields staff changed on the partner's page, and only those. The object is the one loaded when the
    request began: saved whole, it wrote back the state, the token hash and the token we send as they were then,
    and an unregister or a credentials rotation that committed meanwhile was undone (the old tokens accepted
    again). A changed party goes through Partner.save's own handling of it (its PartnerParty row, the party's
    objects moved to it), which update_fields naming it keeps."""
    columns = {field.name for field in Partner._meta.concrete_fields}
    changed = [name for name in form.changed_data if name in columns]
    if changed:
        partner.save(update_fields=[*changed, "updated_at"])


class PartnerPartyInline(admin.TabularInline):
    """The further parties this connection may act for (a hub's CPOs; its own party is set above). Ours to
    grant: parties a partner claims in its credentials arrive as REQUESTED and count only once GRANTED."""

    model = PartnerParty
    form = PartnerPartyForm
    fields = ("country_code", "party_id", "status", "granted_by", "created_at")
    readonly_fields = ("granted_by", "created_at")
    extra = 0
    verbose_name = "further party"
    verbose_name_plural = "further parties (granted by us, never taken from the partner's credentials)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[PartnerParty]:
        return super().get_queryset(request).filter(own=False)


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    form = PartnerForm
    list_display = ("name", "party", "role", "state", "version", "locations", "health_link")
    list_filter = ("state", "role")
    search_fields = ("name", "country_code", "party_id")
    actions = ["issue_token_a", "rotate_credentials", "pull_full_now", "unregister"]
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
        "further_parties",
    )
    inlines = [PartnerPartyInline]
    # Token values and hashes never reach a form or a page; see credentials_state for what may be shown.
    exclude = ("outgoing_token", "incoming_token_hash", "token_a_hash")
    fieldsets = (
        (None, {"fields": ("name", "country_code", "party_id", "role", "state", "health_link", "further_parties")}),
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

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # A callable model default (the sync interval's, read from settings) makes Django compare against a
        # hidden "initial-" input, which a form posted without it reads as changed: compare with the object.
        if db_field.name == "sync_interval_minutes":
            kwargs["show_hidden_initial"] = False
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    # Staff changes to partners are recorded (emsp.StaffAction); the admin's change form runs in one transaction,
    # so the records commit with the change.
    def save_model(self, request: HttpRequest, obj: Partner, form: Any, change: bool) -> None:
        if not change:
            super().save_model(request, obj, form, change)
            staff_action_record(user=request.user, verb="add", obj=obj, details={"party": obj.party_key})
            return
        _changed_fields_saved(obj, form)
        if form.changed_data:
            staff_action_record(user=request.user, verb="change", obj=obj, details={"changed": form_changes(form)})

    def has_delete_permission(self, request: HttpRequest, obj: Partner | None = None) -> bool:
        """Deleting a partner deletes what came through it: its sessions, CDRs, disputes and settlements would go
        with it. So only a partner that is not connected and has none of them (an onboarding abandoned, a
        mistake) can be deleted; one we roamed with is unregistered and kept."""
        if not super().has_delete_permission(request, obj):
            return False
        return obj is None or _deletable(obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # one at a time, each checked (has_delete_permission above)
        return actions

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        # Tokens restricted to the partner stop it being deleted (_deletable): say why, not a bare 403.
        partner = self.get_object(request, object_id)
        if partner is not None and super().has_delete_permission(request, partner):
            restricted = list(_tokens_restricted_to(partner).values_list("uid", flat=True)[:6])
            if restricted:
                named = ", ".join(restricted[:5]) + (", …" if len(restricted) > 5 else "")
                messages.error(
                    request,
                    f"{partner} can't be deleted: tokens are restricted to it ({named}). A token left with no "
                    "partner may charge at every CPO; change their partners first (each change is pushed).",
                )
                return HttpResponseRedirect(reverse("admin:emsp_partner_change", args=[partner.pk]))
        return super().delete_view(request, object_id, extra_context)

    def delete_model(self, request: HttpRequest, obj: Partner) -> None:
        staff_action_record(user=request.user, verb="delete", obj=obj, details={"party": obj.party_key})
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        with transaction.atomic():
            for partner in queryset:
                staff_action_record(user=request.user, verb="delete", obj=partner, details={"party": partner.party_key})
            super().delete_queryset(request, queryset)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        was = {f.instance.pk: f.initial.get("status") for f in formset.initial_forms}
        was_key = {
            f.instance.pk: ci_key(f.initial.get("country_code") or "", f.initial.get("party_id") or "")
            for f in formset.initial_forms
        }
        for party in formset.save(commit=False):
            party_saved(
                request,
                form.instance,
                party,
                was=was.get(party.pk) if party.pk else None,
                was_key=was_key.get(party.pk, ""),
            )
        for party in formset.deleted_objects:
            party_removed(request, party)

    def get_inline_instances(self, request: HttpRequest, obj: Partner | None = None) -> list[Any]:
        if obj is not None and obj.parties.filter(own=False).count() > INLINE_PARTIES_MAX:
            return []  # on their own list (further_parties links to it)
        return super().get_inline_instances(request, obj)

    @admin.display(description="Further parties")
    def further_parties(self, partner: Partner) -> str:
        if partner.pk is None:
            return "-"
        counts = dict(
            partner.parties.filter(own=False).values_list("status").annotate(n=Count("pk")).values_list("status", "n")
        )
        url = reverse("admin:emsp_partnerparty_changelist") + f"?partner__id__exact={partner.pk}&own__exact=0"
        return format_html(
            '<a href="{}">{} granted, {} claimed and waiting</a>',
            url,
            counts.get(PartnerParty.Status.GRANTED, 0),
            counts.get(PartnerParty.Status.REQUESTED, 0),
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
        return partner.party_key

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
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = RegisterWithPartnerForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                partner = credentials.register_with_partner(
                    versions_url=form.cleaned_data["versions_url"],
                    token_a=form.cleaned_data["token_a"],
                    party=form.cleaned_data["party"],
                )
            except credentials.RegistrationError as exc:
                form.add_error(None, f"Registration failed: {exc}")
            else:
                messages.success(request, f"Registered with {partner} (OCPI {partner.version}).")
                pull = bool(form.cleaned_data["pull_now"]) and self.has_pull_permission(request)
                staff_action_record(
                    user=request.user,
                    verb="register",
                    obj=partner,
                    details={
                        "versions_url": form.cleaned_data["versions_url"],
                        "version": partner.version,
                        "pull": pull,
                    },
                )
                if form.cleaned_data["pull_now"] and not pull:
                    messages.warning(request, "No first pull: you may not pull partners' data.")
                if pull:
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

    def has_pull_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(PULL_PARTNER)

    # Actions that change credentials need the change permission (a view-only role may not post them).
    @admin.action(description="Issue a new Token A (for a CPO that registers with us)", permissions=["change"])
    def issue_token_a(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        for listed in queryset:
            with transaction.atomic():
                # The row as it is now, locked: the list was loaded before, and a registration or an unregister
                # may have committed since. Saved whole, the listed object wrote back the state and tokens it was
                # loaded with (a connection just made lost its tokens), and a party changed meanwhile moved back.
                partner = Partner.objects.select_for_update().filter(pk=listed.pk).first()
                if partner is None:
                    continue
                token = partner.issue_token_a()
                partner.save(update_fields=["token_a_hash", "state", "updated_at"])
                # Never the token itself: the record says one was issued.
                staff_action_record(
                    user=request.user, verb="issue_token_a", obj=partner, details={"state": partner.state}
                )
            messages.warning(
                request,
                f"Token A for {partner}: {token} — give it with our versions URL {credentials.versions_url()}. "
                "It is shown once.",
            )

    # Not in a transaction: the new token must be visible to our web processes while the partner, before it
    # answers the PUT, reads our versions with it.
    @admin.action(description="Rotate credentials (PUT a new token to the partner)", permissions=["change"])
    def rotate_credentials(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        for partner in queryset:
            try:
                rotation = credentials.rotate_credentials(partner, started_by=request.user.get_username())
            except credentials.RotationError as exc:
                staff_action_record(
                    user=request.user,
                    verb="rotate_credentials",
                    obj=partner,
                    details={"version": partner.version, "outcome": "FAILED", "error": str(exc)[:500]},
                )
                messages.error(request, f"Rotation with {partner} failed: {exc}")
                continue
            # Never a token: the record says a rotation was done.
            staff_action_record(
                user=request.user,
                verb="rotate_credentials",
                obj=partner,
                details={"version": partner.version, "outcome": rotation.outcome},
            )
            messages.success(request, f"Credentials rotated with {partner} (OCPI {partner.version}).")

    # It calls the CPO and rewrites the catalogue: its own permission (ops and admin), not view (finance).
    @admin.action(description="Pull everything now (full sync)", permissions=["pull"])
    def pull_full_now(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        for partner in queryset:
            if partner.state != Partner.State.CONNECTED:
                messages.warning(request, f"{partner} is not connected: nothing to pull.")
                continue
            tasks.sync_partner.delay(partner.pk, True)
            staff_action_record(user=request.user, verb="pull", obj=partner, details={"full": True})
            messages.info(request, f"Full pull of {partner} queued.")

    @admin.action(description="Unregister (stop all communication)", permissions=["change"])
    def unregister(self, request: HttpRequest, queryset: QuerySet[Partner]) -> None:
        for partner in queryset:
            told = credentials.tell_partner_unregistered(partner)  # an HTTP call: outside the transaction
            with transaction.atomic():
                was = credentials.unregister(partner)  # as it was under the lock: the listed object is older
                staff_action_record(
                    user=request.user, verb="unregister", obj=partner, details={"was": was, "told": told}
                )
            messages.info(request, f"{partner} unregistered; {told}.")


def _deletable(partner: Partner) -> bool:
    if partner.state == Partner.State.CONNECTED:
        return False
    records = (partner.sessions, partner.cdrs, partner.disputes, partner.settlements, partner.commands)
    return not any(related.exists() for related in records) and not _tokens_restricted_to(partner).exists()


def _tokens_restricted_to(partner: Partner) -> QuerySet[Token]:
    """Our tokens restricted to this partner (alone or among others). The restriction rows go with a deleted
    partner, and a token left with none may charge anywhere (Token.allowed_status): one restricted to it alone
    was opened to every CPO, unpushed, while the CPOs holding it still had it as not valid."""
    return Token.objects.filter(allowed_partners=partner).order_by("uid")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records of what happened (messages, pulls, findings, rotations, pushes): read, never edited or deleted
    by hand; they go with their retention (manage.py prune)."""

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


class MessageModuleFilter(admin.SimpleListFilter):
    """The OCPI modules, named here: Django's own filter would read the distinct modules of every row."""

    title = "module"
    parameter_name = "module"
    MODULES = (
        "versions",
        "credentials",
        "hubclientinfo",
        "locations",
        "sessions",
        "cdrs",
        "tariffs",
        "tokens",
        "commands",
        "chargingprofiles",
    )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(m, m) for m in self.MODULES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[OcpiMessage]) -> QuerySet[OcpiMessage]:
        return queryset.filter(module=self.value()) if self.value() else queryset


class MessageOutcomeFilter(admin.SimpleListFilter):
    """Failed as the health page counts it (OcpiMessage.FAILED, a partial index) or not."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("failed", "failed (no answer, not 2xx, OCPI error)"), ("ok", "succeeded")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[OcpiMessage]) -> QuerySet[OcpiMessage]:
        if self.value() == "failed":
            return queryset.filter(OcpiMessage.FAILED)
        if self.value() == "ok":
            return queryset.exclude(OcpiMessage.FAILED)
        return queryset


@admin.register(OcpiMessage)
class OcpiMessageAdmin(LogAdminMixin, ReadOnlyAdmin):
    """Tens of millions of rows between prunes (emsp/admin_logs.py): newest first, filters on indexed columns
    only, search by exact request or correlation id (indexed; the URL is not searchable: that reads every row)."""

    list_display = (
        "created_at",
        "direction",
        "partner",
        "method",
        "module",
        "url",
        "http_status",
        "ocpi_status",
        "duration_ms",
    )
    list_filter = (
        ("created_at", admin.DateFieldListFilter),
        "partner",
        MessageModuleFilter,
        MessageOutcomeFilter,
        "direction",
    )
    search_fields = ("request_id__exact", "correlation_id__exact")
    search_help_text = "An exact X-Request-ID or X-Correlation-ID."
    ordering = ("-created_at", "-pk")
    sortable_by = ("created_at",)
    list_select_related = ("partner",)
    # Rendering is most of a page's time here: no action checkboxes (retention deletes, not staff), 50 rows.
    actions = None
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet[OcpiMessage]:
        rows = super().get_queryset(request)
        # The list shows no bodies: up to 8 kB each, read from TOAST for nothing.
        return rows.defer("request_body", "response_body", "error") if self.is_changelist(request) else rows


class _JsonKeyCount(Func):
    """The number of keys of a JSON object column, counted where it is stored."""

    template = "(SELECT count(*) FROM json_each(%(expressions)s))"
    output_field = IntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler, connection, template="(SELECT count(*) FROM jsonb_object_keys(%(expressions)s))", **extra
        )


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "partner",
        "module",
        "mode",
        "outcome",
        "pages",
        "received",
        "stored",
        "normalised",
        "rejected",
    )
    list_filter = ("outcome", "module", "mode", "partner")
    list_select_related = ("partner",)
    # `unlisted` holds a key for each object a pull did not list (a 100k-location CPO: MBs a run, and a page of
    # runs took a second to load): never read for the list, and on a run's page only counted, by the database.
    exclude = ("unlisted",)
    readonly_fields = ("unlisted_kept",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[SyncRun]:
        return super().get_queryset(request).defer("unlisted")

    @admin.display(description="unlisted")
    def unlisted_kept(self, run: SyncRun) -> str:
        count = SyncRun.objects.filter(pk=run.pk).values_list(_JsonKeyCount("unlisted"), flat=True).first()
        return f"{count or 0} objects it did not list and kept, for the next full pull to check"


@admin.register(DataQualityIssue)
class DataQualityIssueAdmin(ReadOnlyAdmin):
    list_display = ("last_seen", "partner", "module", "object_id", "path", "code", "fixed", "message")
    list_filter = ("partner", "module", "code", "fixed")
    search_fields = ("object_id", "path", "message")
    list_select_related = ("partner",)


@admin.register(CredentialsRotation)
class CredentialsRotationAdmin(ReadOnlyAdmin):
    """Rotations we started (console action or `manage.py ocpi_rotate`): who, when, and how each ended."""

    list_display = ("started_at", "partner", "outcome", "started_by", "finished_at", "error")
    list_filter = ("outcome", "partner")
    list_select_related = ("partner",)
    exclude = ("token_hash",)


@admin.register(PushDelivery)
class PushDeliveryAdmin(LogAdminMixin, ReadOnlyAdmin):
    """The OCPI part of the outbox (all deliveries, with *retry now*: the domain console's Deliveries)."""

    list_display = (
        "created_at",
        "partner",
        "module",
        "method",
        "path",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
    )
    list_filter = ("status", MessageModuleFilter, "partner")
    list_select_related = ("partner",)


@admin.register(PartnerParty)
class PartnerPartyAdmin(admin.ModelAdmin):
    """The parties of every connection: the further ones (a hub's CPOs, and the parties partners claimed, waiting
    for staff) are granted and removed here too, where a partner page holds too many to list inline
    (INLINE_PARTIES_MAX). A partner's own party is shown, and set on its page."""

    form = PartnerPartyListForm
    list_display = ("__str__", "partner", "status", "own", "granted_by", "created_at")
    list_filter = ("status", "own")
    list_lookups = ("partner__id__exact",)  # a partner's further parties (PartnerAdmin.further_parties)
    search_fields = ("country_code", "party_id", "partner__name")
    list_select_related = ("partner",)
    raw_id_fields = ("partner",)
    readonly_fields = ("granted_by", "created_at")
    actions = ["grant_selected", "remove_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: PartnerParty | None = None) -> Any:
        if obj is not None and obj.own:
            return ("partner", "country_code", "party_id", "status", *self.readonly_fields)
        # A party goes to another connection by a grant there (this one's removed), not by editing the row.
        return (*self.readonly_fields, "partner") if obj is not None else self.readonly_fields

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> HttpResponse:
        # An own party goes only with its partner (whose deletion cascades to it, so the permission itself stays).
        party = self.get_object(request, object_id)
        if party is not None and party.own:
            raise PermissionDenied("A partner's own party is set on its page.")
        return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # remove_selected records each removal
        return actions

    def save_model(self, request: HttpRequest, obj: PartnerParty, form: Any, change: bool) -> None:
        if change and (obj.own or not form.changed_data):
            return  # nothing changed (an own party's page is read-only): no grant to record
        was_key = ci_key(form.initial.get("country_code") or "", form.initial.get("party_id") or "") if change else ""
        party_saved(request, obj.partner, obj, was=form.initial.get("status") if change else None, was_key=was_key)

    def delete_model(self, request: HttpRequest, obj: PartnerParty) -> None:
        party_removed(request, obj)

    @admin.action(description="Grant the selected parties to their partners", permissions=["change"])
    def grant_selected(self, request: HttpRequest, queryset: QuerySet[PartnerParty]) -> None:
        granted, refused = 0, []
        for party in queryset.select_related("partner").exclude(status=PartnerParty.Status.GRANTED):
            was, was_key = party.status, ci_key(party.country_code, party.party_id)
            party.status, party.granted_by = PartnerParty.Status.GRANTED, ""
            try:
                with transaction.atomic():
                    party_saved(request, party.partner, party, was=was, was_key=was_key)
            except IntegrityError:
                refused.append(f"{party.country_code}*{party.party_id}")
                continue
            granted += 1
        messages.info(request, f"{granted} part{'y' if granted == 1 else 'ies'} granted.")
        if refused:
            messages.error(request, f"Granted to another connection already, not granted: {', '.join(refused)}.")

    @admin.action(
        description="Remove the selected parties (their partners may not act for them)", permissions=["delete"]
    )
    def remove_selected(self, request: HttpRequest, queryset: QuerySet[PartnerParty]) -> None:
        with transaction.atomic():
            parties = list(queryset.filter(own=False).select_related("partner"))  # an own party is set on its page
            for party in parties:
                party_removed(request, party)
        messages.info(request, f"{len(parties)} part{'y' if len(parties) == 1 else 'ies'} removed.")
