"""A partner's URLs are used exactly as given; a reply that is not OCPI is a failed request; paging follows
only Links to the same endpoint and notes a list shorter than announced (issue 10, point 1)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from emsp.models import Command, Evse, Location, Partner
from ocpi import health, sync
from ocpi.client import OcpiClient, OcpiReplyError, object_url, url_under, with_params
from ocpi.gateway import OcpiGateway
from ocpi.models import DataQualityIssue, OcpiMessage, SyncRun
from tests.factories import ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

HOST = "http://127.0.0.1:9"


def use_endpoints(partner: Partner, **urls: str) -> None:
    roles = {"locations": "SENDER", "tariffs": "SENDER", "commands": "RECEIVER", "tokens": "RECEIVER"}
    partner.endpoints = [{"identifier": m, "role": roles[m], "url": url} for m, url in urls.items()]
    partner.save()


def locations(n: int) -> list[dict[str, Any]]:
    return [ocpi_location("IN", "CPA", f"LOC{i:03d}", last_updated="2026-01-01T00:00:00Z") for i in range(n)]


def pages_of(items: list[dict[str, Any]], *, limit: int, link: Any = None, total: int | None = None) -> Any:
    """A sender list by offset/limit; `link(offset)` renders the Link header's next URL (None: no header)."""

    def handler(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        query = parse_qs(urlsplit(call["url"]).query)
        offset = int(query.get("offset", ["0"])[0])
        page = items[offset : offset + limit]
        headers = {"X-Total-Count": str(len(items) if total is None else total), "X-Limit": str(limit)}
        if link is not None and offset + len(page) < len(items):
            headers["Link"] = f'<{link(offset + len(page))}>; rel="next"'
        return 200, envelope(page), headers

    return handler


# --- URLs as given -------------------------------------------------------------------------------------------


def test_a_trailing_slash_is_kept_on_lists_and_objects(peer: FakePeer, partner: Partner) -> None:
    use_endpoints(partner, locations=f"{HOST}/ocpi/cpo/2.2.1/locations/", commands=f"{HOST}/ocpi/cpo/2.2.1/commands/")
    assert partner.endpoint_url("locations", "SENDER") == f"{HOST}/ocpi/cpo/2.2.1/locations/"
    peer.route("GET", f"{HOST}/ocpi/cpo/2.2.1/locations/", (200, envelope(locations(2))))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    assert Location.objects.count() == 2
    assert peer.calls[0]["url"] == f"{HOST}/ocpi/cpo/2.2.1/locations/"

    evse = Evse.objects.filter(location__location_id="LOC000").first()
    assert evse is not None
    OcpiGateway().fetch_evse(evse, timeout=1)
    assert peer.calls[-1]["url"] == f"{HOST}/ocpi/cpo/2.2.1/locations/LOC000/{evse.uid}"


def test_a_partners_own_query_string_is_kept_byte_for_byte(peer: FakePeer, partner: Partner) -> None:
    endpoint = f"{HOST}/ocpi/cpo/2.2.1/locations?key=a%2Fb&flag"
    use_endpoints(partner, locations=endpoint)
    peer.route("GET", f"{HOST}/ocpi/cpo/2.2.1/locations", pages_of(locations(3), limit=2))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    urls = [c["url"] for c in peer.calls]
    assert urls[0] == endpoint
    assert urls[1] == f"{endpoint}&offset=2&limit=2"
    assert Location.objects.count() == 3


@pytest.fixture
def command_factory(partner: Partner) -> Any:
    def make(partner: Partner) -> Command:
        sync.ingest_page(partner, "locations", [ocpi_location("IN", "CPA", "CMD1")])
        evse = Evse.objects.filter(location__location_id="CMD1").first()
        return Command.objects.create(partner=partner, type=Command.Type.UNLOCK_CONNECTOR, evse=evse, connector_id="1")

    return make


def test_url_helpers() -> None:
    assert with_params("https://x/l/?a=%20b&offset=5", {"offset": "10"}) == "https://x/l/?a=%20b&offset=10"
    assert with_params("https://x/l", {"date_from": "2026-01-01T00:00:00Z"}) == (
        "https://x/l?date_from=2026-01-01T00%3A00%3A00Z"
    )
    assert url_under("https://x/tokens/", "/IN/EMS/T1?type=RFID") == "https://x/tokens/IN/EMS/T1?type=RFID"
    assert url_under("https://x/tokens?k=1", "/IN/EMS/T1?type=RFID") == "https://x/tokens/IN/EMS/T1?k=1&type=RFID"
    assert object_url("https://x/commands", "START_SESSION") == "https://x/commands/START_SESSION"
    assert object_url("https://x/locations/", "L 1", "E/1") == "https://x/locations/L%201/E%2F1"


def test_commands_go_below_a_slashed_endpoint(peer: FakePeer, partner: Partner, command_factory: Any) -> None:
    use_endpoints(partner, commands=f"{HOST}/ocpi/cpo/2.2.1/commands/")
    command = command_factory(partner=partner)
    peer.route(
        "POST", f"{HOST}/ocpi/cpo/2.2.1/commands/{command.type}", (200, envelope({"result": "ACCEPTED", "timeout": 30}))
    )
    reply = OcpiGateway().send_command(command)
    assert reply.result == "ACCEPTED"


# --- replies that are not OCPI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "reason"),
    [
        (307, b"", {"Location": f"{HOST}/ocpi/cpo/2.2.1/locations/"}, "HTTP 307 redirect"),
        (200, b"<html>maintenance</html>", {}, "not JSON"),
        (200, b'[{"id": "LOC1"}]', {}, "without an OCPI envelope"),
        (200, b'{"data": []}', {}, "without an OCPI envelope"),
        (200, b"", {}, "empty"),
        (200, b'{"status_code": "soon", "data": []}', {}, "status_code"),
    ],
)
def test_a_reply_that_is_not_ocpi_fails_the_pull(
    peer: FakePeer, partner: Partner, status: int, body: bytes, headers: dict[str, str], reason: str
) -> None:
    peer.route("GET", f"{HOST}/ocpi/cpo/2.2.1/locations", lambda call: (status, body, headers))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None
    assert run.outcome == SyncRun.Outcome.FAILED
    assert reason in run.error
    assert not Location.objects.exists()
    logged = OcpiMessage.objects.get(direction=OcpiMessage.Direction.OUT, module="locations")
    assert logged.http_status == status
    assert reason in logged.error
    report = health.partner_health(partner)
    assert report.failed_requests == 1
    assert report.unusable_replies == 1
    assert report.recent_errors == [logged]


