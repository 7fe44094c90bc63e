"""A full pull from a CPO whose pages are capped at a limit but name neither a next page (`Link`) nor a total
(`X-Total-Count`): transport_and_format says no Link is the last page, and a pull that took the first page
for the whole list withdrew every location after it. A page as full as its limit is paged on from by
offset/limit until a short or empty page; a short page without Link is still the end."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from billing.models import Cdr, Tariff
from emsp.models import Location, Partner
from ocpi import sync
from ocpi.credentials import register_with_partner
from ocpi.models import DataQualityIssue, SyncRun
from tests.cposim.conftest import SimProcess
from tests.factories import ocpi_location
from tests.fakes import FakePeer, envelope
from tests.ocpi import test_hubs
from tests.ocpi.test_hubs import HUB

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"


def locations(n: int) -> list[dict[str, Any]]:
    return [ocpi_location("IN", "CPA", f"LOC{i:03d}", last_updated="2026-01-01T00:00:00Z") for i in range(n)]


def capped(items: list[dict[str, Any]], *, limit: int | None, offset_kept: bool = True) -> Any:
    """A sender list capped at `limit` objects a page (its `X-Limit`, unless None: no header), paged by the
    offset and limit asked for (the offset ignored unless `offset_kept`), with neither Link nor X-Total-Count."""

    def handler(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        query = parse_qs(urlsplit(call["url"]).query)
        offset = int(query.get("offset", ["0"])[0]) if offset_kept else 0
        asked = int(query["limit"][0]) if "limit" in query else None
        size = min(n for n in (limit, asked, len(items)) if n is not None)
        headers = {"X-Limit": str(limit)} if limit is not None else {}
        return 200, envelope(items[offset : offset + size]), headers

    return handler


def one_of(listed: list[dict[str, Any]]) -> Any:
    """The CPO's GET of one location (mod_locations Sender interface) from `listed`: HTTP 404, OCPI 2003 for one
    it does not list."""

    def handler(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        wanted = urlsplit(call["url"]).path.rsplit("/", 1)[1]
        found = [loc for loc in listed if loc["id"] == wanted]
        if not found:
            return 404, {**envelope(status_code=2003), "status_message": "unknown location"}, {}
        return 200, envelope(found[0]), {}

    return handler


def pull_again(peer: FakePeer, partner: Partner, listed: list[dict[str, Any]], **cpo: Any) -> SyncRun:
    """A first full pull of 25 locations from a compliant CPO, then a full pull (an hour later, as far as the
    stored locations tell) from the capped one listing `listed` (and answering GET of one of them)."""
    every = locations(25)
    peer.route("GET", f"{CPO}/locations", (200, envelope(every)))
    sync.sync_module(partner, "locations", full=True)
    assert Location.objects.visible().count() == 25
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.calls.clear()
    peer.route("GET", f"{CPO}/locations", capped(listed, **{"limit": 10, **cpo}))
    for loc in every:
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(listed))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    return run


def withdrawn() -> list[str]:
    return sorted(Location.objects.filter(withdrawn_at__isnull=False).values_list("location_id", flat=True))


def asked(peer: FakePeer) -> list[str]:
    """The queries of the list's pages asked for (not GETs of one location)."""
    return [urlsplit(c["url"]).query for c in peer.calls if urlsplit(c["url"]).path.endswith("/locations")]


def test_a_full_page_without_link_or_total_is_paged_on_and_nothing_is_withdrawn(
    peer: FakePeer, partner: Partner
) -> None:
    run = pull_again(peer, partner, locations(25))
    assert (run.pages, run.received) == (3, 25)
    assert asked(peer) == ["", "offset=10&limit=10", "offset=20&limit=10"]  # the short third page is the end
    assert withdrawn() == []
    assert Location.objects.visible().count() == 25
    finding = DataQualityIssue.objects.get(partner=partner, code="no_link_full_page")
    assert finding.object_id == f"pull {run.pk}" and finding.path == "Link" and finding.fixed is True
    assert "a page of 10 objects (its limit 10)" in finding.message
    assert "15 more objects in 2 pages" in finding.message


