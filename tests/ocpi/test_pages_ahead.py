"""A pull asks for the next page before it stores this one (`OcpiClient.iter_pages(ahead=True)`): the partner
prepares it meanwhile. The requests, their log rows and the breaker's counts stay those of one page after the
other, in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from emsp.models import Location, Partner
from emsp.services import breakers
from ocpi import sync
from ocpi.client import OcpiCircuitOpen, OcpiClient, _Ahead
from ocpi.models import OcpiMessage, SyncRun
from tests.factories import ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"
WAIT = 10  # seconds: long enough never to be reached when the request is under way


def three_pages(asked: dict[int, threading.Event]) -> Any:
    """Locations 10 a page, 25 in all, offset/limit paging; `asked[offset]` is set when that page is asked for."""
    items = [ocpi_location("IN", "CPA", f"LOC{i:03d}", evses=1) for i in range(25)]

    def handler(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        offset = int(call["url"].partition("offset=")[2].partition("&")[0] or 0)
        asked.setdefault(offset, threading.Event()).set()
        return 200, envelope(items[offset : offset + 10]), {"X-Total-Count": "25", "X-Limit": "10"}

    return handler


def asked_events() -> dict[int, threading.Event]:
    return {offset: threading.Event() for offset in (0, 10, 20)}


def test_the_next_page_is_asked_for_while_this_one_is_in_hand(peer: FakePeer, partner: Partner) -> None:
    asked = asked_events()
    peer.route("GET", f"{CPO}/locations", three_pages(asked))
    pages = OcpiClient(partner).iter_pages(f"{CPO}/locations", module="locations", ahead=True)
    first = next(pages)
    assert len(first.items) == 10
    assert asked[10].wait(WAIT), "page 2 was not asked for while page 1 was in hand"
    assert not asked[20].is_set()  # one page ahead, not more
    assert [len(p.items) for p in pages] == [10, 5]
    assert [c["url"].partition("?")[2] for c in peer.calls] == ["", "offset=10&limit=10", "offset=20&limit=10"]
    logged = list(OcpiMessage.objects.order_by("id").values_list("url", "http_status"))
    assert [(url.partition("?")[2], status) for url, status in logged] == [
        ("", 200), ("offset=10&limit=10", 200), ("offset=20&limit=10", 200)
    ]  # fmt: skip


def test_without_ahead_the_next_page_waits_for_the_caller(peer: FakePeer, partner: Partner) -> None:
    asked = asked_events()
    peer.route("GET", f"{CPO}/locations", three_pages(asked))
    pages = OcpiClient(partner).iter_pages(f"{CPO}/locations", module="locations")
    next(pages)
    assert not asked[10].wait(0.2)
    assert [len(p.items) for p in pages] == [10, 5]


def test_a_walk_left_early_still_logs_the_request_already_made(peer: FakePeer, partner: Partner) -> None:
    asked = asked_events()
    peer.route("GET", f"{CPO}/locations", three_pages(asked))
    pages = OcpiClient(partner).iter_pages(f"{CPO}/locations", module="locations", ahead=True)
    next(pages)
    pages.close()
    assert OcpiMessage.objects.count() == 2 == len(peer.calls)


def test_an_open_breaker_refuses_the_next_page_when_it_is_asked_for(
    peer: FakePeer, partner: Partner, settings: Any
) -> None:
    settings.OCPI_BREAKER_FAILURES = 1
    peer.route("GET", f"{CPO}/locations", three_pages(asked_events()))
    breakers.failed(partner, "locations", "down")  # open when the next page would be sent
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = _Ahead(OcpiClient(partner), pool, f"{CPO}/locations?offset=10&limit=10", "locations", None)
        assert peer.calls == []  # refused, not sent
        with pytest.raises(OcpiCircuitOpen):
            ahead.reply()  # said when the page is asked for, after the one before it was handed over


def test_a_pull_stores_every_page_and_counts_them(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/locations", three_pages(asked_events()))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    assert (run.pages, run.received, run.stored) == (3, 25, 25)
    assert Location.objects.count() == 25


def second_page_fails() -> Callable[[dict[str, Any]], tuple[int, Any, dict[str, str]]]:
    """A CPO announcing 25 locations in pages of 10 whose second page answers 503."""
    items = [ocpi_location("IN", "CPA", f"LOC{i:03d}", evses=1) for i in range(10)]

    def handler(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        if "offset=10" in call["url"]:
            return 503, envelope(status_code=3000), {}
        return 200, envelope(items), {"X-Total-Count": "25", "X-Limit": "10"}

    return handler


def test_a_pull_whose_second_page_fails_keeps_the_first(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/locations", second_page_fails())
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.FAILED
    assert run.pages == 1 and Location.objects.count() == 10
    assert "503" in run.error


def test_a_failed_page_asked_for_ahead_is_logged_and_counted_once(
    peer: FakePeer, partner: Partner, settings: Any
) -> None:
    settings.OCPI_BREAKER_FAILURES = 2
    peer.route("GET", f"{CPO}/locations", second_page_fails())
    sync.sync_module(partner, "locations", full=True)
    assert OcpiMessage.objects.filter(http_status=503).count() == 1
    assert breakers.refusing(partner, "locations") is None  # one failure of two: still closed
