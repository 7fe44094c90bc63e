"""Benchmark: the Beckn BPP on PostgreSQL and Redis, with gunicorn and a Celery worker as separate processes.

Usage: .venv/bin/python bench/bench_beckn.py [--part ack|search|query|select|search-worker|all] [--duration 15]
- ack: signed `POST /beckn/search` answered ACK (signature verified on every request, each a new message_id),
  by the platform and by the bare baseline app bench/ack_baseline.py under the same gunicorn: highest rate with
  wrk (closed loop), latency at a fixed 2,000 req/s (open loop), and their ratio. Targets (issue 15): ≥ 2,500
  req/s, p99 < 10 ms at 2,000 req/s, ratio ≥ 0.7.
- search: search → on_search delivered to a BAP callback receiver in this process, at a fixed rate (open loop)
  from --baps BAPs, each with its own key and callback URL; latency from each search's scheduled send to the
  signed callback's arrival. Defaults: a 100,000-EVSE catalogue, 20 searches/s, one BAP (target p95 < 150 ms).
  Issue 15 point 2: --search-evses 1000000 --rate 200 --baps 200 --reuse, target p95 < 50 ms.
  --worker-concurrency sets the latency Celery worker's processes (default 2); --silent-baps N makes the first N
  BAPs hung apps (their callbacks are never answered) and times the others' callbacks.
- select: a select answered in the worker (in this process, its on_select to a receiver here) at each of
  --query-sizes: wall and CPU time a select, its statements, the slowest one (issue 15 point 7: how it grows).
- search-worker: the same for a search (5 km around a cluster centre) and its on_search: the worker's CPU a
  search (issue 15 point 2). --profile prints cProfile of either, the process's CPU as its clock.
- query: the catalogue query itself (beckn.catalogue.search) against the baseline of issue 15 (one SQL statement
  on the same index, through psycopg), query for query, at each of --query-sizes (--reuse keeps the catalogues
  between runs). Target: p95 ≤ 3 ms at 1,000,000 EVSEs, within 2× the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import requests
from bap_receiver import Receiver, SilentReceiver
from django_env import BENCH_DATABASE_URL, REPO, free_port, machine, setup
from load import open_loop, percentile

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
CITIES = [(12.9716, 77.5946), (28.6139, 77.2090), (19.0760, 72.8777), (13.0827, 80.2707), (17.3850, 78.4867),
          (18.5204, 73.8567), (22.5726, 88.3639), (23.0225, 72.5714)]  # fmt: skip


def env_for(port: int, database_url: str = BENCH_DATABASE_URL) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "DJANGO_DEBUG": "false",
        "DB_CONN_MAX_AGE": "600",
        "LOG_LEVEL": "WARNING",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "BECKN_SUBSCRIBER_URL": f"http://127.0.0.1:{port}/beckn",
        # Measure the platform, not the rate limiter (emsp/ratelimit.py): one BAP sends far above the limit.
        "OCPI_RATE_LIMIT_PER_MINUTE": "0",
        "BECKN_RATE_LIMIT_PER_MINUTE": "0",
    }


# The latency worker's processes (--worker-concurrency): 2, one per core, unless asked otherwise.
CELERY_CONCURRENCY = 2


def start(
    port: int, workers: int, celery: bool, database_url: str = BENCH_DATABASE_URL
) -> list[subprocess.Popen[bytes]]:
    env = env_for(port, database_url)
    bin_dir = REPO / ".venv" / "bin"
    procs = [
        subprocess.Popen(
            [str(bin_dir / "gunicorn"), "emsp.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    if celery:
        procs.append(
            subprocess.Popen(
                [str(bin_dir / "celery"), "-A", "emsp", "worker", "-l", "warning", "--concurrency", str(CELERY_CONCURRENCY), "-Q",
                 "latency"],
                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=5)
            break
        except requests.RequestException:
            time.sleep(0.2)
    time.sleep(1.0 if celery else 0.2)
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=20)


def trusted_bap(bap_uri: str, bap_id: str = "bap.bench") -> tuple[str, object]:
    from beckn import registry
    from beckn.signing import generate_keypair, load_private_key

    private, public = generate_keypair()
    registry.trust(bap_id, "k1", public, subscriber_url=bap_uri)  # callbacks go only to a registered URL
    return bap_id, load_private_key(private)


def signed_search(bap_id: str, key: object, bap_uri: str, gps: str, created: int) -> tuple[bytes, str, str]:
    from beckn.signing import sign_request

    message_id = str(uuid.uuid4())
    body = orjson.dumps(
        {
            "context": {
                "domain": "ev-charging:beckn", "action": "search", "version": "1.1.0", "bap_id": bap_id,
                "bap_uri": bap_uri, "transaction_id": str(uuid.uuid4()), "message_id": message_id,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            },
            "message": {"intent": {"fulfillment": {"stops": [{"location": {"circle": {"gps": gps, "radius": {"value": "5", "unit": "km"}}}}]}}},
        }
    )  # fmt: skip
    header = sign_request(
        body, subscriber_id=bap_id, unique_key_id="k1", private_key=key, created=created, expires=created + 1800
    )
    return body, header, message_id


def wrk_ack(base: str, requests_: list[tuple[bytes, str, str]], duration: int) -> tuple[float, str]:
    """wrk (closed loop, 8 connections) POSTing the given signed searches in turn: (requests/s, its summary)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("reqs = {\n")
        for body, header, _ in requests_:
            f.write(f"  {{{json.dumps(body.decode())}, {json.dumps(header)}}},\n")
        f.write("}\ncounter = 0\nrequest = function()\n  counter = counter + 1\n  local r = reqs[(counter % #reqs) + 1]\n"
                '  return wrk.format("POST", "/beckn/search", {["Content-Type"] = "application/json", '
                '["Authorization"] = r[2]}, r[1])\nend\n')  # fmt: skip
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{duration}s", "--latency", "-s", f.name, base],
                         capture_output=True, text=True, check=False).stdout  # fmt: skip
    Path(f.name).unlink()
    rate = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("Requests/sec")), 0.0)
    summary = "\n".join(
        line
        for line in out.splitlines()
        if line.strip().startswith(("Latency", "50%", "99%", "Requests/sec", "Non-2xx"))
    )
    return rate, summary


