"""Console forms for OCPI partners: registering with a CPO that gave us a Token A."""

from __future__ import annotations

from django import forms


class RegisterWithPartnerForm(forms.Form):
    versions_url = forms.URLField(label="The CPO's versions URL", max_length=255, assume_scheme="https")
    token_a = forms.CharField(label="Token A from the CPO", max_length=64, strip=True)
    pull_now = forms.BooleanField(label="Run the first full pull now", required=False, initial=True)
