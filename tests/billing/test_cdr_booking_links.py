"""A CDR bills its booking once, whatever order the CPO's objects come in, through the Beckn journey: a second CDR
of a charge that no credit CDR voided is held for review (mod_cdrs: a change is a credit CDR for the first, then
a new CDR), and billed once the credit comes; a CDR that came before its session, or names none, is tied to its
booking by its session or its authorization_reference (never another partner's); a CDR of a booking whose hold
was released before it came is collected with a payment of its own."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from billing.models import BapAgreement, Cdr, CdrAudit, DriverReceipt, Payment
from billing.payments.gateway import AUTHORISED, Checkout, WebhookEvent
from billing.services import audit, payments
from billing.services.audit import cdr_process, cdrs_process_due
from billing.services.records import cdr_store
from billing.services.settlement import in_review, settlement_compute
from emsp.models import Booking, ChargingSession, Command, Driver, Partner
from emsp.services.commands import command_result_received
from emsp.services.sessions import session_put
from tests.beckn.bap import BAP_ID, CPO_BASE
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm, init, item_of, last, select
from tests.beckn.test_payments_journey import BILL, assert_books_balance, balance, charge_and_cdr, start
from tests.billing.factories import CdrFactory, CreditCdrFactory
from tests.billing.provider_standin import Fake
from tests.billing.provider_standin import fake as fake
from tests.billing.test_settlement_review_fixes import _run, _until, needs_postgres
from tests.factories import PartnerFactory, TokenFactory
from tests.fakes import FakePeer

pytestmark = pytest.mark.django_db

CORRECTED = Decimal("366.98")  # a CDR of 300 excl., 354 incl.: our fee 5 + 6.00 and its 18 % VAT (1.98)


def wallet_driver() -> Driver:
    driver = Driver.objects.create(app_id=BAP_ID, name="Asha", email="asha@example.com", wallet_balance=Decimal("0"))
    payments.wallet_top_up(driver=driver, amount=Decimal("1000"), key="top-up-1")
    return driver


def ordered(bap: Any) -> str:  # noqa: F811
    select(bap, item_of(bap))
    init(bap)
    return confirm(bap)["message"]["order"]["id"]


def started(bap: Any) -> Booking:  # noqa: F811
    """An order confirmed and its charge started through the journey: its booking."""
    order_id = ordered(bap)
    start(bap, order_id)
    return Booking.objects.get(order_id=order_id)


def charged(bap: Any, network: Partner) -> Booking:  # noqa: F811
    """An order charged through the journey: the session S-CDR-1 and its CDR-1 (463.27 INR for the driver)."""
    order_id = ordered(bap)
    start(bap, order_id)
    return charge_and_cdr(bap, network, order_id)


def stamp() -> str:
    return timezone.now().replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_of(booking: Booking, session_id: str) -> dict[str, Any]:
    """The CPO's Session of the booking's start, COMPLETED, on the START_SESSION's authorization_reference."""
    command = Command.objects.get(booking=booking, type="START_SESSION")
    assert booking.token is not None
    return {
        "country_code": "IN", "party_id": "CPA", "id": session_id, "start_date_time": stamp(),
        "end_date_time": stamp(), "kwh": 20,
        "cdr_token": {"country_code": "IN", "party_id": "EMS", "uid": booking.token.uid, "type": "APP_USER",
                      "contract_id": booking.token.contract_id},
        "auth_method": "COMMAND", "authorization_reference": command.authorization_reference,
        "location_id": booking.evse.location.location_id, "evse_uid": booking.evse.uid, "connector_id": "1",
        "currency": "INR", "status": "COMPLETED", "last_updated": stamp(),
    }  # fmt: skip


def cdr_of(
    booking: Booking, cdr_id: str, *, session_id: str = "", excl: Any = 380, incl: Any = 448.40
) -> dict[str, Any]:
    """The CPO's CDR of the booking's charge, repeating the start's authorization_reference (mod_cdrs: it SHALL),
    naming `session_id` if given (mod_cdrs: optional)."""
    session = session_of(booking, session_id or "unused")
    cdr = {
        "country_code": "IN", "party_id": "CPA", "id": cdr_id, "start_date_time": stamp(),
        "end_date_time": stamp(), "currency": "INR", "cdr_token": session["cdr_token"], "auth_method": "COMMAND",
        "authorization_reference": session["authorization_reference"],
        "cdr_location": {"id": booking.evse.location.location_id, "evse_uid": booking.evse.uid,
                         "connector_id": "1"},
        "total_cost": {"excl_vat": excl, "incl_vat": incl}, "total_energy": 20, "total_time": 1,
        "charging_periods": [], "last_updated": stamp(),
    }  # fmt: skip
    if session_id:
        cdr["session_id"] = session_id
    return cdr


def store(bap: Any, partner: Partner, obj: dict[str, Any]) -> Cdr:  # noqa: F811
    with bap.capture(execute=True):
        cdr_store(partner, obj)
    return Cdr.objects.get(cdr_id=obj["id"])


