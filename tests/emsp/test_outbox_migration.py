"""Upgrading to the one outbox keeps every push and callback, with its state, attempts and times."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("emsp", "0006_roles"), ("ocpi", "0001_initial"), ("beckn", "0002_journeys_and_outbox")]
AFTER = [("emsp", "0008_roles_for_the_outbox"), ("ocpi", "0002_pushdelivery_in_the_outbox"),
         ("beckn", "0003_callbacks_in_the_outbox")]  # fmt: skip


@pytest.fixture(autouse=True)
def back_to_the_latest_schema() -> Iterator[None]:
    """Transactional tests run last, in one database: those after this one need every migration applied."""
    yield
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_it_copies_pushes_callbacks_and_attempts_into_the_outbox() -> None:
    old = migrate(BEFORE)
    partner = old.get_model("emsp", "Partner").objects.create(name="A", country_code="IN", party_id="CPA")
    old.get_model("ocpi", "PushDelivery").objects.create(
        partner=partner, module="tokens", method="PUT", path="/IN/EMS/T1?type=RFID", payload={"uid": "T1"},
        status="FAILED", attempts=3, last_error="HTTP 404",
    )  # fmt: skip
    callback = old.get_model("beckn", "BecknCallback").objects.create(
        action="on_search", url="http://bap.example/on_search", message_id="m-1", body='{"context":{}}',
        status="PENDING", attempts=2, last_http_status=503,
    )  # fmt: skip
    attempt = old.get_model("beckn", "BecknCallbackAttempt")
    attempt.objects.create(callback=callback, http_status=503, error="busy", duration_ms=7)
    attempt.objects.create(callback=callback, http_status=None, error="timeout", duration_ms=10000)

    new = migrate(AFTER)
    push = new.get_model("ocpi", "PushDelivery").objects.get()
    assert (push.channel, push.partner_id, push.status, push.attempts, push.last_error) == (
        "ocpi_push",
        partner.pk,
        "FAILED",
        3,
        "HTTP 404",
    )
    assert push.payload == {"uid": "T1"} and push.path == "/IN/EMS/T1?type=RFID"
    moved = new.get_model("beckn", "BecknCallback").objects.get()
    assert (moved.channel, moved.status, moved.attempts, moved.last_http_status, moved.message_id) == (
        "beckn_callback",
        "PENDING",
        2,
        503,
        "m-1",
    )
    attempts = new.get_model("emsp", "DeliveryAttempt").objects.filter(delivery_id=moved.pk).order_by("pk")
    assert [(a.http_status, a.error) for a in attempts] == [(503, "busy"), (None, "timeout")]
    assert new.get_model("emsp", "Delivery").objects.count() == 2
