"""OCPI's Prometheus figures (emsp/metrics.py serves them): requests per partner, module and OCPI status, in
both directions, counted where they are logged (ocpi/transport.py, ocpi/client.py); pulls counted where they
finish (ocpi/sync.py); and, read at scrape time, how long ago each partner's module was last pulled well."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import F, OuterRef, Subquery
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from emsp.metrics import labelled, scrape_collector
from emsp.models import Partner
from ocpi.models import SyncRun

OCPI_REQUESTS = Counter(
    "emsp_ocpi_requests_total",
    "OCPI requests, served (IN) and sent (OUT), per partner (party key), module, HTTP status and OCPI status_code.",
    ["direction", "partner", "module", "http_status", "ocpi_status"],
)
SYNC_RUNS = Counter(
    "emsp_ocpi_sync_runs_total",
    "Pulls of one module from one partner that finished, per outcome (OK, FAILED).",
    ["partner", "module", "outcome"],
)
SYNC_DURATION = Histogram(
    "emsp_ocpi_sync_duration_seconds",
    "How long a pull of one module took, per module and outcome.",
    ["module", "outcome"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)

MODULES = ("locations", "tariffs", "sessions", "cdrs")  # the modules we pull (ocpi/sync.py)
MAX_PARTNERS = 1000


def party_label(partner: Partner | None) -> str:
    """A partner's label: its party key (`NL*ABC`), stable and bounded; `unknown` before it is identified."""
    if partner is None or not partner.pk:
        return "unknown"
    return partner.party_key


# The status_codes OCPI 2.2.1 defines (status_codes.asciidoc; 2.1.1's and 2.3.0's are among them): each its own
# label value. Any other a partner sends is counted under its class (`1xxx` … `4xxx`) or `other`: the label's
# values stay bounded whatever partners answer (every value is a series, kept for the life of the process).
OCPI_STATUS_CODES = frozenset({1000, 2000, 2001, 2002, 2003, 2004, 3000, 3001, 3002, 3003, 4000, 4001, 4002, 4003})
# The HTTP statuses we answer with or an OCPI partner commonly does; others by class (`2xx` … `5xx`) or `other`.
HTTP_STATUSES = frozenset(
    {200, 201, 202, 204, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414,
     415, 422, 429, 431, 500, 501, 502, 503, 504}
)  # fmt: skip


def ocpi_status_label(code: int | None) -> str:
    """An OCPI status_code as a label value, from a bounded set (`OCPI_STATUS_CODES`)."""
    if code is None:
        return "none"
    if code in OCPI_STATUS_CODES:
        return str(code)
    return f"{code // 1000}xxx" if 1000 <= code <= 4999 else "other"


def http_status_label(status: int | None) -> str:
    """An HTTP status as a label value, from a bounded set (`HTTP_STATUSES`)."""
    if status is None:
        return "none"
    if status in HTTP_STATUSES:
        return str(status)
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def count_request(
    *, direction: str, partner: Partner | None, module: str, http_status: int | None, ocpi_status: int | None
) -> None:
    labelled(
        OCPI_REQUESTS,
        direction,
        party_label(partner),
        module or "-",
        http_status_label(http_status),
        ocpi_status_label(ocpi_status),
    ).inc()


def count_sync_run(run: SyncRun) -> None:
    SYNC_RUNS.labels(party_label(run.partner), run.module, run.outcome).inc()
    if run.finished_at is not None:
        SYNC_DURATION.labels(run.module, run.outcome).observe(
            max((run.finished_at - run.started_at).total_seconds(), 0)
        )


def sync_figures(now: datetime) -> Iterator[Metric]:
    """Per partner and module, from the newest runs (the syncrun_partner_module index, LIMIT 1 each): when the
    last good pull finished, how long ago that is, whether the last finished pull went well, and how long it took."""
    last_success = GaugeMetricFamily(
        "emsp_ocpi_sync_last_success_timestamp_seconds",
        "When the last successful pull of the module from the partner finished (Unix time).",
        labels=["partner", "module"],
    )
    lag = GaugeMetricFamily(
        "emsp_ocpi_sync_lag_seconds",
        "Seconds since the last successful pull of the module from the partner finished.",
        labels=["partner", "module"],
    )
    last_ok = GaugeMetricFamily(
        "emsp_ocpi_sync_last_run_ok",
        "1 when the partner's last finished pull of the module succeeded, 0 when it failed.",
        labels=["partner", "module"],
    )
    last_duration = GaugeMetricFamily(
        "emsp_ocpi_sync_last_duration_seconds",
        "How long the partner's last finished pull of the module took.",
        labels=["partner", "module"],
    )
    annotations = {}
    for module in MODULES:
        runs = SyncRun.objects.filter(partner=OuterRef("pk"), module=module).order_by("-started_at")
        finished = runs.exclude(outcome=SyncRun.Outcome.RUNNING)
        annotations[f"{module}_ok_at"] = Subquery(runs.filter(outcome=SyncRun.Outcome.OK).values("finished_at")[:1])
        annotations[f"{module}_outcome"] = Subquery(finished.values("outcome")[:1])
        annotations[f"{module}_seconds"] = Subquery(
            finished.annotate(took=F("finished_at") - F("started_at")).values("took")[:1]
        )
    partners = Partner.objects.connected().order_by("pk").annotate(**annotations)[:MAX_PARTNERS]
    for partner in partners:
        key = partner.party_key
        for module in MODULES:
            ok_at = getattr(partner, f"{module}_ok_at")
            outcome = getattr(partner, f"{module}_outcome")
            took = getattr(partner, f"{module}_seconds")
            if ok_at is not None:
                last_success.add_metric([key, module], ok_at.timestamp())
                lag.add_metric([key, module], max((now - ok_at).total_seconds(), 0.0))
            if outcome is not None:
                last_ok.add_metric([key, module], 1.0 if outcome == SyncRun.Outcome.OK else 0.0)
            if took is not None:
                last_duration.add_metric([key, module], max(took.total_seconds(), 0.0))
    yield from (last_success, lag, last_ok, last_duration)


def register() -> None:
    scrape_collector("ocpi_sync", sync_figures)