def credit_for(cdr: Cdr, credit_id: str) -> dict[str, Any]:
    excl, incl = -cdr.total_cost_excl_vat, -(cdr.total_cost_incl_vat or cdr.total_cost_excl_vat)
    return {**cdr.data, "id": credit_id, "credit": True, "credit_reference_id": cdr.cdr_id,
            "total_cost": {"excl_vat": float(excl), "incl_vat": float(incl)}}  # fmt: skip


def audit_of(cdr_id: str) -> CdrAudit:
    return CdrAudit.objects.get(cdr__cdr_id=cdr_id)


def wallet(driver: Driver) -> Decimal:
    driver.refresh_from_db()
    assert driver.wallet_balance == -balance(f"driver:{driver.pk}:wallet")
    return driver.wallet_balance


# --- (1) a second CDR of one charge -----------------------------------------------------------------------------


@pytest.mark.we_collect
def test_a_second_cdr_of_a_session_no_credit_voided_is_held_and_the_driver_pays_once(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    again = {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354}}
    second = store(bap, network, again)

    assert wallet(driver) == Decimal("1000") - BILL  # not taken twice
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert not Payment.objects.filter(purpose="balance").exists()
    held = audit_of("CDR-2")
    assert held.status == CdrAudit.Status.REVIEW and "duplicate_session_cdr" in held.flags
    assert second.processed_at is not None and not second.disputes.exists()
    assert balance("cpo:IN*CPA:payable") == -Decimal("448.40")  # the CPO is owed one charge
    # The CPO's settlement of the month holds it in review (it can't reconcile, or closes with it carried over).
    (settlement,) = settlement_compute(partner=network, period_start=timezone.localdate().replace(day=1))
    assert "CDR-2" in in_review(settlement).values_list("cdr_id", flat=True)
    assert_books_balance()


def test_a_second_cdr_leaves_the_collecting_app_owing_one_bill(bap: Any, network: Partner) -> None:  # noqa: F811
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True)
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    store(bap, network, {**first.data, "id": "CDR-2"})
    assert balance(f"bap:{BAP_ID}:receivable") == BILL
    assert Payment.objects.get(purpose="charge").billed_minor == 46327
    assert "duplicate_session_cdr" in audit_of("CDR-2").flags


@pytest.mark.we_collect
def test_a_new_cdr_held_before_the_credit_of_the_first_is_billed_once_the_credit_comes(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    """The CPO's credit for the first CDR delivered after its new CDR (a hub's retry): the new one waits for it."""
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    store(bap, network, {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354}})
    assert wallet(driver) == Decimal("1000") - BILL

    store(bap, network, credit_for(first, "CDR-1-C"))

    assert wallet(driver) == Decimal("1000") - CORRECTED  # the first given back, the new one taken
    assert audit_of("CDR-2").flags == ["no_tariff"]  # no longer held (the journey's CDRs carry no tariff)
    assert Payment.objects.get(purpose="balance").captured_minor == 36698
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("revenue:fees") == Decimal("-11.00")  # one fee, the new charge's
    assert last(bap, "on_update")["message"]["order"]["quote"]["price"]["value"] == str(CORRECTED)
    assert_books_balance()


@pytest.mark.we_collect
def test_a_credit_withdrawing_the_held_second_cdr_gives_back_nothing(bap: Any, network: Partner) -> None:  # noqa: F811
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    second = store(bap, network, {**first.data, "id": "CDR-2"})
    store(bap, network, credit_for(second, "CDR-2-C"))
    assert wallet(driver) == Decimal("1000") - BILL  # it never took anything: nothing to give back
    assert "original_held" in audit_of("CDR-2-C").flags
    assert balance("refunds:pending") == 0
    # The first's own credit then voids the charge; the withdrawn second is not billed in its place.
    store(bap, network, credit_for(first, "CDR-1-C"))
    assert wallet(driver) == Decimal("1000")
    assert not Payment.objects.filter(purpose="balance").exists()
    assert_books_balance()


# --- (2) a CDR before its session, or without one ---------------------------------------------------------------


@pytest.mark.we_collect
def test_a_cdr_without_a_session_id_bills_the_booking_its_authorization_reference_names(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    driver = wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    cdr = store(bap, network, cdr_of(booking, "CDR-1"))  # no session_id: a CPO without the Sessions module

    assert cdr.charging_session is not None and cdr.charging_session.session_id == "S-1"
    charge = Payment.objects.get(booking=booking, purpose="charge")
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 46327)  # the hold, not the account
    assert wallet(driver) == Decimal("1000") - BILL
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("holds:wallet") == 0
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.SETTLED
    assert_books_balance()


