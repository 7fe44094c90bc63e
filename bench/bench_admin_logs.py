"""Benchmark: the console's OCPI message log at tens of millions of rows (issue 14, retention; target < 300 ms
a page), and pruning it.

Usage: .venv/bin/python bench/bench_admin_logs.py [--sizes 1000000,10000000,50000000] [--requests 20]
                                                  [--prune-rows 500000] [--keep]
For each size, on its own database (emsp_bench_logs, recreated; dropped at the end unless --keep): the log's
secondary indexes are dropped, N rows loaded in SQL (generate_series; 30 days of traffic, newest last, small
bodies: the list never reads them), the indexes rebuilt, the table analysed. Then the changelist is requested
through Django's test client as a superuser (the whole view: filters, bounded count, page query, template),
each URL `--requests` times after one warm-up: first page, one partner (a big one and one with 0.002 % of the
rows), a module, failed messages, one day, page 50, a request id search. p50/p95 per URL, the SQL each runs,
and EXPLAIN ANALYZE of the page query of the first page and of the partner page. Last, `purge_expired` of the
ocpi_messages kind with the clock set so a day of rows is past retention, capped at --prune-rows: rows/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django_env import machine, setup

DATABASE = "emsp_bench_logs"
DAYS = 30
CHUNK = 2_000_000
TARGET_MS = 300
PARTNERS = 10

# Rows by g (the id): time increases with the id (30 days up to now); partner 1 has 40 %, partner 9 0.1 %,
# partner 10 one row in 50,000; 7 in 10 inbound; modules weighted as PATCH traffic is; about 2.6 % failed.
INSERT = """
INSERT INTO ocpi_ocpimessage (id, partner_id, direction, method, url, module, http_status, ocpi_status,
    request_id, correlation_id, duration_ms, request_body, response_body, error, created_at)
SELECT g,
  CASE WHEN g %% 50000 = 7 THEN %(p10)s
       WHEN g %% 1000 = 998 THEN NULL
       ELSE (%(partners)s::bigint[])[1 + (CASE WHEN g %% 1000 < 400 THEN 0 WHEN g %% 1000 < 650 THEN 1
            WHEN g %% 1000 < 800 THEN 2 WHEN g %% 1000 < 900 THEN 3 WHEN g %% 1000 < 950 THEN 4
            WHEN g %% 1000 < 980 THEN 5 WHEN g %% 1000 < 995 THEN 6 WHEN g %% 1000 < 997 THEN 7 ELSE 8 END)]
  END,
  CASE WHEN g %% 10 < 7 THEN 'IN' ELSE 'OUT' END,
  CASE WHEN g %% 10 < 7 THEN 'PATCH' ELSE 'GET' END,
  '/ocpi/emsp/2.2.1/' || m.module || '/NL/ABC/LOC' || (g %% 50000)::text,
  m.module,
  CASE WHEN g %% 997 = 3 THEN NULL WHEN g %% 200 = 0 THEN 500 WHEN g %% 50 = 1 THEN 404 ELSE 200 END,
  CASE WHEN g %% 997 = 3 THEN NULL WHEN g %% 200 = 0 THEN 3000 WHEN g %% 50 = 1 THEN 2003 ELSE 1000 END,
  left(md5(g::text), 16),
  left(md5((g / 3)::text), 16),
  g %% 300,
  '{"status":"AVAILABLE"}',
  '{"status_code":1000}',
  CASE WHEN g %% 997 = 3 THEN 'timed out' ELSE '' END,
  %(start)s::timestamptz + (g * %(step_us)s) * interval '1 microsecond'
FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g
CROSS JOIN LATERAL (SELECT CASE WHEN g %% 100000 = 11 THEN 'credentials'
    WHEN (g / 7) %% 100 < 40 THEN 'locations' WHEN (g / 7) %% 100 < 65 THEN 'sessions'
    WHEN (g / 7) %% 100 < 70 THEN 'cdrs' WHEN (g / 7) %% 100 < 85 THEN 'tokens' WHEN (g / 7) %% 100 < 95 THEN 'tariffs'
    WHEN (g / 7) %% 100 < 99 THEN 'commands' ELSE 'versions' END AS module) AS m
