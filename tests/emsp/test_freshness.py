"""Freshness where it matters (issue 10, point 6): EVSEs drivers look at, of CPOs that don't push, re-read at
most 30 s apart; pulls spread over their interval; the default sync interval honoured."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from emsp import outbound
from emsp.models import Booking, Evse, Partner, WatchedEvse
from emsp.services import breakers, freshness
from ocpi import sync
from tests.factories import PartnerFactory, ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"


@pytest.fixture
def evses(partner: Partner) -> list[Evse]:
    sync.ingest_page(partner, "locations", [ocpi_location("IN", "CPA", "L1", evses=3)])
    return list(Evse.objects.order_by("uid"))


def heard(evse: Evse, seconds_ago: int) -> None:
    Evse.objects.filter(pk=evse.pk).update(status_updated_at=timezone.now() - timedelta(seconds=seconds_ago))


def evse_answer(uid: str, status: str = "CHARGING") -> Any:
    obj = ocpi_location("IN", "CPA", "L1", evses=3)["evses"][int(uid[-1]) - 1]
    return (200, envelope({**obj, "status": status, "last_updated": "2026-12-01T00:00:00Z"}))


def test_a_watched_evse_of_a_cpo_that_does_not_push_is_re_read(
    peer: FakePeer, partner: Partner, evses: list[Evse]
) -> None:
    watched, other, _ = evses
    freshness.evses_watch([watched.pk, other.pk])
    heard(watched, 21)  # older than the 30 s period less one 10 s tick: due
    heard(other, 15)  # not yet
    peer.route("GET", f"{CPO}/locations/L1/{watched.uid}", evse_answer(watched.uid))
    assert freshness.partners_to_refresh() == [partner]
    assert freshness.refresh_partner(partner) == (1, 0)
    assert [c["url"] for c in peer.calls] == [f"{CPO}/locations/L1/{watched.uid}"]
    watched.refresh_from_db()
    assert watched.status == "CHARGING"
    assert (timezone.now() - watched.status_updated_at).total_seconds() < 2
    # Just re-read: nothing due until the next period.
    assert freshness.partners_to_refresh() == []


def test_unwatched_evses_are_left_to_the_pulls(peer: FakePeer, partner: Partner, evses: list[Evse]) -> None:
    for evse in evses:
        heard(evse, 600)
    assert freshness.partners_to_refresh() == []
    freshness.evses_watch([evses[0].pk], now=timezone.now() - freshness.WATCH_FOR - timedelta(seconds=1))
    assert freshness.partners_to_refresh() == []  # watched, but that was more than WATCH_FOR ago


def test_a_booked_evse_is_kept_fresh(peer: FakePeer, partner: Partner, evses: list[Evse]) -> None:
    booked = evses[1]
    Booking.objects.create(order_id="O-1", evse=booked, connector_id="1", state=Booking.State.CHARGING)
    heard(booked, 25)
    peer.route("GET", f"{CPO}/locations/L1/{booked.uid}", evse_answer(booked.uid))
    assert freshness.refresh_partner(partner) == (1, 0)


def test_a_cpo_that_pushes_is_not_polled(peer: FakePeer, partner: Partner, evses: list[Evse], ocpi: Any) -> None:
    freshness.evses_watch([evses[0].pk])
    heard(evses[0], 60)
    patch = {"status": "AVAILABLE", "last_updated": "2026-12-01T00:00:00Z"}
    response = ocpi.patch(f"/ocpi/emsp/2.2.1/locations/IN/CPA/L1/{evses[1].uid}", patch)
    assert response.json()["status_code"] == 1000
    partner.refresh_from_db()
    assert partner.last_push_at is not None
    assert freshness.partners_to_refresh() == []
    Partner.objects.filter(pk=partner.pk).update(last_push_at=timezone.now() - timedelta(minutes=16))
    assert freshness.partners_to_refresh() == [partner]  # silent for 15 min: polled again


def test_a_cpo_whose_breaker_is_open_is_left_to_its_probe(partner: Partner, evses: list[Evse]) -> None:
    freshness.evses_watch([evses[0].pk])
    heard(evses[0], 60)
    for _ in range(3):
        breakers.failed(partner, "locations", "timeout")
    assert freshness.partners_to_refresh() == []


def test_a_failure_that_opens_the_breaker_stops_the_round(
    peer: FakePeer, partner: Partner, evses: list[Evse], settings: Any
) -> None:
    settings.OCPI_BREAKER_FAILURES = 2

    def down(call: dict[str, Any]) -> Any:
        raise outbound.OutboundError("ReadTimeout")

    for evse in evses:
        peer.route("GET", f"{CPO}/locations/L1/{evse.uid}", down)
        heard(evse, 60)
    freshness.evses_watch(e.pk for e in evses)
    assert freshness.refresh_partner(partner) == (0, 2)
    assert len(peer.calls) == 2  # the third EVSE is not tried: the breaker opened on the second failure


def test_watching_again_extends_the_watch(partner: Partner, evses: list[Evse]) -> None:
    then = timezone.now() - timedelta(hours=1)
    freshness.evses_watch([evses[0].pk, evses[1].pk], now=then)
    freshness.evses_watch([evses[1].pk, evses[2].pk])  # one already watched, one new: one statement for both
    until = dict(WatchedEvse.objects.values_list("evse_id", "until"))
    assert until[evses[0].pk] == then + freshness.WATCH_FOR
    assert until[evses[1].pk] == until[evses[2].pk] > timezone.now()


def test_a_watch_shown_again_within_a_minute_is_not_rewritten(partner: Partner, evses: list[Evse]) -> None:
    """The EVSEs of a busy area are in most searches: their watch rows are written once a minute, not in each."""
    first = timezone.now() - timedelta(seconds=30)
    freshness.evses_watch([evses[0].pk], now=first)
    freshness.evses_watch([evses[0].pk])  # 30 s later: still watched for 9.5 min, left alone
    assert WatchedEvse.objects.get(evse=evses[0]).until == first + freshness.WATCH_FOR
    later = first + freshness.REWATCH_SLACK + timedelta(seconds=1)
    freshness.evses_watch([evses[0].pk], now=later)
    assert WatchedEvse.objects.get(evse=evses[0]).until == later + freshness.WATCH_FOR


def test_expired_watches_are_forgotten(partner: Partner, evses: list[Evse]) -> None:
    freshness.evses_watch([evses[0].pk], now=timezone.now() - timedelta(hours=1))
    freshness.evses_watch([evses[1].pk])
    assert freshness.forget_expired() == 1
    assert list(WatchedEvse.objects.values_list("evse_id", flat=True)) == [evses[1].pk]


# --- pull scheduling -------------------------------------------------------------------------------------


def test_pulls_are_spread_over_the_interval(db: None) -> None:
    partners = [PartnerFactory(sync_interval_minutes=60, next_sync_at=None) for _ in range(60)]
    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
    due = sync.schedule_due(now)
    assert len(due) == 60  # all due now (never pulled) ...
    slots = sorted(Partner.objects.filter(pk__in=[p.pk for p in partners]).values_list("next_sync_at", flat=True))
    # ... and their next pulls spread over the hour, not all at 13:00.
    assert all(now < slot <= now + timedelta(hours=1) for slot in slots)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    assert max(gaps) < 3 * 60, "the largest gap is under three times an even share of the hour"
    assert len({slot.replace(microsecond=0) for slot in slots}) == 60


def test_each_partner_keeps_its_rhythm(db: None) -> None:
    partner = PartnerFactory(sync_interval_minutes=30)
    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
    first = sync.next_slot(partner, now)
    assert now < first <= now + timedelta(minutes=30)
    assert sync.next_slot(partner, first) == first + timedelta(minutes=30)
    assert sync.next_slot(partner, first + timedelta(seconds=1)) == first + timedelta(minutes=30)


def test_the_default_sync_interval_is_honoured(db: None, settings: Any) -> None:
    settings.OCPI_DEFAULT_SYNC_INTERVAL_MINUTES = 15
    assert Partner.objects.create(name="New CPO", country_code="DE", party_id="NEW").sync_interval_minutes == 15


@pytest.mark.parametrize("interval", [1, 7, 30, 60, 1440])
def test_a_slot_is_never_answered_twice_whatever_the_microseconds(interval: int) -> None:
    """Exact arithmetic: asked at its own slot, a partner's next pull is one interval on, never the same slot
    (float seconds rounded some of these back onto it)."""
    now = datetime(2026, 12, 2, 12, 23, 40, 302629, tzinfo=UTC)
    for pk in range(1, 400):
        partner = Partner(pk=pk, sync_interval_minutes=interval)
        first = sync.next_slot(partner, now)
        assert now < first <= now + timedelta(minutes=interval)
        assert sync.next_slot(partner, first) == first + timedelta(minutes=interval)
