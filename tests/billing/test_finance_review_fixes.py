"""The money side after a finance review: a CDR in another currency than its booking's payment, its session or
the CDR it credits is held for review (nothing billed, nothing refunded); a held CDR is never disputed nor
excused by a dispute, and a CDR of a token of ours we don't hold is held; app statements do not overlap."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.db.models import Sum
from django.test import Client
from django.urls import reverse

from billing.documents import cpo_net_payable
from billing.models import (
    Cdr,
    CdrAudit,
    Dispute,
    DocumentSequence,
    DriverReceipt,
    IssuedDocument,
    LedgerLine,
    Payment,
    Settlement,
)
from billing.services import accounts, disputes, documents, held_cdrs
from billing.services.audit import cdr_process
from billing.services.ledger import from_minor
from billing.services.records import cdr_store
from billing.services.settlement import SettlementError, in_review, settlement_close, settlement_compute
from emsp.models import Booking, Partner, StaffAction
from emsp.services.sessions import session_put
from ocpi.normalize import normalize_cdr
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import confirm
from tests.beckn.test_payments_journey import BILL, assert_books_balance, balance, start
from tests.billing import bap_ledger
from tests.billing.dispute_factories import LOCATION_ID, ocpi_cdr
from tests.billing.factories import DisputeFactory
from tests.billing.provider_standin import Fake
from tests.billing.provider_standin import fake as fake
from tests.billing.test_cdr_booking_links import (
    audit_of,
    authorised_charge,
    cdr_of,
    charged,
    credit_for,
    pages_at_the_provider,
    session_of,
    started,
    store,
    wallet,
    wallet_driver,
)
from tests.factories import PartnerFactory, TokenFactory, stored_location

pytestmark = pytest.mark.django_db


# --- 1. a CDR in another currency than its charge's money --------------------------------------------------------


def eur(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "currency": "EUR"}


@pytest.mark.we_collect
def test_a_cdr_in_another_currency_than_the_bookings_payment_captures_nothing(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
    fake: Fake,
    settings: Any,
) -> None:
    """An EUR CDR of a booking paid in INR: held for review. Before, 463.27 INR (the EUR figure as INR) was
    captured, and the books split across currencies, an EUR receivable left open for good."""
    pages_at_the_provider(fake, settings)
    charge = authorised_charge(bap)
    order_id = confirm(bap)["message"]["order"]["id"]
    start(bap, order_id)
    booking = Booking.objects.get(order_id=order_id)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    cdr = store(bap, network, eur(cdr_of(booking, "CDR-EUR", session_id="S-1")))

    assert cdr.processed_at is not None
    held = audit_of("CDR-EUR")
    assert held.status == CdrAudit.Status.REVIEW and "currency_differs" in held.flags
    assert not cdr.disputes.exists()
    assert not [name for name, _ in fake.calls if name == "capture"]
    charge.refresh_from_db()
    assert (charge.status, charge.billed_minor, charge.captured_minor) == (Payment.Status.AUTHORISED, None, 0)
    assert not DriverReceipt.objects.filter(cdr=cdr).exists()
    assert balance("cpo:IN*CPA:payable") == 0
    assert_books_balance()


@pytest.mark.we_collect
def test_a_cdr_in_another_currency_than_the_wallet_hold_is_held_and_the_hold_stays(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    """A prepaid wallet: before, every processing run raised UnbalancedEntry (an EUR bill against the INR hold),
    the CDR was never processed and the hold never released. Now it is held for staff; the hold stays."""
    driver = wallet_driver()
    booking = started(bap)
    hold = balance("holds:wallet")
    assert hold > 0
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    cdr = store(bap, network, eur(cdr_of(booking, "CDR-EUR", session_id="S-1")))

    assert cdr.processed_at is not None
    assert "currency_differs" in audit_of("CDR-EUR").flags
    assert wallet(driver) == Decimal("1000")  # nothing taken
    assert balance("holds:wallet") == hold  # the hold stays until staff decide
    assert Payment.objects.get(booking=booking, purpose="charge").status == Payment.Status.AUTHORISED
    assert_books_balance()


@pytest.mark.we_collect
def test_a_cdr_in_another_currency_than_its_session_is_held(bap: Any, network: Partner) -> None:  # noqa: F811
    """An RFID-like charge: the session in INR, its CDR in EUR, no booking payment to compare with."""
    driver = wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    Payment.objects.filter(booking=booking).update(currency="EUR")  # only the session differs now
    store(bap, network, eur(cdr_of(booking, "CDR-EUR", session_id="S-1")))
    assert "currency_differs" in audit_of("CDR-EUR").flags
    assert wallet(driver) == Decimal("1000")


@pytest.mark.we_collect
def test_a_credit_cdr_in_another_currency_than_its_original_refunds_nothing(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    driver = wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    assert wallet(driver) == Decimal("1000") - BILL
    store(bap, network, eur(credit_for(first, "CDR-1-C")))

    held = audit_of("CDR-1-C")
    assert held.status == CdrAudit.Status.REVIEW and "currency_differs" in held.flags
    assert wallet(driver) == Decimal("1000") - BILL  # nothing given back in another currency
    assert balance("refunds:pending") == 0
    assert not Dispute.objects.exists()
    assert_books_balance()


@pytest.mark.we_collect
def test_the_cpo_withdraws_a_cdr_in_another_currency_and_its_corrected_cdr_is_billed(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    """The way out for a CDR held as currency_differs: the CPO's credit CDR withdraws it (nothing given back:
    nothing was taken) and its corrected CDR, in the booking's currency, is billed from the hold."""
    driver = wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    wrong = store(bap, network, eur(cdr_of(booking, "CDR-EUR", session_id="S-1")))
    store(bap, network, credit_for(wrong, "CDR-EUR-C"))
    assert "original_held" in audit_of("CDR-EUR-C").flags
    assert wallet(driver) == Decimal("1000") and balance("refunds:pending") == 0

    store(bap, network, cdr_of(booking, "CDR-INR", session_id="S-1"))
    assert not {"currency_differs", "duplicate_session_cdr"} & set(audit_of("CDR-INR").flags)
    assert wallet(driver) == Decimal("1000") - BILL
    assert balance("holds:wallet") == 0
    assert_books_balance()