@pytest.mark.we_collect
def test_a_cdr_before_its_session_waits_for_it_and_then_bills_the_booking(bap: Any, network: Partner) -> None:  # noqa: F811
    driver = wallet_driver()
    booking = started(bap)
    cdr = store(bap, network, cdr_of(booking, "CDR-1", session_id="S-1"))
    assert (cdr.charging_session_id, cdr.processed_at) == (None, None)  # put off: not billed to the account
    assert balance(f"driver:{driver.pk}:receivable") == 0

    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    cdr.refresh_from_db()
    assert cdr.charging_session is not None and cdr.charging_session.session_id == "S-1"
    due = cdrs_process_due(now=timezone.now() + timedelta(seconds=31))  # the sweep, its claim cleared
    assert due == [cdr.pk]
    with bap.capture(execute=True):
        cdr_process(cdr.pk)

    charge = Payment.objects.get(booking=booking, purpose="charge")
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 46327)
    assert wallet(driver) == Decimal("1000") - BILL
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("holds:wallet") == 0
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.SETTLED
    assert_books_balance()


@pytest.mark.we_collect
@pytest.mark.parametrize("session_id", ["S-1", ""], ids=["named", "unnamed"])
def test_a_cdr_whose_session_never_comes_bills_the_booking_through_a_session_made_of_it(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    session_id: str,
) -> None:
    """A CPO without the Sessions module: after the grace, the CDR makes the booking's session (COMPLETED) and
    bills the booking's hold. It had been billed to the driver's account, the hold left authorised."""
    driver = wallet_driver()
    booking = started(bap)
    cdr = store(bap, network, cdr_of(booking, "CDR-1", session_id=session_id))
    assert cdr_process(cdr.pk, now=timezone.now() + audit.SESSION_GRACE / 2 + timedelta(minutes=3)) is None
    assert Cdr.objects.get(pk=cdr.pk).processed_at is None  # its claim taken again, and put off again
    with bap.capture(execute=True):
        result = cdr_process(cdr.pk, now=timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3))
    assert result is not None and "no_session" not in result.flags
    session = ChargingSession.objects.get(booking=booking)
    assert session.status == ChargingSession.Status.COMPLETED and session.kwh == Decimal("20")
    assert session.ocpi_key == ("IN*CPA*S-1" if session_id else f"CDR*{cdr.pk}")
    assert session.session_id == (session_id or "CDR-1")
    assert Cdr.objects.get(pk=cdr.pk).charging_session_id == session.pk
    assert Command.objects.get(booking=booking, type="START_SESSION").session_id == session.pk
    charge = Payment.objects.get(booking=booking, purpose="charge")
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 46327)  # the hold, not the account
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("holds:wallet") == 0
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.SETTLED
    assert_books_balance()


@pytest.mark.we_collect
def test_a_cdr_of_a_booking_that_has_a_session_makes_none(bap: Any, network: Partner) -> None:  # noqa: F811
    """A CDR naming a session we don't hold, of a booking that has one: not guessed at (billed as before)."""
    driver = wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, {**session_of(booking, "S-1"), "status": "ACTIVE"})
    cdr = store(bap, network, cdr_of(booking, "CDR-1", session_id="S-OTHER"))
    with bap.capture(execute=True):
        result = cdr_process(cdr.pk, now=timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3))
    assert result is not None and "no_session" in result.flags
    assert list(ChargingSession.objects.values_list("session_id", flat=True)) == ["S-1"]
    assert balance(f"driver:{driver.pk}:receivable") == BILL


@pytest.mark.we_collect
def test_a_cdr_without_session_id_put_off_is_handed_on_when_its_session_comes(bap: Any, network: Partner) -> None:  # noqa: F811
    """Its claim is cleared by the session that repeats its authorization_reference: the next sweep bills it,
    not the one after its claim expired."""
    wallet_driver()
    booking = started(bap)
    cdr = store(bap, network, cdr_of(booking, "CDR-1"))
    assert Cdr.objects.get(pk=cdr.pk).processed_at is None
    assert swept(bap, timedelta(seconds=31)) == []  # claimed, put off
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    assert swept(bap, timedelta(seconds=31)) == ["CDR-1"]
    assert Cdr.objects.get(pk=cdr.pk).charging_session.session_id == "S-1"
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.SETTLED


