"""Staff bill a CDR the audit held for review from the audits' list (billing/services/held_cdrs.py): a second CDR
of a charge, or a CPO's total with VAT below the one without, once staff decide it is a real bill. A confirmation
page first; billed once, however often it is clicked or by however many staff at once; recorded against the staff
member; refused, with a message, for any other CDR and for staff without the permission to change audits."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import BapAgreement, Cdr, CdrAudit, DriverReceipt, LedgerEntry, Payment
from billing.services import held_cdrs
from billing.services.audit import cdr_process
from emsp.models import Booking, Driver, Partner, StaffAction
from emsp.services.sessions import session_put
from tests.beckn.bap import BAP_ID
from tests.beckn.conftest import _fresh_registry_cache, bap, network  # noqa: F401 (the Beckn journey's fixtures)
from tests.beckn.test_actions import last
from tests.beckn.test_payments_journey import BILL, assert_books_balance, balance
from tests.billing.factories import CdrAuditFactory, CdrFactory, CreditCdrFactory
from tests.billing.test_cdr_booking_links import (
    CORRECTED,
    audit_of,
    cdr_of,
    charged,
    credit_for,
    one_session,
    session_of,
    started,
    store,
    wallet,
    wallet_driver,
)
from tests.billing.test_settlement_review_fixes import _run, _until, needs_postgres
from tests.factories import PartnerFactory, TokenFactory

pytestmark = pytest.mark.django_db

AUDITS = "admin:billing_cdraudit_changelist"
ACTION = "bill_held_cdr"


def login(*permissions: str, superuser: bool = False, name: str = "ops") -> Client:
    if superuser:
        user = User.objects.create_superuser("boss", "boss@example.com", "pw-123456-x")
    else:
        user = User.objects.create_user(name, password="pw-123456-x", is_staff=True)
        for codename in permissions:
            user.user_permissions.add(Permission.objects.get(content_type__app_label="billing", codename=codename))
    client = Client()
    client.force_login(user)
    return client


def bill(client: Client, *audits: CdrAudit, confirm: bool = True) -> Any:
    data = {"action": ACTION, "_selected_action": [a.pk for a in audits]} | ({"confirm": "yes"} if confirm else {})
    return client.post(reverse(AUDITS), data, follow=True)


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def held_second_cdr(bap: Any, network: Partner) -> CdrAudit:  # noqa: F811
    """The journey's order charged and billed (CDR-1, 463.27 from the driver's wallet of 1000), then a second
    CDR of its charge (CDR-2, 366.98 for the driver) the audit holds as a second bill."""
    wallet_driver()
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    store(bap, network, {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354}})
    held = audit_of("CDR-2")
    assert held.status == CdrAudit.Status.REVIEW and "duplicate_session_cdr" in held.flags
    return held


def books() -> tuple[int, int, int]:
    return LedgerEntry.objects.count(), Payment.objects.count(), DriverReceipt.objects.count()


# --- billed once ----------------------------------------------------------------------------------------------


@pytest.mark.we_collect
def test_it_bills_a_held_second_cdr_of_a_booking_with_a_balance_payment_and_records_who(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    held = held_second_cdr(bap, network)
    driver = Driver.objects.get()
    boss = login(superuser=True)
    assert wallet(driver) == Decimal("1000") - BILL

    with bap.capture(execute=True):
        response = bill(boss, held)

    receipt = DriverReceipt.objects.get(cdr__cdr_id="CDR-2")
    assert response.status_code == 200
    assert texts(response) == [f"CDR CDR-2: billed the driver {CORRECTED} INR (receipt {receipt.pk})."]
    assert receipt.total_incl_vat == CORRECTED and receipt.driver_id == driver.pk
    # As payments.bill does for a booking's further bill: a balance payment of its own, taken from the wallet.
    assert wallet(driver) == Decimal("1000") - BILL - CORRECTED
    assert Payment.objects.get(purpose="balance").captured_minor == 36698
    assert balance(f"driver:{driver.pk}:receivable") == 0
    assert balance("cpo:IN*CPA:payable") == -(Decimal("448.40") + Decimal("354"))  # both charges owed the CPO
    assert Booking.objects.get().state == Booking.State.SETTLED
    assert_books_balance()
    # The app is told the order's bill: both charges (it had been told the second alone).
    assert Decimal(last(bap, "on_update")["message"]["order"]["quote"]["price"]["value"]) == BILL + CORRECTED
    # Audited again as the bill it now is (the journey's CDRs have no tariff of ours to price: REVIEW for that
    # alone); who released it, and what it had been held as, is recorded.
    assert audit_of("CDR-2").flags == ["released_by_staff", "no_tariff"]
    entry = LogEntry.objects.get(object_id=str(held.pk))
    assert (entry.user.username, entry.action_flag) == ("boss", CHANGE)
    assert "held as duplicate_session_cdr" in entry.change_message and str(CORRECTED) in entry.change_message
    record = StaffAction.objects.get(verb="bill_held_cdr")
    assert (record.username, record.object_id) == ("boss", str(held.pk))
    assert record.details["receipt"] == receipt.pk


@pytest.mark.we_collect
def test_a_released_cdr_is_a_bill_like_any_and_its_credit_refunds_it(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    """Released, it is a bill like any: a credit CDR for it gives the driver back what it took (it had been
    audited `original_held`, the refund held, as for a CDR that billed nobody)."""
    held = held_second_cdr(bap, network)
    driver = Driver.objects.get()
    with bap.capture(execute=True):
        bill(login(superuser=True), held)
    released = Cdr.objects.get(cdr_id="CDR-2")
    assert "duplicate_session_cdr" not in audit_of("CDR-2").flags
    paid = wallet(driver)

    store(bap, network, credit_for(released, "CDR-2-C"))

    credit = audit_of("CDR-2-C")
    assert credit.status == CdrAudit.Status.CREDIT and "original_held" not in credit.flags
    assert wallet(driver) == paid + CORRECTED
    assert_books_balance()


@pytest.mark.we_collect
def test_a_second_run_says_already_billed_and_books_nothing_more(bap: Any, network: Partner) -> None:  # noqa: F811
    held = held_second_cdr(bap, network)
    driver = Driver.objects.get()
    boss = login(superuser=True)
    with bap.capture(execute=True):
        bill(boss, held)
    before, paid = books(), wallet(driver)

    with bap.capture(execute=True):
        response = bill(boss, held)

    receipt = DriverReceipt.objects.get(cdr__cdr_id="CDR-2")
    assert texts(response) == [f"CDR CDR-2: not billed: already billed (receipt {receipt.pk}, {CORRECTED} INR)."]
    assert books() == before and wallet(driver) == paid
    assert audit_of("CDR-2").flags == ["released_by_staff", "no_tariff"]
    assert LogEntry.objects.filter(object_id=str(held.pk)).count() == 1


def test_it_bills_an_rfid_charge_whose_vat_total_is_below_the_net_to_the_drivers_account() -> None:
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    token = TokenFactory(uid="TOKEN000001")
    cdr = CdrFactory(
        partner=partner, currency="INR", total_cost_excl_vat=Decimal("100"), total_cost_incl_vat=Decimal("90")
    )
    cdr_process(cdr.pk)
    held = audit_of(cdr.cdr_id)
    assert "incl_vat_below_excl_vat" in held.flags and not DriverReceipt.objects.exists()

    response = bill(login(superuser=True), held)

    receipt = DriverReceipt.objects.get(cdr=cdr)
    assert texts(response) == [f"CDR {cdr.cdr_id}: billed the driver 90.00 INR (receipt {receipt.pk})."]
    # The CPO's figures as it sent them (staff confirmed them): no fee under the CPO's default terms.
    assert (receipt.driver_id, receipt.cpo_cost_excl_vat, receipt.cpo_vat) == (token.driver_id, 100, -10)
    assert balance(f"driver:{token.driver_id}:receivable") == Decimal("90")  # the account is invoiced
    assert_books_balance()


# --- refused --------------------------------------------------------------------------------------------------

FOREIGN = {"country_code": "DE", "party_id": "TNM", "uid": "TOKEN000001", "type": "RFID"}


def foreign_token() -> CdrAudit:
    cdr = CdrFactory(data={"cdr_token": FOREIGN}, processed_at=timezone.now())
    return CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.REVIEW, flags=["foreign_token", "duplicate_session_cdr"])


def credit_of_unknown_original() -> CdrAudit:
    cdr = CdrFactory(
        credit=True, credit_reference_id="GONE", total_cost_excl_vat=Decimal("-10"), processed_at=timezone.now()
    )
    return CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.REVIEW, flags=["unknown_original"])


def not_processed() -> CdrAudit:
    cdr = CdrFactory(processed_at=None)
    return CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.REVIEW, flags=["duplicate_session_cdr"])


def not_held() -> CdrAudit:
    cdr = CdrFactory(processed_at=timezone.now())
    return CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.REVIEW, flags=["no_tariff"])


def credited_by_the_cpo() -> CdrAudit:
    cdr = CdrFactory(processed_at=timezone.now())
    CreditCdrFactory(credited_cdr=cdr)
    return CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.REVIEW, flags=["duplicate_session_cdr"])


def no_token_of_ours() -> CdrAudit:
    cdr = CdrFactory(processed_at=timezone.now(), token_uid="NOBODY")
    return CdrAuditFactory(cdr=cdr, status=CdrAudit.Status.REVIEW, flags=["incl_vat_below_excl_vat"])


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (foreign_token, "it is held as foreign_token, which staff do not bill from here"),
        (credit_of_unknown_original, "it is a credit CDR: a held refund is not released here"),
        (not_processed, "it is not processed yet: its audit decides first"),
        (not_held, "it is not held (no held flag): nothing to release"),
        (credited_by_the_cpo, "the CPO sent a credit CDR for it"),
        (no_token_of_ours, "its token NOBODY is not one of ours: no driver to bill"),
    ],
)
def test_it_refuses_a_cdr_it_may_not_bill_with_a_message_and_books_nothing(make: Any, why: str) -> None:
    TokenFactory(uid="TOKEN000001")
    audit = make()
    flags = list(audit.flags)

    response = bill(login(superuser=True), audit)

    assert response.status_code == 200
    assert texts(response) == [f"CDR {audit.cdr.cdr_id}: not billed: {why}."]
    assert books() == (0, 0, 0)
    assert CdrAudit.objects.get(pk=audit.pk).flags == flags
    assert not LogEntry.objects.exists() and not StaffAction.objects.exists()


def test_a_matched_audit_is_refused() -> None:
    audit = CdrAuditFactory(cdr=CdrFactory(processed_at=timezone.now()), status=CdrAudit.Status.MATCHED, flags=[])
    assert held_cdrs.bill_held_cdr(audit.cdr_id, User.objects.create_user("x")).reason == (
        "its audit is MATCHED, not held for review"
    )


# --- the confirmation page, and who may ------------------------------------------------------------------------


@pytest.mark.we_collect
def test_the_confirmation_page_lists_the_cdrs_and_amounts_and_bills_nothing(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    held = held_second_cdr(bap, network)
    refused = foreign_token()
    before = books()

    response = bill(login(superuser=True), held, refused, confirm=False)

    assert response.status_code == 200
    assert "admin/billing/cdraudit/bill_held_confirmation.html" in [t.name for t in response.templates]
    page = response.content.decode()
    assert "CDR-2" in page and "duplicate_session_cdr" in page and f"{CORRECTED} INR" in page
    assert "To be billed" in page and "Yes, bill 1 CDR" in page
    assert "Not billed: it is held as foreign_token" in page
    assert '<input type="hidden" name="confirm" value="yes">' in page
    assert books() == before and not DriverReceipt.objects.filter(cdr__cdr_id="CDR-2").exists()


@pytest.mark.we_collect
def test_staff_without_the_permission_to_change_audits_can_not_bill(bap: Any, network: Partner) -> None:  # noqa: F811
    held = held_second_cdr(bap, network)
    viewer = login("view_cdraudit", "view_cdr")
    before = books()

    assert ACTION not in viewer.get(reverse(AUDITS)).content.decode()  # not offered
    bill(viewer, held)
    bill(viewer, held, confirm=False)

    assert books() == before and not DriverReceipt.objects.filter(cdr__cdr_id="CDR-2").exists()
    changer = login("view_cdraudit", "change_cdraudit", name="changer")
    assert ACTION in changer.get(reverse(AUDITS)).content.decode()  # the change permission is what it takes


# --- two staff members at once (PostgreSQL: two transactions) --------------------------------------------------


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_staff_billing_one_held_cdr_at_once_bill_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first has billed and not committed when the second asks: the second waits on the CDR's row and finds
    the receipt."""
    partner = PartnerFactory(country_code="IN", party_id="CPA")
    token = TokenFactory(uid="TOKEN000001")
    session = one_session(partner)
    for cdr_id in ("CDR-1", "CDR-2"):
        cdr = CdrFactory(partner=partner, cdr_id=cdr_id, currency="INR", session_id="S-1", charging_session=session)
        cdr_process(cdr.pk)
    held = audit_of("CDR-2")
    assert "duplicate_session_cdr" in held.flags
    one, other = (User.objects.create_user(name) for name in ("one", "other"))
    reached, real = threading.Event(), held_cdrs._record_release

    def then_hold(*args: Any) -> None:
        real(*args)
        reached.set()
        _until(threading.Event())

    monkeypatch.setattr(held_cdrs, "_record_release", then_hold)
    first, first_out = _run(lambda: held_cdrs.bill_held_cdr(held.cdr_id, one))
    assert reached.wait(10)
    second, second_out = _run(lambda: held_cdrs.bill_held_cdr(held.cdr_id, other))
    for thread in (first, second):
        thread.join(20)

    assert "error" not in first_out and "error" not in second_out, (first_out, second_out)
    assert first_out["result"].billed and not second_out["result"].billed
    assert second_out["result"].reason.startswith("already billed")
    receipt = DriverReceipt.objects.get(cdr__cdr_id="CDR-2")
    assert balance(f"driver:{token.driver_id}:receivable") == 2 * receipt.total_incl_vat  # two charges, each once
    assert StaffAction.objects.filter(verb="bill_held_cdr").count() == 1


