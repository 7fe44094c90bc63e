"""Confirm and select, from a review: two confirms of one journey at the same moment book once, a confirm books
the window that was selected (and quoted) or none, a payment pays for one booking, and a select quotes with the
connector as the CPO has just described it."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.db import connection, connections
from django.utils import timezone

from beckn import handlers
from beckn.models import BecknCallback
from billing.models import Payment, Quote
from billing.services import payments, tariff_put
from emsp.datetimes import format_datetime
from emsp.models import Booking, Connector, Evse, Partner
from emsp.services import bookings
from emsp.services import catalogue as svc
from ocpi.normalize import format_ocpi_datetime
from ocpi.normalize.evses import normalize_evse
from tests.beckn.bap import BAP_URI, TARIFF
from tests.beckn.test_actions import init, last, select
from tests.beckn.test_booking_windows import NEAR_1, book, select_window, time_range, window
from tests.factories import TokenFactory, ocpi_location

pytestmark = pytest.mark.django_db

PAYMENTS = [{"status": "NOT-PAID"}]


def confirm_with(bap: Any, span: tuple[datetime, datetime] | dict[str, Any] | None) -> dict[str, Any]:
    order: dict[str, Any] = {"provider": {"id": "IN*CPA"}, "payments": PAYMENTS}
    if span is not None:
        time = span if isinstance(span, dict) else time_range(span)
        order["fulfillments"] = [{"stops": [{"type": "start", "time": time}]}]
    bap("confirm", {"order": order})
    return last(bap, "on_confirm")


# --- 3. a confirm books the window selected -----------------------------------------------------------------


def test_a_confirm_for_another_window_than_the_one_selected_is_refused(bap: Any) -> None:
    span = window(hours_ahead=3)
    select_window(bap, NEAR_1, span)
    init(bap)
    later = (span[0] + timedelta(hours=12), span[1] + timedelta(hours=12))
    refused = confirm_with(bap, later)
    assert refused["error"]["code"] == "40000"
    assert "not the one selected" in refused["error"]["message"] and "select it first" in refused["error"]["message"]
    assert refused["error"]["paths"] == "message.order.fulfillments[0].stops[0].time"
    assert not Booking.objects.exists()
    # The window selected, repeated, is booked (as the quote priced it).
    booked = confirm_with(bap, span)
    assert "error" not in booked, booked.get("error")
    reservation = Booking.objects.get().reservation
    assert (reservation.start_at, reservation.expiry_at) == span


def test_a_confirm_repeating_on_inits_fulfillments_books_a_window_selected_in_milliseconds(bap: Any) -> None:
    """JavaScript's toISOString() sends milliseconds; on_init echoes the window in whole seconds, and the app
    confirms with what it was shown."""
    start = timezone.now().replace(microsecond=250_000) + timedelta(hours=3)
    end = start + timedelta(hours=1)
    span = {"range": {"start": format_datetime(start, "millis"), "end": format_datetime(end, "millis")}}
    assert "error" not in select_window(bap, NEAR_1, span)
    fulfillments = init(bap)["message"]["order"]["fulfillments"]
    order = {"provider": {"id": "IN*CPA"}, "payments": [{"status": "NOT-PAID"}], "fulfillments": fulfillments}
    bap("confirm", {"order": order})
    booked = last(bap, "on_confirm")
    assert "error" not in booked, booked.get("error")
    assert Booking.objects.get().reservation.start_at == start


def test_a_confirm_without_a_window_books_the_one_selected(bap: Any) -> None:
    span = window(hours_ahead=3)
    select_window(bap, NEAR_1, span)
    init(bap)
    assert "error" not in confirm_with(bap, None)
    reservation = Booking.objects.get().reservation
    assert (reservation.start_at, reservation.expiry_at) == span


def test_a_window_already_open_repeated_at_confirm_is_the_one_selected(bap: Any) -> None:
    """A window already open is held from now: at select and at confirm "now" differ, the window does not."""
    span = window(hours_ahead=-0.25, minutes=60)
    select_window(bap, NEAR_1, span)
    init(bap)
    body = confirm_with(bap, span)
    assert "error" not in body, body.get("error")
    assert Booking.objects.get().reservation.expiry_at == span[1]


def test_a_window_at_confirm_after_a_select_for_now_is_refused(bap: Any) -> None:
    select(bap, NEAR_1)
    init(bap)
    assert confirm_with(bap, window(hours_ahead=3))["error"]["code"] == "40000"
    assert not Booking.objects.exists()


# --- 2. two confirms of one journey at once ----------------------------------------------------------------


def _confirm_body(bap: Any, span: tuple[datetime, datetime] | None) -> str:
    order: dict[str, Any] = {"provider": {"id": "IN*CPA"}, "payments": PAYMENTS}
    if span is not None:
        order["fulfillments"] = [{"stops": [{"type": "start", "time": time_range(span)}]}]
    context = bap.bap.context("confirm", message_id=str(uuid.uuid4()))
    return orjson.dumps({"context": context, "message": {"order": order}}).decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="real concurrency needs PostgreSQL")
@pytest.mark.parametrize("windows", ["same", "none", "different"])
def test_two_confirms_of_one_journey_at_once_make_one_booking(bap: Any, windows: str) -> None:
    span = window(hours_ahead=3)
    select_window(bap, NEAR_1, span)
    init(bap)
    other = (span[0] + timedelta(hours=12), span[1] + timedelta(hours=12))
    spans = {"same": [span, span], "none": [None, None], "different": [span, other]}[windows]
    bodies = [_confirm_body(bap, s) for s in spans]
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def run(body: str) -> None:
        try:
            barrier.wait(5)
            handlers.handle("confirm", body, callback_url=BAP_URI)
        except BaseException as exc:  # reported below
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    assert Booking.objects.count() == 1
    booking = Booking.objects.get()
    answers = [orjson.loads(c.body) for c in BecknCallback.objects.filter(action="on_confirm")]
    assert len(answers) == 2
    orders = [a["message"]["order"]["id"] for a in answers if "error" not in a]
    errors = [a["error"]["code"] for a in answers if "error" in a]
    if windows == "different":  # the window not selected is refused, or answered with the order made first
        assert orders and set(orders) == {booking.order_id} and set(errors) <= {"40000"}
    else:  # the app's retry gets its order, not "EVSE already booked"
        assert (orders, errors) == ([booking.order_id] * 2, [])
    assert Payment.objects.filter(booking__isnull=False).count() == 1


def test_a_payment_already_bound_to_a_booking_is_refused_for_another(bap: Any) -> None:
    booked = book(bap, NEAR_1, window(hours_ahead=3))
    booking = Booking.objects.get(order_id=booked["message"]["order"]["id"])
    payment = Payment.objects.get(booking=booking)
    quote = Quote.objects.get(pk=booking.quote_id)
    other = bookings.booking_confirm(
        evse=Evse.objects.get(uid="NEAR-E2"), connector_id="1", token=TokenFactory(), quote_id=quote.pk
    )
    with pytest.raises(payments.PaymentRefused, match="already pays for another order"):
        payments.payment_confirm(payment=payment, booking=other, quote=quote, reported=None)
    assert Payment.objects.get(pk=payment.pk).booking_id == booking.pk
    payments.payment_confirm(payment=payment, booking=booking, quote=quote, reported=None)  # its own: as before


# --- 7. select quotes with the connector the CPO has just described ----------------------------------------


class _Gateway:
    """The CPO answers the live check: the same EVSE, its connector now on tariff T9 (or gone)."""

    def __init__(self, connector_id: str = "1") -> None:
        self.connector_id = connector_id

    def fetch_evse(self, evse: Evse, *, timeout: float) -> dict[str, Any]:
        stamp = format_ocpi_datetime(timezone.now())
        obj = ocpi_location(location_id="NEAR", evses=1, tariff_ids=["T9"], last_updated=stamp)["evses"][0]  # type: ignore[index]
        obj["connectors"][0]["id"] = self.connector_id
        clean, _ = normalize_evse(obj)
        return clean


@pytest.fixture
def t9(network: Partner) -> Partner:
    elements = [{"price_components": [{"type": "ENERGY", "price": 30, "vat": 18, "step_size": 1}]}]
    tariff_put(network, {**TARIFF, "id": "T9", "elements": elements})
    return network


def test_select_quotes_with_the_tariff_the_cpo_just_gave_the_connector(
    bap: Any, t9: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(svc, "cpo_gateway", lambda: _Gateway())
    body = select(bap, NEAR_1, kwh="10")
    assert "error" not in body, body.get("error")
    assert list(Evse.objects.get(uid="NEAR-E1").connectors.values_list("tariff_ids", flat=True)) == [["T9"]]
    quote = Quote.objects.get()
    assert quote.tariff_id == "T9"
    assert quote.cpo_cost_excl_vat == Decimal("300")  # 10 kWh at 30 (T1 would be 10 × 18 + 20)


def test_select_of_a_connector_the_cpo_no_longer_lists_is_item_not_found(
    bap: Any, t9: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(svc, "cpo_gateway", lambda: _Gateway(connector_id="2"))
    body = select(bap, NEAR_1, kwh="10")
    assert body["error"]["code"] == "30004"
    assert not Quote.objects.exists()


def test_select_for_a_window_shows_the_item_at_the_tariff_its_quote_prices(bap: Any, network: Partner) -> None:
    """The window's tariff (T2, from just before the window) in on_search, in on_select's item and tariff tag
    and in its quote: the item had shown the tariff valid now (T1) beside a quote priced with T2."""
    start = timezone.now().replace(microsecond=0) + timedelta(hours=2)
    switch = format_ocpi_datetime(start - timedelta(seconds=1))
    energy = [{"type": "ENERGY", "price": 18, "vat": 18, "step_size": 1}]
    tariff_put(network, {**TARIFF, "id": "T1", "elements": [{"price_components": energy}], "end_date_time": switch})
    later = [{**energy[0], "price": 30}]
    tariff_put(network, {**TARIFF, "id": "T2", "elements": [{"price_components": later}], "start_date_time": switch})
    Connector.objects.update(tariff_ids=["T1", "T2"])
    span = time_range((start, start + timedelta(hours=1)))
    item = {"id": NEAR_1, "quantity": {"selected": {"measure": {"value": "10", "unit": "kWh"}}}}
    bap(
        "select",
        {"order": {"provider": {"id": "IN*CPA"}, "items": [item], "fulfillments": [{"stops": [{"time": span}]}]}},
    )
    order = last(bap, "on_select")["message"]["order"]
    tags = {t["descriptor"]["code"]: t["value"] for g in order["items"][0]["tags"] for t in g.get("list", [])}
    assert Quote.objects.latest("pk").tariff_id == "T2"
    assert tags["tariff-id"] == "T2"
    assert Decimal(order["items"][0]["price"]["value"]) == Decimal("30")
