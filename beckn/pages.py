"""The pages our Beckn callbacks link to for people rather than apps: our terms (`STATIC_TERMS`, the cancellation
terms' `external_ref`) and the feedback form of on_rating. Their words come from templates/beckn/ (a deployment
overrides them with its own templates) and the figures from the settings, so they say what the platform does."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from beckn.models import DriverFeedback


def terms_page(request: HttpRequest) -> HttpResponse:
    """What a driver and an app agree to: payment, cancellation, refunds, settlement with apps, who we are."""
    return render(
        request,
        "beckn/terms.html",
        {
            "entity": settings.LEGAL_ENTITY_NAME,
            "address": settings.LEGAL_ENTITY_ADDRESS,
            "tax_id": settings.LEGAL_ENTITY_TAX_ID,
            "margin": settings.PAYMENT_AUTHORISATION_MARGIN_PERCENT,
            "phone": settings.EMSP_SUPPORT_PHONE,
            "email": settings.EMSP_SUPPORT_EMAIL,
        },
    )


class FeedbackForm(forms.Form):
    order_id = forms.CharField(max_length=40, required=False, label="Order (optional)")
    rating = forms.TypedChoiceField(
        choices=[("", "—"), *[(str(n), str(n)) for n in range(1, 6)]], coerce=int, required=False, empty_value=None
    )
    comment = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 5}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for name in ("order_id", "comment"):
            text = data.get(name) or ""
            if any(ord(c) < 32 and c not in "\n\r\t" for c in text):
                self.add_error(name, "control characters are not text")
        if not (data.get("rating") or (data.get("comment") or "").strip()):
            raise forms.ValidationError("give a rating or a comment")
        return data


@require_http_methods(["GET", "POST"])
def feedback_page(request: HttpRequest) -> HttpResponse:
    """The form on_rating links to: a rating and a comment, kept for staff; a thank-you once sent."""
    if request.method == "POST":
        form = FeedbackForm(request.POST)
        if form.is_valid():
            DriverFeedback.objects.create(
                order_id=form.cleaned_data["order_id"] or "",
                rating=form.cleaned_data["rating"],
                comment=form.cleaned_data["comment"] or "",
            )
            return render(request, "beckn/feedback.html", {"sent": True})
        return render(request, "beckn/feedback.html", {"form": form}, status=400)
    return render(
        request, "beckn/feedback.html", {"form": FeedbackForm(initial={"order_id": request.GET.get("order", "")[:40]})}
    )
