"""The ledger core (issue 12, point 1): balanced entries in minor units, immutable, idempotent; balances, the
trial balance and statements read from the lines; PostgreSQL itself refuses what `post` would."""

from __future__ import annotations

import contextvars
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import IntegrityError, InternalError, connection, transaction
from django.utils import timezone

from billing.models import LedgerAccount, LedgerEntry, LedgerLine
from billing.services import ledger
from billing.services.ledger import Leg, UnbalancedEntry

pytestmark = pytest.mark.django_db

Kind = LedgerAccount.Kind


def accounts(currency: str = "INR") -> tuple[LedgerAccount, LedgerAccount, LedgerAccount, LedgerAccount]:
    return (
        ledger.account("driver:1:receivable", currency, Kind.ASSET),
        ledger.account("cpo:IN*CPA:payable", currency, Kind.LIABILITY),
        ledger.account("revenue:fees", currency, Kind.REVENUE),
        ledger.account("tax:GST-18", currency, Kind.LIABILITY),
    )


def charge(total: str = "118.00", cpo: str = "90.00", fee: str = "10.00", tax: str = "18.00", **kw: str) -> LedgerEntry:
    driver, cpo_payable, fees, gst = accounts()
    return ledger.post(
        event="charge",
        legs=[
            Leg(driver, Decimal(total)),
            Leg(cpo_payable, -Decimal(cpo)),
            Leg(fees, -Decimal(fee)),
            Leg(gst, -Decimal(tax)),
        ],
        reference="booking:1",
        **kw,
    )


def test_a_balanced_entry_is_kept_in_minor_units_and_read_back_exactly() -> None:
    entry = charge()
    assert sorted(entry.lines.values_list("amount_minor", flat=True)) == [-9000, -1800, -1000, 11800]
    driver, cpo_payable, _, _ = accounts()
    assert ledger.balance(driver) == Decimal("118.00")
    assert ledger.balance(cpo_payable) == Decimal("-90.00")
    books = ledger.trial_balance("INR")
    assert books == {
        "cpo:IN*CPA:payable": Decimal("-90"),
        "driver:1:receivable": Decimal("118"),
        "revenue:fees": Decimal("-10"),
        "tax:GST-18": Decimal("-18"),
    }
    assert sum(books.values()) == 0


@pytest.mark.parametrize(
    ("legs", "why"),
    [
        ([("118.00", 0), ("-90.00", 1)], "add up to 28.00 INR"),
        ([("118.00", 0)], "at least two lines"),
        ([("10.005", 0), ("-10.005", 1)], "more decimals than INR"),
        ([("0", 0), ("0", 1)], "zero"),
        ([("1E+20", 0), ("-1E+20", 1)], "beyond any charge"),
    ],
)
def test_what_does_not_balance_or_is_inexact_is_refused_and_nothing_is_posted(
    legs: list[tuple[str, int]], why: str
) -> None:
    books = accounts()
    with pytest.raises(UnbalancedEntry, match=why):
        ledger.post(event="charge", legs=[Leg(books[i], Decimal(a)) for a, i in legs])
    assert not LedgerEntry.objects.exists() and not LedgerLine.objects.exists()


def test_floats_and_mixed_currencies_are_refused() -> None:
    inr, _, fees, _ = accounts("INR")
    eur = ledger.account("revenue:fees", "EUR", Kind.REVENUE)
    with pytest.raises(UnbalancedEntry, match="Decimal"):
        ledger.post(event="x", legs=[Leg(inr, 1.5), Leg(fees, -1.5)])  # type: ignore[arg-type]
    with pytest.raises(UnbalancedEntry, match="one currency"):
        ledger.post(event="x", legs=[Leg(inr, Decimal("1")), Leg(eur, Decimal("-1"))])


def test_currencies_keep_their_own_minor_units() -> None:
    jpy_in = ledger.account("driver:1:receivable", "JPY", Kind.ASSET)
    jpy_out = ledger.account("revenue:fees", "JPY", Kind.REVENUE)
    ledger.post(event="fee", legs=[Leg(jpy_in, Decimal("500")), Leg(jpy_out, Decimal("-500"))])
    assert set(LedgerLine.objects.values_list("amount_minor", flat=True)) == {500, -500}
    with pytest.raises(UnbalancedEntry, match="minor units"):
        ledger.post(event="fee", legs=[Leg(jpy_in, Decimal("0.5")), Leg(jpy_out, Decimal("-0.5"))])


def test_the_same_idempotency_key_posts_once() -> None:
    first = charge(idempotency_key="capture:booking:1")
    again = charge(idempotency_key="capture:booking:1")
    assert again.pk == first.pk
    assert LedgerEntry.objects.count() == 1 and LedgerLine.objects.count() == 4


def test_a_correction_is_a_new_entry_and_the_old_one_stays() -> None:
    entry = charge()
    correction = ledger.reverse(entry, memo="CPO credit CDR")
    assert correction.reverses == entry
    assert ledger.reverse(entry).pk == correction.pk  # reversed once
    assert all(v == 0 for v in ledger.trial_balance("INR").values())
    assert LedgerEntry.objects.count() == 2 and LedgerLine.objects.count() == 8
    line = entry.lines.first()
    assert line is not None
    with pytest.raises(ValueError, match="immutable"):
        line.save()
    with pytest.raises(ValueError, match="immutable"):
        line.delete()


