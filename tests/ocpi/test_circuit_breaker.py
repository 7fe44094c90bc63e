"""Circuit breakers per partner and module (issue 10, point 5): closed → open after N failures in a window →
half-open probe → closed; 429 + Retry-After respected; pushes, pulls and commands wait instead of hammering."""

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime as http_date
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from emsp import outbound, outbox
from emsp.models import BreakerChange, CircuitBreaker, Command, Delivery, Evse, Partner
from emsp.services import breakers, commands
from emsp.services.tokens import token_issue
from ocpi import circuits, sync
from ocpi.client import OcpiCircuitOpen, OcpiClient, OcpiClientError, retry_after_seconds
from ocpi.models import PushDelivery, SyncRun
from tests.factories import DriverFactory, ocpi_location
from tests.fakes import FakePeer, envelope

pytestmark = pytest.mark.django_db

CPO = "http://127.0.0.1:9/ocpi/cpo/2.2.1"
State = CircuitBreaker.State


@pytest.fixture(autouse=True)
def _breaker_settings(settings: Any) -> None:
    settings.OCPI_BREAKER_FAILURES = 3
    settings.OCPI_BREAKER_WINDOW_SECONDS = 60
    settings.OCPI_BREAKER_OPEN_SECONDS = 30
    settings.OCPI_BREAKER_MAX_OPEN_SECONDS = 100


def down(call: dict[str, Any]) -> Any:
    raise outbound.OutboundError("ConnectTimeout: the CPO did not answer")


def get(partner: Partner, module: str = "tariffs") -> Any:
    return OcpiClient(partner).get(f"{CPO}/{module}", module=module)


def fail(partner: Partner, times: int, module: str = "tariffs") -> None:
    for _ in range(times):
        with pytest.raises(OcpiClientError):
            get(partner, module)


def breaker(partner: Partner, module: str = "tariffs") -> CircuitBreaker:
    return CircuitBreaker.objects.get(partner=partner, module=module)


