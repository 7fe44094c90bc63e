"""Search keeps its tariffs between searches (billing/tariff_cache.py) and never shows one that has changed: a
write of any kind to the tariffs (tariff_put, the ORM, raw SQL, a delete, a truncate) moves the generation the
search's statement reads, and the next search reads them again. PostgreSQL only: elsewhere nothing is kept."""

from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from beckn.catalogue import SearchFilters, search
from billing import tariff_cache
from billing.models import Tariff
from billing.services import tariff_put
from emsp.models import Partner
from emsp.services.catalogue import locations_store
from tests.beckn.bap import TARIFF
from tests.factories import ocpi_location

pytestmark = [
    pytest.mark.django_db(transaction=False),
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the tariffs' generation is PostgreSQL's"),
]
HERE = SearchFilters(latitude=12.97, longitude=77.59, radius_m=5000)


def price_of(energy: str, tariff_id: str = "T1", **extra: object) -> dict[str, object]:
    component = {"type": "ENERGY", "price": energy, "vat": 18, "step_size": 1}
    return {**TARIFF, "id": tariff_id, "elements": [{"price_components": [component]}], **extra}


@pytest.fixture
def cpo() -> Partner:
    partner = Partner.objects.create(name="CPO A", country_code="IN", party_id="CPA", state="CONNECTED")
    location = ocpi_location("IN", "CPA", "LOC1", evses=2, latitude=12.97, longitude=77.59)
    for evse in location["evses"]:  # type: ignore[union-attr]
        evse["connectors"][0]["tariff_ids"] = ["T1"]
    locations_store(partner, [location])
    return partner


def prices() -> set[Decimal | None]:
    return {hit.energy_price for hit in search(HERE)}


def tariff_statements(run: object) -> int:
    with CaptureQueriesContext(connection) as queries:
        run()  # type: ignore[operator]
    # search's own statement names the table bare, the plain-SQL reads (emsp/rows.py) quoted
    return sum(re.search(r'FROM "?billing_tariff"? t\b', q["sql"]) is not None for q in queries.captured_queries)