def test_a_statement_runs_its_balance_from_the_opening_one() -> None:
    driver = accounts()[0]
    charge()
    later = timezone.now() + timedelta(microseconds=1)
    charge(total="59.00", cpo="45.00", fee="5.00", tax="9.00")
    lines = ledger.statement(driver)
    assert [(s.amount, s.balance) for s in lines] == [(Decimal("118"), Decimal("118")), (Decimal("59"), Decimal("177"))]
    assert [(s.amount, s.balance) for s in ledger.statement(driver, since=later)] == [(Decimal("59"), Decimal("177"))]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the database's own guards are PostgreSQL triggers")
def test_postgresql_refuses_an_unbalanced_entry_and_any_change() -> None:
    driver, cpo_payable, _, _ = accounts()
    entry = charge()
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ledger_entry_balanced IMMEDIATE")
        skewed = LedgerEntry.objects.create(event="skewed")
        LedgerLine.objects.create(entry=skewed, account=driver, amount_minor=100)
    for sql in (
        "UPDATE billing_ledgerline SET amount_minor = amount_minor + 1 WHERE entry_id = %s",
        "DELETE FROM billing_ledgerline WHERE entry_id = %s",
        "UPDATE billing_ledgerentry SET memo = 'changed' WHERE id = %s",
    ):
        with (
            pytest.raises((IntegrityError, InternalError), match="immutable"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql, [entry.pk])
    assert ledger.balance(cpo_payable) == Decimal("-90")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the database's own guards are PostgreSQL triggers")
def test_the_balance_checks_find_their_tables_under_another_search_path() -> None:
    """A session whose search_path holds none of our schema still posts a balanced entry, and is still refused
    an unbalanced one, by the checks themselves (not by a 'relation does not exist' from inside them)."""
    driver, cpo_payable, _, _ = accounts()
    lines = (
        "INSERT INTO public.billing_ledgerline (entry_id, account_id, amount_minor) VALUES (%s, %s, %s), (%s, %s, %s)"
    )

    def post(amounts: tuple[int, int]) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL search_path TO pg_catalog")
            cursor.execute("INSERT INTO public.billing_ledgerentry (posted_at, event, memo, reference) "
                           "VALUES (now(), 'raw', '', '') RETURNING id")  # fmt: skip
            entry = cursor.fetchone()[0]
            cursor.execute(lines, [entry, driver.pk, amounts[0], entry, cpo_payable.pk, amounts[1]])
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the entry's own check, now
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")  # as Django's foreign keys and the check are made
            cursor.execute("RESET search_path")

    post((500, -500))
    assert ledger.balance(cpo_payable) == Decimal("-5")
    with pytest.raises(IntegrityError, match="does not balance"):
        post((500, -400))
    assert ledger.balance(cpo_payable) == Decimal("-5")


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the database's own guards are PostgreSQL triggers")
def test_the_balance_checks_read_the_ledger_s_schema_not_one_named_after_the_role() -> None:
    """PostgreSQL's default search_path reads a schema named after the connecting role first ("$user", public):
    one holding an empty billing_ledgerline must not make the checks refuse a balanced entry of the ledger's."""
    driver, cpo_payable, _, _ = accounts()
    lines = (
        "INSERT INTO public.billing_ledgerline (entry_id, account_id, amount_minor) VALUES (%s, %s, %s), (%s, %s, %s)"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_user)")
        role = cursor.fetchone()[0]
        cursor.execute(f"CREATE SCHEMA {role}")
        cursor.execute(f"CREATE TABLE {role}.billing_ledgerline (LIKE public.billing_ledgerline)")
        cursor.execute("INSERT INTO public.billing_ledgerentry (posted_at, event, memo, reference) "
                       "VALUES (now(), 'raw', '', '') RETURNING id")  # fmt: skip
        entry = cursor.fetchone()[0]
        cursor.execute(lines, [entry, driver.pk, 700, entry, cpo_payable.pk, -700])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the entry's own check, now, with the decoy in place
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        cursor.execute(f"DROP SCHEMA {role} CASCADE")
    assert ledger.balance(cpo_payable) == Decimal("-7")


def test_a_worker_process_remembers_accounts_once_committed(
    django_assert_num_queries: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """billing/tasks.py turns the cache on in each worker process: CDR processing names five accounts per CDR."""
    from billing import tasks

    def in_a_worker() -> None:
        tasks._remember_ledger_accounts()
        with django_capture_on_commit_callbacks(execute=False):  # its transaction never commits: not remembered
            ledger.account("2100-uncommitted", "EUR", LedgerAccount.Kind.LIABILITY)
        with django_assert_num_queries(1):
            ledger.account("2100-uncommitted", "EUR", LedgerAccount.Kind.LIABILITY)
        with django_capture_on_commit_callbacks(execute=True):
            opened = ledger.account("1200-receivable", "EUR", LedgerAccount.Kind.ASSET)
        with django_assert_num_queries(0):
            assert ledger.account("1200-receivable", "EUR", LedgerAccount.Kind.ASSET).pk == opened.pk

    contextvars.Context().run(in_a_worker)
    assert ledger._account_cache.get() is None  # the test's own context never had a cache