def test_the_health_page_shows_failed_requests(peer: FakePeer, partner: Partner, admin_client: Any) -> None:
    peer.route("GET", f"{HOST}/ocpi/cpo/2.2.1/locations", lambda call: (301, b"", {"Location": "/elsewhere"}))
    sync.sync_module(partner, "locations", full=True)
    page = admin_client.get(reverse("admin:emsp_partner_health", args=[partner.pk])).content.decode()
    assert 'id="failed-requests">1' in page
    assert "HTTP 301 redirect" in page


def test_a_command_answered_with_a_redirect_is_not_accepted(
    peer: FakePeer, partner: Partner, command_factory: Any
) -> None:
    command = command_factory(partner=partner)
    url = f"{partner.endpoint_url('commands', 'RECEIVER')}/{command.type}"
    peer.route("POST", url, lambda call: (308, b"", {"Location": url + "/"}))
    with pytest.raises(Exception, match="308 redirect"):
        OcpiGateway().send_command(command)
    assert Command.objects.filter(pk=command.pk, status=Command.Status.QUEUED).exists()


def test_the_client_raises_a_reply_error(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{HOST}/x", lambda call: (200, b'"just a string"', {}))
    with pytest.raises(OcpiReplyError):
        OcpiClient(partner).get(f"{HOST}/x", module="locations")


# --- Link headers and X-Total-Count ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "elsewhere",
    [
        "https://127.0.0.1:9/ocpi/cpo/2.2.1/locations?offset={o}&limit=10",  # another scheme
        "http://127.0.0.2:9/ocpi/cpo/2.2.1/locations?offset={o}&limit=10",  # another host
        "http://127.0.0.1:9/ocpi/cpo/2.2.1/tariffs?offset={o}&limit=10",  # another path
        "http://127.0.0.1:9/ocpi/cpo/2.2.1/locations/?offset={o}&limit=10",  # the path with a slash added
        "/ocpi/cpo/2.2.1/locations?offset={o}&limit=10",  # relative
    ],
)
def test_a_link_pointing_elsewhere_is_not_followed(peer: FakePeer, partner: Partner, elsewhere: str) -> None:
    endpoint = f"{HOST}/ocpi/cpo/2.2.1/locations"
    peer.route("GET", endpoint, pages_of(locations(25), limit=10, link=lambda offset: elsewhere.format(o=offset)))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    assert (run.pages, run.received, run.announced) == (3, 25, 25)
    assert Location.objects.count() == 25
    assert all(c["url"].startswith(endpoint + "?") or c["url"] == endpoint for c in peer.calls)
    finding = DataQualityIssue.objects.get(partner=partner, code="link_elsewhere")
    assert finding.object_id == f"pull {run.pk}"


def test_a_good_link_is_followed(peer: FakePeer, partner: Partner) -> None:
    endpoint = f"{HOST}/ocpi/cpo/2.2.1/locations"
    peer.route("GET", endpoint, pages_of(locations(25), limit=10, link=lambda o: f"{endpoint}?cursor=c{o}&offset={o}"))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and run.pages == 3
    assert "cursor=c10" in peer.calls[1]["url"]
    assert not DataQualityIssue.objects.filter(code="link_elsewhere").exists()


def test_a_list_shorter_than_announced_is_a_finding(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{HOST}/ocpi/cpo/2.2.1/locations", pages_of(locations(12), limit=10, total=40))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None
    assert (run.received, run.announced) == (12, 40)
    finding = DataQualityIssue.objects.get(partner=partner, code="short_list")
    assert "announced 40" in finding.message and "sent 12" in finding.message
    assert finding.fixed is False


def test_a_complete_list_has_no_finding(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{HOST}/ocpi/cpo/2.2.1/locations", pages_of(locations(12), limit=10))
    run = sync.sync_module(partner, "locations", full=True)
    assert run is not None and (run.received, run.announced) == (12, 12)
    assert not DataQualityIssue.objects.filter(code="short_list").exists()