@pytest.mark.we_collect
def test_another_partners_cdr_with_the_same_authorization_reference_is_not_tied_to_the_booking(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    other = PartnerFactory(country_code="IN", party_id="CPB")
    obj = {**cdr_of(booking, "CDR-X"), "party_id": "CPB"}
    cdr = store(bap, other, obj)
    assert cdr.charging_session_id is None and cdr.processed_at is not None  # not put off either
    charge = Payment.objects.get(booking=booking, purpose="charge")
    assert (charge.status, charge.billed_minor) == (Payment.Status.AUTHORISED, None)


# --- (3) a CDR of a booking whose hold was released ---------------------------------------------------------------


def lost_start_cancelled(bap: Any, peer: FakePeer, order_id: str) -> Booking:  # noqa: F811
    """The order's START_SESSION got a 502 (its answer lost: recorded FAILED), and the driver cancelled: the hold
    is released. The charger began the session all the same (as in test_late_sessions_of_ended_bookings.py)."""
    order = {"id": order_id, "fulfillments": [{"state": {"descriptor": {"code": "start-charging"}}}]}
    bap("update", {"update_target": "order.fulfillments[0].state", "order": order})
    booking = Booking.objects.get(order_id=order_id)
    peer.route("POST", f"{CPO_BASE}/commands/START_SESSION", (502, b"bad gateway"))
    with bap.capture(execute=True):
        command_result_received(Command.objects.get(booking=booking, type="RESERVE_NOW"), {"result": "ACCEPTED"})
    assert Command.objects.get(booking=booking, type="START_SESSION").status == Command.Status.FAILED
    bap("cancel", {"order_id": order_id, "cancellation_reason_id": "changed-plans"})
    booking.refresh_from_db()
    assert booking.state == Booking.State.CANCELLED
    assert Payment.objects.get(booking=booking, purpose="charge").status == Payment.Status.RELEASED
    return booking


def late_charge(bap: Any, network: Partner, booking: Booking) -> None:  # noqa: F811
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-LATE"))
    store(bap, network, cdr_of(booking, "CDR-LATE", session_id="S-LATE"))


@pytest.mark.we_collect
def test_a_late_charge_after_the_wallet_hold_was_released_is_taken_from_the_wallet(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    peer: FakePeer,
) -> None:
    driver = wallet_driver()
    booking = lost_start_cancelled(bap, peer, ordered(bap))
    assert wallet(driver) == Decimal("1000") and balance("holds:wallet") == 0
    late_charge(bap, network, booking)

    collected = Payment.objects.get(booking=booking, purpose="balance")
    assert (collected.status, collected.captured_minor) == (Payment.Status.CAPTURED, 46327)
    assert wallet(driver) == Decimal("1000") - BILL
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert_books_balance()


@pytest.mark.we_collect
def test_a_late_charge_never_reported_as_a_session_is_billed_to_its_ended_booking(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    peer: FakePeer,
) -> None:
    """A CPO without the Sessions module: the late charge's CDR alone, after the grace, is the booking's, taken
    with a payment of its own (the hold was released); the booking stays ended and the app hears the bill."""
    driver = wallet_driver()
    booking = lost_start_cancelled(bap, peer, ordered(bap))
    cdr = store(bap, network, cdr_of(booking, "CDR-LATE"))
    assert cdr.processed_at is None  # put off for its session
    told = len(bap.bap.callbacks("on_update"))
    with bap.capture(execute=True):
        cdr_process(cdr.pk, now=timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3))
    collected = Payment.objects.get(booking=booking, purpose="balance")
    assert (collected.status, collected.captured_minor) == (Payment.Status.CAPTURED, 46327)
    assert wallet(driver) == Decimal("1000") - BILL
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert Booking.objects.get(pk=booking.pk).state == Booking.State.CANCELLED
    assert len(bap.bap.callbacks("on_update")) > told
    assert last(bap, "on_update")["message"]["order"]["quote"]["price"]["value"] == str(BILL)
    assert_books_balance()


def pages_at_the_provider(fake: Fake, settings: Any) -> None:
    """Payments at the stand-in provider, each checkout a numbered page (its call recorded)."""
    settings.PAYMENT_GATEWAYS = {"*": "fake"}

    def checkout(**kw: Any) -> Checkout:
        fake.calls.append(("checkout", kw))
        return Checkout(checkout_id=f"cs_{len(fake.calls)}", url=f"https://pay.example/cs_{len(fake.calls)}")

    fake.checkout = checkout  # type: ignore[attr-defined]


def provider_says(
    bap: Any,  # noqa: F811
    payment: Payment,
    event_id: str,
    kind: str,
    *,
    payment_id: str = "pi_1",
    amount_minor: int | None = None,
) -> str:
    """The provider's webhook `kind` (AUTHORISED, RELEASED…) for `payment`, named by its reference."""
    with bap.capture(execute=True):
        return payments.webhook_receive(
            WebhookEvent(
                provider="fake", event_id=event_id, type=kind, provider_type=kind.lower(),
                reference=payments.reference_of(payment), payment_id=payment_id,
                amount_minor=payment.requested_minor if amount_minor is None else amount_minor, currency="INR",
            )
        )  # fmt: skip


def authorised_charge(bap: Any) -> Payment:  # noqa: F811
    """An order selected and initialised, its charge payment authorised at the provider."""
    select(bap, item_of(bap))
    init(bap)
    charge = Payment.objects.get(purpose="charge")
    provider_says(bap, charge, "evt_auth", AUTHORISED)
    return charge