def start_baseline(port: int, workers: int, bap_id: str, public_key: str) -> subprocess.Popen[bytes]:
    """bench/ack_baseline.py under the same gunicorn, trusting the benchmark BAP's key."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'bench'}", "ACK_BASELINE_KEY_ID": f"{bap_id}|k1|ed25519",
           "ACK_BASELINE_PUBLIC_KEY": public_key}  # fmt: skip
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "gunicorn"), "ack_baseline:application", "-b", f"127.0.0.1:{port}", "-w",
         str(workers), "--log-level", "warning"],
        cwd=REPO / "bench", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            return proc
        except requests.RequestException:
            time.sleep(0.1)
    return proc


def part_ack(duration: int, workers: int, rate: int = 2000, rounds: int = 3) -> None:
    """Verified ACKs: the platform and the bare baseline (bench/ack_baseline.py) under the same gunicorn, each
    request a new message_id: the highest rate with wrk, then latency at a fixed `rate` (open loop)."""
    from beckn.signing import public_key_b64

    bap_id, key = trusted_bap("http://127.0.0.1:9/bap")
    now = int(time.time())
    closed = [signed_search(bap_id, key, "http://127.0.0.1:9/bap", "12.97,77.59", now) for _ in range(60_000)]
    opened = [signed_search(bap_id, key, "http://127.0.0.1:9/bap", "12.97,77.59", now) for _ in range(rate * 12)]

    def make_from(batch: list[tuple[bytes, str, str]]) -> object:
        def make(n: int) -> tuple[str, str, bytes, dict[str, str]]:
            body, header, _ = batch[n % len(batch)]
            return "POST", "/beckn/search", body, {"Authorization": header, "Content-Type": "application/json"}

        return make

    figures: dict[str, list[tuple[float, str]]] = {"platform": [], "baseline": []}
    steady: dict[str, str] = {}
    for round_ in range(rounds):  # alternated, so the machine's drift touches both alike
        for who in ("platform", "baseline"):
            port = free_port()
            if who == "platform":  # the ACK path only: no worker drains the queue meanwhile
                procs = start(port, workers, celery=False)
            else:
                procs = [start_baseline(port, workers, bap_id, public_key_b64(key))]  # type: ignore[arg-type]
            base = f"http://127.0.0.1:{port}"
            try:
                batch = closed[round_ * 20_000 :] + closed[: round_ * 20_000]  # new message ids each round
                found = wrk_ack(base, batch, duration) if shutil.which("wrk") else (0.0, "wrk not installed")
                figures[who].append(found)
                if round_ == rounds - 1:
                    steady[who] = open_loop(base, make_from(opened), rate=rate, duration=10, workers=8).summary()  # type: ignore[arg-type]
            finally:
                stop(procs)
            subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], capture_output=True, check=False)
    for who, runs in figures.items():
        print(
            f"== ACK, {who}, gunicorn {workers} sync workers, signature verified on every request, each a new message_id"
        )
        for number, (highest, summary) in enumerate(runs, 1):
            print(f"round {number}, closed loop (wrk -t1 -c8, {duration} s): {highest:,.0f} req/s\n{summary}")
        print(f"open loop at {rate} req/s for 10 s:\n{steady[who]}")
    ours = statistics.median(r[0] for r in figures["platform"])
    theirs = statistics.median(r[0] for r in figures["baseline"])
    if theirs:
        print(f"median highest rate: platform {ours:,.0f} req/s, baseline {theirs:,.0f} req/s")
        print(f"ratio platform/baseline, highest rate (medians of {rounds} rounds): {ours / theirs:.2f}")
        ratios = [p[0] / b[0] for p, b in zip(figures["platform"], figures["baseline"], strict=True) if b[0]]
        print("ratio per round: " + ", ".join(f"{r:.2f}" for r in ratios))


def cluster_centres(count: int = 300) -> list[tuple[float, float]]:
    """Cities-sized clusters across India and Europe, as in perf-reliability-notes §2.3(a)."""
    import random

    rng = random.Random(11)
    centres = [(rng.uniform(8.5, 30.0), rng.uniform(72.5, 88.0)) for _ in range(count // 2)]
    centres += [(rng.uniform(40.0, 55.0), rng.uniform(-4.0, 20.0)) for _ in range(count - count // 2)]
    return CITIES + centres


def build_catalogue(evse_count: int) -> None:
    import random

    from emsp.models import Partner
    from emsp.services.catalogue import locations_store
    from tests.factories import ocpi_location

    rng = random.Random(7)
    partner = Partner.objects.create(name="Bench CPO", country_code="IN", party_id="BEN", state="CONNECTED")
    batch = []
    started = time.perf_counter()
    centres = cluster_centres()
    for i in range(evse_count // 2):
        lat, lon = centres[i % len(centres)]
        batch.append(
            ocpi_location(
                "IN", "BEN", f"L{i:07d}", evses=2, latitude=lat + rng.gauss(0, 0.15), longitude=lon + rng.gauss(0, 0.15)
            )
        )
        if len(batch) == 2000:
            locations_store(partner, batch)
            batch = []
    if batch:
        locations_store(partner, batch)
    print(f"catalogue: {evse_count:,} EVSEs built in {time.perf_counter() - started:.0f} s")


SILENT_SETTLE = 30  # seconds: a hung app's first callbacks hold each worker process for the full 10 s timeout, then the backlog drains


def part_search(duration: int, workers: int, *, evses: int, rate: int, baps: int, reuse: bool, silent: int = 0) -> None:
    """Search → signed on_search delivered (issue 15 point 2): `baps` BAPs, each with its own key and callback
    URL, send signed searches around the catalogue's cities at a fixed total `rate` (open loop: latency runs from
    each search's scheduled time, so queueing anywhere shows), and the receiver in this process records each
    callback's arrival. The first `silent` BAPs' callback URLs lead to a server that never answers (a hung
    app); their searches are sent but only the others' callbacks are timed."""
    if evses == 100_000 and not reuse:
        setup(fresh=True)
        build_catalogue(evses)
        database_url = BENCH_DATABASE_URL
    else:  # the catalogue of --part query (emsp_bench_query_<n>), reused when complete
        query_database(evses, reuse)
        database_url = os.environ["DATABASE_URL"]
    receiver, quiet = Receiver(), SilentReceiver()

    def bap_url(i: int) -> str:
        return f"{quiet.url if i < silent else receiver.url}/{i}"

    senders = [trusted_bap(bap_url(i), f"bap{i}.bench") for i in range(baps)]
    centres = cluster_centres()
    port = free_port()
    procs = start(port, workers, celery=True, database_url=database_url)
    base = f"http://127.0.0.1:{port}"
    try:
        now = int(time.time())
        # Warm up: each worker process imports, connects and prepares its statements on its first tasks.
        warm = [signed_search(*senders[i], bap_url(i), "12.9716,77.5946", now)
                for i in range(silent, min(baps, silent + 40))]  # fmt: skip
        for body, header, _ in warm:
            requests.post(f"{base}/beckn/search", data=body, timeout=5,
                          headers={"Authorization": header, "Content-Type": "application/json"})  # fmt: skip
        deadline = time.perf_counter() + 30
        while len(receiver.arrived) < len(warm) and time.perf_counter() < deadline:
            time.sleep(0.1)
        receiver.arrived.clear()
        total = rate * duration
        batch = []
        for i in range(total):
            lat, lon = centres[i % len(centres)]
            bap = i % baps
            batch.append(signed_search(*senders[bap], bap_url(bap), f"{lat:.4f},{lon:.4f}", now))

        def make(n: int) -> tuple[str, str, bytes, dict[str, str]]:
            body, header, _ = batch[n]
            return "POST", "/beckn/search", body, {"Authorization": header, "Content-Type": "application/json"}

        acks = open_loop(base, make, rate=rate, duration=duration, workers=16)
        answering = [n for n in range(total) if n % baps >= silent]
        deadline = time.perf_counter() + 30
        while len(receiver.arrived) < len(answering) and time.perf_counter() < deadline:
            time.sleep(0.1)
        scheduled = {batch[n][2]: acks.start + n / rate for n in answering}
        latencies = sorted((receiver.arrived[m] - at) * 1000 for m, at in scheduled.items() if m in receiver.arrived)
        errors = sum(1 for m in scheduled if receiver.answered.get(m, ("", False))[1])
        p = lambda q: percentile(latencies, q)  # noqa: E731
        print(f"== search → on_search delivered, {evses:,} EVSEs, {baps} BAPs, {rate} searches/s for {duration} s "
              f"(open loop), gunicorn {workers} workers + Celery worker ({CELERY_CONCURRENCY})")  # fmt: skip
        print(f"ACKs: {acks.summary()}")
        if silent:
            print(f"{silent} of the {baps} BAPs never answer: {total - len(answering)} of the searches were theirs, "
                  f"{quiet.heard} connections made to them; timed below: the other BAPs' callbacks")  # fmt: skip
        print(f"callbacks received {len(latencies)}/{len(answering)}, {errors} with an error; from the scheduled send, ms "
              f"p50 {p(50):.1f} p95 {p(95):.1f} p99 {p(99):.1f} max {latencies[-1] if latencies else float('nan'):.1f}")  # fmt: skip
        if silent and duration > SILENT_SETTLE:  # once each worker process has found the hung apps out
            later = sorted((receiver.arrived[m] - at) * 1000 for m, at in scheduled.items()
                           if m in receiver.arrived and at >= acks.start + SILENT_SETTLE)  # fmt: skip
            print(f"  of the searches sent after the first {SILENT_SETTLE} s: {len(later)} callbacks, ms p50 "
                  f"{percentile(later, 50):.1f} p95 {percentile(later, 95):.1f} p99 {percentile(later, 99):.1f}")  # fmt: skip
    finally:
        stop(procs)
        receiver.server.shutdown()
        quiet.close()


