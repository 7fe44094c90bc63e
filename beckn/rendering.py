"""What we say to BAPs about orders, rendered as Beckn 1.1.0 blocks: items, fulfillments (with the live
charging state), quotes and the final bill, payments and cancellation terms, and the whole order."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.utils import timezone

from beckn.callbacks import now_rfc3339
from beckn.catalogue import (
    Hit,
    connectorless_item_tags,
    hit_for,
    item_id,
    item_ref,
    item_tags,
    provider_id,
    provider_name,
    window_time,
)
from beckn.models import BecknTransaction
from billing.models import BapAgreement, DriverReceipt, Payment, Quote
from billing.money import minor_units, round_money
from billing.services import payments
from billing.services.driver_pricing import driver_total, emsp_fee, partner_terms, session_estimate
from billing.services.ledger import from_minor
from emsp.datetimes import format_datetime
from emsp.models import Booking, ChargingSession, Command, Evse
from emsp.services import bookings, catalogue, commands

STATE_CODES = {
    Booking.State.CONFIRMED: ("RESERVATION", "Booked: the charger is held for you"),
    Booking.State.STARTING: ("PENDING", "Starting: plug in if you have not"),
    Booking.State.CHARGING: ("ACTIVE", "Charging"),
    Booking.State.STOPPING: ("ACTIVE", "Stopping"),
    Booking.State.COMPLETED: ("COMPLETED", "Charging finished"),
    Booking.State.SETTLED: ("COMPLETED", "Charging finished and billed"),
    Booking.State.CANCELLED: ("CANCELLED", "Cancelled"),
    Booking.State.EXPIRED: ("NO-SHOW", "The hold ended: charging did not start in time"),
    Booking.State.FAILED: ("INVALID", "Could not charge"),
}


def price_block(value: Decimal | None, currency: str) -> dict[str, str]:
    return {"currency": currency, "value": format(round_money(value or Decimal("0"), currency), "f")}


# Quotation.id is `format: uuid` in core 1.1.0 (schema/Quotation.yaml): each of our quotes and final bills gets
# one derived from its row, stable across callbacks, distinct per BPP.
QUOTE_NAMESPACE = uuid.UUID("3f0c8a52-8a7e-4f4b-9d43-1c6b2f7e5a10")


def quotation_id(kind: str, pk: int) -> str:
    """The Quotation.id of our quote (`kind` "quote") or final bill ("bill") with this primary key."""
    return str(uuid.uuid5(QUOTE_NAMESPACE, f"{settings.BECKN_SUBSCRIBER_ID}/{kind}/{pk}"))


# The order tag group that says its quote is the final bill (from the CDR), not the estimate.
BILL_TAGS = "bill"


QUOTE_TITLES = {
    "ENERGY": "energy-cost",
    "TIME": "time-cost",
    "PARKING_TIME": "parking-fee",
    "FLAT": "session-fee",
    "EMSP_FEE": "service-charge",
}


def quote_block(quote: Quote, *, accepted: bool = False) -> dict[str, Any]:
    """A quotation (`accepted`: the one a confirmed order holds, whose ttl no longer counts: none is given);
    its lines add up to the price, as the final bill's do."""
    currency = quote.currency
    breakup = []
    for line in quote.breakdown.get("lines", []):
        title = QUOTE_TITLES.get(line["type"], line["type"].lower())
        value = line.get("price_incl_vat") or line.get("price_excl_vat") or "0"
        breakup.append({"title": title, "price": {"currency": currency, "value": value}})
    price = price_block(quote.price, currency)
    if breakup:
        breakup = _cpo_lines_or_one(breakup, quote)
        _add_rounding(breakup, Decimal(price["value"]), currency)
    block = {"id": quotation_id("quote", quote.pk), "price": price, "breakup": breakup}
    if not accepted:
        block["ttl"] = f"PT{max(1, int((quote.valid_until - timezone.now()).total_seconds()))}S"
    return block


