"""System checks of the platform's own settings (`manage.py check`, and every management command before it runs):
retention and pruning figures that would delete what must be kept, or prune nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error

from emsp import privacy


def retention_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """RETENTION_DAYS of every kind pruned (a whole number of days, at least 1; charging records at least their
    tax-law period), PRUNE_BATCH_SIZE and PRUNE_MAX_ROWS_PER_RUN (at least 1). The hourly prune skips such a
    kind (and goes by the default batch size or cap) and logs it; this stops a deploy before it."""
    errors: list[CheckMessage] = [
        Error(
            problem,
            hint="Set it in the environment (docs/operations.md, Retention); docs/privacy.md says why each is kept.",
            id="emsp.E001",
        )
        for problem in map(privacy.retention_problem, privacy.retention_kinds())
        if problem is not None
    ]
    errors += [
        Error(problem, hint="Set it in the environment (docs/operations.md, Retention).", id="emsp.E002")
        for problem in map(privacy.prune_setting_problem, privacy.PRUNE_DEFAULTS)
        if problem is not None
    ]
    return errors
