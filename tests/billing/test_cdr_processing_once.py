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
def our_cdr(example_cdr: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """The spec's example CDR for a token of ours: its DE*TNM token is another eMSP's, which bills no driver."""
    return {**example_cdr, "cdr_token": {**example_cdr["cdr_token"], "country_code": "IN", "party_id": "EMS"}}


@pytest.fixture
def cdr(bec: Any, our_cdr: dict[str, Any]) -> Cdr:  # noqa: F811
    from tests.factories import TokenFactory

    TokenFactory(uid="012345678")
    return store(bec, our_cdr)


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


def test_processing_a_cdr_takes_no_savepoint_and_a_dozen_statements(
    bec: Any,  # noqa: F811
    our_cdr: dict[str, Any],
    cdr: Cdr,
) -> None:
    """The audit row, the receipt and the ledger entry are one INSERT each (no SELECT before, no savepoint
    around): 28 statements for a CDR before, 11 then (docs/benchmarks.md), 13 now: one more looks for credit
    CDRs that came before their original (billing/services/audit.py _credits_waiting_for), one hands on those put
    off for it (`_waiting_handed_on`). Measured on a second CDR, as on a running platform: the first one opens the
    ledger's accounts."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    assert cdr_process(cdr.pk) is not None
    second = store(bec, {**our_cdr, "id": our_cdr["id"] + "-2"})
    with CaptureQueriesContext(connection) as queries:
        assert cdr_process(second.pk) is not None
    # The test's own transaction makes the CDR's (a BEGIN and COMMIT in a worker) a savepoint: the only one.
    # A worker reads the ledger's accounts once per process (billing/tasks.py), after a commit a test never makes.
    statements = [q["sql"] for q in queries.captured_queries if '"billing_ledgeraccount"' not in q["sql"]]
    assert len([s for s in statements if "SAVEPOINT" in s.upper()]) == 2, statements
    assert len(statements) <= 2 + 13, statements
    assert (CdrAudit.objects.count(), DriverReceipt.objects.count()) == (2, 2)


def test_auditing_again_replaces_the_audit_row_in_place(cdr: Cdr) -> None:
    from billing.services.audit import cdr_audit

    first = cdr_audit(cdr)
    CdrAudit.objects.filter(pk=first.pk).update(status=CdrAudit.Status.REVIEW, flags=["stale"], error="old")
    again = cdr_audit(cdr)
    stored = CdrAudit.objects.get()
    assert again.pk == first.pk == stored.pk
    assert (stored.status, stored.flags, stored.error) == (first.status, first.flags, "")
    assert stored.audited_at >= first.audited_at


def test_a_receipt_written_by_a_twin_meanwhile_is_the_one_returned(cdr: Cdr) -> None:
    """The SELECT at the top found nothing, then a concurrent worker's INSERT won: ours is not written."""
    from unittest import mock

    from billing.services import driver_pricing

    theirs = driver_pricing.receipt_for_cdr(cdr)
    assert theirs is not None
    empty = DriverReceipt.objects.none()
    with mock.patch.object(DriverReceipt.objects, "filter", return_value=empty):
        ours = driver_pricing.receipt_for_cdr(cdr)
    assert ours is not None and ours.pk == theirs.pk
    assert DriverReceipt.objects.count() == 1


def test_the_locked_cdr_is_the_row_the_orm_loads_with_its_cpo(cdr: Cdr) -> None:
    """cdr_process reads its CDR in plain SQL (billing/services/audit.py::locked_cdr): every column as the ORM
    builds it, the CPO with it, the row locked FOR UPDATE where the database has row locks."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing.services.audit import locked_cdr

    expected = Cdr.objects.select_related("partner").get(pk=cdr.pk)
    with CaptureQueriesContext(connection) as queries:
        locked = locked_cdr(cdr.pk)
        assert locked is not None
        assert locked.partner == expected.partner and locked.partner.name == expected.partner.name
        assert locked.credited_cdr is None
    assert len(queries) == 1  # the partner and the absent credited CDR came with it
    for field in Cdr._meta.concrete_fields:
        assert getattr(locked, field.attname) == getattr(expected, field.attname), field.name
    assert "FOR UPDATE OF" in queries[0]["sql"] or not connection.features.has_select_for_update_of
    assert locked_cdr(cdr.pk + 1000) is None


def test_a_credit_cdrs_original_loads_when_read(cdr: Cdr) -> None:
    from billing.services.audit import locked_cdr
    from tests.billing.factories import CreditCdrFactory

    credit = CreditCdrFactory(credited_cdr=cdr, cdr_id=f"{cdr.cdr_id}-C", data=cdr.data)
    locked = locked_cdr(credit.pk)
    assert locked is not None and locked.credited_cdr == cdr


def test_a_receipt_whose_task_was_lost_is_issued_by_the_sweep(cdr: Cdr) -> None:
    """cdr_process queues the receipt's task after its commit: a worker killed in between (here: the commit
    hooks never run) leaves the receipt without its numbered document until the beat's sweep issues it, once."""
    from billing.models import IssuedDocument
    from billing.services.documents import RECEIPT_GRACE, receipts_due
    from billing.tasks import issue_due_receipts

    cdr_process(cdr.pk)
    receipt = DriverReceipt.objects.get(cdr=cdr)
    assert not receipt.issued and not IssuedDocument.objects.exists()
    assert receipts_due() == []  # just made: its own task is on its way
    DriverReceipt.objects.filter(pk=receipt.pk).update(created_at=timezone.now() - RECEIPT_GRACE * 2)
    assert receipts_due() == [receipt.pk]

    assert issue_due_receipts() == 1  # tasks run inline in unit tests
    document = IssuedDocument.objects.get()
    assert document.reference == f"cdr:{cdr.pk}" and DriverReceipt.objects.get(pk=receipt.pk).issued
    assert receipts_due() == [] and issue_due_receipts() == 0
    assert IssuedDocument.objects.count() == 1


