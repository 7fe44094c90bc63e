"""Charging sessions as CPOs report them (mod_sessions): PUT replaces the whole session, PATCH changes fields
and appends charging periods. Each session is linked to our token, the EVSE, and the command or
reservation that caused it (by `authorization_reference`) — also when that command already timed out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from emsp import events
from emsp.datetimes import parse_utc
from emsp.inserts import insert, update
from emsp.key_locks import keys_locked
from emsp.models import ChargingSession, Command, Evse, Location, Partner, Token, ci_key
from emsp.rows import all_where, first_where
from emsp.services import bookings, commands


def session_key(country_code: str, party_id: str, session_id: str) -> str:
    return ci_key(country_code, party_id, session_id)


def token_is_ours(cdr_token: dict[str, Any]) -> bool:
    """Whether a CdrToken is one of ours: its party (CdrToken.party_id, "ID of the eMSP that 'owns' this
    Token") is ours. A token without one counts as ours: the tag-2.2.1 examples omit it (added in [d2]), and
    the normaliser reports it. RFID uids are not unique across eMSPs, and a CPO may send us sessions and CDRs
    of other eMSPs' tokens (mod_cdrs: "not required to send all CDRs to all eMSPs")."""
    party = ci_key(
        str(cdr_token.get("country_code") or settings.OCPI_COUNTRY_CODE),
        str(cdr_token.get("party_id") or settings.OCPI_PARTY_ID),
    )
    return party == ci_key(settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value))


def start_command(
    partner_id: int, authorization_reference: str, *, country_code: str | None = None, party_id: str | None = None
) -> Command | None:
    """The START_SESSION we sent this partner (and, given, this party of it) with `authorization_reference`,
    which its Session and CDR repeat (commands.commands_of_reference). Never another partner's or party's command:
    a reference is ours to make up, and another CPO may send one that equals it."""
    found = commands.commands_of_reference(
        partner_id, authorization_reference, country_code=country_code, party_id=party_id
    )
    return found[0] if found else None


def session_of_charge(
    partner_id: int, country_code: str, party_id: str, session_id: str, authorization_reference: str
) -> ChargingSession | None:
    """The session a CDR bills, as far as we hold it: the one its `session_id` names; for a CDR without one
    (mod_cdrs: optional, a CPO without the Sessions module leaves it out), the session of the START_SESSION its
    `authorization_reference` repeats (that command's, else the only session of the command's booking), of the
    same partner. A CDR naming a session we don't hold yet gets None: another session of the same start is not
    the one it names."""
    if session_id:
        return first_where(ChargingSession, "t.ocpi_key = %s", [session_key(country_code, party_id, session_id)])
    command = start_command(partner_id, authorization_reference, country_code=country_code, party_id=party_id)
    if command is None:
        return None
    if command.session_id is not None:
        return command.session
    if command.booking_id is None:
        return None
    found = list(ChargingSession.objects.filter(partner_id=partner_id, booking_id=command.booking_id)[:2])
    return found[0] if len(found) == 1 else None


