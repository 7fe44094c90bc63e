"""Prometheus metrics: `/metrics` (docs/operations.md, *Metrics and alerts*).

Two kinds of figures:

* **Counted where it happens** (prometheus_client counters and histograms): HTTP requests per route pattern,
  method and status (`MetricsMiddleware`), command outcomes (emsp/services/commands.py), circuit-breaker
  transitions (emsp/services/breakers.py), and in the adapters OCPI requests (ocpi/metrics.py) and Beckn
  ACK/NACKs and signature failures (beckn/metrics.py). Labels are bounded: a route *pattern*, never a raw path;
  a partner's party key; a module; a status or error code.
* **Read from the database when scraped** (`DatabaseCollector`): outbox backlog and the age of the oldest
  pending delivery, breaker states, Celery queue depth; the adapters and billing add theirs with
  `scrape_collector()` (sync lag per partner and module, settlement and audit counts). Each read is indexed
  and bounded; one that fails is skipped (`emsp_metrics_collector_up` 0), never the whole scrape.

Multiprocess: gunicorn runs several web processes and Celery several workers, each counting on its own. With
`PROMETHEUS_MULTIPROC_DIR` set (before the process starts: prometheus_client reads it at import) every process
writes its counters to files there and the view sums them (prometheus_client's multiprocess mode), so a
counter moved by a Celery worker on the same host shows in the web's `/metrics`. Empty the folder when the
services (re)start; `run_platform` does.

Access: a scraper sends `Authorization: Bearer <METRICS_TOKEN>`; a person uses a staff session holding
`emsp.view_metrics` (ops and admin). A bearer request is answered by the middleware, before the host check and
the HTTPS redirect (a scraper inside the network asks by address over plain HTTP, like the probes); a session
request goes through the whole stack like any console page.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from datetime import datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

VIEW_METRICS = "emsp.view_metrics"  # created by emsp/roles.py (no schema migration); ops and admin hold it
METRICS_PATHS = ("/metrics", "/metrics/")
# Saturating counts: a scrape never counts more rows than this (a backlog that large is an incident anyway).
COUNT_CAP = 100_000

# --- counted where it happens ----------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "emsp_http_requests_total",
    "HTTP requests answered, per route pattern, method and status.",
    ["endpoint", "method", "status"],
)
HTTP_DURATION = Histogram(
    "emsp_http_request_duration_seconds",
    "Time to answer an HTTP request, per route pattern and method.",
    ["endpoint", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
COMMANDS_FINISHED = Counter(
    "emsp_commands_finished_total",
    "OCPI commands to chargers that reached a final state, per type and outcome (SUCCEEDED, FAILED, TIMEOUT).",
    ["type", "status"],
)
BREAKER_TRANSITIONS = Counter(
    "emsp_breaker_transitions_total",
    "Circuit-breaker state changes per partner, module and the state entered.",
    ["partner", "module", "state"],
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# metric.labels(...) per metric and label values, kept for the process: labels() checks its arguments and takes
# the metric's lock on every call (three of them were 2 % of an EVSE PATCH's CPU). The values are bounded (see
# above), and prometheus_client keeps each labelled child for the process anyway: this keeps no more than it does.
_labelled: dict[tuple[Any, tuple[str, ...]], Any] = {}


def labelled(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, the same child each time."""
    key = (metric, values)
    child = _labelled.get(key)
    if child is None:
        child = _labelled[key] = metric.labels(*values)
    return child


