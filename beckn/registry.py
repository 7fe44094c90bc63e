"""Public signing keys of Beckn subscribers: staff-trusted rows first, then the registry's `/lookup`
(core 1.1.0 `registry.yaml`, and the Succinct shape most networks run), cached."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils import timezone

from beckn.models import BecknSubscriber
from beckn.signing import KeyFormatError, load_public_key
from emsp import outbound
from emsp.datetimes import parse_utc
from emsp.ratelimit import rate_limit_hit

log = logging.getLogger(__name__)

CACHE_SECONDS = 300  # like beckn-onix's registry plugin: 5 min, or until the key's valid_until if sooner
MISS_CACHE_SECONDS = 30  # "no usable key" answers, so unknown keyIds don't each cost a registry call
REFRESH_MIN_INTERVAL_SECONDS = 10  # refresh=True within this long after a registry answer reuses that answer
USABLE_STATUSES = {"", "SUBSCRIBED"}  # registry.yaml Subscription.status; absent = usable (many registries omit it)
_MISS = "miss"
# The counter of BECKN_REGISTRY_LOOKUPS_PER_MINUTE (emsp/ratelimit.py); no "beckn:" prefix, which the per-subscriber
# counters use (a subscriber_id may be any string).
LOOKUP_BUDGET_KEY = "beckn-registry-lookups"


class LookupBudgetSpent(Exception):
    """A key we know nothing of, and the registry was asked about too many such keys this minute: refuse it
    without asking (BECKN_REGISTRY_LOOKUPS_PER_MINUTE)."""


@dataclass(frozen=True)
class SubscriberKey:
    subscriber_id: str
    unique_key_id: str
    signing_public_key: str
    type: str  # BAP | BPP | BG, "" when the registry did not say
    trusted: bool
    subscriber_url: str = ""  # where its callbacks go (its registered URL), "" when none is registered


# The rows of a subscriber, per process, for a few seconds: the lookup runs on every signed request (the
# ACK path). The trusted ones decide; the others (what the registry said earlier) only tell a key we have seen
# from a made-up one. Console changes clear it in the process that made them (BecknSubscriberAdmin.save_model);
# other processes see a change at most TRUSTED_MEMO_SECONDS later.
TRUSTED_MEMO_SECONDS = 5.0
# A refresh (after a failed verification) re-reads only a memo older than this: a stream of bad signatures
# then costs this process one query per subscriber per second, not one per request, before the NACK.
TRUSTED_REFRESH_MIN_SECONDS = 1.0
_trusted_memo: dict[str, tuple[float, list[BecknSubscriber]]] = {}


def forget_trusted() -> None:
    _trusted_memo.clear()


def trust(
    subscriber_id: str, unique_key_id: str, signing_public_key: str, *, subscriber_url: str | None = None
) -> None:
    """Trust a BAP's key as staff would in the console (the demo and benchmark BAPs use it); this process
    sees it at once, others within TRUSTED_MEMO_SECONDS."""
    defaults: dict[str, Any] = {
        "type": BecknSubscriber.Type.BAP,
        "signing_public_key": signing_public_key,
        "trusted": True,
    }
    if subscriber_url is not None:
        defaults["subscriber_url"] = subscriber_url
    BecknSubscriber.objects.update_or_create(
        subscriber_id=subscriber_id, unique_key_id=unique_key_id, defaults=defaults
    )
    forget_trusted()


def _subscriber_rows(subscriber_id: str, *, refresh: bool) -> list[BecknSubscriber]:
    """Every row of this subscriber, trusted or recorded from the registry: one query (a subscriber has a few)."""
    now = time.monotonic()
    hit = _trusted_memo.get(subscriber_id)
    if hit is not None:
        read_at = hit[0] - TRUSTED_MEMO_SECONDS
        if now - read_at < (TRUSTED_REFRESH_MIN_SECONDS if refresh else TRUSTED_MEMO_SECONDS):
            return hit[1]
    rows = list(BecknSubscriber.objects.filter(subscriber_id=subscriber_id))
    if len(_trusted_memo) > 10_000:
        _trusted_memo.clear()
    _trusted_memo[subscriber_id] = (now + TRUSTED_MEMO_SECONDS, rows)
    return rows


def public_key(subscriber_id: str, unique_key_id: str, *, refresh: bool = False) -> str | None:
    """The usable base64 Ed25519 public key for keyId `subscriber_id|unique_key_id`, or None."""
    try:
        key = lookup(subscriber_id, unique_key_id, refresh=refresh)
    except LookupBudgetSpent:
        return None
    return key.signing_public_key if key else None


def lookup(subscriber_id: str, unique_key_id: str, *, refresh: bool = False) -> SubscriberKey | None:
    """The usable key with what we know of its subscriber. Trusted rows decide alone: a trusted row that is
    not usable (e.g. staff set it UNSUBSCRIBED) blocks the key even if the registry still lists it.

    `refresh=True` skips the cache so a rotated key is picked up after a failed verification ("looked up
    again on failure"), except within REFRESH_MIN_INTERVAL_SECONDS of the last registry answer for this key,
    which is as fresh as a new one and keeps a stream of bad signatures from hammering the registry.

    Raises LookupBudgetSpent, without asking the registry, for a key we know nothing of (not cached, no row)
    once BECKN_REGISTRY_LOOKUPS_PER_MINUTE such keys were asked about this minute."""
    now = timezone.now()
    rows = [
        row
        for row in _subscriber_rows(subscriber_id, refresh=refresh)
        if not unique_key_id or row.unique_key_id == unique_key_id
    ]
    trusted = [row for row in rows if row.trusted]
    if trusted:
        usable = [row for row in trusted if row.is_usable(now)]
        if len(usable) != 1:  # none usable, or several keys for a keyId without unique_key_id
            return None
        row = usable[0]
        return SubscriberKey(
            row.subscriber_id,
            row.unique_key_id,
            row.signing_public_key,
            row.type,
            trusted=True,
            subscriber_url=row.subscriber_url,
        )

    registry_url = settings.BECKN_REGISTRY_URL.rstrip("/")
    if not registry_url:
        return None
    cache_key = "beckn:registry:" + hashlib.sha256(f"{subscriber_id}|{unique_key_id}".encode()).hexdigest()
    cached = cache.get(cache_key)
    recently_asked = cache.get(f"{cache_key}:asked") is not None
    if cached is not None and (not refresh or recently_asked):
        return None if cached == _MISS else SubscriberKey(**cached)
    if (cached is None or cached == _MISS) and not rows:
        _spend_lookup_budget(subscriber_id, unique_key_id)

    entries = _ask_registry(registry_url, subscriber_id, unique_key_id)
    if entries is None:
        return None  # registry unreachable or unreadable: not cached, the next request asks again
    cache.set(f"{cache_key}:asked", 1, REFRESH_MIN_INTERVAL_SECONDS)
    found, usable = _choose(entries, subscriber_id, unique_key_id, now)
    if found is not None:
        _remember(found, now)
    if usable is None:
        cache.set(cache_key, _MISS, MISS_CACHE_SECONDS)
        return None
    key = SubscriberKey(
        subscriber_id=subscriber_id,
        unique_key_id=usable["unique_key_id"],
        signing_public_key=usable["signing_public_key"],
        type=usable["type"],
        trusted=False,
        subscriber_url=usable["subscriber_url"],
    )
    seconds = CACHE_SECONDS
    if usable["valid_until"] is not None:
        seconds = min(seconds, int((usable["valid_until"] - now).total_seconds()))
    if seconds > 0:
        cache.set(cache_key, asdict(key), seconds)
    return key


def _spend_lookup_budget(subscriber_id: str, unique_key_id: str) -> None:
    """Count one registry lookup of a key we know nothing of, across every process (the counters of
    emsp/ratelimit.py); raise LookupBudgetSpent over BECKN_REGISTRY_LOOKUPS_PER_MINUTE. The per-subscriber rate
    limit counts only verified requests, and a miss is cached per keyId: without this, a stream of requests
    under made-up keyIds made one registry call each. Keys of trusted rows, cached answers and subscribers the
    registry told us of before are looked up as always, so a known partner is not locked out by such a stream.
    Refused lookups count too (a stream that keeps coming stays refused); a counter store that is down lets the
    lookup through (emsp/ratelimit.py fails open)."""
    limit = settings.BECKN_REGISTRY_LOOKUPS_PER_MINUTE
    verdict = rate_limit_hit(LOOKUP_BUDGET_KEY, limit)
    if not verdict.allowed:
        raise LookupBudgetSpent(
            f"{subscriber_id}|{unique_key_id} is unknown and the registry was asked about {limit} unknown keys "
            f"this minute (BECKN_REGISTRY_LOOKUPS_PER_MINUTE): not asked"
        )


def _ask_registry(registry_url: str, subscriber_id: str, unique_key_id: str) -> list[dict[str, Any]] | None:
    # Filter fields of both dialects: core 1.1.0 Subscription (`key_id`) and Succinct (`ukId`/`unique_key_id`).
    query: dict[str, Any] = {"subscriber_id": subscriber_id}
    if unique_key_id:
        query.update(key_id=unique_key_id, ukId=unique_key_id, unique_key_id=unique_key_id)
    try:
        response = outbound.send("POST", f"{registry_url}/lookup", json=query)
    except Exception as exc:
        log.warning("registry lookup of %s|%s failed: %s", subscriber_id, unique_key_id, exc)
        return None
    if response.status != 200:
        log.warning("registry lookup of %s|%s answered HTTP %s", subscriber_id, unique_key_id, response.status)
        return None
    try:
        data = response.json()
    except Exception as exc:
        log.warning("registry lookup of %s|%s: not JSON (%s)", subscriber_id, unique_key_id, exc)
        return None
    if isinstance(data, dict):  # one Subscription instead of the array registry.yaml specifies
        data = [data]
    if not isinstance(data, list):
        log.warning("registry lookup of %s|%s: expected an array, got %s", subscriber_id, unique_key_id, type(data))
        return None
    return [entry for entry in data if isinstance(entry, dict)]


def _normalise(entry: dict[str, Any]) -> dict[str, Any] | None:
    """Both shapes to one: core 1.1.0 (`url`, `key_id`, `domain`) and Succinct (`subscriber_url`, `ukId`,
    `unique_key_id`, `pub_key_id`). None when the validity dates cannot be read (we could not check them)."""
    key_id = next((str(entry[f]) for f in ("key_id", "ukId", "unique_key_id", "pub_key_id") if entry.get(f)), None)
    # Registries fill what they like: extended_attributes may be a string, domains an object. Only the shapes
    # we know are read; anything else counts as no domains.
    extended = entry.get("extended_attributes")
    domains = entry.get("domains") or (extended.get("domains") if isinstance(extended, dict) else None) or []
    if not domains and isinstance(entry.get("domain"), str) and entry["domain"]:
        domains = [entry["domain"]]
    try:
        valid_from, valid_until = _when(entry.get("valid_from")), _when(entry.get("valid_until"))
    except ValueError:
        log.warning("registry entry for %s has unreadable validity dates", entry.get("subscriber_id"))
        return None
    kind = str(entry.get("type") or "").upper()
    return {
        "subscriber_id": str(entry.get("subscriber_id") or ""),
        "unique_key_id": key_id,
        "signing_public_key": str(entry.get("signing_public_key") or ""),
        "subscriber_url": str(entry.get("subscriber_url") or entry.get("url") or ""),
        "type": kind if kind in BecknSubscriber.Type.values else "",
        "domains": [str(d) for d in domains] if isinstance(domains, list) else [],
        "status": str(entry.get("status") or "").upper(),
        "valid_from": valid_from,
        "valid_until": valid_until,
    }


def _when(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    return parse_utc(str(value))


def _choose(
    entries: list[dict[str, Any]], subscriber_id: str, unique_key_id: str, now: datetime
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the entry to record, the usable entry or None)."""
    matching = []
    for raw in entries:
        try:
            entry = _normalise(raw)
        except Exception:  # an entry of a shape we did not foresee: skipped, as one we cannot read (never a 500)
            log.warning("registry entry for %s|%s unreadable; skipped", subscriber_id, unique_key_id, exc_info=True)
            continue
        if entry is None or entry["subscriber_id"] != subscriber_id:
            continue
        if unique_key_id and entry["unique_key_id"] not in (None, unique_key_id):
            continue
        entry["unique_key_id"] = entry["unique_key_id"] or unique_key_id
        matching.append(entry)
    usable = [entry for entry in matching if _usable(entry, now)]
    if not unique_key_id and len({e["signing_public_key"] for e in usable}) > 1:
        log.warning("registry lists several keys for %s and keyId names none of them", subscriber_id)
        usable = []
    chosen = usable[0] if usable else None
    return (chosen or (matching[0] if matching else None)), chosen


def _usable(entry: dict[str, Any], now: datetime) -> bool:
    if entry["status"] not in USABLE_STATUSES:
        return False
    if entry["valid_from"] is not None and now < entry["valid_from"]:
        return False
    if entry["valid_until"] is not None and now >= entry["valid_until"]:
        return False
    try:
        load_public_key(entry["signing_public_key"])
    except KeyFormatError:
        log.warning("registry key of %s|%s is not Ed25519", entry["subscriber_id"], entry["unique_key_id"])
        return False
    return True


def _remember(entry: dict[str, Any], now: datetime) -> None:
    """Keep what the registry said as a non-trusted row, for the console; never overwrite a trusted one."""
    defaults = {
        "type": entry["type"],
        "signing_public_key": entry["signing_public_key"][:64],
        "subscriber_url": entry["subscriber_url"][:255],
        "domains": entry["domains"],
        "status": entry["status"] or BecknSubscriber.Status.SUBSCRIBED,
        "valid_from": entry["valid_from"],
        "valid_until": entry["valid_until"],
        "last_lookup_at": now,
    }
    if defaults["status"] not in BecknSubscriber.Status.values:
        defaults["status"] = BecknSubscriber.Status.INITIATED
    try:
        with transaction.atomic():
            BecknSubscriber.objects.filter(trusted=False).update_or_create(
                subscriber_id=entry["subscriber_id"], unique_key_id=entry["unique_key_id"][:255], defaults=defaults
            )
    except DatabaseError as exc:  # a trusted row with this keyId appeared meanwhile, or a concurrent insert
        log.info("not recording registry entry %s|%s: %s", entry["subscriber_id"], entry["unique_key_id"], exc)
