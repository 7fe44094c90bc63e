"""An idempotency key posted before answers a retry of the same entry with that entry, and refuses another entry
(other amounts, accounts or event): `post` and `post_many` had returned the first entry whatever the second asked
for, so a poster reusing a key believed it had booked what it never booked (a settlement payment given a bank
reference used before, with another amount)."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction

from billing.models import LedgerAccount, LedgerEntry, LedgerLine
from billing.services import accounts, ledger
from billing.services.ledger import EntrySpec, LedgerKeyReused, Leg, UnbalancedEntry
from tests.factories import DriverFactory

pytestmark = pytest.mark.django_db

Kind = LedgerAccount.Kind


def books() -> tuple[LedgerAccount, LedgerAccount, LedgerAccount]:
    return (
        ledger.account("driver:1:receivable", "INR", Kind.ASSET),
        ledger.account("cpo:IN*CPA:payable", "INR", Kind.LIABILITY),
        ledger.account("revenue:fees", "INR", Kind.REVENUE),
    )


def charge(key: str = "cdr:1:charge", total: str = "118.00", event: str = "charge", **kw: str) -> EntrySpec:
    driver, cpo, fees = books()
    return EntrySpec(
        event=event,
        legs=[Leg(driver, Decimal(total)), Leg(cpo, -Decimal("100.00")), Leg(fees, Decimal("100.00") - Decimal(total))],
        reference="cdr:1",
        idempotency_key=key,
        **kw,
    )


def post(spec: EntrySpec) -> LedgerEntry:
    return ledger.post(
        event=spec.event, legs=spec.legs, memo=spec.memo, reference=spec.reference, idempotency_key=spec.idempotency_key
    )


def test_a_retry_of_the_same_entry_gets_the_entry_posted_then() -> None:
    first = post(charge())
    driver, cpo, fees = books()
    # The same lines in another order, another memo: the same entry.
    again = ledger.post(
        event="charge",
        legs=[Leg(fees, Decimal("-18.00")), Leg(driver, Decimal("118")), Leg(cpo, Decimal("-100.00"))],
        memo="retried",
        idempotency_key="cdr:1:charge",
    )

    assert again.pk == first.pk
    assert (LedgerEntry.objects.count(), LedgerLine.objects.count()) == (1, 3)


@pytest.mark.parametrize(
    ("changed", "told"),
    [
        ({"total": "120.00"}, r"driver:1:receivable \+120\.00 INR"),  # another amount
        ({"event": "charge_again"}, r"not charge_again \("),  # another event
    ],
    ids=["amount", "event"],
)
def test_another_entry_under_a_key_posted_before_is_refused_naming_the_key(changed: dict[str, str], told: str) -> None:
    first = post(charge())

    with pytest.raises(LedgerKeyReused, match=rf"'cdr:1:charge' was posted before as #{first.pk} charge \(") as caught:
        post(charge(**changed))

    assert caught.match(told)
    assert isinstance(caught.value, UnbalancedEntry)  # callers that refuse a bad entry refuse this one too
    assert (caught.value.key, caught.value.entry.pk) == ("cdr:1:charge", first.pk)
    assert (LedgerEntry.objects.count(), LedgerLine.objects.count()) == (1, 3)
    assert ledger.balance(books()[0]) == Decimal("118.00")


def test_the_same_amounts_on_other_accounts_are_another_entry() -> None:
    driver, cpo, _ = books()
    app = ledger.account("bap:app.example:receivable", "INR", Kind.ASSET)
    ledger.post(event="refund", legs=[Leg(cpo, Decimal("5.00")), Leg(driver, -Decimal("5.00"))], idempotency_key="r:1")

    with pytest.raises(LedgerKeyReused, match=r"bap:app\.example:receivable -5\.00 INR"):
        ledger.post(event="refund", legs=[Leg(cpo, Decimal("5.00")), Leg(app, -Decimal("5.00"))], idempotency_key="r:1")

    assert ledger.balance(app) == 0


def test_a_caller_that_catches_the_refusal_goes_on_in_its_transaction() -> None:
    post(charge())

    with transaction.atomic():
        with pytest.raises(LedgerKeyReused):
            post(charge(total="119.00"))
        post(charge(key="cdr:2:charge"))  # the transaction is still usable: nothing was written, nothing broken

    assert LedgerEntry.objects.count() == 2


def test_post_many_refuses_a_key_posted_before_for_another_entry_and_posts_none() -> None:
    first = post(charge())

    with pytest.raises(LedgerKeyReused, match=rf"'cdr:1:charge' was posted before as #{first.pk}"):
        ledger.post_many([charge(key="cdr:2:charge"), charge(total="120.00")])

    assert list(LedgerEntry.objects.values_list("idempotency_key", flat=True)) == ["cdr:1:charge"]
    again = ledger.post_many([charge(key="cdr:2:charge"), charge()])  # the same entry again: a retry, as before
    assert again[1].pk == first.pk and LedgerEntry.objects.count() == 2


def test_post_many_refuses_two_entries_under_one_key_in_the_same_batch() -> None:
    with pytest.raises(LedgerKeyReused, match=r"'cdr:5:charge' was asked for earlier in the same batch as charge \("):
        ledger.post_many(
            [charge(key="cdr:5:charge"), charge(key="cdr:6:charge"), charge(key="cdr:5:charge", total="1")]
        )

    assert LedgerEntry.objects.count() == 0
    twins = ledger.post_many([charge(key="cdr:5:charge"), charge(key="cdr:5:charge")])  # the same twice: one entry
    assert twins[0].pk == twins[1].pk and LedgerEntry.objects.count() == 1


def test_a_settlement_reference_booked_for_an_apps_payout_is_refused_for_its_remittance() -> None:
    """The same amount, the same app, the same bank reference, the other direction: another payment. It had been
    told "booked before", the remittance never booked."""
    call_command("settlement_payment", party="bap:app.example", paid="50", currency="INR", reference="U7")

    with pytest.raises(CommandError, match=r"U7: booked before for another payment \(paid bap:app\.example:payable\)"):
        call_command("settlement_payment", party="bap:app.example", received="50", currency="INR", reference="U7")

    assert ledger.balance(accounts.bap_payable("app.example", "INR")) == Decimal("50")
    assert ledger.balance(accounts.bap_receivable("app.example", "INR")) == 0
    out = StringIO()
    call_command(
        "settlement_payment", party="bap:app.example", paid="50.00", currency="INR", reference="U7", stdout=out
    )
    assert "U7: booked before, nothing posted now" in out.getvalue()
    assert LedgerEntry.objects.filter(event__in=("settlement_payout", "remittance")).count() == 1


def test_a_wallet_top_up_reference_used_before_is_refused_for_another_amount() -> None:
    """Another poster on the same rule: `manage.py wallet_top_up` answered the first top-up's balance, silently."""
    driver = DriverFactory(currency="INR", wallet_balance=Decimal("0"))
    call_command("wallet_top_up", driver=driver.pk, amount="500", reference="BANK-1", stdout=StringIO())

    with pytest.raises(CommandError, match=rf"'top-up:{driver.pk}:BANK-1' was posted before"):
        call_command("wallet_top_up", driver=driver.pk, amount="700", reference="BANK-1", stdout=StringIO())

    driver.refresh_from_db()
    assert driver.wallet_balance == Decimal("500")