def endpoint_label(request: HttpRequest) -> str:
    """The route pattern that answered (`ocpi/2.2.1/emsp/locations/<str:country_code>/…`), never the raw path:
    the label's values are as many as the URL patterns. Unresolved requests (404s, static files, refusals
    before routing) share one value."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "<unmatched>"
    return "/" + str(match.route or match.view_name or "<unnamed>")


def count_request(request: HttpRequest, status: int, seconds: float, endpoint: str | None = None) -> None:
    method = request.method if request.method in _METHODS else "OTHER"
    endpoint = endpoint or endpoint_label(request)
    labelled(HTTP_REQUESTS, endpoint, method, str(status)).inc()
    labelled(HTTP_DURATION, endpoint, method).observe(seconds)


# --- access ------------------------------------------------------------------------------------------------


def _bearer(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _token_ok(presented: str) -> bool:
    expected = settings.METRICS_TOKEN
    return bool(expected) and hmac.compare_digest(presented.encode(), expected.encode())


def _refused(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    response["Cache-Control"] = "no-store"
    return response


def metrics_view(request: HttpRequest) -> HttpResponse:
    """`/metrics` for a staff session (the bearer token is answered earlier, by MetricsMiddleware)."""
    presented = _bearer(request)
    if presented is not None:
        return metrics_response() if _token_ok(presented) else _refused(401, "invalid metrics token")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return _refused(401, "a bearer token (METRICS_TOKEN) or a staff session is needed")
    if not (user.is_active and user.is_staff and user.has_perm(VIEW_METRICS)):
        return _refused(403, f"the {VIEW_METRICS} permission is needed")
    return metrics_response()


class MetricsMiddleware:
    """Counts every request (route pattern, method, status, duration) and answers `/metrics` for a bearer
    token itself. Placed right after the probes, before SecurityMiddleware and CommonMiddleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        endpoint = None
        presented = _bearer(request) if request.path in METRICS_PATHS else None
        if presented is not None:
            endpoint = "/metrics"
            if request.method not in ("GET", "HEAD"):
                response = _refused(405, "GET only")
            elif _token_ok(presented):
                response = metrics_response()
            else:
                response = _refused(401, "invalid metrics token")
        else:
            response = self.get_response(request)
        try:
            count_request(request, response.status_code, time.perf_counter() - started, endpoint)
        except Exception:  # counting must never cost the answer
            log.exception("could not count a request")
        return response


# --- the scrape ----------------------------------------------------------------------------------------------

ScrapeCollector = Callable[[datetime], Iterable[Metric]]
_scrape_collectors: dict[str, ScrapeCollector] = {}


def scrape_collector(name: str, collect: ScrapeCollector) -> None:
    """Add figures read at scrape time: `collect(now)` yields metric families (registered once per name, at
    start-up in an AppConfig.ready())."""
    _scrape_collectors[name] = collect


def scrape_collectors() -> list[str]:
    return sorted(_scrape_collectors)


class DatabaseCollector:
    """Runs every registered scrape collector; one that fails is reported, not fatal."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        up = GaugeMetricFamily(
            "emsp_metrics_collector_up", "1 when the scrape-time collector answered, 0 when it failed.", labels=["name"]
        )
        spent = GaugeMetricFamily(
            "emsp_metrics_collector_seconds", "Time the scrape-time collector took.", labels=["name"]
        )
        for name in scrape_collectors():
            started = time.perf_counter()
            try:
                families = list(_scrape_collectors[name](now))
            except Exception:
                log.exception("metrics collector %s failed", name)
                families, ok = [], 0
            else:
                ok = 1
            yield from families
            up.add_metric([name], ok)
            spent.add_metric([name], time.perf_counter() - started)
        yield up
        yield spent


class _ThisProcess:
    """Single-process mode: this process's own counters (the default registry: process, platform, ours)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry_for_scrape() -> CollectorRegistry:
    """A registry per scrape (prometheus_client's multiprocess pattern): the counters of every process that
    wrote to PROMETHEUS_MULTIPROC_DIR, or this process's own, plus the database figures."""
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    if path:
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry.register(_ThisProcess())  # type: ignore[arg-type]
    registry.register(DatabaseCollector())  # type: ignore[arg-type]
    return registry


