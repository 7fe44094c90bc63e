"""A CDR is audited and receipted exactly once: a worker claims it, a duplicate task finds nothing to do, a
claim left by a stopped worker expires and the sweep hands the CDR on."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.models import Cdr, CdrAudit, DriverReceipt
from billing.services.audit import cdr_process, cdrs_process_due
from tests.billing.test_cdr_audit import bec, example_cdr, store  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db


@pytest.fixture
def cdr(bec: Any, example_cdr: dict[str, Any]) -> Cdr:  # noqa: F811
    from tests.factories import TokenFactory

    TokenFactory(uid="012345678")
    return store(bec, example_cdr)


def test_it_is_processed_once_and_a_second_task_does_nothing(cdr: Cdr) -> None:
    assert cdr_process(cdr.pk) is not None
    first = Cdr.objects.get(pk=cdr.pk)
    assert first.processed_at is not None
    assert cdr_process(cdr.pk) is None
    assert (CdrAudit.objects.count(), DriverReceipt.objects.count()) == (1, 1)
    assert Cdr.objects.get(pk=cdr.pk).processed_at == first.processed_at


def test_a_cdr_another_worker_holds_is_left_to_it(cdr: Cdr) -> None:
    Cdr.objects.filter(pk=cdr.pk).update(claimed_at=timezone.now())
    assert cdr_process(cdr.pk) is None
    assert not CdrAudit.objects.exists()


def test_a_claim_left_by_a_stopped_worker_expires_and_the_sweep_hands_the_cdr_on(cdr: Cdr, settings: Any) -> None:
    stopped = timezone.now() - timedelta(seconds=settings.WORK_LEASE_SECONDS + 1)
    Cdr.objects.filter(pk=cdr.pk).update(claimed_at=stopped, received_at=stopped)
    assert cdrs_process_due() == [cdr.pk]
    assert cdr_process(cdr.pk) is not None
    assert cdrs_process_due() == []


def test_a_cdr_whose_task_was_lost_is_swept_after_the_grace_period(cdr: Cdr) -> None:
    assert cdrs_process_due() == []  # just received: its own task is on its way
    Cdr.objects.filter(pk=cdr.pk).update(received_at=timezone.now() - timedelta(minutes=1))
    assert cdrs_process_due() == [cdr.pk]


def test_the_sweep_task_queues_what_is_due(cdr: Cdr, django_capture_on_commit_callbacks: Callable[..., Any]) -> None:
    from billing.tasks import process_due_cdrs

    Cdr.objects.filter(pk=cdr.pk).update(received_at=timezone.now() - timedelta(minutes=1))
    assert process_due_cdrs() == 1
    assert Cdr.objects.get(pk=cdr.pk).processed_at is not None  # tasks run inline in unit tests
