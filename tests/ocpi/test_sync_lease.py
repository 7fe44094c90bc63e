"""One pull per partner at a time: a duplicate task while a pull runs does nothing; a lease a stopped worker
left expires; runs it left RUNNING are closed as interrupted."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from emsp.models import Partner
from ocpi.models import SyncLease, SyncRun
from ocpi.sync import sync_partner_leased
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"


@pytest.fixture
def quiet_cpo(peer: FakePeer) -> FakePeer:
    for module in ("locations", "tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{CPO}/{module}", (200, envelope([])))
    return peer


def test_a_pull_while_another_holds_the_partner_does_nothing(partner: Partner, quiet_cpo: FakePeer) -> None:
    SyncLease.objects.create(partner=partner, holder="other", held_until=timezone.now() + timedelta(minutes=1))
    assert sync_partner_leased(partner) is None
    assert quiet_cpo.calls == []


def test_a_lease_left_by_a_stopped_worker_expires(partner: Partner, quiet_cpo: FakePeer) -> None:
    SyncLease.objects.create(partner=partner, holder="gone", held_until=timezone.now() - timedelta(seconds=1))
    stale = SyncRun.objects.create(partner=partner, module="locations", mode="FULL")
    runs = sync_partner_leased(partner, full=True)
    assert runs is not None and all(r.outcome == SyncRun.Outcome.OK for r in runs)
    stale.refresh_from_db()
    assert (stale.outcome, stale.error) == (SyncRun.Outcome.FAILED, "interrupted: the worker pulling it stopped")
    assert not SyncLease.objects.exists()  # released when done