def _cpo_lines_or_one(breakup: list[dict[str, Any]], quote: Quote) -> list[dict[str, Any]]:
    """The quote's CPO lines when rounding alone explains how far they are from its CPO part (each line and the
    part rounded once: under a minor unit each), else one `charging-cost` line, as on the final bill: the
    tariff's min_price / max_price moved the CPO part, and a `rounding` line must not hide that."""
    cpo_part = quote.cpo_cost_excl_vat if quote.cpo_cost_incl_vat is None else quote.cpo_cost_incl_vat
    cpo_lines = [line for line in breakup if line["title"] != "service-charge"]
    shown = sum((Decimal(line["price"]["value"]) for line in cpo_lines), Decimal("0"))
    if abs(shown - cpo_part) < Decimal(1).scaleb(-minor_units(quote.currency)) * (len(cpo_lines) + 1):
        return breakup
    fee = [line for line in breakup if line["title"] == "service-charge"]
    return [{"title": "charging-cost", "price": price_block(cpo_part, quote.currency)}, *fee]


def _add_rounding(breakup: list[dict[str, Any]], total: Decimal, currency: str) -> None:
    """Each line is rounded to the minor unit on its own while the price is the exact sum rounded once: a
    `rounding` line says where the cents went, so the breakup adds up to the price (a BAP checks it does)."""
    shown = sum((Decimal(line["price"]["value"]) for line in breakup), Decimal("0"))
    if shown != total:
        breakup.append({"title": "rounding", "price": {"currency": currency, "value": format(total - shown, "f")}})


def item_block(hit: Hit, quote: Quote | None = None, status_note: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id(hit.evse, hit.connector),
        "descriptor": {
            "code": "energy",
            "name": f"Charging at {hit.evse.location.name or hit.evse.location.location_id}",
        },
        "tags": item_tags(hit, timezone.now(), status_note),
        "fulfillment_ids": [f"FUL-{hit.evse.location.location_id}"],
        "location_ids": [f"LOC-{hit.evse.location.location_id}"],
    }
    if hit.tariff is not None and hit.energy_price is not None:
        item["price"] = {"currency": hit.tariff.currency, "value": format(hit.energy_price.normalize(), "f")}
    return _with_quantity(item, quote)


def booked_item_block(booking: Booking) -> dict[str, Any]:
    """The item of a booking whose connector the CPO no longer lists (it sent the EVSE again without a connector
    it could read): named by the booking's connector id at its EVSE, without a price (the connector's tariff is
    not known any more); the quantity the quote was for."""
    evse = booking.evse
    item: dict[str, Any] = {
        "id": item_ref(evse, booking.connector_id),
        "descriptor": {"code": "energy", "name": f"Charging at {evse.location.name or evse.location.location_id}"},
        "tags": connectorless_item_tags(evse, booking.connector_id, timezone.now()),
        "fulfillment_ids": [f"FUL-{evse.location.location_id}"],
        "location_ids": [f"LOC-{evse.location.location_id}"],
    }
    return _with_quantity(item, booking.quote)


def _with_quantity(item: dict[str, Any], quote: Quote | None) -> dict[str, Any]:
    if quote is not None and quote.energy_kwh is not None:
        item["quantity"] = {
            "selected": {
                "measure": {"type": "CONSTANT", "value": format(quote.energy_kwh.normalize(), "f"), "unit": "kWh"}
            }
        }
    return item


def fulfillment_block(
    evse: Evse,
    state: tuple[str, str] | None = None,
    extra_tags: list[dict[str, Any]] | None = None,
    *,
    window: tuple[datetime, datetime] | None = None,
) -> dict[str, Any]:
    location = evse.location
    gps = f"{location.latitude:.6f},{location.longitude:.6f}"
    fulfillment: dict[str, Any] = {
        "id": f"FUL-{location.location_id}",
        "type": "CHARGING",
        "stops": [
            {
                "type": "start",
                "location": {"gps": gps, "address": ", ".join(p for p in (location.address, location.city) if p)},
                "instructions": {
                    "name": "Plug in, then start charging from the app",
                    "short_desc": evse.evse_id or evse.uid,
                },
                **({"time": window_time(window)} if window else {}),
            }
        ],
    }
    if state is not None:
        fulfillment["state"] = {
            "descriptor": {"code": state[0], "name": state[1]},
            "updated_at": now_rfc3339(),
        }
    if extra_tags:
        fulfillment["tags"] = extra_tags
    return fulfillment


def _tag(code: str, value: str) -> dict[str, Any]:
    return {"descriptor": {"code": code}, "value": value}


