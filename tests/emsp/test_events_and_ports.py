"""The domain's two ways out: events it publishes (handlers subscribed at start-up, run in order) and the
CPO port an adapter implements. Both are wired by the apps' ready(), so the domain imports no adapter."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from emsp import events, ports


@dataclass(frozen=True)
class Happened:
    what: str


def test_handlers_run_in_subscription_order_once_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events, "_handlers", events.defaultdict(list))
    heard: list[str] = []

    def first(event: Happened) -> None:
        heard.append(f"first {event.what}")

    def second(event: Happened) -> None:
        heard.append(f"second {event.what}")

    events.subscribe(Happened, first)
    events.subscribe(Happened, second)
    events.subscribe(Happened, first)  # subscribing twice changes nothing
    events.publish(Happened("x"))
    events.publish(object())  # nobody listens: nothing happens
    assert heard == ["first x", "second x"]


def test_the_apps_subscribe_the_bookings_workflow_and_the_beckn_adapter() -> None:
    from beckn import events as beckn_events
    from emsp.services import bookings

    assert events.subscribers(events.EvseStatusChanged) == [bookings.on_evse_status_changed]
    assert events.subscribers(events.ReservationCancelledByCpo) == [bookings.on_reservation_cancelled_by_cpo]
    assert events.subscribers(events.BookingSessionChanged) == [beckn_events.session_changed]
    # The domain first (a start waiting for the reservation goes out), then the app hears the outcome.
    assert events.subscribers(events.CommandFinished) == [
        bookings.on_reservation_finished,
        beckn_events.command_finished,
    ]
    assert events.subscribers(events.BookingSettled) == [beckn_events.booking_settled]
    assert events.subscribers(events.BookingCancelledByProvider) == [beckn_events.booking_cancelled_by_provider]


def test_the_ocpi_app_registers_the_cpo_gateway_and_the_outbox_senders() -> None:
    from emsp import outbox
    from emsp.models import Delivery
    from ocpi.gateway import OcpiGateway

    assert isinstance(ports.cpo_gateway(), OcpiGateway)
    assert set(outbox._senders) == {Delivery.Channel.OCPI_PUSH, Delivery.Channel.BECKN_CALLBACK}


def test_without_an_adapter_the_port_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_gateway", None)
    with pytest.raises(RuntimeError, match="no CPO gateway registered"):
        ports.cpo_gateway()