def session_from_cdr(partner: Partner, party: tuple[str, str], cdr_pk: int, cdr: dict[str, Any]) -> ChargingSession:
    """The session of a charge we hold only the CDR of: a START_SESSION of one of our bookings whose session the
    CPO never reported (a CPO without the Sessions module: mod_sessions is optional, and its CDR's `session_id`
    too), made of the CDR (billing/services/audit.py, `_session_made`), COMPLETED. It goes the way a reported one
    does (`session_put`): the start command and the reservation are tied to it, the booking follows it, the app
    hears it; and the CDR bills the booking. Named by the CDR's `session_id` when it has one (the session, should
    the CPO report it after all, is this one: its PUT takes the made one's place, `_taken_over`); else by the CDR's
    row (`CDR*<pk>`: no CPO's key, whose first part is a two-letter country code), shown with the CDR's id (the
    CPO's own session of that start, should it come, takes the row and its key: `_made_of_unnamed_cdr`)."""
    location = cdr.get("cdr_location") or {}
    session_id = str(cdr.get("session_id") or "")
    obj = {
        "country_code": party[0],
        "party_id": party[1],
        "id": session_id or str(cdr.get("id") or cdr_pk)[:36],
        "status": ChargingSession.Status.COMPLETED,
        "start_date_time": cdr["start_date_time"],
        "end_date_time": cdr["end_date_time"],
        "kwh": cdr.get("total_energy"),
        "cdr_token": cdr.get("cdr_token") or {},
        "auth_method": cdr.get("auth_method") or "",
        "authorization_reference": cdr.get("authorization_reference") or "",
        "location_id": location.get("id") or "",
        "evse_uid": location.get("evse_uid") or "",
        "connector_id": location.get("connector_id") or "",
        "currency": cdr.get("currency") or "",
        "charging_periods": cdr.get("charging_periods") or [],
        "total_cost": cdr.get("total_cost"),
        "last_updated": cdr["last_updated"],
        MADE_OF_CDR: str(cdr.get("id") or ""),  # not the CPO's Session: ours, from its CDR
    }
    session = session_put(partner, obj, key="" if session_id else f"{CDR_ROW_KEY}{cdr_pk}", of_cdr=True).session
    session.refresh_from_db()  # its booking, tied by on_session_changed in the database only
    return session


@dataclass
class SessionChange:
    session: ChargingSession
    created: bool
    applied: bool
    old_status: str | None
    # Why the change was refused (the receiver answers OCPI 2001 with it); nothing was stored.
    refused: str = ""
    # The session had only held a reservation before the change (bookings.only_held_reservation).
    held_before: bool = False


def _link_inputs(session: ChargingSession) -> tuple[Any, ...]:
    """What a session's links to our objects are worked out from (`_link`)."""
    token = (session.data or {}).get("cdr_token") or {}
    return (session.ocpi_location_id, session.evse_uid, session.token_uid, token.get("type"),
            token.get("country_code"), token.get("party_id"), session.authorization_reference)  # fmt: skip


def _apply(session: ChargingSession, obj: dict[str, Any]) -> bool:
    """Set the session's fields from the OCPI Session `obj`, and its links to our objects. The links found
    before stand when the ids they are worked out from are those it was stored with (only those not found are
    looked for again). Returns whether they were and the reservation is still the stored one (`_after_save`)."""
    before = None if session._state.adding else _link_inputs(session)
    reservation = session.reservation_id
    obj = _held_marked(session, obj)
    session.status = obj["status"]
    session.start_date_time = parse_utc(obj["start_date_time"])
    end = obj.get("end_date_time")
    session.end_date_time = parse_utc(end) if end else None
    session.kwh = _decimal(obj.get("kwh")) or Decimal("0")
    session.currency = obj.get("currency") or ""
    total_cost = obj.get("total_cost") or {}
    session.total_cost_excl_vat = _decimal(total_cost.get("excl_vat"))
    session.total_cost_incl_vat = _decimal(total_cost.get("incl_vat"))
    session.ocpi_location_id = obj.get("location_id") or ""
    session.evse_uid = obj.get("evse_uid") or ""
    session.connector_id = obj.get("connector_id") or ""
    cdr_token = obj.get("cdr_token") or {}
    session.token_uid = str(cdr_token.get("uid") or "")
    session.auth_method = obj.get("auth_method") or ""
    session.authorization_reference = obj.get("authorization_reference") or ""
    session.last_updated = parse_utc(obj["last_updated"])
    session.data = obj
    session.received_at = timezone.now()
    kept = before is not None and _link_inputs(session) == before
    _link(session, cdr_token, kept=kept)
    return kept and session.reservation_id == reservation


