"""A CDR audited in review for want of a tariff (no_tariff) is audited again once the CPO's tariff comes (a PUT or a
pull), by a task after the tariff's commit and, should that task be lost, by the beat's sweep: matched, or a
difference disputed as a new CDR's is; never billed again, nothing booked."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.db import DataError, models
from django.utils import timezone

from billing import pricing
from billing.models import (
    Cdr,
    CdrAudit,
    Dispute,
    DisputeEvent,
    DriverReceipt,
    LedgerEntry,
    LedgerLine,
    Payment,
    PaymentOperation,
    Tariff,
)
from billing.services import records
from billing.services.audit import accept_as_billed, cdr_process
from emsp.models import Partner
from emsp.models.keys import ci_key
from emsp.services.sessions import session_put
from ocpi.normalize import normalize_session
from tests.billing.test_cdr_audit import bec, example_cdr, store, with_known_location  # noqa: F401 - fixtures
from tests.factories import TokenFactory

pytestmark = pytest.mark.django_db

TARIFFS = "/ocpi/emsp/2.2.1/tariffs"
MONEY = (DriverReceipt, LedgerEntry, LedgerLine, Payment, PaymentOperation)


def rows(*model_classes: type[models.Model]) -> dict[str, list[str]]:
    return {m.__name__: sorted(repr(row) for row in m.objects.order_by("pk").values()) for m in model_classes}


@pytest.fixture
def tariff(example_cdr: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    """The CPO's tariff "12" the spec's example CDR was priced with (2.00/h of TIME), last updated before it."""
    return copy.deepcopy(example_cdr["tariffs"][0])


@pytest.fixture
def cpo(client_for: Callable[..., Any], bec: Partner) -> Any:  # noqa: F811
    return client_for("BE", "BEC")


@pytest.fixture
def put(cpo: Any, django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[..., Any]:
    """PUT a tariff as the CPO, what it queues after its commit run as a worker runs it (tasks run inline)."""

    def call(body: dict[str, Any], client: Any = None) -> None:
        client = client or cpo
        path = f"{TARIFFS}/{body['country_code']}/{body['party_id']}/{body['id']}"
        with django_capture_on_commit_callbacks(execute=True):
            assert client.put(path, body).json()["status_code"] == 1000

    return call


@pytest.fixture
def billed(bec: Partner, example_cdr: dict[str, Any], spec_example: Any) -> Callable[..., Cdr]:  # noqa: F811
    """A CDR of our driver's token, at a location and of a session we hold, without tariffs of its own and naming
    tariff "12" we don't hold: processed, it is audited REVIEW no_tariff and billed as the CPO priced it."""
    TokenFactory(uid="012345678")
    session = spec_example("session_example_2_short_finished.json")
    session_put(bec, normalize_session(session, country_code="BE", party_id="BEC")[0])

    def make(**changes: Any) -> Cdr:
        obj = with_known_location(bec, example_cdr)
        obj.pop("tariffs")
        obj["session_id"] = session["id"]
        obj.update(changes)
        cdr = store(bec, obj)
        audit = cdr_process(cdr.pk)
        assert audit is not None and audit.status == CdrAudit.Status.REVIEW
        assert audit.flags == ["no_tariff"]
        assert DriverReceipt.objects.filter(cdr=cdr).exists()
        return cdr

    return make


def audit_of(cdr: Cdr) -> CdrAudit:
    return CdrAudit.objects.get(cdr=cdr)


def test_a_cdr_is_matched_when_its_tariff_is_put(billed: Callable[..., Cdr], put: Any, tariff: dict) -> None:
    cdr = billed()
    before = rows(*MONEY)
    put(tariff)
    audit = audit_of(cdr)
    assert (audit.status, audit.flags) == (CdrAudit.Status.MATCHED, [])
    assert (audit.computed_excl_vat, audit.difference_excl_vat) == (Decimal("4.00"), Decimal("0"))
    assert audit.time_zone == "Europe/Brussels"
    assert not Dispute.objects.exists()
    assert rows(*MONEY) == before  # billed once, as the CPO priced it: nothing more is booked


