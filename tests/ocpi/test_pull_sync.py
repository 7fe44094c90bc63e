"""Pull sync: paging (also with broken Link headers), full vs incremental, leniency, data-quality issues."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from billing.models import Tariff
from emsp.models import ChargingSession, Location, Partner
from ocpi import sync
from ocpi.models import DataQualityIssue, SyncRun
from tests.factories import ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"


def paged(items: list[dict[str, Any]], *, limit: int, link: str = "good") -> Any:
    """A sender list: offset/limit paging with X-Total-Count and X-Limit, and a Link header that is good,
    missing or garbage."""

    def handler(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        query = parse_qs(urlsplit(call["url"]).query)
        offset = int(query.get("offset", ["0"])[0])
        page_limit = min(int(query.get("limit", [str(limit)])[0]), limit)
        date_from = query.get("date_from", [None])[0]
        matching = [i for i in items if date_from is None or i["last_updated"] >= date_from]
        page = matching[offset : offset + page_limit]
        headers = {"X-Total-Count": str(len(matching)), "X-Limit": str(limit)}
        if offset + len(page) < len(matching):
            nxt = f"{CPO}/locations?offset={offset + len(page)}&limit={page_limit}"
            headers["Link"] = {"good": f'<{nxt}>; rel="next"', "garbage": "<not a url>; rel=next", "none": ""}[link]
            if not headers["Link"]:
                del headers["Link"]
        return 200, envelope(page), headers

    return handler


def locations(n: int, party: str = "CPA") -> list[dict[str, Any]]:
    return [
        ocpi_location("IN", party, f"LOC{i:03d}", evses=2, last_updated=f"2026-01-{1 + i % 28:02d}T00:00:00Z")
        for i in range(n)
    ]


@pytest.mark.parametrize("link", ["good", "garbage", "none"])
def test_a_three_page_pull_stores_everything_whatever_the_link_header(
    peer: FakePeer, partner: Partner, link: str
) -> None:
    peer.route("GET", f"{CPO}/locations", paged(locations(25), limit=10, link=link))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    assert run.pages == 3
    assert Location.objects.count() == 25
    assert len(peer.requests_to("/locations")) == 3


def test_an_incremental_pull_sends_date_from_after_a_good_run(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/locations", paged(locations(3), limit=10))
    sync.sync_module(partner, "locations", full=True)
    sync.sync_module(partner, "locations")
    urls = [c["url"] for c in peer.requests_to("/locations")]
    assert "date_from" not in urls[0]
    assert "date_from" in urls[1]
    assert SyncRun.objects.filter(mode=SyncRun.Mode.INCREMENTAL).count() == 1


def test_sessions_are_always_pulled_with_date_from(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/sessions", (200, envelope([])))
    sync.sync_module(partner, "sessions", full=True)
    assert "date_from=" in peer.requests_to("/sessions")[0]["url"]


def test_a_full_pull_withdraws_locations_the_partner_no_longer_lists(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/locations", paged(locations(5), limit=10))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.route("GET", f"{CPO}/locations", paged(locations(3), limit=10))
    sync.sync_module(partner, "locations", full=True)
    assert Location.objects.visible().count() == 3
    assert Location.objects.filter(withdrawn_at__isnull=False).count() == 2


def test_a_full_pull_whose_list_shifted_under_its_pages_withdraws_nothing(peer: FakePeer, partner: Partner) -> None:
    """transport_and_format: a list changing between pages shows as fewer objects than X-Total-Count announced.
    The pages together are then not the partner's list: nothing is withdrawn for not being in them."""
    peer.route("GET", f"{CPO}/locations", paged(locations(25), limit=10))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    listed = locations(25)
    shifting = paged(listed, limit=10)

    def cpo(call: dict[str, Any]) -> Any:
        answer = shifting(call)
        if "offset" not in call["url"]:
            del listed[2]  # LOC002 goes while page 1 is read: LOC010 slides onto page 1 and is never seen
            return 200, answer[1], {**answer[2], "X-Total-Count": "25"}
        return answer

    peer.route("GET", f"{CPO}/locations", cpo)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK and run.received < run.announced
    assert not Location.objects.filter(withdrawn_at__isnull=False).exists()