def settlement_terms(agreement: BapAgreement) -> list[dict[str, Any]]:
    """The settlement terms with the app, as the Beckn networks spell them (tag groups BUYER_FINDER_FEES and
    SETTLEMENT_TERMS of the core 1.1.0 `Payment.tags`)."""
    return [
        {
            "descriptor": {"code": "BUYER_FINDER_FEES"},
            "display": False,
            "list": [
                _tag("BUYER_FINDER_FEES_TYPE", "percent"),
                _tag("BUYER_FINDER_FEES_PERCENTAGE", format(agreement.finder_fee_percent.normalize(), "f")),
            ],
        },
        {
            "descriptor": {"code": "SETTLEMENT_TERMS"},
            "display": False,
            "list": [
                _tag("SETTLEMENT_WINDOW", agreement.settlement_window),
                _tag("SETTLEMENT_BASIS", agreement.settlement_basis.upper()),
                _tag("STATIC_TERMS", f"{settings.PUBLIC_BASE_URL}/beckn/terms"),
            ],
        },
    ]


def offered_payments(quote: Quote, agreement: BapAgreement) -> list[dict[str, Any]]:
    """The payment terms of a quote (on_select), before we know the driver: who collects, when, how much."""
    collected_by = "BAP" if agreement.collects else "BPP"
    return [
        {
            "id": f"PAY-Q{quote.pk}",
            "collected_by": collected_by,
            "type": "POST-FULFILLMENT" if agreement.collects else "PRE-ORDER",
            "status": "NOT-PAID",
            "params": {"amount": price_block(quote.price, quote.currency)["value"], "currency": quote.currency},
            "tags": settlement_terms(agreement),
        }
    ]


def payment_block(
    payment: Payment, *, amount: Decimal, agreement: BapAgreement, payable: bool = True
) -> dict[str, Any]:
    """One payment of an order as the app sees it: the hosted page to authorise it (`url`) while we collect,
    it is pending and there is something to pay for (`payable`: not once the order ended without a charge), the
    amount, PAID once captured (or the app reported it paid), its state as a tag."""
    paid = payment.status in (
        Payment.Status.CAPTURED,
        Payment.Status.PARTIALLY_REFUNDED,
        Payment.Status.REFUNDED,
        Payment.Status.COLLECTED_BY_BAP,
    )
    params: dict[str, str] = {"amount": price_block(amount, payment.currency)["value"], "currency": payment.currency}
    reference = payment.bap_transaction_id or payment.provider_payment_id
    if reference:
        params["transaction_id"] = reference
    block: dict[str, Any] = {
        "id": f"PAY-{payment.pk}",
        "collected_by": payment.collected_by,
        "type": payment.type,
        "status": "PAID" if paid else "NOT-PAID",
        "params": params,
        "tags": [
            *settlement_terms(agreement),
            {
                "descriptor": {"code": "PAYMENT_STATE", "name": "Where the money is"},
                "list": [
                    _tag("STATE", payment.status),
                    _tag("METHOD", payment.provider),
                    _tag("AUTHORISED", _minor_text(payment.authorised_minor, payment.currency)),
                    _tag("CAPTURED", _minor_text(payment.captured_minor, payment.currency)),
                    _tag("REFUNDED", _minor_text(payment.refunded_minor, payment.currency)),
                ],
            },
        ],
    }
    if payable and payment.url and payment.status in (Payment.Status.PENDING, Payment.Status.FAILED):
        block["url"] = payment.url
    return block


def _minor_text(amount_minor: int, currency: str) -> str:
    return format(from_minor(amount_minor, currency), "f")


def payments_block(quote: Quote, status: str = "NOT-PAID", *, owed: Decimal | None = None) -> list[dict[str, Any]]:
    """A quote's payment before any Payment exists (orders booked outside Beckn, older journeys): the quote's price,
    or `owed` once the order ended without a charge (`ended_quote_block`)."""
    amount = quote.price if owed is None else owed
    return [
        {
            "id": f"PAY-{quote.pk}",
            "collected_by": "BPP",
            # The exact amount is known only from the CPO's CDR: pay after charging (RFC 4.2, DEG00x).
            "type": "POST-FULFILLMENT",
            "status": status,
            "params": {"amount": format(round_money(amount, quote.currency), "f"), "currency": quote.currency},
        }
    ]