def test_a_difference_found_with_a_late_tariff_opens_a_dispute_and_moves_no_money(
    billed: Callable[..., Cdr], put: Any, tariff: dict
) -> None:
    cdr = billed(total_cost={"excl_vat": 5.0, "incl_vat": 5.5}, total_time_cost={"excl_vat": 5.0, "incl_vat": 5.5})
    receipt = DriverReceipt.objects.get(cdr=cdr)
    before = rows(*MONEY)
    put(tariff)
    audit = audit_of(cdr)
    assert (audit.status, audit.flags) == (CdrAudit.Status.MISMATCH, [])
    assert (audit.computed_excl_vat, audit.difference_excl_vat) == (Decimal("4.00"), Decimal("1.00"))
    dispute = Dispute.objects.get(cdr=cdr)
    assert (dispute.state, dispute.cpo_amount, dispute.our_amount) == (Dispute.State.OPEN, Decimal("5"), Decimal("4"))
    assert dispute.events.get().action == "opened"
    assert rows(*MONEY) == before
    assert DriverReceipt.objects.get(cdr=cdr).total_incl_vat == receipt.total_incl_vat


def test_a_late_tariff_updated_after_the_charge_records_the_difference_for_review(
    billed: Callable[..., Cdr], put: Any, tariff: dict
) -> None:
    """The tariff as we hold it may be a price the CPO set after the charge: no claim on the CPO."""
    cdr = billed(total_cost={"excl_vat": 5.0, "incl_vat": 5.5}, total_time_cost={"excl_vat": 5.0, "incl_vat": 5.5})
    before = rows(*MONEY)
    put({**tariff, "last_updated": "2015-07-01T00:00:00Z"})  # the charge began 2015-06-29
    audit = audit_of(cdr)
    assert (audit.status, audit.flags) == (CdrAudit.Status.REVIEW, ["tariff_newer_than_charge"])
    assert (audit.computed_excl_vat, audit.difference_excl_vat) == (Decimal("4.00"), Decimal("1.00"))
    assert not Dispute.objects.exists()
    assert rows(*MONEY) == before


def test_a_tariff_of_another_party_or_another_id_audits_nothing_again(
    billed: Callable[..., Cdr], put: Any, tariff: dict, client_for: Callable[..., Any]
) -> None:
    cdr = billed()
    first = rows(CdrAudit)
    put({**tariff, "party_id": "BED"}, client_for("BE", "BED"))  # the same id, another CPO's party
    put({**tariff, "id": "13"})  # the same party, another id
    put({**tariff, "id": "120"})  # an id the CDR's "12" is a prefix of
    assert rows(CdrAudit) == first  # not even looked at
    audit = audit_of(cdr)
    assert (audit.status, audit.flags, audit.computed_excl_vat) == (CdrAudit.Status.REVIEW, ["no_tariff"], None)


def test_tariff_ids_and_parties_are_compared_case_insensitively(
    billed: Callable[..., Cdr],
    put: Any,
    tariff: dict,
    example_cdr: dict,  # noqa: F811
) -> None:
    periods = [{**example_cdr["charging_periods"][0], "tariff_id": "t-Twelve"}]
    cdr = billed(charging_periods=periods)
    put({**tariff, "id": "T-TWELVE"})
    assert audit_of(cdr).status == CdrAudit.Status.MATCHED


def test_a_tariff_pulled_audits_the_cdrs_waiting_for_it(
    billed: Callable[..., Cdr],
    bec: Partner,  # noqa: F811
    tariff: dict,
    django_capture_on_commit_callbacks: Any,
) -> None:
    cdr = billed()
    with django_capture_on_commit_callbacks(execute=True) as queued:
        assert records.tariffs_store(bec, [tariff, {**tariff, "id": "13"}]) == 2
    assert len(queued) == 1  # one task for the page
    assert audit_of(cdr).status == CdrAudit.Status.MATCHED