OCTOBER = date(2026, 10, 1)


# --- 2. a held CDR is never disputed, nor excused; a token of our party we don't hold is held -----------------------


@pytest.fixture
def user(db: None) -> User:
    return User.objects.create_superuser("finance", "finance@example.com", "pw-123456-x")


def dsp() -> Partner:
    partner = PartnerFactory(country_code="IN", party_id="DSP", name="Disputed CPO")
    stored_location(partner, location_id=LOCATION_ID)
    return partner


def processed(partner: Partner, obj: dict[str, Any]) -> Cdr:
    clean, _ = normalize_cdr(obj, country_code="IN", party_id="DSP")
    cdr = cdr_store(partner, clean).cdr
    cdr_process(cdr.pk)
    return Cdr.objects.select_related("audit").get(pk=cdr.pk)


def processed_with_session(partner: Partner, obj: dict[str, Any]) -> Cdr:
    """The CDR processed after its COMPLETED session was PUT (no `no_session` flag)."""
    session_put(partner, {
        "country_code": "IN", "party_id": "DSP", "id": obj["session_id"], "start_date_time": obj["start_date_time"],
        "end_date_time": obj["end_date_time"], "kwh": 20, "cdr_token": obj["cdr_token"], "auth_method": "WHITELIST",
        "location_id": LOCATION_ID, "evse_uid": f"{LOCATION_ID}-E1", "connector_id": "1", "currency": "EUR",
        "status": "COMPLETED", "last_updated": "2026-10-01T11:05:00Z",
    })  # fmt: skip
    cdr = processed(partner, obj)
    assert cdr.charging_session_id is not None
    return cdr


def october(partner: Partner) -> Settlement:
    (settlement,) = settlement_compute(partner=partner, period_start=OCTOBER)
    return settlement


def ledger_payable(party: str, currency: str) -> Decimal:
    booked = LedgerLine.objects.filter(account=accounts.cpo_payable(party, currency)).aggregate(t=Sum("amount_minor"))
    return -from_minor(booked["t"] or 0, currency)


def test_a_held_cdr_whose_price_differs_is_in_review_not_disputed(user: User) -> None:
    """incl. VAT (5.00) below excl. VAT (6.00), and 6.00 against our 5.00: before, audited MISMATCH with a
    dispute; accepting it excused the CDR, October closed and the statement paid 5.00 nobody was billed for."""
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    cdr = processed(partner, ocpi_cdr(partner, "CDR-H", total=(6.0, 5.0)))

    assert cdr.audit.status == CdrAudit.Status.REVIEW
    assert "incl_vat_below_excl_vat" in cdr.audit.flags
    assert not cdr.disputes.exists()
    assert not DriverReceipt.objects.filter(cdr=cdr).exists()
    settlement = october(partner)
    assert settlement.state == Settlement.State.OPEN
    assert list(in_review(settlement)) == [cdr]
    with pytest.raises(SettlementError, match="not reconciled"):
        settlement_close(settlement=settlement, user=user)


