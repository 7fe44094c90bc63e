"""The OCPI eMSP against the CPO simulator running in its own process, over HTTP on 127.0.0.1: both
handshake directions, a three-page pull, token push, real-time authorization and a charge with its CDR."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billing.models import Cdr
from emsp.models import ChargingSession, Command, Evse, Location, Partner
from emsp.services import commands
from emsp.services.tokens import token_issue
from ocpi.client import OcpiClient, OcpiClientError, object_url
from ocpi.credentials import register_with_partner
from ocpi.gateway import OcpiGateway
from ocpi.models import DataQualityIssue, SyncRun
from ocpi.sync import sync_module, sync_partner
from tests.cposim.conftest import SimProcess, wait_until
from tests.factories import DriverFactory, PartnerFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def emsp_url(live_server: Any, settings: Any) -> str:
    settings.PUBLIC_BASE_URL = live_server.url
    return live_server.url


def test_we_register_with_the_simulator_and_pull_three_pages(
    emsp_url: str, simulator: Callable[..., SimProcess]
) -> None:
    sim = simulator("--party-id", "CPA", "--locations", "25", "--page-limit", "10", "--token-a", "sim-token-a")
    partner = register_with_partner(versions_url=sim.versions_url, token_a="sim-token-a")
    assert partner.state == Partner.State.CONNECTED
    assert (partner.country_code, partner.party_id) == ("IN", "CPA")
    assert sim.ctl("state")["registered"] is True

    runs = {run.module: run for run in sync_partner(partner, full=True)}
    assert runs["locations"].outcome == SyncRun.Outcome.OK, runs["locations"].error
    assert runs["locations"].pages == 3
    assert Location.objects.filter(partner=partner).count() == 25
    assert runs["tariffs"].outcome == SyncRun.Outcome.OK and runs["tariffs"].stored > 0


def test_the_simulator_registers_with_us(emsp_url: str, simulator: Callable[..., SimProcess]) -> None:
    partner = PartnerFactory(
        country_code="IN", party_id="CPB", state=Partner.State.NEW, endpoints=[], outgoing_token=""
    )
    token_a = partner.issue_token_a()
    partner.save()
    sim = simulator("--party-id", "CPB", "--locations", "5", "--tariff-profile", "b")
    sim.ctl("register", {"versions_url": f"{emsp_url}/ocpi/versions", "token_a": token_a})
    wait_until(lambda: Partner.objects.get(pk=partner.pk).state == Partner.State.CONNECTED, timeout=15)
    partner.refresh_from_db()
    assert partner.endpoint_url("locations", "SENDER")
    runs = {run.module: run for run in sync_partner(partner, full=True)}
    assert runs["locations"].stored == 5


# extrawest-ocpi's quirks on the way of a charge (docs/interop.md #10, #11, #13, #14), as simulator modes.
PEER_QUIRKS = "glued_push_urls,no_request_ids,null_optionals,cdr_without_evse_uid"


@pytest.mark.parametrize("faults", ["", PEER_QUIRKS, "repeat_pushes"], ids=["spec", "peer_quirks", "hub_retries"])
def test_a_charge_over_http_from_command_to_cdr(
    emsp_url: str, simulator: Callable[..., SimProcess], faults: str
) -> None:
    sim = simulator(
        "--party-id", "CPA", "--locations", "3", "--token-a", "sim-token-a",
        "--command-delay", "0.2", "--plug-in-delay", "0.3", "--meter-interval", "0.3",
        *(["--fault", faults] if faults else []),
    )  # fmt: skip
    partner = register_with_partner(versions_url=sim.versions_url, token_a="sim-token-a")
    sync_partner(partner, full=True)

    token = token_issue(driver=DriverFactory())
    wait_until(lambda: any(t["uid"] == token.uid for t in sim.ctl("tokens")), timeout=10)  # pushed to the CPO

    evse = Evse.objects.filter(location__partner=partner, status="AVAILABLE").order_by("pk").first()
    start = commands.command_send(commands.command_start_session(token=token, evse=evse))
    assert start.status == Command.Status.ACCEPTED
    wait_until(lambda: Command.objects.get(pk=start.pk).status == Command.Status.SUCCEEDED, timeout=10)
    session = wait_until(
        lambda: ChargingSession.objects.filter(
            authorization_reference=start.authorization_reference, status="ACTIVE"
        ).first(),
        timeout=10,
    )
    assert session.token == token
    assert Command.objects.get(pk=start.pk).session == session
    wait_until(lambda: ChargingSession.objects.get(pk=session.pk).kwh > 0, timeout=10)

    stop = commands.command_send(commands.command_stop_session(session=session))
    assert stop.status == Command.Status.ACCEPTED
    cdr = wait_until(lambda: Cdr.objects.filter(session_id=session.session_id).first(), timeout=15)
    assert cdr.charging_session == session
    assert cdr.total_cost_excl_vat > 0
    assert ChargingSession.objects.get(pk=session.pk).status == "COMPLETED"
    if faults == PEER_QUIRKS:  # the CDR without evse_uid is kept, and said so (recorded once the CDR is stored)
        found = DataQualityIssue.objects.filter(partner=partner, module="cdrs", code="missing_evse_uid")
        wait_until(found.exists, timeout=5)
    if faults == "repeat_pushes":  # every push came twice: each period and the CDR are kept once
        starts = [p["start_date_time"] for p in ChargingSession.objects.get(pk=session.pk).data["charging_periods"]]
        assert starts and len(starts) == len(set(starts))
        assert Cdr.objects.filter(cdr_id=cdr.cdr_id).count() == 1


def test_a_cpo_that_hides_its_commands_and_refuses_with_http_200(
    emsp_url: str, simulator: Callable[..., SimProcess]
) -> None:
    """extrawest-ocpi's 2.2.1 version details leave out its commands receiver (#9), and a token it can't read is
    refused with HTTP 200 and OCPI 3000 (#4): a command fails at once, a refusal is a failed request."""
    sim = simulator("--party-id", "CPA", "--locations", "2", "--token-a", "sim-token-a",
                    "--fault", "no_commands_endpoint,status_in_200")  # fmt: skip
    partner = register_with_partner(versions_url=sim.versions_url, token_a="sim-token-a")
    sync_partner(partner, full=True)
    evse = Evse.objects.filter(location__partner=partner).order_by("pk").first()
    start = commands.command_send(commands.command_start_session(token=token_issue(driver=DriverFactory()), evse=evse))
    assert start.status == Command.Status.FAILED and "no Commands receiver" in start.error
    with pytest.raises(OcpiClientError, match="3000"):
        OcpiClient(partner, token="not-our-token").request(
            "GET", partner.endpoint_url("locations", "SENDER"), module="locations"
        )


def test_real_time_authorization_from_the_chargers_side(emsp_url: str, simulator: Callable[..., SimProcess]) -> None:
    sim = simulator("--party-id", "CPA", "--locations", "2", "--token-a", "sim-token-a", "--plug-in-delay", "0.2")
    partner = register_with_partner(versions_url=sim.versions_url, token_a="sim-token-a")
    sync_partner(partner, full=True)
    token = token_issue(driver=DriverFactory())
    location = Location.objects.filter(partner=partner).order_by("pk").first()
    evse = location.evses.order_by("pk").first()
    answer = sim.ctl(
        "start_session",
        {"location_id": location.location_id, "evse_uid": evse.uid, "token_uid": token.uid, "token_type": "RFID"},
    )
    assert answer["started"] is True, answer
    session = wait_until(lambda: ChargingSession.objects.filter(token=token).first(), timeout=10)
    assert session.auth_method == "AUTH_REQUEST"
    other_evse = location.evses.order_by("pk").last()
    unknown = sim.ctl(
        "start_session",
        {"location_id": location.location_id, "evse_uid": other_evse.uid, "token_uid": "UNKNOWN", "token_type": "RFID"},
    )
    assert unknown["started"] is False
    assert unknown["authorization"]["http_status"] == 404
    assert unknown["authorization"]["body"]["status_code"] == 2004


def test_a_cpo_with_slashed_urls_odd_links_and_bare_errors(emsp_url: str, simulator: Callable[..., SimProcess]) -> None:
    """The quirks of the first independent CPO we met (issue 10): module URLs ending in "/" (and a redirect
    for the URL without it), a Link to another scheme and path, errors outside the OCPI envelope."""
    sim = simulator(
        "--party-id", "CPA", "--locations", "25", "--page-limit", "10", "--token-a", "sim-token-a",
        "--fault", "trailing_slash,link_elsewhere,bare_errors",
    )  # fmt: skip
    partner = register_with_partner(versions_url=sim.versions_url, token_a="sim-token-a")
    assert partner.endpoint_url("locations", "SENDER").endswith("/locations/")

    runs = {run.module: run for run in sync_partner(partner, full=True)}
    assert runs["locations"].outcome == SyncRun.Outcome.OK, runs["locations"].error
    assert (runs["locations"].pages, runs["locations"].announced) == (3, 25)
    assert Location.objects.filter(partner=partner).count() == 25
    assert runs["tariffs"].outcome == SyncRun.Outcome.OK and runs["tariffs"].stored > 0

    evse = Evse.objects.filter(location__partner=partner).order_by("pk").first()
    assert OcpiGateway().fetch_evse(evse, timeout=5) is not None  # {endpoint}{location}/{evse}, one slash

    # Without the slash the list is a redirect: a failed pull that says so, not an empty success.
    endpoints = [{**e, "url": e["url"].rstrip("/")} for e in partner.endpoints]
    Partner.objects.filter(pk=partner.pk).update(endpoints=endpoints)
    partner.refresh_from_db()
    failed = sync_module(partner, "locations", full=True)
    assert failed.outcome == SyncRun.Outcome.FAILED
    assert "HTTP 307 redirect" in failed.error

    # An error as {"detail": ...} (HTTP 404): a failed request with the partner's words, not a crash.
    missing = OcpiClient(partner).request
    with pytest.raises(OcpiClientError, match="HTTP 404"):
        missing("GET", object_url(partner.endpoint_url("locations", "SENDER") + "/", "NOPE"), module="locations")