def _held_marked(session: ChargingSession, obj: dict[str, Any]) -> dict[str, Any]:
    """The Session `obj` to store over `session` (as stored until now), marked as one that has only held a
    reservation (bookings.HELD_ONLY) when it is RESERVATION, or COMPLETED or INVALID, with no energy, after it only
    held one: no status on its own tells an unused reservation's end (COMPLETED) from a charge's. Unmarked
    otherwise, for good: once PENDING, ACTIVE or with energy, it is a charge. Whatever mark the CPO's object holds
    is not ours: dropped."""
    status = obj.get("status")
    ended = status in (ChargingSession.Status.COMPLETED, ChargingSession.Status.INVALID)
    held = status == ChargingSession.Status.RESERVATION or (
        ended and bookings.only_held_reservation(session) and not _decimal(obj.get("kwh"))
    )
    unmarked = {name: value for name, value in obj.items() if name != bookings.HELD_ONLY}
    return {**unmarked, bookings.HELD_ONLY: True} if held else unmarked


def session_billed_energy(session: ChargingSession) -> None:
    """A CDR with energy bills this session (billing/services/audit.py, before it bills): the CPO says it charged.
    One still marked as having only held a reservation (bookings.HELD_ONLY: COMPLETED before its energy came, or
    its PATCHes lost) is the charge after all: unmarked, and moved on as a session going on from RESERVATION to
    charge is (the start it answers, the reservation it fulfils, its booking), so the CDR bills the booking. It
    had left the booking STARTING for ever and billed the driver's account."""
    if not (bookings.HELD_ONLY in (session.data or {}) and session.status != ChargingSession.Status.RESERVATION):
        return
    session.data = {name: value for name, value in session.data.items() if name != bookings.HELD_ONLY}
    ChargingSession.objects.filter(pk=session.pk).update(data=session.data)
    _after_save(
        SessionChange(session=session, created=False, applied=True, old_status=ChargingSession.Status.RESERVATION)
    )
    session.refresh_from_db(fields=["booking"])  # linked to its booking by the move (bookings.on_session_changed)


def _link(session: ChargingSession, cdr_token: dict[str, Any], *, kept: bool = False) -> None:
    """Tie the session to our objects. Ids that don't resolve (home chargers, unpublished locations) stay as
    strings on the session; nothing is rejected for it, and they are looked for again on its next change. With
    `kept` (the ids are those of the stored session) a link found before stands: a CPO PATCHes a session every
    minute or so, and looking its location, EVSE and token up again each time was half of a PATCH's statements."""
    if session.ocpi_location_id and session.ocpi_location_id != "#NA":
        if not (kept and session.location_id is not None):
            session.location = Location.objects.filter(
                ocpi_key=ci_key(session.country_code, session.party_id, session.ocpi_location_id)
            ).first()
        evse_named = session.evse_uid and session.evse_uid != "#NA"
        if session.location_id is not None and evse_named and not (kept and session.evse_id is not None):
            session.evse = Evse.objects.filter(
                location_id=session.location_id, uid_key=ci_key(session.evse_uid)
            ).first()
    our_token = session.token_uid and token_is_ours(cdr_token)
    if our_token and not (kept and session.token_id is not None):
        session.token = Token.objects.by_uid(session.token_uid, cdr_token.get("type") or None).first()
    if session.authorization_reference and not (kept and session.reservation_id is not None):
        found = commands.commands_of_reference(
            session.partner_id,
            session.authorization_reference,
            country_code=session.country_code,
            party_id=session.party_id,
            types=(Command.Type.START_SESSION, Command.Type.RESERVE_NOW),
        )
        command = found[0] if found else None
        if command is not None and command.reservation_id:
            session.reservation_id = command.reservation_id