def test_paged_on_to_the_end_the_pull_still_withdraws_what_is_gone(peer: FakePeer, partner: Partner) -> None:
    listed = [loc for loc in locations(25) if loc["id"] != "LOC017"]
    run = pull_again(peer, partner, listed)
    assert run.received == 24
    assert withdrawn() == ["LOC017"]


def test_a_list_one_limit_long_ends_on_the_empty_page_after_it(peer: FakePeer, partner: Partner) -> None:
    """Ten objects, X-Limit 10: the page after them is asked for, comes empty, and the walk is whole. The list
    proved no longer than its page: no finding."""
    run = pull_again(peer, partner, locations(10))
    assert asked(peer) == ["", "offset=10&limit=10"]
    assert run.pages == 2 and run.received == 10
    assert withdrawn() == [f"LOC{i:03d}" for i in range(10, 25)]
    assert not DataQualityIssue.objects.filter(code="no_link_full_page").exists()


def test_a_short_page_without_link_is_still_the_end(peer: FakePeer, partner: Partner) -> None:
    """transport_and_format: no Link is the last page. Fewer objects than the partner's X-Limit: one request,
    and what it does not list is withdrawn, as before."""
    run = pull_again(peer, partner, locations(7))
    assert asked(peer) == [""]
    assert run.pages == 1
    assert withdrawn() == [f"LOC{i:03d}" for i in range(7, 25)]
    assert not DataQualityIssue.objects.filter(code="no_link_full_page").exists()


def test_a_page_without_x_limit_is_the_end(peer: FakePeer, partner: Partner) -> None:
    """No X-Limit, and no limit asked for: nothing says the page is capped; it is the end, as before."""
    run = pull_again(peer, partner, locations(10), limit=None)
    assert asked(peer) == [""]
    assert run.pages == 1


def test_a_partner_that_ignores_the_offset_withdraws_nothing(peer: FakePeer, partner: Partner) -> None:
    """The next offset answered with the first page again: paging on would read it up to the page cap. The
    walk stops there, not whole, and says so."""
    run = pull_again(peer, partner, locations(25), offset_kept=False)
    assert asked(peer) == ["", "offset=10&limit=10"]
    assert run.pages == 1
    assert withdrawn() == []
    finding = DataQualityIssue.objects.get(partner=partner, code="no_link_full_page")
    assert finding.fixed is False and "answered with objects all listed before" in finding.message


def test_paging_on_stops_at_the_page_cap_and_withdraws_nothing(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync, "MAX_PAGES", 3)
    run = pull_again(peer, partner, locations(25), limit=5)
    assert run.pages == 3 and run.received == 15
    assert withdrawn() == []
    finding = DataQualityIssue.objects.get(partner=partner, code="no_link_full_page")
    assert finding.fixed is False and "stopped at the page limit (3 pages)" in finding.message


def test_a_limit_we_asked_for_tells_a_full_page_without_x_limit(peer: FakePeer, partner: Partner) -> None:
    """Paging on, the limit we asked for is the page's limit where the partner sends no X-Limit."""
    listed = locations(25)

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        query = parse_qs(urlsplit(call["url"]).query)
        offset = int(query.get("offset", ["0"])[0])
        if not offset:
            return 200, envelope(listed[:10]), {"X-Limit": "10"}
        return 200, envelope(listed[offset : offset + int(query["limit"][0])]), {}  # X-Limit left out

    peer.route("GET", f"{CPO}/locations", cpo)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and (run.pages, run.received) == (3, 25)
    assert Location.objects.visible().count() == 25


# --- review fixes: where paging on ends, and what a page's limit and Link say ---------------------------------


def first_full_pull(peer: FakePeer, partner: Partner) -> None:
    """25 locations from a compliant CPO, stored an hour ago as far as their received_at tells."""
    peer.route("GET", f"{CPO}/locations", (200, envelope(locations(25))))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.calls.clear()


def offset_of(call: dict[str, Any]) -> int:
    return int(parse_qs(urlsplit(call["url"]).query).get("offset", ["0"])[0])