def test_a_link_elsewhere_without_a_total_is_followed_by_offset_to_the_end(peer: FakePeer, partner: Partner) -> None:
    """A next page linked on another host (a TLS proxy's https) and no X-Total-Count: paged on by offset until a
    page comes back empty, not cut to the first page (and everything after it withdrawn)."""
    listed = locations(25)

    def cpo(call: dict[str, Any]) -> Any:
        query = parse_qs(urlsplit(call["url"]).query)
        offset, limit = int(query.get("offset", ["0"])[0]), int(query.get("limit", ["10"])[0])
        page = listed[offset : offset + limit]
        headers = {"Link": f'<https://proxy.example/ocpi/locations?offset={offset + 10}>; rel="next"'} if page else {}
        return 200, envelope(page), headers

    peer.route("GET", f"{CPO}/locations", cpo)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK
    assert Location.objects.visible().count() == 25


def test_a_targeted_pull_does_not_move_where_the_next_incremental_one_starts(peer: FakePeer, partner: Partner) -> None:
    """A command's timeout reads the sessions since the command (gateway.pull): that short range must not become
    the start of the next incremental pull, which would skip what changed before it."""
    peer.route("GET", f"{CPO}/locations", paged(locations(3), limit=10))
    sync.sync_module(partner, "locations", full=True)
    first = SyncRun.objects.get()
    regular = first.partner_time or first.started_at  # the CPO's clock, where it said its time
    later = timezone.now() + timedelta(minutes=30)
    targeted = sync.sync_module(partner, "locations", date_from=later)
    assert targeted is not None and targeted.mode == SyncRun.Mode.TARGETED
    sync.sync_module(partner, "locations")
    last = SyncRun.objects.order_by("-pk").first()
    assert last.mode == SyncRun.Mode.INCREMENTAL
    assert last.date_from == regular - sync.INCREMENTAL_OVERLAP


def test_withdrawing_after_a_pull_of_more_keys_than_postgresql_takes_parameters(
    peer: FakePeer, partner: Partner
) -> None:
    """A CPO with 100k locations: the keys seen are far more than the 65,535 parameters one PostgreSQL query
    takes (the first 100k benchmark pull failed here); the comparison is ours, the updates come in batches."""
    from emsp.services.catalogue import location_key, locations_withdraw_missing

    peer.route("GET", f"{CPO}/locations", paged(locations(3), limit=10))
    sync.sync_module(partner, "locations", full=True)
    seen = {location_key("IN", "CPA", f"LOC-{i}") for i in range(70_000)}
    kept = Location.objects.order_by("pk").first()
    assert kept is not None
    seen.add(kept.ocpi_key)
    withdrawn = locations_withdraw_missing(partner, seen, timezone.now() + timedelta(seconds=1))
    assert withdrawn == 2
    assert list(Location.objects.visible().values_list("pk", flat=True)) == [kept.pk]


def test_a_bad_object_is_recorded_and_the_rest_of_the_page_kept(peer: FakePeer, partner: Partner) -> None:
    items = locations(4)
    items[1]["coordinates"] = {"latitude": "somewhere", "longitude": "else"}
    del items[2]["id"]
    peer.route("GET", f"{CPO}/locations", (200, envelope(items)))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None
    assert (run.received, run.rejected) == (4, 2)
    assert Location.objects.count() == 2
    assert DataQualityIssue.objects.filter(partner=partner, code="rejected").count() == 2


def test_quirky_partner_data_is_normalised(peer: FakePeer, partner: Partner) -> None:
    item = ocpi_location("in", "cpa", "loc-lower")
    item["evses"][0]["status"] = "available "
    item["evses"][0]["connectors"][0]["max_electric_power"] = 50  # kW where W is due
    item["evses"][0]["connectors"][0]["power_type"] = "dc"
    del item["name"]
    peer.route("GET", f"{CPO}/locations", (200, envelope(item)))  # a single object where a list is due
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK
    location = Location.objects.get()
    assert location.location_id == "loc-lower"
    evse = location.evses.get(uid="loc-lower-E1")
    assert evse.status == "AVAILABLE"
    assert evse.connectors.get().max_electric_power == 50000
    assert run.normalised == 1


