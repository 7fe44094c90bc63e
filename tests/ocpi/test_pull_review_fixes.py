"""Pull and outbound fixes from a review: a full pull that saw one object twice withdraws nothing; an answer's
body is read up to a cap, decompressed or not; a list whose `data` is no list, or a negative X-Total-Count,
fails that module's pull and not the others'; an envelope timestamp ahead of our clock does not move the next
incremental pull later; a credentials reply quoted in an error keeps its token out of the message log."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from django.test import override_settings
from django.utils import timezone

from billing.models import Tariff
from emsp import outbound
from emsp.datetimes import format_datetime, parse_utc
from emsp.models import Location, Partner
from ocpi import sync
from ocpi.client import OcpiClient, OcpiReplyError
from ocpi.credentials import RegistrationError, register_with_partner
from ocpi.models import DataQualityIssue, HubClientInfo, OcpiMessage, SyncRun
from tests.factories import PartnerFactory, ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"


def locations(n: int) -> list[dict[str, Any]]:
    """n locations with ascending last_updated (a CPO's list sorted by it)."""
    return [
        ocpi_location("IN", "CPA", f"LOC{i:03d}", evses=1, last_updated=f"2026-01-01T00:{i:02d}:00Z") for i in range(n)
    ]


def paged(listed: list[dict[str, Any]], *, limit: int = 10) -> Any:
    """Offset/limit paging over `listed` as it is when each page is asked for, with X-Total-Count and a date_from
    filter read as a time (not as a string)."""

    def handler(call: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        query = parse_qs(urlsplit(call["url"]).query)
        offset = int(query.get("offset", ["0"])[0])
        date_from = query.get("date_from", [None])[0]
        since = parse_utc(date_from) if date_from else None
        matching = [i for i in listed if since is None or parse_utc(i["last_updated"]) >= since]
        page = matching[offset : offset + limit]
        return 200, envelope(page), {"X-Total-Count": str(len(matching)), "X-Limit": str(limit)}

    return handler


# -- 1. a list that moved under its pages: one object seen twice, its neighbour never --------------------------


def test_a_full_pull_that_saw_a_location_twice_withdraws_none(peer: FakePeer, partner: Partner) -> None:
    """Offset paging over a list sorted by last_updated: LOC002 updated while page 1 is read moves to the end,
    LOC010 slides onto page 1 and is never seen, LOC002 comes twice. 25 objects for 25 announced, 24 distinct:
    not the whole list, LOC010 is not withdrawn."""
    listed = locations(25)
    armed = False
    walk = paged(listed)

    def cpo(call: dict[str, Any]) -> Any:
        answer = walk(call)
        if armed and "offset" not in call["url"]:
            moved = listed.pop(2)
            listed.append({**moved, "last_updated": "2026-01-02T00:00:00Z"})
        return answer

    peer.route("GET", f"{CPO}/locations", cpo)
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    armed = True
    run = sync.sync_module(partner, "locations", full=True)

    assert run is not None and run.outcome == SyncRun.Outcome.OK
    assert (run.received, run.announced) == (25, 25)
    assert list(Location.objects.filter(withdrawn_at__isnull=False).values_list("location_id", flat=True)) == []
    finding = DataQualityIssue.objects.get(partner=partner, code="short_list")
    assert "1 of them again" in finding.message and "24 distinct" in finding.message


def test_a_full_tariff_pull_listing_one_tariff_twice_deletes_none(
    peer: FakePeer, partner: Partner, spec_example: Any
) -> None:
    """The same for tariffs (a full pull deletes those it did not see): T2 twice on one page, T3 not sent,
    three announced."""
    tariff = {**spec_example("tariff_14_step_size.json"), "country_code": "IN", "party_id": "CPA"}
    three = [{**tariff, "id": f"T{n}"} for n in (1, 2, 3)]
    peer.route("GET", f"{CPO}/tariffs", (200, envelope(three)))
    sync.sync_module(partner, "tariffs", full=True)
    Tariff.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.route(
        "GET", f"{CPO}/tariffs", lambda call: (200, envelope([three[0], three[1], three[1]]), {"X-Total-Count": "3"})
    )

    run = sync.sync_module(partner, "tariffs", full=True)

    assert run is not None and run.outcome == SyncRun.Outcome.OK and run.received == 3
    assert sorted(Tariff.objects.values_list("tariff_id", flat=True)) == ["T1", "T2", "T3"]


def test_overlapping_pages_still_withdraw_what_is_gone(peer: FakePeer, partner: Partner) -> None:
    """A CPO whose next page starts at the last object of the page before (an inclusive cursor) lists that object
    twice as it was: every object was seen, and what it no longer lists is withdrawn, with no finding."""
    listed = locations(25)

    def overlapping(call: dict[str, Any]) -> Any:
        offset = int(parse_qs(urlsplit(call["url"]).query).get("offset", ["0"])[0])
        headers = {"X-Total-Count": str(len(listed)), "X-Limit": "10"}
        if offset + 10 < len(listed):
            headers["Link"] = f'<{CPO}/locations?offset={offset + 9}&limit=10>; rel="next"'
        return 200, envelope(listed[offset : offset + 10]), headers

    peer.route("GET", f"{CPO}/locations", overlapping)
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    del listed[7]
    run = sync.sync_module(partner, "locations", full=True)

    assert run is not None and run.outcome == SyncRun.Outcome.OK and run.received > run.announced == 24
    assert list(Location.objects.filter(withdrawn_at__isnull=False).values_list("location_id", flat=True)) == ["LOC007"]
    assert not DataQualityIssue.objects.filter(partner=partner, code="short_list").exists()


def test_a_list_that_shifts_one_way_then_back_withdraws_none(peer: FakePeer, partner: Partner) -> None:
    """An object inserted before the cursor shifts the rest right (one is listed again, unchanged, but not as an
    overlap of pages: not the first of its page after being the last of the one before); a removal then shifts
    them back and one is skipped; an object appended at the end brings the count up to what was announced.
    Nothing the CPO still lists is withdrawn."""
    listed = locations(25)
    asked = {"pages": 0}

    def shifting(call: dict[str, Any]) -> Any:
        offset = int(parse_qs(urlsplit(call["url"]).query).get("offset", ["0"])[0])
        asked["pages"] += 1
        if asked["pages"] == 2:
            listed.insert(0, ocpi_location("IN", "CPA", "NEW000", evses=1, last_updated="2025-12-31T00:00:00Z"))
        if asked["pages"] == 3:
            del listed[3]  # LOC002 is gone
            listed.append(ocpi_location("IN", "CPA", "NEW999", evses=1, last_updated="2026-01-02T00:00:00Z"))
        headers = {"X-Limit": "10", "X-Total-Count": str(len(listed))}
        if offset + 10 < len(listed):
            headers["Link"] = f'<{CPO}/locations?offset={offset + 10}&limit=10>; rel="next"'
        return 200, envelope(listed[offset : offset + 10]), headers

    peer.route("GET", f"{CPO}/locations", paged(locations(25)))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    peer.route("GET", f"{CPO}/locations", shifting)
    sync.sync_module(partner, "locations", full=True)

    still_listed = {location["id"] for location in listed}
    withdrawn = set(Location.objects.filter(withdrawn_at__isnull=False).values_list("location_id", flat=True))
    assert not withdrawn & still_listed


def test_a_full_pull_of_the_whole_list_still_withdraws_what_is_gone(peer: FakePeer, partner: Partner) -> None:
    listed = locations(25)
    peer.route("GET", f"{CPO}/locations", paged(listed))
    sync.sync_module(partner, "locations", full=True)
    Location.objects.update(received_at=timezone.now() - timedelta(hours=1))
    del listed[7]

    run = sync.sync_module(partner, "locations", full=True)

    assert run is not None and (run.received, run.announced) == (24, 24)
    assert list(Location.objects.filter(withdrawn_at__isnull=False).values_list("location_id", flat=True)) == ["LOC007"]


# -- 2. an answer's body is read up to a cap, decompressed ---------------------------------------------------------

BIG_GZIP = gzip.compress(b"\x00" * (4 * 1024 * 1024), compresslevel=9)  # 4 MiB that travel as about 4 KiB


class _Answers(BaseHTTPRequestHandler):
    answers: dict[str, tuple[bytes, dict[str, str]]]

    def do_GET(self) -> None:
        body, headers = self.answers.get(urlsplit(self.path).path, (b"{}", {}))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def local_peer() -> Iterator[tuple[str, dict[str, tuple[bytes, dict[str, str]]]]]:
    """A real HTTP server on 127.0.0.1 answering each path as scripted; shut down when the test ends."""
    answers: dict[str, tuple[bytes, dict[str, str]]] = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Answers,), {"answers": answers}))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", answers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@override_settings(ALLOW_PRIVATE_NETWORKS=True, OUTBOUND_MAX_BODY_BYTES=64 * 1024)