def test_the_task_run_twice_changes_nothing_the_second_time(
    billed: Callable[..., Cdr],
    bec: Partner,  # noqa: F811
    tariff: dict,
) -> None:
    from billing.tasks import audit_cdrs_for_tariffs

    cdr = billed(total_cost={"excl_vat": 5.0, "incl_vat": 5.5}, total_time_cost={"excl_vat": 5.0, "incl_vat": 5.5})
    stored, _, _ = records.tariff_put(bec, tariff)  # its task is not run here (the test's transaction never commits)
    before = rows(*MONEY)
    assert audit_cdrs_for_tariffs.apply(([stored.pk],)).get() == 1
    first = rows(CdrAudit, Dispute, DisputeEvent, *MONEY)
    assert audit_cdrs_for_tariffs.apply(([stored.pk],)).get() == 0  # acks_late: a redelivered task
    assert rows(CdrAudit, Dispute, DisputeEvent, *MONEY) == first
    assert audit_of(cdr).status == CdrAudit.Status.MISMATCH
    assert Dispute.objects.count() == 1
    assert rows(*MONEY) == before


def test_the_beat_sweep_audits_a_cdr_whose_task_was_lost(billed: Callable[..., Cdr], cpo: Any, tariff: dict) -> None:
    from billing.tasks import audit_cdrs_awaiting_tariffs

    cdr = billed()
    before = rows(*MONEY)
    assert cpo.put(f"{TARIFFS}/BE/BEC/12", tariff).json()["status_code"] == 1000  # its task lost: never run
    assert audit_of(cdr).status == CdrAudit.Status.REVIEW
    assert audit_cdrs_awaiting_tariffs.apply().get() == 1
    assert audit_of(cdr).status == CdrAudit.Status.MATCHED
    assert audit_cdrs_awaiting_tariffs.apply().get() == 0
    assert rows(*MONEY) == before


def test_the_sweep_finds_a_cdr_audited_while_its_tariff_was_being_stored(
    billed: Callable[..., Cdr],
    bec: Partner,  # noqa: F811
    tariff: dict,
) -> None:
    """Its processing read the tariffs before the tariff's commit, and timed its audit after the tariff's
    received_at: the tariff's task, run before the CDR's commit, did not see it either."""
    from billing.services.audit import LATE_TARIFF_MARGIN, cdrs_awaiting_tariffs

    cdr = billed()
    stored, _, _ = records.tariff_put(bec, tariff)
    CdrAudit.objects.filter(cdr=cdr).update(audited_at=stored.received_at + LATE_TARIFF_MARGIN - timedelta(seconds=1))
    assert cdrs_awaiting_tariffs() == [cdr.pk]
    CdrAudit.objects.filter(cdr=cdr).update(audited_at=stored.received_at + LATE_TARIFF_MARGIN + timedelta(seconds=1))
    assert cdrs_awaiting_tariffs() == []  # audited well after the tariff was here: it had it


def test_a_cdr_still_without_its_tariff_is_passed_over_until_another_tariff_comes(
    billed: Callable[..., Cdr],
    bec: Partner,  # noqa: F811
    tariff: dict,
) -> None:
    from billing.services.audit import cdrs_audit_late_tariffs, cdrs_awaiting_tariffs

    cdr = billed()
    other, _, _ = records.tariff_put(bec, {**tariff, "id": "13"})
    assert cdrs_awaiting_tariffs() == [cdr.pk]
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        assert cdrs_audit_late_tariffs() == 0  # looked at: "13" does not price it
        assert cdrs_awaiting_tariffs() == []
        assert audit_of(cdr).flags == ["no_tariff"]
    with time_machine.travel(timezone.now() + timedelta(minutes=20)):
        records.tariff_put(bec, tariff)
        assert cdrs_awaiting_tariffs(tariff_ids=[other.pk]) == []  # the page of "13" alone: not named by the CDR
        assert cdrs_awaiting_tariffs() == [cdr.pk]
        assert cdrs_audit_late_tariffs() == 1
    assert audit_of(cdr).status == CdrAudit.Status.MATCHED


def test_a_held_cdr_keeps_its_hold_and_bills_nobody(
    bec: Partner,  # noqa: F811
    example_cdr: dict[str, Any],  # noqa: F811
    put: Any,
    tariff: dict,
) -> None:
    """Another eMSP's token: held for review, billed to nobody. The late tariff prices it; it stays held."""
    TokenFactory(uid="012345678")
    obj = {k: v for k, v in with_known_location(bec, example_cdr).items() if k != "tariffs"}
    obj["cdr_token"] = {**obj["cdr_token"], "country_code": "DE", "party_id": "TNM"}
    obj["total_cost"] = {"excl_vat": 5.0, "incl_vat": 5.5}
    cdr = store(bec, obj)
    cdr_process(cdr.pk)
    assert set(audit_of(cdr).flags) == {"foreign_token", "no_session", "no_tariff"}
    put(tariff)
    audit = audit_of(cdr)
    assert audit.status == CdrAudit.Status.REVIEW
    assert set(audit.flags) == {"foreign_token", "no_session"}
    assert audit.computed_excl_vat == Decimal("4.00")
    assert not Dispute.objects.exists()
    assert not DriverReceipt.objects.exists()
    assert not LedgerEntry.objects.exists()