def payment_amount(
    payment: Payment, *, quote: Quote | None, receipt: DriverReceipt | None = None, owed: Decimal | None = None
) -> Decimal:
    """What a payment is for, as the app is shown it: what it took once captured, or released before it carried
    a bill (a released hold took nothing: a bill that came after the release is asked for with a balance payment
    of its own, which shows it; shown on both, the app read the bill as owed twice), else the bill once the CDR is
    in (`receipt`, the order's standing bill: final_receipt; also a hold released after the bill, whose capture
    failed: the bill is still owed), else, the order having ended without a charge, what it owes (`owed`: the
    cancellation fee, `ended_quote_block`), else what the driver authorises (the quote plus the margin) or, an app
    collecting, the quote."""
    released_unbilled = payment.status == Payment.Status.RELEASED and payment.billed_minor is None
    if released_unbilled or payment.status in (
        Payment.Status.CAPTURED,
        Payment.Status.PARTIALLY_REFUNDED,
        Payment.Status.REFUNDED,
    ):
        return from_minor(payment.captured_minor, payment.currency)
    if owed is not None and receipt is None and payment.billed_minor is None:
        # Nothing was charged: the quote is not owed. An app that collects (the quote, before the bill) had read the
        # whole price as due, its prepayment as kept, where an order we collect for showed its released hold as 0.
        return owed
    if receipt is not None and (payment.billed_minor is None or payment.collected_by == Payment.CollectedBy.BAP):
        # What an app collects is the bill the order stands at: after a credit CDR voided it, nothing (the charge's
        # billed figure changes with a new bill only, not with a credit).
        return receipt.total_incl_vat
    if payment.billed_minor is not None:
        return from_minor(payment.billed_minor, payment.currency)
    if payment.provider == "bap":
        return quote.price if quote is not None else Decimal("0")
    return from_minor(payments.hold_minor(payment, quote), payment.currency)


def order_payments(
    booking: Booking, quote: Quote | None, receipt: DriverReceipt | None, *, owed: Decimal | None = None
) -> list[dict[str, Any]] | None:
    """The order's payments: each Payment of the booking (the charge, and a balance asked for after a bill
    above its hold), with the bill as the charge's amount once the CDR is in; `owed` for an order that ended
    without a charge (`ended_without_charge_owes`)."""
    rows = list(booking.payments.order_by("pk")) if booking.pk else []
    if not rows:
        return None
    agreement = payments.agreement_for(rows[0].bap_id)  # one app's order: its terms on every payment
    # An order that ended without a charge (cancelled, a no-show, a start that failed) has nothing to authorise:
    # a page shown then would take a hold that is only released again (payments._apply).
    payable = booking.is_active or not payments.ended_without_charge(booking)
    return [
        payment_block(
            payment,
            amount=payment_amount(payment, quote=quote, receipt=receipt, owed=owed),
            agreement=agreement,
            payable=payable,
        )
        for payment in rows
    ]


def ended_without_charge_owes(booking: Booking, receipt: DriverReceipt | None) -> Decimal | None:
    """What an order that ended without a charge (cancelled before charging, a no-show, a start that failed: no
    session, no bill) owes: the cancellation fee our terms set (bookings.cancellation_fee, the `cancellation_terms`
    told: none before charging); None for any other order, which owes its quote or its bill."""
    if receipt is not None or booking.is_active or not payments.ended_without_charge(booking):
        return None
    return bookings.cancellation_fee(booking)


# The one line of an ended order's quotation (`ended_quote_block`), in the quote's kebab-case titles.
CANCELLATION_FEE_TITLE = "cancellation-fee"


def ended_quote_block(booking: Booking, quote: Quote, owed: Decimal) -> dict[str, Any]:
    """The quotation of an order that ended without a charge: its price is what it owes (`owed`, the cancellation
    fee), that fee its one line. The accepted quote, shown unchanged, had told an app collecting from its driver the
    whole price was still due after a free cancel. A quotation of its own (its id), not the accepted one changed."""
    price = price_block(owed, quote.currency)
    return {
        "id": quotation_id("ended", booking.pk),
        "price": price,
        "breakup": [{"title": CANCELLATION_FEE_TITLE, "price": dict(price)}],
    }