BASELINE_SQL = """
    SELECT e.id, e.uid, e.status, e.latitude, e.longitude, l.location_id, l.name, l.address, l.city, p.name,
           c.connector_id, c.standard, c.max_electric_power, c.tariff_ids
    FROM (SELECT e.*, {point} <-> cube(%(here)s::float8[]) AS nearness
          FROM emsp_evse e
          WHERE {point} <@ cube_enlarge(cube(%(here)s::float8[]), %(reach)s, 3)
            AND {point} <-> cube(%(here)s::float8[]) <= %(reach)s
            AND e.has_connectors AND e.status NOT IN ('REMOVED', 'OUTOFORDER', 'INOPERATIVE', 'PLANNED')
            {connector_filter}
          ORDER BY nearness LIMIT 20) e
    JOIN emsp_location l ON l.id = e.location_id
    JOIN emsp_partner p ON p.id = l.partner_id
    JOIN emsp_connector c ON c.evse_id = e.id {connector_join}
    ORDER BY e.nearness, c.connector_id"""


def baseline_query(cursor: object, lat: float, lon: float, radius_m: float, connector_types: set[str]) -> list[tuple]:
    """The baseline of issue 15: the one SQL statement an expert would write for a top-20 radius search (GiST KNN
    on the same index, joining the location, partner and connectors), through psycopg with no ORM."""
    from emsp import nearest

    # Constants as literals and the types as an IN list: with arrays (`= ANY(%s)`) PostgreSQL plans the prepared
    # statement anew on every call (pg_prepared_statements: 0 generic plans), 0.3-1 ms of planning a query.
    types = {f"t{i}": t for i, t in enumerate(sorted(connector_types))}
    listed = ", ".join(f"%({name})s" for name in types)
    sql = BASELINE_SQL.format(
        point=nearest.point_sql("e"),
        connector_filter=f"AND EXISTS (SELECT 1 FROM emsp_connector x WHERE x.evse_id = e.id AND x.standard IN ({listed}))"  # noqa: S608
        if connector_types
        else "",
        connector_join=f"AND c.standard IN ({listed})" if connector_types else "",
    )
    params = {"here": nearest.unit_vector(lat, lon), "reach": nearest.chord(radius_m), **types}
    cursor.execute(sql, params, prepare=True)  # type: ignore[attr-defined]
    return cursor.fetchall()  # type: ignore[attr-defined]