def test_a_cdr_staff_accepted_as_billed_is_left_as_it_is(
    billed: Callable[..., Cdr], put: Any, tariff: dict, login: Callable[[str], Any]
) -> None:
    cdr = billed(total_cost={"excl_vat": 5.0, "incl_vat": 5.5}, total_time_cost={"excl_vat": 5.0, "incl_vat": 5.5})
    staff = login("finance").user
    assert accept_as_billed(cdr.pk, staff).accepted
    put(tariff)
    audit = audit_of(cdr)
    assert (audit.status, audit.flags) == (CdrAudit.Status.REVIEW, ["no_tariff", "accepted_as_billed"])
    assert not Dispute.objects.exists()


def test_a_cdr_its_credit_cdr_already_corrected_has_the_dispute_settled(
    billed: Callable[..., Cdr],
    bec: Partner,  # noqa: F811
    put: Any,
    tariff: dict,
    example_cdr: dict,  # noqa: F811
) -> None:
    """As the credit's processing settles an open dispute when the net agrees with our price."""
    cdr = billed(total_cost={"excl_vat": 5.0, "incl_vat": 5.5}, total_time_cost={"excl_vat": 5.0, "incl_vat": 5.5})
    credit = {k: v for k, v in with_known_location(bec, example_cdr).items() if k not in ("tariffs", "total_time_cost")}
    credit.update(
        id="12345-C", credit=True, credit_reference_id="12345", total_cost={"excl_vat": -1.0, "incl_vat": -1.1}
    )
    credit_cdr = store(bec, credit)
    cdr_process(credit_cdr.pk)
    before = rows(*MONEY)
    put(tariff)
    assert audit_of(cdr).status == CdrAudit.Status.MISMATCH
    dispute = Dispute.objects.get(cdr=cdr)
    assert (dispute.state, dispute.credit_amount) == (Dispute.State.CREDITED, Decimal("1"))
    assert rows(*MONEY) == before
    assert Cdr.objects.filter(pk=cdr.pk, processed_at__isnull=False).exists()


# --- found by the review of the late tariff's audit -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_tariff_put_while_the_task_queue_is_down_is_stored_and_answered(
    cpo: Any, tariff: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its task, queued after the commit, is best effort: the beat's sweep does what it would have. A tariff PUT
    had never touched Redis before; with the task it answered 500 for a tariff it had stored."""
    import redis

    from emsp import queue_push

    def down() -> Any:
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(queue_push, "pushable", lambda task: True)
    monkeypatch.setattr(queue_push, "_script", down)
    response = cpo.put(f"{TARIFFS}/BE/BEC/12", tariff)
    assert Tariff.objects.filter(tariff_id="12").exists()
    assert (response.status_code, response.json()["status_code"]) == (201, 1000)


def test_a_cdr_whose_audit_again_fails_does_not_stop_the_others(
    billed: Callable[..., Cdr],
    cpo: Any,
    tariff: dict,
    bec: Partner,  # noqa: F811
    example_cdr: dict,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An audit that fails (it was 1,000,000 a kWh on 20,000 kWh, beyond what an audit stored, numeric(14,4) on
    PostgreSQL, before such a price was audited UNPRICEABLE: tests/billing/test_money_limits.py): the oldest
    waiting CDR failed its audit at every run, never timed anew, and every later one of every party waited behind
    it for ever."""
    from billing.services.audit import cdrs_audit_late_tariffs

    price_cdr = pricing.price_cdr

    def failing(cdr: dict[str, Any], **kwargs: Any) -> pricing.PriceResult:
        if cdr.get("id") == "POISON":
            raise DataError("numeric field overflow")
        return price_cdr(cdr, **kwargs)

    poison = with_known_location(bec, example_cdr)
    poison.pop("tariffs")
    poison.pop("total_time_cost")
    poison.update(id="POISON", session_id="NO-SUCH-SESSION", total_energy=20000)
    poison["charging_periods"] = [
        {
            "start_date_time": "2015-06-29T21:39:09Z",
            "dimensions": [{"type": "ENERGY", "volume": 20000}],
            "tariff_id": "P",
        }
    ]
    poison_cdr = store(bec, poison)
    assert "no_tariff" in cdr_process(poison_cdr.pk).flags
    CdrAudit.objects.filter(cdr=poison_cdr).update(audited_at=timezone.now() - timedelta(hours=1))
    good = billed()
    price_p = {**copy.deepcopy(tariff), "id": "P"}
    price_p["elements"] = [{"price_components": [{"type": "ENERGY", "price": 1000000, "step_size": 1}]}]
    for body in (price_p, tariff):  # their tasks not run (the test's transaction never commits)
        assert cpo.put(f"{TARIFFS}/BE/BEC/{body['id']}", body).json()["status_code"] == 1000
    monkeypatch.setattr(pricing, "price_cdr", failing)
    for _ in range(3):
        cdrs_audit_late_tariffs()
    assert audit_of(good).status == CdrAudit.Status.MATCHED
    poison_audit = audit_of(poison_cdr)
    assert (poison_audit.status, poison_audit.error) == (
        CdrAudit.Status.REVIEW,
        "audit with a late tariff failed: DataError",
    )
    assert "no_tariff" in poison_audit.flags  # as it was, looked at again when another tariff comes