def cancellation_terms(currency: str) -> list[dict[str, Any]]:
    return [
        {
            "fulfillment_state": {"descriptor": {"code": "RESERVATION"}},
            "reason_required": False,
            "cancellation_fee": {"amount": {"currency": currency, "value": "0"}},
        },
        # Once a start went out (PENDING) or charging began (ACTIVE), a cancel stops the charge: no fee, the
        # energy is billed by the CDR (emsp/services/bookings.py::booking_cancel).
        *(
            {
                "fulfillment_state": {"descriptor": {"code": code}},
                "reason_required": False,
                "cancellation_fee": {"percentage": "0"},
                "external_ref": {"mimetype": "text/plain", "url": f"{settings.PUBLIC_BASE_URL}/beckn/terms"},
            }
            for code in ("PENDING", "ACTIVE")
        ),
    ]


def booking_window(booking: Booking) -> tuple[datetime, datetime] | None:
    reservation = booking.reservation
    return (reservation.start_at, reservation.expiry_at) if reservation is not None else None


def _billing_of(booking: Booking, txn: BecknTransaction | None) -> dict[str, Any]:
    """The billing the order was confirmed with: its own transaction's. An app may ask for the status of (or
    cancel, update) an order from another of its transactions, whose billing is another driver's, say."""
    if txn is not None and txn.transaction_id == booking.app_transaction_id and txn.bap_id == booking.app_id:
        return txn.billing or {}
    if not booking.app_transaction_id:
        return {}
    own = BecknTransaction.objects.filter(bap_id=booking.app_id, transaction_id=booking.app_transaction_id)
    return own.values_list("billing", flat=True).first() or {}


