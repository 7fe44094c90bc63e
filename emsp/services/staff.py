"""The audit trail of staff actions: one StaffAction row for each thing a staff member does to a partner,
dispute, settlement, delivery or Beckn subscriber in the console (the console pages call this)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from django.db import models

from emsp.models import StaffAction

REDACTED = "[redacted]"
# Keys whose values are credentials or could be: never stored in details, whatever a caller passes.
_SECRET_KEYS = frozenset({"token", "token_a", "token_b", "outgoing_token", "credentials", "authorization"})
_SECRET_PARTS = ("password", "secret", "private", "_hash")


def staff_action_record(
    *, user: Any, verb: str, obj: models.Model, details: Mapping[str, Any] | None = None
) -> StaffAction:
    """Record that `user` did `verb` (e.g. "pull", "accept", "export") to `obj`, with `details` (JSON;
    secrets are redacted). Call it in the transaction of the change where there is one."""
    authenticated = bool(getattr(user, "is_authenticated", False))
    return StaffAction.objects.create(
        user=user if authenticated else None,
        username=user.get_username() if authenticated else "",
        verb=verb,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk)[:64],
        object_repr=str(obj)[:200],
        details=_jsonable(dict(details or {})),
    )


def form_changes(form: Any) -> dict[str, list[Any]]:
    """What a saved ModelForm changed: {field: [before, after]}, for the details of a "change" record."""
    changes = {}
    for name in form.changed_data:
        before = form.initial.get(name)
        after = form.cleaned_data.get(name)
        if isinstance(after, models.Model):
            after = after.pk
        changes[name] = [before, after]
    return changes


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered in _SECRET_KEYS or any(part in lowered for part in _SECRET_PARTS)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): REDACTED if is_secret_key(str(k)) else _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)  # Decimal amounts, model instances, anything else: as text