def test_a_gzip_answer_inflating_past_the_cap_is_refused_and_the_next_answer_read(
    local_peer: tuple[str, dict[str, tuple[bytes, dict[str, str]]]],
) -> None:
    base, answers = local_peer
    answers["/bomb"] = (BIG_GZIP, {"Content-Encoding": "gzip"})
    small = orjson.dumps({"status_code": 1000, "data": ["x" * 1000] * 50})
    answers["/small"] = (gzip.compress(small), {"Content-Encoding": "gzip"})
    answers["/plain"] = (b"x" * (64 * 1024 + 1), {})

    with pytest.raises(outbound.OutboundError, match="larger than the 65536 bytes"):
        outbound.send("GET", f"{base}/bomb", timeout=5)
    with pytest.raises(outbound.OutboundError, match="larger than"):
        outbound.send("GET", f"{base}/plain", timeout=5)
    response = outbound.send("GET", f"{base}/small", timeout=5)  # the pool's connections still work

    assert response.status == 200 and response.content == small


@override_settings(ALLOW_PRIVATE_NETWORKS=True, OUTBOUND_MAX_BODY_BYTES=64 * 1024)
def test_a_pull_whose_page_is_too_large_fails_with_the_reason(
    local_peer: tuple[str, dict[str, tuple[bytes, dict[str, str]]]], partner: Partner
) -> None:
    base, answers = local_peer
    answers["/ocpi/cpo/2.2.1/locations"] = (BIG_GZIP, {"Content-Encoding": "gzip"})
    partner.endpoints = [{"identifier": "locations", "role": "SENDER", "url": f"{base}/ocpi/cpo/2.2.1/locations"}]
    partner.save()

    run = sync.sync_module(partner, "locations", full=True)

    assert run is not None and run.outcome == SyncRun.Outcome.FAILED
    assert "larger than the 65536 bytes" in run.error


