"""Billing's Prometheus figures (emsp/metrics.py serves them): CDR audits counted where they are made
(billing/services/audit.py), and, read at scrape time, the CDRs waiting for their audit, audits and disputes
needing people, receipts without their document, and settlement periods per state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Count
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric

from billing.models import Cdr, CdrAudit, Dispute, DriverReceipt, Settlement
from emsp.metrics import COUNT_CAP, capped_count, scrape_collector

CDR_AUDITS = Counter(
    "emsp_cdr_audits_total",
    "CDR audits made (a CDR repriced and compared with the CPO's totals), per result.",
    ["status"],
)


def count_audit(status: str) -> None:
    CDR_AUDITS.labels(status).inc()


def billing_figures(now: datetime) -> Iterator[Metric]:
    unprocessed = Cdr.objects.filter(processed_at__isnull=True)  # the cdr_unprocessed partial index
    waiting = GaugeMetricFamily(
        "emsp_cdrs_unprocessed", f"CDRs received and not yet audited (saturates at {COUNT_CAP})."
    )
    waiting.add_metric([], capped_count(unprocessed))
    yield waiting
    oldest = unprocessed.order_by("received_at").values_list("received_at", flat=True).first()
    age = GaugeMetricFamily(
        "emsp_cdrs_oldest_unprocessed_age_seconds", "Age of the oldest CDR not yet audited (0 when none waits)."
    )
    age.add_metric([], max((now - oldest).total_seconds(), 0.0) if oldest else 0.0)
    yield age
    audits = GaugeMetricFamily(
        "emsp_cdr_audits", f"CDR audits kept, per result (saturates at {COUNT_CAP} each).", labels=["status"]
    )
    for status in CdrAudit.Status.values:
        audits.add_metric([status], capped_count(CdrAudit.objects.filter(status=status)))
    yield audits
    # Receipts past their grace without a document: lost tasks the sweep is about to issue, or issues that keep
    # failing (swept SWEEPS_TO_WARN times or more). Read from the driverreceipt_unissued partial index.
    from billing.services.documents import RECEIPT_GRACE, SWEEPS_TO_WARN

    unissued = DriverReceipt.objects.filter(issued=False, created_at__lt=now - RECEIPT_GRACE)
    receipts = GaugeMetricFamily(
        "emsp_receipts_unissued",
        f"Driver receipts still without their numbered document a minute after they were made (saturates at "
        f"{COUNT_CAP} each): `swept` the ones the sweep has tried at least {SWEEPS_TO_WARN} times.",
        labels=["state"],
    )
    receipts.add_metric(["waiting"], capped_count(unissued.filter(sweeps__lt=SWEEPS_TO_WARN)))
    receipts.add_metric(["swept"], capped_count(unissued.filter(sweeps__gte=SWEEPS_TO_WARN)))
    yield receipts
    disputes = GaugeMetricFamily("emsp_disputes_open", "Disputes open or contested with the CPO.", labels=["state"])
    for state in Dispute.OPEN_STATES:
        disputes.add_metric([state], capped_count(Dispute.objects.filter(state=state)))
    yield disputes
    settlements = GaugeMetricFamily(
        "emsp_settlements", "Settlement periods (one per CPO, month and currency), per state.", labels=["state"]
    )
    per_state = dict(Settlement.objects.values_list("state").annotate(n=Count("pk")).values_list("state", "n"))
    for state in Settlement.State.values:
        settlements.add_metric([state], per_state.get(state, 0))
    yield settlements


def register() -> None:
    scrape_collector("billing", billing_figures)
