"""Beckn hardening: short signature windows, a checked context.timestamp, no control characters in ids,
callbacks only to the sender's registered URL, errors without internals, and Proxy-Authenticate for a failed
gateway signature."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from beckn.models import BecknCallback, BecknMessage, BecknSubscriber
from beckn.signing import load_private_key, sign_request
from emsp.datetimes import format_datetime
from emsp.models import Booking, Command
from emsp.services import bookings
from emsp.services.commands import command_result_received
from tests.beckn.bap import BAP_ID, BAP_URI, CPO_BASE, KEY_ID
from tests.beckn.test_actions import confirm, init, item_of, last, search_message, select
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db


def signed_for(bap: Any, seconds: int) -> Any:
    body = orjson.dumps({"context": bap.bap.context("search"), "message": search_message()})
    now = int(time.time())
    header = sign_request(
        body, subscriber_id=BAP_ID, unique_key_id=KEY_ID, private_key=load_private_key(bap.bap.private_b64),
        created=now, expires=now + seconds,
    )  # fmt: skip
    return bap("search", {}, raw=body, signed=False, headers={"Authorization": header})


def test_a_signature_valid_for_ten_years_is_refused(bap: Any) -> None:
    response = signed_for(bap, 10 * 365 * 24 * 3600)
    assert response.status_code == 401
    assert "validity_too_long" in response.json()["error"]["message"]
    assert "WWW-Authenticate" in response


def test_the_longest_signature_window_is_configurable(bap: Any, settings: Any) -> None:
    settings.BECKN_SIGNATURE_MAX_VALIDITY_SECONDS = 300
    assert signed_for(bap, 300).status_code == 200
    assert signed_for(bap, 301).status_code == 401


@pytest.mark.parametrize(
    ("timestamp", "why"),
    [
        ("yesterday at noon", "not an RFC 3339"),
        ("2020-01-01T00:00:00Z", "too old"),
        (format_datetime(datetime.now(UTC) + timedelta(hours=1)), "future"),
    ],
    ids=["not RFC 3339", "too old", "an hour ahead"],  # the same on every worker (pytest-xdist)
)
def test_a_context_timestamp_outside_the_window_is_a_nack(bap: Any, timestamp: str, why: str) -> None:
    response = bap("search", search_message(), timestamp=timestamp)
    assert response.status_code == 400
    assert response.json()["error"]["paths"] == "context.timestamp"
    assert why in response.json()["error"]["message"]
    assert not BecknCallback.objects.exists()


def test_a_request_received_after_its_ttl_is_a_nack(bap: Any) -> None:
    """core 1.1.0 Context.ttl: the message holds valid for that long after its timestamp."""
    a_minute_ago = format_datetime(datetime.now(UTC) - timedelta(seconds=60))
    response = bap("search", search_message(), timestamp=a_minute_ago, ttl="PT30S")
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["paths"]) == ("30000", "context.ttl")
    assert not BecknCallback.objects.exists()


@pytest.mark.parametrize("ttl", ["PT2M", "P999999999D"])  # the second: as long as a duration can be
def test_a_request_within_its_ttl_is_acked(bap: Any, ttl: str) -> None:
    a_minute_ago = format_datetime(datetime.now(UTC) - timedelta(seconds=60))
    response = bap("search", search_message(), timestamp=a_minute_ago, ttl=ttl)
    assert (response.status_code, response.json()["message"]["ack"]["status"]) == (200, "ACK")


@pytest.mark.parametrize("field", ["message_id", "transaction_id", "bap_id"])
@pytest.mark.parametrize("value", ["m\x00", "line\nbreak", "esc\x1b"])
def test_ids_with_control_characters_are_a_nack_and_never_answered(bap: Any, field: str, value: str) -> None:
    response = bap("search", search_message(), **{field: value})
    assert response.status_code in (400, 401)  # 401 when the bap_id no longer matches the signature's keyId
    assert response.json()["message"]["ack"]["status"] == "NACK"
    assert not BecknMessage.objects.exists()
    assert not BecknCallback.objects.exists()


def test_a_bap_uri_other_than_the_registered_one_is_a_nack(bap: Any) -> None:
    response = bap("search", search_message(), bap_uri="https://evil.example/steal")
    assert response.status_code == 400
    assert response.json()["error"]["paths"] == "context.bap_uri"
    assert not BecknCallback.objects.exists()


def test_a_subscriber_without_a_registered_url_gets_no_callbacks(bap: Any) -> None:
    BecknSubscriber.objects.filter(subscriber_id=BAP_ID).update(subscriber_url="")
    from beckn import registry

    registry.forget_trusted()
    response = bap("search", search_message())
    assert response.status_code == 400
    assert "no registered URL" in response.json()["error"]["message"]


def test_callbacks_go_to_the_registered_url_whatever_the_case_of_the_context(bap: Any) -> None:
    response = bap("search", search_message(), bap_uri=BAP_URI.replace("bap.test.example", "BAP.Test.Example") + "/")
    assert response.status_code == 200
    assert BecknCallback.objects.get().url == f"{BAP_URI}/on_search"


def test_a_start_the_cpo_cannot_take_tells_the_bap_without_our_internals(bap: Any, peer: FakePeer) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    booking = Booking.objects.get(order_id=order_id)
    command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", (502, b"<html>upstream 10.0.0.7 failed</html>"))
    start = {"state": {"descriptor": {"code": "start-charging"}}}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": {"id": order_id, "fulfillments": [start]}})
    error = last(bap, "on_update")["error"]
    assert error["code"] == "40006"
    for internal in ("http", "127.0.0.1", "10.0.0.7", "HTTP 502", "Error", "Traceback"):
        assert internal not in error["message"], error
    booking.refresh_from_db()
    # The START_SESSION stays on record (a 502 may come after the charger started: a late session finds the
    # booking through it); the booking is STARTING on a refused start only, which the driver can try again.
    assert booking.state == Booking.State.STARTING and bookings.start_refused(booking)


def test_a_bad_authorization_and_a_bad_gateway_signature_get_both_challenges(bap: Any) -> None:
    body = orjson.dumps({"context": bap.bap.context("search"), "message": search_message()})
    headers = {
        "Authorization": 'Signature keyId="bap.test.example|k1|ed25519",algorithm="ed25519",created="1",'
        'expires="2",headers="(created) (expires) digest",signature="AAAA"',
        "X-Gateway-Authorization": "garbage",
    }
    response = bap("search", {}, raw=body, signed=False, headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Signature realm=")
    assert response["Proxy-Authenticate"].startswith("Signature realm=")


@pytest.mark.parametrize("item", ["L1\x00/E1/1", "L1/E1\n/1", "L1/E1/\x1b1"])
def test_an_item_id_with_control_characters_is_an_invalid_request_not_a_failure(bap: Any, item: str) -> None:
    """Ids we look up reach PostgreSQL, which refuses a NUL: the BAP hears which field is wrong, not "please
    retry", and nothing is marked failed."""
    body = select(bap, item)
    assert body["error"]["paths"] == "message.order.items[0].id"
    assert not BecknMessage.objects.filter(status=BecknMessage.Status.FAILED).exists()