def _after_save(change: SessionChange, *, links_kept: bool = False) -> None:
    """What a session's change moves on: the START_SESSION it answers, the reservation it fulfils, its booking.
    With `links_kept` (a change that kept the session's ids and its reservation, `_apply`) the first two were
    done by an earlier change when they could be, and are done again only when the status moves."""
    session = change.session
    same_status = links_kept and session.status == change.old_status
    # A session that only held a reservation answers no start and fulfils nothing (bookings.only_held_reservation);
    # going on from RESERVATION to charge, it answers the start on the reservation, which repeats its reference.
    held = bookings.only_held_reservation(session)
    # Held the reservation until now (RESERVATION, or ended unused until its energy came): the start is tied now.
    reserved_before = change.old_status == ChargingSession.Status.RESERVATION or (change.held_before and not held)
    if session.authorization_reference and not held and (not links_kept or reserved_before):
        # A session that arrives after its START_SESSION timed out is still ours (ocpi/ocpi#475).
        started = commands.commands_of_reference(
            session.partner_id,
            session.authorization_reference,
            country_code=session.country_code,
            party_id=session.party_id,
        )
        Command.objects.filter(pk__in=[c.pk for c in started], session__isnull=True).update(session=session)
    if (
        session.reservation_id
        and not same_status
        and not held
        and session.status
        in (
            ChargingSession.Status.ACTIVE,
            ChargingSession.Status.COMPLETED,
        )
    ):
        # Its booking locked first, then the reservation: the order a driver's cancel takes them.
        bookings.reservation_fulfilled(session.reservation_id, booking_id=session.booking_id)
    if change.applied:
        # The session moves its booking on; the driver's app hears of each new status.
        booking = bookings.on_session_changed(session)
        if booking is not None and session.status != change.old_status:
            events.publish(events.BookingSessionChanged(booking))


def _cdrs_waiting_linked(session: ChargingSession) -> None:
    """A new session ties to it the CDRs its CPO sent before it (their session_id named a session we did not
    hold yet) that are still unprocessed: billing puts off the processing of such a CDR of a booking's charge
    (billing/services/audit.py, SESSION_GRACE), so that it bills the booking, not the driver's account. Their
    claim is cleared: the beat's sweep processes them at once, now with their session. A CDR already processed
    keeps what it was billed on (see audit.py). In the session's transaction, before its booking is touched
    (`_after_save`): the same order of locks as a CDR's processing, which locks its CDR before the booking. The
    CDRs are reached through the session's reverse relation: billing sits above emsp and is not imported."""
    cdr_model = ChargingSession._meta.get_field("cdrs").related_model
    waiting = cdr_model.objects.filter(
        partner_id=session.partner_id,
        session_id=session.session_id,
        charging_session__isnull=True,
        processed_at__isnull=True,
    ).values_list("pk", "country_code", "party_id")
    ours = [pk for pk, country, party in waiting if session_key(country, party, session.session_id) == session.ocpi_key]
    if ours:
        free = _not_held(cdr_model.objects.filter(pk__in=ours, processed_at__isnull=True))
        cdr_model.objects.filter(pk__in=free).update(charging_session=session, claimed_at=None)
    if session.authorization_reference:
        # CDRs without a session_id, put off for the session of the start they repeat the reference of: the sweep
        # takes them now (their processing ties them: audit.py, `_link_session`).
        unnamed = cdr_model.objects.filter(
            partner_id=session.partner_id,
            session_id="",
            charging_session__isnull=True,
            processed_at__isnull=True,
            claimed_at__isnull=False,
        ).values_list("pk", "data__authorization_reference")
        reference = ci_key(session.authorization_reference)
        put_off = [pk for pk, ref in unnamed if isinstance(ref, str) and ci_key(ref) == reference]
        if put_off:
            free = _not_held(cdr_model.objects.filter(pk__in=put_off, processed_at__isnull=True))
            cdr_model.objects.filter(pk__in=free).update(claimed_at=None)


def _not_held(rows: Any) -> list[int]:
    """The ids of these CDR rows no transaction holds, locked (FOR UPDATE SKIP LOCKED). One its worker holds is
    being processed now, and ties itself to its session (audit.py `_link_session`, `_session_made`): waited for,
    the two had deadlocked, that worker inserting this very session."""
    return list(rows.select_for_update(skip_locked=True).values_list("pk", flat=True))


def new_key_locked(key: str) -> None:
    """Hold the key of a session about to be made until the transaction ends (emsp/key_locks.py). A session made
    of a CDR (billing/services/audit.py `_session_made`) takes it before it locks the start command and the
    booking; a CPO's PUT of that very session takes it before its INSERT, which then ties the same command and
    booking. Without it each waited on the other: the PUT on the command the CDR's worker held, that worker on the
    PUT's uncommitted key."""
    keys_locked(f"session:{key}")