# -- 3. `data` that is no list, a negative X-Total-Count: that module fails, the others are pulled ---------------


@pytest.mark.parametrize("data", ["oops", 5])
def test_a_list_whose_data_is_no_list_fails_its_pull_and_the_other_modules_are_pulled(
    peer: FakePeer, partner: Partner, data: Any
) -> None:
    peer.route("GET", f"{CPO}/locations", (200, envelope(data)))
    for module in ("tariffs", "sessions", "cdrs"):
        peer.route("GET", f"{CPO}/{module}", (200, envelope([])))

    runs = sync.sync_partner(partner, full=True)

    assert [(r.module, r.outcome) for r in runs] == [
        ("locations", SyncRun.Outcome.FAILED),
        ("tariffs", SyncRun.Outcome.OK),
        ("sessions", SyncRun.Outcome.OK),
        ("cdrs", SyncRun.Outcome.OK),
    ]
    assert "not a list of objects" in runs[0].error
    assert not SyncRun.objects.filter(outcome=SyncRun.Outcome.RUNNING).exists()


def test_a_negative_total_is_taken_as_none(peer: FakePeer, partner: Partner) -> None:
    """X-Total-Count: -1 (and an X-Limit of -5) is no count: the pull goes on as without one."""
    peer.route(
        "GET", f"{CPO}/locations", lambda call: (200, envelope(locations(3)), {"X-Total-Count": "-1", "X-Limit": "-5"})
    )

    run = sync.sync_module(partner, "locations", full=True)

    assert run is not None and run.outcome == SyncRun.Outcome.OK, run.error
    run.refresh_from_db()
    assert run.announced is None and run.received == 3
    assert all("limit=-" not in c["url"] for c in peer.calls)


