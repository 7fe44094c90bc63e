"""Benchmark: bulk pull ingest (normalise + store) of OCPI locations with their EVSEs and connectors.

Usage: .venv/bin/python bench/bench_ingest.py [--copies 5] [--page 500] [--synthetic 20000]
Two corpora go through `ocpi.sync.ingest_page` (normalise, store, record data-quality issues: the code path
of a pull) into a fresh PostgreSQL database:
- spec-valid synthetic locations (2 EVSEs with one CCS2 connector each), as a well-behaved CPO sends them;
- the 16 real CPO feeds from ../shared (copied `--copies` times under new ids), where almost every location
  needs fixing and so also writes data-quality findings.
Target: ≥ 5,000 locations/s including EVSEs and connectors.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import orjson
from django_env import REPO, machine, setup

TARGET = 5_000


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


def run(label: str, objects: list[dict], page_size: int) -> None:
    from emsp.models import Connector, Evse, Location, Partner
    from ocpi.sync import ingest_page

    Location.objects.all().delete()
    partner, _ = Partner.objects.get_or_create(country_code="ZZ", party_id="BEN", defaults={"name": "Bench"})
    for step in ("first pull (inserts)", "second pull (updates)"):
        pages = [copy.deepcopy(objects[i : i + page_size]) for i in range(0, len(objects), page_size)]
        started = time.perf_counter()
        accepted = 0
        for page in pages:
            accepted += ingest_page(partner, "locations", page).accepted
        elapsed = time.perf_counter() - started
        evses, connectors = Evse.objects.count(), Connector.objects.count()
        rate = accepted / elapsed
        print(
            f"{label}, {step}: {accepted} locations ({evses} EVSEs, {connectors} connectors in the database) "
            f"in {elapsed:.2f} s = {rate:,.0f} locations/s, {evses / elapsed:,.0f} EVSEs/s "
            f"[{'OK' if rate >= TARGET else 'BELOW'} target {TARGET:,}]"
        )
        for obj in objects:  # the second pull carries newer objects: real updates, not skips
            obj["last_updated"] = "2030-01-01T00:00:00Z"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--synthetic", type=int, default=20_000)
    parser.add_argument("--page", type=int, default=500, help="objects per page (a partner's X-Limit)")
    args = parser.parse_args()
    setup(fresh=True)
    run("spec-valid synthetic", synthetic(args.synthetic), args.page)
    run("real CPO feeds", load_feeds(args.copies), args.page)
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