def query_database(evses: int, reuse: bool) -> None:
    """Django on a database holding an `evses`-EVSE catalogue: built fresh, or reused when asked and complete."""
    name = f"emsp_bench_query_{evses}"
    if reuse:
        import psycopg

        admin = BENCH_DATABASE_URL.rsplit("/", 1)[0]
        try:
            with psycopg.connect(f"{admin}/{name}") as conn:
                have = conn.execute("SELECT count(*) FROM emsp_evse").fetchone()[0]  # type: ignore[index]
        except psycopg.Error:
            have = 0
        if have == evses:
            setup(fresh=False, name=name)
            print(f"catalogue: {evses:,} EVSEs reused ({name})")
            bench_tariff()
            return
    setup(fresh=True, name=name)
    build_catalogue(evses)
    bench_tariff()
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def bench_tariff() -> None:
    """The tariff every benchmark connector names (T1), so each search loads, chooses and prices one (catalogues
    built before 2026-12-04 had none, and their searches found no tariff to load)."""
    from billing.services import tariff_put
    from emsp.models import Partner

    partner = Partner.objects.get(country_code="IN", party_id="BEN")
    energy = {"type": "ENERGY", "price": 18.0, "vat": 18, "step_size": 1}
    parking = {"type": "PARKING_TIME", "price": 60.0, "vat": 18, "step_size": 60}
    tariff_put(partner, {"country_code": "IN", "party_id": "BEN", "id": "T1", "currency": "INR",
                         "elements": [{"price_components": [energy]}, {"price_components": [parking]}],
                         "last_updated": "2026-01-01T00:00:00Z"})  # fmt: skip