def _locked(key: str) -> ChargingSession | None:
    """The stored session of this key, locked until the transaction ends (`select_for_update(no_key=True).first()`
    in plain SQL: the ORM compiled that query anew on every PATCH, a third of its CPU). NO KEY UPDATE, as the
    UPDATE of it takes: a PUT or PATCH of the session waits for another, but a row that refers to it (a driver's
    cancel inserting the STOP_SESSION of it, under its booking's lock) does not wait for the session's change,
    which locks that booking next (`_after_save`): FOR UPDATE, the two had deadlocked."""
    features = connection.features
    lock = " FOR NO KEY UPDATE" if features.has_select_for_no_key_update else ""
    lock = lock or (" FOR UPDATE" if features.has_select_for_update else "")
    found = all_where(ChargingSession, "t.ocpi_key = %s", [key], f"ORDER BY t.id LIMIT 1{lock}")
    return found[0] if found else None


def session_put(partner: Partner, obj: dict[str, Any], *, key: str = "", of_cdr: bool = False) -> SessionChange:
    """PUT: the whole Session, charging periods included (omitted periods mean none). `key` and `of_cdr` for a
    session made of a CDR (`session_from_cdr`): the CDRs waiting for it are left to the CDR's processing, which
    hands them on after its commit (each is locked by its own worker: an UPDATE of it here would deadlock)."""
    key = key or session_key(obj["country_code"], obj["party_id"], obj["id"])
    last_updated = parse_utc(obj["last_updated"])
    with transaction.atomic():
        session = _locked(key)
        if session is None:
            new_key_locked(key)
            session = _locked(key)  # made meanwhile by the holder of that lock
        if session is None and not of_cdr:
            session = _made_of_unnamed_cdr(partner, obj)
        if session is None:
            session = ChargingSession(
                partner=partner,
                country_code=obj["country_code"],
                party_id=obj["party_id"],
                session_id=obj["id"],
                ocpi_key=key,
            )
            _apply(session, obj)
            try:
                with transaction.atomic():  # a savepoint: the losing INSERT must not undo the transaction
                    insert(session)
            except IntegrityError:
                # Two PUTs of a new session raced (a hub retrying a slow one): the other one's row committed
                # between our look and our INSERT. This PUT is an update of that row, under its lock.
                session = _locked(key)
                if session is None:
                    raise
            else:
                if not of_cdr:
                    _cdrs_waiting_linked(session)
                change = SessionChange(session, created=True, applied=True, old_status=None)
                _after_save(change)
                return change
        if not of_cdr and made_of_cdr(session):
            # Ours, made of its CDR: its last_updated is the CDR's, which the session's own precedes (the CDR comes
            # once the charge is over), and orders nothing here. What the CDR says does: the charge is over.
            if obj["status"] != ChargingSession.Status.COMPLETED:
                return SessionChange(session, created=False, applied=False, old_status=session.status)
            obj = _taken_over(session.data, obj)
        elif last_updated < session.last_updated:
            return SessionChange(session, created=False, applied=False, old_status=session.status)
        else:
            obj = _billed_kept(session.data, obj)
        rekeyed = session.ocpi_key != key
        if rekeyed:  # made under its CDR's row (`_made_of_unnamed_cdr`): from now on under the CPO's key
            session.country_code, session.party_id, session.session_id = obj["country_code"], obj["party_id"], obj["id"]
            session.ocpi_key = key
        old_status, held_before = session.status, bookings.only_held_reservation(session)
        kept = _apply(session, obj)
        update(session)
        if rekeyed:
            _cdrs_waiting_linked(session)  # as for a new session: those that named it, put off for it
        change = SessionChange(session, created=False, applied=True, old_status=old_status, held_before=held_before)
        _after_save(change, links_kept=kept)
    return change


