"""A small open-loop load generator: requests are scheduled at a fixed rate and latency is measured from
the scheduled time (so a slow server can't hide its queueing: no coordinated omission)."""

from __future__ import annotations

import http.client
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile `p` (0-100) of `values`; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Result:
    rate: float
    duration: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    start: float = 0.0  # perf_counter() when request 0 was scheduled; request n is scheduled n / rate later

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def summary(self) -> str:
        done = len(self.latencies_ms)
        return (
            f"offered {self.rate:.0f} req/s for {self.duration:.0f} s: {done} answered "
            f"({done / self.duration:.0f} req/s), errors {self.errors}, statuses {self.statuses}; latency ms "
            f"p50 {self.percentile(50):.2f} p90 {self.percentile(90):.2f} p99 {self.percentile(99):.2f} "
            f"max {max(self.latencies_ms, default=float('nan')):.2f} "
            f"mean {statistics.fmean(self.latencies_ms or [0]):.2f}"
        )


def open_loop(
    base_url: str, make_request: Callable[[int], Request], *, rate: float, duration: float, workers: int = 4
) -> Result:
    parts = urlsplit(base_url)
    jobs: queue.Queue[tuple[int, float] | None] = queue.Queue()
    result = Result(rate=rate, duration=duration)
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while (job := jobs.get()) is not None:
            n, scheduled = job
            method, path, body, headers = make_request(n)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                with lock:
                    result.errors += 1
                continue
            elapsed = (time.perf_counter() - scheduled) * 1000
            with lock:
                result.latencies_ms.append(elapsed)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    start = result.start = time.perf_counter()
    total = int(rate * duration)
    for n in range(total):
        scheduled = start + n / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        jobs.put((n, scheduled))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(timeout=60)
    return result