def test_a_resolved_dispute_does_not_excuse_a_held_cdr(user: User) -> None:
    """A dispute opened on a held CDR (before the audit stopped opening them) and accepted by staff leaves the
    CDR in review: nobody was billed for it."""
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    cdr = processed(partner, ocpi_cdr(partner, "CDR-H", total=(6.0, 5.0)))
    dispute = DisputeFactory(cdr=cdr, partner=partner, currency="EUR", difference=Decimal("1"))
    disputes.dispute_accept_cpo_amount(dispute=dispute, user=user)

    settlement = october(partner)
    assert settlement.state == Settlement.State.OPEN
    assert list(in_review(settlement)) == [cdr]
    with pytest.raises(SettlementError, match="not reconciled"):
        settlement_close(settlement=settlement, user=user)


def test_staff_release_a_held_cdr_whose_price_differs_and_its_dispute_then_settles_it(user: User) -> None:
    """Held, it can be released (it had been MISMATCH, which the release refuses): billed, then disputed, and the
    statement pays what the ledger booked."""
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    cdr = processed(partner, ocpi_cdr(partner, "CDR-H", total=(6.0, 5.0)))

    release = held_cdrs.bill_held_cdr(cdr.pk, user)
    assert release.billed, release.reason
    audit = CdrAudit.objects.get(cdr=cdr)
    assert audit.status == CdrAudit.Status.MISMATCH and "released_by_staff" in audit.flags
    disputes.dispute_accept_cpo_amount(dispute=cdr.disputes.get(), user=user)
    closed = settlement_close(settlement=october(partner), user=user)
    assert closed.state == Settlement.State.CLOSED
    assert cpo_net_payable(closed) == ledger_payable("IN*DSP", "EUR") == Decimal("5.00")


def test_a_cdr_of_a_token_of_our_party_we_do_not_hold_is_held(user: User) -> None:
    """Our party on the token, but no token of that uid: no driver to bill (no receipt). Before, audited MATCHED,
    October closed and the statement paid 5.50 the ledger never booked."""
    partner = dsp()
    cdr = processed_with_session(partner, ocpi_cdr(partner, "CDR-U", total=(5.0, 5.5), energy_cost=(5.0, 5.5)))

    assert cdr.charging_session_id is not None
    assert cdr.audit.status == CdrAudit.Status.REVIEW
    assert "unknown_token" in cdr.audit.flags
    assert not DriverReceipt.objects.filter(cdr=cdr).exists()
    settlement = october(partner)
    assert settlement.state == Settlement.State.OPEN
    with pytest.raises(SettlementError, match="not reconciled"):
        settlement_close(settlement=settlement, user=user)
    assert ledger_payable("IN*DSP", "EUR") == 0


def test_a_cdr_of_a_token_we_hold_is_matched_and_settles_as_booked(user: User) -> None:
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    cdr = processed_with_session(partner, ocpi_cdr(partner, "CDR-OK", total=(5.0, 5.5), energy_cost=(5.0, 5.5)))
    assert cdr.audit.status == CdrAudit.Status.MATCHED and DriverReceipt.objects.filter(cdr=cdr).exists()
    closed = settlement_close(settlement=october(partner), user=user)
    assert cpo_net_payable(closed) == ledger_payable("IN*DSP", "EUR") == Decimal("5.50")


# --- 3. an app's statements never overlap --------------------------------------------------------------------------

AFTER_NOVEMBER = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def app_period(start: date, end: date) -> dict[str, Any]:
    return {"bap_id": bap_ledger.APP, "currency": "INR", "period_start": start, "period_end": end}


def test_an_app_statement_overlapping_an_issued_one_is_refused() -> None:
    """2026-10-01..11-01 issued, then 2026-10-02..11-02: both had demanded October's charges."""
    bap_ledger.october_of_app()
    with time_machine.travel(AFTER_NOVEMBER, tick=False):
        first = documents.issue_bap_statement(**app_period(date(2026, 10, 1), date(2026, 11, 1)))
        with pytest.raises(documents.DocumentError, match=f"{first.number} already covers 2026-10-01 to 2026-10-31"):
            documents.issue_bap_statement(**app_period(date(2026, 10, 2), date(2026, 11, 2)))
        with pytest.raises(documents.DocumentError, match="may not overlap"):
            documents.issue_bap_statement(**app_period(date(2026, 9, 1), date(2026, 10, 2)))
        # The same period again is the statement itself; the next period, and another currency, are not refused.
        assert documents.issue_bap_statement(**app_period(date(2026, 10, 1), date(2026, 11, 1))).pk == first.pk
        after = documents.issue_bap_statement(**app_period(date(2026, 11, 1), date(2026, 11, 2)))
    assert after.number.endswith("-000002")
    assert IssuedDocument.objects.filter(kind=IssuedDocument.Kind.BAP_STATEMENT).count() == 2
    assert not DocumentSequence.objects.filter(kind=IssuedDocument.Kind.BAP_STATEMENT, last__gt=2).exists()