"""


def load(size: int, partners: list[int]) -> dict[str, float]:
    """N rows into an emptied log, its secondary indexes dropped first and built after. Seconds per step."""
    from django.db import connection
    from django.utils import timezone

    timings: dict[str, float] = {}
    with connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
        cursor.execute("SET maintenance_work_mem = '1GB'")
        cursor.execute("SET max_parallel_maintenance_workers = 2")
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'ocpi_ocpimessage' "
            "AND indexname <> 'ocpi_ocpimessage_pkey'"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        cursor.execute("TRUNCATE ocpi_ocpimessage")
        start = timezone.now() - timedelta(days=DAYS)
        step_us = DAYS * 86400 * 1_000_000 // size
        started = time.perf_counter()
        for lo in range(1, size + 1, CHUNK):
            hi = min(lo + CHUNK - 1, size)
            cursor.execute(
                INSERT,
                {
                    "lo": lo,
                    "hi": hi,
                    "start": start,
                    "step_us": step_us,
                    "p10": partners[9],
                    "partners": partners[:9],
                },
            )
            print(f"    {hi:>11,} rows, {time.perf_counter() - started:6.0f} s", flush=True)
        timings["insert"] = time.perf_counter() - started
        cursor.execute("SELECT setval(pg_get_serial_sequence('ocpi_ocpimessage', 'id'), %s)", [size])
        started = time.perf_counter()
        for name, definition in indexes:
            t = time.perf_counter()
            cursor.execute(definition)
            print(f"    index {name}: {time.perf_counter() - t:.0f} s", flush=True)
        timings["indexes"] = time.perf_counter() - started
        started = time.perf_counter()
        cursor.execute("VACUUM ANALYZE ocpi_ocpimessage")
        timings["vacuum_analyze"] = time.perf_counter() - started
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('ocpi_ocpimessage')), "
                       "pg_size_pretty(pg_relation_size('ocpi_ocpimessage')), "
                       "pg_size_pretty(pg_database_size(current_database()))")  # fmt: skip
        total, heap, database = cursor.fetchone()
        print(f"    table {total} (heap {heap}), database {database}", flush=True)
    return timings


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(urls: dict[str, str], requests: int, user: Any) -> list[tuple[Any, ...]]:
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(user)
    rows = []
    for label, url in urls.items():
        reset_queries()  # the client's request_started does it too: the capture must start from an empty log
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)  # warm-up, and the SQL it runs
        captured = list(queries.captured_queries)  # read now: it is a view of the connection's log
        assert response.status_code == 200, (label, response.status_code)
        times = []
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200
        sql = [q["sql"] for q in captured if "ocpi_ocpimessage" in q["sql"]]
        # The database's share alone (the log's bounded count and page query, run as the page ran them): what
        # grows with the table, apart from the rendering, which does not (and which a busy machine slows).
        db_times = []
        with connection.cursor() as cursor:
            for _ in range(requests):
                started = time.perf_counter()
                for statement in sql:
                    cursor.execute(statement)
                    cursor.fetchall()
                db_times.append((time.perf_counter() - started) * 1000)
        rows.append(
            (label, statistics.median(times), percentile(times, 95), len(captured), sql,
             statistics.median(db_times), percentile(db_times, 95))
        )  # fmt: skip
    return rows


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(r[0] for r in cursor.fetchall())


def page_sql(url: str, user: Any) -> tuple[str, str]:
    """The SQL of the list's bounded count and of its page query."""
    from django.db import connection, reset_queries
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.force_login(user)
    reset_queries()
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    on_log = [q["sql"] for q in queries.captured_queries if "ocpi_ocpimessage" in q["sql"]]
    return (
        next(sql for sql in on_log if sql.startswith("SELECT COUNT")),
        next(sql for sql in on_log if not sql.startswith("SELECT COUNT")),
    )