def test_a_cdr_naming_two_tariffs_is_audited_once_both_are_here(
    billed: Callable[..., Cdr],
    put: Any,
    tariff: dict,
    example_cdr: dict,  # noqa: F811
) -> None:
    """Audited when "12" came, priced all with "12" (inexact: REVIEW), no_tariff gone: "13" was never looked at."""
    t13 = {**copy.deepcopy(tariff), "id": "13"}
    t13["elements"][0]["price_components"][0]["price"] = 4.00
    first = example_cdr["charging_periods"][0]
    periods = [
        {**first, "dimensions": [{"type": "TIME", "volume": 1.0}], "tariff_id": "12"},
        {
            "start_date_time": "2015-06-29T22:39:09Z",
            "dimensions": [{"type": "TIME", "volume": 0.973}],
            "tariff_id": "13",
        },
    ]
    obj = copy.deepcopy(example_cdr)
    obj.pop("tariffs")
    obj["charging_periods"] = periods
    ours = pricing.price_cdr(obj, tariffs=[tariff, t13], time_zone="Europe/Brussels")
    total = {"excl_vat": float(ours.total_cost.excl_vat), "incl_vat": float(ours.total_cost.incl_vat)}
    time_cost = {"excl_vat": float(ours.total_time_cost.excl_vat), "incl_vat": float(ours.total_time_cost.incl_vat)}
    cdr = billed(charging_periods=periods, total_cost=total, total_time_cost=time_cost)
    put(tariff)
    audit = audit_of(cdr)
    assert (audit.status, audit.flags) == (CdrAudit.Status.REVIEW, ["no_tariff"])  # waits for "13"
    assert audit.error == "no tariff to price with: waiting for 13"
    put(t13)
    assert audit_of(cdr).status == CdrAudit.Status.MATCHED


def test_a_cdr_the_cpo_already_voided_gets_no_dispute(
    billed: Callable[..., Cdr],
    put: Any,
    tariff: dict,
    bec: Partner,  # noqa: F811
    example_cdr: dict,  # noqa: F811
) -> None:
    """Voided by a credit CDR before its tariff came: nothing is owed either way, and a dispute on it (credit limit
    0) could be neither credited nor settled, and kept the period from reconciling. The price is recorded."""
    cdr = billed(total_cost={"excl_vat": 5.0, "incl_vat": 5.5}, total_time_cost={"excl_vat": 5.0, "incl_vat": 5.5})
    credit = {k: v for k, v in with_known_location(bec, example_cdr).items() if k not in ("tariffs", "total_time_cost")}
    credit.update(
        id="12345-C", credit=True, credit_reference_id="12345", total_cost={"excl_vat": -5.0, "incl_vat": -5.5}
    )
    credit_cdr = store(bec, credit)
    assert cdr_process(credit_cdr.pk).status == CdrAudit.Status.CREDIT
    before = rows(*MONEY)
    put(tariff)
    assert not Dispute.objects.filter(cdr=cdr, state__in=Dispute.OPEN_STATES).exists()
    audit = audit_of(cdr)
    assert (audit.status, audit.flags) == (CdrAudit.Status.REVIEW, ["voided_by_credit"])
    assert (audit.computed_excl_vat, audit.difference_excl_vat) == (Decimal("4.00"), Decimal("1.00"))
    assert rows(*MONEY) == before