def test_a_second_search_reads_no_tariffs(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    assert tariff_statements(prices) == 1
    assert tariff_statements(prices) == 0
    assert prices() == {Decimal("18")}


def test_a_tariff_put_shows_in_the_next_search(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    assert prices() == {Decimal("18")}
    tariff_put(cpo, price_of("21", last_updated="2026-02-01T00:00:00Z"))
    assert prices() == {Decimal("21")}


def test_writes_outside_tariff_put_show_too(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    assert prices() == {Decimal("18")}
    Tariff.objects.update(data=price_of("19"))  # the ORM
    assert prices() == {Decimal("19")}
    with connection.cursor() as cursor:  # raw SQL
        cursor.execute("UPDATE billing_tariff SET data = %s::jsonb", ['{"elements": []}'])
    assert prices() == {None}
    Tariff.objects.all().delete()
    assert prices() == {None}


def test_a_tariff_missing_when_kept_is_found_once_it_arrives(cpo: Partner) -> None:
    assert prices() == {None}  # T1 kept as "no such tariff"
    tariff_put(cpo, price_of("18"))
    assert prices() == {Decimal("18")}


def test_a_truncate_moves_the_generation(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    assert prices() == {Decimal("18")}
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction holds deferred key checks
        cursor.execute("TRUNCATE billing_tariff")
    assert prices() == {None}


def test_validity_is_checked_on_every_use(cpo: Partner) -> None:
    now = timezone.now()
    end = now + timedelta(hours=1)
    tariff_put(cpo, price_of("18", end_date_time=end.isoformat()))
    assert {h.energy_price for h in search(HERE, now=now)} == {Decimal("18")}
    with CaptureQueriesContext(connection) as queries:
        later = {h.energy_price for h in search(HERE, now=end + timedelta(seconds=1))}
    assert later == {None}
    assert not any("FROM billing_tariff t" in q["sql"] for q in queries.captured_queries)  # from the keep


def test_a_generation_rolled_back_is_never_seen_again(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    assert prices() == {Decimal("18")}
    with pytest.raises(RuntimeError), transaction.atomic():
        tariff_put(cpo, price_of("99", last_updated="2026-03-01T00:00:00Z"))
        assert prices() == {Decimal("99")}  # kept under the rolled-back generation
        raise RuntimeError
    assert prices() == {Decimal("18")}
    tariff_put(cpo, price_of("21", last_updated="2026-02-01T00:00:00Z"))  # the next generation is new, not reused
    assert prices() == {Decimal("21")}


def test_without_the_generation_row_nothing_is_kept(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {tariff_cache.TABLE}")  # noqa: S608
    assert tariff_statements(prices) == 1
    assert tariff_statements(prices) == 1
    tariff_put(cpo, price_of("21", last_updated="2026-02-01T00:00:00Z"))  # the row comes back with a write
    assert prices() == {Decimal("21")}
    assert tariff_statements(prices) == 0


def test_tariff_put_takes_the_generation_lock_before_the_tariff_row(cpo: Partner) -> None:
    """Writers take the generation's lock first (tariff_put bumps before its SELECT … FOR UPDATE), so a writer
    holding a tariff's row never waits for the generation: what tariff_put runs, in order, the bump once."""
    with CaptureQueriesContext(connection) as queries:
        tariff_put(cpo, price_of("18"))
    statements = [q["sql"] for q in queries.captured_queries]
    bumps = [i for i, s in enumerate(statements) if tariff_cache.TABLE in s]
    lock = next(i for i, s in enumerate(statements) if "FOR UPDATE" in s)
    assert len(bumps) == 1 and bumps[0] < lock


def test_any_code_locking_tariff_rows_takes_the_generation_lock_first(cpo: Partner) -> None:
    """Not only tariff_put: every select_for_update on tariffs moves the generation first (and so holds its lock
    before any tariff row's), whatever the filter."""
    tariff_put(cpo, price_of("18"))
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        assert len(Tariff.objects.select_for_update().filter(partner=cpo)) == 1
        list(Tariff.objects.filter(partner=cpo).select_for_update(of=("self",)))
    statements = [q["sql"] for q in queries.captured_queries]
    locks = [i for i, s in enumerate(statements) if "FOR UPDATE" in s]
    bumps = [i for i, s in enumerate(statements) if tariff_cache.TABLE in s]
    assert len(locks) == 2 and len(bumps) == 2 and all(b < lock for b, lock in zip(bumps, locks, strict=True))


def test_kept_per_connection(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    prices()
    kept = connection._kept_tariffs  # type: ignore[attr-defined]
    other: list[object] = []

    def in_a_thread() -> None:
        from django.db import connection as theirs

        other.append(getattr(theirs, "_kept_tariffs", None))
        theirs.close()

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert other == [None] and kept.by_key


@pytest.mark.django_db(transaction=True)
def test_a_write_committed_by_another_connection_shows(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    assert prices() == {Decimal("18")}
    assert tariff_statements(prices) == 0  # kept

    def elsewhere() -> None:
        from django.db import connection as theirs

        tariff_put(cpo, price_of("23", last_updated="2026-02-01T00:00:00Z"))
        theirs.close()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    assert prices() == {Decimal("23")}


def test_a_new_connection_starts_with_nothing_kept(cpo: Partner) -> None:
    tariff_put(cpo, price_of("18"))
    assert tariff_statements(prices) == 1
    assert tariff_statements(prices) == 0
    kept = connection._kept_tariffs  # type: ignore[attr-defined]
    kept.on = object()  # as after a reconnect: another driver connection than the one they were read on
    assert tariff_statements(prices) == 1


def test_nothing_is_kept_longer_than_keep_seconds(cpo: Partner, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write the generation can't see (here: with the trigger disabled; in life a restore under a pooler or a
    failover that lost commits) shows within KEEP_SECONDS."""
    clock = [1000.0]
    monkeypatch.setattr(tariff_cache.time, "monotonic", lambda: clock[0])
    tariff_put(cpo, price_of("18"))
    assert prices() == {Decimal("18")}
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the test's transaction holds deferred key checks
        cursor.execute(f"ALTER TABLE billing_tariff DISABLE TRIGGER {tariff_cache.TABLE}_bump")
        cursor.execute("UPDATE billing_tariff SET data = %s::jsonb", [json.dumps(price_of("99"))])
        cursor.execute(f"ALTER TABLE billing_tariff ENABLE TRIGGER {tariff_cache.TABLE}_bump")
    clock[0] += tariff_cache.KEEP_SECONDS - 1
    assert prices() == {Decimal("18")}  # the generation did not move: kept
    clock[0] += 2
    assert prices() == {Decimal("99")}


def test_the_trigger_finds_its_table_under_another_search_path(cpo: Partner) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL search_path TO pg_catalog")
        cursor.execute("UPDATE public.billing_tariff SET tariff_id = tariff_id")
        cursor.execute("RESET search_path")


def selected(cpo: Partner) -> tuple[Decimal | None, Decimal]:
    """What a select works out for LOC1's first connector: its item's energy price and its quote's total."""
    from beckn.catalogue import find_item
    from billing.services.driver_pricing import quote_charge
    from emsp.models import Connector

    connector = Connector.objects.select_related("evse__location").order_by("pk").first()
    hit = find_item("IN*CPA", f"LOC1/{connector.evse.uid}/{connector.connector_id}")
    quote = quote_charge(evse=hit.evse, connector=hit.connector, arrival=timezone.now(), energy_kwh=Decimal("10"))
    return hit.energy_price, quote.total_incl_vat


def numeric(tariff: dict[str, object]) -> dict[str, object]:
    """The tariff with its prices as JSON numbers (the quote's engine takes nothing else)."""
    for element in tariff["elements"]:  # type: ignore[attr-defined]
        for component in element["price_components"]:
            component["price"] = int(component["price"])
    return tariff


def test_a_select_reads_its_tariff_from_the_keep_and_sees_a_new_one(cpo: Partner) -> None:
    """A select's item and its quote: the tariff read once for both (the item's statement reads the generation),
    none on the next select, read again after a tariff_put, whose price shows at once in the item and the quote."""
    tariff_put(cpo, numeric(price_of("18")))
    first: list[tuple[Decimal | None, Decimal]] = []
    assert tariff_statements(lambda: first.append(selected(cpo))) == 1
    assert tariff_statements(lambda: first.append(selected(cpo))) == 0
    assert first[0] == first[1] and first[0][0] == Decimal("18")
    tariff_put(cpo, numeric(price_of("21", last_updated="2026-02-01T00:00:00Z")))
    after: list[tuple[Decimal | None, Decimal]] = []
    assert tariff_statements(lambda: after.append(selected(cpo))) == 1
    assert after[0][0] == Decimal("21") and after[0][1] > first[0][1]


def test_the_trigger_moves_its_own_generation_not_one_in_a_schema_named_after_the_role(cpo: Partner) -> None:
    """PostgreSQL's default search_path reads a schema named after the role first ("$user", public): a
    generation table there must not take the bump (billing/0012 names the schema)."""
    tariff_put(cpo, price_of("18"))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_user)")
        role = cursor.fetchone()[0]
        cursor.execute("SELECT n FROM public.billing_tariff_generation")
        before = cursor.fetchone()[0]
        cursor.execute(f"CREATE SCHEMA {role}")
        decoy = f"{role}.billing_tariff_generation"
        cursor.execute(f"CREATE TABLE {decoy} (LIKE public.billing_tariff_generation INCLUDING ALL)")
        cursor.execute("UPDATE public.billing_tariff SET tariff_id = tariff_id")
        cursor.execute("SELECT n FROM public.billing_tariff_generation")
        after = cursor.fetchone()[0]
        cursor.execute(f"DROP SCHEMA {role} CASCADE")
    assert after != before


def test_the_keep_is_bounded_by_the_tariffs_elements_not_only_their_number(
    cpo: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tariff may have 1,000 elements (a week of quarter-hour prices measured 1.6 MB kept): 2,000 keys of
    those had been kept per connection. Beyond MAX_KEPT_ELEMENTS the keep starts again."""
    monkeypatch.setattr(tariff_cache, "MAX_KEPT_ELEMENTS", 3)
    tariff_put(cpo, price_of("18"))  # one element: within the bound, kept
    assert tariff_statements(prices) == 1
    assert tariff_statements(prices) == 0
    component = {"type": "ENERGY", "price": "18", "vat": 18, "step_size": 1}
    hours = [
        {"price_components": [component], "restrictions": {"start_time": f"{h:02d}:00", "end_time": f"{h + 1:02d}:00"}}
        for h in range(5)
    ]
    tariff_put(cpo, {**price_of("18"), "elements": hours})
    assert tariff_statements(prices) == 1
    assert connection._kept_tariffs.elements == 5  # type: ignore[attr-defined]
    assert tariff_statements(prices) == 1  # over the bound: read again, not kept on
    assert prices() == {Decimal("18")}
