"""Walk-up charging (issue 13, point 1): a driver already at the charger starts right after on_confirm, before
the CPO has answered our RESERVE_NOW, and may stop before the CPO has reported the session: each is sequenced
behind what it waits for instead of refused."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from emsp.models import Booking, Command, Partner
from emsp.services.commands import command_result_received
from emsp.services.sessions import session_put
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db


def update(bap: Any, order_id: str, code: str) -> dict[str, Any]:
    order = {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": code}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    return last(bap, "on_update")


@pytest.mark.parametrize("reservation_result", ["ACCEPTED", "REJECTED"])
def test_a_start_right_after_confirm_waits_for_the_reservation_then_goes_out(
    bap: Any, peer: FakePeer, reservation_result: str
) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    started = update(bap, order_id, "start-charging")  # at once: RESERVE_NOW's result has not come
    assert "error" not in started
    assert started["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "PENDING"
    assert not peer.requests_to("START_SESSION")
    booking = Booking.objects.get(order_id=order_id)
    reserve = Command.objects.get(booking=booking, type="RESERVE_NOW")
    with bap.capture(execute=True):
        command_result_received(reserve, {"result": reservation_result})
    (start,) = peer.requests_to("START_SESSION")
    # On the reservation the CPO made (its id as the authorization_reference, mod_commands StartSession);
    # straight to the EVSE when it refused to make one.
    on_reservation = start["json"]["authorization_reference"] == booking.reservation.reservation_id[:36]
    assert on_reservation == (reservation_result == "ACCEPTED")
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STARTING


def test_a_stop_before_the_session_is_reported_goes_out_when_it_is(bap: Any, peer: FakePeer, network: Partner) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    booking = Booking.objects.get(order_id=order_id)
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    update(bap, order_id, "start-charging")
    stopped = update(bap, order_id, "stop-charging")  # changed their mind before the CPO reported the session
    assert "error" not in stopped
    assert not peer.requests_to("STOP_SESSION")
    start = Command.objects.get(booking=booking, type="START_SESSION")
    stamp = timezone.now().strftime("%Y-%m-%dT%H:%M:%SZ")
    with bap.capture(execute=True):
        session_put(
            network,
            {
                "country_code": "IN", "party_id": "CPA", "id": "S-WALK", "start_date_time": stamp, "kwh": 0,
                "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                              "contract_id": booking.token.contract_id},
                "auth_method": "COMMAND", "authorization_reference": start.authorization_reference,
                "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
                "currency": "INR", "status": "ACTIVE", "last_updated": stamp,
            },
        )  # fmt: skip
    (stop,) = peer.requests_to("STOP_SESSION")
    assert stop["json"]["session_id"] == "S-WALK"
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.STOPPING


def test_a_stop_before_the_waiting_start_went_out_cancels_the_booking(bap: Any, peer: FakePeer) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    update(bap, order_id, "start-charging")  # waits for the CPO's answer to RESERVE_NOW
    stopped = update(bap, order_id, "stop-charging")
    assert "error" not in stopped
    assert stopped["message"]["order"]["status"] == "CANCELLED"
    booking = Booking.objects.get(order_id=order_id)
    assert peer.requests_to("CANCEL_RESERVATION")
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    assert not peer.requests_to("START_SESSION")  # the answer came too late to start anything
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CANCELLED
