"""Retention (issue 14): logs, webhook records and findings are pruned by age, kind by kind, in bounded batches
(`manage.py prune`, the hourly beat task); the big logs' console lists never count the whole table."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from beckn.models import BecknCallback, BecknMessage
from billing.models import Cdr, ProviderWebhook
from emsp import privacy, tasks
from emsp.admin_logs import CappedPaginator
from emsp.models import Booking, BookingCheck, Delivery, DeliveryAttempt, Partner
from ocpi.models import DataQualityIssue, OcpiMessage, PushDelivery, SyncRun
from tests.billing.factories import CdrFactory
from tests.factories import stored_location

pytestmark = pytest.mark.django_db

NOW = timezone.now()
OLD, YOUNG = NOW - timedelta(days=400), NOW - timedelta(days=1)


def message(at: Any, **kwargs: Any) -> OcpiMessage:
    return OcpiMessage.objects.create(**{"direction": "IN", "method": "PATCH", "url": "/x", "created_at": at, **kwargs})


def test_it_prunes_each_kind_by_its_own_age(partner: Partner) -> None:
    for at in (OLD, YOUNG):
        message(at)
        SyncRun.objects.create(partner=partner, module="locations", mode="FULL", started_at=at)
        ProviderWebhook.objects.create(provider="stripe", event_id=f"evt_{at:%j}", type="x", payload={}, received_at=at)
    DataQualityIssue.objects.create(
        partner=partner, module="locations", object_id="L1", path="$", code="x", message="m", fixed=True, last_seen=OLD
    )
    beckn = BecknMessage.objects.create(bap_id="bap", action="search", message_id="m1", body="{}")
    BecknMessage.objects.filter(pk=beckn.pk).update(received_at=OLD)
    settled = BecknCallback.objects.create(
        channel=Delivery.Channel.BECKN_CALLBACK, target="bap", action="on_search", url="https://bap.example/on_search",
        message_id="m1", body="{}", status=Delivery.Status.DELIVERED, created_at=OLD,
    )  # fmt: skip
    DeliveryAttempt.objects.create(delivery=settled, at=OLD)
    pending = PushDelivery.objects.create(
        channel=Delivery.Channel.OCPI_PUSH, partner=partner, target="x", module="tokens", method="PUT", path="/1",
        payload={}, created_at=OLD,
    )  # fmt: skip
    old_try, young_try = (DeliveryAttempt.objects.create(delivery=pending, at=at) for at in (OLD, YOUNG))
    booking = Booking.objects.create(order_id="O-1", evse=stored_location(partner).evses.first(), connector_id="1")
    resolved = BookingCheck.objects.create(booking=booking, kind="cdr_missing", detail="d", resolved_at=OLD)
    open_old = BookingCheck.objects.create(booking=booking, kind="start_failed", detail="d", last_seen=OLD)
    taxed = CdrFactory(received_at=OLD)  # a charging record keeps its 8 years from when we stored it
    expired_cdr = CdrFactory(received_at=NOW - timedelta(days=9 * 366))

    counts = privacy.purge_expired(NOW)

    assert list(OcpiMessage.objects.values_list("created_at", flat=True)) == [YOUNG]
    assert list(SyncRun.objects.values_list("started_at", flat=True)) == [YOUNG]
    assert list(ProviderWebhook.objects.values_list("received_at", flat=True)) == [YOUNG]
    assert not DataQualityIssue.objects.exists() and not BecknMessage.objects.exists()
    assert not Delivery.objects.filter(pk=settled.pk).exists()  # a settled Beckn callback, with its attempts
    assert not BecknCallback.objects.exists()
    assert Delivery.objects.filter(pk=pending.pk).exists()  # still to be sent: kept, its old tries go
    assert list(DeliveryAttempt.objects.values_list("pk", flat=True)) == [young_try.pk] != [old_try.pk]
    assert list(BookingCheck.objects.values_list("pk", flat=True)) == [open_old.pk] != [resolved.pk]
    assert list(Cdr.objects.values_list("pk", flat=True)) == [taxed.pk] != [expired_cdr.pk]
    assert counts["ocpi.ocpi_messages"] == counts["billing.provider_webhooks"] == counts["domain.deliveries"] == 1
    assert counts["domain.booking_checks"] == counts["domain.delivery_attempts"] == counts["billing.cdrs"] == 1


def test_it_deletes_in_bounded_batches_up_to_a_cap_per_run() -> None:
    old = [message(OLD + timedelta(seconds=i)) for i in range(5)]
    young = message(YOUNG)
    with CaptureQueriesContext(connection) as queries:
        counts = privacy.purge_expired(NOW, kinds=["ocpi_messages"], batch_size=2, max_rows=3)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('DELETE FROM "ocpi_ocpimessage"')]
    assert counts == {"ocpi.ocpi_messages": 3}
    assert len(deletes) == 2  # 2 rows, then the 1 the cap leaves room for
    assert list(OcpiMessage.objects.order_by("pk").values_list("pk", flat=True)) == [old[3].pk, old[4].pk, young.pk]
    assert privacy.purge_expired(NOW, kinds=["ocpi_messages"], batch_size=2) == {"ocpi.ocpi_messages": 2}


def test_a_dry_run_counts_and_deletes_nothing() -> None:
    message(OLD)
    message(YOUNG)
    out = StringIO()
    call_command("prune", "--dry-run", "--kind", "ocpi_messages", stdout=out)
    assert "ocpi.ocpi_messages" in out.getvalue() and "1 would go" in out.getvalue()
    assert "beckn.beckn_messages" not in out.getvalue()  # only the kind asked for
    assert OcpiMessage.objects.count() == 2
    call_command("prune", "--kind", "ocpi_messages", stdout=out)
    assert list(OcpiMessage.objects.values_list("created_at", flat=True)) == [YOUNG]


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(Exception, match="unknown kind"):
        call_command("prune", "--kind", "everything")


def test_beat_prunes_hourly_on_the_bulk_queue_task() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["emsp-purge-expired"]
    assert (entry["task"], entry["schedule"]) == ("emsp.tasks.purge_expired", 3600.0)
    assert tasks.purge_expired.name == entry["task"]
    assert settings.CELERY_TASK_ROUTES[entry["task"]]["queue"] == "bulk"
    message(NOW - timedelta(days=settings.RETENTION_DAYS["ocpi_messages"] + 1))
    assert tasks.purge_expired.apply().get()["ocpi.ocpi_messages"] == 1  # safe to run again: nothing left
    assert tasks.purge_expired.apply().get()["ocpi.ocpi_messages"] == 0


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x"))
    return client


def whole_table_counts(queries: CaptureQueriesContext, table: str) -> list[str]:
    """COUNTs on the table that are not bounded by a LIMIT."""
    return [
        q["sql"]
        for q in queries.captured_queries
        if "COUNT(" in q["sql"] and table in q["sql"] and "LIMIT" not in q["sql"]
    ]


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"module": "cdrs"},
        {"outcome": "failed"},
        {"q": "req-7"},
        {"p": "2"},
        {"created_at__gte": "2020-01-01T00:00:00+00:00"},
    ],
)
def test_the_message_log_list_never_counts_the_whole_table(
    staff: Client, partner: Partner, monkeypatch: pytest.MonkeyPatch, query: dict[str, str]
) -> None:
    monkeypatch.setattr(CappedPaginator, "max_rows", 60)
    for i in range(70):
        message(NOW - timedelta(minutes=i), partner=partner, module="cdrs", request_id=f"req-{i}", http_status=200)
    message(NOW, partner=partner, module="cdrs", http_status=500)
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(reverse("admin:ocpi_ocpimessage_changelist"), query)
    assert response.status_code == 200
    assert whole_table_counts(queries, "ocpi_ocpimessage") == []
    text = response.content.decode()
    if not query or "module" in query:
        assert "the newest 60 OCPI messages of more" in text  # capped, and says so
    if "outcome" in query:
        assert "1 OCPI message" in text and "/x" in text
    if "q" in query:
        assert "1 OCPI message" in text  # exact id: req-7, not req-70


def test_the_message_log_filters_by_partner_module_and_outcome(staff: Client, partner: Partner) -> None:
    message(NOW, partner=partner, module="cdrs", http_status=200, url="/ocpi/ok")
    message(NOW, partner=partner, module="cdrs", http_status=None, error="timed out", url="/ocpi/failed")
    message(NOW, partner=None, module="locations", http_status=502, url="/ocpi/other")
    query = {"partner__id__exact": partner.pk, "module": "cdrs", "outcome": "failed"}
    text = staff.get(reverse("admin:ocpi_ocpimessage_changelist"), query).content.decode()
    assert "/ocpi/failed" in text and "/ocpi/ok" not in text and "/ocpi/other" not in text


def test_the_delivery_list_never_counts_the_whole_table(staff: Client, partner: Partner) -> None:
    for i in range(3):
        Delivery.objects.create(channel=Delivery.Channel.OCPI_PUSH, partner=partner, target=f"t{i}")
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(reverse("admin:emsp_delivery_changelist"), {"status__exact": "PENDING"})
    assert response.status_code == 200 and "3 deliveries" in response.content.decode()
    assert whole_table_counts(queries, "emsp_delivery") == []
