"""Charging sessions as CPOs report them (mod_sessions): PUT replaces the whole session, PATCH changes fields
and appends charging periods. Each session is linked to our token, the EVSE, and the command or
reservation that caused it (by `authorization_reference`) — also when that command already timed out."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from emsp import events
from emsp.datetimes import parse_utc
from emsp.inserts import insert, update
from emsp.models import ChargingSession, Command, Evse, Location, Partner, Reservation, Token, ci_key
from emsp.rows import all_where
from emsp.services import bookings


def session_key(country_code: str, party_id: str, session_id: str) -> str:
    return ci_key(country_code, party_id, session_id)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    return Decimal(str(value))


@dataclass
class SessionChange:
    session: ChargingSession
    created: bool
    applied: bool
    old_status: str | None


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
    ours = ci_key(
        str(cdr_token.get("country_code") or settings.OCPI_COUNTRY_CODE),
        str(cdr_token.get("party_id") or settings.OCPI_PARTY_ID),
    )
    our_token = session.token_uid and ours == ci_key(settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID)
    if our_token and not (kept and session.token_id is not None):
        session.token = Token.objects.by_uid(session.token_uid, cdr_token.get("type") or None).first()
    if session.authorization_reference and not (kept and session.reservation_id is not None):
        command = (
            Command.objects.filter(
                partner_id=session.partner_id,
                authorization_reference=session.authorization_reference,
                type__in=[Command.Type.START_SESSION, Command.Type.RESERVE_NOW],
            )
            .order_by("-created_at")
            .first()
        )
        if command is not None and command.reservation_id:
            session.reservation_id = command.reservation_id


def _after_save(change: SessionChange, *, links_kept: bool = False) -> None:
    """What a session's change moves on: the START_SESSION it answers, the reservation it fulfils, its booking.
    With `links_kept` (a change that kept the session's ids and its reservation, `_apply`) the first two were
    done by an earlier change when they could be, and are done again only when the status moves."""
    session = change.session
    same_status = links_kept and session.status == change.old_status
    if session.authorization_reference and not links_kept:
        # A session that arrives after its START_SESSION timed out is still ours (ocpi/ocpi#475).
        Command.objects.filter(
            partner_id=session.partner_id,
            type=Command.Type.START_SESSION,
            authorization_reference=session.authorization_reference,
            session__isnull=True,
        ).update(session=session)
    if (
        session.reservation_id
        and not same_status
        and session.status
        in (
            ChargingSession.Status.ACTIVE,
            ChargingSession.Status.COMPLETED,
        )
    ):
        Reservation.objects.filter(pk=session.reservation_id, status__in=Reservation.ACTIVE_STATUSES).update(
            status=Reservation.Status.FULFILLED
        )
    if change.applied:
        # The session moves its booking on; the driver's app hears of each new status.
        booking = bookings.on_session_changed(session)
        if booking is not None and session.status != change.old_status:
            events.publish(events.BookingSessionChanged(booking))


def _locked(key: str) -> ChargingSession | None:
    """The stored session of this key, locked until the transaction ends (`select_for_update().first()` in plain
    SQL: the ORM compiled that query anew on every PATCH, a third of its CPU)."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    found = all_where(ChargingSession, "t.ocpi_key = %s", [key], f"ORDER BY t.id LIMIT 1{lock}")
    return found[0] if found else None


def session_put(partner: Partner, obj: dict[str, Any]) -> SessionChange:
    """PUT: the whole Session, charging periods included (omitted periods mean none)."""
    key = session_key(obj["country_code"], obj["party_id"], obj["id"])
    last_updated = parse_utc(obj["last_updated"])
    with transaction.atomic():
        session = _locked(key)
        if session is not None and last_updated < session.last_updated:
            return SessionChange(session, created=False, applied=False, old_status=session.status)
        created = session is None
        old_status = None if session is None else session.status
        if session is None:
            session = ChargingSession(
                partner=partner,
                country_code=obj["country_code"],
                party_id=obj["party_id"],
                session_id=obj["id"],
                ocpi_key=key,
            )
            _apply(session, obj)
            insert(session)
            kept = False
        else:
            kept = _apply(session, obj)
            update(session)
        change = SessionChange(session, created=created, applied=True, old_status=old_status)
        _after_save(change, links_kept=kept)
    return change


def session_patch(key: str, patch: dict[str, Any]) -> SessionChange | None:
    """PATCH of the session of this key (None: no such session): changed fields replace; `charging_periods` are
    appended (mod_sessions §"PATCH"). A PATCH that leaves the session's ids as they were keeps its links to our
    objects (`_link`): two statements where there were six (bench/bench_ocpi_calls.py --kind session)."""
    last_updated = parse_utc(patch["last_updated"])
    with transaction.atomic():
        session = _locked(key)
        if session is None:
            return None
        if last_updated < session.last_updated:
            return SessionChange(session, created=False, applied=False, old_status=session.status)
        old_status = session.status
        obj = dict(session.data)
        for name, value in patch.items():
            if name == "charging_periods":
                obj["charging_periods"] = list(obj.get("charging_periods") or []) + list(value or [])
            elif name not in ("country_code", "party_id", "id"):
                obj[name] = value
        kept = _apply(session, obj)
        update(session)
        change = SessionChange(session, created=False, applied=True, old_status=old_status)
        _after_save(change, links_kept=kept)
    return change


def sessions_store(partner: Partner, sessions: list[dict[str, Any]]) -> int:
    """Store a pulled page of sessions (each a PUT). Returns how many were applied."""
    return sum(1 for obj in sessions if session_put(partner, obj).applied)
