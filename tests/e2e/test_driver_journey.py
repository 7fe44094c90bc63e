"""The driver's journey as drivers live it (issue 13), every part a real process: a window booked ahead, a
no-show that ends its hold, and a reservation the CPO refuses, answered with alternatives the app can
select as they are."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from beckn.bap_client import (
    BapClient,
    confirm_message,
    init_message,
    pay_on_hosted_page,
    payment_of,
    search_message,
    select_message,
)
from billing.models import Payment
from emsp.models import Booking, Reservation
from tests.e2e.platform import Platform, until
from tests.e2e.test_journey import BENGALURU, ask, bap_for, items, specs, wait_unsolicited


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_window(message: dict[str, Any], start: datetime, end: datetime) -> dict[str, Any]:
    message["order"]["fulfillments"] = [
        {"stops": [{"type": "start", "time": {"range": {"start": _stamp(start), "end": _stamp(end)}}}]}
    ]
    return message


def book(
    client: BapClient, *, reservable: bool, window: tuple[datetime, datetime] | None = None
) -> tuple[dict[str, Any], str]:
    """search → select (for `window`) → init → pay on the hosted page → confirm, at an available charger of
    CPO A that can (or can't) be reserved; returns the item and the order id."""
    found = ask(client, "search", search_message(*BENGALURU, radius_km=20))
    item = next(
        i
        for p, i in items(found)
        if p == "IN*CPA"
        and specs(i)["ocpi-status"] == "AVAILABLE"
        and specs(i)["reservable"] == ("true" if reservable else "false")
        and "price" in i
    )
    selecting = select_message("IN*CPA", item["id"], 3)
    selected = ask(client, "select", with_window(selecting, *window) if window else selecting)
    assert "error" not in selected.body, selected.body.get("error")
    initialised = ask(
        client,
        "init",
        init_message("IN*CPA", item["id"], name="Ravi", email="ravi.e2e@example.com", phone="+919845000002"),
    )
    payment = payment_of(initialised.body)
    assert pay_on_hosted_page(payment["url"]) == 303
    until(
        lambda: Payment.objects.filter(status=Payment.Status.AUTHORISED, url=payment["url"]).exists(),
        20,
        "the provider's signed webhook: authorised",
    )
    confirmed = ask(client, "confirm", confirm_message("IN*CPA", item["id"]))
    assert "error" not in confirmed.body, confirmed.body.get("error")
    return item, confirmed.body["message"]["order"]["id"]


def test_a_no_show_ends_the_hold_releases_the_payment_and_tells_the_app(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory().start_cpos()
    client = bap_for(platform)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        window = (now, now + timedelta(seconds=20))  # the driver never comes
        _, order_id = book(client, reservable=True, window=window)
        cancelled = wait_unsolicited(client, "on_cancel", lambda b: b["message"]["order"]["id"] == order_id, 75)
        order = cancelled.body["message"]["order"]
        assert order["status"] == "CANCELLED"
        assert order["cancellation"]["reason"]["descriptor"]["code"] == "no-show"
        assert order["cancellation_terms"]
        booking = Booking.objects.get(order_id=order_id)
        assert booking.state == Booking.State.EXPIRED
        assert Reservation.objects.get(pk=booking.reservation_id).status == Reservation.Status.EXPIRED
        until(
            lambda: Payment.objects.filter(booking=booking, status=Payment.Status.RELEASED).exists(),
            30,
            "the payment hold released at the provider",
        )
    finally:
        client.close()


def test_a_refused_reservation_comes_with_alternatives_the_app_can_select(
    platform_factory: Callable[..., Platform],
) -> None:
    platform = platform_factory().start_cpos()
    platform.sims["A"].ctl("faults", {"set": {"reject_reservations": True}})
    client = bap_for(platform)
    try:
        item, order_id = book(client, reservable=True)
        cancelled = wait_unsolicited(client, "on_cancel", lambda b: b["message"]["order"]["id"] == order_id, 40)
        order = cancelled.body["message"]["order"]
        assert order["cancellation"]["cancelled_by"] == "PROVIDER"
        assert order["cancellation"]["reason"]["descriptor"]["code"] == "reservation-refused"
        offered = wait_unsolicited(
            client,
            "on_search",
            lambda b: b["message"]["catalog"].get("descriptor", {}).get("code") == "alternatives",
            20,
        )
        alternatives = items(offered)
        assert alternatives
        assert item["id"] not in [i["id"] for _, i in alternatives]
        provider_id, first = alternatives[0]
        assert specs(first)["connector-standard"] == specs(item)["connector-standard"]
        selected = ask(client, "select", select_message(provider_id, first["id"], 3))
        assert "error" not in selected.body, selected.body.get("error")
        assert selected.body["message"]["order"]["quote"]["price"]["value"]
    finally:
        client.close()
