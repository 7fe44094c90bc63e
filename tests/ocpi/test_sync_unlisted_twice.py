"""A full pull paged on by offset without `Link` or `X-Total-Count` can skip an object the CPO still has (one
deleted from an earlier page between two requests shifts the rest back), so what one such pull did not list was
kept: more than MAX_UNLISTED_CHECKS locations, and any tariff, for ever. What two consecutive full pulls ended OK
both did not list, with nothing received of it in between, is gone: withdrawn (a location) or deleted (a tariff).
A skip by shifting falls on the same object twice in a row only by an extraordinary coincidence."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from billing.models import Tariff
from billing.services import records
from emsp.models import Connector, Evse, Location, Partner
from emsp.services import catalogue
from ocpi import sync
from ocpi.models import DataQualityIssue, HubClientInfo, SyncRun
from tests.factories import ocpi_location
from tests.fakes import FakePeer, envelope
from tests.ocpi import test_hubs
from tests.ocpi.test_hubs import HUB
from tests.ocpi.test_pull_without_link import (
    CPO,
    capped,
    first_full_pull,
    hub_locations,
    locations,
    one_of,
    shifting_cpo,
    withdrawn,
)

pytestmark = pytest.mark.django_db

hub = test_hubs.hub


def pull(peer: FakePeer, partner: Partner, listed: list[dict[str, Any]], **cpo: Any) -> SyncRun:
    """A full pull of locations from a CPO capped at 10 a page without Link or total, listing `listed` and
    answering GET of one of them (404 for another)."""
    peer.route("GET", f"{CPO}/locations", capped(listed, **{"limit": 10, **cpo}))
    for loc in locations(25):
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(listed))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    return run


def but(*ids: str) -> list[dict[str, Any]]:
    return [loc for loc in locations(25) if loc["id"] not in ids]


def finding(run: SyncRun, module: str = "locations") -> DataQualityIssue:
    return DataQualityIssue.objects.get(object_id=f"pull {run.pk}", code="unlisted_checked", module=module)


def test_more_than_the_checks_not_listed_by_two_pulls_are_withdrawn(peer: FakePeer, partner: Partner) -> None:
    """A CPO that drops 101 of its 120 locations: the first pull paged on keeps them all (more than the 100
    asked for one by one), the second withdraws them."""
    every = [ocpi_location("IN", "CPA", f"LOC{i:03d}", evses=1) for i in range(120)]
    peer.route("GET", f"{CPO}/locations", (200, envelope(every)))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    listed = every[:10] + every[111:]  # a full page of 10, then a short one of 9
    peer.route("GET", f"{CPO}/locations", capped(listed, limit=10))

    first = sync.sync_module(partner, "locations", full=True)
    assert first is not None and first.outcome == SyncRun.Outcome.OK and first.received == 19
    assert withdrawn() == [] and len(first.unlisted) == 101
    assert "more than the 100 asked for one by one: none was withdrawn" in finding(first).message
    assert "101 of those kept are withdrawn if the next full pull does not list them either" in finding(first).message

    second = sync.sync_module(partner, "locations", full=True)
    assert second is not None and second.outcome == SyncRun.Outcome.OK
    assert withdrawn() == [f"LOC{i:03d}" for i in range(10, 111)]
    assert Location.objects.visible().count() == 19
    assert second.unlisted == {}
    assert finding(second).fixed is True
    assert finding(second).message == (
        "101 locations were not listed by a pull paged on by offset without X-Total-Count: 101 not listed by the "
        f"previous full pull (pull {first.pk}) either, nothing received since: withdrawn"
    )


def test_a_location_the_previous_pull_listed_is_kept_when_this_one_skips_it(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOC020 is no longer listed by either pull; LOC010, listed by the first, is skipped by the second (LOC003
    deleted once its first page is sent shifts it off the offset): only LOC020 is withdrawn, LOC010 is kept and
    counted as missed once."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)  # none asked for alone
    first_full_pull(peer, partner)
    first = pull(peer, partner, but("LOC020"))
    assert list(first.unlisted) == ["IN*CPA*LOC020"]
    shifting_cpo(peer)
    second = sync.sync_module(partner, "locations", full=True)
    assert second is not None and second.outcome == SyncRun.Outcome.OK
    assert withdrawn() == ["LOC020"]
    assert list(second.unlisted) == ["IN*CPA*LOC010"]
    assert finding(second).message.endswith(
        "1 not listed by the previous full pull "
        f"(pull {first.pk}) either, nothing received since: withdrawn; the other 1: more than the 0 asked for one "
        "by one: none was withdrawn; 1 of those kept are withdrawn if the next full pull does not list them either"
    )
    assert finding(second).fixed is False


def test_a_location_listed_older_than_ours_counts_as_listed(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An EVSE PATCH stamped later than its location moves our location's last_updated on (its parents follow);
    a CPO that does not move its own lists the location older than ours, and the pull ignores it: its
    received_at stays as it was. Listed all the same: the next pull that skips it keeps it."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    first_full_pull(peer, partner)
    patched = catalogue.evse_patch_at(
        "IN", "CPA", "LOC005", "LOC005-E1", {"status": "CHARGING", "last_updated": "2026-01-02T00:00:00Z"}
    )
    assert patched is not None and patched.applied
    first = pull(peer, partner, but("LOC020"))
    listed_stale = Location.objects.get(location_id="LOC005")
    assert listed_stale.received_at < first.started_at  # received_at alone can't tell it was listed
    assert list(first.unlisted) == ["IN*CPA*LOC020"]
    pull(peer, partner, but("LOC020", "LOC005"))
    assert withdrawn() == ["LOC020"]


def put_location(partner: Partner) -> None:
    """The CPO PUTs LOC017 again, unchanged (what the Locations receiver's PUT stores): only its received_at tells."""
    stored = catalogue.locations_store(
        partner, [ocpi_location("IN", "CPA", "LOC017", last_updated="2026-01-01T00:00:00Z")]
    )
    assert stored.updated == 1


def patch_evse_status(partner: Partner) -> None:
    """The CPO PATCHes an EVSE's status, unstamped (as OCPI 2.1.1 lets it): no stamp moves, its status is heard."""
    patched = catalogue.evse_patch_at("IN", "CPA", "LOC017", "LOC017-E2", {"status": "CHARGING"})
    assert patched is not None and patched.applied


def patch_connector(partner: Partner) -> None:
    """The CPO PATCHes a connector, stamped: its location's last_updated follows."""
    evse = Evse.objects.get(location__location_id="LOC017", uid="LOC017-E1")
    connector = Connector.objects.get(evse=evse)
    assert catalogue.connector_patch(
        evse, connector, {"max_voltage": 400, "last_updated": "2026-01-03T00:00:00Z"}
    ).applied


@pytest.mark.parametrize("push", [put_location, patch_evse_status, patch_connector])
def test_a_location_pushed_between_two_pulls_that_did_not_list_it_is_kept(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch, push: Callable[[Partner], None]
) -> None:
    """Something received of LOC017 between the two pulls: the second miss counts as its first, and only a
    third pull missing it withdraws it."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    first_full_pull(peer, partner)
    pull(peer, partner, but("LOC017"))
    push(partner)
    second = pull(peer, partner, but("LOC017"))
    assert withdrawn() == []
    assert list(second.unlisted) == ["IN*CPA*LOC017"]
    pull(peer, partner, but("LOC017"))
    assert withdrawn() == ["LOC017"]


def test_a_location_the_cpo_sends_alone_is_not_counted_as_missed(peer: FakePeer, partner: Partner) -> None:
    """Up to MAX_UNLISTED_CHECKS, as before: LOC010, skipped by the shifted offset, is asked for alone and sent;
    LOC020 is unknown to the CPO and withdrawn at once. Neither is left to count as missed."""
    first_full_pull(peer, partner)
    shifting_cpo(peer)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK
    assert withdrawn() == ["LOC020"]
    assert run.unlisted == {}


def test_a_cpo_that_does_not_send_a_location_alone_has_it_withdrawn_by_the_second_pull_missing_it(
    peer: FakePeer, partner: Partner
) -> None:
    """The control (a listed location asked for alone) is not sent: the CPO's answers tell nothing, and the first
    pull keeps LOC020; the second that does not list it withdraws it without asking."""
    first_full_pull(peer, partner)
    peer.route("GET", f"{CPO}/locations", capped(but("LOC020"), limit=10))  # GET of one: unrouted, HTTP 404
    first = sync.sync_module(partner, "locations", full=True)
    assert first is not None and withdrawn() == [] and list(first.unlisted) == ["IN*CPA*LOC020"]
    assert "the CPO's answers tell nothing, none was withdrawn" in finding(first).message
    peer.calls.clear()
    sync.sync_module(partner, "locations", full=True)
    assert withdrawn() == ["LOC020"]
    assert not [c for c in peer.calls if "/locations/" in c["url"]]


def test_a_full_pull_that_ended_open_in_between_starts_the_count_again(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pulls missing LOC017 only count when they follow each other: a full pull in between that did not see
    the whole list (the CPO ignored the offset) notes nothing missed."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    first_full_pull(peer, partner)
    pull(peer, partner, but("LOC017"))
    between = pull(peer, partner, but("LOC017"), offset_kept=False)
    assert between.unlisted == {}
    pull(peer, partner, but("LOC017"))
    assert withdrawn() == []
    pull(peer, partner, but("LOC017"))
    assert withdrawn() == ["LOC017"]


def hub_pull(peer: FakePeer, hub: Partner, listed: list[dict[str, Any]]) -> SyncRun:
    """A full pull from the hub capped at 10 a page without Link or total; it has no GET of one location."""
    peer.route("GET", f"{HUB}/locations", capped(listed, limit=10))
    run = sync.sync_module(hub, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    return run


def first_hub_pull(peer: FakePeer, hub: Partner) -> None:
    peer.route("GET", f"{HUB}/locations", (200, envelope(hub_locations())))
    sync.sync_module(hub, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))


def test_behind_a_hub_a_party_it_says_cant_be_reached_has_none_withdrawn(peer: FakePeer, hub: Partner) -> None:
    """LOC005 of IN*CPA and LOC015 of IN*CPB not listed by two pulls: IN*CPB is OFFLINE at the hub
    (HubClientInfo), and a hub may leave out what it can't reach. LOC005 is withdrawn, LOC015 kept."""
    first_hub_pull(peer, hub)
    HubClientInfo.objects.create(
        partner=hub, country_code="IN", party_id="CPB", role="CPO", status="OFFLINE", last_updated=timezone.now()
    )
    listed = [loc for loc in hub_locations() if loc["id"] not in ("LOC005", "LOC015")]
    first = hub_pull(peer, hub, listed)
    assert list(first.unlisted) == ["IN*CPA*LOC005"]
    hub_pull(peer, hub, listed)
    assert withdrawn() == ["LOC005"]


def test_behind_a_hub_a_party_none_of_whose_locations_came_has_none_withdrawn(peer: FakePeer, hub: Partner) -> None:
    """The hub's list leaves IN*CPB out altogether (and LOC005 of IN*CPA) twice: a party's absence tells nothing
    of each of its locations. LOC005 is withdrawn; IN*CPB's are kept."""
    first_hub_pull(peer, hub)
    cpa = [loc for loc in hub_locations() if loc["party_id"] == "CPA" and loc["id"] != "LOC005"]
    cpa_more = [ocpi_location("IN", "CPA", f"NEW{i}") for i in range(2)]  # a full first page, then a short one
    first = hub_pull(peer, hub, cpa + cpa_more)
    assert list(first.unlisted) == ["IN*CPA*LOC005"]
    hub_pull(peer, hub, cpa + cpa_more)
    assert withdrawn() == ["LOC005"]
    assert Location.objects.filter(party_id="CPB").visible().count() == 15


def tariffs(spec_example: Any, n: int) -> list[dict[str, Any]]:
    tariff = {**spec_example("tariff_14_step_size.json"), "country_code": "IN", "party_id": "CPA"}
    return [{**tariff, "id": f"T{i:02d}"} for i in range(n)]


def tariff_pull(peer: FakePeer, partner: Partner, listed: list[dict[str, Any]]) -> SyncRun:
    peer.route("GET", f"{CPO}/tariffs", capped(listed, limit=5))
    run = sync.sync_module(partner, "tariffs", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK and run.pages == 3, run.error
    return run


def first_tariff_pull(peer: FakePeer, partner: Partner, every: list[dict[str, Any]]) -> None:
    peer.route("GET", f"{CPO}/tariffs", (200, envelope(every)))
    sync.sync_module(partner, "tariffs", full=True)
    Tariff.objects.update(received_at=timezone.now() - timedelta(hours=1))


def test_a_tariff_not_listed_by_two_pulls_paged_on_is_deleted(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    """The Tariffs Sender interface has no GET of one tariff: the first pull that does not list T11 keeps it, the
    second deletes it."""
    every = tariffs(spec_example, 12)
    first_tariff_pull(peer, partner, every)
    first = tariff_pull(peer, partner, every[:11])
    assert Tariff.objects.count() == 12 and list(first.unlisted) == ["IN*CPA*T11"]
    assert finding(first, "tariffs").fixed is False
    second = tariff_pull(peer, partner, every[:11])
    assert sorted(Tariff.objects.values_list("tariff_id", flat=True)) == [t["id"] for t in every[:11]]
    assert finding(second, "tariffs").fixed is True
    assert finding(second, "tariffs").message == (
        "1 tariffs were not listed by a pull paged on by offset without X-Total-Count: 1 not listed by the previous "
        f"full pull (pull {first.pk}) either, nothing received since: deleted"
    )


def test_a_tariff_put_between_two_pulls_that_did_not_list_it_is_kept(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    every = tariffs(spec_example, 12)
    first_tariff_pull(peer, partner, every)
    tariff_pull(peer, partner, every[:11])
    assert records.tariff_put(partner, every[11])[2]  # the Tariffs receiver's PUT of it, unchanged
    tariff_pull(peer, partner, every[:11])
    assert Tariff.objects.count() == 12
    tariff_pull(peer, partner, every[:11])
    assert Tariff.objects.count() == 11
