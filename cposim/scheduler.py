"""A tiny delayed-task scheduler: one timer thread dispatching due jobs to a worker pool."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .common import log


class Scheduler:
    """Run callables after a delay; jobs of one session chain themselves, so they never overlap."""

    def __init__(self, workers: int = 8) -> None:
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cposim-job")
        self._thread = threading.Thread(target=self._run, name="cposim-scheduler", daemon=True)

    def start(self) -> None:
        """Start the timer thread."""
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` in the pool after `delay` seconds."""
        with self._cv:
            if self._stopped:
                return
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn, args))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._stopped:
                    return
                _, _, fn, args = heapq.heappop(self._heap)
            try:
                self._pool.submit(self._guard, fn, args)
            except RuntimeError:
                return

    @staticmethod
    def _guard(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:
            log("job failed: " + traceback.format_exc().replace("\n", " | "))

    def stop(self) -> None:
        """Drop pending jobs and stop the threads (running jobs finish on their own)."""
        with self._cv:
            self._stopped = True
            self._heap.clear()
            self._cv.notify_all()
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)
