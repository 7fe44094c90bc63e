"""Request rate limits per caller and minute (a sliding window), shared by every web process through Redis
(Django's cache without REDIS_URL), and the one Redis client each process keeps."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
KEY_PREFIX = "ratelimit:"

_redis: Any = None


def redis_client() -> Any:
    """One Redis client per process (Django's cache builds a client per call, which showed in the Beckn ACK
    path's profile); None without REDIS_URL, where the Django cache (in-process) is used instead."""
    global _redis
    if _redis is None and settings.REDIS_URL:
        import redis

        _redis = redis.Redis.from_url(settings.REDIS_URL)
    return _redis


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # whole seconds until a request would be allowed again; 0 when allowed
    limit: int = 0


ALLOWED = Verdict(True)


def rate_limit_hit(key: str, limit: int, *, now: float | None = None) -> Verdict:
    """Count one request of `key` and say whether it is within `limit` requests a minute (0 = no limit).

    A sliding window approximated from two fixed one-minute counters (this minute's, and last minute's
    weighted by how much of it the window still covers): a burst across a minute boundary can't double the
    limit as a plain fixed window lets it. Refused requests count too, so a caller that keeps hammering stays
    refused. One Redis round trip (INCR, EXPIRE and GET in one pipeline), no database. If the counter store
    fails the request is allowed: the limiter must never be what takes the platform down."""
    if limit <= 0:
        return ALLOWED
    window = window_of(key, now)
    try:
        current, previous = _count(window.current_key, window.previous_key)
    except Exception:  # Redis down or unreachable: fail open (the rest of the request will say so if it matters)
        log.warning("rate limit counter unavailable for %s; request allowed", key, exc_info=True)
        return ALLOWED
    return verdict(current, previous, limit, window.elapsed)


@dataclass(frozen=True, slots=True)
class Window:
    """Where `key`'s counts are now: this minute's counter, last minute's, and the seconds into this minute."""

    current_key: str
    previous_key: str
    elapsed: float


def window_of(key: str, now: float | None = None) -> Window:
    now = time.time() if now is None else now
    minute = int(now // WINDOW_SECONDS)
    return Window(f"{KEY_PREFIX}{key}:{minute}", f"{KEY_PREFIX}{key}:{minute - 1}", now - minute * WINDOW_SECONDS)


def verdict(current: int, previous: int, limit: int, elapsed: float) -> Verdict:
    """The answer for this minute's count (this request included) and last minute's."""
    if _estimate(current, previous, elapsed) <= limit:
        return Verdict(True, 0, limit)
    return Verdict(False, retry_after_seconds(current, previous, limit, elapsed), limit)


def _estimate(current: int, previous: int, elapsed: float) -> float:
    return previous * (WINDOW_SECONDS - elapsed) / WINDOW_SECONDS + current


def retry_after_seconds(current: int, previous: int, limit: int, elapsed: float) -> int:
    """Seconds until one more request would fit, if the caller sends nothing meanwhile (at least 1)."""
    wait: float
    room = limit - current - 1  # what last minute's weighted count may still be for one more request now
    if room >= 0 and previous > 0 and (at := WINDOW_SECONDS * (1 - room / previous)) < WINDOW_SECONDS:
        # Still this minute: once enough of last minute has slid out of the window.
        wait = at - elapsed
    else:
        # Next minute, when this minute's count is the weighted one.
        at_next = WINDOW_SECONDS * (1 - (limit - 1) / current) if current > limit - 1 else 0.0
        wait = WINDOW_SECONDS - elapsed + at_next
    return max(1, math.ceil(wait))


def _count(current_key: str, previous_key: str) -> tuple[int, int]:
    """Add one to this minute's counter; this minute's and last minute's counts. Counters live two minutes."""
    client = redis_client()
    if client is not None:
        pipe = client.pipeline(transaction=False)
        pipe.incr(current_key)
        pipe.expire(current_key, 2 * WINDOW_SECONDS)
        pipe.get(previous_key)
        current, _, previous = pipe.execute()
        return int(current), int(previous or 0)
    if cache.add(current_key, 1, timeout=2 * WINDOW_SECONDS):
        current = 1
    else:
        try:
            current = cache.incr(current_key)
        except ValueError:  # expired between add and incr
            cache.add(current_key, 1, timeout=2 * WINDOW_SECONDS)
            current = 1
    return current, int(cache.get(previous_key) or 0)
