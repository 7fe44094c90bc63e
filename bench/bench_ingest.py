"""Benchmark: bulk pull ingest (normalise + store) of OCPI locations with their EVSEs and connectors.

Usage: .venv/bin/python bench/bench_ingest.py [--copies 5] [--page 500] [--synthetic 20000]
Two corpora go through `ocpi.sync.ingest_page` (normalise, store, record data-quality issues: the code path
of a pull) into a fresh PostgreSQL database:
- spec-valid synthetic locations (2 EVSEs with one CCS2 connector each), as a well-behaved CPO sends them;
- the 16 real CPO feeds from ../shared (copied `--copies` times under new ids), where almost every location
  needs fixing and so also writes data-quality findings.
Targets (issue 15): ≥ 20,000 spec-valid and ≥ 10,000 real-feed locations/s including EVSEs and connectors.

Each page is JSON bytes, as a pull receives it. The baseline of issue 15 runs on the same pages in the same
run: decode with orjson, then binary COPY the same rows (locations, EVSEs, connectors, raw values cast where
the column needs a type, NULL where the cast fails) into tables like ours without normalising anything; the
ratio is printed. The baseline's tables have no indexes and no merge: what it lacks is what an ingest pays
to be right (normalisation, findings, upserts that keep history and ids).
"""

from __future__ import annotations

import argparse
import copy
import gc
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import orjson
from django_env import REPO, machine, setup

TARGETS = {"spec-valid synthetic": 20_000, "real CPO feeds": 10_000}


def load_feeds(copies: int) -> list[dict]:
    feeds = REPO.parent / "shared" / "data" / "ocm" / "ocpi-feeds"
    objects: list[dict] = []
    for path in sorted(feeds.glob("*.json")):
        payload = orjson.loads(path.read_bytes().removeprefix(b"\xef\xbb\xbf"))
        data = payload.get("data", payload) if isinstance(payload, dict) else payload
        objects += [o for o in data if isinstance(o, dict)]
    out = []
    for k in range(copies):
        for obj in objects:
            clone = copy.deepcopy(obj)
            clone["id"] = f"{str(obj.get('id'))[:30]}-c{k}"
            clone["country_code"], clone["party_id"] = "ZZ", "BEN"  # one partner owns the whole corpus
            out.append(clone)
    return out


def synthetic(count: int) -> list[dict]:
    sys.path.insert(0, str(REPO))
    from tests.factories import ocpi_location

    return [
        ocpi_location("ZZ", "BEN", f"SYN{i:06d}", evses=2, latitude=12 + i % 100 / 100, longitude=77 + i % 97 / 100)
        for i in range(count)
    ]


def pages_of(objects: list[dict], page_size: int) -> list[bytes]:
    return [orjson.dumps(objects[i : i + page_size]) for i in range(0, len(objects), page_size)]


def run(label: str, objects: list[dict], page_size: int) -> dict[str, float]:
    from emsp.models import Connector, Evse, Location, Partner
    from ocpi.sync import ingest_page

    Location.objects.all().delete()
    partner, _ = Partner.objects.get_or_create(country_code="ZZ", party_id="BEN", defaults={"name": "Bench"})
    target = TARGETS[label]
    rates = {}
    for step in ("first pull (inserts)", "second pull (updates)"):
        pages = pages_of(objects, page_size)
        started = time.perf_counter()
        accepted = 0
        for page in pages:
            accepted += ingest_page(partner, "locations", orjson.loads(page)).accepted
        elapsed = time.perf_counter() - started
        evses, connectors = Evse.objects.count(), Connector.objects.count()
        rate = rates[step] = accepted / elapsed
        print(
            f"{label}, {step}: {accepted} locations ({evses} EVSEs, {connectors} connectors in the database) "
            f"in {elapsed:.2f} s = {rate:,.0f} locations/s, {evses / elapsed:,.0f} EVSEs/s "
            f"[{'OK' if rate >= target else 'BELOW'} target {target:,}]"
        )
        newer = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # not in the future
        for obj in objects:  # the second pull carries newer objects: real updates, not skips
            obj["last_updated"] = newer
    return rates


# --- the baseline: decode + binary COPY, nothing else ---------------------------------------------------------

