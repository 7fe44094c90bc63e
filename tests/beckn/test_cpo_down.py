"""A CPO that is not answering (its circuit breaker open, issue 10 point 5): select and init quote from the
catalogue at once with a LOW status confidence saying why; confirm and start fail fast with a clear error and
other operators' chargers nearby."""

from __future__ import annotations

import time
from typing import Any

import pytest

from emsp.models import Booking, Partner
from emsp.services import breakers
from tests.beckn.bap import CPO_BASE
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.factories import PartnerFactory, stored_location
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db


def open_breaker(partner: Partner, module: str) -> None:
    for _ in range(3):
        breakers.failed(partner, module, "ReadTimeout: no answer in 2 s")
    assert breakers.refusing(partner, module) is not None


@pytest.fixture
def other_operator(network: Partner) -> Partner:
    other = PartnerFactory(name="CPO B", country_code="IN", party_id="CPB")
    stored_location(other, location_id="NEXTDOOR", evses=1, latitude=12.972, longitude=77.595)
    return other


def tags_of(body: dict[str, Any]) -> dict[str, str]:
    return {t["descriptor"]["code"]: t["value"] for t in body["message"]["order"]["items"][0]["tags"][0]["list"]}


def test_select_quotes_from_the_catalogue_without_waiting(bap: Any, network: Partner, peer: FakePeer) -> None:
    item = item_of(bap)
    peer.route("GET", f"{CPO_BASE}/locations/NEAR/NEAR-E1", lambda call: time.sleep(5))  # would hang
    open_breaker(network, "locations")
    started = time.monotonic()
    body = select(bap, item)
    assert time.monotonic() - started < 1
    assert "error" not in body, body
    assert body["message"]["order"]["quote"]["price"]["value"]
    tags = tags_of(body)
    assert tags["status-confidence"] == "LOW"
    assert "not answering locations requests" in tags["status-note"]
    assert "ReadTimeout" in tags["status-note"]
    assert not peer.requests_to("/locations/")


def test_select_with_the_cpo_answering_has_no_note(bap: Any, network: Partner) -> None:
    tags = tags_of(select(bap, item_of(bap)))
    assert "status-note" not in tags


def test_init_says_so_too(bap: Any, network: Partner) -> None:
    select(bap, item_of(bap))
    open_breaker(network, "locations")
    body = init(bap)
    assert tags_of(body)["status-confidence"] == "LOW"


def test_confirm_fails_fast_with_other_operators_nearby(
    bap: Any, network: Partner, other_operator: Partner, peer: FakePeer
) -> None:
    select(bap, item_of(bap))
    init(bap)
    open_breaker(network, "commands")
    body = confirm(bap)
    assert body["error"]["code"] == "40006"
    message = body["error"]["message"]
    assert "not answering commands requests" in message
    assert "IN*CPB:NEXTDOOR" in message  # another operator's charger
    assert "IN*CPA:" not in message
    assert not Booking.objects.exists()
    assert not peer.requests_to("RESERVE_NOW")
    # The same chargers follow as a catalogue the app can select from.
    offered = last(bap, "on_search")["message"]["catalog"]
    assert offered["descriptor"]["code"] == "alternatives"
    assert [p["id"] for p in offered["providers"]] == ["IN*CPB"]


def test_start_fails_fast_with_alternatives(
    bap: Any, network: Partner, other_operator: Partner, peer: FakePeer
) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    from emsp.models import Command
    from emsp.services.commands import command_result_received

    booking = Booking.objects.get(order_id=order_id)
    command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    open_breaker(network, "commands")
    start = {"state": {"descriptor": {"code": "start-charging"}}}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": {"id": order_id, "fulfillments": [start]}})
    body = last(bap, "on_update")
    assert body["error"]["code"] == "40006"
    assert "not answering commands requests" in body["error"]["message"]
    assert "IN*CPB:NEXTDOOR" in body["error"]["message"]
    assert not peer.requests_to("START_SESSION")