def part_query(sizes: list[int], reuse: bool, queries: int = 300) -> None:
    """beckn.catalogue.search (5 km, top 20, a third with a connector filter) against the baseline statement on
    the same data, query for query, at each catalogue size (run in a fresh process per size)."""
    import random

    for evses in sizes:
        if evses != sizes[0]:  # Django is set up once per process: each further size in a process of its own
            subprocess.run([sys.executable, __file__, "--part", "query", "--query-sizes", str(evses)]
                           + (["--reuse"] if reuse else []), check=True)  # fmt: skip
            continue
        query_database(evses, reuse)
        from django.db import connection

        from beckn.catalogue import SearchFilters, search

        rng = random.Random(3)
        centres = cluster_centres()
        searches = []
        for i in range(queries):
            lat, lon = centres[i % len(centres)]
            types = {"IEC_62196_T2_COMBO"} if i % 3 == 0 else set()
            searches.append((lat + rng.gauss(0, 0.1), lon + rng.gauss(0, 0.1), types))
        connection.ensure_connection()
        raw = connection.connection  # the same connection, so both pay the same network and server
        ours: dict[bool, list[float]] = {True: [], False: []}
        base: dict[bool, list[float]] = {True: [], False: []}
        hits = rows = 0
        for measured in (False, True):  # a first pass warms the caches, the second is measured
            for lat, lon, types in searches:
                filters = SearchFilters(latitude=lat, longitude=lon, radius_m=5000, connector_types=types)
                started = time.perf_counter()
                found = search(filters)
                middle = time.perf_counter()
                with raw.cursor() as cursor:
                    got = baseline_query(cursor, lat, lon, 5000, types)
                ended = time.perf_counter()
                if measured:
                    ours[bool(types)].append((middle - started) * 1000)
                    base[bool(types)].append((ended - middle) * 1000)
                    hits, rows = hits + len(found), rows + len(got)
        print(f"== catalogue query at {evses:,} EVSEs: beckn.catalogue.search vs one SQL statement (5 km, top 20), "
              f"{queries} queries, {hits / queries:.1f} hits and {rows / queries:.1f} baseline rows per query")  # fmt: skip
        for label, key in (("all", None), ("no connector filter", False), ("connector filter", True)):
            a = sorted(ours[True] + ours[False]) if key is None else sorted(ours[key])
            b = sorted(base[True] + base[False]) if key is None else sorted(base[key])
            pa, pb = (lambda q, xs=a: percentile(xs, q)), (lambda q, xs=b: percentile(xs, q))
            print(f"{label:>20}: ours ms p50 {pa(50):.2f} p95 {pa(95):.2f} p99 {pa(99):.2f} | baseline p50 {pb(50):.2f} "
                  f"p95 {pb(95):.2f} p99 {pb(99):.2f} | ratio p50 {pa(50) / pb(50):.2f}x p95 {pa(95) / pb(95):.2f}x")  # fmt: skip
        # How PostgreSQL planned the prepared statements (both share the connection): a statement that is custom-
        # planned on every call pays its planning each time (docs/benchmarks.md, issue 15 point 1).
        with raw.cursor() as cursor:
            cursor.execute("SELECT statement LIKE '%%WITH ranked AS%%', sum(generic_plans), sum(custom_plans) "
                           "FROM pg_prepared_statements WHERE statement LIKE '%%emsp_evse%%' GROUP BY 1 ORDER BY 1")  # fmt: skip
            for ours_statement, generic, custom in cursor.fetchall():
                print(f"plans of {'ours' if ours_statement else 'the baseline'}: {generic} generic, {custom} custom")


