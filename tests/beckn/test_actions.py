"""The Beckn BPP end to end in one process: signed requests to the literal paths, ACK/NACK, and the on_*
callbacks (captured at the outbound seam), each validated against the official core 1.1.0 OpenAPI."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from django.test import Client

from beckn.keys import our_public_key_b64
from beckn.models import BecknCallback, BecknMessage, BecknRating
from beckn.signing import parse_signature_header, verify_signature
from emsp.models import Booking, Driver, Evse, Partner
from emsp.services import catalogue
from tests.beckn.bap import BAP_URI
from tests.beckn.conformance import assert_valid
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db

BENGALURU = "12.971599,77.594566"


def search_message(
    gps: str = BENGALURU, radius_km: str = "5", tags: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    fulfillment: dict[str, Any] = {
        "stops": [
            {"location": {"circle": {"gps": gps, "radius": {"type": "CONSTANT", "value": radius_km, "unit": "km"}}}}
        ]
    }
    if tags:
        fulfillment["tags"] = [{"list": tags}]
    return {"intent": {"fulfillment": fulfillment}}


def last(bap: Any, action: str) -> dict[str, Any]:
    bodies = bap.bap.callbacks(action)
    assert bodies, f"no {action} callback"
    assert_valid(action, bodies[-1])
    return bodies[-1]


# --- search -------------------------------------------------------------------------------------------


def test_search_is_acked_and_answered_with_a_valid_catalogue(bap: Any) -> None:
    response = bap("search", search_message())
    assert response.status_code == 200
    assert response.json() == {"message": {"ack": {"status": "ACK"}}}
    body = last(bap, "on_search")
    assert body["context"]["action"] == "on_search"
    assert body["context"]["bpp_id"] == "emsp.localhost"
    provider = body["message"]["catalog"]["providers"][0]
    assert provider["id"] == "IN*CPA"
    items = provider["items"]
    assert [i["id"].split("/")[0] for i in items] == ["NEAR", "NEAR", "FAR"]  # nearest first; AWAY is 58 km off
    assert items[0]["price"] == {"currency": "INR", "value": "18"}
    specs = {t["descriptor"]["code"]: t["value"] for t in items[0]["tags"][0]["list"]}
    assert specs["connector-type"] == "CCS2"
    assert specs["power-rating"] == "60kW"
    assert specs["status"] == "Available"
    assert specs["status-confidence"] == "HIGH"
    assert provider["fulfillments"][0]["type"] == "CHARGING"


def test_the_callback_is_signed_over_the_exact_bytes_sent(bap: Any) -> None:
    bap("search", search_message())
    call = bap.bap.calls("on_search")[-1]
    header = parse_signature_header(call["headers"]["Authorization"])
    assert header.subscriber_id == "emsp.localhost"
    verify_signature(call["body"], header, our_public_key_b64(), now=int(time.time()), skew=5)


@pytest.mark.parametrize(("value", "expected"), [("CCS2", 3), ("Type2", 0), ("iec_62196_t2_combo", 3)])
def test_search_filters_by_connector_type_synonyms(bap: Any, value: str, expected: int) -> None:
    bap("search", search_message(tags=[{"descriptor": {"code": "connector-type"}, "value": value}]))
    providers = last(bap, "on_search")["message"]["catalog"]["providers"]
    assert sum(len(p["items"]) for p in providers) == expected


def test_search_filters_by_radius_availability_power_and_price(bap: Any, network: Partner) -> None:
    bap("search", search_message(radius_km="1"))
    assert len(last(bap, "on_search")["message"]["catalog"]["providers"][0]["items"]) == 2
    Evse.objects.filter(location__location_id="NEAR").update(status="CHARGING")
    bap("search", search_message(tags=[{"descriptor": {"code": "availability"}, "value": "Available"}]))
    assert [i["id"].split("/")[0] for i in last(bap, "on_search")["message"]["catalog"]["providers"][0]["items"]] == [
        "FAR"
    ]
    bap("search", search_message(tags=[{"descriptor": {"code": "power-rating"}, "value": "100kW"}]))
    assert last(bap, "on_search")["message"]["catalog"]["providers"] == []
    bap("search", search_message(tags=[{"descriptor": {"code": "max-price"}, "value": "10"}]))
    assert last(bap, "on_search")["message"]["catalog"]["providers"] == []


def test_a_repeated_message_id_gets_the_same_ack_and_no_second_callback(bap: Any) -> None:
    first = bap("search", search_message(), message_id="m-1")
    second = bap("search", search_message(), message_id="m-1")
    assert first.json() == second.json() == {"message": {"ack": {"status": "ACK"}}}
    assert len(bap.bap.callbacks("on_search")) == 1
    assert BecknMessage.objects.count() == 1


# --- NACKs ----------------------------------------------------------------------------------------------


def test_invalid_json_is_a_nack_naming_the_problem(bap: Any) -> None:
    response = bap("search", {}, raw=b"{nope")
    assert response.status_code == 400
    assert response.json()["message"]["ack"]["status"] == "NACK"
    assert response.json()["error"]["code"] == "30000"
    assert not BecknMessage.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"action": "select"}, "context.action"),
        ({"domain": "retail:1.1.0"}, "context.domain"),
        ({"bap_uri": "not a url"}, "context.bap_uri"),
        ({"message_id": 42}, "context.message_id"),
        ({"version": "0.9.4"}, "context.version"),
        ({"ttl": "ten seconds"}, "context.ttl"),
        ({"bpp_id": "someone-else.example"}, "context.bpp_id"),
    ],
)
def test_an_invalid_context_is_a_nack_with_its_path(bap: Any, overrides: dict[str, Any], path: str) -> None:
    response = bap("search", search_message(), **overrides)
    assert response.status_code == 400
    assert response.json()["error"]["paths"] == path
    assert not BecknMessage.objects.exists()


def test_a_request_without_a_signature_is_401_with_www_authenticate(bap: Any) -> None:
    response = bap("search", search_message(), signed=False)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Signature realm="emsp.localhost"')
    assert response.json()["message"]["ack"]["status"] == "NACK"
    assert not BecknMessage.objects.exists()


def test_a_request_signed_for_another_bap_is_refused(bap: Any) -> None:
    response = bap("search", search_message(), bap_id="other-bap.example")
    assert response.status_code == 401


def test_an_oversized_body_is_refused(bap: Any, settings: Any) -> None:
    settings.BECKN_MAX_BODY_BYTES = 100
    response = bap("search", search_message())
    assert response.status_code == 413


def test_wrong_types_in_the_intent_come_back_as_an_error_callback(bap: Any) -> None:
    response = bap("search", search_message(gps="north"))
    assert response.status_code == 200
    body = last(bap, "on_search")
    assert body["error"]["code"] == "30000"
    assert body["error"]["paths"] == "message.intent.fulfillment.stops[0].location.circle.gps"


def test_an_unknown_action_is_refused(bap: Any) -> None:
    assert Client().post("/beckn/teleport", data=b"{}", content_type="application/json").status_code == 404


# --- ordering ---------------------------------------------------------------------------------------------


def item_of(bap: Any) -> str:
    bap("search", search_message())
    return last(bap, "on_search")["message"]["catalog"]["providers"][0]["items"][0]["id"]


def select(bap: Any, item: str, kwh: str = "20") -> dict[str, Any]:
    bap(
        "select",
        {
            "order": {
                "provider": {"id": "IN*CPA"},
                "items": [{"id": item, "quantity": {"selected": {"measure": {"value": kwh, "unit": "kWh"}}}}],
            }
        },
    )
    return last(bap, "on_select")


def init(bap: Any) -> dict[str, Any]:
    bap(
        "init",
        {
            "order": {
                "provider": {"id": "IN*CPA"},
                "billing": {"name": "Asha", "email": "asha@example.com", "phone": "+919845000000"},
            }
        },
    )
    return last(bap, "on_init")


def confirm(bap: Any) -> dict[str, Any]:
    bap("confirm", {"order": {"provider": {"id": "IN*CPA"}, "payments": [{"status": "NOT-PAID"}]}})
    return last(bap, "on_confirm")


def test_select_quotes_with_the_tariff_engine_and_our_fee(bap: Any) -> None:
    body = select(bap, item_of(bap))
    quote = body["message"]["order"]["quote"]
    # 20 kWh × 18 + 20 flat = 380 excl.; 448.40 incl. 18 % GST; fee 5 + 2 % of 380 = 12.60 (+18 %) = 14.87
    assert quote["price"] == {"currency": "INR", "value": "463.27"}
    assert {line["title"] for line in quote["breakup"]} == {"energy-cost", "session-fee", "service-charge"}


def test_select_of_an_unknown_item_is_an_error_callback(bap: Any) -> None:
    body = select(bap, "NOPE/NOPE/1")
    assert body["error"]["code"] == "30004"


def test_select_of_a_busy_charger_says_why(bap: Any) -> None:
    item = item_of(bap)
    Evse.objects.filter(location__location_id="NEAR").update(status="OUTOFORDER")
    body = select(bap, item)
    assert body["error"]["code"] == "30008"
    assert "OUTOFORDER" in body["error"]["message"]


def test_init_checks_the_driver_and_locks_the_quote(bap: Any) -> None:
    select(bap, item_of(bap))
    body = init(bap)
    order = body["message"]["order"]
    assert order["payments"][0]["type"] == "POST-FULFILLMENT"
    assert order["cancellation_terms"]
    driver = Driver.objects.get(email="asha@example.com")
    assert driver.tokens.filter(type="APP_USER").exists()


def test_init_echoes_the_billing_state_city_and_organization(bap: Any) -> None:
    select(bap, item_of(bap))
    billing = {"name": "Asha", "email": "asha@example.com", "phone": "+919845000000",
               "city": {"name": "Bengaluru", "code": "std:080"}, "state": {"name": "Karnataka"},
               "organization": {"descriptor": {"name": "ACME Fleet"}}, "time": {"label": "ignored"}}  # fmt: skip
    bap("init", {"order": {"provider": {"id": "IN*CPA"}, "billing": billing}})
    echoed = last(bap, "on_init")["message"]["order"]["billing"]
    assert echoed == {key: value for key, value in billing.items() if key != "time"}
    bap("init", {"order": {"billing": {**billing, "city": {"name": "Benga\x00luru"}}}})
    assert last(bap, "on_init")["error"]["paths"] == "message.order.billing.city.name"


def test_a_confirmed_orders_quote_has_no_countdown_and_its_cancellation_terms_cover_every_state(bap: Any) -> None:
    assert select(bap, item_of(bap))["message"]["order"]["quote"]["ttl"].startswith("PT")  # an offer: it expires
    init(bap)
    order = confirm(bap)["message"]["order"]
    assert "ttl" not in order["quote"]  # accepted: nothing counts down
    states = [term["fulfillment_state"]["descriptor"]["code"] for term in order["cancellation_terms"]]
    assert states == ["RESERVATION", "PENDING", "ACTIVE"]
    bap("status", {"order_id": order["id"]})
    assert "ttl" not in last(bap, "on_status")["message"]["order"]["quote"]


def test_init_without_contact_details_is_an_error(bap: Any) -> None:
    select(bap, item_of(bap))
    bap("init", {"order": {"billing": {"name": "Anonymous"}}})
    assert last(bap, "on_init")["error"]["paths"] == "message.order.billing"


def test_the_full_order_confirm_start_status_track_stop(bap: Any, network: Partner, peer: FakePeer) -> None:
    select(bap, item_of(bap))
    init(bap)
    order = confirm(bap)["message"]["order"]
    order_id = order["id"]
    assert order["fulfillments"][0]["state"]["descriptor"]["code"] == "RESERVATION"
    booking = Booking.objects.get(order_id=order_id)
    assert peer.requests_to("RESERVE_NOW")
    from emsp.models import Command
    from emsp.services.commands import command_result_received

    command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})

    start_charging = {"state": {"descriptor": {"code": "start-charging"}}}
    order = {"id": order_id, "fulfillments": [start_charging]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    assert last(bap, "on_update")["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "PENDING"
    start = peer.requests_to("START_SESSION")[0]["json"]
    assert start["token"]["type"] == "APP_USER"

    bap("status", {"order_id": order_id})
    assert last(bap, "on_status")["message"]["order"]["id"] == order_id
    bap("track", {"order_id": order_id})
    assert last(bap, "on_track")["message"]["tracking"]["url"].endswith(f"/beckn/track/{order_id}")
    assert Client().get(f"/beckn/track/{order_id}").status_code == 200
    booking.refresh_from_db()
    assert booking.state == Booking.State.STARTING


def test_a_second_confirm_for_the_same_charger_is_refused(bap: Any, peer: FakePeer) -> None:
    item = item_of(bap)
    first, second = "first-driver", "second-driver"
    for journey in (first, second):  # both drivers get a quote while the charger is free
        bap.bap.transaction_id = journey
        select(bap, item)
        init(bap)
    bap.bap.transaction_id = first
    assert "error" not in confirm(bap)
    bap.bap.transaction_id = second
    body = confirm(bap)
    assert body["error"]["code"] == "30008"
    assert "already booked" in body["error"]["message"]


def test_cancel_before_charging(bap: Any, peer: FakePeer) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    bap("cancel", {"order_id": order_id, "cancellation_reason_id": "changed-plans"})
    body = last(bap, "on_cancel")
    assert body["message"]["order"]["status"] == "CANCELLED"
    assert Booking.objects.get(order_id=order_id).state == Booking.State.CANCELLED
    bap("cancel", {"order_id": order_id})
    assert last(bap, "on_cancel")["error"]["code"] == "50001"


def test_cancel_after_the_start_stops_the_charge_and_keeps_the_order_until_it_ends(
    bap: Any, network: Partner, peer: FakePeer
) -> None:
    from emsp.models import Command
    from emsp.services.commands import command_result_received

    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    booking = Booking.objects.get(order_id=order_id)
    command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    start_charging = {"state": {"descriptor": {"code": "start-charging"}}}
    bap(
        "update",
        {"update_target": "order.fulfillments[0].state", "order": {"id": order_id, "fulfillments": [start_charging]}},
    )
    bap("cancel", {"order_id": order_id, "cancellation_reason_id": "changed-plans"})
    order = last(bap, "on_cancel")["message"]["order"]
    # The RFC's flow: cancel → STOP_SESSION → the CDR bills what was charged; the order ends with the charge.
    assert order["status"] == "ACTIVE"
    assert order["fulfillments"][0]["state"]["descriptor"]["name"] == "Stopping"
    assert order["cancellation"]["reason"] == {"id": "changed-plans"}
    assert not peer.requests_to("CANCEL_RESERVATION")
    assert Booking.objects.get(order_id=order_id).state == Booking.State.STOPPING


def test_unknown_orders_are_30010(bap: Any) -> None:
    bap("status", {"order_id": "ORD-NOPE"})
    assert last(bap, "on_status")["error"]["code"] == "30010"


def test_rating_and_support(bap: Any) -> None:
    select(bap, item_of(bap))
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    bap("rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": "4"}]})
    last(bap, "on_rating")
    bap("rating", {"ratings": [{"rating_category": "Order", "id": order_id, "value": "eleven"}]})
    assert last(bap, "on_rating")["error"]["code"] == "30015"
    bap("support", {"support": {"ref_id": order_id}})
    support = last(bap, "on_support")["message"]["support"]
    assert support["url"].endswith(f"/beckn/support/{order_id}")
    assert Client().get(f"/beckn/support/{order_id}").status_code == 200


@pytest.mark.parametrize(
    ("category", "ref", "code"),
    [
        ("Foo", "x", "50003"),  # not a core 1.1.0 Rating.rating_category
        ("Agent", "x", "50003"),  # no agent serves our orders
        ("Item", "bogus", "30014"),
        ("Item", "NEAR/NOPE/1", "30014"),
        ("Provider", "NOPE*XX", "30014"),
        ("Fulfillment", "nope", "30014"),
        ("Fulfillment", "FUL-NOWHERE", "30014"),
    ],
)
def test_a_rating_of_an_unsupported_category_or_of_nothing_of_ours_is_an_error(
    bap: Any, category: str, ref: str, code: str
) -> None:
    bap("rating", {"ratings": [{"rating_category": category, "id": ref, "value": "4"}]})
    assert last(bap, "on_rating")["error"]["code"] == code
    assert not BecknRating.objects.exists()


def test_items_providers_and_fulfillments_we_show_can_be_rated(bap: Any) -> None:
    item = item_of(bap)
    fulfillment = last(bap, "on_search")["message"]["catalog"]["providers"][0]["fulfillments"][0]["id"]
    for category, ref in (("Item", item), ("Provider", "IN*CPA"), ("Fulfillment", fulfillment)):
        bap("rating", {"ratings": [{"rating_category": category, "id": ref, "value": "5"}]})
        assert "error" not in last(bap, "on_rating"), (category, ref)
    assert BecknRating.objects.count() == 3


# --- one order a transaction, named as selected --------------------------------------------------------------


def test_select_of_an_unknown_provider_is_30001(bap: Any) -> None:
    item = item_of(bap)
    bap("select", {"order": {"provider": {"id": "NOPE*XX"}, "items": [{"id": item}]}})
    body = last(bap, "on_select")
    assert (body["error"]["code"], body["error"]["paths"]) == ("30001", "message.order.provider.id")


@pytest.mark.parametrize(
    ("order", "code", "path"),
    [
        ({"provider": {"id": "NOPE*XX"}}, "30001", "message.order.provider.id"),
        ({"items": [{"id": "NEAR/NEAR-E2/1"}]}, "30004", "message.order.items[0].id"),
        ({"items": [{"id": "FAR/FAR-E1/1"}]}, "30004", "message.order.items[0].id"),
    ],
)
def test_init_and_confirm_naming_other_than_the_selection_are_refused(
    bap: Any, order: dict[str, Any], code: str, path: str
) -> None:
    select(bap, item_of(bap))
    billing = {"name": "Asha", "email": "asha@example.com", "phone": "+919845000000"}
    bap("init", {"order": {**order, "billing": billing}})
    body = last(bap, "on_init")
    assert (body["error"]["code"], body["error"]["paths"]) == (code, path)
    init(bap)  # as selected: fine
    bap("confirm", {"order": {**order, "payments": [{"status": "NOT-PAID"}]}})
    body = last(bap, "on_confirm")
    assert (body["error"]["code"], body["error"]["paths"]) == (code, path)
    assert not Booking.objects.exists()
    # The items as on_select gave them (same id, any case) are the selection.
    selected = last(bap, "on_select")["message"]["order"]["items"][0]["id"].lower()
    bap("confirm", {"order": {"provider": {"id": "in:cpa"}, "items": [{"id": selected}],
                              "payments": [{"status": "NOT-PAID"}]}})  # fmt: skip
    assert "error" not in last(bap, "on_confirm")


def test_a_transaction_holds_one_order_while_it_stands(bap: Any) -> None:
    item = item_of(bap)
    select(bap, item)
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    body = select(bap, item)
    assert body["error"]["code"] == "40000"
    assert order_id in body["error"]["message"]
    bap("init", {"order": {"billing": {"name": "Asha", "email": "asha@example.com"}}})
    assert last(bap, "on_init")["error"]["code"] == "40000"
    assert confirm(bap)["message"]["order"]["id"] == order_id
    assert Booking.objects.count() == 1


# --- unsolicited ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["lookup_then_update", "receiver_statement"])
def test_a_booked_charger_going_out_of_order_cancels_with_alternatives(
    bap: Any, network: Partner, django_capture_on_commit_callbacks: Any, via: str
) -> None:
    item = item_of(bap)
    select(bap, item)
    init(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    booking = Booking.objects.get(order_id=order_id)
    patch = {"status": "OUTOFORDER", "last_updated": "2026-07-01T00:00:00Z"}
    with django_capture_on_commit_callbacks(execute=True):
        if via == "lookup_then_update":
            catalogue.evse_patch(catalogue.evse_ref("IN", "CPA", "NEAR", booking.evse.uid), patch)
        else:  # what the locations receiver runs (one statement on PostgreSQL)
            catalogue.evse_patch_at("IN", "CPA", "NEAR", booking.evse.uid, patch)
    body = last(bap, "on_cancel")
    order = body["message"]["order"]
    assert order["status"] == "CANCELLED"
    assert order["cancellation"]["cancelled_by"] == "PROVIDER"
    alternatives = order["tags"][0]["list"]
    assert 1 <= len(alternatives) <= 3
    assert body["context"]["message_id"] != bap.bap.callbacks("on_confirm")[-1]["context"]["message_id"]


def test_callbacks_to_a_bap_that_refuses_are_not_retried(bap: Any, peer: FakePeer) -> None:
    peer.route("POST", f"{BAP_URI}/on_search", (400, {"error": "no"}))
    bap("search", search_message())
    callback = BecknCallback.objects.get(action="on_search")
    assert callback.status == BecknCallback.Status.FAILED
    assert callback.attempts == 1
    assert callback.attempt_log.count() == 1


def test_callbacks_are_retried_with_backoff_after_a_5xx(bap: Any, peer: FakePeer) -> None:
    from emsp import outbox

    peer.route("POST", f"{BAP_URI}/on_search", (503, {"error": "busy"}))
    bap("search", search_message())
    callback = BecknCallback.objects.get(action="on_search")
    assert callback.status == BecknCallback.Status.PENDING
    assert callback.attempts >= 1
    peer.route("POST", f"{BAP_URI}/on_search", (200, {"message": {"ack": {"status": "ACK"}}}))
    BecknCallback.objects.update(next_attempt_at="2000-01-01T00:00:00Z")
    outbox.deliver_due()
    callback.refresh_from_db()
    assert callback.status == BecknCallback.Status.DELIVERED


def test_a_charger_booked_by_someone_shows_as_reserved_and_cannot_be_selected(bap: Any) -> None:
    item = item_of(bap)
    select(bap, item)
    init(bap)
    confirm(bap)
    bap.bap.transaction_id = "another-driver"
    bap("search", search_message())
    statuses = {i["id"]: {t["descriptor"]["code"]: t["value"] for t in i["tags"][0]["list"]}["status"]
                for i in last(bap, "on_search")["message"]["catalog"]["providers"][0]["items"]}  # fmt: skip
    assert statuses[item] == "Reserved"
    body = select(bap, item)
    assert body["error"]["code"] == "30008"
    assert "expected to be available from" in body["error"]["message"]


def django_capture_on_commit_callbacks_for(bap: Any) -> Any:
    return bap.capture(execute=True)


def test_a_search_forwarded_by_a_gateway_is_answered_through_the_gateway(bap: Any, peer: FakePeer) -> None:
    from beckn.models import BecknSubscriber
    from beckn.signing import generate_keypair, load_private_key, sign_request

    private, public = generate_keypair()
    BecknSubscriber.objects.create(
        subscriber_id="gateway.example", unique_key_id="g1", type="BG", signing_public_key=public,
        trusted=True, subscriber_url="https://gateway.example/beckn",
    )  # fmt: skip
    peer.route("POST", "https://gateway.example/beckn/on_search", (200, {"message": {"ack": {"status": "ACK"}}}))
    fake = bap.bap
    body = orjson.dumps({"context": fake.context("search"), "message": search_message()})
    now = int(time.time())
    gateway_header = sign_request(
        body, subscriber_id="gateway.example", unique_key_id="g1", private_key=load_private_key(private),
        created=now, expires=now + 60,
    )  # fmt: skip
    with django_capture_on_commit_callbacks_for(bap):
        response = fake.client.post(
            "/beckn/search", data=body, content_type="application/json",
            headers={"Authorization": fake.sign(body), "X-Gateway-Authorization": gateway_header},
        )  # fmt: skip
    assert response.status_code == 200
    via_gateway = [c for c in peer.calls if c["url"] == "https://gateway.example/beckn/on_search"]
    assert len(via_gateway) == 1
    assert not fake.callbacks("on_search")


def test_a_bad_gateway_signature_is_401_with_proxy_authenticate(bap: Any) -> None:
    fake = bap.bap
    body = orjson.dumps({"context": fake.context("search"), "message": search_message()})
    response = fake.client.post(
        "/beckn/search", data=body, content_type="application/json",
        headers={"Authorization": fake.sign(body), "X-Gateway-Authorization": fake.sign(b"other bytes")},
    )  # fmt: skip
    assert response.status_code == 401
    assert response["Proxy-Authenticate"].startswith("Signature realm=")
