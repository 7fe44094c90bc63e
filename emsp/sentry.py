"""Optional error reports to Sentry (SENTRY_DSN): unhandled exceptions of web requests and Celery tasks, and
ERROR log lines, tagged with the request and correlation ids the log lines carry (emsp/logs.py), masked the
same way, without personal data. emsp/settings.py calls init_sentry() only when SENTRY_DSN is set."""

from __future__ import annotations

from typing import Any

from emsp.logs import current_ids, redact


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Every event: the ids as tags (searchable in Sentry, and the same ids as in the logs and the message
    log), then everything masked: messages, exception texts, request data, extras, breadcrumbs."""
    tags = event.setdefault("tags", {})
    for name, value in current_ids().items():
        tags.setdefault(name, value)
    return redact(event)  # type: ignore[no-any-return]


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    return redact(crumb)  # type: ignore[no-any-return]


def init_sentry(*, dsn: str, environment: str) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        # No user, address, cookies or bodies: requests carry drivers' personal data (Beckn billing and
        # customer blocks), and the message logs keep what was received, found by the correlation id.
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=before_send,  # type: ignore[arg-type]
        before_breadcrumb=before_breadcrumb,  # type: ignore[arg-type]
    )