def test_an_error_answer_to_our_next_offset_past_the_end_ends_the_list_and_the_full_pull_counts(
    peer: FakePeer, partner: Partner
) -> None:
    """A list exactly one limit long, and the CPO answers the offset after it with HTTP 400 / OCPI 2001 ("offset
    out of range"): the pull had failed every time, and with last_full_sync_at never set a full pull was due at
    every beat. That answer is the end of the list, as an empty page would be: the pull is OK and withdraws what
    it did not list."""
    first_full_pull(peer, partner)
    listed = locations(10)

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        if offset >= len(listed):
            return 400, {**envelope(status_code=2001), "status_message": "offset out of range"}, {}
        return 200, envelope(listed[offset : offset + 10]), {"X-Limit": "10"}

    peer.route("GET", f"{CPO}/locations", cpo)
    (run,) = sync.sync_partner(partner, full=True, modules=("locations",))
    partner.refresh_from_db()
    assert run.outcome == SyncRun.Outcome.OK, run.error
    assert partner.last_full_sync_at is not None
    assert asked(peer) == ["", "offset=10&limit=10"] and (run.pages, run.received) == (1, 10)
    assert withdrawn() == [f"LOC{i:03d}" for i in range(10, 25)]
    finding = DataQualityIssue.objects.get(partner=partner, code="no_link_full_page")
    assert finding.fixed is True
    assert (
        "the CPO answered the offset past its last page with an error (HTTP 400, OCPI 2001): taken for the end "
        "of the list" in finding.message
    )


@pytest.mark.parametrize(
    "answer",
    [
        (503, {**envelope(status_code=3000), "status_message": "busy"}),
        (429, {**envelope(status_code=2000), "status_message": "slow down"}),
        (200, {**envelope(status_code=3001), "status_message": "unable to use the client's API"}),
    ],
)
def test_another_error_answer_to_our_next_offset_fails_the_pull(
    peer: FakePeer, partner: Partner, answer: tuple[int, Any]
) -> None:
    """A 5xx, a 429 or an OCPI 3xxx on the page we asked for by offset says nothing of the end of the list: the
    walk ended there, OK, withdrawing nothing, and the next incremental pull started after what it did not read.
    The pull fails, as before paging on."""
    first_full_pull(peer, partner)
    listed = locations(25)

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        if offset:
            return answer[0], answer[1], {}
        return 200, envelope(listed[:10]), {"X-Limit": "10"}

    peer.route("GET", f"{CPO}/locations", cpo)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.FAILED
    assert withdrawn() == []


