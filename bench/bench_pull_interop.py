"""Benchmark: a full pull of many locations through an OCPI implementation we did not write — extrawest-ocpi
from PyPI, as the CPO of tests/interop/ (tests/interop/extrawest_cpo.py, in its own virtualenv).

Usage: .venv/bin/python bench/bench_pull_interop.py [--locations 100000] [--page-limits 50,500]

For each page size: a fresh PostgreSQL database (emsp_bench_interop), our web server (gunicorn: the peer reads
our versions during the handshake), the peer with N generated locations (2 EVSEs, 1 connector each), our
registration with it, then

1. the peer alone: every page fetched with plain `requests`, nothing stored (what the library costs), and
2. our pull: `ocpi.sync.sync_module(partner, "locations", full=True)` timed in this process (requests,
   normalise, store, page by page, as the scheduled pull does).

Prints locations/s for both and the count stored against the `X-Total-Count` the peer announced. 50 is the
library's own page size (a client that asks nothing gets it); 500 is what a CPO running it may configure.
"""

from __future__ import annotations

import argparse
import base64
import os
import time
from pathlib import Path

import requests
from django_env import REPO, machine, setup, start_server, timed_full_pull

DATABASE = "emsp_bench_interop"
TOKEN_A = "bench-interop-token-a"


def peer_alone(partner_url: str, token: str) -> tuple[int, int, float]:
    """(pages, objects, seconds) to read every page from the peer, following offset/limit as we do."""
    headers = {"Authorization": "Token " + base64.b64encode(token.encode()).decode()}
    offset, pages, objects = 0, 0, 0
    started = time.perf_counter()
    limit = None
    while True:
        params = {"offset": offset, **({"limit": limit} if limit else {})}
        reply = requests.get(partner_url, params=params, headers=headers, timeout=120)
        data = reply.json()["data"]
        pages, objects, offset = pages + 1, objects + len(data), offset + len(data)
        limit = int(reply.headers["X-Limit"])
        if not data or offset >= int(reply.headers["X-Total-Count"]):
            return pages, objects, time.perf_counter() - started


def run(locations: int, page_limit: int) -> str:
    from tests.interop.peer import PeerProcess, venv_python

    url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/emsp_bench").rsplit("/", 1)[0]
    server, base = start_server(2, database_url=f"{url}/{DATABASE}", env={"OCPI_LOG_BODIES": "false"})
    from django.conf import settings

    settings.PUBLIC_BASE_URL = os.environ["PUBLIC_BASE_URL"] = base
    args = ["--token-a", TOKEN_A, "--locations", str(locations), "--tariffs", "100"]
    peer = PeerProcess(venv_python(), Path(REPO) / "var" / "bench-interop", *args, "--page-limit", str(page_limit))
    try:
        from ocpi.credentials import register_with_partner

        partner = register_with_partner(versions_url=peer.versions_url, token_a=TOKEN_A)
        endpoint = partner.endpoint_url("locations", "SENDER")
        assert endpoint is not None
        pages, objects, alone = peer_alone(endpoint, partner.outgoing_token)
        return (
            f"pages of {page_limit}: the peer alone serves {objects} locations in {pages} pages in {alone:.1f} s = "
            f"{objects / alone:,.0f} locations/s; our pull: {timed_full_pull(partner)}"
        )
    finally:
        peer.stop()
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--locations", type=int, default=100_000)
    parser.add_argument("--page-limits", default="50,500", help="the peer's page size(s), comma-separated")
    args = parser.parse_args()
    print(f"{machine()}; extrawest-ocpi 2025.7.16 as the CPO; {args.locations} locations")
    for i, limit in enumerate(int(v) for v in args.page_limits.split(",") if v.strip()):
        if i:
            from django.db import connection

            connection.close()  # the next run gets a fresh database
        setup(fresh=True, name=DATABASE)
        print(run(args.locations, limit), flush=True)


if __name__ == "__main__":
    main()