@pytest.mark.we_collect
def test_a_late_charge_after_the_providers_hold_was_released_gets_a_checkout(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    peer: FakePeer,
    fake: Fake,
    settings: Any,
) -> None:
    pages_at_the_provider(fake, settings)
    authorised_charge(bap)
    booking = lost_start_cancelled(bap, peer, confirm(bap)["message"]["order"]["id"])
    assert [name for name, _ in fake.calls] == ["checkout", "release"]
    late_charge(bap, network, booking)

    collected = Payment.objects.get(booking=booking, purpose="balance")
    assert (collected.status, collected.billed_minor, collected.provider) == (Payment.Status.PENDING, 46327, "fake")
    assert collected.url and fake.calls[-1][0] == "checkout" and fake.calls[-1][1]["amount_minor"] == 46327
    assert balance(f"driver:{collected.driver_id}:receivable") == BILL  # owed until the driver pays at the page
    assert_books_balance()

    # The driver pays the page: the provider's authorisation names the payment by its reference (a `bill-<cdr>` key
    # had matched no payment of ours: the hold was never captured).
    outcome = provider_says(bap, collected, "evt_balance", AUTHORISED, payment_id="pi_2", amount_minor=46327)
    assert outcome != "no payment of ours"
    collected.refresh_from_db()
    assert (collected.status, collected.captured_minor) == (Payment.Status.CAPTURED, 46327)
    assert balance(f"driver:{collected.driver_id}:receivable") == 0


# --- (1) two CDRs of one charge processed at the same moment (PostgreSQL: two transactions at once) ---------------


def one_session(partner: Partner) -> ChargingSession:
    """A session of an RFID charge (no booking): its CDRs bill the token's driver's account."""
    now = timezone.now()
    return ChargingSession.objects.create(
        partner=partner, country_code="IN", party_id="CPA", session_id="S-1", ocpi_key="IN*CPA*S-1",
        status="COMPLETED", start_date_time=now, currency="INR", ocpi_location_id="LOC1", evse_uid="E1",
        connector_id="1", token_uid="TOKEN000001", auth_method="WHITELIST", last_updated=now, data={},
    )  # fmt: skip


def held_until_the_other_waits(monkeypatch: pytest.MonkeyPatch, name: str, cdr: Cdr) -> threading.Event:
    """audit.<name> for `cdr` holds its transaction open after it ran, until another transaction waits on a
    row lock (or 5 s): the event says it got there."""
    reached, real = threading.Event(), getattr(audit, name)

    def then_hold(held: Cdr, *args: Any) -> None:
        real(held, *args)
        if held.pk == cdr.pk:
            reached.set()
            _until(threading.Event())

    monkeypatch.setattr(audit, name, then_hold)
    return reached


def processed_at_once(first: Cdr, second: Cdr, reached: threading.Event) -> None:
    """`first` processed up to its hold, then `second` processed meanwhile."""
    one, one_out = _run(lambda: cdr_process(first.pk))
    assert reached.wait(10)
    other, other_out = _run(lambda: cdr_process(second.pk))
    for thread in (one, other):
        thread.join(20)
    assert "error" not in one_out and "error" not in other_out, (one_out, other_out)


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_cdrs_of_one_session_processed_at_once_bill_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first CDR is audited and about to be billed, not committed, when the second is processed: the second
    waits for it (the charge's row lock) and is held as a second bill. Before, each saw the other unprocessed and
    both were billed."""
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    session = one_session(partner)
    first, second = (
        CdrFactory(partner=partner, cdr_id=cdr_id, currency="INR", session_id="S-1", charging_session=session)
        for cdr_id in ("CDR-1", "CDR-2")
    )
    processed_at_once(first, second, held_until_the_other_waits(monkeypatch, "_bill", first))
    assert "duplicate_session_cdr" not in audit_of("CDR-1").flags
    assert "duplicate_session_cdr" in audit_of("CDR-2").flags


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_new_cdr_processed_while_the_credit_of_the_first_commits_is_billed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credit for the first CDR has found no second bill to let through, not committed, when the CPO's new
    CDR is processed: the new one waits for the credit (the charge's row lock) and finds the first voided.
    Without the wait it was held as a second bill, and nothing would let it through any more."""
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    TokenFactory(uid="TOKEN000001")
    session = one_session(partner)
    first = CdrFactory(partner=partner, cdr_id="CDR-1", currency="INR", session_id="S-1", charging_session=session)
    cdr_process(first.pk)
    credit = CreditCdrFactory(credited_cdr=first, session_id="S-1", charging_session=session)
    new = CdrFactory(partner=partner, cdr_id="CDR-2", currency="INR", session_id="S-1", charging_session=session)
    processed_at_once(credit, new, held_until_the_other_waits(monkeypatch, "_bill_second_bills", credit))
    assert audit_of("CDR-1-C").status == CdrAudit.Status.CREDIT
    assert "duplicate_session_cdr" not in audit_of("CDR-2").flags
    assert DriverReceipt.objects.filter(cdr__cdr_id="CDR-2").exists()  # billed


# --- (4) the CDRs of one charge processed in the order they came ------------------------------------------------


def swept(bap: Any, after: timedelta) -> list[str]:  # noqa: F811
    """The beat's sweep, `after` from now: every CDR due (never claimed, or its claim expired) processed; their
    ids, in order."""
    now = timezone.now() + after
    due = cdrs_process_due(now=now)
    for pk in due:
        with bap.capture(execute=True):
            cdr_process(pk, now=now)
    return list(Cdr.objects.filter(pk__in=due).order_by("pk").values_list("cdr_id", flat=True))


@pytest.mark.we_collect
def test_a_credit_and_a_new_cdr_of_a_cdr_put_off_for_its_session_wait_for_it(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    settings: Any,
) -> None:
    """The first CDR waits for its session; its session comes, then the CPO's credit for it and the corrected CDR,
    all before the sweep processed the first. They wait for it. Before, the credit gave back what the first had
    not taken, and the first, processed last, was held as a second bill of the corrected one: the driver got back
    448.40 never taken."""
    driver = wallet_driver()
    booking = started(bap)
    first = store(bap, network, cdr_of(booking, "CDR-1", session_id="S-1"))
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    credit = store(bap, network, credit_for(first, "CDR-1-C"))
    new = store(bap, network, cdr_of(booking, "CDR-2", session_id="S-1", excl=300, incl=354))
    assert (credit.processed_at, new.processed_at) == (None, None)  # put off: they wait for the first
    assert not DriverReceipt.objects.exists()

    assert swept(bap, timedelta(seconds=31)) == ["CDR-1"]  # its claim cleared by its session: billed
    assert "duplicate_session_cdr" not in audit_of("CDR-1").flags  # the charge's first CDR
    # Their claims cleared by the first's processing: the next sweep takes them, not one after the claims expire.
    assert swept(bap, timedelta(seconds=31)) == ["CDR-1-C", "CDR-2"]
    assert swept(bap, timedelta(seconds=settings.WORK_LEASE_SECONDS + 1)) == []

    assert audit_of("CDR-1-C").status == CdrAudit.Status.CREDIT
    assert "duplicate_session_cdr" not in audit_of("CDR-2").flags
    assert wallet(driver) == Decimal("1000") - CORRECTED  # the first taken and given back, the new one taken
    charge = Payment.objects.get(booking=booking, purpose="charge")
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 46327)
    assert Payment.objects.get(booking=booking, purpose="balance").captured_minor == 36698
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("holds:wallet") == 0
    assert_books_balance()


