"""Data-quality findings per partner: what the normaliser fixed or dropped, kept for staff to chase."""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from emsp.models import Partner
from ocpi.models import DataQualityIssue
from ocpi.normalize import Issue


def record_issues(partner: Partner, module: str, found: Iterable[tuple[str, Issue]]) -> int:
    """Upsert (object id, issue) pairs in one statement; returns how many were recorded."""
    now = timezone.now()
    rows = {}
    for object_id, issue in found:
        key = (object_id[:120], issue.path[:200], issue.code[:40])
        rows[key] = DataQualityIssue(
            partner=partner,
            module=module,
            object_id=key[0],
            path=key[1],
            code=key[2],
            message=issue.message[:500],
            fixed=issue.fixed,
            first_seen=now,
            last_seen=now,
        )
    if rows:
        DataQualityIssue.objects.bulk_create(
            list(rows.values()),
            update_conflicts=True,
            unique_fields=["partner", "module", "object_id", "path", "code"],
            update_fields=["message", "fixed", "last_seen"],
            batch_size=1000,
        )
    return len(rows)