def due_now(partner: Partner, module: str = "tariffs") -> None:
    CircuitBreaker.objects.filter(partner=partner, module=module).update(retry_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture
def cpo_down(peer: FakePeer) -> FakePeer:
    peer.route("GET", f"{CPO}/tariffs", down)
    return peer


def test_it_opens_after_n_failures_and_then_refuses_without_sending(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 2)
    assert breaker(partner).state == State.CLOSED and breaker(partner).failures == 2
    fail(partner, 1)
    opened = breaker(partner)
    assert opened.state == State.OPEN and opened.trips == 1
    assert "3 failures" in opened.reason and "ConnectTimeout" in opened.reason
    sent = len(cpo_down.calls)
    with pytest.raises(OcpiCircuitOpen, match="not answering tariffs requests"):
        get(partner)
    assert len(cpo_down.calls) == sent  # refused at once: nothing sent
    change = BreakerChange.objects.get()
    assert (change.from_state, change.to_state) == (State.CLOSED, State.OPEN)


def test_failures_outside_the_window_do_not_add_up(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 2)
    CircuitBreaker.objects.update(window_started_at=timezone.now() - timedelta(seconds=61))
    fail(partner, 2)
    assert breaker(partner).state == State.CLOSED and breaker(partner).failures == 2


def test_breakers_are_per_module(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 3)
    cpo_down.route("GET", f"{CPO}/locations", (200, envelope([])))
    assert get(partner, "locations").status_code == 1000
    assert breakers.refusing(partner, "locations") is None
    assert breakers.refusing(partner, "tariffs") is not None


def test_our_own_errors_and_ocpi_client_errors_do_not_count(peer: FakePeer, partner: Partner) -> None:
    peer.route("GET", f"{CPO}/tariffs", (200, envelope(status_code=2001)))
    fail(partner, 5)
    assert not CircuitBreaker.objects.exists()
    peer.route("GET", f"{CPO}/tariffs", (404, envelope(status_code=2000)))
    fail(partner, 5)
    assert not CircuitBreaker.objects.exists()


@pytest.mark.parametrize(
    "answer",
    [
        (500, envelope(status_code=3000)),
        (200, envelope(status_code=3001)),
        (200, b"<html>down</html>"),
        (302, b""),
        (502, envelope(status_code=4001)),  # a hub's code from a CPO that is no hub: its 502 is what counts
    ],
)
def test_server_errors_and_non_ocpi_answers_count(peer: FakePeer, partner: Partner, answer: Any) -> None:
    peer.route("GET", f"{CPO}/tariffs", answer)
    fail(partner, 3)
    assert breaker(partner).state == State.OPEN


def test_a_probe_that_succeeds_closes_it(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 3)
    due_now(partner)
    cpo_down.route("GET", f"{CPO}/tariffs", (200, envelope([])))
    get(partner)  # this request is the probe
    closed = breaker(partner)
    assert closed.state == State.CLOSED and closed.failures == 0
    path = list(BreakerChange.objects.order_by("at", "pk").values_list("to_state", flat=True))
    assert path == [State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_a_probe_that_fails_opens_it_for_twice_as_long(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 3)
    assert breaker(partner).open_seconds == 30
    for expected in (60, 100, 100):  # doubled, capped at OCPI_BREAKER_MAX_OPEN_SECONDS
        due_now(partner)
        fail(partner, 1)
        again = breaker(partner)
        assert again.state == State.OPEN and again.open_seconds == expected
    assert breaker(partner).trips == 4


def test_only_one_caller_probes(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 3)
    due_now(partner)
    assert breakers.admit(partner, "tariffs") is True  # the probe, in flight
    with pytest.raises(breakers.CircuitOpen):
        breakers.admit(partner, "tariffs")
    CircuitBreaker.objects.update(probe_until=timezone.now() - timedelta(seconds=1))  # its worker died
    assert breakers.admit(partner, "tariffs") is True


@pytest.mark.parametrize(("header", "seconds"), [("120", 120), (None, 30), ("soon", 30)])
def test_429_is_respected(peer: FakePeer, partner: Partner, header: str | None, seconds: int) -> None:
    peer.route("GET", f"{CPO}/tariffs", lambda call: (429, envelope(status_code=2000), {"Retry-After": header or ""}))
    fail(partner, 1)
    throttled = breaker(partner)
    assert throttled.state == State.OPEN and "429" in throttled.reason
    waited = (throttled.retry_at - throttled.changed_at).total_seconds()
    assert waited == pytest.approx(seconds, abs=1)


def test_retry_after_as_an_http_date() -> None:
    assert retry_after_seconds(http_date(timezone.now() + timedelta(seconds=90), usegmt=True)) in range(88, 91)
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert retry_after_seconds("99999999999999999999") == 10**9
    assert retry_after_seconds("-5") is None


def test_the_beat_probes_and_recovery_is_automatic(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 3)
    assert circuits.probe_due() == 0  # not yet due
    due_now(partner)
    assert circuits.probe_due() == 0 and breaker(partner).open_seconds == 60  # still down: open longer
    cpo_down.route("GET", f"{CPO}/tariffs", (200, envelope([])))
    due_now(partner)
    assert circuits.probe_due() == 1
    assert breaker(partner).state == State.CLOSED
    assert "limit=1" in cpo_down.calls[-1]["url"]


def test_a_pull_while_open_fails_at_once_and_the_schedule_waits(cpo_down: FakePeer, partner: Partner) -> None:
    fail(partner, 3)
    sent = len(cpo_down.calls)
    run = sync.sync_module(partner, "tariffs", full=True)
    assert run is not None and run.outcome == SyncRun.Outcome.FAILED
    assert "not answering" in run.error
    assert len(cpo_down.calls) == sent
    Partner.objects.filter(pk=partner.pk).update(next_sync_at=timezone.now() - timedelta(minutes=1))
    sync.schedule_due()
    partner.refresh_from_db()
    assert partner.next_sync_at >= breaker(partner).retry_at


def test_a_push_while_open_waits_for_the_breaker_without_using_up_tries(
    peer: FakePeer, partner: Partner, django_capture_on_commit_callbacks: Any
) -> None:
    peer.route("GET", f"{CPO}/tokens", down)
    fail(partner, 3, module="tokens")
    with django_capture_on_commit_callbacks(execute=True):
        token_issue(driver=DriverFactory())
    push = PushDelivery.objects.get(partner=partner)
    assert push.status == Delivery.Status.PENDING, push.last_error
    assert push.attempts == 0
    assert push.next_attempt_at == breaker(partner, "tokens").retry_at
    assert not peer.requests_to("/tokens/")
    assert outbox.deliver(push.pk) is None  # not due yet


def test_a_command_while_open_fails_fast(peer: FakePeer, partner: Partner) -> None:
    sync.ingest_page(partner, "locations", [ocpi_location("IN", "CPA", "L1")])
    evse = Evse.objects.get(uid="L1-E1")
    peer.route("POST", f"{CPO}/commands/START_SESSION", down)
    for _ in range(3):
        token = token_issue(driver=DriverFactory())
        commands.command_send(commands.command_start_session(token=token, evse=evse))
    sent = len(peer.calls)
    token = token_issue(driver=DriverFactory())
    command = commands.command_send(commands.command_start_session(token=token, evse=evse))
    assert command.status == Command.Status.FAILED
    assert "not answering commands requests" in command.error
    assert len(peer.calls) == sent


def test_the_health_page_and_the_console_home_show_it(
    cpo_down: FakePeer, partner: Partner, admin_client: Client
) -> None:
    fail(partner, 3)
    health = admin_client.get(reverse("admin:emsp_partner_health", args=[partner.pk])).content.decode()
    assert 'class="breaker-open"' in health and "3 failures" in health
    assert "1 state change in 24 h" in health
    home = admin_client.get(reverse("admin:index")).content.decode()
    assert 'id="kpi-circuits">1<' in home
    assert f'id="circuit-{breaker(partner).pk}"' in home