BASELINE_TABLES = {
    "location": "id text, name text, address text, city text, postal_code text, country text, "
    "latitude numeric, longitude numeric, time_zone text, last_updated timestamptz",
    "evse": "location_id text, uid text, evse_id text, status text, last_updated timestamptz",
    "connector": "location_id text, evse_uid text, id text, standard text, format text, power_type text, "
    "max_voltage integer, max_amperage integer, max_electric_power integer, last_updated timestamptz",
}
TYPES = {
    "location": ["text"] * 6 + ["numeric", "numeric", "text", "timestamptz"],
    "evse": ["text", "text", "text", "text", "timestamptz"],
    "connector": ["text"] * 6 + ["int4", "int4", "int4", "timestamptz"],
}


def _text(value: object) -> str | None:
    return None if value is None else str(value).replace("\x00", "")


def _decimal(value: object) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _int(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return None
    return number if -(2**31) <= number < 2**31 else None


def _when(value: object) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def baseline_rows(page: list) -> dict[str, list[tuple]]:
    rows: dict[str, list[tuple]] = {"location": [], "evse": [], "connector": []}
    for loc in page:
        if not isinstance(loc, dict):
            continue
        coordinates = loc.get("coordinates") if isinstance(loc.get("coordinates"), dict) else {}
        loc_id = _text(loc.get("id"))
        rows["location"].append(
            (loc_id, _text(loc.get("name")), _text(loc.get("address")), _text(loc.get("city")),
             _text(loc.get("postal_code")), _text(loc.get("country")), _decimal(coordinates.get("latitude")),
             _decimal(coordinates.get("longitude")), _text(loc.get("time_zone")), _when(loc.get("last_updated")))
        )  # fmt: skip
        for evse in loc.get("evses") or []:
            if not isinstance(evse, dict):
                continue
            uid = _text(evse.get("uid"))
            rows["evse"].append(
                (loc_id, uid, _text(evse.get("evse_id")), _text(evse.get("status")), _when(evse.get("last_updated")))
            )
            for connector in evse.get("connectors") or []:
                if not isinstance(connector, dict):
                    continue
                rows["connector"].append(
                    (loc_id, uid, _text(connector.get("id")), _text(connector.get("standard")),
                     _text(connector.get("format")), _text(connector.get("power_type")),
                     _int(connector.get("max_voltage")), _int(connector.get("max_amperage")),
                     _int(connector.get("max_electric_power")), _when(connector.get("last_updated")))
                )  # fmt: skip
    return rows


def run_baseline(label: str, objects: list[dict], page_size: int) -> float:
    """Decode each page and binary COPY its rows, one transaction a page as the ingest commits."""
    from django.db import connection

    pages = pages_of(objects, page_size)
    with connection.cursor() as django_cursor:
        raw = django_cursor.connection  # the psycopg connection under Django's
        with raw.cursor() as cursor:
            for table, columns in BASELINE_TABLES.items():
                cursor.execute(f"DROP TABLE IF EXISTS bench_baseline_{table}")
                cursor.execute(f"CREATE UNLOGGED TABLE bench_baseline_{table} ({columns})")
            raw.commit()
            started = time.perf_counter()
            count = 0
            for page in pages:
                rows = baseline_rows(orjson.loads(page))
                for table, table_rows in rows.items():
                    names = ", ".join(c.split()[0] for c in BASELINE_TABLES[table].split(", "))
                    with cursor.copy(f"COPY bench_baseline_{table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
                        copy.set_types(TYPES[table])
                        for row in table_rows:
                            copy.write_row(row)
                raw.commit()
                count += len(rows["location"])
            elapsed = time.perf_counter() - started
            for table in BASELINE_TABLES:
                cursor.execute(f"DROP TABLE bench_baseline_{table}")
            raw.commit()
    rate = count / elapsed
    print(f"{label}, baseline (orjson decode + binary COPY, no normalisation): {count} locations in {elapsed:.2f} s "
          f"= {rate:,.0f} locations/s")  # fmt: skip
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--synthetic", type=int, default=20_000)
    parser.add_argument("--page", type=int, default=500, help="objects per page (a partner's X-Limit)")
    args = parser.parse_args()
    setup(fresh=True)
    gc.freeze()  # as the Celery worker that runs a pull does once loaded (emsp/celery.py)
    for label, objects in (
        ("spec-valid synthetic", synthetic(args.synthetic)),
        ("real CPO feeds", load_feeds(args.copies)),
    ):
        base = run_baseline(label, copy.deepcopy(objects), args.page)
        rates = run(label, objects, args.page)
        for step, rate in rates.items():
            print(f"{label}, {step}: ratio ingest/baseline {rate / base:.2f}")
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
