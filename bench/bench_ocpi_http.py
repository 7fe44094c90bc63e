"""Benchmark: the OCPI hot paths over HTTP against gunicorn on PostgreSQL.

Usage: .venv/bin/python bench/bench_ocpi_http.py [--workers 4] [--duration 15] [--parts patch|authorize|both]
- EVSE status PATCH receiver (`PATCH /ocpi/emsp/2.2.1/locations/{cc}/{pid}/{loc}/{evse}`): the highest
  throughput (wrk, closed loop, 8 connections) and the latency at a fixed --patch-rate (open loop).
  Targets (issue 15): ≥ 2,000 req/s, p99 < 20 ms at 1,500 req/s (the first floor: 500 req/s, p99 < 20 ms).
- Real-time authorization (`POST /ocpi/emsp/2.2.1/tokens/{uid}/authorize`) at a fixed --rta-rate.
  Target (issue 15): p99 < 5 ms at 500 req/s (the first floor: p99 < 10 ms at 200 req/s).
The open-loop generator is Python (bench/load.py): it prints the rate it really offered.
Server, load generator and PostgreSQL share the machine, so the figures are conservative.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django_env import REPO, machine, setup, start_server
from load import open_loop

TOKEN = "bench-cpo-token"
AUTH = {"Authorization": "Token " + base64.b64encode(TOKEN.encode()).decode(), "Content-Type": "application/json"}


def seed(locations: int, tokens: int) -> tuple[list[str], list[str]]:
    from emsp.models import Driver, Evse, Partner, Token, hash_token
    from emsp.services.catalogue import locations_store
    from tests.factories import ocpi_location

    partner = Partner.objects.create(
        name="Bench CPO", country_code="IN", party_id="BEN", state="CONNECTED", incoming_token_hash=hash_token(TOKEN)
    )
    objs = [ocpi_location("IN", "BEN", f"LOC{i:05d}", evses=2) for i in range(locations)]
    for i in range(0, len(objs), 500):
        locations_store(partner, objs[i : i + 500])
    paths = [
        f"/ocpi/emsp/2.2.1/locations/IN/BEN/{loc}/{uid}"
        for loc, uid in Evse.objects.values_list("location__location_id", "uid")
    ]
    driver = Driver.objects.create(name="Bench driver")
    Token.objects.bulk_create(
        [
            Token(driver=driver, uid=f"RFID{i:06d}", uid_key=f"RFID{i:06d}", contract_id=f"IN-EMS-C{i:08d}", issuer="x")
            for i in range(tokens)
        ]
    )
    from django.db import connection

    with connection.cursor() as cursor:  # statistics and visibility maps now, not by autovacuum mid-run
        cursor.execute("VACUUM ANALYZE")
    return paths, [f"RFID{i:06d}" for i in range(tokens)]


def wrk_patch(base: str, paths: list[str], duration: int) -> str:
    if not shutil.which("wrk"):
        return "wrk not installed (apt-get install wrk): closed-loop maximum skipped"
    script = (
        "paths = {"
        + ",".join(f'"{p}"' for p in paths)
        + "}\n"
        + f'''
counter = 0
-- two days ago, a second further on each request: newer each time, never in the future (refused as implausible)
base = {int((datetime.now(UTC) - timedelta(days=2)).timestamp())}
statuses = {{"AVAILABLE", "CHARGING", "BLOCKED", "AVAILABLE"}}
request = function()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ", base + counter)
  local body = '{{"status": "' .. statuses[(counter % 4) + 1] .. '", "last_updated": "' .. stamp .. '"}}'
  local headers = {{["Authorization"] = "{AUTH["Authorization"]}", ["Content-Type"] = "application/json"}}
  return wrk.format("PATCH", path, headers, body)
end
'''
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", "8", "-d", f"{duration}s", "--latency", "-s", f.name, base],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    Path(f.name).unlink()
    return out


def patches(base: str, paths: list[str], duration: int, rate: int) -> None:
    print("== EVSE status PATCH, closed loop (wrk -t1 -c8):")
    print(wrk_patch(base, paths, duration))
    # Each PATCH newer than the last, and all in the past: a future last_updated is refused as implausible.
    start = datetime.now(UTC) - timedelta(days=1)

    def patch(n: int) -> tuple[str, str, bytes, dict[str, str]]:
        stamp = (start + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = ("AVAILABLE", "CHARGING")[n % 2]
        return "PATCH", paths[n % len(paths)], f'{{"status": "{status}", "last_updated": "{stamp}"}}'.encode(), AUTH

    print(f"== EVSE status PATCH, open loop at {rate} req/s:")
    print(open_loop(base, patch, rate=rate, duration=duration).summary())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--locations", type=int, default=1000)
    parser.add_argument("--patch-rate", type=int, default=1500)
    parser.add_argument("--rta-rate", type=int, default=500)
    parser.add_argument("--parts", choices=("patch", "authorize", "both"), default="both")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    setup(fresh=True)
    paths, token_uids = seed(args.locations, 1000)
    proc, base = start_server(args.workers)
    try:
        print(f"gunicorn {args.workers} sync workers; {len(paths)} EVSEs, {len(token_uids)} tokens; {machine()}")
        if args.parts in ("patch", "both"):
            patches(base, paths, args.duration, args.patch_rate)
        if args.parts == "both":
            time.sleep(5)  # the PATCHes' dead rows vacuumed, their backlog gone: authorizations start quiet

        def authorize(n: int) -> tuple[str, str, bytes, dict[str, str]]:
            body = b'{"location_id": "LOC00001", "evse_uids": ["LOC00001-E1"]}'
            return "POST", f"/ocpi/emsp/2.2.1/tokens/{token_uids[n % len(token_uids)]}/authorize", body, AUTH

        if args.parts in ("authorize", "both"):
            # Each worker's first requests (connections, prepared statements, lazy imports) before measuring.
            open_loop(base, lambda n: authorize(n + 500_000), rate=args.rta_rate, duration=3)
            print(f"== Real-time authorization, open loop at {args.rta_rate} req/s (after 3 s of warm-up):")
            print(open_loop(base, authorize, rate=args.rta_rate, duration=args.duration).summary())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