def _clone_waiting(base: Cdr, n: int, *, tariff_id: str, audited_at: Any) -> None:
    """`n` CDRs of `base`'s party in review as no_tariff, naming `tariff_id`, audited at `audited_at`."""
    cdrs = []
    for i in range(n):
        data = copy.deepcopy(base.data)
        data["id"] = f"OLD{i}"
        data["charging_periods"][0]["tariff_id"] = tariff_id
        cdrs.append(
            Cdr(
                partner=base.partner,
                country_code=base.country_code,
                party_id=base.party_id,
                cdr_id=f"OLD{i}",
                ocpi_key=ci_key(base.country_code, base.party_id, f"OLD{i}"),
                start_date_time=base.start_date_time,
                end_date_time=base.end_date_time,
                currency=base.currency,
                total_cost_excl_vat=base.total_cost_excl_vat,
                total_cost_incl_vat=base.total_cost_incl_vat,
                last_updated=base.last_updated,
                data=data,
                processed_at=timezone.now(),
                token_uid=base.token_uid,
            )
        )
    Cdr.objects.bulk_create(cdrs, batch_size=1000)
    CdrAudit.objects.bulk_create(
        [
            CdrAudit(
                cdr=c, status=CdrAudit.Status.REVIEW, currency=c.currency, flags=["no_tariff"], audited_at=audited_at
            )
            for c in Cdr.objects.filter(cdr_id__startswith="OLD")
        ],
        batch_size=1000,
    )


def test_a_tariffs_task_finds_the_cdr_naming_it_behind_2000_older_waiting_cdrs(
    billed: Callable[..., Cdr], put: Any, tariff: dict
) -> None:
    """The task looked at the 2,000 oldest waiting CDRs of the party, then for those naming the tariff: 2,001
    older ones naming a tariff that never came hid it."""
    cdr = billed()
    _clone_waiting(cdr, 2001, tariff_id="X", audited_at=timezone.now() - timedelta(days=1))
    put(tariff)
    assert audit_of(cdr).status == CdrAudit.Status.MATCHED
    assert CdrAudit.objects.filter(cdr__cdr_id__startswith="OLD", flags__icontains='"no_tariff"').count() == 2001


def test_the_sweep_audits_a_cdr_whose_tariff_came_behind_2000_older_ones_still_waiting(
    billed: Callable[..., Cdr], cpo: Any, tariff: dict
) -> None:
    """It took 200 a run, oldest first, each locked and timed anew: 11 runs before the one its tariff priced. Now
    the 2,000 it looks at in a run whose tariff is still missing are timed anew at once: the second run prices it."""
    from billing.services.audit import cdrs_audit_late_tariffs, cdrs_awaiting_tariffs

    cdr = billed()
    _clone_waiting(cdr, 2001, tariff_id="X", audited_at=timezone.now() - timedelta(days=1))
    assert cpo.put(f"{TARIFFS}/BE/BEC/12", tariff).json()["status_code"] == 1000  # its task lost: never run
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        assert cdrs_audit_late_tariffs() == 0
        assert cdrs_audit_late_tariffs() == 1
        assert cdrs_awaiting_tariffs() == []  # timed anew: until another tariff of the party comes
    assert audit_of(cdr).status == CdrAudit.Status.MATCHED
    waiting = CdrAudit.objects.filter(cdr__cdr_id__startswith="OLD")
    assert waiting.filter(status=CdrAudit.Status.REVIEW, flags__icontains='"no_tariff"').count() == 2001
    assert not waiting.exclude(error="no tariff to price with").exists()
