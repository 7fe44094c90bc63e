"""A full pull from a CPO whose pages are capped at a limit but name neither a next page (`Link`) nor a total
(`X-Total-Count`): transport_and_format says no Link is the last page, and a pull that took the first page
for the whole list withdrew every location after it. A page as full as its limit is paged on from by
offset/limit until a short or empty page; a short page without Link is still the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from emsp.models import Location, Partner
from ocpi import sync
from ocpi.credentials import register_with_partner
from ocpi.models import DataQualityIssue, SyncRun
from tests.cposim.conftest import SimProcess
from tests.factories import ocpi_location
from tests.fakes import FakePeer, envelope

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


def pull_again(peer: FakePeer, partner: Partner, listed: list[dict[str, Any]], **cpo: Any) -> SyncRun:
    """A first full pull of 25 locations from a compliant CPO, then a full pull (an hour later, as far as the
    stored locations tell) from the capped one listing `listed`."""
    every = locations(25)
    peer.route("GET", f"{CPO}/locations", (200, envelope(every)))
    sync.sync_module(partner, "locations", full=True)
    assert Location.objects.visible().count() == 25
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.calls.clear()
    peer.route("GET", f"{CPO}/locations", capped(listed, **{"limit": 10, **cpo}))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    return run


def withdrawn() -> list[str]:
    return sorted(Location.objects.filter(withdrawn_at__isnull=False).values_list("location_id", flat=True))


def asked(peer: FakePeer) -> list[str]:
    return [urlsplit(c["url"]).query for c in peer.requests_to("/locations")]


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
    assert finding.fixed is False and "answered with the same objects again" in finding.message


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


# --- against the CPO simulator's `no_link_header` mode -------------------------------------------------------


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(list(args), tmp_path / f"sim{len(started)}.log")
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


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
