"""A full pull paged on by offset without `Link` or `X-Total-Count` can skip an object the CPO still has (one
deleted from an earlier page between two requests shifts the rest back), so what one such pull did not list was
kept: more than MAX_UNLISTED_CHECKS locations, and any tariff, for ever. What two consecutive full pulls ended OK
both did not list, with nothing received of it in between, is gone, or beyond the end of a list the CPO cuts
short the same way each pull: a location is asked for alone first (all, or a sample of each party) and withdrawn
only where the CPO does not know it; a tariff (no GET of one) is deleted unless a connector names it.
A skip by shifting falls on the same object twice in a row only by an extraordinary coincidence."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import Tariff
from billing.services import records
from emsp.models import Connector, Evse, Location, Partner
from emsp.services import catalogue
from emsp.services.partners import partner_party_grant
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
    offset_of,
    one_of,
    shifting_cpo,
    single_gets,
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
    asked for one by one), the second asks for 100 of them alone, spread over them, all unknown to the CPO, and
    withdraws those; the third asks for the last one and withdraws it. None is withdrawn unasked."""
    every = [ocpi_location("IN", "CPA", f"LOC{i:03d}", evses=1) for i in range(120)]
    peer.route("GET", f"{CPO}/locations", (200, envelope(every)))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    listed = every[:10] + every[111:]  # a full page of 10, then a short one of 9
    peer.route("GET", f"{CPO}/locations", capped(listed, limit=10))
    for loc in every:
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(listed))

    first = sync.sync_module(partner, "locations", full=True)
    assert first is not None and first.outcome == SyncRun.Outcome.OK and first.received == 19
    assert withdrawn() == [] and len(first.unlisted) == 101
    assert "more than the 100 asked for one by one: none was withdrawn" in finding(first).message
    assert (
        "101 of those kept: asked for alone if the next full pull does not list them either" in finding(first).message
    )

    peer.calls.clear()
    second = sync.sync_module(partner, "locations", full=True)
    assert second is not None and second.outcome == SyncRun.Outcome.OK
    asked = single_gets(peer)[1:]
    assert len(asked) == 100 and len(set(asked)) == 100
    assert withdrawn() == sorted(asked)  # only those asked for, each unknown to the CPO
    assert len(second.unlisted) == 1  # the one not asked for: noted, not withdrawn on a guess
    assert finding(second).fixed is False
    assert finding(second).message == (
        "101 locations were not listed by a pull paged on by offset without X-Total-Count: 101 not listed by the "
        f"previous full pull (pull {first.pk}) either, nothing received since: asked for alone (100 of 101, spread "
        "over them; the rest noted for the next pull): 100 unknown to the CPO, 0 sent, 0 without an answer that tells; "
        "100 withdrawn; 1 of those kept: asked for alone if the next full pull does not list them either"
    )

    third = sync.sync_module(partner, "locations", full=True)
    assert third is not None and third.unlisted == {}
    assert withdrawn() == [f"LOC{i:03d}" for i in range(10, 111)]
    assert Location.objects.visible().count() == 19


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
    assert finding(second).message == (
        "2 locations were not listed by a pull paged on by offset without X-Total-Count: 1 not listed by the "
        f"previous full pull (pull {first.pk}) either, nothing received since: asked for alone (each): "
        "1 unknown to the CPO, 0 sent, 0 without an answer that tells; 1 withdrawn; the other 1: more than the 0 "
        "asked for one by one: none was withdrawn; 1 of those kept: asked for alone if the next full pull does not "
        "list them either"
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


def test_a_cpo_that_does_not_send_a_location_alone_keeps_it_missed_twice(peer: FakePeer, partner: Partner) -> None:
    """The control (a listed location asked for alone) is not sent: the CPO's answers tell nothing, and the first
    pull keeps LOC020. The second that does not list it asks again, and keeps it again: a CPO without GET of one
    location has a location it no longer lists kept, as before pulls that missed one twice withdrew it (nothing is
    withdrawn on a guess)."""
    first_full_pull(peer, partner)
    peer.route("GET", f"{CPO}/locations", capped(but("LOC020"), limit=10))  # GET of one: unrouted, HTTP 404
    first = sync.sync_module(partner, "locations", full=True)
    assert first is not None and withdrawn() == [] and list(first.unlisted) == ["IN*CPA*LOC020"]
    assert "the CPO's answers tell nothing, none was withdrawn" in finding(first).message
    peer.calls.clear()
    second = sync.sync_module(partner, "locations", full=True)
    assert second is not None and withdrawn() == []
    assert list(second.unlisted) == ["IN*CPA*LOC020"]
    assert len(single_gets(peer)) == 1  # the control only
    assert finding(second).fixed is False
    assert finding(second).message == (
        "1 location was not listed by a pull paged on by offset without X-Total-Count: 1 not listed by the previous "
        f"full pull (pull {first.pk}) either, nothing received since: a location it listed, asked for alone, was not "
        "sent: the CPO's answers tell nothing, none was withdrawn; 1 of those kept: asked for alone if the next full "
        "pull does not list them either"
    )


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
    """A full pull from the hub capped at 10 a page without Link or total, answering GET of one location from
    `listed` (404 for another)."""
    peer.route("GET", f"{HUB}/locations", capped(listed, limit=10))
    for loc in hub_locations():
        peer.route("GET", f"{HUB}/locations/{loc['id']}", one_of(listed))
    run = sync.sync_module(hub, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    return run


def first_hub_pull(peer: FakePeer, hub: Partner) -> None:
    peer.route("GET", f"{HUB}/locations", (200, envelope(hub_locations())))
    sync.sync_module(hub, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))


def test_behind_a_hub_a_party_it_says_cant_be_reached_has_none_withdrawn(
    peer: FakePeer, hub: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOC005 of IN*CPA and LOC015 of IN*CPB not listed by two pulls: IN*CPB is OFFLINE at the hub
    (HubClientInfo), and a hub may leave out what it can't reach. LOC005 is withdrawn, LOC015 kept."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)  # none asked for alone the first time
    first_hub_pull(peer, hub)
    HubClientInfo.objects.create(
        partner=hub, country_code="IN", party_id="CPB", role="CPO", status="OFFLINE", last_updated=timezone.now()
    )
    listed = [loc for loc in hub_locations() if loc["id"] not in ("LOC005", "LOC015")]
    first = hub_pull(peer, hub, listed)
    assert list(first.unlisted) == ["IN*CPA*LOC005"]
    hub_pull(peer, hub, listed)
    assert withdrawn() == ["LOC005"]


def test_behind_a_hub_a_party_none_of_whose_locations_came_has_none_withdrawn(
    peer: FakePeer, hub: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub's list leaves IN*CPB out altogether (and LOC005 of IN*CPA) twice: a party's absence tells nothing
    of each of its locations. LOC005 is withdrawn; IN*CPB's are kept."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)  # none asked for alone the first time
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
    assert finding(first, "tariffs").message == (
        "1 tariff was not listed by a pull paged on by offset without X-Total-Count: 1 kept (a tariff can't be "
        "asked for alone); 1 of those kept: deleted if the next full pull does not list them either, unless a "
        "connector names them"
    )
    second = tariff_pull(peer, partner, every[:11])
    assert sorted(Tariff.objects.values_list("tariff_id", flat=True)) == [t["id"] for t in every[:11]]
    assert finding(second, "tariffs").fixed is True
    assert finding(second, "tariffs").message == (
        "1 tariff was not listed by a pull paged on by offset without X-Total-Count: 1 not listed by the previous "
        f"full pull (pull {first.pk}) either, nothing received since: 1 deleted"
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


# --- review fixes: a list cut short the same way each pull, tariffs in use, which pull is the previous one ------


def cut_short_cpo(peer: FakePeer, every: list[dict[str, Any]]) -> None:
    """A CPO paging 50 at a time without Link or total that drops an unpublished location (PRIVATE, 61st in its
    list) after applying the limit: its second page comes one short, and the walk takes it for the end. It sends
    each location alone."""
    rows = [*every[:60], ocpi_location("IN", "CPA", "PRIVATE"), *every[60:]]

    def page(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        sent = [row for row in rows[offset : offset + 50] if row["id"] != "PRIVATE"]
        return 200, envelope(sent), {"X-Limit": "50"}

    peer.route("GET", f"{CPO}/locations", page)
    for loc in every:
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(every))


def test_a_list_cut_short_the_same_way_each_pull_has_nothing_withdrawn_the_cpo_sends_alone(
    peer: FakePeer, partner: Partner
) -> None:
    """The first pull lists 99 of 250 and keeps the 151 it never reached (more than the 100 asked for alone); the
    second misses the same 151 and had them all withdrawn unasked. Now 100 of them are asked for alone: sent, so
    the misses are systematic and none is withdrawn, pull after pull."""
    every = [ocpi_location("IN", "CPA", f"L{i:03d}", evses=1) for i in range(250)]
    peer.route("GET", f"{CPO}/locations", (200, envelope(every)))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    cut_short_cpo(peer, every)

    runs = [sync.sync_module(partner, "locations", full=True) for _ in range(3)]

    assert Location.objects.filter(withdrawn_at__isnull=False).count() == 0
    assert [(run.outcome, run.received) for run in runs if run is not None] == [(SyncRun.Outcome.OK, 99)] * 3
    assert len(runs[0].unlisted) == 151 and len(runs[1].unlisted) == 51  # the 100 sent are stored, not noted
    second = finding(runs[1])
    assert second.fixed is False
    assert (
        f"151 not listed by the previous full pull (pull {runs[0].pk}) either, nothing received since: asked for "
        "alone (100 of 151, spread over them; the rest noted for the next pull): 0 unknown to the CPO, 100 sent, 0 "
        "without "
        "an answer that tells; 0 withdrawn; of "
        "IN*CPA one was sent: its list is cut short the same way each pull, none of theirs was withdrawn"
    ) in second.message


def test_locations_missed_twice_are_asked_for_alone_and_only_those_the_cpo_does_not_know_go(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOC017 and LOC020 missed by two pulls (none asked for alone the first time): the second asks for both
    (no more than MAX_UNLISTED_CHECKS) after a control; both unknown to the CPO, both withdrawn."""
    first_full_pull(peer, partner)
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 1)
    pull(peer, partner, but("LOC017", "LOC020"))
    assert withdrawn() == []
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 2)
    peer.calls.clear()
    second = pull(peer, partner, but("LOC017", "LOC020"))
    assert withdrawn() == ["LOC017", "LOC020"]
    assert single_gets(peer)[1:] == ["LOC017", "LOC020"]
    assert "asked for alone (each): 2 unknown to the CPO, 0 sent, 0 without an answer that tells; 2 withdrawn" in (
        finding(second).message
    )
    assert finding(second).fixed is True


def test_locations_missed_twice_are_all_kept_when_the_cpo_answers_one_with_an_error(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOC017 and LOC020 missed twice; asked for alone, LOC017 is unknown to the CPO but LOC020 answered with an
    error (HTTP 500): nothing is withdrawn on a guess, both are kept and noted again."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    first_full_pull(peer, partner)
    pull(peer, partner, but("LOC017", "LOC020"))
    peer.route("GET", f"{CPO}/locations", capped(but("LOC017", "LOC020"), limit=10))
    peer.route("GET", f"{CPO}/locations/LOC020", (500, envelope(status_code=3000)))
    second = sync.sync_module(partner, "locations", full=True)
    assert second is not None and second.outcome == SyncRun.Outcome.OK
    assert withdrawn() == []
    assert sorted(second.unlisted) == ["IN*CPA*LOC017", "IN*CPA*LOC020"]
    assert "1 unknown to the CPO, 0 sent, 1 without an answer that tells; 0 withdrawn; of IN*CPA an answer told " in (
        finding(second).message
    )


def test_a_withdrawn_location_listed_again_older_than_ours_is_restored(peer: FakePeer, partner: Partner) -> None:
    """LOC017's stamp moved on with its EVSE's stamped PATCH (the CPO's location keeps its own), and LOC017 was
    withdrawn (as two pulls missing it did, unasked). Listed again, older than ours, it stayed withdrawn for ever.
    It is back, with the newer data we hold."""
    first_full_pull(peer, partner)
    patched = catalogue.evse_patch_at(
        "IN", "CPA", "LOC017", "LOC017-E1", {"status": "CHARGING", "last_updated": "2026-01-02T00:00:00Z"}
    )
    assert patched is not None and patched.applied
    catalogue.locations_withdraw_missing(
        partner, {loc.ocpi_key for loc in Location.objects.exclude(location_id="LOC017")}, timezone.now()
    )
    assert withdrawn() == ["LOC017"]

    peer.route("GET", f"{CPO}/locations", (200, envelope(locations(25))))
    run = sync.sync_module(partner, "locations", full=True)

    assert run is not None and run.outcome == SyncRun.Outcome.OK
    assert withdrawn() == []
    restored = Location.objects.get(location_id="LOC017")
    assert restored.received_at >= run.started_at
    assert restored.last_updated == datetime(2026, 1, 2, tzinfo=UTC)  # ours, newer, kept
    assert Evse.objects.get(location=restored, uid="LOC017-E1").status == Evse.Status.CHARGING


def test_a_withdrawn_location_put_again_older_than_ours_is_restored(partner: Partner) -> None:
    """The Locations receiver's PUT stores through the same path: the withdrawal is undone, the data kept."""
    catalogue.locations_store(partner, [ocpi_location("IN", "CPA", "LOC017", last_updated="2026-01-03T00:00:00Z")])
    Location.objects.update(withdrawn_at=timezone.now())
    stored = catalogue.locations_store(
        partner, [ocpi_location("IN", "CPA", "LOC017", last_updated="2026-01-01T00:00:00Z")]
    )
    assert stored.ignored_older == 1
    location = Location.objects.get(location_id="LOC017")
    assert location.withdrawn_at is None and location.last_updated == datetime(2026, 1, 3, tzinfo=UTC)


def test_a_location_listed_older_than_ours_and_not_withdrawn_costs_no_more_statements(partner: Partner) -> None:
    """The common case of the ingest path: the lookup of what we hold is all it reads or writes of locations."""
    catalogue.locations_store(
        partner, [ocpi_location("IN", "CPA", f"L{i}", last_updated="2026-01-03T00:00:00Z") for i in range(3)]
    )
    older = [ocpi_location("IN", "CPA", f"L{i}", last_updated="2026-01-01T00:00:00Z") for i in range(3)]
    with CaptureQueriesContext(connection) as queries:
        assert catalogue.locations_store(partner, older).ignored_older == 3
    assert len([q for q in queries if "emsp_location" in q["sql"]]) == 1


def test_a_full_pull_that_began_after_this_one_is_not_its_previous_one(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull started outside the partner's lease (the console's "pull now", `ocpi_register --partner`) while
    one runs, and ending before it: the two missed LOC020 at the same time, which is once. The running pull
    keeps it unasked (none asked for alone the first time) and notes it, instead of asking and withdrawing it."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    first_full_pull(peer, partner)
    listed = but("LOC020")
    pages = capped(listed, limit=10)
    overlapping: list[SyncRun | None] = []

    def page(call: dict[str, Any]) -> Any:
        if not overlapping:  # the running pull's first page: the other pull starts, and reads the list through here
            overlapping.append(None)
            overlapping[0] = sync.sync_module(partner, "locations", full=True)
        return pages(call)

    peer.route("GET", f"{CPO}/locations", page)
    for loc in locations(25):
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(listed))
    running = sync.sync_module(partner, "locations", full=True)

    assert overlapping[0] is not None and list(overlapping[0].unlisted) == ["IN*CPA*LOC020"]
    assert running is not None and running.started_at < overlapping[0].started_at
    assert withdrawn() == []
    assert list(running.unlisted) == ["IN*CPA*LOC020"]


def test_a_failed_full_pull_in_between_starts_the_count_again(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOC017 missed, then a full pull that failed (HTTP 500 on its first page), then LOC017 missed again: not two
    misses in a row. Kept and noted; the pull after withdraws it (asked for alone, unknown to the CPO)."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    first_full_pull(peer, partner)
    pull(peer, partner, but("LOC017"))
    peer.route("GET", f"{CPO}/locations", (500, envelope(status_code=3000)))
    failed = sync.sync_module(partner, "locations", full=True)
    assert failed is not None and failed.outcome == SyncRun.Outcome.FAILED
    after = pull(peer, partner, but("LOC017"))
    assert withdrawn() == []
    assert list(after.unlisted) == ["IN*CPA*LOC017"]
    pull(peer, partner, but("LOC017"))
    assert withdrawn() == ["LOC017"]


def test_a_tariff_a_connector_names_is_not_deleted_when_missed_twice(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    """T11 and T10 are missed by two pulls; a connector of LOC001 names T11: deleting it left that charger
    without a price (Beckn QUOTE_UNAVAILABLE). T11 is kept and noted again; T10, which no connector names, goes. A
    connector of a withdrawn location names T10: it does not count."""
    catalogue.locations_store(partner, [ocpi_location("IN", "CPA", "LOC001", tariff_ids=["t11"])])
    catalogue.locations_store(partner, [ocpi_location("IN", "CPA", "LOC002", tariff_ids=["T10"])])
    Location.objects.filter(location_id="LOC002").update(withdrawn_at=timezone.now())
    every = tariffs(spec_example, 12)
    first_tariff_pull(peer, partner, every)
    first = tariff_pull(peer, partner, every[:10])
    second = tariff_pull(peer, partner, every[:10])
    assert sorted(Tariff.objects.values_list("tariff_id", flat=True)) == [t["id"] for t in every[:10]] + ["T11"]
    assert list(second.unlisted) == ["IN*CPA*T11"]
    assert finding(second, "tariffs").fixed is False
    assert finding(second, "tariffs").message == (
        "2 tariffs were not listed by a pull paged on by offset without X-Total-Count: 2 not listed by the previous "
        f"full pull (pull {first.pk}) either, nothing received since: 1 deleted, 1 named by a connector of a "
        "location we hold (kept); 1 of those kept: deleted if the next full pull does not list them either, unless "
        "a connector names them"
    )


def test_no_more_tariffs_than_the_checks_are_deleted_at_once_when_missed_twice(
    peer: FakePeer, partner: Partner, spec_example: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tariff list cut short the same way each pull (2 of 12 never reached, 1 allowed): none is deleted."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 1)
    every = tariffs(spec_example, 12)
    first_tariff_pull(peer, partner, every)
    tariff_pull(peer, partner, every[:10])
    second = tariff_pull(peer, partner, every[:10])
    assert Tariff.objects.count() == 12
    assert sorted(second.unlisted) == ["IN*CPA*T10", "IN*CPA*T11"]
    assert "nothing received since: none deleted, more than the 1 at once (kept)" in finding(second, "tariffs").message


def test_the_pull_runs_list_does_not_read_what_they_did_not_list(admin_client: Any, partner: Partner) -> None:
    """A run's `unlisted` holds a key per object (100k at a large CPO): the list of runs never reads it, and a
    run's page shows how many it holds, not them."""
    run = SyncRun.objects.create(
        partner=partner, module="locations", mode=SyncRun.Mode.FULL, unlisted={"IN*CPA*LOC017": "x", "IN*CPA*L2": "y"}
    )
    with CaptureQueriesContext(connection) as queries:
        listing = admin_client.get(reverse("admin:ocpi_syncrun_changelist"))
    assert listing.status_code == 200 and f"/{run.pk}/" in listing.content.decode()
    assert not [q["sql"] for q in queries if "unlisted" in q["sql"]]
    page = admin_client.get(reverse("admin:ocpi_syncrun_change", args=[run.pk])).content.decode()
    assert "2 objects it did not list and kept" in page
    assert "LOC017" not in page


def test_a_sample_of_the_missed_all_unknown_withdraws_only_those_asked(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """150 locations the CPO deleted and 15 newer ones beyond the end of a list it cuts short: a sample of the 165
    (spread in our key order, not the CPO's) can miss the 15; all unknown, it had withdrawn all 165, the 15 the
    CPO still has hidden for good. Only the ones asked for and unknown go; the rest wait for the next pull."""
    monkeypatch.setattr(sync, "MAX_MISSED_TWICE_CHECKS", 10)
    reachable = [ocpi_location("IN", "CPA", f"A{i:03d}", evses=1) for i in range(99)]
    deleted = [ocpi_location("IN", "CPA", f"D{i:03d}", evses=1) for i in range(150)]
    tail = [ocpi_location("IN", "CPA", f"Z{i:03d}", evses=1) for i in range(15)]
    peer.route("GET", f"{CPO}/locations", (200, envelope([*reachable, *deleted, *tail])))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    rows = [*reachable[:60], ocpi_location("IN", "CPA", "PRIVATE"), *reachable[60:], *tail]

    def page(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        return 200, envelope([r for r in rows[offset : offset + 50] if r["id"] != "PRIVATE"]), {"X-Limit": "50"}

    peer.route("GET", f"{CPO}/locations", page)
    for loc in [*reachable, *deleted, *tail]:
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of([*reachable, *tail]))

    sync.sync_module(partner, "locations", full=True)
    peer.calls.clear()
    sync.sync_module(partner, "locations", full=True)

    asked = single_gets(peer)[1:]
    assert len(asked) == 10
    # Withdrawn: only some of those asked, each unknown to the CPO (none when a Z, sent, was among them).
    assert set(withdrawn()) <= {name for name in asked if name.startswith("D")}
    assert not Location.objects.filter(location_id__startswith="Z", withdrawn_at__isnull=False).exists()


def test_a_party_behind_a_hub_is_asked_though_another_without_a_get_of_one_has_more_missed(
    peer: FakePeer, hub: Partner
) -> None:
    """IN*CPA (no GET of one location) has 600 locations missed twice, IN*CPB (which answers) one, B014, gone:
    a sample over all of them, before the controls, had held CPA's rows only, and B014 was never asked."""
    cpa = [ocpi_location("IN", "CPA", f"A{i:03d}", evses=1) for i in range(610)]
    cpb = [ocpi_location("IN", "CPB", f"B{i:03d}", evses=1) for i in range(15)]
    peer.route("GET", f"{HUB}/locations", (200, envelope([*cpa, *cpb])))
    sync.sync_module(hub, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    listed = [*cpa[:10], *cpb[:14]]
    peer.route("GET", f"{HUB}/locations", capped(listed, limit=10))
    for loc in cpb:  # CPB answers GET of one location; CPA's are unrouted (HTTP 404)
        peer.route("GET", f"{HUB}/locations/{loc['id']}", one_of(listed))
    for _ in range(3):
        run = sync.sync_module(hub, "locations", full=True)
        assert run is not None and run.outcome == SyncRun.Outcome.OK
    assert withdrawn() == ["B014"]


def test_twice_missed_locations_are_not_asked_the_same_sample_each_pull(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """150 locations gone, one of them (D001) answered with an error that tells nothing: the same sample each
    pull, D001 always in it, had kept the whole party from being withdrawn, and 50 were never asked.

    Each pull's sample begins where a generator seeded by its run's id says, so which pull first leaves D001 out
    depends on the ids the database hands out (a sample of 100 of 150 holds it two times in three): the pulls go
    on until both have happened, up to 40 (all 40 holding D001: a chance of (2/3)^40, about 1e-7). Six pulls, as
    this test first made, had failed with the run ids one test order gives."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    kept, gone = ten_listed_of_160(peer, partner)
    for loc in [*kept, *gone]:
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(kept))
    peer.route("GET", f"{CPO}/locations/D001", (400, envelope(status_code=2001)))
    asked: set[str] = set()
    for _ in range(40):
        peer.calls.clear()
        run = sync.sync_module(partner, "locations", full=True)
        assert run is not None and run.outcome == SyncRun.Outcome.OK
        asked |= set(single_gets(peer)[1:])
        if {loc["id"] for loc in gone} <= asked and withdrawn():
            break
    assert {loc["id"] for loc in gone} <= asked
    assert len(withdrawn()) > 0 and "D001" not in withdrawn()


def test_a_control_is_found_when_every_listed_location_came_older_than_ours(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each location's EVSE pushed with a stamp moves ours past the CPO's own (its location not bumped): listed,
    none is stored again, and the control had been chosen among those stored since the pull began: none found,
    nothing ever asked, LOC020 (gone) never withdrawn."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    first_full_pull(peer, partner)
    for loc in locations(25):
        patched = catalogue.evse_patch_at(
            "IN", "CPA", loc["id"], f"{loc['id']}-E1", {"status": "CHARGING", "last_updated": "2026-01-02T00:00:00Z"}
        )
        assert patched is not None and patched.applied
    pull(peer, partner, but("LOC020"))
    peer.calls.clear()
    pull(peer, partner, but("LOC020"))
    assert single_gets(peer) and withdrawn() == ["LOC020"]


@pytest.mark.parametrize("rows", [101, 150, 1000])
def test_the_twice_missed_sample_covers_every_location_within_as_many_pulls_as_rows_per_pick(rows: int) -> None:
    """The sample's start had moved by multiples of its size: with 1,000 rows the same 100 were asked every pull."""
    now = timezone.now()
    pool = [sync._Unlisted(i, f"IN*CPA*D{i:04d}", ("IN", "CPA"), f"D{i:04d}", "", now) for i in range(rows)]
    asked: set[str] = set()
    for turn in range(5, 5 + -(-rows // 100) * 2):
        asked |= {u.key for u in sync._spread(pool, 100, turn)}
    assert len(asked) == rows


def test_behind_a_hub_the_twice_missed_asks_stay_within_the_budget(
    peer: FakePeer, hub: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 parties of 2 missed locations each, a budget of 5: a control and an ask of every party had gone past it;
    5 parties' controls and 5 asks a pull, the other parties waiting their turn."""
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    monkeypatch.setattr(sync, "MAX_MISSED_TWICE_CHECKS", 5)
    parties = [f"P{i:02d}" for i in range(12)]
    for party in parties:
        partner_party_grant(partner=hub, country_code="IN", party_id=party, by="staff")
    listed = [ocpi_location("IN", p, f"{p}-OK", evses=1) for p in parties]
    gone = [ocpi_location("IN", p, f"{p}-G{j}", evses=1) for p in parties for j in range(2)]
    peer.route("GET", f"{HUB}/locations", (200, envelope([*listed, *gone])))
    sync.sync_module(hub, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.route("GET", f"{HUB}/locations", capped(listed, limit=10))
    for loc in [*listed, *gone]:
        peer.route("GET", f"{HUB}/locations/{loc['id']}", one_of(listed))
    sync.sync_module(hub, "locations", full=True)
    for _ in range(6):
        peer.calls.clear()
        sync.sync_module(hub, "locations", full=True)
        assert len(single_gets(peer)) <= 2 * 5
    assert len(withdrawn()) == 24


def test_the_twice_missed_sample_moves_on_after_old_pulls_are_pruned(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample's start had been the count of the module's full pulls: once runs past their retention were
    pruned as new ones came, it stood still, the same ten asked every pull."""
    from emsp import privacy

    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 0)
    monkeypatch.setattr(sync, "MAX_MISSED_TWICE_CHECKS", 10)
    kept, gone = ten_listed_of_160(peer, partner)
    for loc in kept:
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(kept))
    for loc in gone:  # an answer that tells nothing: nothing withdrawn, the same rows missed each pull
        peer.route("GET", f"{CPO}/locations/{loc['id']}", (400, envelope(status_code=2001)))
    sync.sync_module(partner, "locations", full=True)
    samples = set()
    for _ in range(4):
        oldest = SyncRun.objects.filter(partner=partner, mode=SyncRun.Mode.FULL).order_by("started_at").first()
        assert oldest is not None
        SyncRun.objects.filter(pk=oldest.pk).update(started_at=timezone.now() - timedelta(days=181))
        privacy.purge_expired(kinds=["sync_runs"])
        peer.calls.clear()
        run = sync.sync_module(partner, "locations", full=True)
        assert run is not None and run.outcome == SyncRun.Outcome.OK
        samples.add(tuple(sorted(single_gets(peer)[1:])))
    assert len(samples) > 1


def ten_listed_of_160(peer: FakePeer, partner: Partner) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """160 locations pulled an hour ago; the CPO now lists the first 10 (A000-A009), 10 a page without Link or
    total, and no longer the other 150 (D000-D149). Single GETs are left to the test."""
    kept = [ocpi_location("IN", "CPA", f"A{i:03d}", evses=1) for i in range(10)]
    gone = [ocpi_location("IN", "CPA", f"D{i:03d}", evses=1) for i in range(150)]
    peer.route("GET", f"{CPO}/locations", (200, envelope([*kept, *gone])))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.route("GET", f"{CPO}/locations", capped(kept, limit=10))
    return kept, gone
