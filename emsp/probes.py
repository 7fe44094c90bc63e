"""Liveness and readiness probes for load balancers and orchestrators: `/healthz` (the process answers; no I/O)
and `/readyz` (database reachable, migrations applied, broker reachable, beat heartbeat fresh).

They are answered by a middleware placed first, before SecurityMiddleware and CommonMiddleware: a probe comes
from a load balancer by address and over plain HTTP, so ALLOWED_HOSTS and SECURE_SSL_REDIRECT must not turn it
into a 400 or a redirect. No authentication, no session, no request id. Checks are a few small functions
rather than django-health-check: its Celery check needs a result backend (we run none), it has no beat or
filesystem-queue check, and its views sit behind the host check anyway (README, *Probes*).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.models.functions import Now
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

Check = dict[str, Any]  # {"ok": bool, ...details}


def check_database() -> Check:
    connection = connections[DEFAULT_DB_ALIAS]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor}


def check_migrations() -> Check:
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = [f"{migration.app_label}.{migration.name}" for migration, _ in plan]
        return {"ok": False, "error": f"{len(plan)} migrations not applied (manage.py migrate)", "pending": names[:10]}
    return {"ok": True}


def check_broker() -> Check:
    url: str = settings.CELERY_BROKER_URL
    timeout = settings.READYZ_BROKER_TIMEOUT_SECONDS
    if url.startswith("filesystem://"):
        # Development's queue is a folder: reachable means the folders are there and writable.
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        folders = {options["data_folder_in"], options["data_folder_out"]}
        missing = sorted(f for f in folders if not (os.path.isdir(f) and os.access(f, os.W_OK)))
        if missing:
            return {"ok": False, "transport": "filesystem", "error": "queue folder missing or not writable"}
        return {"ok": True, "transport": "filesystem"}
    from kombu import Connection

    # The broker the settings name (not a connection of the Celery app, which keeps the URL it was configured with).
    options = {**(settings.CELERY_BROKER_TRANSPORT_OPTIONS or {}), "socket_timeout": timeout}
    with Connection(url, connect_timeout=timeout, transport_options=options) as conn:
        conn.ensure_connection(max_retries=0, timeout=timeout)
        return {"ok": True, "transport": conn.transport.driver_type}


# How far a heartbeat may lie in the future of the database's clock and still count: the beat writes the
# database's own time (emsp/beat.py), so anything beyond this was written by a clock that runs ahead (a beat of an
# older release, a hand-made row) and would look fresh long after that beat stopped.
HEARTBEAT_FUTURE_TOLERANCE_SECONDS = 5.0


def check_beat() -> Check:
    """The newest heartbeat's age, by the database's clock (Now()), the one the beat writes with: neither the beat
    host's clock nor this one's can make a stopped beat look alive. A heartbeat from the future (beyond
    HEARTBEAT_FUTURE_TOLERANCE_SECONDS) is not counted; when it is all there is, the check fails naming clock skew."""
    from emsp.models import BeatHeartbeat

    max_age = settings.BEAT_HEARTBEAT_MAX_AGE_SECONDS
    rows = BeatHeartbeat.objects.annotate(db_now=Now()).order_by("-seen_at").values_list("seen_at", "db_now")
    newest = rows.first()
    if newest is None:
        return {"ok": False, "error": "no beat heartbeat yet (is `celery -A emsp beat` running?)"}
    now = newest[1]
    horizon = now + timedelta(seconds=HEARTBEAT_FUTURE_TOLERANCE_SECONDS)
    ahead = (newest[0] - now).total_seconds() if newest[0] > horizon else None
    counted = newest if ahead is None else rows.filter(seen_at__lte=horizon).first()
    alive = BeatHeartbeat.objects.filter(seen_at__gte=now - timedelta(seconds=max_age), seen_at__lte=horizon).count()
    age = (now - counted[0]).total_seconds() if counted is not None else None
    result: Check = {
        "ok": age is not None and age <= max_age,
        "age_seconds": round(age, 1) if age is not None else None,
        "max_age_seconds": max_age,
        "beats_alive": alive,
    }
    if ahead is not None:
        result["clock_skew_seconds"] = round(ahead, 1)
    if age is None:
        result["error"] = (
            f"no beat heartbeat but from the future: the newest is {ahead:.0f} s ahead of the database's clock "
            "(clock skew: a beat host's clock runs ahead), not counted"
        )
    elif not result["ok"]:
        result["error"] = f"last beat heartbeat {age:.0f} s ago (more than {max_age} s)"
    return result


CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "migrations": check_migrations,
    "broker": check_broker,
    "beat": check_beat,
}
NEEDS_DATABASE = {"migrations", "beat"}


def readiness() -> tuple[bool, dict[str, Check]]:
    """Run every check; one that raises fails with the exception's type (details go to the log, not to an
    unauthenticated caller). Checks that read the database are skipped when it is unreachable."""
    results: dict[str, Check] = {}
    for name, check in CHECKS.items():
        if name in NEEDS_DATABASE and not results.get("database", {}).get("ok"):
            results[name] = {"ok": False, "error": "database unreachable"}
            continue
        started = time.monotonic()
        try:
            results[name] = check()
        except Exception as exc:
            logger.warning("readiness check %s failed", name, exc_info=True)
            results[name] = {"ok": False, "error": type(exc).__name__}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    return all(result["ok"] for result in results.values()), results


def healthz() -> HttpResponse:
    return JsonResponse({"status": "ok"})


def readyz() -> HttpResponse:
    ok, checks = readiness()
    return JsonResponse({"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503)


PROBES: dict[str, Callable[[], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}


class ProbeMiddleware:
    """First in MIDDLEWARE: answers GET/HEAD /healthz and /readyz itself, before any host check or redirect."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info.rstrip("/") or "/")
        if probe is None:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response: HttpResponse = JsonResponse({"status": "method not allowed"}, status=405)
            response["Allow"] = "GET, HEAD"
        else:
            response = probe()
        response["Cache-Control"] = "no-store"
        return response