def part_select(
    sizes: list[int], reuse: bool, selects: int = 300, action: str = "select", profile: bool = False
) -> None:
    """A select (or a search, `action`) answered in the worker (beckn.tasks.handle_request, in this process, its
    callback sent to a receiver here), at each catalogue size of --part query: CPU and wall time a request, its
    statements, and the slowest statement. Each select names an available EVSE of the catalogue and asks a
    quote for 1-30 kWh; each search is a 5 km circle around one of the catalogue's cluster centres."""
    for evses in sizes[1:]:  # Django is set up once per process: each further size in a process of its own
        subprocess.run([sys.executable, __file__, "--part", action.replace("search", "search-worker"),
                        "--query-sizes", str(evses)] + (["--reuse"] if reuse else []), check=True)  # fmt: skip
    worker_at(action, sizes[0], reuse, selects, profile)


def worker_at(action: str, evses: int, reuse: bool, count: int, profile: bool) -> None:
    """--part select / search-worker at one catalogue size, in this process."""
    import random

    query_database(evses, reuse)
    from django.db import connection

    from beckn.bap_client import select_message
    from beckn.tasks import handle_request

    receiver = Receiver()
    bap_id, _ = trusted_bap(f"{receiver.url}/0", f"bap-{action}.bench")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT l.location_id, e.uid, p.country_code || '*' || p.party_id FROM emsp_evse e "
            "JOIN emsp_location l ON l.id = e.location_id JOIN emsp_partner p ON p.id = l.partner_id "
            "WHERE e.status = 'AVAILABLE' AND e.id %% 97 = 0 ORDER BY e.id LIMIT %s",
            [2 * count],
        )
        items = cursor.fetchall()
    rng = random.Random(7)
    centres = cluster_centres()

    def body(n: int) -> str:
        context = {
            "domain": "ev-charging:beckn", "action": action, "version": "1.1.0", "bap_id": bap_id,
            "bap_uri": f"{receiver.url}/0", "transaction_id": str(uuid.uuid4()),
            "message_id": str(uuid.uuid4()), "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }  # fmt: skip
        if action == "search":
            lat, lon = centres[n % len(centres)]
            circle = {"gps": f"{lat:.4f},{lon:.4f}", "radius": {"value": "5", "unit": "km"}}
            message = {"intent": {"fulfillment": {"stops": [{"location": {"circle": circle}}]}}}
        else:
            location_id, uid, party = items[n % len(items)]
            message = select_message(party, f"{location_id}/{uid}/1", rng.randint(1, 30))
        return orjson.dumps({"context": context, "message": message}).decode()

    statements: list[tuple[float, str]] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append(((time.perf_counter() - started) * 1000, sql))

    for n in range(count):  # warm: imports, prepared statements, caches
        handle_request.run(action, body(count + n))
    receiver.arrived.clear()
    walls, cpus = [], []
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
    bodies = [body(n) for n in range(count)]
    with connection.execute_wrapper(timed):
        for n in range(count):
            wall, cpu = time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            handle_request.run(action, bodies[n])
            if profiler:
                profiler.disable()
            walls.append((time.perf_counter() - wall) * 1000)
            cpus.append((time.process_time() - cpu) * 1000)
    deadline = time.perf_counter() + 10
    while len(receiver.arrived) < count and time.perf_counter() < deadline:
        time.sleep(0.05)
    errors = sum(1 for action_, error in receiver.answered.values() if action_ == f"on_{action}" and error)
    by_statement: dict[str, list[float]] = {}
    for ms, sql in statements:  # savepoint names and the like told apart by their digits only: one key
        by_statement.setdefault(re.sub(r"\d+", "N", " ".join(sql.split()))[:90], []).append(ms)
    slowest = sorted(by_statement.items(), key=lambda kv: -sum(kv[1]))[:3]
    walls.sort()
    print(f"== {action} answered in the worker at {evses:,} EVSEs, {count} {action}es "
          f"(on_{action} to a receiver here)".replace("selectes", "selects"))  # fmt: skip
    print(f"wall ms p50 {percentile(walls, 50):.2f} p95 {percentile(walls, 95):.2f} p99 {percentile(walls, 99):.2f}; "
          f"CPU ms a {action} {statistics.mean(cpus):.2f} (this process, receiver thread included); "
          f"{len(statements) / count:.1f} statements a {action}; on_{action} {len(receiver.arrived)}/{count}, "
          f"{errors} with an error")  # fmt: skip
    for text, times in slowest:
        print(
            f"  {sum(times) / count:.2f} ms a {action} ({len(times) / count:.0f}x, mean {statistics.mean(times):.2f} ms): {text}"
        )
    if profiler:
        import pstats

        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    receiver.server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["ack", "search", "query", "select", "search-worker", "all"], default="all")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="--part ack: platform and baseline alternated")
    parser.add_argument(
        "--query-sizes", default="1000000", help="catalogue sizes for --part query, e.g. 10000,100000,1000000"
    )
    parser.add_argument("--reuse", action="store_true", help="--part query/search: reuse a complete catalogue")
    parser.add_argument("--search-evses", type=int, default=100_000, help="--part search: catalogue size")
    parser.add_argument("--rate", type=int, default=20, help="--part search: searches a second (open loop)")
    parser.add_argument("--baps", type=int, default=1, help="--part search: BAPs sending them")
    parser.add_argument("--worker-concurrency", type=int, default=2,
                        help="--part search: the latency Celery worker's processes")  # fmt: skip
    parser.add_argument("--silent-baps", type=int, default=0,
                        help="--part search: how many of the BAPs never answer their callbacks")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="--part select/search-worker: cProfile the worker, the process's CPU as its clock")  # fmt: skip
    args = parser.parse_args()
    global CELERY_CONCURRENCY
    CELERY_CONCURRENCY = args.worker_concurrency
    sys.path.insert(0, str(REPO))
    os.environ["REDIS_URL"] = REDIS_URL
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], capture_output=True, check=False)
    print(machine())
    if args.part in ("ack", "all"):
        setup(fresh=True)
        part_ack(args.duration, args.workers, rounds=args.rounds)
    if args.part in ("search", "all"):
        part_search(args.duration, args.workers, evses=args.search_evses, rate=args.rate, baps=args.baps,
                    reuse=args.reuse, silent=args.silent_baps)  # fmt: skip
    if args.part in ("query", "all"):
        part_query([int(n) for n in args.query_sizes.split(",")], args.reuse)
    if args.part in ("select", "all"):
        part_select([int(n) for n in args.query_sizes.split(",")], args.reuse, profile=args.profile)
    if args.part in ("search-worker", "all"):
        part_select([int(n) for n in args.query_sizes.split(",")], args.reuse, action="search", profile=args.profile)
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], capture_output=True, check=False)


if __name__ == "__main__":
    main()
