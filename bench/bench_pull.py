"""Benchmark: a full pull of many locations from the CPO simulator over HTTP, in each OCPI version it speaks.

Usage: .venv/bin/python bench/bench_pull.py [--locations 100000] [--page-limit 500] [--versions 2.1.1,2.2.1,2.3.0]
                                           [--cpo-delay 0.2]

For each version: a fresh PostgreSQL database, our web server (gunicorn, so the simulator can read our
versions during the handshake), `python -m cposim --locations N [--ocpi-version V]` in its own process, the
credentials handshake, then `ocpi.sync.sync_module(partner, "locations", full=True)` timed in this process
(normalise + store, page by page, as the scheduled pull does). Prints locations/s and the count stored
against the `X-Total-Count` the simulator announced. `--cpo-delay S`: the simulator answers every request S seconds
late (its `slow` fault), as a CPO across the internet that builds each page on request does.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from django_env import REPO, machine, setup, start_server, timed_full_pull


def start_simulator(
    locations: int, page_limit: int, version: str, delay: float = 0.0
) -> tuple[subprocess.Popen[str], str]:
    args = [sys.executable, "-m", "cposim", "--port", "0", "--locations", str(locations)]
    if delay:
        args += ["--fault", f"slow={delay}"]
    args += ["--page-limit", str(page_limit), "--token-a", "bench-token-a", "--party-id", "BEN", "--name", "Bench CPO"]
    if version != "2.2.1":
        args += ["--ocpi-version", version]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 600  # generating 100k locations takes a while
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return proc, line.split(" ", 1)[1].strip()
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"the simulator did not start (OCPI {version}: does this cposim speak it?)")


def pull(version: str, locations: int, page_limit: int, delay: float = 0.0) -> str:
    server, base = start_server(2, env={"OCPI_LOG_BODIES": "false"})
    os.environ["PUBLIC_BASE_URL"] = base
    from django.conf import settings

    settings.PUBLIC_BASE_URL = base
    simulator, versions_url = start_simulator(locations, page_limit, version, delay)
    try:
        from ocpi.credentials import register_with_partner

        partner = register_with_partner(versions_url=versions_url, token_a="bench-token-a")
        return f"OCPI {partner.version}: {timed_full_pull(partner)}"
    finally:
        simulator.terminate()
        server.terminate()
        simulator.wait(timeout=30)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--locations", type=int, default=100_000)
    parser.add_argument("--page-limit", type=int, default=500, help="the simulator's X-Limit")
    parser.add_argument("--versions", default="2.1.1,2.2.1,2.3.0")
    parser.add_argument("--cpo-delay", type=float, default=0.0, help="seconds the simulator waits before each answer")
    args = parser.parse_args()
    print(f"{machine()}; {args.locations} locations, pages of {args.page_limit}, CPO delay {args.cpo_delay} s")
    for i, version in enumerate(v.strip() for v in args.versions.split(",") if v.strip()):
        if i:
            from django.db import connection

            connection.close()  # the next version gets a fresh database
        setup(fresh=True)
        print(pull(version, args.locations, args.page_limit, args.cpo_delay), flush=True)


if __name__ == "__main__":
    main()
