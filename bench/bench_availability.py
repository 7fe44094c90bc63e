"""Benchmark (issue 15, point 6): a CPO's EVSE status PATCH → visible in the next `on_search`, over many trials.

Usage: .venv/bin/python bench/bench_availability.py [--trials 1000] [--evses 1000000] [--reuse]

Real processes on PostgreSQL and Redis: gunicorn (3 workers) and a Celery worker on the latency queue (2
processes); the CPO is this script, PATCHing over OCPI with its credentials token; the BAP is this script too,
sending signed searches and receiving the signed `on_search` at its callback receiver. Each trial flips one
EVSE between AVAILABLE and BLOCKED, then searches around that EVSE until an `on_search` shows the new status;
the figure is from sending the PATCH to receiving that callback. EVSEs are taken round the catalogue's cities,
one per trial. Target: p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

import requests
from bap_receiver import Receiver
from bench_beckn import REDIS_URL, cluster_centres, query_database, signed_search, start, stop, trusted_bap
from django_env import free_port, machine
from load import percentile

TOKEN = "bench-availability-cpo-token"
AUTH = {"Authorization": "Token " + base64.b64encode(TOKEN.encode()).decode(), "Content-Type": "application/json"}


def item_status(callback: dict, item_id: str) -> str | None:
    """The status an on_search shows for one item (its `ocpi-status` tag), or None when the item is not in it."""
    for provider in (callback.get("message") or {}).get("catalog", {}).get("providers", []):
        for item in provider.get("items", []):
            if item.get("id") != item_id:
                continue
            for group in item.get("tags", []):
                for tag in group.get("list", []):
                    if (tag.get("descriptor") or {}).get("code") == "ocpi-status":
                        return tag.get("value")
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--evses", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="reuse a complete catalogue of this size")
    args = parser.parse_args()
    os.environ["REDIS_URL"] = REDIS_URL
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], capture_output=True, check=False)
    print(machine())
    query_database(args.evses, args.reuse)
    from emsp.models import Partner, hash_token

    Partner.objects.filter(country_code="IN", party_id="BEN").update(incoming_token_hash=hash_token(TOKEN))
    # One EVSE near each city's centre (the nearest to it), taken round the cities trial after trial.
    from beckn.catalogue import SearchFilters, search

    picked = []
    for lat, lon in cluster_centres():
        hits = search(SearchFilters(latitude=lat, longitude=lon, radius_m=20_000, limit=1))
        if hits:
            picked.append(hits[0])
    receiver = Receiver(keep_bodies=True)
    bap_id, key = trusted_bap(receiver.url)
    port = free_port()
    procs = start(port, workers=3, celery=True, database_url=os.environ["DATABASE_URL"])
    base = f"http://127.0.0.1:{port}"
    session = requests.Session()
    status = {hit.evse.pk: hit.evse.status for hit in picked}
    latencies: list[float] = []
    searches_needed: list[int] = []
    failures = 0
    try:
        for trial in range(-10, args.trials):  # the first ten warm the processes up and are not counted
            hit = picked[trial % len(picked)]
            evse, location = hit.evse, hit.evse.location
            item = f"{location.location_id}/{evse.uid}/{hit.connector.connector_id}"
            new = "BLOCKED" if status[evse.pk] == "AVAILABLE" else "AVAILABLE"
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            path = f"/ocpi/emsp/2.2.1/locations/IN/BEN/{location.location_id}/{evse.uid}"
            sent = time.perf_counter()
            answer = session.patch(base + path, data=f'{{"status": "{new}", "last_updated": "{stamp}"}}', headers=AUTH)
            if answer.status_code != 200 or answer.json().get("status_code") != 1000:
                raise SystemExit(f"PATCH refused: {answer.status_code} {answer.text[:200]}")
            status[evse.pk] = new
            seen, tries = None, 0
            while seen is None and tries < 50:
                tries += 1
                body, header, message_id = signed_search(
                    bap_id, key, receiver.url, f"{evse.latitude:.6f},{evse.longitude:.6f}", int(time.time())
                )
                session.post(f"{base}/beckn/search", data=body, headers={"Authorization": header,
                             "Content-Type": "application/json"}, timeout=5)  # fmt: skip
                deadline = time.perf_counter() + 5
                while message_id not in receiver.bodies and time.perf_counter() < deadline:
                    time.sleep(0.0005)
                callback = receiver.bodies.pop(message_id, None)
                if callback is not None and item_status(callback, item) == new:
                    seen = receiver.arrived[message_id]
            if trial < 0:
                continue
            if seen is None:
                failures += 1
                continue
            latencies.append((seen - sent) * 1000)
            searches_needed.append(tries)
    finally:
        stop(procs)
        receiver.server.shutdown()
    latencies.sort()
    print(f"== EVSE status PATCH → visible in on_search, {args.evses:,} EVSEs, {len(latencies)} trials "
          f"(gunicorn 3 workers, Celery worker with 2 processes)")  # fmt: skip
    print(
        f"ms p50 {percentile(latencies, 50):.1f} p95 {percentile(latencies, 95):.1f} "
        f"p99 {percentile(latencies, 99):.1f} max {latencies[-1]:.1f} mean {statistics.fmean(latencies):.1f}; "
        f"seen in the first search after the PATCH: {searches_needed.count(1)}/{len(searches_needed)}; "
        f"never seen: {failures}"
    )
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], capture_output=True, check=False)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