def test_a_cdr_waits_for_an_earlier_one_of_its_charge_only_for_the_grace(bap: Any, network: Partner) -> None:  # noqa: F811
    """An earlier CDR of the charge that is not processed (its task lost, its processing failing) holds a later
    one up for SESSION_GRACE at most: then the later one is billed as the charge's first."""
    wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    cdr_store(network, cdr_of(booking, "CDR-1", session_id="S-1"))  # its task lost (not run: not captured)
    first = Cdr.objects.get(cdr_id="CDR-1")
    second = store(bap, network, cdr_of(booking, "CDR-2", session_id="S-1"))
    assert (first.processed_at, second.processed_at) == (None, None)
    with bap.capture(execute=True):
        result = cdr_process(second.pk, now=timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3))
    assert result is not None and "duplicate_session_cdr" not in result.flags
    with bap.capture(execute=True):
        late = cdr_process(first.pk)  # should it come after all: a second bill, for staff
    assert late is not None and "duplicate_session_cdr" in late.flags


# --- (5) a held second CDR whose first was voided or withdrawn ----------------------------------------------------


@pytest.mark.we_collect
def test_an_unpriceable_new_cdr_held_before_the_credit_of_the_first_is_billed_once_the_credit_comes(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    """Its audit is UNPRICEABLE, not REVIEW: the credit's look for held second bills went by the status."""
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    malformed = {
        "country_code": "IN", "party_id": "CPA", "id": "T-BAD", "currency": "INR", "last_updated": stamp(),
        "elements": [{"price_components": [{"type": "ENERGY", "price": "a lot", "vat": 18, "step_size": 1}]}],
    }  # fmt: skip
    again = {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354}, "tariffs": [malformed]}
    store(bap, network, again)
    held = audit_of("CDR-2")
    assert held.status == CdrAudit.Status.UNPRICEABLE and "duplicate_session_cdr" in held.flags

    store(bap, network, credit_for(first, "CDR-1-C"))

    assert "duplicate_session_cdr" not in audit_of("CDR-2").flags
    assert DriverReceipt.objects.filter(cdr__cdr_id="CDR-2").exists()
    assert wallet(driver) == Decimal("1000") - CORRECTED
    assert_books_balance()


