"""Data-quality findings per partner: what the normaliser fixed or dropped, kept for staff to chase."""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from emsp import bulk
from emsp.models import Partner
from ocpi.models import DataQualityIssue
from ocpi.normalize import Issue
from ocpi.redact import storable

COLUMNS = ("partner_id", "module", "object_id", "path", "code", "message", "fixed", "first_seen", "last_seen")


def record_issues(partner: Partner, module: str, found: Iterable[tuple[str, Issue]]) -> int:
    """Upsert findings in one statement, one row per (object, code): the first path is kept and the
    message says how many more places had the same problem (a feed in kW repeats it per connector)."""
    now = timezone.now()
    grouped: dict[tuple[str, str], list[Issue]] = {}
    for object_id, issue in found:
        grouped.setdefault((object_id[:120], issue.code[:40]), []).append(issue)
    rows = []
    for (object_id, code), issues in grouped.items():
        first = issues[0]
        message = first.message if len(issues) == 1 else f"{first.message} (and {len(issues) - 1} more)"
        fixed = all(i.fixed for i in issues)
        rows.append(
            (
                partner.pk,
                module,
                storable(object_id),
                storable(first.path[:200]),
                code,
                storable(message[:500]),
                fixed,
                now,
                now,
            )
        )
    bulk.upsert(
        DataQualityIssue,
        COLUMNS,
        rows,
        conflict=("partner_id", "module", "object_id", "code"),
        update=("path", "message", "fixed", "last_seen"),
    )
    return len(rows)