def test_a_partner_cannot_feed_another_partys_objects(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/locations", (200, envelope(locations(2, party="XYZ"))))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.rejected == 2
    assert not Location.objects.exists()


def test_a_refused_token_fails_the_run_without_storing(peer: FakePeer, partner: Partner) -> None:
    peer.only_encoding = "base64"
    peer.refusal_status = 403
    partner.outgoing_token_base64 = False
    partner.save()
    peer.route("GET", f"{CPO}/tariffs", (200, envelope([])))
    run = sync.sync_module(partner, "tariffs", full=True)
    # The other encoding is tried once, and kept when it works.
    assert run is not None and run.outcome == SyncRun.Outcome.OK
    partner.refresh_from_db()
    assert partner.outgoing_token_base64 is True


def test_tariffs_and_sessions_are_pulled(peer: FakePeer, partner: Partner, spec_example: Any) -> None:
    tariff = {**spec_example("tariff_4_complex.json"), "country_code": "IN", "party_id": "CPA"}
    session = {**spec_example("session_example_2_short_finished.json"), "country_code": "IN", "party_id": "CPA"}
    peer.route("GET", f"{CPO}/tariffs", (200, envelope([tariff])))
    peer.route("GET", f"{CPO}/sessions", (200, envelope([session])))
    sync.sync_module(partner, "tariffs", full=True)
    sync.sync_module(partner, "sessions", full=True)
    assert Tariff.objects.count() == 1
    assert ChargingSession.objects.count() == 1


def test_an_unreachable_partner_gives_a_failed_run(peer: FakePeer, partner: Partner) -> None:
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.FAILED
    assert run.error


def test_schedule_due_claims_each_partner_once(partner: Partner) -> None:
    partner.next_sync_at = timezone.now() - timedelta(minutes=1)
    partner.save()
    first = sync.schedule_due()
    second = sync.schedule_due()
    assert first == [(partner.pk, True)]
    assert second == []


def test_a_full_tariff_pull_drops_the_tariffs_the_cpo_no_longer_lists(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    """mod_tariffs: "Any older information that is not specified in the response is considered no longer valid".
    One listed but unreadable this time is kept as we had it."""
    tariff = {**spec_example("tariff_14_step_size.json"), "country_code": "IN", "party_id": "CPA"}
    three = [{**tariff, "id": f"T{n}"} for n in (1, 2, 3)]
    peer.route("GET", f"{CPO}/tariffs", (200, envelope(three)))
    sync.sync_module(partner, "tariffs", full=True)
    assert Tariff.objects.count() == 3
    Tariff.objects.update(received_at=timezone.now() - timedelta(hours=1))
    unreadable = {**three[1], "currency": None, "elements": "not a list"}
    peer.route("GET", f"{CPO}/tariffs", (200, envelope([three[0], unreadable])))
    run = sync.sync_module(partner, "tariffs", full=True)
    assert run is not None and run.rejected == 1
    assert sorted(Tariff.objects.values_list("tariff_id", flat=True)) == ["T1", "T2"]  # T3 gone, T2 kept


def test_a_location_listed_but_unreadable_is_not_withdrawn_by_a_full_pull(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/locations", paged(locations(3), limit=10))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    listed = locations(3)
    listed[1]["coordinates"] = "nowhere"  # refused this time
    peer.route("GET", f"{CPO}/locations", paged(listed, limit=10))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.rejected == 1
    assert Location.objects.visible().count() == 3


@pytest.mark.parametrize(("skew", "believed"), [(timedelta(minutes=-10), True), (timedelta(days=400), False)])
def test_the_next_incremental_pull_counts_from_the_partners_clock(
    peer: FakePeer, partner: Partner, skew: timedelta, believed: bool
) -> None:
    """The partner stamps its objects' last_updated on its own clock: a CPO 10 minutes behind us would have its
    changes of those minutes fall before our clock's date_from. Its envelope's timestamp says its time; one
    far off ours (a broken clock) is not believed."""
    from emsp.datetimes import format_datetime

    partners_now = timezone.now() + skew
    body = {**envelope(locations(2)), "timestamp": format_datetime(partners_now)}
    peer.route("GET", f"{CPO}/locations", (200, body))
    first = sync.sync_module(partner, "locations", full=True)
    assert first is not None and (first.partner_time is not None) is believed
    sync.sync_module(partner, "locations")
    date_from = parse_qs(urlsplit(peer.requests_to("/locations")[-1]["url"]).query)["date_from"][0]
    base = first.partner_time if believed else first.started_at
    assert date_from == format_datetime(base - sync.INCREMENTAL_OVERLAP)