def cdr_list(spec_example: Any, n: int) -> list[dict[str, Any]]:
    """`n` CDRs of IN*CPA, last updated half an hour ago."""
    base = {**spec_example("cdr_example.json"), "country_code": "IN", "party_id": "CPA"}
    stamp = (timezone.now() - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [{**base, "id": f"CDR{i:02d}", "session_id": f"S{i}", "last_updated": stamp} for i in range(n)]


def earlier_incremental_pull(partner: Partner, module: str) -> SyncRun:
    return SyncRun.objects.create(
        partner=partner,
        module=module,
        mode=SyncRun.Mode.INCREMENTAL,
        outcome=SyncRun.Outcome.OK,
        started_at=timezone.now() - timedelta(hours=2),
    )


def test_a_transient_error_on_our_next_offset_of_an_incremental_pull_loses_no_cdr(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    """The re-review's case: a 503 on the offset page of an incremental CDR pull ended it OK, and the next
    incremental pull started after it: CDRs 10 to 14 were never pulled. The pull fails; the next one starts
    where the last good one did and gets them."""
    cdrs = cdr_list(spec_example, 15)
    earlier_incremental_pull(partner, "cdrs")
    flaky = {"down": True}

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        if offset and flaky["down"]:
            return 503, {**envelope(status_code=3000), "status_message": "busy"}, {}
        since = parse_qs(urlsplit(call["url"]).query).get("date_from", [""])[0]
        matching = [c for c in cdrs if c["last_updated"] >= since]
        return 200, envelope(matching[offset : offset + 10]), {"X-Limit": "10"}

    peer.route("GET", f"{CPO}/cdrs", cpo)
    first = sync.sync_module(partner, "cdrs")
    assert first is not None and first.mode == SyncRun.Mode.INCREMENTAL
    assert first.outcome == SyncRun.Outcome.FAILED
    flaky["down"] = False
    again = sync.sync_module(partner, "cdrs")
    assert again is not None and again.outcome == SyncRun.Outcome.OK, again.error
    assert Cdr.objects.count() == 15


def test_an_incremental_pull_ending_open_does_not_move_the_next_ones_start(
    peer: FakePeer, partner: Partner, spec_example: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paging on stopped at the page cap: the run is OK but did not read the rest. The next incremental pull
    counted from it and skipped what it had not read; it asks from the earlier date_from again."""
    cdrs = cdr_list(spec_example, 15)
    earlier_incremental_pull(partner, "cdrs")
    peer.route("GET", f"{CPO}/cdrs", capped(cdrs, limit=5))
    monkeypatch.setattr(sync, "MAX_PAGES", 2)
    first = sync.sync_module(partner, "cdrs")
    assert first is not None and first.mode == SyncRun.Mode.INCREMENTAL and first.date_from is not None
    assert first.outcome == SyncRun.Outcome.OK and first.received == 10
    monkeypatch.setattr(sync, "MAX_PAGES", 10)
    again = sync.sync_module(partner, "cdrs")
    assert again is not None and again.date_from is not None and again.date_from <= first.date_from
    assert Cdr.objects.count() == 15


def test_a_first_full_pull_ending_open_leaves_the_next_incremental_pull_everything(
    peer: FakePeer, partner: Partner
) -> None:
    """A full pull whose offset was ignored read only its first page; with no good pull before it, the next
    incremental pull asks from the epoch (everything) rather than from this run."""
    peer.route("GET", f"{CPO}/locations", capped(locations(25), limit=10, offset_kept=False))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK and run.received == 10
    again = sync.sync_module(partner, "locations")
    assert again is not None and again.mode == SyncRun.Mode.INCREMENTAL
    assert again.date_from is not None and again.date_from.year < 1971


def test_an_error_answer_to_the_partners_own_next_page_still_fails_the_pull(peer: FakePeer, partner: Partner) -> None:
    """Only a page we asked for by offset ourselves ends the walk on an error: one the CPO's X-Total-Count led
    to fails the pull, as before."""
    listed = locations(15)

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if offset_of(call):
            return 400, {**envelope(status_code=2001), "status_message": "offset out of range"}, {}
        return 200, envelope(listed[:10]), {"X-Limit": "10", "X-Total-Count": "15"}

    peer.route("GET", f"{CPO}/locations", cpo)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.FAILED


def test_a_partner_ignoring_the_offset_in_an_order_that_changes_is_stopped_on_the_first_page_of_nothing_new(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPO that ignores offset and lists by last_updated while statuses change sends its first ten in another
    order each time: compared with the page just before, each page was new, and the pull read them up to the
    page cap (10,000 requests). A page we asked for that brings no object not listed before ends the walk."""
    monkeypatch.setattr(sync, "MAX_PAGES", 40)
    first_full_pull(peer, partner)
    first_ten = locations(25)[:10]
    calls = {"n": 0}

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        calls["n"] += 1
        turn = calls["n"] % len(first_ten)
        return 200, envelope(first_ten[turn:] + first_ten[:turn]), {"X-Limit": "10"}

    peer.route("GET", f"{CPO}/locations", cpo)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK
    assert calls["n"] == 2 and run.pages == 1
    assert withdrawn() == []
    finding = DataQualityIssue.objects.get(partner=partner, code="no_link_full_page")
    assert finding.fixed is False and "answered with objects all listed before" in finding.message


def test_a_page_holding_more_than_its_x_limit_is_not_capped_by_it(peer: FakePeer, partner: Partner) -> None:
    """A CPO that does not paginate but sends a fixed X-Limit below its list's length: twenty objects under an
    X-Limit of 10 are its whole list, not a full page. Paging on, the next offset brought the same twenty, the
    walk counted an offset ignored and withdrew nothing. It ends there, as before paging on, without a finding."""
    first_full_pull(peer, partner)
    listed = locations(20)
    peer.route("GET", f"{CPO}/locations", lambda call: (200, envelope(listed), {"X-Limit": "10"}))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK
    assert asked(peer) == [""]
    assert withdrawn() == [f"LOC{i:03d}" for i in range(20, 25)]
    assert not DataQualityIssue.objects.filter(code="no_link_full_page").exists()


def linking_cpo(peer: FakePeer, link: Callable[[int], str]) -> None:
    """The CPO's 25 locations, 10 a page (X-Limit 10, no total), each page with the `Link` header `link(offset)`
    (none where it gives "")."""
    listed = locations(25)

    def cpo(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        headers = {"X-Limit": "10", **({"Link": value} if (value := link(offset)) else {})}
        return 200, envelope(listed[offset : offset + 10]), headers

    peer.route("GET", f"{CPO}/locations", cpo)


def test_a_link_that_names_no_next_page_does_not_end_the_walk(peer: FakePeer, partner: Partner) -> None:
    """Any Link header ended the walk, though one naming only the previous page gives the client nothing to
    follow: everything after the first page was withdrawn. Only a Link naming a next page ends it."""
    first_full_pull(peer, partner)
    linking_cpo(peer, lambda offset: f'<{CPO}/locations?offset={max(offset - 10, 0)}&limit=10>; rel="prev"')
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and (run.pages, run.received) == (3, 25)
    assert withdrawn() == []


def test_a_next_link_without_angle_brackets_is_followed(peer: FakePeer, partner: Partner) -> None:
    """`url; rel="next"` without RFC 8288's angle brackets: not followed, and yet it ended the walk (withdrawing
    everything after page 1). It is followed, under the same check of scheme, host and path."""
    first_full_pull(peer, partner)
    linking_cpo(
        peer, lambda offset: f'{CPO}/locations?offset={offset + 10}&limit=10; rel="next"' if offset < 15 else ""
    )
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and (run.pages, run.received) == (3, 25)
    assert asked(peer) == ["", "offset=10&limit=10", "offset=20&limit=10"]
    assert withdrawn() == []
    assert not DataQualityIssue.objects.filter(code__in=("no_link_full_page", "link_elsewhere")).exists()


def test_a_bare_next_link_elsewhere_is_refused_and_paged_by_offset(peer: FakePeer, partner: Partner) -> None:
    first_full_pull(peer, partner)
    linking_cpo(peer, lambda offset: f'http://elsewhere.example/list?offset={offset + 10}; rel="next"')
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.received == 25
    assert not [c for c in peer.calls if "elsewhere" in c["url"]]
    assert withdrawn() == []
    assert DataQualityIssue.objects.filter(partner=partner, code="link_elsewhere").exists()


def shifting_cpo(peer: FakePeer) -> None:
    """A capped CPO without Link or total that no longer lists LOC020, and deletes LOC003 (on its first page)
    once that page is sent: the next offset then starts one object later, and LOC010 is never sent. It answers
    GET of one location from what it lists."""
    listed = [loc for loc in locations(25) if loc["id"] != "LOC020"]

    def page(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        sent = listed[offset : offset + 10]
        if offset == 0:
            listed[:] = [loc for loc in listed if loc["id"] != "LOC003"]
        return 200, envelope(sent), {"X-Limit": "10"}

    peer.route("GET", f"{CPO}/locations", page)
    for loc in locations(25):
        peer.route("GET", f"{CPO}/locations/{loc['id']}", one_of(listed))


def single_gets(peer: FakePeer) -> list[str]:
    return [urlsplit(c["url"]).path.rsplit("/", 1)[1] for c in peer.calls if "/locations/" in c["url"]]


def test_a_location_skipped_by_a_shifted_offset_is_asked_for_before_it_is_withdrawn(
    peer: FakePeer, partner: Partner
) -> None:
    """LOC003 deleted once the first page is sent: the offset 10 then starts at LOC011, and LOC010, still listed,
    was never sent. Paged on by offset without X-Total-Count, nothing told: LOC010 was withdrawn. Each location
    not listed is now asked for alone first (after one the pull listed, as a control): only the one the CPO does
    not know (LOC020) is withdrawn; the one it sends is stored."""
    first_full_pull(peer, partner)
    shifting_cpo(peer)
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK and run.received == 23
    assert withdrawn() == ["LOC020"]
    assert Location.objects.visible().get(location_id="LOC010").received_at >= run.started_at
    assert single_gets(peer)[1:] == ["LOC010", "LOC020"] and len(single_gets(peer)) == 3
    finding = DataQualityIssue.objects.get(partner=partner, code="unlisted_checked")
    assert finding.fixed is True
    assert "1 unknown to the CPO (withdrawn), 1 sent (kept), 0 without an answer that tells" in finding.message


def test_a_full_pull_that_listed_everything_asks_for_nothing_alone(peer: FakePeer, partner: Partner) -> None:
    run = pull_again(peer, partner, locations(25))
    assert run.pages == 3
    assert single_gets(peer) == []
    assert not DataQualityIssue.objects.filter(code="unlisted_checked").exists()


def test_more_unlisted_locations_than_the_checks_allowed_withdraw_none(
    peer: FakePeer, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sync, "MAX_UNLISTED_CHECKS", 1)
    first_full_pull(peer, partner)
    shifting_cpo(peer)
    sync.sync_module(partner, "locations", full=True)
    assert single_gets(peer) == []
    assert withdrawn() == []
    finding = DataQualityIssue.objects.get(partner=partner, code="unlisted_checked")
    assert finding.fixed is False and "more than the 1 asked for one by one: none was withdrawn" in finding.message


def test_a_cpo_that_does_not_send_a_listed_location_alone_has_none_withdrawn(peer: FakePeer, partner: Partner) -> None:
    """A CPO without GET of one location answers 404 for any: the control (a location the pull listed) tells
    its answers say nothing."""
    first_full_pull(peer, partner)
    shifting_cpo(peer)
    for loc in locations(25):
        peer.routes.pop(("GET", f"{CPO}/locations/{loc['id']}"))  # unrouted: HTTP 404, OCPI 2000
    sync.sync_module(partner, "locations", full=True)
    assert len(single_gets(peer)) == 1
    assert withdrawn() == []
    finding = DataQualityIssue.objects.get(partner=partner, code="unlisted_checked")
    assert finding.fixed is False and "the CPO's answers tell nothing" in finding.message


def test_a_location_the_cpo_does_not_answer_for_is_kept(peer: FakePeer, partner: Partner) -> None:
    first_full_pull(peer, partner)
    shifting_cpo(peer)
    peer.route("GET", f"{CPO}/locations/LOC020", (500, envelope(status_code=3000)))
    sync.sync_module(partner, "locations", full=True)
    assert withdrawn() == []
    finding = DataQualityIssue.objects.get(partner=partner, code="unlisted_checked")
    assert finding.fixed is False and "1 without an answer that tells (kept)" in finding.message


# The roaming hub NL*HUB with IN*CPA and IN*CPB behind it (tests/ocpi/test_hubs.py).
hub = test_hubs.hub


def hub_locations() -> list[dict[str, Any]]:
    """LOC000-LOC009 of IN*CPA, LOC010-LOC024 of IN*CPB."""
    return [
        ocpi_location("IN", "CPA" if i < 10 else "CPB", f"LOC{i:03d}", last_updated="2026-01-01T00:00:00Z")
        for i in range(25)
    ]


def hub_pull_again(
    peer: FakePeer, hub: Partner, cpb_answer: Callable[[str], tuple[int, Any]] | None, dropped: str = ""
) -> SyncRun:
    """A full pull of the hub's 25 locations, then one from the hub capped at 10 a page without Link or total,
    where LOC003 is deleted once the first page is sent (the offset 10 then starts at LOC011: LOC010, of CPB, is
    never sent); `dropped` is no longer listed at all. A location asked for alone is answered from the list,
    those of CPB by `cpb_answer` if given."""
    peer.route("GET", f"{HUB}/locations", (200, envelope(hub_locations())))
    sync.sync_module(hub, "locations", full=True)
    assert Location.objects.filter(partner=hub).visible().count() == 25
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.calls.clear()
    listed = [loc for loc in hub_locations() if loc["id"] != dropped]

    def page(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = offset_of(call)
        sent = listed[offset : offset + 10]
        if offset == 0:
            listed[:] = [loc for loc in listed if loc["id"] != "LOC003"]
        return 200, envelope(sent), {"X-Limit": "10"}

    def one(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        wanted = urlsplit(call["url"]).path.rsplit("/", 1)[1]
        if cpb_answer is not None and call["headers"].get("OCPI-to-party-id") == "CPB":
            status, body = cpb_answer(wanted)
            return status, body, {}
        found = [loc for loc in listed if loc["id"] == wanted]
        return (200, envelope(found[0]), {}) if found else (404, envelope(status_code=2003), {})

    peer.route("GET", f"{HUB}/locations", page)
    for loc in hub_locations():
        peer.route("GET", f"{HUB}/locations/{loc['id']}", one)
    run = sync.sync_module(hub, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    assert run.received == 24 - bool(dropped)
    return run


@pytest.mark.parametrize(
    "cpb_answer",
    [
        (404, {**envelope(status_code=2000), "status_message": "no such route"}),
        (404, {**envelope(status_code=4001), "status_message": "unknown receiver"}),
    ],
)
def test_behind_a_hub_each_party_has_its_own_control(peer: FakePeer, hub: Partner, cpb_answer: Any) -> None:
    """CPB's platform has no GET of one location; CPA's has. One control (a location of CPA) was sent, and
    LOC010 of CPB, skipped by the shifted offset and still listed, was withdrawn on CPB's 404. Each party's
    own control tells now: CPB's was not sent, and none of CPB's locations is withdrawn."""
    hub_pull_again(peer, hub, lambda wanted: cpb_answer)
    assert withdrawn() == []
    gets = [(c["headers"].get("OCPI-to-party-id"), c["url"].rsplit("/", 1)[1]) for c in peer.calls]
    alone = [(party, wanted) for party, wanted in gets if wanted.startswith("LOC")]
    assert len(alone) == 1 and alone[0][0] == "CPB"  # only CPB's control: LOC010 not asked for
    finding = DataQualityIssue.objects.get(partner=hub, code="unlisted_checked")
    assert finding.fixed is False and "the CPO's answers tell nothing" in finding.message


def test_a_hub_error_on_a_location_asked_alone_keeps_it(peer: FakePeer, hub: Partner) -> None:
    """CPB's control is sent, but LOC010 is answered by the hub with HTTP 404 and OCPI 4002 (its request to CPB
    timed out): the hub's word, not the CPO's. LOC010 is kept, not withdrawn."""

    def cpb(wanted: str) -> tuple[int, Any]:
        if wanted == "LOC010":
            return 404, {**envelope(status_code=4002), "status_message": "timeout on forwarded request"}
        found = [loc for loc in hub_locations() if loc["id"] == wanted]
        return 200, envelope(found[0])

    hub_pull_again(peer, hub, cpb)
    assert withdrawn() == []
    finding = DataQualityIssue.objects.get(partner=hub, code="unlisted_checked")
    assert finding.fixed is False
    assert "0 unknown to the CPO (withdrawn), 0 sent (kept), 1 without an answer that tells" in finding.message


def test_behind_a_hub_a_party_whose_control_is_sent_has_its_gone_location_withdrawn(
    peer: FakePeer, hub: Partner
) -> None:
    """Both parties answer GET of one location: LOC010 of CPB, skipped, is sent and kept; LOC020 of CPB, no
    longer listed, is unknown to the CPO and withdrawn."""
    hub_pull_again(peer, hub, None, dropped="LOC020")
    assert withdrawn() == ["LOC020"]
    finding = DataQualityIssue.objects.get(partner=hub, code="unlisted_checked")
    assert finding.fixed is True and "1 unknown to the CPO (withdrawn), 1 sent (kept)" in finding.message


def test_tariffs_not_listed_by_a_pull_paged_on_are_kept(peer: FakePeer, partner: Partner, spec_example: Any) -> None:
    """The Tariffs Sender interface has no GET of one tariff: after a walk paged on by offset without a total,
    a tariff it did not list may have been skipped, and is kept."""
    tariff = {**spec_example("tariff_14_step_size.json"), "country_code": "IN", "party_id": "CPA"}
    every = [{**tariff, "id": f"T{n:02d}"} for n in range(12)]
    peer.route("GET", f"{CPO}/tariffs", (200, envelope(every)))
    sync.sync_module(partner, "tariffs", full=True)
    Tariff.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.route("GET", f"{CPO}/tariffs", capped([t for t in every if t["id"] != "T11"], limit=5))
    run = sync.sync_module(partner, "tariffs", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK and run.pages == 3
    assert Tariff.objects.count() == 12
    finding = DataQualityIssue.objects.get(partner=partner, code="unlisted_checked", module="tariffs")
    assert finding.fixed is False and finding.message.startswith("1 tariff was not listed")


def test_tariffs_not_listed_by_a_pull_that_did_not_page_on_are_deleted(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    tariff = {**spec_example("tariff_14_step_size.json"), "country_code": "IN", "party_id": "CPA"}
    every = [{**tariff, "id": f"T{n:02d}"} for n in range(3)]
    peer.route("GET", f"{CPO}/tariffs", (200, envelope(every)))
    sync.sync_module(partner, "tariffs", full=True)
    Tariff.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.route("GET", f"{CPO}/tariffs", capped(every[:2], limit=5))
    sync.sync_module(partner, "tariffs", full=True)
    assert sorted(Tariff.objects.values_list("tariff_id", flat=True)) == ["T00", "T01"]


# --- against the CPO simulator's `no_link_header` mode -------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_full_pull_from_the_simulator_without_link_headers_gets_every_location(
    live_server: Any, settings: Any, simulator: Callable[..., SimProcess]
) -> None:
    settings.PUBLIC_BASE_URL = live_server.url
    sim = simulator(
        "--party-id", "CPA", "--locations", "25", "--page-limit", "10", "--token-a", "sim-token-a",
        "--fault", "no_link_header",
    )  # fmt: skip
    partner = register_with_partner(versions_url=sim.versions_url, token_a="sim-token-a")
    first = sync.sync_module(partner, "locations", full=True)
    assert first is not None and first.outcome == SyncRun.Outcome.OK, first.error
    assert (first.pages, first.received, first.announced) == (3, 25, None)
    Location.objects.filter(partner=partner).update(received_at=timezone.now() - timedelta(hours=1))

    again = sync.sync_module(partner, "locations", full=True)
    assert again is not None and again.outcome == SyncRun.Outcome.OK, again.error
    assert Location.objects.filter(partner=partner).visible().count() == 25
    assert not Location.objects.filter(partner=partner, withdrawn_at__isnull=False).exists()
    assert DataQualityIssue.objects.filter(partner=partner, code="no_link_full_page", fixed=True).exists()


# --- a third review: a hub's error on our offset page, and open runs moving the next start back -------------------


@pytest.mark.parametrize("status", [404, 400])
def test_a_hubs_4xxx_on_our_offset_page_fails_the_pull_not_ends_the_list(
    peer: FakePeer, hub: Partner, status: int
) -> None:
    """HTTP 404/400 with OCPI 4002 (a forwarded request timed out) had been taken for the end of the list: the rest
    of the hub's locations were withdrawn."""
    peer.route("GET", f"{HUB}/locations", (200, envelope(hub_locations())))
    sync.sync_module(hub, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    listed = hub_locations()

    def page(call: dict[str, Any]) -> Any:
        if offset_of(call):
            return status, {**envelope(status_code=4002), "status_message": "timeout on forwarded request"}, {}
        return 200, envelope(listed[:10]), {"X-Limit": "10"}

    peer.route("GET", f"{HUB}/locations", page)
    run = sync.sync_module(hub, "locations", full=True)
    assert run.outcome == SyncRun.Outcome.FAILED
    assert not Location.objects.filter(withdrawn_at__isnull=False).exists()


def test_open_incremental_runs_keep_the_next_start_where_it_was(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    cdrs = cdr_list(spec_example, 15)
    earlier_incremental_pull(partner, "cdrs")
    peer.route("GET", f"{CPO}/cdrs", capped(cdrs, limit=10, offset_kept=False))  # offset ignored: each run ends open
    starts = [sync.sync_module(partner, "cdrs").date_from for _ in range(4)]
    assert len(set(starts)) == 1, starts  # had moved back by the overlap on every run


def test_after_a_first_full_pull_ending_open_the_next_ones_start_at_the_epoch_not_before(
    peer: FakePeer, partner: Partner
) -> None:
    peer.route("GET", f"{CPO}/locations", capped(locations(25), limit=10, offset_kept=False))
    sync.sync_module(partner, "locations", full=True)
    starts = [sync.sync_module(partner, "locations").date_from for _ in range(3)]
    assert starts == [datetime(1970, 1, 1, tzinfo=UTC)] * 3, starts