def order_block(
    booking: Booking, txn: BecknTransaction | None, *, extra_tags: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    # The booked connector; gone when the CPO sent its EVSE again without a connector we could read (kept so its
    # status shows: ocpi/normalize/evses.py "evse_without_connectors"): the order still renders, from the booking.
    connector = catalogue.connector_get(booking.evse, booking.connector_id)
    item = (
        item_block(hit_for(booking.evse, connector, timezone.now()), booking.quote)
        if connector is not None
        else booked_item_block(booking)
    )
    state = STATE_CODES[booking.state]
    status = (
        "ACTIVE"
        if booking.is_active
        else "CANCELLED"
        if booking.state in (Booking.State.CANCELLED, Booking.State.EXPIRED, Booking.State.FAILED)
        else "COMPLETE"
    )
    order: dict[str, Any] = {
        "id": booking.order_id,
        "status": status,
        "provider": {
            "id": provider_id(booking.evse.location),
            "descriptor": {"name": provider_name(booking.evse.location)},
        },
        "items": [item],
        "fulfillments": [
            fulfillment_block(booking.evse, state, extra_tags=charging_details(booking), window=booking_window(booking))
        ],
        "created_at": format_datetime(booking.created_at, "seconds"),
        "updated_at": format_datetime(booking.updated_at, "seconds"),
    }
    payment_status = booking.payment_status if booking.payment_status in ("PAID", "NOT-PAID") else "NOT-PAID"
    receipt = final_receipt(booking)
    owed = ended_without_charge_owes(booking, receipt)
    ours = order_payments(booking, booking.quote, receipt, owed=owed)
    if ours is not None:
        if receipt is not None:
            order["quote"] = final_quote_block(receipt)
        elif booking.quote is not None and owed is not None:
            order["quote"] = ended_quote_block(booking, booking.quote, owed)
        elif booking.quote is not None:
            order["quote"] = quote_block(booking.quote, accepted=True)
        order["payments"] = ours
    elif receipt is not None:
        order["quote"] = final_quote_block(receipt)
        order["payments"] = [
            {
                "id": f"PAY-{booking.order_id}",
                "collected_by": "BPP",
                "type": "POST-FULFILLMENT",
                "status": payment_status,
                "params": {
                    "amount": price_block(receipt.total_incl_vat, receipt.currency)["value"],
                    "currency": receipt.currency,
                },
            }
        ]
    elif booking.quote is not None:
        order["quote"] = (
            quote_block(booking.quote, accepted=True)
            if owed is None
            else ended_quote_block(booking, booking.quote, owed)
        )
        order["payments"] = payments_block(booking.quote, payment_status, owed=owed)
    if booking.is_active and booking.quote is not None:
        order["cancellation_terms"] = cancellation_terms(booking.quote.currency)
    billing = _billing_of(booking, txn)
    if billing:
        order["billing"] = billing
    tags = list(extra_tags or [])
    if receipt is not None:
        tags.append({"descriptor": {"code": BILL_TAGS, "name": "Bill"}, "list": [_tag("kind", "final")]})
    if tags:
        order["tags"] = tags
    return order


def final_receipt(booking: Booking) -> DriverReceipt | None:
    """The bill the order stands at: the receipt of its CDR that no credit CDR voided (a CPO voids a CDR with a
    credit CDR, then sends the corrected one: mod_cdrs); the sum of several such (`_together`) when staff billed
    a second charge of the order; when credits voided every CDR, a bill of zero (an unsaved receipt, numbered
    after the latest credit so its Quotation.id stays stable); None before any CDR."""
    if not booking.pk:
        return None
    receipts = list(
        DriverReceipt.objects.filter(cdr__charging_session__booking=booking).select_related("cdr").order_by("-pk")
    )
    if not receipts:
        return None
    credited: dict[int, Decimal] = {}  # an original's CDR id → what its credits gave back (negative)
    for receipt in receipts:
        if receipt.cdr.credit and receipt.cdr.credited_cdr_id is not None:
            credited[receipt.cdr.credited_cdr_id] = (
                credited.get(receipt.cdr.credited_cdr_id, Decimal("0")) + receipt.cdr.total_cost_excl_vat
            )
    # Voided as the payments service reads it (billing/services/payments.py::_our_part_given_back): nothing of
    # the CPO's price left; a credit that only lowers the price leaves this CDR the bill.
    standing = [
        receipt
        for receipt in receipts
        if not receipt.cdr.credit
        and not (receipt.cdr_id in credited and receipt.cdr.total_cost_excl_vat + credited[receipt.cdr_id] <= 0)
    ]
    if len(standing) == 1 or (standing and len({r.currency for r in standing}) > 1):
        return standing[0]
    return _together(standing or [], receipts[0])


def _together(standing: list[DriverReceipt], latest: DriverReceipt) -> DriverReceipt:
    """One bill of several: the order's charges billed each by its own CDR (a second one staff billed from the
    console: billing/services/held_cdrs.py), their sums as one unsaved receipt numbered after the latest, the
    CPO's part as one line; or a bill of zero when credits voided every CDR."""

    def total(field: str) -> Decimal:
        return sum((getattr(receipt, field) for receipt in standing), Decimal("0"))

    return DriverReceipt(
        pk=latest.pk,
        cdr=latest.cdr,
        driver_id=latest.driver_id,
        currency=latest.currency,
        energy_kwh=total("energy_kwh"),
        cpo_cost_excl_vat=total("cpo_cost_excl_vat"),
        cpo_vat=total("cpo_vat"),
        fee_excl_vat=total("fee_excl_vat"),
        fee_vat=total("fee_vat"),
        total_incl_vat=total("total_incl_vat"),
        breakdown={},
    )


FINAL_COMPONENTS = (
    ("fixed_cost", "session-fee"),
    ("energy_cost", "energy-cost"),
    ("time_cost", "time-cost"),
    ("parking_cost", "parking-fee"),
)


def final_quote_block(receipt: DriverReceipt) -> dict[str, Any]:
    """The final bill, with the same line titles as the quote (amounts incl. VAT) so a BAP can compare
    them; the lines add up to the price. The CPO's parts come from the CDR's component totals when it
    sent them and they add up to its total, else as one `charging-cost` line."""
    currency = receipt.currency
    cpo_incl = receipt.cpo_cost_excl_vat + receipt.cpo_vat
    lines = [(title, amount) for title, amount in _cdr_components(receipt) if amount]
    if not lines or sum(amount for _, amount in lines) != cpo_incl:
        lines = [("charging-cost", cpo_incl)]
    lines.append(("service-charge", receipt.fee_excl_vat + receipt.fee_vat))
    breakup = [{"title": title, "price": price_block(amount, currency)} for title, amount in lines]
    total = round_money(receipt.total_incl_vat, currency)
    _add_rounding(breakup, total, currency)
    return {
        "id": quotation_id("bill", receipt.pk),
        "price": price_block(total, currency),
        "breakup": breakup,
    }


def _cdr_components(receipt: DriverReceipt) -> list[tuple[str, Decimal]]:
    cpo = (receipt.breakdown or {}).get("cpo") or {}
    components = []
    for key, title in FINAL_COMPONENTS:
        price = cpo.get(key)
        if not isinstance(price, dict):
            continue
        value = price.get("incl_vat", price.get("excl_vat"))
        try:
            components.append((title, Decimal(str(value))))
        except (ArithmeticError, ValueError):
            return []  # unreadable: fall back to the CPO's total
    return components


def charging_details(booking: Booking) -> list[dict[str, Any]] | None:
    """Live session figures as the `charging-details` tag group (DEG v1 / UEI convention)."""
    session = bookings.current_session(booking)
    if session is None:
        return None

    def tag(code: str, value: Any) -> dict[str, Any]:
        return _tag(code, str(value))

    tags = [
        tag("session-status", session.status),
        tag("energy-delivered", f"{format(session.kwh.normalize(), 'f')}kWh"),  # 20, not 2E+1
        tag("start-time", format_datetime(session.start_date_time, "seconds")),
        tag("last-updated", format_datetime(session.last_updated, "seconds")),
    ]
    if session.end_date_time:
        tags.append(tag("stop-time", format_datetime(session.end_date_time, "seconds")))
    power = _last_power(session)
    if power is not None:
        tags.append(tag("power", f"{power}kW"))
    cost = _cost_so_far(session)
    if cost is not None:
        tags.append(tag("cost-so-far", f"{cost} {session.currency}"))
    return [{"descriptor": {"code": "charging-details", "name": "Charging details"}, "list": tags}]


def _cost_so_far(session: ChargingSession) -> Decimal | None:
    """What the driver would pay for the charge so far: the CPO's running price (its session's total_cost, else
    our estimate from the charging periods) with our fee and its VAT, as the bill adds them to the CDR's price
    (receipt_for_cdr: emsp_fee on the price excl. VAT, driver_total). None when no price is known, or its part
    before taxes, on which our fee is set, is not."""
    if session.total_cost_excl_vat is not None:
        cpo_excl = session.total_cost_excl_vat
        cpo_incl = session.total_cost_incl_vat if session.total_cost_incl_vat is not None else cpo_excl
    else:
        estimate = session_estimate(session)
        if estimate is None or estimate.total_cost.excl_vat is None or estimate.total_cost.incl_vat is None:
            return None
        cpo_excl, cpo_incl = estimate.total_cost.excl_vat, estimate.total_cost.incl_vat
    terms = partner_terms(session.partner)
    fee = emsp_fee(terms, cpo_excl, session.currency)
    return driver_total(cpo_incl, fee, session.currency, terms.rounding)


def _last_power(session: ChargingSession) -> Decimal | None:
    periods = session.data.get("charging_periods") or []
    for period in reversed(periods):
        for dimension in period.get("dimensions") or []:
            if dimension.get("type") in ("POWER", "MAX_POWER"):
                return Decimal(str(dimension.get("volume")))
    return None


# What a BAP may read about a refused or failed command: the CPO's answer in words, never our internal URLs,
# HTTP statuses or exception texts (those stay in the command's record for staff).
NOT_ALLOWED_TO_CHARGE = "the driver's token may not charge now (blocked, expired or out of credit)"
_CHARGER_ANSWERS = {
    "REJECTED": "the charger refused",
    "NOT_SUPPORTED": "the charger cannot be started or stopped remotely",
    "UNKNOWN_SESSION": "the charger does not know this charging session",
    "UNKNOWN_RESERVATION": "the charger does not know this reservation",
    "FAILED": "the charger could not do it",
    "EVSE_OCCUPIED": "the charger is in use",
    "EVSE_INOPERATIVE": "the charger is out of order",
    "TIMEOUT": "the charger did not answer in time",
    "CANCELED_RESERVATION": "the operator cancelled the reservation",
}


def charger_answer(command: Command) -> str:
    """A refused or failed command in words a driver's app can show."""
    if commands.refused_by_us(command):
        return NOT_ALLOWED_TO_CHARGE
    word = command.result_type or command.response_result
    return _CHARGER_ANSWERS.get(word, "the charger's operator could not be reached; please try again shortly")


_TRY_AGAIN = "; please try again shortly"  # how charger_answer ends for a CPO not reached


def stop_answer(command: Command) -> str:
    """What became of a stop not done, for the driver: a timeout as such, and not "please try again"
    (charger_answer's word for a CPO not reached), which a stop under way can't be (a second one is refused:
    50002)."""
    if command.status == Command.Status.TIMEOUT or command.result_type == "TIMEOUT":
        return "the charger did not confirm the stop in time"
    return charger_answer(command).removesuffix(_TRY_AGAIN)