def _made_of_unnamed_cdr(partner: Partner, obj: dict[str, Any]) -> ChargingSession | None:
    """The session made of a CDR that named none (`session_from_cdr`: under the CDR's row, `CDR*<pk>`) of the
    booking's start this new session's authorization_reference names, locked: the CPO's own session of that charge,
    come after all. It takes the made one's place (`_taken_over`) and its key, as one made under its own id does:
    inserted as a second session of the booking, it had told the app of it once more and been counted twice.

    Locks, in this order: this session's key (the caller's `new_key_locked`), the start's row, the made row. A
    start without a session yet may have one being made by a CDR's worker, which holds the start's row until it
    commits (billing/services/audit.py `_session_made`): waited for, and the made session found. That worker takes
    a session's key, if at all, before the start (the key its CDR names), and any other PUT its own key first too;
    this PUT's `_after_save` ties the start a moment later anyway, and meanwhile waits on nothing (the INSERT is of
    a key it holds, the CDRs' rows are skipped when held). A made row is locked by its key, which no PUT names:
    another PUT of this start waits for it, then finds it gone to this PUT's key, and inserts its own."""
    found = commands.commands_of_reference(
        partner.pk, obj.get("authorization_reference") or "", country_code=obj["country_code"], party_id=obj["party_id"]
    )
    start = found[0] if found else None
    if start is None or start.booking_id is None:
        return None  # sessions are made of CDRs for bookings' starts only
    made_id = start.session_id
    if made_id is None:
        made_id = Command.objects.select_for_update().filter(pk=start.pk).values_list("session_id", flat=True).first()
    made_key = ChargingSession.objects.filter(pk=made_id).values_list("ocpi_key", flat=True).first() if made_id else ""
    if not made_key or not made_key.startswith(CDR_ROW_KEY):
        return None
    made = _locked(made_key)  # None once another PUT of this start took it (under its own key now)
    return made if made is not None and made_of_cdr(made) else None


# What the CDR's bill said of the charge, kept when the CPO's own Session takes the made one's place, and on
# every later change of it (`_billed_kept`).
BILLED_FIGURES = ("kwh", "currency", "total_cost")
# What the made session's links to our objects were worked out from (`_link_inputs`), kept likewise: the start,
# the reservation, the token and the EVSE the CDR billed. The CPO's naming another start (its
# authorization_reference) had tied that start, and its reservation, to this session: the other booking's CDR then
# followed its start here, was held as a second bill of this charge, and that booking was never billed.
BILLED_IDENTITY = ("authorization_reference", "cdr_token", "location_id", "evse_uid", "connector_id")
# Our marks in a session's data, never the CPO's (its PUT and PATCH are normalised to the Session's own fields):
# made of its CDR (`session_from_cdr`); the CPO's own, in the place of one made of its CDR (`_taken_over`); one that
# has only held a reservation (`_held_marked`).
MADE_OF_CDR = "made_of_cdr"
BILLED_OF_CDR = "billed_of_cdr"
OUR_MARKS = (MADE_OF_CDR, BILLED_OF_CDR, bookings.HELD_ONLY)
# The key of a session made of a CDR that names none: its row's (no CPO's key, whose first part is a country code).
CDR_ROW_KEY = "CDR*"


def made_of_cdr(session: ChargingSession) -> bool:
    """Whether the session is one we made of its CDR (`session_from_cdr`), not the CPO's own (yet)."""
    return MADE_OF_CDR in (session.data or {})


def session_as_sent(session: ChargingSession) -> dict[str, Any]:
    """The session as the CPO's Session object, to read back (GET): without our marks."""
    return {name: value for name, value in (session.data or {}).items() if name not in OUR_MARKS}


def _billed_kept(stored: dict[str, Any], obj: dict[str, Any], *, figures: bool = False) -> dict[str, Any]:
    """A change of a session whose charge its CDR billed through the session made of it (`_taken_over`), with
    the ids its links were worked out from (BILLED_IDENTITY), where the made one had them, and our mark: one
    naming another start had tied it here, and that booking's charge went unbilled. With `figures` (the takeover
    itself), what the bill said of the charge too (BILLED_FIGURES). Later figures are the CPO's word on its own
    session, as for any session: kept for good, a credit and a corrected CDR had left the app shown the voided
    bill's energy and cost, and a CPO validating its session by GET never saw what it sent. Any other change, as
    it comes."""
    if BILLED_OF_CDR not in stored:
        return obj
    names = (*BILLED_FIGURES, *BILLED_IDENTITY) if figures else BILLED_IDENTITY
    kept = {name: stored[name] for name in names if stored.get(name) not in (None, "", {})}
    return {**obj, **kept, BILLED_OF_CDR: stored[BILLED_OF_CDR]}