@pytest.mark.parametrize(
    ("action", "message", "path"),
    [
        ("update", {"update_target": "fulfillments[0].state", "order": {"id": "ORD\x00"}}, "message.order.id"),
        ("rating", {"ratings": [{"rating_category": "Order", "id": "ORD\x00", "value": "5"}]}, "message.ratings[0].id"),
        ("rating", {"ratings": [{"rating_category": "Or\x00der", "id": "ORD", "value": "5"}]},
         "message.ratings[0].rating_category"),
        ("cancel", {"order_id": "ORD\x00"}, "message.order_id"),
        ("cancel", {"order_id": "O" * 256}, "message.order_id"),
        ("rating", {"ratings": [{"rating_category": "C" * 21, "id": "ORD", "value": "5"}]},
         "message.ratings[0].rating_category"),
        ("rating", {"ratings": [{"rating_category": "Order", "id": "ORD", "value": "4." + "9" * 20}]},
         "message.ratings[0].value"),
        ("rating", {"ratings": [{"rating_category": "Order", "id": "ORD", "value": "NaN"}]},
         "message.ratings[0].value"),
        ("update", {"update_target": "order.fulfillments[0].state",
                    "order": {"id": "ORD", "fulfillments": [{"state": {"descriptor": "start-charging"}}]}},
         "message.order.fulfillments[0].state.descriptor.code"),
        ("support", {"support": {"ref_id": "ORD\x00"}}, "message.support.ref_id"),
        ("support", {"support": {"order_id": "O" * 256}}, "message.support.order_id"),
    ],
)  # fmt: skip
def test_ids_and_codes_with_control_characters_name_the_field(
    bap: Any, action: str, message: dict[str, Any], path: str
) -> None:
    bap(action, message)
    body = last(bap, f"on_{action}")
    assert body["error"]["paths"] == path
    assert not BecknMessage.objects.filter(status=BecknMessage.Status.FAILED).exists()


def _refused(bap: Any, action: str, message: dict[str, Any]) -> dict[str, Any]:
    """The error the BAP hears, at the ACK (a NACK) or in the callback; never a failure we asked it to retry."""
    response = bap(action, message)
    error = (
        orjson.loads(response.content).get("error")
        if response.status_code != 200
        else last(bap, f"on_{action}")["error"]
    )
    assert error and error["code"] != "40000"
    assert not BecknMessage.objects.filter(status=BecknMessage.Status.FAILED).exists()
    return error