def test_iter_pages_turns_data_that_is_no_list_into_a_reply_error(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/tariffs", (200, envelope("oops")))
    with pytest.raises(OcpiReplyError, match="not a list of objects"):
        list(OcpiClient(partner).iter_pages(f"{CPO}/tariffs", module="tariffs"))


def test_a_hub_whose_client_info_data_is_no_list_fails_no_pull(peer: FakePeer, db: None) -> None:
    hub_url = "http://127.0.0.1:9998/ocpi/hub/2.2.1"
    modules = ["hubclientinfo", "locations", "tariffs", "sessions", "cdrs"]
    hub = PartnerFactory(
        country_code="NL",
        party_id="HUB",
        role=Partner.Role.HUB,
        endpoints=[{"identifier": m, "role": "SENDER", "url": f"{hub_url}/{m}"} for m in modules],
    )
    HubClientInfo.objects.create(
        partner=hub, country_code="IN", party_id="CPA", role="CPO", status="CONNECTED", last_updated=timezone.now()
    )
    peer.route("GET", f"{hub_url}/hubclientinfo", (200, envelope("oops")))
    for module in modules[1:]:
        peer.route("GET", f"{hub_url}/{module}", (200, envelope([])))

    runs = sync.sync_partner(hub, full=True)

    assert [r.outcome for r in runs] == [SyncRun.Outcome.OK] * 4
    assert HubClientInfo.objects.filter(partner=hub).count() == 1  # nothing dropped on a failed read


# -- 4. an envelope timestamp ahead of our clock ------------------------------------------------------------------


def test_an_envelope_timestamp_ahead_of_ours_does_not_move_the_next_incremental_pull_later(
    peer: FakePeer, partner: Partner
) -> None:
    """A CPO stamping its envelopes 3 hours ahead (a local time sent as UTC) while its objects' last_updated
    are right: the next incremental pull starts on our clock, and a location changed after the full pull comes."""
    listed = locations(3)
    walk = paged(listed)

    def cpo(call: dict[str, Any]) -> Any:
        status, body, headers = walk(call)
        return status, {**body, "timestamp": format_datetime(timezone.now() + timedelta(hours=3))}, headers

    peer.route("GET", f"{CPO}/locations", cpo)
    first = sync.sync_module(partner, "locations", full=True)
    assert first is not None and first.outcome == SyncRun.Outcome.OK
    new = ocpi_location(
        "IN", "CPA", "NEW1", evses=1, last_updated=format_datetime(timezone.now() + timedelta(minutes=5))
    )
    listed.append(new)

    second = sync.sync_module(partner, "locations")

    assert second is not None and second.mode == SyncRun.Mode.INCREMENTAL
    assert second.date_from is not None and second.date_from <= first.started_at
    assert Location.objects.filter(location_id="NEW1").exists()


def test_a_run_stored_with_a_partner_time_ahead_counts_from_ours(partner: Partner) -> None:
    """Runs recorded before this rule may hold a partner time ahead of ours: the earlier of the two is used."""
    started = timezone.now() - timedelta(minutes=30)
    SyncRun.objects.create(
        partner=partner,
        module="locations",
        mode=SyncRun.Mode.FULL,
        outcome=SyncRun.Outcome.OK,
        started_at=started,
        partner_time=started + timedelta(hours=3),
    )
    assert sync._incremental_from(partner, "locations") == started - sync.INCREMENTAL_OVERLAP


# -- 5. a credentials reply quoted in an error: its token redacted --------------------------------------------------

CPO_ROOT = "http://127.0.0.1:9999/ocpi/cpo"
CREDENTIALS = {
    "token": "9e80a9c4-28be-11e9-b210-d663bd873d93",
    "url": f"{CPO_ROOT}/versions",
    "roles": [{"role": "CPO", "party_id": "CPA", "country_code": "IN", "business_details": {"name": "CPO A"}}],
}


def script_cpo(peer: FakePeer) -> None:
    peer.route("GET", f"{CPO_ROOT}/versions", (200, envelope([{"version": "2.2.1", "url": f"{CPO_ROOT}/2.2.1"}])))
    endpoints = [
        {"identifier": m, "role": "RECEIVER" if m == "credentials" else "SENDER", "url": f"{CPO_ROOT}/2.2.1/{m}"}
        for m in ("credentials", "locations", "tariffs", "sessions", "cdrs")
    ]
    peer.route("GET", f"{CPO_ROOT}/2.2.1", (200, envelope({"version": "2.2.1", "endpoints": endpoints})))


@pytest.mark.parametrize(
    "answer",
    [
        orjson.dumps({**CREDENTIALS, "token": "SECRET-TOKEN-C-42"}),  # no envelope
        orjson.dumps({"url": "u" * 180, "token": "SECRET-TOKEN-C-42-AND-MORE"}),  # the 200-byte excerpt cuts it
        b'{"token": "SECRET-TOKEN-C-42", "url": ',  # not JSON
        orjson.dumps({"note": "O'Brien", "token": "SECRET-TOKEN-C-42"}),  # a repr in double quotes
    ],
    ids=["no-envelope", "excerpt-cuts-the-token", "not-json", "quoted-in-double-quotes"],
)
def test_a_credentials_reply_quoted_in_an_error_keeps_its_token_out_of_the_log(
    peer: FakePeer, db: None, answer: bytes
) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO_ROOT}/2.2.1/credentials", (200, answer))

    with pytest.raises(RegistrationError) as refused:
        register_with_partner(versions_url=f"{CPO_ROOT}/versions", token_a="token-a-from-cpo")

    [message] = OcpiMessage.objects.filter(module="credentials")
    assert "not an OCPI answer" in message.error and "[redacted]" in message.error
    assert "SECRET" not in message.error and "SECRET" not in message.response_body
    assert "SECRET" not in str(refused.value)


def test_a_credentials_call_answered_with_an_http_error_keeps_the_token_of_its_body_out_of_the_error(
    peer: FakePeer, db: None
) -> None:
    script_cpo(peer)
    peer.route("POST", f"{CPO_ROOT}/2.2.1/credentials", (400, {"error": "bad", "token": "SECRET-TOKEN-C-42"}))

    with pytest.raises(RegistrationError) as refused:
        register_with_partner(versions_url=f"{CPO_ROOT}/versions", token_a="token-a-from-cpo")

    [message] = OcpiMessage.objects.filter(module="credentials")
    assert "HTTP 400" in message.error and "[redacted]" in message.error
    assert "SECRET" not in message.error and "SECRET" not in str(refused.value)


def test_redact_tokens_in_text() -> None:
    from ocpi.client import redact_tokens

    assert redact_tokens('{"token": "abc", "url": "x"}') == '{"token": "[redacted]", "url": "x"}'
    assert redact_tokens("{'token': 'a\\'b', 'n': 1}") == "{'token': '[redacted]', 'n': 1}"
    assert redact_tokens('cut here: {"token": "abc') == 'cut here: {"token": "[redacted]"'
    assert redact_tokens("no token here") == "no token here"