def _taken_over(made: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """The CPO's own Session in the place of the one made of its CDR, whatever its last_updated: the CPO's object,
    with what only it carries (its charging periods, start and end, authorization method, meter). Only a COMPLETED
    one (`session_put`): the CDR closed the charge, and an earlier state of it (ACTIVE, PENDING, RESERVATION) had
    moved the booking's session back and told the app so; an INVALID one ("will not be billed", mod_sessions)
    says the opposite of the CDR billed on it. The bill's figures stay (BILLED_FIGURES; the session's own kwh is
    a running figure the CDR came after), and its end when the session has none. So do the made one's ids
    (BILLED_IDENTITY): a PUT naming another start, token or EVSE contradicts the CDR that was billed, and with
    them kept the session's links stand as they are (`_apply`: none is looked for again, no other start or
    reservation is tied). The booking, the start and the CDR keep their ties to the session's row; its status
    stays COMPLETED, so the app hears nothing new. From then on the session is the CPO's, ordered by its own
    last_updated, marked as billed of its CDR (BILLED_OF_CDR): every later change keeps its ids (`_billed_kept`)."""
    taken = _billed_kept({**made, BILLED_OF_CDR: made[MADE_OF_CDR]}, obj, figures=True)
    end = made.get("end_date_time")
    if not taken.get("end_date_time") and end and parse_utc(end) >= parse_utc(taken["start_date_time"]):
        taken["end_date_time"] = end
    return taken


# Periods may start this much before the session's start or after its end (the normaliser's PERIOD_TOLERANCE,
# ocpi/normalize/sessions.py: back ends align periods to the hour).
PERIOD_TOLERANCE = timedelta(hours=1)
# The most charging periods a session holds: what the pricing engine estimates (billing/pricing/calculate.py
# MAX_PERIODS, which the normaliser refuses a PUT beyond). The same figure, kept here because the domain does not
# import billing (pyproject.toml, import-linter); tests/ocpi/test_lenient_sessions_review_fixes.py holds them
# equal. Without it, PATCHes of 10,000 periods each grew one session to 40,000 under its row lock.
MAX_PERIODS = 10_000


def _in_window(period: dict[str, Any], start: datetime, end: datetime | None) -> bool:
    """Whether a charging period starts within the session (as a PUT's are checked by the normaliser)."""
    moment = parse_utc(period["start_date_time"])
    return start - PERIOD_TOLERANCE <= moment <= (end or timezone.now()) + PERIOD_TOLERANCE


def _period_key(period: dict[str, Any]) -> bytes:
    """A charging period as one value, whatever the order of its fields and however its numbers are written:
    equal for the same period sent again, as Python's == found it (a volume 1 and 1.0 are one period; as JSON text
    they had been two, the period held twice and the running estimate doubled)."""
    return orjson.dumps(_numbers_as_floats(period), option=orjson.OPT_SORT_KEYS)


def _numbers_as_floats(value: Any) -> Any:
    if value.__class__ is int:
        return float(value)
    if isinstance(value, dict):
        return {key: _numbers_as_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_numbers_as_floats(item) for item in value]
    return value


def _merged_periods(obj: dict[str, Any], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The session's charging periods with a PATCH's added (mod_sessions PATCH: "processed as a request to add
    all the ChargingPeriod objects"): a period already held is not added again (a hub retrying the same PATCH
    doubled them), the list stays in time order, and periods outside the session are dropped as a PUT's are.
    Held ones are found by key, in a set: a list searched for each added period had made PATCHes of 10,000
    periods take 20 s, then 72 s, then 95 s, holding the session's row lock."""
    periods = list(obj.get("charging_periods") or [])
    held = {_period_key(period) for period in periods}
    for period in added:
        key = _period_key(period)
        if key not in held:
            held.add(key)
            periods.append(period)
    start = parse_utc(obj["start_date_time"])
    end = parse_utc(obj["end_date_time"]) if obj.get("end_date_time") else None
    return sorted((p for p in periods if _in_window(p, start, end)), key=lambda p: parse_utc(p["start_date_time"]))


def _inconsistent(obj: dict[str, Any]) -> str:
    """Why a session as a PATCH would leave it cannot be (the normaliser's checks of a PUT, on the merged
    object: a PATCH alone may hold only one of the two times). Empty when it can be."""
    end = obj.get("end_date_time")
    if end and parse_utc(end) < parse_utc(obj["start_date_time"]):
        return "end_date_time is before start_date_time"
    return ""


def _too_many(periods: list[dict[str, Any]]) -> str:
    """Why a session can't hold these periods (more than MAX_PERIODS), empty when it can."""
    if len(periods) > MAX_PERIODS:
        return f"charging_periods: the session would hold {len(periods)} periods; at most {MAX_PERIODS}"
    return ""


def session_patch(key: str, patch: dict[str, Any]) -> SessionChange | None:
    """PATCH of the session of this key (None: no such session): changed fields replace; `charging_periods` are
    added (mod_sessions §"PATCH"), also from a PATCH whose fields are older than the stored ones (delivered
    late: its fields are stale, its periods are not). A PATCH that would leave the session inconsistent changes
    nothing and says why (`SessionChange.refused`), as does one whose periods would make the session hold more than
    MAX_PERIODS (stale or not). A PATCH that leaves the session's ids as they were keeps its
    links to our objects (`_link`): two statements where there were six (bench/bench_ocpi_calls.py --kind
    session). A PATCH without last_updated (OCPI 2.1.1, where it is optional; the normalizer lets one through
    only from 2.1.1) is the CPO's newest word when it comes: applied whatever we hold, it keeps the stored stamp
    (only the CPO's clock orders its sessions: ours, put on it, had made a CPO clock 90 s behind ours lose its
    final COMPLETED PUT, one ahead its PATCHes). A session made of a CDR (`session_from_cdr`) is not the CPO's
    object the PATCH changes: None, as for one we don't hold (the CPO is told to PUT it, and that PUT takes the
    made one's place); patched, its fields and the CDR's periods had mixed with the session's, its status gone
    back to ACTIVE."""
    stamp = patch.get("last_updated")
    last_updated = parse_utc(stamp) if stamp else None
    added = patch.get("charging_periods")
    with transaction.atomic():
        session = _locked(key)
        if session is None or made_of_cdr(session):
            return None
        old_status = session.status
        if last_updated is not None and last_updated < session.last_updated:
            if added:
                merged = _merged_periods(session.data, added)
                refused = _too_many(merged)
                if refused:
                    return SessionChange(session, created=False, applied=False, old_status=old_status, refused=refused)
                if merged != session.data.get("charging_periods"):
                    session.data = {**session.data, "charging_periods": merged}
                    ChargingSession.objects.filter(pk=session.pk).update(data=session.data)
            return SessionChange(session, created=False, applied=False, old_status=old_status)
        obj = dict(session.data)
        for name, value in patch.items():
            if name not in ("country_code", "party_id", "id", "charging_periods"):
                obj[name] = value
        refused = _inconsistent(obj)
        if refused:
            return SessionChange(session, created=False, applied=False, old_status=old_status, refused=refused)
        if added is not None:
            obj["charging_periods"] = _merged_periods(obj, added)
            refused = _too_many(obj["charging_periods"])
            if refused:
                return SessionChange(session, created=False, applied=False, old_status=old_status, refused=refused)
        obj = _billed_kept(session.data, obj)
        held_before = bookings.only_held_reservation(session)
        kept = _apply(session, obj)
        update(session)
        change = SessionChange(session, created=False, applied=True, old_status=old_status, held_before=held_before)
        _after_save(change, links_kept=kept)
    return change


def sessions_store(partner: Partner, sessions: list[dict[str, Any]]) -> int:
    """Store a pulled page of sessions (each a PUT). Returns how many were applied."""
    return sum(1 for obj in sessions if session_put(partner, obj).applied)
