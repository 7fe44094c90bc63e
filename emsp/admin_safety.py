"""Console form fields that refuse what the database can't store: a JSON value holding a NUL (`"\\u0000"`,
valid JSON) passed the admin's JSON field and failed on PostgreSQL, whose jsonb refuses it (a server error,
not a form error), and JSON nested past what Python decodes was one on any database. Used through
`formfield_overrides = JSON_FORM_FIELDS` on each admin with an editable JSON field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models
from django.forms.fields import InvalidJSONInput


def holds_nul(value: Any) -> bool:
    """Does a decoded JSON value hold a NUL in any string, object key included? Walked without recursion: the
    value may nest as deep as the decoder allows."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


class NulFreeJSONField(forms.JSONField):
    """A JSON form field whose value holds no NUL anywhere (a form error instead)."""

    default_error_messages = {
        "nul": "JSON text here can't contain a NUL character (\\u0000).",
        "deep": "This JSON nests too deeply.",
    }

    def to_python(self, value: Any) -> Any:
        try:
            decoded = super().to_python(value)
        except RecursionError:  # nested past Python's recursion limit: the decoder gives up
            raise forms.ValidationError(self.error_messages["deep"], code="deep") from None
        if holds_nul(decoded):
            raise forms.ValidationError(self.error_messages["nul"], code="nul")
        return decoded

    def bound_data(self, data: Any, initial: Any) -> Any:
        # Decoded again to show the form with its error, deeper in the stack (the template's rendering): 900
        # nested arrays, refused above, failed there.
        try:
            return super().bound_data(data, initial)
        except RecursionError:
            return InvalidJSONInput(data)


JSON_FORM_FIELDS: dict[type[models.Field], dict[str, Any]] = {models.JSONField: {"form_class": NulFreeJSONField}}
