"""Benchmark: the whole driver journey, 50 times, against real processes (gunicorn, Celery worker and beat on
Redis, PostgreSQL, two simulator CPOs), latency per step from the BAP's side.

Usage: .venv/bin/python bench/bench_journey.py [--journeys 50]
Each step is measured from sending the signed request to receiving its signed on_* callback; the
unsolicited steps (charging ACTIVE, final bill) from the request that caused them. The simulators answer
commands after 0.2 s and plug in 0.3 s later: that is CPO latency, reported apart. Target: confirm →
on_confirm < 1 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from django_env import REPO, machine, setup
from load import percentile

sys.path.insert(0, str(REPO))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/6")
# The platform's processes inherit this environment (tests/e2e/platform.py): measure the platform, not the
# rate limiter (emsp/ratelimit.py).
os.environ["OCPI_RATE_LIMIT_PER_MINUTE"] = "0"
os.environ["BECKN_RATE_LIMIT_PER_MINUTE"] = "0"

STEPS = ["search", "select", "init", "confirm", "start", "active", "status", "stop", "final bill"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--journeys", type=int, default=50)
    args = parser.parse_args()
    setup(fresh=True)
    from django.conf import settings

    from beckn import registry
    from beckn.bap_client import (
        BapClient,
        confirm_message,
        init_message,
        is_final_bill,
        search_message,
        select_message,
        update_message,
    )
    from beckn.keys import our_public_key_b64
    from emsp.models import Booking
    from emsp.services.bookings import reservation_pending
    from tests.e2e.platform import Platform, until

    tmp = Path(tempfile.mkdtemp(prefix="bench-journey-"))
    platform = Platform(tmp, web_processes=1, workers=1)
    platform.start()
    settings.PUBLIC_BASE_URL = platform.base
    settings.BECKN_SUBSCRIBER_URL = f"{platform.base}/beckn"
    fast = ("--command-delay", "0.2", "--plug-in-delay", "0.3", "--meter-interval", "0.5", "--locations", "20")
    timings: dict[str, list[float]] = {step: [] for step in STEPS}
    try:
        platform.start_cpos(*fast, extra_b=fast)
        client = BapClient(
            bpp_url=f"{platform.base}/beckn", subscriber_id="bap.bench.journey", bpp_public_key_b64=our_public_key_b64()
        )
        registry.trust(client.subscriber_id, client.unique_key_id, client.public_key_b64, subscriber_url=client.bap_uri)
        for n in range(args.journeys):
            client.transaction_id = f"bench-journey-{n}-{time.time_ns()}"

            def timed(step: str, action: str, message: dict[str, Any]) -> dict[str, Any]:
                _, callback, seconds = client.request(action, message, timeout=30)
                assert callback is not None and "error" not in callback.body, (
                    step,
                    callback.body if callback else None,
                )
                timings[step].append(seconds * 1000)
                return callback.body

            found = timed("search", "search", search_message(12.9716, 77.5946, radius_km=25))
            provider, item = next(
                (p["id"], i)
                for p in found["message"]["catalog"]["providers"]
                for i in p["items"]
                if "price" in i
                and any(
                    t["value"] == "AVAILABLE"
                    for g in i["tags"]
                    for t in g["list"]
                    if t["descriptor"]["code"] == "ocpi-status"
                )
            )
            timed("select", "select", select_message(provider, item["id"], 2))
            timed(
                "init",
                "init",
                init_message(
                    provider, item["id"], name="Bench", email=f"bench{n}@example.com", phone=f"+9198450{n:05d}"
                ),
            )
            order_id = timed("confirm", "confirm", confirm_message(provider, item["id"]))["message"]["order"]["id"]
            until(
                lambda oid=order_id: not reservation_pending(Booking.objects.get(order_id=oid)),
                20,
                "reservation result",
            )
            started = time.perf_counter()
            timed("start", "update", update_message(order_id, "start-charging"))
            while True:
                callback = client.wait("on_status", timeout=30)
                assert callback is not None, "no ACTIVE on_status"
                if callback.body["message"]["order"]["fulfillments"][0]["state"]["descriptor"]["code"] == "ACTIVE":
                    timings["active"].append((callback.received_at - started) * 1000)
                    break
            timed("status", "status", {"order_id": order_id})
            stopped = time.perf_counter()
            timed("stop", "update", update_message(order_id, "stop-charging"))
            while True:
                callback = client.wait("on_update", timeout=60)
                assert callback is not None, "no final on_update"
                if is_final_bill(callback.body):
                    timings["final bill"].append((callback.received_at - stopped) * 1000)
                    break
            print(f"journey {n + 1}/{args.journeys}: order {order_id} settled", flush=True)
        client.close()
    finally:
        platform.stop()
    print(f"\n{machine()}; gunicorn 1 process (2 workers), Celery worker (2 processes) + beat, Redis, 2 simulator CPOs")
    print(f"{'step':<12} {'n':>3} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for step in STEPS:
        values = timings[step]
        if values:
            print(
                f"{step:<12} {len(values):>3} {percentile(values, 50):>8.0f} {percentile(values, 95):>8.0f} {max(values):>8.0f}"
            )
    print(
        "start → active includes the simulator's 0.2 s command result and 0.3 s plug-in; stop → final bill its "
        "0.2 s stop result, the CDR push, our audit and receipt. mean confirm:",
        f"{statistics.fmean(timings['confirm']):.0f} ms",
    )


if __name__ == "__main__":
    main()