@pytest.mark.we_collect
@pytest.mark.parametrize("credit_first", [True, False], ids=["credit-then-new", "new-then-credit"])
def test_the_corrected_cdr_of_a_held_first_its_credit_withdrew_is_billed(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    credit_first: bool,
) -> None:
    """The first CDR is held (its total with VAT below the one without) and billed nobody; the CPO follows the
    spec: a credit CDR for it (held as original_held: nothing to give back), then the corrected CDR. The first,
    withdrawn, is no first bill: the corrected CDR is billed, the hold captured. Before, it was held as a second
    bill for good, and the hold stayed authorised on a settled booking."""
    driver = wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    first = store(bap, network, cdr_of(booking, "CDR-1", session_id="S-1", excl=380, incl=300))
    assert "incl_vat_below_excl_vat" in audit_of("CDR-1").flags
    corrected = cdr_of(booking, "CDR-2", session_id="S-1", excl=300, incl=354)
    if credit_first:
        store(bap, network, credit_for(first, "CDR-1-C"))
        store(bap, network, corrected)
    else:
        store(bap, network, corrected)
        assert "duplicate_session_cdr" in audit_of("CDR-2").flags  # no credit yet: a second bill
        store(bap, network, credit_for(first, "CDR-1-C"))

    assert "original_held" in audit_of("CDR-1-C").flags
    assert "duplicate_session_cdr" not in audit_of("CDR-2").flags
    charge = Payment.objects.get(booking=booking, purpose="charge")
    assert (charge.status, charge.captured_minor) == (Payment.Status.CAPTURED, 36698)
    assert wallet(driver) == Decimal("1000") - CORRECTED
    assert balance("holds:wallet") == 0 and balance("refunds:pending") == 0
    assert_books_balance()


def test_a_second_cdr_of_a_held_first_no_credit_withdrew_is_still_held(bap: Any, network: Partner) -> None:  # noqa: F811
    """A held first that billed nobody still makes a later CDR a second bill, for staff to look at both."""
    wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    store(bap, network, cdr_of(booking, "CDR-1", session_id="S-1", excl=380, incl=300))
    store(bap, network, cdr_of(booking, "CDR-2", session_id="S-1", excl=300, incl=354))
    assert "duplicate_session_cdr" in audit_of("CDR-2").flags
    assert not DriverReceipt.objects.exists()


# --- (6) the order the app sees once a late bill is asked for -----------------------------------------------------


def not_paid(order: dict[str, Any]) -> Decimal:
    return sum((Decimal(p["params"]["amount"]) for p in order["payments"] if p["status"] == "NOT-PAID"), Decimal("0"))


@pytest.mark.we_collect
def test_a_late_bill_after_the_hold_was_released_is_shown_owed_once(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    peer: FakePeer,
    fake: Fake,
    settings: Any,
) -> None:
    """The released charge payment took nothing: shown at what it captured (0), the bill on its balance payment
    only. Before, both showed the whole bill NOT-PAID: the app read the driver as owing it twice."""
    pages_at_the_provider(fake, settings)
    charge = authorised_charge(bap)
    booking = lost_start_cancelled(bap, peer, confirm(bap)["message"]["order"]["id"])
    late_charge(bap, network, booking)

    charge.refresh_from_db()
    assert (charge.status, charge.billed_minor, charge.captured_minor) == (Payment.Status.RELEASED, None, 0)
    order = last(bap, "on_update")["message"]["order"]
    shown = {p["id"]: (p["status"], p["params"]["amount"]) for p in order["payments"]}
    collected = Payment.objects.get(booking=booking, purpose="balance")
    assert shown == {f"PAY-{charge.pk}": ("NOT-PAID", "0.00"), f"PAY-{collected.pk}": ("NOT-PAID", "463.27")}
    assert not_paid(order) == BILL == balance(f"driver:{collected.driver_id}:receivable")

    # The bill booked again (a repeat of the CDR's processing) asks for nothing more.
    with bap.capture(execute=True):
        payments.bill(DriverReceipt.objects.get(cdr__cdr_id="CDR-LATE"))
    assert Payment.objects.filter(booking=booking, purpose="balance").count() == 1
    charge.refresh_from_db()
    assert charge.billed_minor is None


