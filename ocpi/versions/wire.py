"""Where the versions meet the wire: our receivers under /ocpi/emsp/{2.1.1,2.3.0}/ (a mixin on the 2.2.1
views), pulled pages, EVSE reads, token pushes and commands, each mapped by the partner's `version`.

The lookups 2.1.1 needs (a contract's token, a session's START_SESSION) read our records here, so that the
mappings in v211/v230 stay pure."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db.models import Q
from django.http import HttpResponse
from django.utils import timezone
from rest_framework.request import Request

from emsp.datetimes import DateTimeError, format_datetime, parse_utc
from emsp.models import ChargingSession, Command, Partner, Token, ci_key
from emsp.services import catalogue
from emsp.services.sessions import CDR_ROW_KEY, MADE_OF_CDR
from ocpi.rendering import connector_as_ocpi, evse_as_ocpi
from ocpi.transport import CLIENT_ERROR, SERVER_ERROR, UNKNOWN_LOCATION, OcpiError
from ocpi.versions import CANONICAL, CannotCarry, Context, downgrade, upgrade, v211

log = logging.getLogger(__name__)

# A 2.1.1 session is matched to a START_SESSION of the same contract at the same EVSE sent this long before.
START_MATCH_WINDOW = timedelta(hours=2)
# A 2.1.1 CDR is matched to the session of the same token and EVSE that started this close to its start.
CDR_SESSION_SLACK = timedelta(minutes=5)
# What a version mapping may raise on an object no spec allows: the object is then judged as it came.
MAPPING_ERRORS = (ArithmeticError, ValueError, TypeError, KeyError, AttributeError)

# (module, method) of our receivers → the kind of object in the request body.
_BODY_KINDS = {
    ("sessions", "PUT"): "session",
    ("sessions", "PATCH"): "session_patch",
    ("tariffs", "PUT"): "tariff",
    ("cdrs", "POST"): "cdr",
    ("commands", "POST"): "command_result",
    ("locations", "PATCH"): "location_patch",
}
# Modules pulled from a partner → the kind of each object in a page.
_PAGE_KINDS = {"locations": "location", "sessions": "session", "tariffs": "tariff", "cdrs": "cdr"}


def context(partner: Partner, owner: tuple[str, str] | None = None) -> Context:
    return Context(
        owner=owner or (partner.country_code, partner.party_id),
        emsp=(settings.OCPI_COUNTRY_CODE, settings.OCPI_PARTY_ID),
        token_for=_token_for,
        authorization_reference_for=lambda session: _authorization_reference_for(partner, session),
    )


def _has_nul(*values: Any) -> bool:
    """Whether a value holds a NUL: PostgreSQL refuses it in a query, so the lookup is skipped (the normalizer
    then refuses the object, naming the field)."""
    return any("\x00" in str(v) for v in values if v is not None)


def _token_for(contract_id: str) -> tuple[str, str] | None:
    if not contract_id or _has_nul(contract_id):
        return None
    token = Token.objects.filter(contract_id__iexact=contract_id).order_by("-last_updated").first()
    if token is None:
        # A common 2.1.1 slip: auth_id carrying the card's uid instead of its contract (lenient in: still ours).
        token = Token.objects.by_uid(contract_id).order_by("-last_updated").first()
    return (token.uid, token.type) if token is not None else None


def _authorization_reference_for(partner: Partner, session: dict[str, Any]) -> str | None:
    """The START_SESSION a 2.1.1 session answers: the one we hold already for this session id, else our
    newest START_SESSION to this partner for the same contract at the same location (and EVSE, if named)
    that no session has taken yet."""
    session_id = str(session.get("id") or "")
    country_code, party_id = str(session.get("country_code") or ""), str(session.get("party_id") or "")
    if _has_nul(session_id, country_code, party_id):
        return None
    known = (
        ChargingSession.objects.filter(ocpi_key=ci_key(country_code, party_id, session_id))
        .values_list("authorization_reference", flat=True)
        .first()
    )
    if known:
        return known
    token = session.get("cdr_token") if isinstance(session.get("cdr_token"), dict) else {}
    contract_id = str(token.get("contract_id") or "")
    location_id = str(session.get("location_id") or "")
    evse_uid = str(session.get("evse_uid") or "")
    if not contract_id or not location_id or _has_nul(contract_id, location_id, evse_uid, country_code, party_id):
        return None
    where = (contract_id, location_id, evse_uid, country_code, party_id)
    started = _started_at(session.get("start_date_time"))
    made = _made_of_cdr_matched(partner, where, session)
    if made:
        return made
    # Matched by when it began (one pushed only at its end, hours on, had been left without its start), else by
    # when it came, for a time without a zone only (read as UTC, it can be hours off): never a start sent after
    # the session ended (a card charge seen late had taken the driver's next booking's start).
    found = _start_matched(partner, where, started, taken=False)
    if found or _zoned(session.get("start_date_time")):
        return found
    ended = session.get("end_date_time")
    return _start_matched(partner, where, timezone.now(), taken=False, sent_by=_started_at(ended) if ended else None)


def _made_of_cdr_matched(
    partner: Partner, where: tuple[str, str, str, str, str], session: dict[str, Any]
) -> str | None:
    """The authorization_reference of the session billing made of a CDR of this session's charge (a 2.1.1 CDR names
    no session: made under the CDR's row, emsp/services/sessions.py `session_from_cdr`), so that the CPO's own
    session takes its place and its start (`session_put`), not a second session of the booking (its start, taken
    by the made one, is no other session's: `_start_matched`). Matched as a CDR is to its session
    (`_session_of_cdr`): the same contract at the same location (and EVSE, and party behind a hub, when named),
    the CDR's charge begun no earlier than CDR_SESSION_SLACK before the session began, no later than
    START_MATCH_WINDOW after, nor after it ended; and not over when it began: one charge of a contract at an EVSE
    at a time, so the driver's next charge there, begun moments after the made one ended, is not taken for it (its
    session, late or ACTIVE, had been dropped in its place). Only for a start that says its zone: one read as UTC
    can be hours off."""
    start = session.get("start_date_time")
    if not _zoned(start):
        return None
    began = _started_at(start)
    contract_id, location_id, evse_uid, country_code, party_id = where
    try:
        window = (began - CDR_SESSION_SLACK, began + START_MATCH_WINDOW)
        ended = session.get("end_date_time")
        by = _started_at(ended) if ended else None
    except OverflowError:
        return None  # a date at the ends of time: the normalizer refuses it, naming the field
    made = ChargingSession.objects.filter(
        partner=partner,
        ocpi_key__startswith=CDR_ROW_KEY,
        data__has_key=MADE_OF_CDR,
        token__contract_id__iexact=contract_id,
        ocpi_location_id__iexact=location_id,
        start_date_time__range=window,
        end_date_time__gt=began,
    ).exclude(authorization_reference="")
    if by is not None:
        made = made.filter(start_date_time__lt=by)  # begun before it ended: the driver's charge before is not it
    if country_code and party_id:  # behind a hub: that party's
        made = made.filter(country_code__iexact=country_code, party_id__iexact=party_id)
    if evse_uid:
        made = made.filter(evse_uid__iexact=evse_uid)
    found = made.order_by("start_date_time").values_list("authorization_reference", "start_date_time")[:5]
    nearest = min(found, key=lambda row: abs(row[1] - began), default=None)
    return nearest[0] if nearest else None


_ZONED = re.compile(r"(?:[Zz]|[+-]\d{2}:?\d{2})$")


def _zoned(value: Any) -> bool:
    """Does this time say its zone (Z or an offset)? 2.1.1 times without one are read as UTC."""
    return isinstance(value, str) and bool(_ZONED.search(value.strip()))


def _started_at(value: Any) -> datetime:
    """When the charge began, as the partner says (a session's start, a CDR's): now when it can't be read (the
    normalizer refuses it, naming the field)."""
    try:
        return parse_utc(value)
    except (DateTimeError, OverflowError, TypeError, ValueError):
        return timezone.now()


def _start_matched(
    partner: Partner,
    where: tuple[str, str, str, str, str],
    began: datetime,
    *,
    taken: bool,
    sent_by: datetime | None = None,
) -> str | None:
    """The authorization_reference of the START_SESSION to this partner for the same contract at the same location
    (and EVSE, and party behind a hub, when named) that began a charge at `began`: the newest sent within
    START_MATCH_WINDOW before it, else the first sent up to CDR_SESSION_SLACK after it (clocks differ). Not the
    newest of the window: a start sent after the charge began (the driver's next booking) is another charge's.
    A start the session of which holds a CDR already is no other CDR's; `taken`: also one a session took."""
    contract_id, location_id, evse_uid, country_code, party_id = where
    try:
        earliest, latest = began - START_MATCH_WINDOW, began + CDR_SESSION_SLACK
    except OverflowError:
        return None  # a date at the ends of time: the normalizer refuses it, naming the field
    commands = Command.objects.filter(
        partner=partner,
        type=Command.Type.START_SESSION,
        token__contract_id__iexact=contract_id,
        evse__location__location_id__iexact=location_id,
        created_at__range=(earliest, latest),
    ).exclude(authorization_reference="")
    commands = commands.exclude(session__cdrs__isnull=False) if taken else commands.filter(session__isnull=True)
    if sent_by is not None:
        commands = commands.filter(created_at__lte=sent_by)
    if country_code and party_id:  # behind a hub: a command sent to that party
        commands = commands.filter(
            evse__location__country_code__iexact=country_code, evse__location__party_id__iexact=party_id
        )
    if evse_uid:
        commands = commands.filter(evse__uid__iexact=evse_uid)
    before = commands.filter(created_at__lte=began).order_by("-created_at")
    found = before.values_list("authorization_reference", flat=True).first()
    if found is None:
        found = (
            commands.filter(created_at__gt=began)
            .order_by("created_at")
            .values_list("authorization_reference", flat=True)
            .first()
        )
    return found


# --- what partners send us --------------------------------------------------------------------------------


def page(partner: Partner, module: str, objects: list[Any]) -> list[Any]:
    """One pulled page of `module` from `partner`, as 2.2.1-shaped objects (ocpi/sync.py)."""
    version = partner.version or CANONICAL
    kind = _PAGE_KINDS.get(module)
    if version == CANONICAL or kind is None:
        return objects
    ctx = context(partner)
    return [_upgraded_or_raw(partner, version, kind, obj, ctx) for obj in objects]


def _upgraded_or_raw(partner: Partner, version: str, kind: str, obj: Any, ctx: Context) -> Any:
    """One object of a pulled page upgraded, or as it came when its mapping fails: the normalizer then
    refuses it and records why, and the rest of the page (and of the pull) goes on."""
    try:
        return upgraded(partner, version, kind, obj, ctx)
    except MAPPING_ERRORS as exc:
        log.warning("OCPI %s %s of %s not upgraded (%s): left to the normalizer", version, kind, partner, exc)
        return obj


def upgraded(partner: Partner, version: str, kind: str, obj: Any, ctx: Context) -> Any:
    out = upgrade(version, kind, obj, ctx)
    # 2.1.1 CDRs only: a 2.2.1 or 2.3.0 CDR says which start it answers (authorization_reference) when it names
    # no session, and guessing one had tied such a CDR to an earlier session of the same token.
    if version == "2.1.1" and kind == "cdr" and isinstance(out, dict) and not out.get("session_id"):
        found = _session_of_cdr(partner, out)
        if found:
            out["session_id"], reference = found
        else:
            reference = _start_of_cdr(partner, out)
        if reference and not out.get("authorization_reference"):
            # 2.1.1 has none: the start's, so that billing ties the CDR to its booking as in 2.2.1 (through the
            # start's session, or one made of the CDR when the CPO reports none: billing/services/audit.py).
            out["authorization_reference"] = reference
    return out


def _session_of_cdr(partner: Partner, cdr: dict[str, Any]) -> tuple[str, str] | None:
    """The session a CDR without `session_id` (2.1.1 has none) closes, and its authorization_reference: the
    partner's session of the same token at the same location and EVSE that was going on when the CDR's charge
    began (it started no later than CDR_SESSION_SLACK after, and had not ended before: a session opened PENDING
    at the start command, the driver plugging in minutes later, had been missed) and has no CDR yet, so billing
    links the CDR to it (and the booking settles) as in 2.2.1."""
    token = cdr.get("cdr_token") if isinstance(cdr.get("cdr_token"), dict) else {}
    location = cdr.get("cdr_location") if isinstance(cdr.get("cdr_location"), dict) else {}
    try:
        start = parse_utc(cdr.get("start_date_time"))
        window = (start - START_MATCH_WINDOW, start + CDR_SESSION_SLACK, start - CDR_SESSION_SLACK)
    except (DateTimeError, OverflowError):
        return None  # the normalizer refuses the CDR, naming the field
    uid, location_id = token.get("uid"), location.get("id")
    if not uid or not location_id or _has_nul(uid, location_id, location.get("evse_uid")):
        return None
    going_on = (ChargingSession.Status.PENDING, ChargingSession.Status.ACTIVE)
    sessions = (
        ChargingSession.objects.filter(
            partner=partner,
            token_uid=str(token["uid"]),
            ocpi_location_id__iexact=str(location["id"]),
            start_date_time__range=window[:2],
            cdrs__isnull=True,
        )
        .exclude(status=ChargingSession.Status.INVALID)  # no charge: an INVALID session has no CDR of its own
        .filter(Q(end_date_time__gte=window[2]) | Q(end_date_time__isnull=True, status__in=going_on))
    )
    if cdr.get("country_code") and cdr.get("party_id"):  # behind a hub: that party's sessions only
        sessions = sessions.filter(country_code__iexact=str(cdr["country_code"]), party_id__iexact=str(cdr["party_id"]))
    if location.get("evse_uid"):
        sessions = sessions.filter(evse_uid__iexact=str(location["evse_uid"]))
    # The one whose start is nearest the CDR's (of a few): the newest had been a session begun after it.
    found = sessions.order_by("-start_date_time").values_list(
        "session_id", "authorization_reference", "start_date_time"
    )
    nearest = min(found[:5], key=lambda row: abs(row[2] - start), default=None)
    return (nearest[0], nearest[1]) if nearest else None


def _start_of_cdr(partner: Partner, cdr: dict[str, Any]) -> str | None:
    """The authorization_reference of the START_SESSION a CDR without a session we hold answers (a 2.1.1 CPO
    without the Sessions module, or its session not here yet): matched as a 2.1.1 session is (`_start_matched`),
    by the CDR's contract, location, EVSE and start. Billed without it, the charge of a booking had gone to the
    driver's account while the booking's hold stayed authorised."""
    token = cdr.get("cdr_token") if isinstance(cdr.get("cdr_token"), dict) else {}
    location = cdr.get("cdr_location") if isinstance(cdr.get("cdr_location"), dict) else {}
    contract_id, location_id = str(token.get("contract_id") or ""), str(location.get("id") or "")
    evse_uid = str(location.get("evse_uid") or "")
    country_code, party_id = str(cdr.get("country_code") or ""), str(cdr.get("party_id") or "")
    if not contract_id or not location_id or _has_nul(contract_id, location_id, evse_uid, country_code, party_id):
        return None
    where = (contract_id, location_id, evse_uid, country_code, party_id)
    return _start_matched(partner, where, _started_at(cdr.get("start_date_time")), taken=True)


def evse(partner: Partner, obj: Any) -> Any:
    """An EVSE read from the partner's Locations sender (ocpi/gateway.py)."""
    return upgrade(partner.version or CANONICAL, "evse", obj, context(partner))


def command_response(partner: Partner, obj: Any) -> Any:
    """The partner's synchronous CommandResponse (ocpi/gateway.py)."""
    return upgrade(partner.version or CANONICAL, "command_response", obj)


# --- what we send partners ---------------------------------------------------------------------------------


def command_body(partner: Partner, command_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """A command's request body in the partner's version; CannotCarry when that version lacks the command."""
    return downgrade(partner.version or CANONICAL, f"command:{command_type}", body)


def push(partner: Partner, module: str, path: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(path, body) of a push to the partner's receiver in its version (ocpi/push.py). A 2.1.1 Tokens
    receiver takes no `?type=` (mod_tokens 2.1.1 §2.1.2: country_code/party_id/token_uid only)."""
    version = partner.version or CANONICAL
    if module != "tokens" or version == CANONICAL:
        return path, payload
    if version == "2.1.1":
        path = path.partition("?")[0]
    return path, downgrade(version, "token", payload)


# --- our receivers in 2.1.1 and 2.3.0 ------------------------------------------------------------------------


class VersionedReceiver:
    """Mixed in before one of our 2.2.1 OCPI views to serve it in another version: the request body is
    upgraded before the view reads it, the answer's data downgraded before it is logged and sent."""

    ocpi_version: str
    module: str
    partner: Partner
    kwargs: dict[str, Any]
    request: Request

    def json_object(self) -> dict[str, Any]:
        data: dict[str, Any] = super().json_object()  # type: ignore[misc]
        kind = self._body_kind()
        if kind is None:
            return data
        # The party of the URL, else the one a hub routed it from (a CDR POST names none in its path).
        owner = (self.kwargs["country_code"], self.kwargs["party_id"]) if "party_id" in self.kwargs else None
        owner = owner or getattr(self, "from_party", None)
        try:
            return upgraded(self.partner, self.ocpi_version, kind, data, context(self.partner, owner))
        except MAPPING_ERRORS as exc:
            raise OcpiError(CLIENT_ERROR, f"an OCPI {self.ocpi_version} {kind} we cannot read: {exc}"[:300]) from exc

    def _body_kind(self) -> str | None:
        method = self.request.method or ""
        if self.module == "locations" and method == "PUT":
            return (
                "connector"
                if self.kwargs.get("connector_id")
                else "evse"
                if self.kwargs.get("evse_uid")
                else "location"
            )
        if self.module == "locations" and method == "PATCH" and self.kwargs.get("connector_id"):
            return "connector_patch"
        return _BODY_KINDS.get((self.module, method))

    def finalize_response(self, request: Request, response: HttpResponse, *args: Any, **kwargs: Any) -> HttpResponse:
        answered = response.status_code == 200 and not getattr(response, "streaming", False)
        if self.module == "tokens" and answered:
            kind = "authorization_info" if request.method == "POST" else "token"
            _downgrade_data(response, self.ocpi_version, kind)
        elif self.module in ("cdrs", "tariffs", "sessions", "locations") and request.method == "GET" and answered:
            # Our copy of a partner's object, read back in the version it speaks. What that version can't say
            # (a 2.1.1 session's connector of a 2.2 standard) is an error naming it, never a 2.2.1 object.
            try:
                self._read_back(response)
            except CannotCarry as exc:
                response = self.handle_exception(OcpiError(SERVER_ERROR, str(exc)))  # type: ignore[attr-defined]
            except OcpiError as exc:
                response = self.handle_exception(exc)  # type: ignore[attr-defined]
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]

    def _read_back(self, response: HttpResponse) -> None:
        if self.module == "locations":
            kind = "connector" if self.kwargs.get("connector_id") else "evse" if self.kwargs.get("evse_uid") else ""
            _downgrade_data(response, self.ocpi_version, kind or "location")
        elif self.module == "sessions" and self.ocpi_version == "2.1.1":
            body = orjson.loads(response.content)
            if isinstance(body.get("data"), dict):
                body["data"] = v211.session_out(body["data"], _session_location(body["data"]))
                response.content = orjson.dumps(body)
        else:
            _downgrade_data(response, self.ocpi_version, self.module[:-1])


def _session_location(session: dict[str, Any]) -> dict[str, Any]:
    """The location a session names, with only its EVSE and connector, as our Locations receiver holds it (a 2.1.1
    Session carries it whole). One we don't hold is 2003: the session can't be read back without it."""
    location = catalogue.location_get(session["country_code"], session["party_id"], session["location_id"])
    evse = catalogue.evse_get(location, session["evse_uid"]) if location is not None else None
    connector = catalogue.connector_get(evse, session["connector_id"]) if evse is not None else None
    if location is None or evse is None or connector is None:
        where = f"{session['location_id']}/{session['evse_uid']}/{session['connector_id']}"
        raise OcpiError(UNKNOWN_LOCATION, f"The session's location {where} is unknown to us: PUT it first")
    shown_evse = {**evse_as_ocpi(evse), "connectors": [connector_as_ocpi(connector)]}
    return {**location.data, "evses": [shown_evse], "last_updated": format_datetime(location.last_updated)}


def _downgrade_data(response: HttpResponse, version: str, kind: str) -> None:
    body = orjson.loads(response.content)
    data = body.get("data")
    if isinstance(data, list):
        body["data"] = [downgrade(version, kind, item) for item in data]
    elif isinstance(data, dict):
        body["data"] = downgrade(version, kind, data)
    else:
        return
    response.content = orjson.dumps(body)


def versioned(view: type, version: str) -> type:
    """`view` (one of our 2.2.1 OCPI views) served in `version`; left out of the OpenAPI schema, which
    describes the 2.2.1 surface."""
    if version == CANONICAL:
        return view
    bases = (view,) if getattr(view, "handles_versions", False) else (VersionedReceiver, view)
    return type(f"{view.__name__}_{version.replace('.', '')}", bases, {"ocpi_version": version, "schema": None})