def test_an_overlapping_app_statement_is_refused_under_the_sequence_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issued by another finance user after this issue's first look: refused once the number is taken (which
    goes back)."""
    bap_ledger.october_of_app()
    with time_machine.travel(AFTER_NOVEMBER, tick=False):
        first = documents.issue_bap_statement(**app_period(date(2026, 10, 1), date(2026, 11, 1)))
        real = documents.overlapping_bap_statement
        looks: list[int] = []

        def first_look_misses(**kwargs: Any) -> Any:
            looks.append(1)
            return None if len(looks) == 1 else real(**kwargs)

        monkeypatch.setattr(documents, "overlapping_bap_statement", first_look_misses)
        with pytest.raises(documents.DocumentError, match=f"{first.number} already covers"):
            documents.issue_bap_statement(**app_period(date(2026, 10, 2), date(2026, 11, 2)))
    assert len(looks) == 2
    assert DocumentSequence.objects.get(kind=IssuedDocument.Kind.BAP_STATEMENT).last == 1  # the number went back


def test_the_console_shows_why_an_overlapping_app_statement_is_refused(login: Any) -> None:
    bap_ledger.october_of_app()
    finance = login("finance")
    url = reverse("admin:billing_bap_settlement")
    october = {"bap_id": bap_ledger.APP, "period_start": "2026-10-01", "period_end": "2026-11-01"}
    with time_machine.travel(AFTER_NOVEMBER, tick=False):
        assert finance.post(url, october).status_code == 302
        response = finance.post(url, {**october, "period_start": "2026-10-02", "period_end": "2026-11-02"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("may not overlap" in m for m in shown), shown
    assert IssuedDocument.objects.filter(kind=IssuedDocument.Kind.BAP_STATEMENT).count() == 1
    assert StaffAction.objects.count() == 1


# --- 4. a CDR in review, not held, accepted as billed by staff -------------------------------------------------------


def accept(client: Any, *audits: CdrAudit) -> list[str]:
    response = client.post(
        reverse("admin:billing_cdraudit_changelist"),
        {"action": "accept_as_billed", "_selected_action": [a.pk for a in audits]},
        follow=True,
    )
    assert response.status_code == 200
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_staff_accept_a_cdr_in_review_as_billed_and_its_period_closes(user: User) -> None:
    """no_session: billed to the driver and owed to the CPO, but nothing settled it (no dispute, no action), and
    the carry-over moved it every month. Accepted as billed, October closes paying what the ledger booked."""
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    cdr = processed(partner, ocpi_cdr(partner, "CDR-R", total=(5.0, 5.5), energy_cost=(5.0, 5.5)))
    assert (cdr.audit.status, cdr.audit.flags) == (CdrAudit.Status.REVIEW, ["no_session"])
    assert DriverReceipt.objects.filter(cdr=cdr).exists()
    assert october(partner).state == Settlement.State.OPEN

    client = Client()
    client.force_login(user)
    assert accept(client, cdr.audit) == ["CDR CDR-R: accepted as billed."]

    audit = CdrAudit.objects.get(cdr=cdr)
    assert (audit.status, audit.flags) == (CdrAudit.Status.REVIEW, ["no_session", "accepted_as_billed"])
    action = StaffAction.objects.get(verb="accept_cdr_as_billed")
    assert action.username == "finance" and action.details["flags"] == ["no_session"]
    assert LogEntry.objects.filter(object_id=str(audit.pk), user=user).exists()
    settlement = october(partner)
    assert settlement.state == Settlement.State.RECONCILED and not in_review(settlement).exists()
    closed = settlement_close(settlement=settlement, user=user)
    assert cpo_net_payable(closed) == ledger_payable("IN*DSP", "EUR") == Decimal("5.50")
    assert accept(client, audit) == ["CDR CDR-R: not accepted: it was accepted as billed already."]


def test_a_held_or_matched_cdr_is_not_accepted_as_billed(user: User) -> None:
    partner = dsp()
    held = processed(partner, ocpi_cdr(partner, "CDR-U", total=(5.0, 5.5), energy_cost=(5.0, 5.5)))  # no token
    TokenFactory(uid="TOKEN-DISPUTE-1")
    disputed = processed(partner, ocpi_cdr(partner, "CDR-D", total=(6.0, 6.6)))
    client = Client()
    client.force_login(user)
    shown = accept(client, held.audit, disputed.audit)
    assert shown == [
        "CDR CDR-U: not accepted: it is held as unknown_token: no driver was billed for it.",
        "CDR CDR-D: not accepted: its audit is MISMATCH: only a CDR in review or unpriceable is accepted as billed.",
    ]
    assert not StaffAction.objects.filter(verb="accept_cdr_as_billed").exists()
    assert october(partner).state == Settlement.State.OPEN


def test_staff_without_the_change_permission_cannot_accept_a_cdr_as_billed(login: Any) -> None:
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    cdr = processed(partner, ocpi_cdr(partner, "CDR-R", total=(5.0, 5.5), energy_cost=(5.0, 5.5)))
    accept(login("finance"), cdr.audit)  # finance reads audits (billing.view_cdraudit), changes none
    assert CdrAudit.objects.get(cdr=cdr).flags == ["no_session"]
    assert not StaffAction.objects.exists()


def test_a_held_cdr_the_cpo_withdrew_settles_with_its_credit(user: User) -> None:
    """A CDR held as currency_differs (its session in EUR, the CDR in INR) and withdrawn by the CPO's credit CDR,
    as docs/payments.md says the CPO does: the pair billed nobody and owes nothing, so its period reconciles (it
    had stayed in review, carried over every month, with no action to clear it)."""
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    obj = {**ocpi_cdr(partner, "CDR-X", total=(5.0, 5.5), energy_cost=(5.0, 5.5)), "currency": "INR"}
    wrong = processed_with_session(partner, obj)
    assert "currency_differs" in wrong.audit.flags

    credit = processed(partner, credit_for(Cdr.objects.get(pk=wrong.pk), "CDR-X-C"))

    assert "withdrawn_by_credit" in credit.audit.flags
    assert "withdrawn_by_credit" in CdrAudit.objects.get(cdr=wrong).flags
    assert not DriverReceipt.objects.exists() and ledger_payable("IN*DSP", "INR") == 0
    (settlement,) = settlement_compute(partner=partner, period_start=OCTOBER)
    assert list(in_review(settlement)) == []
    assert settlement.state == Settlement.State.RECONCILED
    closed = settlement_close(settlement=settlement, user=user)
    assert cpo_net_payable(closed) == ledger_payable("IN*DSP", "INR") == 0


def test_a_held_cdr_credited_only_in_part_stays_in_review(user: User) -> None:
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    obj = {**ocpi_cdr(partner, "CDR-X", total=(5.0, 5.5), energy_cost=(5.0, 5.5)), "currency": "INR"}
    wrong = processed_with_session(partner, obj)
    part = {**credit_for(Cdr.objects.get(pk=wrong.pk), "CDR-X-C"), "total_cost": {"excl_vat": -2.0, "incl_vat": -2.2}}

    credit = processed(partner, part)

    assert "withdrawn_by_credit" not in credit.audit.flags
    (settlement,) = settlement_compute(partner=partner, period_start=OCTOBER)
    assert sorted(c.cdr_id for c in in_review(settlement)) == ["CDR-X", "CDR-X-C"]


def test_a_credit_in_another_currency_does_not_count_towards_a_withdrawal(user: User) -> None:
    """−3 EUR and −2 INR credited on a held 5 INR CDR: only 2 INR given back in its currency, so the pair stays in
    review (the EUR credit had been counted, and the INR settlement reconciled)."""
    partner = dsp()
    TokenFactory(uid="TOKEN-DISPUTE-1")
    obj = {**ocpi_cdr(partner, "CDR-X", total=(5.0, 5.5), energy_cost=(5.0, 5.5)), "currency": "INR"}
    wrong = processed_with_session(partner, obj)
    base = credit_for(Cdr.objects.get(pk=wrong.pk), "CDR-X-E")
    processed(partner, {**base, "currency": "EUR", "total_cost": {"excl_vat": -3.0, "incl_vat": -3.3}})
    inr = {**credit_for(Cdr.objects.get(pk=wrong.pk), "CDR-X-C"), "total_cost": {"excl_vat": -2.0, "incl_vat": -2.2}}

    credit = processed(partner, inr)

    assert "withdrawn_by_credit" not in credit.audit.flags
    assert "withdrawn_by_credit" not in CdrAudit.objects.get(cdr=wrong).flags
    (settlement,) = [s for s in settlement_compute(partner=partner, period_start=OCTOBER) if s.currency == "INR"]
    assert sorted(c.cdr_id for c in in_review(settlement)) == ["CDR-X", "CDR-X-C"]