@pytest.mark.we_collect
def test_a_late_bill_taken_from_the_wallet_after_the_hold_was_released_is_shown_paid(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    peer: FakePeer,
) -> None:
    wallet_driver()
    booking = lost_start_cancelled(bap, peer, ordered(bap))
    late_charge(bap, network, booking)
    order = last(bap, "on_update")["message"]["order"]
    assert sorted((p["status"], p["params"]["amount"]) for p in order["payments"]) == [
        ("NOT-PAID", "0.00"),
        ("PAID", "463.27"),
    ]
    assert not_paid(order) == 0


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_credit_processed_while_its_original_is_waits_for_it_and_is_refunded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The original is audited and about to be billed, not committed, when its credit is processed: the credit
    waits for it (the original's row lock) and finds it audited, instead of being put off until the sweep."""
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    TokenFactory(uid="TOKEN000001")
    session = one_session(partner)
    first = CdrFactory(partner=partner, cdr_id="CDR-1", currency="INR", session_id="S-1", charging_session=session)
    credit = CreditCdrFactory(credited_cdr=first, session_id="S-1", charging_session=session)
    processed_at_once(first, credit, held_until_the_other_waits(monkeypatch, "_bill", first))
    assert audit_of("CDR-1-C").status == CdrAudit.Status.CREDIT
    assert DriverReceipt.objects.filter(cdr__cdr_id="CDR-1-C").exists()  # refunded


@pytest.mark.we_collect
def test_a_bill_whose_hold_lapsed_before_its_capture_is_asked_for_again_and_shown_owed_once(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    settings: Any,
) -> None:
    """The CDR billed the charge payment; its authorisation lapsed at the provider before the capture ran (the
    capture fails). The bill is asked for again with a balance payment, and the order shows it owed once."""
    from billing.payments.gateway import RELEASED

    settings.PAYMENT_GATEWAYS = {"*": "fake"}
    fake.checkout = lambda **kw: Checkout(checkout_id="cs_1", url="https://pay.example/cs_1")  # type: ignore[method-assign]
    charge = authorised_charge(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    with bap.capture(execute=False):  # billed; its capture task not run yet
        cdr_store(network, cdr_of(booking, "CDR-1", session_id="S-1"))
        cdr_process(Cdr.objects.get(cdr_id="CDR-1").pk)
    provider_says(bap, charge, "evt_rel", RELEASED)
    with bap.capture(execute=True):
        payments.payment_capture(charge.pk)
    charge.refresh_from_db()
    assert (charge.status, charge.captured_minor) == (Payment.Status.RELEASED, 0)
    # The bill is asked for again: a balance payment and its page (it had stayed on the driver's account with
    # nothing asking for it). A staff retry of the failed capture asks nothing more.
    (collected,) = Payment.objects.filter(booking=booking, purpose="balance")
    assert (collected.billed_minor, collected.status) == (46327, Payment.Status.PENDING)
    assert collected.checkout_id == "cs_1" and collected.url
    capture = charge.operations.get(kind="capture")
    assert capture.status == "FAILED"
    with bap.capture(execute=True):
        payments.operation_retry(operation=capture)
    assert Payment.objects.filter(booking=booking, purpose="balance").count() == 1

    bap("status", {"order_id": order_id})
    order = last(bap, "on_status")["message"]["order"]
    owed = [Decimal(p["params"]["amount"]) for p in order["payments"] if p["status"] == "NOT-PAID"]
    assert sum(owed) == Decimal(order["quote"]["price"]["value"]) == BILL


@needs_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("session_id", ["S-1", ""], ids=["named", "unnamed"])
def test_two_cdrs_of_a_start_without_session_processed_at_once_make_one_session(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    session_id: str,
) -> None:
    """Both past the grace, at the same moment: one makes the session and is the bill, the other is tied to it
    and held as its second bill (they had deadlocked, and each could have made a session of its own)."""
    wallet_driver()
    booking = started(bap)
    one = store(bap, network, cdr_of(booking, "CDR-1", session_id=session_id))
    two = store(bap, network, cdr_of(booking, "CDR-2", session_id=session_id, excl=300, incl=354))
    barrier, real = threading.Barrier(2, timeout=10), audit._session_made

    def together(cdr: Cdr, command: Command) -> None:
        barrier.wait()
        real(cdr, command)

    monkeypatch.setattr(audit, "_session_made", together)
    later = timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3)
    a, a_out = _run(lambda: cdr_process(one.pk, now=later))
    b, b_out = _run(lambda: cdr_process(two.pk, now=later))
    a.join(30)
    b.join(30)

    assert "error" not in a_out and "error" not in b_out, (a_out, b_out)
    assert ChargingSession.objects.filter(booking=booking).count() == 1
    flags = sorted("duplicate_session_cdr" in audit_of(cdr_id).flags for cdr_id in ("CDR-1", "CDR-2"))
    assert flags == [False, True]
    assert DriverReceipt.objects.count() == 1


@needs_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("session_id", ["S-1", ""], ids=["named", "unnamed"])
def test_a_cdr_making_its_session_while_the_cpo_puts_it_late_does_not_deadlock(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    session_id: str,
) -> None:
    """Named: the CPO's late PUT of the session the CDR names (the PUT had waited on the CDR's row to tie it, the
    CDR's worker on the PUT's session key). Unnamed: the CPO's PUT giving its stored session the start's reference
    (it ties the start, then the booking; the CDR's worker had locked the booking, then the start)."""
    wallet_driver()
    booking = started(bap)
    put = session_of(booking, "S-1")
    if not session_id:
        with bap.capture(execute=True):
            session_put(network, {**put, "authorization_reference": "", "status": "ACTIVE"})
        put = {**put, "last_updated": "2099-01-01T00:00:00Z"}
    one = store(bap, network, cdr_of(booking, "CDR-1", session_id=session_id))
    reached, real = threading.Event(), audit.session_from_cdr

    def slow(*args: Any) -> ChargingSession:  # the worker holds the CDR's row (and the start's, the booking's)
        reached.set()
        _until(threading.Event())
        return real(*args)

    monkeypatch.setattr(audit, "session_from_cdr", slow)
    later = timezone.now() + audit.SESSION_GRACE + timedelta(minutes=3)
    a, a_out = _run(lambda: cdr_process(one.pk, now=later))
    assert reached.wait(10)
    b, b_out = _run(lambda: session_put(network, put))
    a.join(30)
    b.join(30)

    assert "error" not in a_out and "error" not in b_out, (a_out, b_out)
