"""Pull sync (transport §"Pull"): full and incremental (`date_from`) pulls of a partner's locations, tariffs,
sessions and CDRs. Also the ingest of one page of raw objects, shared with `manage.py ocpi_import`.

Lenient in: every object goes through ocpi.normalize; a bad object becomes a data-quality issue for the
partner and the rest of the page is kept."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.models import Tariff
from billing.services import records
from emsp.datetimes import DateTimeError, format_datetime, parse_utc
from emsp.models import Connector, Evse, Location, Partner, ci_key
from emsp.services import breakers, catalogue, sessions
from ocpi import hub, hubclientinfo, metrics
from ocpi.client import MAX_PAGES, OcpiAuthError, OcpiClient, OcpiClientError, Page, object_url
from ocpi.models import SyncLease, SyncRun
from ocpi.normalize import (
    Issue,
    Normalizer,
    Rejected,
    normalize_cdr,
    normalize_location,
    normalize_session,
    normalize_tariff,
    unwrap_object_payload,
)
from ocpi.quality import record_issues
from ocpi.versions import wire

log = logging.getLogger(__name__)

MODULES = ("locations", "tariffs", "sessions", "cdrs")
# mod_sessions: date_from is required on GET; a full pull looks this far back.
SESSIONS_FULL_LOOKBACK = timedelta(days=90)
# X-Total-Count is the partner's word: kept as announced, capped where a partner claims the absurd.
MAX_ANNOUNCED = 10**12
# Incremental pulls overlap the previous one a little: partners' clocks and commit times differ.
INCREMENTAL_OVERLAP = timedelta(minutes=2)

_NORMALIZERS: dict[str, Normalizer] = {
    "locations": normalize_location,
    "tariffs": normalize_tariff,
    "sessions": normalize_session,
    "cdrs": normalize_cdr,
}


@dataclass
class IngestCounts:
    received: int = 0
    accepted: int = 0
    normalised: int = 0
    rejected: int = 0
    stored: int = 0
    # Locations and tariffs: the key of each object listed, with the last_updated it was listed with.
    seen_keys: dict[str, str] = field(default_factory=dict)
    # Objects listed without a key we can read (one object each, which one unknown); objects whose key came before
    # in the same walk (a list that moved under its pages: one changed mid-pull shows twice and its neighbour not
    # at all; one inserted before the cursor shifts the rest); and those listed again the way pages that overlap
    # list them (an inclusive cursor: a page starting with the previous page's last object, as it was).
    unkeyed: int = 0
    repeated: int = 0
    overlapped: int = 0
    # The first and last keyed objects of the page (in the walk: of the last page added).
    first_key: str = ""
    last_key: str = ""

    def add(self, other: IngestCounts) -> None:
        self.received += other.received
        self.accepted += other.accepted
        self.normalised += other.normalised
        self.rejected += other.rejected
        self.stored += other.stored
        self.unkeyed += other.unkeyed
        self.repeated += other.repeated
        self.overlapped += other.overlapped
        for key in self.seen_keys.keys() & other.seen_keys.keys():
            overlap = key == self.last_key == other.first_key and self.seen_keys[key] == other.seen_keys[key]
            if overlap:
                self.overlapped += 1
            else:
                self.repeated += 1
        self.seen_keys.update(other.seen_keys)
        self.last_key = other.last_key or self.last_key

    @property
    def distinct(self) -> int:
        """The objects of a location or tariff list, each counted once."""
        return len(self.seen_keys) + self.unkeyed


def _object_id(raw: Any) -> str:
    if isinstance(raw, dict):
        return str(raw.get("id") or raw.get("uid") or "?")[:120]
    return "?"


def _listed_id(raw: Any) -> str:
    """An object of a pulled page by its party and id, as listed (a hub lists several parties' objects)."""
    if isinstance(raw, dict):
        return f"{raw.get('country_code')}*{raw.get('party_id')}*{_object_id(raw)}"
    return "?"


def ingest_page(partner: Partner, module: str, objects: list[Any]) -> IngestCounts:
    """Normalise and store one page of objects from `partner`. Bad objects are recorded, not fatal."""
    normalize = _NORMALIZERS[module]
    counts = IngestCounts(received=len(objects))
    clean_objects: list[dict[str, Any]] = []
    unreadable: list[Any] = []  # listed, but refused: a full pull must not take them for gone
    found: list[tuple[str, Issue]] = []
    for raw in objects:
        object_id = _object_id(raw)
        try:
            if not isinstance(raw, dict):
                raise Rejected("", "not a JSON object")
            clean, issues = normalize(raw, country_code=partner.country_code, party_id=partner.party_id)
            if not partner.owns(clean["country_code"], clean["party_id"]):
                # BOLA: a partner only feeds objects of parties it owns.
                raise Rejected("party_id", f"{clean['country_code']}*{clean['party_id']} is not this partner's party")
        except Rejected as exc:
            counts.rejected += 1
            found.append(
                (
                    object_id,
                    Issue(path=exc.path or "", code="rejected", message=exc.reason[:500], fixed=False),
                )
            )
            found.extend((object_id, issue) for issue in exc.issues)
            unreadable.append(raw)
            continue
        counts.accepted += 1
        if issues:
            counts.normalised += 1
        found.extend((object_id, issue) for issue in issues)
        clean_objects.append(clean)
    if module == "locations":
        result = catalogue.locations_store(partner, clean_objects)
        counts.stored = result.created + result.updated
        _count_keys(counts, catalogue.location_key, clean_objects + unreadable, partner)
    elif module == "tariffs":
        counts.stored = records.tariffs_store(partner, clean_objects)
        _count_keys(counts, records.tariff_key, clean_objects + unreadable, partner)
    elif module == "sessions":
        counts.stored = sessions.sessions_store(partner, clean_objects)
    elif module == "cdrs":
        counts.stored = records.cdrs_store(partner, clean_objects)
    record_issues(partner, module, found)
    return counts


def _count_keys(
    counts: IngestCounts, key: Callable[[str, str, str], str], objects: list[Any], partner: Partner
) -> None:
    """The keys of the objects a page listed, the refused ones too where their ids can be read (what a full pull
    saw: one we could not read this time is kept as we had it, not withdrawn); those without a readable id, and
    those the page lists twice, counted."""
    keys: dict[str, str] = {}
    for obj in objects:
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            counts.unkeyed += 1
            continue
        country_code, party_id = obj.get("country_code"), obj.get("party_id")
        if not isinstance(country_code, str) or not isinstance(party_id, str):
            country_code, party_id = partner.country_code, partner.party_id
        object_key = key(country_code.upper(), party_id.upper(), obj["id"])
        stamp = obj.get("last_updated") if isinstance(obj.get("last_updated"), str) else ""
        if object_key in keys:
            counts.repeated += 1  # twice on one page: no overlap of pages does that
        keys[object_key] = stamp
        counts.first_key = counts.first_key or object_key
        counts.last_key = object_key
    counts.seen_keys = keys


def _incremental_from(partner: Partner, module: str) -> datetime | None:
    """Where the next incremental pull starts: the last good full or incremental pull, less the overlap. A
    targeted pull (a command's timeout reading the sessions since the command, a booking check) covered only its
    own short range: counted, it had the next pull skip what changed before that range."""
    last_ok = (
        SyncRun.objects.filter(
            partner=partner,
            module=module,
            outcome=SyncRun.Outcome.OK,
            mode__in=(SyncRun.Mode.FULL, SyncRun.Mode.INCREMENTAL),
        )
        .order_by("-started_at")
        .values_list("started_at", "partner_time")
        .first()
    )
    if last_ok is None:
        return None
    started_at, partner_time = last_ok
    # The partner's clock where it told us one behind ours (its objects' last_updated are on it), else ours: the
    # earlier of the two can only fetch more (runs stored before this rule kept one ahead of ours too).
    return min(partner_time or started_at, started_at) - INCREMENTAL_OVERLAP


# A partner's clock believed up to this much behind ours (a timestamp further off is a broken clock or a made-up
# value: our own clock serves then).
PARTNER_CLOCK_TRUSTED = timedelta(hours=12)


def _partner_time(stamp: str, ours: datetime) -> datetime | None:
    """The partner's clock from an envelope's timestamp, when it can be read and is behind ours, by no more than
    PARTNER_CLOCK_TRUSTED. Never one ahead of ours: the next incremental pull would start later than our own
    clock says, and an envelope stamped on another clock than the objects' last_updated (a local time sent as
    UTC) would have it skip what changed in between; our clock serves then (the earlier can only fetch more)."""
    if not stamp:
        return None
    try:
        moment = parse_utc(stamp)
    except (DateTimeError, ValueError, OverflowError):
        return None
    return moment if timedelta(0) <= ours - moment <= PARTNER_CLOCK_TRUSTED else None


def sync_module(
    partner: Partner, module: str, *, full: bool = False, date_from: datetime | None = None
) -> SyncRun | None:
    """Pull one module. Without `date_from`, an incremental pull starts where the last good one did; with one,
    a targeted pull of what changed since then (it does not move where the next incremental pull starts).
    None, nothing asked, for a partner that is not connected: after its credentials DELETE "both parties must
    end any automated communication", and we hold no token for it (a command's timeout had called it with an
    empty `Authorization: Token `)."""
    if partner.state != Partner.State.CONNECTED:
        return None
    url = partner.endpoint_url(module, "SENDER")
    if not url:
        return None
    targeted = date_from is not None and not full
    if date_from is None and not full:
        date_from = _incremental_from(partner, module)
    if date_from is None and module == "sessions":
        date_from = timezone.now() - SESSIONS_FULL_LOOKBACK
    mode = SyncRun.Mode.FULL if full or date_from is None else SyncRun.Mode.INCREMENTAL
    mode = SyncRun.Mode.TARGETED if targeted else mode
    # Where the next incremental pull would start without this run: kept there if this one ends open.
    base = date_from if mode == SyncRun.Mode.INCREMENTAL else _incremental_from(partner, module)
    run = SyncRun.objects.create(partner=partner, module=module, mode=mode, date_from=date_from)
    params = {"date_from": format_datetime(date_from)} if date_from else {}
    totals = IngestCounts()
    paging = _Paging()
    try:
        try:
            paging = _walk(partner, module, url, params, run, totals)
        except OcpiAuthError:
            if run.pages:
                raise
            # Lenient in: the partner may want the other token encoding ([d2] transport NOTE).
            partner.outgoing_token_base64 = not partner.outgoing_token_base64
            paging = _walk(partner, module, url, params, run, totals)
            Partner.objects.filter(pk=partner.pk).update(outgoing_token_base64=partner.outgoing_token_base64)
    except OcpiClientError as exc:
        partner.refresh_from_db(fields=["outgoing_token_base64"])
        run.outcome = SyncRun.Outcome.FAILED
        run.error = str(exc)[:2000]
        log.warning("pull of %s from %s failed: %s", module, partner, exc)
    else:
        run.outcome = SyncRun.Outcome.OK
        if mode != SyncRun.Mode.TARGETED and (paging.open_end or run.pages >= MAX_PAGES):
            # The walk ended before the end of the list (the page cap; an offset ignored): what it did not read
            # is still to be pulled, and an OK run is where the next incremental pull starts. `_incremental_from`
            # takes the earlier of a run's partner_time and its started_at: this run's partner_time is set to
            # where the next incremental pull would have started without it (this one's own date_from; for a
            # full pull, the last good pull's base, else its own date_from, else the epoch: everything), plus the
            # overlap `_incremental_from` takes off again, so the start stays put instead of moving back each time.
            run.partner_time = (base or date_from or _EPOCH) + INCREMENTAL_OVERLAP
        if mode == SyncRun.Mode.FULL and _walked_whole(run, totals, paging):
            seen = set(totals.seen_keys)
            if module == "locations":
                if paging.continued_pages:
                    seen |= _unlisted_locations_kept(partner, url, run, seen)
                catalogue.locations_withdraw_missing(partner, seen, run.started_at)
            elif module == "tariffs":
                if paging.continued_pages:
                    seen |= _unlisted_tariffs_kept(partner, run, seen)
                records.tariffs_delete_missing(partner, seen, run.started_at)
    run.finished_at = timezone.now()
    run.save()
    metrics.count_sync_run(run)
    return run


# After a walk paged on by offset without X-Total-Count, at most this many locations it did not list are asked
# for one by one before they are withdrawn; more, and none is asked for until a second pull misses them too
# (`_missed_twice`). A second miss deletes no more tariffs than this at once.
MAX_UNLISTED_CHECKS = 100
# Of the locations a second pull missed too, at most this many are asked for alone in a pull, spread over them;
# only those the CPO does not know are withdrawn, the rest wait for the next pulls.
MAX_MISSED_TWICE_CHECKS = 100
_BATCH = 5000


@dataclass(frozen=True)
class _Unlisted:
    """A location (not withdrawn) or tariff we held from before a full pull that the pull did not list."""

    pk: int
    key: str
    party: tuple[str, str]
    object_id: str
    stamp: str  # its last_updated as we hold it (format_datetime, to the microsecond)
    received_at: datetime


def _unlisted(partner: Partner, run: SyncRun, seen: set[str]) -> list[_Unlisted]:
    """The partner's locations or tariffs (`run.module`) held from before the pull that it did not list."""
    if run.module == "locations":
        held = Location.objects.filter(partner=partner, withdrawn_at__isnull=True, received_at__lt=run.started_at)
        id_field = "location_id"
    else:
        held = Tariff.objects.filter(partner=partner, received_at__lt=run.started_at)
        id_field = "tariff_id"
    columns = ("pk", "ocpi_key", "country_code", "party_id", id_field, "last_updated", "received_at")
    return [
        _Unlisted(pk, key, (country_code, party_id), object_id, format_datetime(last_updated, "micros"), received_at)
        for pk, key, country_code, party_id, object_id, last_updated, received_at in held.values_list(
            *columns
        ).iterator(2000)
        if key not in seen
    ]


def _by_party(rows: list[_Unlisted]) -> dict[tuple[str, str], list[_Unlisted]]:
    by_party: dict[tuple[str, str], list[_Unlisted]] = {}
    for row in rows:
        by_party.setdefault(row.party, []).append(row)
    return by_party


def _not_listed(count: int, noun: str) -> str:
    """A finding's subject, counted: 1 tariff was, 2 tariffs were."""
    return f"{count} {noun} was" if count == 1 else f"{count} {noun}s were"


def _countable(partner: Partner, unlisted: list[_Unlisted], seen: set[str]) -> set[tuple[str, str]]:
    """The parties whose unlisted objects may count as missed by a pull (`_missed_twice`): those it listed an
    object of, that can be reached. A party none of whose objects came tells nothing of each (a hub that left out
    a party it could not reach at that moment), nor does one the hub's ClientInfo says can't be reached now."""
    listed = {"*".join(key.split("*", 2)[:2]) for key in seen}
    parties = {u.party for u in unlisted}
    return {p for p in parties if ci_key(*p) in listed and not hub.unreachable_reason(partner, p)}


def _missed_twice(
    partner: Partner, run: SyncRun, unlisted: list[_Unlisted], countable: set[tuple[str, str]]
) -> tuple[int | None, set[str]]:
    """The id of the previous full pull of the module, and the keys of the objects this pull did not list that it
    did not list either and kept (its `unlisted`), of which nothing was received since it began. A skip by a
    shifted offset (`_unlisted_locations_kept`) falls on whichever object stood at a page boundary when one before
    it was deleted mid-pull; the same object twice in a row would be an extraordinary coincidence. Received: the
    object stored (pulled, asked for alone, pushed: its received_at); a change to it or, for a location, to an
    EVSE or connector of it pushed with a stamp (its last_updated moves on, as parents' do); an EVSE's status
    heard (Evse.status_updated_at). Only objects of `countable` parties.

    The previous full pull is the last one that had ended when this one began: one still running then, or begun
    since (pulls not under the partner's lease: `ocpi_register --partner`, the console's "pull now"), missed what
    it missed at the same time, and two misses at once are one. One that failed, or noted nothing (it did not see
    the whole list), starts the count again."""
    previous = (
        SyncRun.objects.filter(
            partner=partner, module=run.module, mode=SyncRun.Mode.FULL, finished_at__lte=run.started_at
        )
        .exclude(outcome=SyncRun.Outcome.RUNNING)
        .exclude(pk=run.pk)
        .order_by("-finished_at", "-pk")
        .values_list("pk", "outcome", "started_at")
        .first()
    )
    if previous is None or previous[1] != SyncRun.Outcome.OK:
        return None, set()
    previous_pk, _, previous_start = previous
    # Read apart from the choice of the run: a sort carrying every run's `unlisted` (up to one key per object).
    noted = SyncRun.objects.filter(pk=previous_pk).values_list("unlisted", flat=True).first()
    if not noted:
        return None, set()
    missed = [
        u for u in unlisted if u.party in countable and noted.get(u.key) == u.stamp and u.received_at < previous_start
    ]
    if run.module == "locations" and missed:
        pks = [u.pk for u in missed]
        heard: set[int] = set()
        for start in range(0, len(pks), _BATCH):
            heard |= set(
                Evse.objects.filter(
                    location_id__in=pks[start : start + _BATCH], status_updated_at__gte=previous_start
                ).values_list("location_id", flat=True)
            )
        missed = [u for u in missed if u.pk not in heard]
    return previous_pk, {u.key for u in missed}


def _missed_twice_text(count: int, previous: int | None) -> str:
    return f"{count} not listed by the previous full pull (pull {previous}) either, nothing received since"


@dataclass
class _Checked:
    """What asking for unlisted locations one by one came to: the keys to keep, those of them the CPO sent, and
    what to say of it."""

    kept: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    outcome: str = ""
    fixed: bool = False


@dataclass
class _Asking:
    """One pull's asking for locations alone: each party's control, asked once (`_control`), and whether the
    partner stopped answering (then nothing more is asked)."""

    controls: dict[tuple[str, str], str] = field(default_factory=dict)
    silent: bool = False
    seen: set[str] = field(default_factory=set)


def _unlisted_locations_kept(partner: Partner, url: str, run: SyncRun, seen: set[str]) -> set[str]:
    """The keys of the locations a full pull did not list that are to be kept, where it paged on by offset
    without X-Total-Count (`_Paging`): an object the CPO deleted from an earlier page between two requests
    shifts the rest back by one, and the object then first on the next page is never sent, though the CPO still
    lists it; no total tells. Each is asked for alone (mod_locations Sender interface: GET
    {locations endpoint}/{location_id}), and only one the CPO says it does not know (HTTP 404, OCPI 2003 or
    2004, or no data) is withdrawn; one it sends is stored and kept. First, for each party among them, a location
    of that party the pull listed is asked for (`_control`). More than MAX_UNLISTED_CHECKS: none is asked for.
    One the previous full pull missed too, with nothing received of it since (`_missed_twice`), is gone, or the
    CPO's list is cut short the same way each time: `_ask_missed_twice` tells which. Those kept without being sent
    are noted on the run (`SyncRun.unlisted`) for the next full pull. A finding says what became of them."""
    unlisted = _unlisted(partner, run, seen)
    if not unlisted:
        return set()
    countable = _countable(partner, unlisted, seen)
    previous, twice = _missed_twice(partner, run, unlisted, countable)
    asking = _Asking(seen=seen)
    missed_twice = [u for u in unlisted if u.key in twice]
    once = [u for u in unlisted if u.key not in twice]
    rechecked = _ask_missed_twice(partner, url, run, missed_twice, asking) if missed_twice else _Checked(fixed=True)
    checked = _ask_alone(partner, url, run, once, asking) if once else _Checked(fixed=True)
    kept, sent = checked.kept | rechecked.kept, checked.sent | rechecked.sent
    run.unlisted = {u.key: u.stamp for u in unlisted if u.key in kept and u.key not in sent and u.party in countable}
    parts = []
    if missed_twice:
        parts.append(f"{_missed_twice_text(len(missed_twice), previous)}: {rechecked.outcome}")
    if once:
        parts.append((f"the other {len(once)}: " if missed_twice else "") + checked.outcome)
    if run.unlisted:
        parts.append(
            f"{len(run.unlisted)} of those kept: asked for alone if the next full pull does not list them either"
        )
    message = (
        f"{_not_listed(len(unlisted), 'location')} not listed by a pull paged on by offset without X-Total-Count: "
        + "; ".join(parts)
    )
    log.warning("pull %s of locations from %s: %s", run.pk, partner, message)
    issue = Issue(path="Link", code="unlisted_checked", message=message, fixed=checked.fixed and rechecked.fixed)
    record_issues(partner, "locations", [(f"pull {run.pk}", issue)])
    return kept


def _control(partner: Partner, url: str, run: SyncRun, party: tuple[str, str], asking: _Asking) -> str:
    """What the CPO answers for a location of `party` this pull listed, asked for alone (once a pull): a CPO
    without GET of one location answers 404 for every location, and its answers then tell nothing unless this
    one is "sent". Behind a hub each party is its own platform, with or without that GET."""
    if party not in asking.controls:
        if asking.silent:
            return "silent"
        control = _listed_location(partner, party, asking.seen)
        answer = "untold" if control is None else _location_asked_alone(partner, url, party, control)
        _renew_lease(partner)  # a hub timing out each party's control had outlived the lease
        asking.controls[party] = answer
        asking.silent = answer == "silent"
    return asking.controls[party]


def _ask_each(
    partner: Partner, url: str, party: tuple[str, str], rows: list[_Unlisted], asking: _Asking
) -> dict[str, str]:
    """The CPO's answer for each of `rows` asked for alone, by key (`_location_asked_alone`). Once it gives none
    (or its breaker opens), the rest are "silent", not asked."""
    answers: dict[str, str] = {}
    for row in rows:
        if asking.silent:
            answers[row.key] = "silent"
            continue
        answers[row.key] = _location_asked_alone(partner, url, party, row.object_id)
        _renew_lease(partner)
        asking.silent = answers[row.key] == "silent"
    return answers


def _ask_alone(partner: Partner, url: str, run: SyncRun, unlisted: list[_Unlisted], asking: _Asking) -> _Checked:
    """Ask the CPO for each location a pull missed once alone, after its party's control
    (`_unlisted_locations_kept`)."""
    if len(unlisted) > MAX_UNLISTED_CHECKS:
        outcome = f"more than the {MAX_UNLISTED_CHECKS} asked for one by one: none was withdrawn"
        return _Checked(kept={u.key for u in unlisted}, outcome=outcome)
    by_party = _by_party(unlisted)
    checked, answers = _Checked(), {"sent": 0, "unknown": 0, "untold": 0}
    untold_parties: list[str] = []
    for party, rows in by_party.items():
        if _control(partner, url, run, party, asking) != "sent":
            # No answer (or the breaker open): the rest is not asked for. Another answer: this party's
            # answers tell nothing.
            checked.kept |= {u.key for u in rows}
            untold_parties.append("*".join(party))
            continue
        for key, answer in _ask_each(partner, url, party, rows, asking).items():
            answer = "untold" if answer == "silent" else answer
            answers[answer] += 1
            if answer != "unknown":
                checked.kept.add(key)
            if answer == "sent":
                checked.sent.add(key)
    if len(untold_parties) == len(by_party):
        checked.outcome = (
            "a location it listed, asked for alone, was not sent: the CPO's answers tell nothing, none was withdrawn"
        )
        return checked
    checked.outcome = (
        f"asked for one by one: {answers['unknown']} unknown to the CPO (withdrawn), {answers['sent']} sent "
        f"(kept), {answers['untold']} without an answer that tells (kept)"
    )
    if untold_parties:
        checked.outcome += (
            f"; of {', '.join(untold_parties)} a location it listed, asked for alone, was not sent: none of theirs "
            "was withdrawn"
        )
    checked.fixed = not answers["untold"] and not untold_parties
    return checked


def _spread(rows: list[_Unlisted], count: int, turn: int) -> list[_Unlisted]:
    """`count` of `rows` spread evenly over them in key order, or all of them, beginning at row `turn`: the same
    sample each pull had left the rest never asked, and one location whose answer tells nothing, always in it,
    had kept its whole party from ever being withdrawn."""
    if count <= 0:
        return []
    ordered = _turned(sorted(rows, key=lambda u: u.key), turn)
    if len(ordered) <= count:
        return ordered
    return [ordered[i * len(ordered) // count] for i in range(count)]


def _turned(items: list[Any], turn: int) -> list[Any]:
    """`items` begun at position `turn` (wrapping round)."""
    if not items:
        return items
    start = turn % len(items)
    return items[start:] + items[:start]


def _ask_missed_twice(partner: Partner, url: str, run: SyncRun, rows: list[_Unlisted], asking: _Asking) -> _Checked:
    """Locations two full pulls in a row did not list, nothing received of them in between (`_missed_twice`):
    gone from the CPO, or beyond the end of a list cut short the same way each pull (pages of a limit without
    Link, one short of it because the CPO drops an unpublished row after applying the limit: the walk takes it
    for the end, and never reaches the rest). Only the CPO can say which: each is asked for alone after its
    party's control (`_control`); more than MAX_MISSED_TWICE_CHECKS, that many of them, spread over them. A party
    one of whose locations is sent has none withdrawn, kept and noted again: its misses are systematic (the one
    sent is stored). A party whose locations asked for are all unknown to the CPO has those withdrawn; the rest
    of a sample stay noted for the next pulls to ask (a sample says nothing of them: a list cut short may still
    hold them, its tail in the CPO's order, not in our keys'). Any other answer (its control not sent, an answer
    that tells nothing) withdraws none of its: nothing is withdrawn on a guess."""
    checked = _Checked()
    # Where this pull begins, drawn anew each pull (seeded by the run, so a pull asked again asks the same): a
    # count of the module's runs stood still once old runs were pruned, and a step of any fixed size skips the
    # rows (and parties) it is a multiple away from; drawn, none is always left out.
    turn = random.Random(run.pk).randrange(1 << 30)  # which to ask, not a secret
    grouped = _by_party(rows)
    parties = _turned(sorted(grouped), turn)
    # Behind a hub with more parties than the budget, the rest wait for the next pulls (each party's control is a
    # request too).
    for party in parties[MAX_MISSED_TWICE_CHECKS:]:
        checked.kept |= {u.key for u in grouped[party]}
    # Controls first: only parties whose control was sent share the asking (a party without GET of one location
    # had filled a sample with its rows, and a party behind the same hub that answers was never asked).
    by_party: dict[tuple[str, str], list[_Unlisted]] = {}
    uncontrolled: list[str] = []
    for party in parties[:MAX_MISSED_TWICE_CHECKS]:
        if _control(partner, url, run, party, asking) == "sent":
            by_party[party] = grouped[party]
        else:
            checked.kept |= {u.key for u in grouped[party]}
            uncontrolled.append("*".join(party))
    pool = [u for party_rows in by_party.values() for u in party_rows]
    # One of each party first (so each is asked every pull), then the rest of the budget spread over the others.
    picked = {_spread(party_rows, 1, turn)[0].key for party_rows in by_party.values()}
    rest = [u for u in pool if u.key not in picked]
    picked |= {u.key for u in _spread(rest, MAX_MISSED_TWICE_CHECKS - len(picked), turn // 7)}
    sampled = len(picked) < len(rows)
    checked.kept |= {u.key for u in pool if u.key not in picked}
    answers = {"sent": 0, "unknown": 0, "untold": 0}
    withdrawn = 0
    systematic: list[str] = []
    untold: list[str] = []
    for party, party_rows in by_party.items():
        keys = {u.key for u in party_rows if u.key in picked}
        asked = _ask_each(partner, url, party, [u for u in party_rows if u.key in picked], asking)
        for answer in asked.values():
            answers["untold" if answer == "silent" else answer] += 1
        checked.sent |= {key for key, answer in asked.items() if answer == "sent"}
        if all(answer == "unknown" for answer in asked.values()):
            withdrawn += len(asked)
            continue
        checked.kept |= keys
        (systematic if "sent" in asked.values() else untold).append("*".join(party))
    checked.fixed = checked.kept <= checked.sent
    if not by_party:
        checked.outcome = (
            "a location it listed, asked for alone, was not sent: the CPO's answers tell nothing, none was withdrawn"
        )
        return checked
    how = f"{len(picked)} of {len(rows)}, spread over them; the rest noted for the next pull" if sampled else "each"
    checked.outcome = (
        f"asked for alone ({how}): {answers['unknown']} unknown to the CPO, {answers['sent']} sent, "
        f"{answers['untold']} without an answer that tells; {withdrawn} withdrawn"
    )
    if systematic:
        checked.outcome += (
            f"; of {', '.join(systematic)} one was sent: its list is cut short the same way each pull, none of "
            "theirs was withdrawn"
        )
    if untold:
        checked.outcome += f"; of {', '.join(untold)} an answer told nothing: none of theirs was withdrawn"
    if uncontrolled:
        checked.outcome += (
            f"; of {', '.join(uncontrolled)} a location it listed, asked for alone, was not sent: none of theirs "
            "was withdrawn"
        )
    return checked


def _listed_location(partner: Partner, party: tuple[str, str], seen: set[str]) -> str | None:
    """The id of a location of `party` this pull listed, if any: one of its keys (`seen`), not one stored since
    the pull began. A location listed older than ours (an EVSE's stamped push moved ours past the CPO's own, its
    parent not bumped) is not stored again; where every listed one was, no control was found and nothing was
    ever asked. The oldest held first, the same every pull: in the table's order (PostgreSQL's moves as rows are
    rewritten) the control was now and then one the CPO deleted after listing it, its 404 telling nothing."""
    held = Location.objects.filter(partner=partner, country_code=party[0], party_id=party[1]).order_by("pk")
    for key, location_id in held.values_list("ocpi_key", "location_id").iterator(2000):
        if key in seen:
            return location_id
    return None


def _location_asked_alone(partner: Partner, url: str, party: tuple[str, str], location_id: str) -> str:
    """What the CPO says of one location asked for alone: "sent" (stored then), "unknown" (HTTP 404, OCPI 2003 or
    2004, or no data), "untold" (another error, a hub's error — OCPI 4xxx: unknown receiver, a forwarded request
    timed out — whatever its HTTP status, or a party behind a hub that can't be reached) or "silent" (no answer,
    or not asked: the partner's breaker is open)."""
    if hub.unreachable_reason(partner, party):
        return "untold"
    try:
        reply = OcpiClient(partner, to_party=party).get(object_url(url, location_id), module="locations")
    except OcpiClientError as exc:
        if exc.http_status is None:
            return "silent"
        if exc.ocpi_status is not None and 4000 <= exc.ocpi_status < 5000:
            return "untold"  # the hub's word, not the CPO's: a 404 with it says nothing of the location
        return "unknown" if exc.http_status == 404 or exc.ocpi_status in (2003, 2004) else "untold"
    if reply.data in (None, "", {}, []):
        return "unknown"
    try:
        found = unwrap_object_payload(reply.data)
    except Rejected:
        return "untold"
    ingest_page(partner, "locations", wire.page(partner, "locations", [found]))
    return "sent"


def _unlisted_tariffs_kept(partner: Partner, run: SyncRun, seen: set[str]) -> set[str]:
    """The keys of the tariffs a full pull paged on by offset without X-Total-Count did not list that are to be
    kept: they may have been skipped as locations may (`_unlisted_locations_kept`), and the Tariffs Sender
    interface has no GET of one tariff to ask. One the previous full pull missed too, with nothing received of
    it since (`_missed_twice`), is gone and deleted, unless a connector names it (`_tariffs_in_use`), or more than
    MAX_UNLISTED_CHECKS would go at once (a list cut short the same way each pull, not so many gone). The others
    are kept and noted on the run (`SyncRun.unlisted`) for the next full pull. A finding says so."""
    unlisted = _unlisted(partner, run, seen)
    if not unlisted:
        return set()
    countable = _countable(partner, unlisted, seen)
    previous, twice = _missed_twice(partner, run, unlisted, countable)
    in_use = _tariffs_in_use(partner, twice) if twice else set()
    gone = twice - in_use
    too_many = len(gone) > MAX_UNLISTED_CHECKS
    if too_many:
        gone = set()
    kept = {u.key for u in unlisted if u.key not in gone}
    run.unlisted = {u.key: u.stamp for u in unlisted if u.key in kept and u.party in countable}
    parts = []
    if twice:
        if too_many:
            outcome = f"none deleted, more than the {MAX_UNLISTED_CHECKS} at once (kept)"
        else:
            outcome = f"{len(gone)} deleted"
        if in_use:
            outcome += f", {len(in_use)} named by a connector of a location we hold (kept)"
        parts.append(f"{_missed_twice_text(len(twice), previous)}: {outcome}")
    if len(unlisted) > len(twice):
        once = len(unlisted) - len(twice)
        parts.append(f"{'the other ' if twice else ''}{once} kept (a tariff can't be asked for alone)")
    if run.unlisted:
        parts.append(
            f"{len(run.unlisted)} of those kept: deleted if the next full pull does not list them either, unless a "
            "connector names them"
        )
    message = (
        f"{_not_listed(len(unlisted), 'tariff')} not listed by a pull paged on by offset without X-Total-Count: "
        + "; ".join(parts)
    )
    log.warning("pull %s of tariffs from %s: %s", run.pk, partner, message)
    issue = Issue(path="Link", code="unlisted_checked", message=message, fixed=not kept)
    record_issues(partner, "tariffs", [(f"pull {run.pk}", issue)])
    return kept


def _tariffs_in_use(partner: Partner, keys: set[str]) -> set[str]:
    """Of `keys`, the tariffs a connector of the partner's locations (not withdrawn) names in its `tariff_ids`
    (of its location's party): mod_tariffs removes a tariff when it is "not used any more", and a charger whose
    tariff is gone can't be quoted or booked. One query: each distinct list of ids, with its party."""
    in_use: set[str] = set()
    named = (
        Connector.objects.filter(evse__location__partner=partner, evse__location__withdrawn_at__isnull=True)
        .order_by()
        .values_list("evse__location__country_code", "evse__location__party_id", "tariff_ids")
        .distinct()
    )
    for country_code, party_id, tariff_ids in named.iterator(2000):
        for tariff_id in tariff_ids if isinstance(tariff_ids, list) else []:
            if isinstance(tariff_id, str) and (key := ci_key(country_code, party_id, tariff_id)) in keys:
                in_use.add(key)
    return in_use


@dataclass
class _Paging:
    """What a walk's paging showed besides its objects: a `Link` that pointed away from the endpoint, and pages
    that came full without `Link` or `X-Total-Count`. transport_and_format: no Link is the last page; but
    partners that cap their pages at a limit leave it out with more to come, and a pull that took their first
    page for the list withdrew the rest. After such a page the walk goes on by offset/limit, until a page
    comes short or empty."""

    link_refused: bool = False
    # The first page that came full (as many objects as its limit) without Link or X-Total-Count: its size and
    # limit (0 while none did); the pages asked for by offset/limit after it, and the objects they brought.
    full_page: int = 0
    limit: int = 0
    continued_pages: int = 0
    continued_objects: int = 0
    # The walk stopped on such a page, not on a short or empty one: at the page cap, or the next offset was
    # answered with objects all listed before (an offset ignored). Its pages are not known to be the whole list
    # then. `refused`: the next offset was answered with an error saying it is past the end (its HTTP and OCPI
    # status): the end of the list, as an empty page.
    open_end: bool = False
    offset_ignored: bool = False
    refused: str = ""


def _page_limit(page: Page, asked: int | None) -> int | None:
    """The most objects a page could hold: the partner's `X-Limit` where it sent a usable one, the limit we
    asked for where we asked one, the smaller where both are known; None when neither is."""
    limits = [limit for limit in (asked, page.limit) if limit]
    return min(limits) if limits else None


def _walked_whole(run: SyncRun, totals: IngestCounts, paging: _Paging) -> bool:
    """Did this pull see the partner's whole list? Only then are "all the pages together the new truth"
    (mod_locations) and what it did not see withdrawn. Not when fewer distinct objects came than
    `X-Total-Count` announced, nor when one came twice changed: a list that shifted under the pages (the spec's
    advice is to page again, the next full pull will). Offset paging over a list sorted by last_updated shows
    an object updated mid-pull twice (it moved to the end) and skips its neighbour: as many objects as
    announced, one of them missing; one inserted before the cursor shifts the rest, a later removal shifts them
    back. Only pages each starting with the previous page's last object, as it was, at every boundary, are an
    overlap of pages (an inclusive cursor): there the distinct count still tells. Nor when the walk stopped at
    the page limit, or on a page as full as its limit that named no next page and no total (`_Paging`)."""
    if run.pages >= MAX_PAGES or totals.repeated or paging.open_end:
        return False
    if totals.overlapped and totals.overlapped != run.pages - 1:
        # An inclusive cursor overlaps at every page boundary; an overlap at only some of them is a list that
        # shifted (an object inserted before the cursor), and a later shift back skips one.
        return False
    return run.announced is None or totals.distinct >= run.announced


# HTTP statuses that answer an offset past the end of a list: Bad Request, Not Found, Range Not Satisfiable.
_PAST_THE_END_HTTP = (400, 404, 416)
# 4xx statuses that say nothing of the offset: our token refused, a request timeout, throttling.
_NOT_ABOUT_THE_OFFSET_HTTP = (401, 403, 408, 429)


def _past_the_end(exc: OcpiClientError) -> bool:
    """Does an error answer to a page we asked for by offset say the offset is past the end of the list? HTTP
    400, 404 or 416 without an OCPI status or with a 2xxx (client error) one, or an OCPI 2xxx status under
    another 4xx HTTP status."""
    status = exc.http_status
    if status is None or isinstance(exc, OcpiAuthError):
        return False
    if exc.ocpi_status is not None and not 2000 <= exc.ocpi_status < 3000:
        # An OCPI status other than a client error says something else went wrong: a hub's 4xxx (a forwarded
        # request timed out, an unknown receiver), a server's 3xxx. It had been taken for the end of the list,
        # whatever its HTTP status, and what lay beyond was withdrawn or never pulled.
        return False
    if status in _PAST_THE_END_HTTP:
        return True
    client_error = exc.ocpi_status is not None and 2000 <= exc.ocpi_status < 3000
    return 400 <= status < 500 and status not in _NOT_ABOUT_THE_OFFSET_HTTP and client_error


def _walk(
    partner: Partner, module: str, url: str, params: dict[str, str], run: SyncRun, totals: IngestCounts
) -> _Paging:
    """Walk the partner's list as the client follows its pages; then, while the last page came exactly as full
    as its limit without a next page in `Link` or `X-Total-Count`, on from the objects received by offset/limit
    (the limit that page had), each time until a short or empty page, all within the page cap. A page we asked
    for that the partner answers with an error saying the offset is past the end (`_past_the_end`) ends it as an
    empty page would; one answered with no object not listed before ends it open; any other error fails it."""
    client = OcpiClient(partner)
    paging = _Paging()
    asked: int | None = None  # the limit we asked for: only on the pages we page on to ourselves
    ask = params
    listed: set[str] = set()  # every object the walk was sent, by party and id
    while True:
        last: tuple[Page, int | None, bool] | None = None  # the walk's last page, its limit, and whether it linked
        try:
            for page in client.iter_pages(url, module=module, params=ask, ahead=True):  # the next one asked now
                ids = {_listed_id(raw) for raw in page.items}
                if asked is not None and last is None and ids and ids <= listed:
                    # The next offset answered with objects all listed before: the partner ignores offset (in
                    # an order that may change between requests: by last_updated while statuses change), and
                    # paging on would read such pages up to the cap.
                    paging.open_end = paging.offset_ignored = True
                    break
                listed |= ids
                last = (page, _page_limit(page, asked), page.linked)
                if run.pages == 0:
                    if page.total is not None:
                        run.announced = min(page.total, MAX_ANNOUNCED)
                    # Less the time the request took: the partner's clock when it began answering, near enough.
                    run.partner_time = _partner_time(page.timestamp, run.started_at)
                paging.link_refused = paging.link_refused or page.link_refused
                counts = ingest_page(partner, module, wire.page(partner, module, page.items))  # in 2.2.1 shape
                totals.add(counts)
                run.pages += 1
                run.received = totals.received
                run.stored = totals.stored
                run.normalised = totals.normalised
                run.rejected = totals.rejected
                if asked is not None:
                    paging.continued_pages += 1
                    paging.continued_objects += len(page.items)
                _renew_lease(partner)
                if asked is not None and run.pages >= MAX_PAGES:
                    paging.open_end = True  # the cap holds for the pages we page on to as for the client's
                    break
        except OcpiClientError as exc:
            if asked is None or last is not None or not _past_the_end(exc):
                raise
            # The partner answered the page we asked for by offset with an error saying the offset is past the
            # end: some answer an offset at the end of the list so (HTTP 400, OCPI 2001 "offset out of range")
            # after a last page exactly as full as its limit. The end of the list, as an empty page would be.
            # Any other error (a 5xx, 429, 401/403, an OCPI 3xxx) fails the pull: what lay after is unread.
            paging.refused = f"HTTP {exc.http_status}" + (
                f", OCPI {exc.ocpi_status}" if exc.ocpi_status is not None else ""
            )
        if paging.open_end or last is None:
            break
        page, limit, linked = last
        if linked or page.total is not None or page.link_refused or limit is None or len(page.items) != limit:
            # The client's end (by Link or total); a page short of its limit, or of no known limit; or a page
            # holding more than its limit: not capped by it (a partner sending all of its list with an X-Limit
            # of its own), as before paging on.
            break
        if run.pages >= MAX_PAGES:
            paging.open_end = True
            break
        if not paging.full_page:
            paging.full_page, paging.limit = len(page.items), limit
        asked = limit
        ask = {**params, "offset": str(run.received), "limit": str(limit)}
    _record_paging_findings(partner, module, run, paging, totals)
    return paging


def _record_paging_findings(partner: Partner, module: str, run: SyncRun, paging: _Paging, totals: IngestCounts) -> None:
    """What the paging itself showed: fewer objects than `X-Total-Count` announced (or as many, some of them
    twice: fewer distinct ones), a `Link` that pointed away from the endpoint (paging went on by
    offset/limit), or a page as full as its limit without `Link` or `X-Total-Count` that had more after it
    (paged on by offset/limit too)."""
    found = []
    if run.announced is not None and (run.received < run.announced or totals.repeated):
        message = f"announced {run.announced} objects (X-Total-Count), sent {run.received}"
        if totals.repeated:
            message += f", {totals.repeated} of them again (the list moved under the pages): {totals.distinct} distinct"
        found.append((f"pull {run.pk}", Issue(path="X-Total-Count", code="short_list", message=message, fixed=False)))
    if paging.link_refused:
        message = "Link rel=next pointed away from the endpoint (scheme, host or path); paged by offset/limit"
        found.append((f"pull {run.pk}", Issue(path="Link", code="link_elsewhere", message=message, fixed=True)))
    if paging.full_page and (paging.continued_objects or paging.open_end or paging.refused):
        # Only once the page after it held objects, was not read, or was refused: a list exactly one limit long
        # ends on a full page, and the empty page after it is the end.
        message = (
            f"a page of {paging.full_page} objects (its limit {paging.limit}) came without Link or X-Total-Count: "
            f"paged on by offset/limit, {paging.continued_objects} more objects in {paging.continued_pages} pages"
        )
        if paging.offset_ignored:
            message += "; the next offset was answered with objects all listed before: the rest was not read"
        elif paging.open_end:
            message += f"; stopped at the page limit ({MAX_PAGES} pages)"
        if paging.refused:
            message += (
                f"; the CPO answered the offset past its last page with an error ({paging.refused}): taken for "
                "the end of the list"
            )
        issue = Issue(path="Link", code="no_link_full_page", message=message, fixed=not paging.open_end)
        found.append((f"pull {run.pk}", issue))
    if found:
        log.warning("pull %s of %s from %s: %s", run.pk, module, partner, "; ".join(i.message for _, i in found))
        record_issues(partner, module, found)


def sync_partner(partner: Partner, *, full: bool = False, modules: tuple[str, ...] = MODULES) -> list[SyncRun]:
    if partner.state != Partner.State.CONNECTED:
        return []  # nothing to pull from a partner that is not connected (sync_module), nor its hub's parties
    if full:
        hubclientinfo.client_info_refresh(partner)  # a hub's parties, from its HubClientInfo sender
    runs = [run for module in modules if (run := sync_module(partner, module, full=full)) is not None]
    if full and all(r.outcome == SyncRun.Outcome.OK for r in runs):
        Partner.objects.filter(pk=partner.pk).update(last_full_sync_at=timezone.now())
    return runs


# --- one pull per partner at a time (a task handed out twice, or a worker killed mid-pull) ---------------------


def _lease_length() -> timedelta:
    return timedelta(seconds=settings.SYNC_LEASE_SECONDS)


def _renew_lease(partner: Partner) -> None:
    SyncLease.objects.filter(partner=partner).update(held_until=timezone.now() + _lease_length())


def sync_partner_leased(partner: Partner, *, full: bool = False) -> list[SyncRun] | None:
    """sync_partner, unless another worker is pulling this partner right now (None then). Runs a stopped
    worker left RUNNING are closed as FAILED first."""
    holder = uuid.uuid4().hex
    now = timezone.now()
    with transaction.atomic():
        lease = SyncLease.objects.select_for_update().filter(partner=partner).first()
        if lease is not None and lease.held_until > now:
            return None
        SyncLease.objects.update_or_create(
            partner=partner, defaults={"holder": holder, "held_until": now + _lease_length()}
        )
    try:
        SyncRun.objects.filter(partner=partner, outcome=SyncRun.Outcome.RUNNING).update(
            outcome=SyncRun.Outcome.FAILED, finished_at=now, error="interrupted: the worker pulling it stopped"
        )
        return sync_partner(partner, full=full)
    finally:
        SyncLease.objects.filter(partner=partner, holder=holder).delete()


# Golden-ratio phases: partners' pulls spread evenly over their interval, whatever their number or ids.
_PHASE_STEP = 0.6180339887498949
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def next_slot(partner: Partner, now: datetime) -> datetime:
    """The partner's next pull: the first instant after `now` at its own phase of its interval, so pulls of
    many partners are spread over the interval (splay) instead of firing together, and each partner keeps a
    steady rhythm."""
    # In whole microseconds: float seconds could round `now` onto the slot it is (and answer it again).
    interval = max(1, partner.sync_interval_minutes) * 60 * 1_000_000
    phase = int((partner.pk * _PHASE_STEP % 1.0) * interval)
    micros = (now - _EPOCH) // timedelta(microseconds=1)
    slots_passed = (micros - phase) // interval
    return _EPOCH + timedelta(microseconds=(slots_passed + 1) * interval + phase)


def _breakers_open_until(partner: Partner) -> datetime | None:
    """When the last of the partner's open sender-module breakers may be tried again, if any is open."""
    open_until = [
        b.retry_at
        for module in MODULES
        if (b := breakers.refusing(partner, module)) is not None and b.retry_at is not None
    ]
    return max(open_until) if open_until else None


def schedule_due(now: datetime | None = None) -> list[tuple[int, bool]]:
    """Pick partners whose pull is due and move their next_sync_at on (compare-and-set, so two beats
    never pick the same partner twice). Returns (partner id, full?) pairs to enqueue."""
    now = now or timezone.now()
    due = []
    for partner in Partner.objects.due_for_sync(now):
        next_at = next_slot(partner, now)
        waiting = _breakers_open_until(partner)
        if waiting is not None and waiting > now:  # the partner is not answering: pull after its next probe
            Partner.objects.filter(pk=partner.pk, next_sync_at=partner.next_sync_at).update(next_sync_at=waiting)
            continue
        claimed = Partner.objects.filter(pk=partner.pk, next_sync_at=partner.next_sync_at).update(next_sync_at=next_at)
        if not claimed:
            continue
        full = partner.last_full_sync_at is None or partner.last_full_sync_at < now - timedelta(
            hours=partner.full_sync_interval_hours
        )
        due.append((partner.pk, full))
    return due