def test_a_second_bill_of_an_order_the_app_collects_is_refused(bap: Any, network: Partner) -> None:  # noqa: F811
    """The app's payment carries one bill: a second one would replace the first there while both stood on what
    the app owes us (it would collect 366.98 of 830.25)."""
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True)
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    store(bap, network, {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 354}})
    before = books()

    with bap.capture(execute=True):
        response = bill(login(superuser=True), audit_of("CDR-2"))

    assert texts(response) == [
        "CDR CDR-2: not billed: the app collects this order and was billed for it once: ask the app for a further "
        "bill by hand."
    ]
    assert books() == before


@pytest.mark.we_collect
def test_a_release_overrules_only_the_holds_staff_were_shown(bap: Any, network: Partner) -> None:  # noqa: F811
    """CDR-1 held for its VAT, the CPO's CDR-2 held as its second bill; staff bill CDR-2, then CDR-1, shown only
    its VAT hold: now a second bill of the charge, it stays held (it had been billed, the driver paying twice)."""
    driver = wallet_driver()
    booking = started(bap)
    with bap.capture(execute=True):
        session_put(network, session_of(booking, "S-1"))
    store(bap, network, cdr_of(booking, "CDR-1", session_id="S-1", excl=380, incl=300))
    store(bap, network, cdr_of(booking, "CDR-2", session_id="S-1", excl=300, incl=354))
    assert "incl_vat_below_excl_vat" in audit_of("CDR-1").flags
    assert "duplicate_session_cdr" in audit_of("CDR-2").flags
    boss = login(superuser=True)
    with bap.capture(execute=True):
        bill(boss, audit_of("CDR-2"))
    paid = wallet(driver)

    with bap.capture(execute=True):
        response = bill(boss, audit_of("CDR-1"))

    assert texts(response) == ["CDR CDR-1: not billed: audited again, it is held as duplicate_session_cdr."]
    assert not DriverReceipt.objects.filter(cdr__cdr_id="CDR-1").exists()
    assert wallet(driver) == paid


def test_a_corrected_cdr_of_an_order_the_app_collects_is_billed_once_its_first_was_voided(
    bap: Any,  # noqa: F811
    network: Partner,  # noqa: F811
) -> None:
    """The CPO voided CDR-1 with a credit CDR; its corrected CDR-2, held for its VAT, is the app's one bill."""
    BapAgreement.objects.create(bap_id=BAP_ID, collects=True)
    charged(bap, network)
    first = Cdr.objects.get(cdr_id="CDR-1")
    store(bap, network, credit_for(first, "CDR-1-C"))
    store(bap, network, {**first.data, "id": "CDR-2", "total_cost": {"excl_vat": 300, "incl_vat": 290}})
    assert "incl_vat_below_excl_vat" in audit_of("CDR-2").flags

    with bap.capture(execute=True):
        response = bill(login(superuser=True), audit_of("CDR-2"))

    assert DriverReceipt.objects.filter(cdr__cdr_id="CDR-2").exists(), texts(response)