def prune(size: int, cap: int) -> str:
    from django.db import connection
    from django.utils import timezone

    from emsp import privacy
    from ocpi.models import OcpiMessage

    # The clock a day on: the oldest day of rows (1/30 of the table) is past its 30 days.
    now = timezone.now() + timedelta(days=1)
    expired = OcpiMessage.objects.filter(created_at__lt=privacy.kept_since("ocpi_messages", now))
    started = time.perf_counter()
    would = privacy.purge_expired(now, kinds=["ocpi_messages"], dry_run=True)["ocpi.ocpi_messages"]
    counted = time.perf_counter() - started
    started = time.perf_counter()
    gone = privacy.purge_expired(now, kinds=["ocpi_messages"], max_rows=cap)["ocpi.ocpi_messages"]
    elapsed = time.perf_counter() - started
    left = expired.count()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ocpi_ocpimessage")
    return (
        f"dry run counted {would:,} expired rows in {counted:.1f} s; deleted {gone:,} in {elapsed:.1f} s "
        f"({gone / elapsed:,.0f} rows/s, batches of the default size), {left:,} left for the next run"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000,50000000")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--prune-rows", type=int, default=500_000)
    parser.add_argument("--keep", action="store_true", help="Keep the database (default: dropped at the end).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    setup(fresh=True, name=DATABASE)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from emsp.models import Partner

    print(machine())
    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password-1")
    partners = [
        Partner.objects.create(name=f"CPO {i}", country_code="NL", party_id=f"C{i:02d}", role="CPO").pk
        for i in range(1, PARTNERS + 1)
    ]
    day = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    one_day = urlencode({"created_at__gte": day.isoformat(), "created_at__lt": (day + timedelta(days=1)).isoformat()})
    urls = {
        "first page": "/admin/ocpi/ocpimessage/",
        "partner (40 % of rows)": f"/admin/ocpi/ocpimessage/?partner__id__exact={partners[0]}",
        "partner (0.002 %)": f"/admin/ocpi/ocpimessage/?partner__id__exact={partners[9]}",
        "module cdrs": "/admin/ocpi/ocpimessage/?module=cdrs",
        "module credentials (0.001 %)": "/admin/ocpi/ocpimessage/?module=credentials",
        "failed": "/admin/ocpi/ocpimessage/?outcome=failed",
        "partner 9 + failed": f"/admin/ocpi/ocpimessage/?partner__id__exact={partners[8]}&outcome=failed",
        "one day": f"/admin/ocpi/ocpimessage/?{one_day}",
        "page 50": "/admin/ocpi/ocpimessage/?p=50",
        "search request id": "/admin/ocpi/ocpimessage/?q=",
    }
    try:
        for size in sizes:
            print(f"\n== {size:,} rows", flush=True)
            timings = load(size, partners)
            print("    load: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()), flush=True)
            print("    load average before measuring: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
            with connection.cursor() as cursor:
                cursor.execute("SELECT request_id FROM ocpi_ocpimessage WHERE id = %s", [size // 3])
                urls["search request id"] = "/admin/ocpi/ocpimessage/?q=" + cursor.fetchone()[0]
            results = measure(urls, args.requests, user)
            print(
                f"    {'list':<30} {'page p50':>9} {'p95 ms':>7} {'queries':>8} {'its SQL on the log p50':>23} {'p95 ms':>7}"
            )
            for label, p50, p95, n, _, db50, db95 in results:
                flag = "" if p95 < TARGET_MS else f"  over {TARGET_MS} ms"
                print(f"    {label:<30} {p50:9.1f} {p95:7.1f} {n:8} {db50:23.1f} {db95:7.1f}{flag}", flush=True)
            if size == sizes[-1]:
                for label, _, _, _, sql, _, _ in results:
                    print(f"\n    -- SQL on the log, {label}:")
                    for statement in sql:
                        print("      " + statement)
                for label in ("first page", "partner (0.002 %)", "failed", "module credentials (0.001 %)"):
                    for which, sql in zip(("bounded count", "page"), page_sql(urls[label], user), strict=True):
                        print(f"\n    -- EXPLAIN ANALYZE, {label}, {which}:")
                        print("      " + explain(sql).replace("\n", "\n      "))
                print("\n    prune: " + prune(size, args.prune_rows), flush=True)
    finally:
        if not args.keep:
            connection.close()
            import psycopg
            from django_env import BENCH_DATABASE_URL

            admin_url = BENCH_DATABASE_URL.rsplit("/", 1)[0] + "/postgres"
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            print(f"\n{DATABASE} dropped")


if __name__ == "__main__":
    main()