@pytest.mark.parametrize(
    ("groups", "path"),
    [
        ([{"list": 5}], "message.intent.fulfillment.tags[0].list"),
        ([{"list": {"descriptor": {"code": "connector-type"}}}], "message.intent.fulfillment.tags[0].list"),
        ([{"list": [{"descriptor": "connector-type", "value": "CCS2"}]}],
         "message.intent.fulfillment.tags[0].list[0].descriptor"),
    ],
)  # fmt: skip
def test_tags_of_the_wrong_shape_name_the_field(bap: Any, groups: list[Any], path: str) -> None:
    message = search_message()
    message["intent"]["fulfillment"]["tags"] = groups
    assert _refused(bap, "search", message)["paths"] == path


@pytest.mark.parametrize(
    ("value", "unit"),
    [("NaN", "kWh"), ("Infinity", "kWh"), ("-Infinity", "minutes"), ("1e400", "kWh"), ("1e400", "minutes"),
     ("100000", "kWh"), ("1441", "minutes"), ("25", "hours"), ("0", "kWh")],
)  # fmt: skip
def test_an_absurd_quantity_is_an_invalid_request_not_a_failure(bap: Any, value: str, unit: str) -> None:
    item = item_of(bap)
    measure = {"value": value, "unit": unit}
    message = {
        "order": {"provider": {"id": "IN*CPA"}, "items": [{"id": item, "quantity": {"selected": {"measure": measure}}}]}
    }
    error = _refused(bap, "select", message)
    assert error["paths"] == "message.order.items[0].quantity.selected.measure.value"


def test_a_window_that_ends_past_the_year_9999_is_an_invalid_request_not_a_failure(bap: Any) -> None:
    item = item_of(bap)
    stop = {"type": "start", "time": {"timestamp": "9999-12-31T23:00:00Z", "duration": "PT5H"}}
    message = {"order": {"provider": {"id": "IN*CPA"}, "items": [{"id": item}], "fulfillments": [{"stops": [stop]}]}}
    error = _refused(bap, "select", message)
    assert error["paths"] == "message.order.fulfillments[0].stops[0].time.duration"


@pytest.mark.parametrize(
    ("order", "path"),
    [
        ({"billing": "asha@example.com"}, "message.order.billing"),
        ({"billing": {"email": ["asha@example.com"]}}, "message.order.billing.email"),
        ({"billing": {"email": "asha\x00@example.com"}}, "message.order.billing.email"),
        ({"billing": {"email": "a" * 250 + "@example.com"}}, "message.order.billing.email"),
        ({"billing": {"email": "not an email"}}, "message.order.billing.email"),
        ({"billing": {"phone": "9" * 40}}, "message.order.billing.phone"),
        ({"billing": {"phone": "+91 98450 00000", "name": "A\x1bsha"}}, "message.order.billing.name"),
        ({"billing": {"phone": "+91 98450 00000", "address": 12345}}, "message.order.billing.address"),
        ({"fulfillments": [{"customer": "asha"}]}, "message.order.fulfillments[0].customer"),
        ({"fulfillments": [{"customer": {"contact": ["x"]}}]}, "message.order.fulfillments[0].customer.contact"),
        ({"fulfillments": [{"customer": {"person": "Asha", "contact": {"phone": "+91 98450 00000"}}}]},
         "message.order.fulfillments[0].customer.person"),
        ({"fulfillments": [{"customer": {"contact": {"email": "asha@exa\nmple.com"}}}]},
         "message.order.fulfillments[0].customer.contact.email"),
    ],
)  # fmt: skip
def test_driver_details_of_the_wrong_shape_name_the_field_and_create_no_driver(
    bap: Any, order: dict[str, Any], path: str
) -> None:
    from emsp.models import Driver

    select(bap, item_of(bap))
    drivers = Driver.objects.count()
    error = _refused(bap, "init", {"order": {"provider": {"id": "IN*CPA"}, **order}})
    assert error["paths"] == path
    assert Driver.objects.count() == drivers


def test_only_the_billing_fields_we_keep_are_stored_and_echoed(bap: Any) -> None:
    select(bap, item_of(bap))
    billing = {"name": " Asha ", "email": "asha@example.com", "phone": "+91 98450 00000", "tax_id": "GST1",
               "organization": {"name": "x" * 5000}, "time": {"label": "any"}}  # fmt: skip
    bap("init", {"order": {"provider": {"id": "IN*CPA"}, "billing": billing}})
    echoed = last(bap, "on_init")["message"]["order"]["billing"]
    assert echoed == {"name": "Asha", "email": "asha@example.com", "phone": "+91 98450 00000", "tax_id": "GST1"}


@pytest.mark.parametrize(
    "location",
    ["Bengaluru", "\x00", ["IND"], {"city": {"name": "Benga\x00luru"}}, {"country": {"code": "IND"}, "x": "y" * 5000}],
    ids=["a string", "a NUL", "a list", "a NUL inside", "too large"],
)
def test_a_context_location_that_is_not_a_plain_object_is_a_nack(bap: Any, location: Any) -> None:
    """The journey keeps the context's location (jsonb, which refuses a NUL) and callbacks echo it."""
    response = bap("search", search_message(), location=location)
    assert response.status_code == 400
    assert response.json()["error"]["paths"] == "context.location"
    assert not BecknMessage.objects.exists()
