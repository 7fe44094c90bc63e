"""post_many, the ledger's batch path: the same entries as post, refused and idempotent the same way; the account
cache of a batch; and on PostgreSQL the once-per-entry balance check (billing/migrations/0007)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from billing.models import LedgerAccount, LedgerEntry, LedgerLine
from billing.services import ledger
from billing.services.ledger import EntrySpec, Leg, UnbalancedEntry

pytestmark = pytest.mark.django_db

Kind = LedgerAccount.Kind
postgres_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's own guards")


def books() -> tuple[LedgerAccount, LedgerAccount, LedgerAccount, LedgerAccount]:
    return (
        ledger.account("driver:1:receivable", "INR", Kind.ASSET),
        ledger.account("cpo:IN*CPA:payable", "INR", Kind.LIABILITY),
        ledger.account("revenue:fees", "INR", Kind.REVENUE),
        ledger.account("clearing:razorpay", "INR", Kind.ASSET),
    )


def charge(n: int, total: str = "118.00", **kw: object) -> EntrySpec:
    driver, cpo, fees, _ = books()
    return EntrySpec(
        event="charge",
        legs=[Leg(driver, Decimal(total)), Leg(cpo, -Decimal("100.00")), Leg(fees, Decimal("100.00") - Decimal(total))],
        reference=f"cdr:{n}",
        idempotency_key=f"cdr:{n}:charge",
        **kw,  # type: ignore[arg-type]
    )


def capture(n: int, amount: str = "118.00") -> EntrySpec:
    driver, _, _, clearing = books()
    return EntrySpec(
        event="capture",
        legs=[Leg(clearing, Decimal(amount)), Leg(driver, -Decimal(amount))],
        reference=f"payment:{n}",
        idempotency_key=f"payment:{n}:capture",
    )


def lines_of(entry: LedgerEntry) -> list[tuple[str, int]]:
    return sorted(entry.lines.values_list("account__code", "amount_minor"))


def test_it_posts_the_entries_post_would_in_order() -> None:
    posted = ledger.post_many([charge(1), capture(1), charge(2, total="59.50")])
    assert [e.event for e in posted] == ["charge", "capture", "charge"]
    assert all(e.pk for e in posted) and LedgerEntry.objects.count() == 3
    single = ledger.post(event="charge", legs=charge(3).legs, reference="cdr:3", idempotency_key="cdr:3:charge")
    assert lines_of(posted[0]) == lines_of(single)
    assert lines_of(posted[2]) == [
        ("cpo:IN*CPA:payable", -10000),
        ("driver:1:receivable", 5950),
        ("revenue:fees", 4050),
    ]
    assert posted[1].reference == "payment:1" and posted[1].idempotency_key == "payment:1:capture"
    assert sum(ledger.trial_balance("INR").values()) == 0


def test_one_unbalanced_entry_posts_none_of_them() -> None:
    driver, cpo, _, _ = books()
    skewed = EntrySpec(event="charge", legs=[Leg(driver, Decimal("1.00")), Leg(cpo, Decimal("-0.99"))])
    with pytest.raises(UnbalancedEntry, match=r"add up to 0\.01 INR"):
        ledger.post_many([charge(1), skewed, capture(1)])
    with pytest.raises(UnbalancedEntry, match="more decimals"):
        ledger.post_many([charge(2, total="118.001")])
    assert not LedgerEntry.objects.exists() and not LedgerLine.objects.exists()


def test_keys_already_used_post_nothing_again() -> None:
    first = ledger.post_many([charge(1), capture(1)])
    again = ledger.post_many([charge(1), capture(1), charge(2)])
    assert [e.pk for e in again[:2]] == [e.pk for e in first]
    assert LedgerEntry.objects.count() == 3 and LedgerLine.objects.count() == 3 + 2 + 3
    twice = ledger.post_many([charge(7), charge(7)])  # the same key twice in one batch: one entry
    assert twice[0].pk == twice[1].pk and LedgerEntry.objects.filter(idempotency_key="cdr:7:charge").count() == 1


def test_entries_without_keys_are_each_posted() -> None:
    driver, cpo, _, _ = books()
    spec = EntrySpec(event="adjustment", legs=[Leg(driver, Decimal("5")), Leg(cpo, Decimal("-5"))])
    posted = ledger.post_many([spec, spec])
    assert posted[0].pk != posted[1].pk and LedgerLine.objects.count() == 4


def test_many_entries_go_in_a_few_statements() -> None:
    specs = [s for n in range(200) for s in (charge(n), capture(n))]
    books()
    with CaptureQueriesContext(connection) as queries:
        ledger.post_many(specs)
    inserts = [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert LedgerEntry.objects.count() == 400 and LedgerLine.objects.count() == 200 * 5
    assert len(inserts) <= (2 if connection.vendor == "postgresql" else 10)  # SQLite splits at 999 parameters


@pytest.mark.django_db(transaction=True)
def test_a_batch_remembers_accounts_only_once_committed() -> None:
    with ledger.cached_accounts():
        with pytest.raises(RuntimeError), transaction.atomic():
            ledger.account("driver:9:receivable", "INR", Kind.ASSET)
            raise RuntimeError("rolled back")
        assert not LedgerAccount.objects.filter(code="driver:9:receivable").exists()
        opened = ledger.account("driver:9:receivable", "INR", Kind.ASSET)  # not remembered from the rollback
        with CaptureQueriesContext(connection) as queries:
            again = ledger.account("driver:9:receivable", " inr ", Kind.ASSET)
        assert again.pk == opened.pk and len(queries) == 0
    with CaptureQueriesContext(connection) as queries:
        ledger.account("driver:9:receivable", "INR", Kind.ASSET)
    assert len(queries) == 1  # outside a batch every call reads the database, as before


@postgres_only
def test_postgresql_refuses_lines_added_to_a_posted_entry() -> None:
    driver, cpo, _, _ = books()
    entry = ledger.post_many([charge(1)])[0]
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        LedgerLine.objects.bulk_create([LedgerLine(entry=entry, account=driver, amount_minor=1)])
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        skewed = LedgerEntry.objects.create(event="skewed")
        LedgerLine.objects.bulk_create(
            [
                LedgerLine(entry=skewed, account=driver, amount_minor=100),
                LedgerLine(entry=skewed, account=cpo, amount_minor=-99),
            ]
        )
    assert lines_of(entry) == [("cpo:IN*CPA:payable", -10000), ("driver:1:receivable", 11800), ("revenue:fees", -1800)]


@postgres_only
def test_postgresql_refuses_an_entry_left_without_lines() -> None:
    with pytest.raises(IntegrityError, match="fewer than two lines"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ledger_entry_balanced IMMEDIATE")
        LedgerEntry.objects.create(event="empty")
    assert not LedgerEntry.objects.filter(event="empty").exists()
