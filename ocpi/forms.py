"""Console forms for OCPI partners: registering with a CPO that gave us a Token A."""

from __future__ import annotations

from django import forms


class RegisterWithPartnerForm(forms.Form):
    versions_url = forms.URLField(label="The CPO's versions URL", max_length=255, assume_scheme="https")
    token_a = forms.CharField(label="Token A from the CPO", max_length=64, strip=True)
    party = forms.RegexField(
        label="The CPO's party (CC*PID)",
        regex=r"^[A-Za-z]{2}\*[A-Za-z0-9]{3}$",
        required=False,
        help_text="If given, the CPO must answer as this party, or nothing is registered.",
    )
    pull_now = forms.BooleanField(label="Run the first full pull now", required=False, initial=True)