def metrics_response() -> HttpResponse:
    response = HttpResponse(generate_latest(registry_for_scrape()), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn's `child_exit` hook (deploy/gunicorn.conf.py): drop a dead worker's live-gauge files."""
    path = multiprocess_dir()
    if path:
        multiprocess.mark_process_dead(worker.pid, path)


# --- the domain's scrape-time figures -------------------------------------------------------------------------


def capped_count(queryset: Any, cap: int = COUNT_CAP) -> int:
    """COUNT over at most `cap` rows (a subquery with LIMIT): cheap however large the table."""
    return int(queryset.values("pk")[:cap].count())


def outbox_figures(now: datetime) -> Iterator[Metric]:
    from emsp.models import Delivery

    waiting = (Delivery.Status.PENDING, Delivery.Status.SENDING)
    backlog = GaugeMetricFamily(
        "emsp_outbox_backlog",
        f"Deliveries (OCPI pushes, Beckn callbacks) not yet sent, per channel and status (saturates at {COUNT_CAP}).",
        labels=["channel", "status"],
    )
    for channel in Delivery.Channel.values:
        for status in waiting:
            n = capped_count(Delivery.objects.filter(status=status, channel=channel))
            backlog.add_metric([channel, status], n)
    yield backlog
    age = GaugeMetricFamily(
        "emsp_outbox_oldest_pending_age_seconds",
        "Age of the oldest delivery not yet sent, per channel (0 when none waits).",
        labels=["channel"],
    )
    for channel in Delivery.Channel.values:
        # LIMIT 1 in creation order (created_at is indexed): no aggregate over the whole backlog.
        first = (
            Delivery.objects.filter(status__in=waiting, channel=channel)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        age.add_metric([channel], max((now - first).total_seconds(), 0.0) if first else 0.0)
    yield age
    failed = GaugeMetricFamily(
        "emsp_outbox_failed",
        f"Deliveries given up on (FAILED, until retried or pruned), saturates at {COUNT_CAP}.",
    )
    failed.add_metric([], capped_count(Delivery.objects.filter(status=Delivery.Status.FAILED)))
    yield failed


def breaker_figures(now: datetime) -> Iterator[Metric]:
    from emsp.models import CircuitBreaker

    states = GaugeMetricFamily(
        "emsp_breaker_state",
        "Circuit breakers per partner and module: 1 for the state it is in (CLOSED, OPEN, HALF_OPEN).",
        labels=["partner", "module", "state"],
    )
    rows = CircuitBreaker.objects.select_related("partner").order_by("partner_id", "module")[:5000]
    for breaker in rows:
        for state in CircuitBreaker.State.values:
            in_it = 1.0 if breaker.state == state else 0.0
            states.add_metric([breaker.partner.party_key, breaker.module, state], in_it)
    yield states


def queue_names() -> list[str]:
    """The Celery queues workers consume: `latency` and `bulk` (docs/operations.md), and any others set."""
    from emsp.celery import app

    names = {getattr(settings, "LATENCY_QUEUE", "latency"), getattr(settings, "BULK_QUEUE", "bulk")}
    for queue in app.conf.task_queues or ():
        names.add(getattr(queue, "name", str(queue)))
    return sorted(names)


def queue_figures(now: datetime) -> Iterator[Metric]:
    """Messages waiting in each queue, asked of the broker with a passive declare: Redis sums the queue's
    lists (LLEN per priority), the development filesystem queue counts its files, RabbitMQ answers itself."""
    from emsp.celery import app

    depth = GaugeMetricFamily(
        "emsp_celery_queue_depth", "Tasks waiting in a Celery queue (not yet taken by a worker).", labels=["queue"]
    )
    timeout = settings.READYZ_BROKER_TIMEOUT_SECONDS
    options = {**(app.conf.broker_transport_options or {}), "socket_timeout": timeout}
    with app.connection_for_read(connect_timeout=timeout, transport_options=options) as conn:
        conn.ensure_connection(max_retries=0, timeout=timeout)
        for name in queue_names():
            channel = conn.channel()
            try:
                _, count, _ = channel.queue_declare(queue=name, passive=True)
            except conn.channel_errors:
                count = 0  # never declared: nothing was ever queued there
            finally:
                with suppress(Exception):
                    channel.close()
            depth.add_metric([name], int(count))
    yield depth


scrape_collector("outbox", outbox_figures)
scrape_collector("breakers", breaker_figures)
scrape_collector("celery_queues", queue_figures)
