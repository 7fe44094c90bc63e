"""Staff console for Beckn: the subscribers (BAPs, BGs) whose signatures we accept, trusted by hand or
seen in the registry."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest

from beckn import registry
from beckn.models import BecknSubscriber, DriverFeedback
from beckn.signing import KeyFormatError, load_public_key
from emsp.admin_safety import JSON_FORM_FIELDS
from emsp.services.staff import form_changes, staff_action_record


class BecknSubscriberForm(forms.ModelForm):
    # Longer than the column so a pasted private key or hex string reaches clean_signing_public_key and gets
    # the explanation below rather than a bare "at most 64 characters".
    signing_public_key = forms.CharField(
        max_length=1000, help_text="The subscriber's Ed25519 signing public key: 32 bytes in base64 (44 characters)."
    )

    class Meta:
        model = BecknSubscriber
        fields = (
            "subscriber_id",
            "unique_key_id",
            "type",
            "signing_public_key",
            "trusted",
            "status",
            "valid_from",
            "valid_until",
            "subscriber_url",
            "domains",
        )

    def clean_signing_public_key(self) -> str:
        value = "".join(self.cleaned_data["signing_public_key"].split())
        try:
            load_public_key(value)
        except KeyFormatError as exc:
            hint = " It looks like a 64-byte private key: ask for the public key only." if len(value) == 88 else ""
            raise forms.ValidationError(
                "Enter the subscriber's Ed25519 signing public key: 32 bytes in base64 (44 characters, e.g. "
                f"awGPjRK6i/Vg/lWr+0xObclVxlwZXvTjWYtlu6NeOHk=). This one is not: {exc}.{hint}"
            ) from exc
        return value

    def clean_subscriber_id(self) -> str:
        value = self.cleaned_data["subscriber_id"].strip()
        if "|" in value:
            raise forms.ValidationError("A subscriber id cannot contain '|' (it separates the parts of keyId).")
        return value

    def clean_unique_key_id(self) -> str:
        value = self.cleaned_data["unique_key_id"].strip()
        if "|" in value:
            raise forms.ValidationError("A unique key id cannot contain '|' (it separates the parts of keyId).")
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        valid_from, valid_until = cleaned.get("valid_from"), cleaned.get("valid_until")
        if valid_from is not None and valid_until is not None and valid_from > valid_until:
            self.add_error("valid_until", "A key is valid until a time after it is valid from.")
        return cleaned


@admin.register(BecknSubscriber)
class BecknSubscriberAdmin(admin.ModelAdmin):
    form = BecknSubscriberForm
    formfield_overrides = JSON_FORM_FIELDS  # domains: a NUL is a form error, not a database one
    list_display = ("subscriber_id", "unique_key_id", "type", "status", "trusted", "valid_until", "last_lookup_at")
    list_filter = ("trusted", "type", "status")
    search_fields = ("subscriber_id", "unique_key_id", "subscriber_url")
    readonly_fields = ("last_lookup_at", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("subscriber_id", "unique_key_id", "type", "signing_public_key", "trusted", "status")}),
        ("Validity", {"fields": ("valid_from", "valid_until")}),
        ("Details", {"fields": ("subscriber_url", "domains", "last_lookup_at", "created_at", "updated_at")}),
    )

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # Rows added here are staff-entered, hence trusted; registry lookups create the others.
        return {"trusted": True, **super().get_changeform_initial_data(request)}

    # Whose signatures we accept is a staff decision worth an audit record (emsp.StaffAction), in the change
    # form's transaction. The keys are public keys: no secret reaches the details.
    def save_model(self, request: HttpRequest, obj: BecknSubscriber, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change or form.changed_data:
            details = (
                {"changed": form_changes(form)}
                if change
                else {"trusted": obj.trusted, "unique_key_id": obj.unique_key_id}
            )
            staff_action_record(user=request.user, verb="change" if change else "add", obj=obj, details=details)
        registry.forget_trusted()  # this process sees the change at once; others within seconds

    def delete_model(self, request: HttpRequest, obj: BecknSubscriber) -> None:
        staff_action_record(user=request.user, verb="delete", obj=obj, details={"unique_key_id": obj.unique_key_id})
        super().delete_model(request, obj)
        registry.forget_trusted()

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            for subscriber in queryset:
                staff_action_record(
                    user=request.user,
                    verb="delete",
                    obj=subscriber,
                    details={"unique_key_id": subscriber.unique_key_id},
                )
            super().delete_queryset(request, queryset)
        registry.forget_trusted()


@admin.register(DriverFeedback)
class DriverFeedbackAdmin(admin.ModelAdmin):
    """What drivers wrote on the feedback form on_rating links to: read, never edited."""

    list_display = ("created_at", "order_id", "rating", "comment")
    search_fields = ("order_id", "comment")
    list_filter = ("rating",)
    readonly_fields = ("order_id", "rating", "comment", "created_at")

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False