def test_a_receipt_issued_but_not_marked_is_marked_without_a_second_document(cdr: Cdr) -> None:
    """The document committed and the mark lost (a migration's leftovers, a mark rolled back alone): the sweep
    finds the document issued first and only marks the receipt."""
    from billing.models import IssuedDocument
    from billing.services.documents import RECEIPT_GRACE, issue_receipt, receipts_due
    from billing.tasks import issue_due_receipts

    cdr_process(cdr.pk)
    receipt = DriverReceipt.objects.get(cdr=cdr)
    number = issue_receipt(receipt).number
    assert DriverReceipt.objects.get(pk=receipt.pk).issued  # marked in the document's transaction
    DriverReceipt.objects.filter(pk=receipt.pk).update(issued=False, created_at=timezone.now() - RECEIPT_GRACE * 2)
    assert issue_due_receipts() == 1
    assert DriverReceipt.objects.get(pk=receipt.pk).issued and receipts_due() == []
    assert list(IssuedDocument.objects.values_list("number", flat=True)) == [number]


def test_each_sweep_of_a_receipt_puts_the_next_off_twice_as_long() -> None:
    """A receipt whose issue keeps failing is queued again a minute after its first sweep, then two, four, ...,
    then daily; a receipt issued meanwhile is no longer due."""
    from billing.services.documents import RECEIPT_GRACE, SWEEP_BACKOFF_MAX, receipts_due, take_due_receipts
    from tests.billing.factories import DriverReceiptFactory

    receipt = DriverReceiptFactory()
    made = timezone.now() - RECEIPT_GRACE * 2
    DriverReceipt.objects.filter(pk=receipt.pk).update(created_at=made)
    now, waits = timezone.now(), []
    for _ in range(14):
        assert take_due_receipts(now) == [receipt.pk]
        assert take_due_receipts(now) == [] and receipts_due(now) == []  # counted: not again until its time
        row = DriverReceipt.objects.get(pk=receipt.pk)
        waits.append(row.next_sweep_at - now)
        assert receipts_due(row.next_sweep_at - timedelta(seconds=1)) == []
        now = row.next_sweep_at
    assert row.sweeps == 14
    assert waits[:5] == [RECEIPT_GRACE * n for n in (1, 2, 4, 8, 16)]
    assert waits[-1] == SWEEP_BACKOFF_MAX and max(waits) == SWEEP_BACKOFF_MAX
    DriverReceipt.objects.filter(pk=receipt.pk).update(issued=True)
    assert receipts_due(now + SWEEP_BACKOFF_MAX) == []


def test_receipts_that_keep_failing_do_not_hold_back_a_newer_lost_one() -> None:
    """A sweep takes `limit` receipts, oldest first: the ones swept before and still failing wait for their
    next time, and a receipt lost later is taken meanwhile."""
    from billing.services.documents import RECEIPT_GRACE, take_due_receipts
    from tests.billing.factories import DriverReceiptFactory

    now = timezone.now()
    failing = [DriverReceiptFactory() for _ in range(3)]
    DriverReceipt.objects.filter(pk__in=[r.pk for r in failing]).update(created_at=now - timedelta(hours=2))
    assert sorted(take_due_receipts(now, limit=3)) == sorted(r.pk for r in failing)
    lost = DriverReceiptFactory()
    DriverReceipt.objects.filter(pk=lost.pk).update(created_at=now - RECEIPT_GRACE * 2)
    later = now + timedelta(seconds=30)
    assert take_due_receipts(later, limit=3) == [lost.pk]
    assert sorted(take_due_receipts(now + RECEIPT_GRACE * 2, limit=10)) == sorted(r.pk for r in [*failing, lost])
